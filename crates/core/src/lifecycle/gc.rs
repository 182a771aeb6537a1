//! `gc`: removes what finished runs left behind — adapter-owned Jobs that finished longer ago
//! than a bound (kept by `retainJobs`, or left when a host died before cleaning up) and per-run
//! Secrets whose Job is gone (their owner reference never set, or the owner deleted while
//! orphaning). A Job that is still running, or a young Secret whose Job may be about to be
//! created, is never touched.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde::Serialize;

use super::result::RunError;
use super::retry::retry;
use super::status::{JobEnd, job_occupies_agent, job_outcome};
use crate::error_code::ErrorCode;
use crate::manifest::{MANAGED_BY_KEY, MANAGED_BY_VALUE};

/// One object gc removed (or would remove, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    /// Object name.
    pub name: String,
    /// Why it goes.
    pub reason: String,
    /// Seconds since it finished (Jobs) or was created (Secrets).
    pub age_seconds: u64,
}

/// What one gc pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// The namespace swept.
    pub namespace: String,
    /// Nothing was deleted; the lists say what would have been.
    pub dry_run: bool,
    /// Jobs deleted (their pods and owned Secrets follow in the background).
    pub jobs: Vec<Collected>,
    /// Secrets deleted.
    pub secrets: Vec<Collected>,
    /// Adapter Jobs left alone because they are still running or being deleted.
    pub running: usize,
    /// Deletions that failed, one line each (the pass goes on).
    pub failures: Vec<String>,
}

fn age(since: Option<Timestamp>, now: Timestamp) -> Duration {
    since
        .and_then(|t| now.duration_since(t).try_into().ok())
        .unwrap_or_default()
}

/// The conditions that say a Job is over: `Complete`/`Failed`, and v1.36's `SuccessCriteriaMet`
/// / `FailureTarget`, written seconds before them.
const FINISHED: [&str; 4] = ["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"];

/// When a finished Job finished: its first finishing condition's transition, else its completion time,
/// else (never seen in practice) its creation.
fn finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref();
    status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.status == "True" && FINISHED.contains(&c.type_.as_str()))
        .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .min()
        .or_else(|| status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0))
        .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Sweep `namespace`: delete the adapter's finished Jobs older than `older_than` and the
/// per-run Secrets whose Job is gone (or that never got an owner and are older than the
/// bound). `dry_run` only reports. `Err` only when the objects cannot be listed.
pub async fn gc(
    client: &kube::Client,
    namespace: &str,
    older_than: Duration,
    dry_run: bool,
) -> Result<GcReport, RunError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{MANAGED_BY_KEY}={MANAGED_BY_VALUE}"));
    let listed = retry("list the adapter's Jobs", || jobs.list(&params))
        .await
        .map_err(|err| {
            RunError::api(
                ErrorCode::AdapterInternal,
                &format!("list the adapter's Jobs in namespace {namespace}"),
                &err,
            )
        })?;
    let now = Timestamp::now();
    let mut report = GcReport {
        namespace: namespace.to_owned(),
        dry_run,
        jobs: Vec::new(),
        secrets: Vec::new(),
        running: 0,
        failures: Vec::new(),
    };
    // Jobs that still exist after this pass: their Secrets are theirs to keep (or Kubernetes'
    // garbage collector takes them with the Job).
    let mut owners: HashSet<String> = HashSet::new();
    // A run's Secret has its Job's name: one without an owner reference (the patch failed)
    // still belongs to that Job while it exists.
    let mut names: HashSet<String> = HashSet::new();
    let delete = DeleteParams::background();
    for job in &listed.items {
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        owners.insert(uid);
        names.insert(name.clone());
        // Over as soon as v1.36 says so (`SuccessCriteriaMet`), not seconds later at `Complete`;
        // a deadline's `FailureTarget` still has its pod being killed.
        let Some(end) = job_outcome(job).filter(|_| !job_occupies_agent(job)) else {
            report.running += 1;
            continue;
        };
        let finished = age(finished_at(job), now);
        if finished < older_than {
            continue;
        }
        let reason = match end {
            JobEnd::Complete => "completed".to_owned(),
            JobEnd::Failed { reason, .. } if reason.is_empty() => "failed".to_owned(),
            JobEnd::Failed { reason, .. } => format!("failed ({reason})"),
        };
        if !dry_run
            && let Err(err) = retry("delete the Job", || jobs.delete(&name, &delete)).await
            && !is_not_found(&err)
        {
            report
                .failures
                .push(format!("failed to delete Job {namespace}/{name}: {err}"));
            continue;
        }
        report.jobs.push(Collected {
            name,
            reason,
            age_seconds: finished.as_secs(),
        });
    }
    let listed = retry("list the adapter's Secrets", || secrets.list(&params))
        .await
        .map_err(|err| {
            RunError::api(
                ErrorCode::AdapterInternal,
                &format!("list the adapter's Secrets in namespace {namespace}"),
                &err,
            )
        })?;
    for secret in &listed.items {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let created = age(
            secret.metadata.creation_timestamp.as_ref().map(|t| t.0),
            now,
        );
        let job_owners: Vec<_> = secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.kind == "Job")
            .collect();
        let reason = if job_owners.is_empty() {
            // Between the Secret's create and the Job's a run has no owner yet: only the bound
            // tells a leak from a run being started right now.
            if created < older_than || names.contains(&name) {
                continue;
            }
            "no owner Job".to_owned()
        } else if job_owners.iter().any(|o| owners.contains(&o.uid)) {
            continue;
        } else {
            format!("Job {} is gone", job_owners[0].name)
        };
        if !dry_run
            && let Err(err) = retry("delete the Secret", || secrets.delete(&name, &delete)).await
            && !is_not_found(&err)
        {
            report
                .failures
                .push(format!("failed to delete Secret {namespace}/{name}: {err}"));
            continue;
        }
        report.secrets.push(Collected {
            name,
            reason,
            age_seconds: created.as_secs(),
        });
    }
    Ok(report)
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_job_finished_when_its_first_finishing_condition_turned_true() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"creationTimestamp": "2026-11-27T10:00:00Z"},
            "status": {
                "completionTime": "2026-11-27T10:05:00Z",
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-11-27T10:04:00Z"},
                    {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-27T10:04:30Z"}
                ]
            }
        }))
        .unwrap();
        assert_eq!(
            finished_at(&job),
            Some("2026-11-27T10:04:00Z".parse().unwrap()),
            "v1.36's SuccessCriteriaMet, seconds before Complete"
        );
    }

    #[test]
    fn a_job_whose_success_criteria_are_met_is_finished_before_complete() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"creationTimestamp": "2026-11-27T10:00:00Z"},
            "status": {"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-11-27T10:04:00Z"}
            ]}
        }))
        .unwrap();
        assert!(!job_occupies_agent(&job), "not counted as running");
        assert_eq!(job_outcome(&job), Some(JobEnd::Complete));
        assert_eq!(
            finished_at(&job),
            Some("2026-11-27T10:04:00Z".parse().unwrap())
        );
    }
}
