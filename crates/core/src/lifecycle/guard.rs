//! One run per agent at a time, cluster-wide: a Job of the agent that has not finished (or is
//! still being deleted) blocks the next run. Check-and-create is serialized per agent inside
//! the process so two concurrent executes can never both create; a run that has to wait does
//! so without holding that lock, watching the blocking Job rather than polling.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::Job;

use super::status::job_occupies_agent;
use crate::manifest::{TASK_KEY_KEY, label_value};

/// Per-agent in-process locks for check-and-create.
#[derive(Debug, Default)]
pub(crate) struct AgentLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl AgentLocks {
    pub(crate) fn for_agent(&self, agent_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = super::lock(&self.0);
        locks.entry(agent_id.to_owned()).or_default().clone()
    }
}

/// What the guard decided for a run, given the agent's Jobs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Nothing blocks: create.
    Clear,
    /// A Job of this run, or of this agent and task left running by a previous process:
    /// follow it instead of starting the work twice.
    Adopt(Box<Job>),
    /// Another run of the agent is in flight: wait for this Job.
    Wait(Box<Job>),
}

fn label<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Decide, purely, from the agent's Jobs. `this_job` is the name this run attempt's Job has
/// (names are derived from the run id and the attempt); `followed` are the Jobs this engine
/// already follows or has finished with in this process.
pub(crate) fn judge(
    jobs: &[Job],
    this_job: &str,
    task_key: Option<&str>,
    followed: &HashSet<String>,
) -> Verdict {
    let orphan = |job: &&Job| {
        job.metadata.deletion_timestamp.is_none()
            && !followed.contains(job.metadata.name.as_deref().unwrap_or_default())
    };
    // This very attempt, finished or not: its result is there to be read, never to be redone.
    // (Another attempt of the same run — a retry's first try kept by retainJobs — is not it.)
    if let Some(job) = jobs
        .iter()
        .filter(orphan)
        .find(|job| job.metadata.name.as_deref() == Some(this_job))
    {
        return Verdict::Adopt(Box::new(job.clone()));
    }
    let occupying: Vec<&Job> = jobs.iter().filter(|job| job_occupies_agent(job)).collect();
    if let Some(task) = task_key.map(label_value)
        && let Some(job) = occupying
            .iter()
            .copied()
            .filter(orphan)
            .find(|job| label(job, TASK_KEY_KEY) == Some(task.as_str()))
    {
        return Verdict::Adopt(Box::new(job.clone()));
    }
    match occupying.first() {
        Some(job) => Verdict::Wait(Box::new((*job).clone())),
        None => Verdict::Clear,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::manifest::RUN_ID_KEY;

    fn job(name: &str, run: &str, task: &str, terminal: bool) -> Job {
        let conditions = if terminal {
            json!([{"type": "Complete", "status": "True"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {RUN_ID_KEY: run, TASK_KEY_KEY: task}},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn finished_jobs_do_not_block() {
        let jobs = [job("a", "r1", "t1", true)];
        assert_eq!(
            judge(&jobs, "b", Some("t2"), &HashSet::new()),
            Verdict::Clear
        );
    }

    #[test]
    fn another_running_job_of_the_agent_blocks() {
        let jobs = [job("a", "r1", "t1", false)];
        assert!(
            matches!(judge(&jobs, "z", Some("t2"), &HashSet::new()), Verdict::Wait(j) if j.metadata.name.as_deref() == Some("a"))
        );
    }

    #[test]
    fn a_job_being_deleted_still_blocks_and_is_never_adopted() {
        let mut deleting = job("a", "r1", "t1", true);
        deleting.metadata.deletion_timestamp = Some(Time("2026-11-27T14:00:00Z".parse().unwrap()));
        assert!(matches!(
            judge(&[deleting], "a", Some("t1"), &HashSet::new()),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn the_same_run_or_an_orphan_of_the_same_task_is_adopted() {
        let jobs = [job("a", "r1", "t1", false)];
        assert!(matches!(
            judge(&jobs, "a", None, &HashSet::new()),
            Verdict::Adopt(_)
        ));
        assert!(matches!(
            judge(&jobs, "z", Some("t1"), &HashSet::new()),
            Verdict::Adopt(_)
        ));
    }

    #[test]
    fn a_finished_job_of_the_same_run_is_adopted_to_read_its_result() {
        let jobs = [job("a", "r1", "t1", true)];
        assert!(matches!(
            judge(&jobs, "a", None, &HashSet::new()),
            Verdict::Adopt(_)
        ));
    }

    #[test]
    fn a_retrys_first_attempt_kept_by_retain_jobs_is_not_the_retry() {
        let jobs = [job("a", "r1", "t1", true)];
        assert_eq!(
            judge(&jobs, "a-a2", Some("t1"), &HashSet::new()),
            Verdict::Clear
        );
    }

    #[test]
    fn a_job_this_engine_follows_is_waited_for_not_adopted() {
        let jobs = [job("a", "r1", "t1", false)];
        let followed = HashSet::from(["a".to_owned()]);
        assert!(matches!(
            judge(&jobs, "z", Some("t1"), &followed),
            Verdict::Wait(_)
        ));
    }
}
