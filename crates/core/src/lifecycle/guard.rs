//! One run per agent at a time, cluster-wide. A run first holds the agent's Lease
//! ([`super::lease`]), so every other live process is either waiting for it or not touching
//! the agent; then it decides, purely from the agent's Jobs, what to do: create, follow its own
//! Job (a reattach), harvest an orphan — a Job still running that nobody follows, because the
//! process that created it is gone with its Lease — before running its own prompt, or wait for a
//! Job that is being deleted to be gone. [`GuardError`] is why a run could not get the agent.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;

use super::error::{ApiCause, api_code};
use super::status::job_occupies_agent;
use crate::error_code::ErrorCode;

/// The agent is kept by another run, or what keeps runs of an agent apart (its Lease, its Jobs)
/// could not be read; or this run lost the agent to another process.
///
/// Where the API refused, the message includes its message and `source()` is the `kube::Error`
/// (see [`RunError`](super::RunError)).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The agent's Lease could not be read or taken.
    #[error("failed to take the Lease {namespace}/{lease} of agent {agent}: {}", ApiCause::engine(.source))]
    TakeLease {
        /// Namespace of the run.
        namespace: String,
        /// The agent's Lease.
        lease: String,
        /// The agent.
        agent: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// The agent's Jobs could not be listed.
    #[error("failed to list the Jobs of agent {agent} in namespace {namespace}: {}", ApiCause::engine(.source))]
    ListJobs {
        /// Namespace of the run.
        namespace: String,
        /// The agent.
        agent: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// Another run of the agent held its Lease for the whole concurrency bound.
    #[error(
        "another run of this agent ({holder}) did not finish within {} s; let it finish or cancel it, then retry",
        .waited.as_secs()
    )]
    Busy {
        /// The Lease's holder: `<host>/<pid>.<instance>/<run id>`.
        holder: String,
        /// The bound waited ([`Bounds::concurrency_wait`](super::Bounds::concurrency_wait)).
        waited: Duration,
    },
    /// A Job of the agent being deleted did not go within the concurrency bound.
    #[error(
        "Job {namespace}/{job} of this agent was still being deleted after {} s; check its pod's finalizers, then retry",
        .waited.as_secs()
    )]
    StillDeleting {
        /// Namespace of the run.
        namespace: String,
        /// The Job.
        job: String,
        /// The bound waited.
        waited: Duration,
    },
    /// The run was cancelled before it got the agent.
    #[error("cancelled while waiting for another run of this agent")]
    Cancelled,
    /// This process did not renew the agent's Lease in time and another took the run's Job over.
    #[error(
        "stopped following the agent's Job: this process did not renew the agent's Lease within {} s and another process took it over and follows the Job now; nothing was deleted",
        .lease.as_secs()
    )]
    LeaseLost {
        /// How long the Lease lasts unrenewed.
        lease: Duration,
    },
    /// A reattach found no Job to continue.
    #[error(
        "failed to reattach: the Job {namespace}/{job} of this run no longer exists (its TTL or someone deleted it); its output after the checkpoint is lost"
    )]
    ReattachGone {
        /// Namespace of the run.
        namespace: String,
        /// The run's Job.
        job: String,
    },
}

impl GuardError {
    /// The stable code: `k8s_concurrency_guard_unreachable` for what could not be read (or
    /// `k8s_forbidden` / `k8s_api_unreachable`), `k8s_concurrent_run_blocked` for another run
    /// keeping the agent, `cancelled`, `k8s_job_deleted_externally` for a vanished Job.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TakeLease { source, .. } | Self::ListJobs { source, .. } => {
                api_code(source, ErrorCode::K8sConcurrencyGuardUnreachable)
            }
            Self::Busy { .. } | Self::StillDeleting { .. } | Self::LeaseLost { .. } => {
                ErrorCode::K8sConcurrentRunBlocked
            }
            Self::Cancelled => ErrorCode::Cancelled,
            Self::ReattachGone { .. } => ErrorCode::K8sJobDeletedExternally,
        }
    }
}

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
