//! The scheduler and kubelet of the one simulated node: binds new pods (or leaves them
//! Unschedulable), "pulls" images (never: a pull failure is a fault), resolves env and volumes,
//! runs the pod's main container as a local process through [`runtime`](crate::runtime), and
//! writes pod status and events the way a v1.36 kubelet does (fixtures 33–36, 40).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cluster::Shared;
use crate::events::{Ev, EventType, NODE_NAME, Reporter, record};
use crate::faults::{Outcome, Script};
use crate::logs::{LogBuffer, LogCut, LogQuery};
use crate::objects::now_seconds;
use crate::podspec::{ConfigError, LOCAL_IP, resolve};
use crate::resource::Resource;
use crate::runtime::{Container, Termination};
use crate::store::{Change, ChangeKind, next_change};

/// What the node runs: log buffers (kept until the pod is deleted, so logs stay readable after
/// exit) and live containers (so shutdown can kill them).
#[derive(Debug, Default)]
pub(crate) struct Node {
    logs: Mutex<HashMap<(String, String), Arc<LogBuffer>>>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    stops: Mutex<HashMap<String, watch::Sender<Option<Duration>>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// The log buffer of a started container.
    pub(crate) fn logs(&self, pod_uid: &str, container: &str) -> Option<Arc<LogBuffer>> {
        locked(&self.logs)
            .get(&(pod_uid.to_owned(), container.to_owned()))
            .cloned()
    }

    /// Kills every container now (shutdown, Drop).
    pub(crate) fn kill_all(&self) -> Vec<Arc<Container>> {
        let containers: Vec<Arc<Container>> =
            locked(&self.containers).drain().map(|(_, c)| c).collect();
        for c in &containers {
            c.stop(Duration::ZERO);
        }
        containers
    }

    fn forget(&self, uid: &str) {
        locked(&self.logs).retain(|(pod, _), _| pod != uid);
        locked(&self.containers).remove(uid);
        if let Some(stop) = locked(&self.stops).remove(uid) {
            stop.send_replace(Some(Duration::ZERO));
        }
    }
}

fn uid_of(obj: &Value) -> String {
    obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Reacts to pod changes: a new pod gets its own task; a deletion mark or removal stops it.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<Arc<Change>>,
    cancel: CancellationToken,
) {
    while let Some(change) = next_change(&mut changes, &cancel).await {
        if change.resource != Resource::Pods {
            continue;
        }
        let uid = uid_of(&change.object);
        match change.kind {
            ChangeKind::Added => {
                let (tx, rx) = watch::channel(None);
                locked(&shared.node.stops).insert(uid, tx);
                let pod = PodTask {
                    shared: shared.clone(),
                    ns: change.object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    name: change.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    stop: rx,
                    cancel: cancel.child_token(),
                };
                tokio::spawn(pod.run((*change.object).clone()));
            }
            ChangeKind::Modified => {
                let meta = &change.object["metadata"];
                if !meta["deletionTimestamp"].is_null() {
                    let grace = meta["deletionGracePeriodSeconds"].as_u64().unwrap_or(30);
                    if let Some(stop) = locked(&shared.node.stops).get(&uid) {
                        stop.send_if_modified(|s| {
                            let first = s.is_none();
                            if first {
                                *s = Some(Duration::from_secs(grace));
                            }
                            first
                        });
                    }
                }
            }
            ChangeKind::Deleted => shared.node.forget(&uid),
        }
    }
}

struct PodTask {
    shared: Arc<Shared>,
    ns: String,
    name: String,
    stop: watch::Receiver<Option<Duration>>,
    cancel: CancellationToken,
}

fn set_condition(
    status: &mut Value,
    kind: &str,
    value: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let now = now_seconds();
    let mut condition = json!({"type": kind, "observedGeneration": 1, "status": value, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        condition["reason"] = json!(r);
    }
    if let Some(m) = message {
        condition["message"] = json!(m);
    }
    let list = status["conditions"]
        .as_array_mut()
        .expect("just made an array");
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            if existing["status"] == value {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = condition;
        }
        None => list.push(condition),
    }
}

impl PodTask {
    fn event(
        &self,
        pod: &Value,
        reporter: Reporter,
        event_type: EventType,
        reason: &str,
        message: &str,
        container: Option<&str>,
    ) {
        let field_path = container.map(|c| format!("spec.containers{{{c}}}"));
        record(
            &self.shared.store,
            Resource::Pods,
            pod,
            Ev {
                reporter,
                event_type,
                reason,
                message,
                field_path: field_path.as_deref(),
            },
        );
    }

    /// The kubelet's `Failed` warning about the pod's container `cname`.
    fn failed(&self, pod: &Value, cname: &str, message: &str) {
        self.event(
            pod,
            Reporter::Kubelet,
            EventType::Warning,
            "Failed",
            message,
            Some(cname),
        );
    }

    /// Applies `f` to the pod's status; `None` when the pod is gone.
    fn status(&self, f: impl FnOnce(&mut Value)) -> Option<Arc<Value>> {
        self.shared
            .store
            .update(Resource::Pods, &self.ns, &self.name, |pod| {
                f(&mut pod["status"]);
                Ok(())
            })
            .ok()
    }

    fn container_status(&self, pod: &mut Value, state: Value, ready: bool) {
        let spec = pod["spec"]["containers"][0].clone();
        let name = spec["name"].clone();
        let image = spec["image"].clone();
        let started = state.get("running").is_some();
        let mut cs = json!({"name": name, "image": image, "imageID": "", "lastState": {}, "ready": ready,
            "restartCount": 0, "started": started, "state": state});
        if started || state.get("terminated").is_some() {
            cs["containerID"] = json!(format!("kube-sim://{}", uid_of(pod)));
            cs["imageID"] = json!(format!("kube-sim://{}", image.as_str().unwrap_or_default()));
        }
        pod["status"]["containerStatuses"] = json!([cs]);
    }

    fn set_container(&self, state: Value, ready: bool) -> Option<Arc<Value>> {
        self.shared
            .store
            .update(Resource::Pods, &self.ns, &self.name, |pod| {
                self.container_status(pod, state, ready);
                Ok(())
            })
            .ok()
    }

    /// Waits for a stop request (deletion) or cluster shutdown; the grace period if stopped.
    async fn stopped(&mut self) -> Option<Duration> {
        loop {
            if let Some(grace) = *self.stop.borrow_and_update() {
                return Some(grace);
            }
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                changed = self.stop.changed() => if changed.is_err() { return Some(Duration::ZERO) },
            }
        }
    }

    /// Removes a pod marked for deletion once nothing runs for it any more.
    fn finish_deletion(&self) {
        let marked = self
            .shared
            .store
            .get(Resource::Pods, &self.ns, &self.name)
            .is_some_and(|p| !p["metadata"]["deletionTimestamp"].is_null());
        if marked {
            self.shared
                .store
                .remove(Resource::Pods, &self.ns, &self.name);
        }
    }

    async fn park(mut self) {
        if self.stopped().await.is_some() {
            self.finish_deletion();
        }
    }

    fn scheduling_problem(&self, pod: &Value) -> Option<String> {
        const TAIL: &str =
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
        if self.shared.faults.is_unschedulable(pod) {
            return Some(format!(
                "0/1 nodes are available: 1 node(s) were unschedulable. {TAIL}"
            ));
        }
        for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str()
                && self
                    .shared
                    .store
                    .get(Resource::PersistentVolumeClaims, &self.ns, claim)
                    .is_none()
            {
                return Some(format!(
                    "0/1 nodes are available: persistentvolumeclaim \"{claim}\" not found. {TAIL}"
                ));
            }
        }
        None
    }

    async fn run(self, pod: Value) {
        if let Some(message) = self.scheduling_problem(&pod) {
            // The event first: whoever sees the condition can already list the event.
            self.event(
                &pod,
                Reporter::Scheduler,
                EventType::Warning,
                "FailedScheduling",
                &message,
                None,
            );
            self.status(|s| {
                set_condition(
                    s,
                    "PodScheduled",
                    "False",
                    Some("Unschedulable"),
                    Some(&message),
                );
            });
            return self.park().await;
        }
        let bound = self
            .shared
            .store
            .update(Resource::Pods, &self.ns, &self.name, |p| {
                p["spec"]["nodeName"] = json!(NODE_NAME);
                let container = p["spec"]["containers"][0]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let unready = format!("containers with unready status: [{container}]");
                let s = &mut p["status"];
                s["phase"] = json!("Pending");
                set_condition(s, "PodReadyToStartContainers", "False", None, None);
                set_condition(s, "Initialized", "True", None, None);
                set_condition(
                    s,
                    "Ready",
                    "False",
                    Some("ContainersNotReady"),
                    Some(&unready),
                );
                set_condition(
                    s,
                    "ContainersReady",
                    "False",
                    Some("ContainersNotReady"),
                    Some(&unready),
                );
                set_condition(s, "PodScheduled", "True", None, None);
                s["hostIP"] = json!(LOCAL_IP);
                s["hostIPs"] = json!([{"ip": LOCAL_IP}]);
                s["podIP"] = json!(LOCAL_IP);
                s["podIPs"] = json!([{"ip": LOCAL_IP}]);
                s["startTime"] = json!(now_seconds());
                self.container_status(
                    p,
                    json!({"waiting": {"reason": "ContainerCreating"}}),
                    false,
                );
                Ok(())
            });
        let Ok(pod) = bound else { return };
        let message = format!(
            "Successfully assigned {}/{} to {NODE_NAME}",
            self.ns, self.name
        );
        self.event(
            &pod,
            Reporter::Scheduler,
            EventType::Normal,
            "Scheduled",
            &message,
            None,
        );
        self.start(pod).await;
    }

    async fn start(mut self, pod: Arc<Value>) {
        let spec = pod["spec"]["containers"][0].clone();
        let cname = spec["name"].as_str().unwrap_or_default().to_owned();
        let image = spec["image"].as_str().unwrap_or_default().to_owned();
        if self.shared.faults.image_pull_fails(&image) {
            return self.fail_pull(&pod, &cname, &image).await;
        }
        let pulled = format!(
            "Container image \"{image}\" already present on machine and can be accessed by the pod"
        );
        self.event(
            &pod,
            Reporter::Kubelet,
            EventType::Normal,
            "Pulled",
            &pulled,
            Some(&cname),
        );
        let script = self.shared.faults.script_for(&pod);
        let process = match resolve(&self.shared, &pod, script.as_ref()) {
            Ok(process) => process,
            Err(ConfigError::Container(message)) => {
                self.set_container(json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}}), false);
                self.failed(&pod, &cname, &format!("Error: {message}"));
                return self.park().await;
            }
            Err(ConfigError::Mount(message)) => {
                self.event(
                    &pod,
                    Reporter::Kubelet,
                    EventType::Warning,
                    "FailedMount",
                    &message,
                    None,
                );
                return self.park().await;
            }
        };
        let uid = uid_of(&pod);
        let log_dir = self
            .shared
            .dir
            .join("pods")
            .join(&uid)
            .join("logs")
            .join(&cname);
        let logs = match std::fs::create_dir_all(&log_dir).and_then(|()| LogBuffer::new(&log_dir)) {
            Ok(logs) => logs,
            Err(err) => {
                tracing::error!(%err, pod = %self.name, "cannot create the container log");
                return self.park().await;
            }
        };
        logs.set_stderr_lag(self.shared.faults.current_stderr_lag());
        locked(&self.shared.node.logs).insert((uid.clone(), cname.clone()), logs.clone());
        self.event(
            &pod,
            Reporter::Kubelet,
            EventType::Normal,
            "Created",
            "Container created",
            Some(&cname),
        );
        let container = match Container::start(process, logs.clone()).await {
            Ok(c) => Arc::new(c),
            Err(err) => {
                let now = now_seconds();
                let message = err.to_string();
                self.set_container(json!({"terminated": {"exitCode": 128, "reason": "StartError", "message": message, "startedAt": now, "finishedAt": now}}), false);
                self.status(|s| s["phase"] = json!("Failed"));
                self.failed(&pod, &cname, &format!("Error: {message}"));
                return self.park().await;
            }
        };
        locked(&self.shared.node.containers).insert(uid.clone(), container.clone());
        self.event(
            &pod,
            Reporter::Kubelet,
            EventType::Normal,
            "Started",
            "Container started",
            Some(&cname),
        );
        let started = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let running = self
            .shared
            .store
            .update(Resource::Pods, &self.ns, &self.name, |p| {
                self.container_status(p, json!({"running": {"startedAt": started}}), true);
                let s = &mut p["status"];
                s["phase"] = json!("Running");
                set_condition(s, "PodReadyToStartContainers", "True", None, None);
                set_condition(s, "Ready", "True", None, None);
                set_condition(s, "ContainersReady", "True", None, None);
                Ok(())
            });
        if let Some(Script {
            output,
            outcome: Outcome::Oom,
        }) = &script
        {
            tokio::spawn(oom_when_written(container.clone(), logs, output.len()));
        }
        let stop = tokio::select! {
            termination = container.wait() => Ok(termination),
            grace = self.stopped() => Err(grace),
        };
        let termination = match stop {
            Ok(termination) => termination,
            Err(None) => {
                container.stop(Duration::ZERO);
                return;
            }
            Err(Some(grace)) => {
                if let Ok(pod) = &running {
                    let message = format!("Stopping container {cname}");
                    self.event(
                        pod,
                        Reporter::Kubelet,
                        EventType::Normal,
                        "Killing",
                        &message,
                        Some(&cname),
                    );
                }
                container.stop(grace);
                container.wait().await
            }
        };
        locked(&self.shared.node.containers).remove(&uid);
        self.terminated(&termination);
        self.park().await;
    }

    /// Two writes, as measured (fixture 40): the terminated state while the phase still says
    /// Running, then the final phase.
    fn terminated(&self, t: &Termination) {
        let fmt = |ts: jiff::Timestamp| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut terminated = json!({"exitCode": t.exit_code, "reason": t.reason.as_str(),
            "startedAt": fmt(t.started_at), "finishedAt": fmt(t.finished_at)});
        if let Some(signal) = t.signal {
            terminated["signal"] = json!(signal);
        }
        let failed = t.exit_code != 0;
        let _ = self
            .shared
            .store
            .update(Resource::Pods, &self.ns, &self.name, |p| {
                self.container_status(p, json!({"terminated": terminated}), false);
                let reason = if failed { "PodFailed" } else { "PodCompleted" };
                set_condition(&mut p["status"], "Ready", "False", Some(reason), None);
                set_condition(
                    &mut p["status"],
                    "ContainersReady",
                    "False",
                    Some(reason),
                    None,
                );
                Ok(())
            });
        self.status(|s| {
            s["phase"] = json!(if failed { "Failed" } else { "Succeeded" });
            set_condition(s, "PodReadyToStartContainers", "False", None, None);
        });
    }

    async fn fail_pull(mut self, pod: &Value, cname: &str, image: &str) {
        let cause = format!(
            "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found (kube-sim image pull fault)"
        );
        self.event(
            pod,
            Reporter::Kubelet,
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
            Some(cname),
        );
        self.failed(
            pod,
            cname,
            &format!("Failed to pull image \"{image}\": {cause}"),
        );
        self.failed(pod, cname, "Error: ErrImagePull");
        self.set_container(
            json!({"waiting": {"reason": "ErrImagePull", "message": cause}}),
            false,
        );
        let backoff = self.shared.options.image_pull_backoff;
        let stopped = tokio::select! {
            () = tokio::time::sleep(backoff) => None,
            grace = self.stopped() => Some(grace),
        };
        if let Some(grace) = stopped {
            if grace.is_some() {
                self.finish_deletion();
            }
            return;
        }
        self.event(
            pod,
            Reporter::Kubelet,
            EventType::Normal,
            "BackOff",
            &format!("Back-off pulling image \"{image}\""),
            Some(cname),
        );
        self.failed(pod, cname, "Error: ImagePullBackOff");
        let message = format!("Back-off pulling image \"{image}\": ErrImagePull: {cause}");
        self.set_container(
            json!({"waiting": {"reason": "ImagePullBackOff", "message": message}}),
            false,
        );
        self.park().await;
    }
}

/// Kills the container as OOMKilled once its scripted output is fully in the log.
async fn oom_when_written(container: Arc<Container>, logs: Arc<LogBuffer>, bytes: usize) {
    let mut written = 0;
    let mut stream = std::pin::pin!(logs.read(
        LogQuery {
            follow: true,
            ..LogQuery::default()
        },
        LogCut::Never,
    ));
    while written < bytes {
        match stream.next().await {
            Some(chunk) => written += chunk.len(),
            None => return,
        }
    }
    container.oom_kill();
}
