//! Fault injection: failed requests, latency, refused connections, closed watches, cut log
//! streams, an API server that forbids everything for a while (its authorizer warming up after
//! a restart), the skew between the stdout and stderr stamps, the delay between a Job's target
//! condition and its `Complete`/`Failed`, and pods that cannot be scheduled, cannot pull their
//! image, get OOMKilled or exit with a chosen code after chosen output. Shared by the Rust API and
//! the control endpoint.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::logs::LogCut;

/// A Kubernetes verb (plus `follow` for follow log streams, which accounting counts apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Read one object (and non-follow logs).
    Get,
    /// Read a collection.
    List,
    /// Open a watch stream.
    Watch,
    /// Create.
    Create,
    /// Replace.
    Update,
    /// Patch.
    Patch,
    /// Delete.
    Delete,
    /// Open a follow log stream.
    Follow,
}

impl Verb {
    /// The lower-case verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::Follow => "follow",
        }
    }

    /// The RBAC verb authorizing this request (`follow` is a `get` of `pods/log`).
    pub fn rbac(self) -> &'static str {
        match self {
            Verb::Follow => "get",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verb string that is not one of [`Verb`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown verb {0:?}: expected get, list, watch, create, update, patch, delete or follow")]
pub struct UnknownVerb(String);

impl FromStr for Verb {
    type Err = UnknownVerb;
    fn from_str(s: &str) -> Result<Verb, UnknownVerb> {
        serde_json::from_value(Value::String(s.to_owned())).map_err(|_| UnknownVerb(s.to_owned()))
    }
}

/// How a scripted pod ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Exit with this code.
    Exit(i32),
    /// Get killed as OOMKilled (exit code 137).
    Oom,
}

/// Replaces a pod's command: write `output` (stdout) then end with `outcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// Text written to stdout before the end.
    pub output: String,
    /// How the container ends.
    pub outcome: Outcome,
}

/// Which pods a pod fault applies to: `*`, a pod name, or a Job name (its `job-name` label).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct PodMatch(pub(crate) String);

impl PodMatch {
    /// Whether `pod` is selected.
    pub(crate) fn matches(&self, pod: &Value) -> bool {
        let meta = &pod["metadata"];
        self.0 == "*"
            || meta["name"].as_str() == Some(self.0.as_str())
            || meta["labels"]["job-name"].as_str() == Some(self.0.as_str())
    }
}

#[derive(Debug)]
struct FailRule {
    verb: Verb,
    resource: String,
    remaining: u32,
    code: u16,
}

#[derive(Debug, Default)]
struct State {
    fail: Vec<FailRule>,
    latency: Duration,
    log_cut: LogCut,
    unschedulable: Vec<PodMatch>,
    image_pull: Vec<String>,
    scripts: Vec<(PodMatch, Script)>,
    forbid_until: Option<Instant>,
    log_errors: u32,
    stderr_lag: Option<Duration>,
    job_finish_delay: Option<Duration>,
}

/// How long v1.36's Job controller takes from `SuccessCriteriaMet`/`FailureTarget` to
/// `Complete`/`Failed` (it waits for the pod's finalizer to go): about 2 s, measured. Set it with
/// [`Faults::job_finish_delay`]; by default testkit writes both at once, so tools that read a
/// Job's end (`jobs`, `gc`) see it without waiting.
pub const REAL_JOB_FINISH_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    close_watches: watch::Sender<u64>,
    refuse: watch::Sender<Option<Duration>>,
    connection_epoch: AtomicU64,
}

/// The fault switchboard of one cluster. Cheap to clone; every clone controls the same cluster.
#[derive(Clone, Debug)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                close_watches: watch::channel(0).0,
                refuse: watch::channel(None).0,
                connection_epoch: AtomicU64::new(0),
            }),
        }
    }
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answer the next `n` requests matching `verb` on `resource` (`jobs`, `pods/log`, `*`)
    /// with `code` (409 as a lost race, 429 or 5xx) and an upstream-shaped Status.
    pub fn fail_next(&self, verb: Verb, resource: &str, n: u32, code: u16) {
        self.state().fail.push(FailRule {
            verb,
            resource: resource.to_owned(),
            remaining: n,
            code,
        });
    }

    /// Delay every API request by `latency` (zero to stop).
    pub fn latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// How follow log streams opened from now on are cut by the "kubelet".
    pub fn cut_logs(&self, cut: LogCut) {
        self.state().log_cut = cut;
    }

    /// End every open watch stream now (clients must re-watch).
    pub fn close_watches(&self) {
        self.shared.close_watches.send_modify(|n| *n += 1);
    }

    /// Refuse new connections for `duration` (the listener is closed and rebound on the same
    /// port afterwards); open watches and follow log streams end, and open keep-alive
    /// connections fail on their next request.
    pub fn refuse_connections(&self, duration: Duration) {
        self.shared.connection_epoch.fetch_add(1, Ordering::SeqCst);
        self.close_watches();
        self.shared.refuse.send_replace(Some(duration));
    }

    /// Answer every API request with 403 `Forbidden` (an RBAC-worded Status) for `duration`:
    /// a kube-apiserver right after a restart, its authorizer not ready yet (measured: a few
    /// seconds).
    pub fn forbid_all(&self, duration: Duration) {
        self.state().forbid_until = Some(Instant::now() + duration);
    }

    /// Answer the next `n` log requests the way a kubelet does when the container's log cannot
    /// be read (measured when a timed-out pod's container was removed): 200 with the plain text
    /// `unable to retrieve container logs for containerd://<id>`, no timestamp, no newline.
    pub fn log_error_next(&self, n: u32) {
        self.state().log_errors = n;
    }

    /// Stamp stderr this much earlier than stdout in containers started from now on (default
    /// [`DEFAULT_STDERR_LAG`](crate::logs::DEFAULT_STDERR_LAG); zero: one clock for both).
    pub fn stream_lag(&self, lag: Duration) {
        self.state().stderr_lag = Some(lag);
    }

    /// Time between a Job's `SuccessCriteriaMet`/`FailureTarget` and its `Complete`/`Failed`:
    /// [`REAL_JOB_FINISH_DELAY`] like a real cluster (default: none).
    pub fn job_finish_delay(&self, delay: Duration) {
        self.state().job_finish_delay = Some(delay);
    }

    /// Pods matching `pods` stay Pending with `PodScheduled=False` / `Unschedulable`.
    pub fn unschedulable(&self, pods: &str) {
        self.state().unschedulable.push(PodMatch(pods.to_owned()));
    }

    /// Images containing `pattern` fail to pull (ErrImagePull, then ImagePullBackOff).
    pub fn image_pull_fail(&self, pattern: &str) {
        self.state().image_pull.push(pattern.to_owned());
    }

    /// Pods matching `pods` write `output` then get OOMKilled (exit code 137).
    pub fn oom_after(&self, pods: &str, output: &str) {
        self.script(
            pods,
            Script {
                output: output.to_owned(),
                outcome: Outcome::Oom,
            },
        );
    }

    /// Pods matching `pods` write `output` then exit with `code`.
    pub fn exit_with(&self, pods: &str, output: &str, code: i32) {
        self.script(
            pods,
            Script {
                output: output.to_owned(),
                outcome: Outcome::Exit(code),
            },
        );
    }

    /// Replace the command of pods matching `pods` by `script`.
    pub fn script(&self, pods: &str, script: Script) {
        self.state()
            .scripts
            .push((PodMatch(pods.to_owned()), script));
    }

    /// Remove every fault (open streams already cut stay cut).
    pub fn clear(&self) {
        *self.state() = State::default();
    }

    /// The injected failure for this request, consuming one of its `n`.
    pub(crate) fn take_failure(&self, verb: Verb, resource: &str) -> Option<u16> {
        let mut state = self.state();
        let rule = state.fail.iter_mut().find(|r| {
            r.remaining > 0 && r.verb == verb && (r.resource == "*" || r.resource == resource)
        })?;
        rule.remaining -= 1;
        let code = rule.code;
        state.fail.retain(|r| r.remaining > 0);
        Some(code)
    }

    /// Whether the forbid-everything fault is on.
    pub(crate) fn forbidding(&self) -> bool {
        self.state()
            .forbid_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether this log request gets the kubelet's error text, consuming one.
    pub(crate) fn take_log_error(&self) -> bool {
        let mut state = self.state();
        let take = state.log_errors > 0;
        state.log_errors = state.log_errors.saturating_sub(1);
        take
    }

    pub(crate) fn current_stderr_lag(&self) -> Duration {
        self.state()
            .stderr_lag
            .unwrap_or(crate::logs::DEFAULT_STDERR_LAG)
    }

    pub(crate) fn current_job_finish_delay(&self) -> Duration {
        self.state().job_finish_delay.unwrap_or_default()
    }

    pub(crate) fn current_latency(&self) -> Duration {
        self.state().latency
    }

    pub(crate) fn current_log_cut(&self) -> LogCut {
        self.state().log_cut.clone()
    }

    pub(crate) fn is_unschedulable(&self, pod: &Value) -> bool {
        self.state().unschedulable.iter().any(|m| m.matches(pod))
    }

    pub(crate) fn image_pull_fails(&self, image: &str) -> bool {
        self.state()
            .image_pull
            .iter()
            .any(|p| image.contains(p.as_str()))
    }

    pub(crate) fn script_for(&self, pod: &Value) -> Option<Script> {
        self.state()
            .scripts
            .iter()
            .find(|(m, _)| m.matches(pod))
            .map(|(_, s)| s.clone())
    }

    pub(crate) fn watch_closer(&self) -> watch::Receiver<u64> {
        self.shared.close_watches.subscribe()
    }

    pub(crate) fn refusals(&self) -> watch::Receiver<Option<Duration>> {
        self.shared.refuse.subscribe()
    }

    pub(crate) fn connection_epoch(&self) -> u64 {
        self.shared.connection_epoch.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fail_next_fails_exactly_n_matching_requests() {
        let faults = Faults::default();
        faults.fail_next(Verb::Get, "jobs", 2, 503);
        assert_eq!(faults.take_failure(Verb::List, "jobs"), None);
        assert_eq!(faults.take_failure(Verb::Get, "jobs"), Some(503));
        assert_eq!(faults.take_failure(Verb::Get, "jobs"), Some(503));
        assert_eq!(faults.take_failure(Verb::Get, "jobs"), None);
    }

    #[test]
    fn pod_match_selects_by_pod_or_job_name() {
        let pod = json!({"metadata": {"name": "j-abcde", "labels": {"job-name": "j"}}});
        assert!(PodMatch("j".into()).matches(&pod));
        assert!(PodMatch("j-abcde".into()).matches(&pod));
        assert!(PodMatch("*".into()).matches(&pod));
        assert!(!PodMatch("k".into()).matches(&pod));
        assert_eq!("follow".parse::<Verb>().unwrap(), Verb::Follow);
        assert!("fetch".parse::<Verb>().is_err());
    }
}
