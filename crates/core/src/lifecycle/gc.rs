//! `gc`: removes what finished runs left behind — adapter-owned Jobs that finished longer ago
//! than a bound (kept by `retainJobs`, or left when a host died before cleaning up), per-run
//! Secrets whose Job is gone (their owner reference never set, or the owner deleted while
//! orphaning), and agents' Leases nobody has held for the bound (agents that no longer run).
//! A Job that is still running, a young Secret whose Job may be about to be created, or a Lease
//! a run holds or took meanwhile, is never touched.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Preconditions};
use serde::Serialize;

use super::error::{ApiCause, api_code};
use super::lease;
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
    /// Seconds since it finished (Jobs), was created (Secrets) or was last written (Leases).
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
    /// Agents' Leases deleted: released, or expired since their holder stopped renewing, and not
    /// written for the bound. An agent's next run creates its Lease again.
    pub leases: Vec<Collected>,
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

/// `gc` could not list what it sweeps (a deletion that fails is a line of the report instead).
///
/// The message includes the API's message and `source()` is the `kube::Error` (see
/// [`RunError`](super::RunError)).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The adapter's Jobs could not be listed.
    #[error("failed to list the adapter's Jobs in namespace {namespace}: {}", ApiCause::engine(.source))]
    ListJobs {
        /// The namespace swept.
        namespace: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// The adapter's Secrets could not be listed.
    #[error("failed to list the adapter's Secrets in namespace {namespace}: {}", ApiCause::engine(.source))]
    ListSecrets {
        /// The namespace swept.
        namespace: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
}

impl GcError {
    /// `k8s_forbidden` or `k8s_api_unreachable` by the API's answer, else `adapter_internal`.
    pub fn code(&self) -> ErrorCode {
        let (Self::ListJobs { source, .. } | Self::ListSecrets { source, .. }) = self;
        api_code(source, ErrorCode::AdapterInternal)
    }
}

/// Sweep `namespace`: delete the adapter's finished Jobs older than `older_than`, the per-run
/// Secrets whose Job is gone (or that never got an owner and are older than the bound) and the
/// agents' Leases nobody has held for the bound. `dry_run` only reports. `Err` only when the
/// Jobs or Secrets cannot be listed (Leases that cannot be listed are a failure line).
pub async fn gc(
    client: &kube::Client,
    namespace: &str,
    older_than: Duration,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let sweep = Sweep {
        jobs: Api::namespaced(client.clone(), namespace),
        secrets: Api::namespaced(client.clone(), namespace),
        leases: Api::namespaced(client.clone(), namespace),
        params: ListParams::default().labels(&format!("{MANAGED_BY_KEY}={MANAGED_BY_VALUE}")),
        now: Timestamp::now(),
        older_than,
    };
    let mut report = GcReport {
        namespace: namespace.to_owned(),
        dry_run,
        jobs: Vec::new(),
        secrets: Vec::new(),
        leases: Vec::new(),
        running: 0,
        failures: Vec::new(),
    };
    let kept = sweep.jobs(&mut report).await?;
    sweep.secrets(&kept, &mut report).await?;
    sweep.leases(&mut report).await;
    Ok(report)
}

/// One gc pass over a namespace: where, and by which bound.
struct Sweep {
    jobs: Api<Job>,
    secrets: Api<Secret>,
    leases: Api<Lease>,
    params: ListParams,
    now: Timestamp,
    older_than: Duration,
}

/// The adapter's Jobs as they were listed, which the Secrets sweep consults: the Jobs that still
/// exist after this pass keep their Secrets (or Kubernetes' garbage collector takes them with
/// the Job).
#[derive(Default)]
struct Listed {
    /// Job UIDs: a Secret owned by one of them is its Job's.
    uids: HashSet<String>,
    /// Job names: a run's Secret has its Job's name, and one without an owner reference (the
    /// patch failed) still belongs to that Job while it exists.
    names: HashSet<String>,
}

/// What gc does with one of the adapter's Jobs.
#[derive(Debug)]
enum JobVerdict {
    /// Still running (or being deleted): left alone, and counted.
    Running,
    /// Finished less than the bound ago.
    Young,
    /// Finished long enough ago: collected.
    Collect(Collected),
}

/// Decide about one Job (pure).
fn judge_job(job: &Job, now: Timestamp, older_than: Duration) -> JobVerdict {
    // Over as soon as v1.36 says so (`SuccessCriteriaMet`), not seconds later at `Complete`;
    // a deadline's `FailureTarget` still has its pod being killed.
    let Some(end) = job_outcome(job).filter(|_| !job_occupies_agent(job)) else {
        return JobVerdict::Running;
    };
    let finished = age(finished_at(job), now);
    if finished < older_than {
        return JobVerdict::Young;
    }
    let reason = match end {
        JobEnd::Complete => "completed".to_owned(),
        JobEnd::Failed { reason, .. } if reason.is_empty() => "failed".to_owned(),
        JobEnd::Failed { reason, .. } => format!("failed ({reason})"),
    };
    JobVerdict::Collect(Collected {
        name: job.metadata.name.clone().unwrap_or_default(),
        reason,
        age_seconds: finished.as_secs(),
    })
}

/// Decide about one Secret (pure): `Some` when it goes.
fn judge_secret(
    secret: &Secret,
    now: Timestamp,
    older_than: Duration,
    jobs: &Listed,
) -> Option<Collected> {
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
        if created < older_than || jobs.names.contains(&name) {
            return None;
        }
        "no owner Job".to_owned()
    } else if job_owners.iter().any(|o| jobs.uids.contains(&o.uid)) {
        return None;
    } else {
        format!("Job {} is gone", job_owners[0].name)
    };
    Some(Collected {
        name,
        reason,
        age_seconds: created.as_secs(),
    })
}

/// Decide about one agent's Lease (pure): `Some` when nobody holds it — released, or expired
/// since its holder stopped renewing — and it was last written at least `older_than` ago.
fn judge_lease(lease: &Lease, now: Timestamp, older_than: Duration) -> Option<Collected> {
    if lease::expiry(lease, now).is_some() {
        return None;
    }
    let written = lease::renewed_at(lease)
        .or_else(|| lease.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let idle = age(written, now);
    if idle < older_than {
        return None;
    }
    let reason = match lease::holder_of(lease).filter(|h| !h.is_empty()) {
        Some(holder) => format!("expired; {holder} stopped renewing it"),
        None => "released".to_owned(),
    };
    Some(Collected {
        name: lease.metadata.name.clone().unwrap_or_default(),
        reason,
        age_seconds: idle.as_secs(),
    })
}

/// How one deletion went.
enum Deletion {
    /// Deleted, already gone, or (dry run) would be.
    Done,
    /// The object changed since it was judged (its version precondition failed): left alone.
    Changed,
    /// Refused or failed: the report's line for it.
    Failed(String),
}

impl Deletion {
    /// Put `collected` where the report says what happened to it.
    fn record(self, collected: Collected, into: &mut Vec<Collected>, failures: &mut Vec<String>) {
        match self {
            Deletion::Done => into.push(collected),
            Deletion::Changed => {}
            Deletion::Failed(line) => failures.push(line),
        }
    }
}

impl Sweep {
    /// Delete the finished Jobs past the bound; returns the Jobs listed.
    async fn jobs(&self, report: &mut GcReport) -> Result<Listed, GcError> {
        let listed = retry("list the adapter's Jobs", || self.jobs.list(&self.params))
            .await
            .map_err(|source| GcError::ListJobs {
                namespace: report.namespace.clone(),
                source,
            })?;
        let mut kept = Listed::default();
        for job in &listed.items {
            kept.uids
                .insert(job.metadata.uid.clone().unwrap_or_default());
            kept.names
                .insert(job.metadata.name.clone().unwrap_or_default());
            match judge_job(job, self.now, self.older_than) {
                JobVerdict::Running => report.running += 1,
                JobVerdict::Young => {}
                JobVerdict::Collect(collected) => {
                    let params = DeleteParams::background();
                    self.delete(&self.jobs, "Job", &collected, &params, report)
                        .await
                        .record(collected, &mut report.jobs, &mut report.failures);
                }
            }
        }
        Ok(kept)
    }

    /// Delete the per-run Secrets no listed Job keeps.
    async fn secrets(&self, jobs: &Listed, report: &mut GcReport) -> Result<(), GcError> {
        let listed = retry("list the adapter's Secrets", || {
            self.secrets.list(&self.params)
        })
        .await
        .map_err(|source| GcError::ListSecrets {
            namespace: report.namespace.clone(),
            source,
        })?;
        for secret in &listed.items {
            let Some(collected) = judge_secret(secret, self.now, self.older_than, jobs) else {
                continue;
            };
            let params = DeleteParams::background();
            self.delete(&self.secrets, "Secret", &collected, &params, report)
                .await
                .record(collected, &mut report.secrets, &mut report.failures);
        }
        Ok(())
    }

    /// Delete the agents' Leases nobody has held for the bound. Each delete carries the version
    /// gc judged, so a Lease a run took meanwhile stays. A list that fails is a failure line:
    /// the Jobs and Secrets are swept already.
    async fn leases(&self, report: &mut GcReport) {
        let listed = match retry("list the agents' Leases", || self.leases.list(&self.params)).await
        {
            Ok(listed) => listed,
            Err(err) => {
                report.failures.push(format!(
                    "failed to list the agents' Leases in namespace {}: {}",
                    report.namespace,
                    ApiCause::engine(&err)
                ));
                return;
            }
        };
        for lease in &listed.items {
            let Some(collected) = judge_lease(lease, self.now, self.older_than) else {
                continue;
            };
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.metadata.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            self.delete(&self.leases, "Lease", &collected, &params, report)
                .await
                .record(collected, &mut report.leases, &mut report.failures);
        }
    }

    /// Delete one collected object (not in a dry run).
    async fn delete<K>(
        &self,
        api: &Api<K>,
        kind: &str,
        collected: &Collected,
        params: &DeleteParams,
        report: &GcReport,
    ) -> Deletion
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if report.dry_run {
            return Deletion::Done;
        }
        let name = &collected.name;
        match retry(&format!("delete the {kind}"), || api.delete(name, params)).await {
            Ok(_) => Deletion::Done,
            Err(kube::Error::Api(status)) if status.code == 404 => Deletion::Done,
            Err(kube::Error::Api(status)) if status.code == 409 => Deletion::Changed,
            Err(err) => Deletion::Failed(format!(
                "failed to delete {kind} {}/{name}: {err}",
                report.namespace
            )),
        }
    }
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
    fn a_secret_goes_only_when_no_listed_job_keeps_it() {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        let secret = |owner: Option<&str>| -> Secret {
            let owners: Vec<_> = owner
                .into_iter()
                .map(|uid| json!({"apiVersion": "batch/v1", "kind": "Job", "name": "oc-run-1", "uid": uid}))
                .collect();
            serde_json::from_value(json!({"metadata": {
                "name": "oc-run-1",
                "creationTimestamp": "2026-11-27T10:00:00Z",
                "ownerReferences": owners,
            }}))
            .unwrap()
        };
        let listed = Listed {
            uids: HashSet::from(["uid-live".to_owned()]),
            names: HashSet::new(),
        };
        let reason = |secret: &Secret, older_than| {
            judge_secret(secret, now, older_than, &listed).map(|c| c.reason)
        };
        assert_eq!(reason(&secret(Some("uid-live")), hour), None);
        assert_eq!(
            reason(&secret(Some("uid-gone")), hour).as_deref(),
            Some("Job oc-run-1 is gone")
        );
        assert_eq!(reason(&secret(None), hour).as_deref(), Some("no owner Job"));
        assert_eq!(
            reason(&secret(None), 3 * hour),
            None,
            "a young Secret without an owner may be a run being started"
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
