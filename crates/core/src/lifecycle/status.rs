//! Reading Kubernetes status (pure): when a Job is over, what the container did, and what stops
//! a pod from ever running. Checked against objects captured from a real v1.36 cluster.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};

use super::logs::ContainerState;
use crate::error_code::ErrorCode;

/// The Job reached `Complete` or `Failed` — only those are terminal; v1.36 first writes
/// `SuccessCriteriaMet` / `FailureTarget` while the pod may still be terminating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobEnd {
    Complete,
    Failed { reason: String, message: String },
}

/// How the Job ended, once it is over: its `Complete` or `Failed` condition.
pub(crate) fn job_end(job: &Job) -> Option<JobEnd> {
    condition_end(job, "Complete", "Failed")
}

/// How the Job ended or is ending: `Complete`/`Failed`, or already v1.36's `SuccessCriteriaMet` /
/// `FailureTarget` written before them (the pod may still be terminating). Enough to judge a
/// run whose container has exited; not for deciding the agent is free again.
pub(crate) fn job_outcome(job: &Job) -> Option<JobEnd> {
    job_end(job).or_else(|| condition_end(job, "SuccessCriteriaMet", "FailureTarget"))
}

/// The end the first true condition of type `complete` or `failed` says.
fn condition_end(job: &Job, complete: &str, failed: &str) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            t if t == complete => Some(JobEnd::Complete),
            t if t == failed => Some(JobEnd::Failed {
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            }),
            _ => None,
        })
}

/// A Job still counts against its agent's one-run-at-a-time limit: not finished, or being
/// deleted (its pod may still be running). v1.36 writes `Complete`/`Failed` seconds after the
/// pod ended; `SuccessCriteriaMet`, or a `FailureTarget` for a pod that already failed, means its
/// agent is over already (only a deadline's `FailureTarget` comes while the pod is being killed).
pub(crate) fn job_occupies_agent(job: &Job) -> bool {
    if job.metadata.deletion_timestamp.is_some() {
        return true;
    }
    match job_outcome(job) {
        None => true,
        Some(JobEnd::Complete) => false,
        Some(JobEnd::Failed { reason, .. }) => {
            job_end(job).is_none() && reason == "DeadlineExceeded"
        }
    }
}

/// How the agent container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) code: i32,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub(crate) reason: String,
}

fn container_status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)
}

/// The container's exit, read from its state — a pod can show `terminated` while its phase
/// still says Running (measured), so the phase alone is not enough.
pub(crate) fn container_exit(pod: &Pod, container: &str) -> Option<Exit> {
    let terminated = container_status(pod, container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some(Exit {
        code: terminated.exit_code,
        reason: terminated.reason.clone().unwrap_or_default(),
    })
}

/// What the log follower needs to know about the container.
pub(crate) fn container_state(pod: &Pod, container: &str) -> ContainerState {
    let Some(state) = container_status(pod, container).and_then(|s| s.state.as_ref()) else {
        return ContainerState::Waiting;
    };
    if state.terminated.is_some() {
        ContainerState::Terminated
    } else if state.running.is_some() {
        ContainerState::Running
    } else {
        ContainerState::Waiting
    }
}

/// The pod has been scheduled to a node.
pub(crate) fn pod_scheduled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
        || pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "True")
            })
}

/// Something that keeps the pod from ever running: the run fails fast with its code instead of
/// waiting out a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocker {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

/// A blocker visible in the pod's status: the agent container's, or an init container's (the
/// one that creates the agent's home runs the same image, so a bad image or a missing Secret
/// shows there first), or an init container that failed.
pub(crate) fn pod_blocker(pod: &Pod, container: &str) -> Option<Blocker> {
    let status = pod.status.as_ref()?;
    let inits = status.init_container_statuses.iter().flatten();
    let waiting = container_status(pod, container)
        .into_iter()
        .chain(inits.clone())
        .filter_map(|s| s.state.as_ref()?.waiting.as_ref());
    for waiting in waiting {
        if let Some(blocker) = waiting_blocker(
            waiting.reason.as_deref().unwrap_or_default(),
            waiting.message.as_deref().unwrap_or_default(),
        ) {
            return Some(blocker);
        }
    }
    inits
        .filter_map(|s| Some((s.name.as_str(), s.state.as_ref()?.terminated.as_ref()?)))
        .find(|(_, terminated)| terminated.exit_code != 0)
        .map(|(name, terminated)| Blocker {
            code: ErrorCode::K8sVolumeMountFailed,
            message: format!(
                "init container {name} exited with code {}: {}",
                terminated.exit_code,
                terminated
                    .message
                    .as_deref()
                    .or(terminated.reason.as_deref())
                    .unwrap_or_default()
            ),
        })
}

fn waiting_blocker(reason: &str, message: &str) -> Option<Blocker> {
    let code = match reason {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            ErrorCode::K8sImagePullFailed
        }
        "CreateContainerConfigError" | "CreateContainerError" => ErrorCode::K8sContainerConfigError,
        _ => return None,
    };
    Some(Blocker {
        code,
        message: format!("{reason}: {message}"),
    })
}

/// The scheduler said no — except while a PersistentVolumeClaim is still binding, which
/// resolves by itself.
pub(crate) fn unschedulable(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let condition = conditions.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    let message = condition.message.clone().unwrap_or_default();
    (!is_pvc_binding(&message)).then_some(message)
}

fn is_pvc_binding(message: &str) -> bool {
    message.contains("unbound immediate PersistentVolumeClaims")
        || message.contains("waiting for first consumer")
        || message.contains("persistentvolumeclaim")
            && message.contains("not found")
            && message.contains("binding")
}

/// A blocker told only by an Event: a volume that cannot be mounted because what it refers
/// to does not exist (other mount failures are retried by the kubelet and left to the start
/// bound).
pub(crate) fn event_blocker(event: &Event) -> Option<Blocker> {
    let reason = event.reason.as_deref().unwrap_or_default();
    let message = event.message.clone().unwrap_or_default();
    (reason == "FailedMount" && message.contains("not found")).then(|| Blocker {
        code: ErrorCode::K8sVolumeMountFailed,
        message: format!("{reason}: {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{first_pod, fixture};

    #[test]
    fn only_complete_and_failed_are_terminal() {
        let complete: Job = fixture("32-job-complete-with-partial-line.json");
        assert_eq!(job_end(&complete), Some(JobEnd::Complete));
        let deadline: Job = fixture("24-get-job-deadline-exceeded.json");
        assert!(
            matches!(job_end(&deadline), Some(JobEnd::Failed { reason, .. }) if reason == "DeadlineExceeded")
        );
        let mut target_only = deadline.clone();
        let status = target_only.status.as_mut().unwrap();
        status
            .conditions
            .as_mut()
            .unwrap()
            .retain(|c| c.type_ == "FailureTarget");
        assert_eq!(
            job_end(&target_only),
            None,
            "FailureTarget alone is not terminal"
        );
        assert!(
            matches!(job_outcome(&target_only), Some(JobEnd::Failed { reason, .. }) if reason == "DeadlineExceeded"),
            "but it tells how the Job ends"
        );
        assert!(
            job_occupies_agent(&target_only),
            "a deadline's pod is still being killed"
        );
        let mut backoff = target_only.clone();
        let conditions = backoff
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap();
        conditions[0].reason = Some("BackoffLimitExceeded".into());
        assert!(
            !job_occupies_agent(&backoff),
            "the pod of a Job failing for its exit has ended"
        );
        let created: Job = fixture("02-create-job.json");
        assert_eq!(job_end(&created), None);
    }

    #[test]
    fn exit_codes_and_reasons_come_from_the_container_state() {
        let container = |pod: &Pod| pod.spec.as_ref().unwrap().containers[0].name.clone();
        let exit3 = first_pod("35-pods-exit3.json");
        assert_eq!(
            container_exit(&exit3, &container(&exit3)),
            Some(Exit {
                code: 3,
                reason: "Error".into()
            })
        );
        let oom = first_pod("35-pods-oom.json");
        assert_eq!(
            container_exit(&oom, &container(&oom)),
            Some(Exit {
                code: 137,
                reason: "OOMKilled".into()
            })
        );
        assert_eq!(
            container_state(&oom, &container(&oom)),
            ContainerState::Terminated
        );
    }

    #[test]
    fn terminated_while_phase_still_running_counts_as_terminated() {
        let lines = std::fs::read_to_string(format!(
            "{}/../../fixtures/kube/40-watch-pod-lifecycle.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let seen: Vec<(String, ContainerState)> = lines
            .lines()
            .map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                let pod: Pod = serde_json::from_value(event["object"].clone()).unwrap();
                let name = pod.spec.as_ref().unwrap().containers[0].name.clone();
                let phase = pod
                    .status
                    .as_ref()
                    .unwrap()
                    .phase
                    .clone()
                    .unwrap_or_default();
                (phase, container_state(&pod, &name))
            })
            .collect();
        assert!(
            seen.contains(&("Running".to_owned(), ContainerState::Terminated)),
            "{seen:?}"
        );
        assert_eq!(seen.last().map(|s| s.1), Some(ContainerState::Terminated));
    }

    #[test]
    fn image_pull_and_missing_secret_are_blockers_with_their_codes() {
        let pull = first_pod("35-pods-imagepull.json");
        let name = pull.spec.as_ref().unwrap().containers[0].name.clone();
        assert_eq!(
            pod_blocker(&pull, &name).map(|b| b.code),
            Some(ErrorCode::K8sImagePullFailed)
        );
        let cfg = first_pod("35-pods-cfgerr.json");
        let blocker = pod_blocker(&cfg, &name).unwrap();
        assert_eq!(blocker.code, ErrorCode::K8sContainerConfigError);
        assert!(
            blocker
                .message
                .contains("secret \"missing-secret\" not found"),
            "{}",
            blocker.message
        );
    }

    /// The same pod as the real capture, with the blocked status on an init container instead.
    fn blocked_in_init(name: &str) -> Pod {
        let mut pod = first_pod(name);
        let status = pod.status.as_mut().unwrap();
        status.init_container_statuses = status.container_statuses.take();
        pod
    }

    #[test]
    fn an_init_container_blocked_or_failed_is_a_blocker_too() {
        let pull = blocked_in_init("35-pods-imagepull.json");
        assert_eq!(
            pod_blocker(&pull, "opencode").map(|b| b.code),
            Some(ErrorCode::K8sImagePullFailed)
        );
        let cfg = blocked_in_init("35-pods-cfgerr.json");
        assert_eq!(
            pod_blocker(&cfg, "opencode").map(|b| b.code),
            Some(ErrorCode::K8sContainerConfigError)
        );
        let mut failed = blocked_in_init("35-pods-exit3.json");
        failed
            .status
            .as_mut()
            .unwrap()
            .init_container_statuses
            .as_mut()
            .unwrap()[0]
            .name = "opencode-k8s-home".into();
        let blocker = pod_blocker(&failed, "opencode").unwrap();
        assert_eq!(blocker.code, ErrorCode::K8sVolumeMountFailed);
        assert!(
            blocker
                .message
                .starts_with("init container opencode-k8s-home exited with code 3"),
            "{}",
            blocker.message
        );
    }

    #[test]
    fn unschedulable_but_not_while_a_claim_binds() {
        let pod = first_pod("26-get-pod-unschedulable.json");
        assert_eq!(
            unschedulable(&pod).as_deref(),
            Some("no nodes available to schedule pods")
        );
        let mut binding = pod.clone();
        let conditions = binding
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap();
        conditions[0].message = Some(
            "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.".into(),
        );
        assert_eq!(unschedulable(&binding), None);
        assert!(!pod_scheduled(&pod));
    }
}
