//! One run per agent at a time, cluster-wide. A run first holds the agent's Lease
//! ([`super::lease`]), so every other live process is either waiting for it or not touching
//! the agent; then it decides, purely from the agent's Jobs, what to do: create, follow its own
//! Job (a reattach), harvest an orphan — a Job still running that nobody follows, because the
//! process that created it is gone with its Lease — before running its own prompt, or wait for a
//! Job that is being deleted to be gone.

use k8s_openapi::api::batch::v1::Job;

use super::status::job_occupies_agent;

/// What the guard decided for a run holding the agent's Lease, given the agent's Jobs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Nothing blocks: create.
    Clear,
    /// This very attempt's Job, finished or not (a reattach): its result is there to be read,
    /// never to be redone.
    Mine(Box<Job>),
    /// A Job nobody follows or harvested (its process died): harvest its output, usage and
    /// cost, then run this run's own prompt.
    Orphan(Box<Job>),
    /// A Job being deleted (its pod may still run): wait until it is gone.
    Deleting(Box<Job>),
}

/// Decide, purely, from the agent's Jobs. `this_job` is the name this run attempt's Job has
/// (names are derived from the run id and the attempt). Only a run holding the agent's Lease
/// asks, so no running Job of the agent has a live follower. `finished_unharvested`: a finished
/// Job still there was never harvested — true unless the agent retains Jobs (a harvest deletes
/// the Job otherwise), so the output, usage and cost of a Job that ended while its process was
/// gone are recorded too.
pub(crate) fn judge(jobs: &[Job], this_job: &str, finished_unharvested: bool) -> Verdict {
    let deleting = |job: &&Job| job.metadata.deletion_timestamp.is_some();
    // (Another attempt of the same run — a retry's first try kept by retainJobs — is not it.)
    if let Some(job) = jobs
        .iter()
        .filter(|job| !deleting(job))
        .find(|job| job.metadata.name.as_deref() == Some(this_job))
    {
        return Verdict::Mine(Box::new(job.clone()));
    }
    if let Some(job) = jobs.iter().find(deleting) {
        return Verdict::Deleting(Box::new(job.clone()));
    }
    match jobs
        .iter()
        .find(|job| job_occupies_agent(job))
        .or_else(|| jobs.first().filter(|_| finished_unharvested))
    {
        Some(job) => Verdict::Orphan(Box::new(job.clone())),
        None => Verdict::Clear,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::manifest::{RUN_ID_KEY, TASK_KEY_KEY};

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

    fn name(verdict: &Verdict) -> Option<&str> {
        match verdict {
            Verdict::Clear => None,
            Verdict::Mine(job) | Verdict::Orphan(job) | Verdict::Deleting(job) => {
                job.metadata.name.as_deref()
            }
        }
    }

    #[test]
    fn finished_jobs_do_not_block() {
        let jobs = [job("a", "r1", "t1", true)];
        assert_eq!(judge(&jobs, "b", false), Verdict::Clear);
    }

    #[test]
    fn a_running_job_of_another_run_is_an_orphan_whatever_its_task() {
        let jobs = [job("a", "r1", "t1", false)];
        let verdict = judge(&jobs, "z", false);
        assert!(matches!(verdict, Verdict::Orphan(_)), "{verdict:?}");
        assert_eq!(name(&verdict), Some("a"));
    }

    #[test]
    fn a_job_being_deleted_is_waited_for_and_never_adopted() {
        let mut deleting = job("a", "r1", "t1", true);
        deleting.metadata.deletion_timestamp = Some(Time("2026-11-27T14:00:00Z".parse().unwrap()));
        assert!(matches!(
            judge(&[deleting], "a", true),
            Verdict::Deleting(_)
        ));
    }

    #[test]
    fn this_attempts_own_job_is_followed_even_when_finished() {
        let jobs = [job("a", "r1", "t1", true)];
        assert!(matches!(judge(&jobs, "a", true), Verdict::Mine(_)));
        let jobs = [job("a", "r1", "t1", false)];
        assert!(matches!(judge(&jobs, "a", true), Verdict::Mine(_)));
    }

    #[test]
    fn a_finished_job_left_behind_is_harvested_unless_jobs_are_retained() {
        let jobs = [job("a", "r1", "t1", true)];
        assert!(matches!(judge(&jobs, "b", true), Verdict::Orphan(_)));
        assert_eq!(judge(&jobs, "b", false), Verdict::Clear);
    }

    #[test]
    fn a_retrys_first_attempt_kept_by_retain_jobs_is_not_the_retry() {
        let jobs = [job("a", "r1", "t1", true)];
        assert_eq!(judge(&jobs, "a-a2", false), Verdict::Clear);
    }
}
