//! The Job controller: one pod per Job (`<job>-<5 chars>` with the job-name/controller-uid labels
//! and a controller ownerReference), Job status (active/succeeded/failed, startTime,
//! completionTime), the two-step conditions v1.36 writes (SuccessCriteriaMet → Complete,
//! FailureTarget → Failed, the second after a delay if set: the real controller waits for the
//! pod's tracking finalizer, about 2 s, see [`Faults::job_finish_delay`](crate::Faults::job_finish_delay)),
//! backoffLimit retries, activeDeadlineSeconds and ttlSecondsAfterFinished, with their events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Shared;
use crate::events::{Ev, EventType, Reporter, record};
use crate::objects::{self, Preconditions, Propagation, now_seconds};
use crate::resource::Resource;
use crate::store::{Change, ChangeKind};

const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";
const BACKOFF_MESSAGE: &str = "Job has reached the specified backoff limit";
const COMPLETE_MESSAGE: &str = "Reached expected number of succeeded pods";

#[derive(Debug)]
enum Timer {
    Deadline {
        ns: String,
        name: String,
        uid: String,
    },
    Ttl {
        ns: String,
        name: String,
        uid: String,
    },
    /// Write `Complete` (or `Failed` with its reason) after the target condition.
    Finish {
        ns: String,
        name: String,
        uid: String,
        failed: Option<(String, String)>,
    },
}

struct JobController {
    shared: Arc<Shared>,
    timers: mpsc::UnboundedSender<Timer>,
    /// Pods whose end was already counted in their Job's status.
    counted: HashSet<String>,
    /// Jobs whose first pod was already created.
    started: HashSet<String>,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn has_condition(job: &Value, kind: &str) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn finished(job: &Value) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = now_seconds();
    json!({"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now,
           "reason": reason, "message": message})
}

fn push_condition(status: &mut Value, c: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(list) = status["conditions"].as_array_mut() {
        list.push(c);
    }
}

/// The Job (namespace, name, uid) that controls `pod`, if any.
fn controller_of(pod: &Value) -> Option<(String, String, String)> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "Job" && r["controller"] == true)
        .map(|r| {
            (
                text(&pod["metadata"]["namespace"]),
                text(&r["name"]),
                text(&r["uid"]),
            )
        })
}

/// Runs the controller until `cancel`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<Arc<Change>>,
    cancel: CancellationToken,
) {
    let (timers, mut fired) = mpsc::unbounded_channel();
    let mut controller = JobController {
        shared,
        timers,
        counted: HashSet::new(),
        started: HashSet::new(),
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            change = changes.recv() => match change {
                Some(change) => controller.on_change(&change),
                None => return,
            },
            Some(timer) = fired.recv() => controller.on_timer(timer),
        }
    }
}

impl JobController {
    fn event(&self, job: &Value, event_type: EventType, reason: &str, message: &str) {
        record(
            &self.shared.store,
            Resource::Jobs,
            job,
            Ev {
                reporter: Reporter::JobController,
                event_type,
                reason,
                message,
                field_path: None,
            },
        );
    }

    fn after(&self, delay: Duration, timer: Timer) {
        let tx = self.timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The controller is gone at shutdown; the timer is then moot.
            let _ = tx.send(timer);
        });
    }

    /// The Job if it still exists with this uid.
    fn job(&self, ns: &str, name: &str, uid: &str) -> Option<Arc<Value>> {
        self.shared
            .store
            .get(Resource::Jobs, ns, name)
            .filter(|j| j["metadata"]["uid"].as_str() == Some(uid))
    }

    fn update(&self, job: &Value, f: impl FnOnce(&mut Value)) -> Option<Arc<Value>> {
        self.shared
            .store
            .update(
                Resource::Jobs,
                &text(&job["metadata"]["namespace"]),
                &text(&job["metadata"]["name"]),
                |j| {
                    f(&mut j["status"]);
                    Ok(())
                },
            )
            .ok()
    }

    fn on_change(&mut self, change: &Change) {
        match (change.resource, change.kind) {
            (Resource::Jobs, ChangeKind::Added) => self.start_job(&change.object),
            (Resource::Jobs, ChangeKind::Deleted) => {
                self.started
                    .remove(&text(&change.object["metadata"]["uid"]));
            }
            (Resource::Pods, ChangeKind::Modified | ChangeKind::Deleted) => {
                self.on_pod(&change.object, change.kind == ChangeKind::Deleted);
            }
            _ => {}
        }
    }

    fn start_job(&mut self, job: &Value) {
        let uid = text(&job["metadata"]["uid"]);
        if job["spec"]["suspend"] == true || finished(job) || !self.started.insert(uid.clone()) {
            return;
        }
        let Some(job) = self.update(job, |s| {
            s["startTime"] = json!(now_seconds());
            s["active"] = json!(0);
            s["terminating"] = json!(0);
            s["uncountedTerminatedPods"] = json!({});
            s["ready"] = json!(0);
        }) else {
            return;
        };
        self.create_pod(&job);
        if let Some(deadline) = job["spec"]["activeDeadlineSeconds"].as_u64() {
            let timer = Timer::Deadline {
                ns: text(&job["metadata"]["namespace"]),
                name: text(&job["metadata"]["name"]),
                uid,
            };
            self.after(Duration::from_secs(deadline), timer);
        }
    }

    fn create_pod(&self, job: &Value) {
        let meta = &job["metadata"];
        let template = &job["spec"]["template"];
        let mut pod = json!({
            "metadata": {
                "generateName": format!("{}-", text(&meta["name"])),
                "labels": template["metadata"]["labels"],
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                    "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": template["spec"],
        });
        if template["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
        }
        let ns = text(&meta["namespace"]);
        match objects::create(&self.shared.store, Resource::Pods, Some(&ns), pod) {
            Ok(pod) => {
                let message = format!("Created pod: {}", text(&pod["metadata"]["name"]));
                self.event(job, EventType::Normal, "SuccessfulCreate", &message);
                self.update(job, |s| {
                    s["active"] = json!(s["active"].as_i64().unwrap_or(0) + 1)
                });
            }
            Err(err) => {
                let message = format!("Error creating: {}", err.message);
                self.event(job, EventType::Warning, "FailedCreate", &message);
            }
        }
    }

    fn on_pod(&mut self, pod: &Value, deleted: bool) {
        let Some((ns, name, uid)) = controller_of(pod) else {
            return;
        };
        let Some(job) = self.job(&ns, &name, &uid) else {
            return;
        };
        if finished(&job) {
            return;
        }
        let pod_uid = text(&pod["metadata"]["uid"]);
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        let ended = deleted || phase == "Succeeded" || phase == "Failed";
        if !ended {
            let ready = i64::from(pod["status"]["containerStatuses"][0]["ready"] == true);
            self.update(&job, |s| s["ready"] = json!(ready));
            return;
        }
        if !self.counted.insert(pod_uid) {
            return;
        }
        if phase == "Succeeded" {
            return self.complete(&job);
        }
        let Some(job) = self.update(&job, |s| {
            s["active"] = json!((s["active"].as_i64().unwrap_or(1) - 1).max(0));
            s["failed"] = json!(s["failed"].as_i64().unwrap_or(0) + 1);
            s["ready"] = json!(0);
        }) else {
            return;
        };
        if has_condition(&job, "FailureTarget") {
            let reason = job["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "FailureTarget")
                .map(|c| (text(&c["reason"]), text(&c["message"])))
                .unwrap_or_default();
            return self.fail(&job, &reason.0, &reason.1, false);
        }
        let failed = job["status"]["failed"].as_i64().unwrap_or(1);
        let limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
        if failed > limit {
            self.fail(&job, "BackoffLimitExceeded", BACKOFF_MESSAGE, true);
        } else if job["metadata"]["deletionTimestamp"].is_null() {
            self.create_pod(&job);
        }
    }

    fn complete(&self, job: &Value) {
        let Some(job) = self.update(job, |s| {
            s["active"] = json!(0);
            s["succeeded"] = json!(s["succeeded"].as_i64().unwrap_or(0) + 1);
            s["ready"] = json!(0);
            push_condition(
                s,
                condition("SuccessCriteriaMet", "CompletionsReached", COMPLETE_MESSAGE),
            );
        }) else {
            return;
        };
        self.finish_later(&job, None);
    }

    /// Schedule `Complete` (`failed: None`) or `Failed` after the finish delay.
    fn finish_later(&self, job: &Value, failed: Option<(String, String)>) {
        let meta = &job["metadata"];
        let timer = Timer::Finish {
            ns: text(&meta["namespace"]),
            name: text(&meta["name"]),
            uid: text(&meta["uid"]),
            failed,
        };
        self.after(self.shared.faults.current_job_finish_delay(), timer);
    }

    fn write_complete(&self, job: &Value) {
        let Some(job) = self.update(job, |s| {
            s["completionTime"] = json!(now_seconds());
            push_condition(
                s,
                condition("Complete", "CompletionsReached", COMPLETE_MESSAGE),
            );
        }) else {
            return;
        };
        self.event(&job, EventType::Normal, "Completed", "Job completed");
        self.schedule_ttl(&job);
    }

    /// Writes `Failed`: with `target`, `FailureTarget` now and `Failed` after the finish delay;
    /// without (the target is written and the pods are gone), `Failed` now.
    fn fail(&self, job: &Value, reason: &str, message: &str, target: bool) {
        if target {
            let Some(job) = self.update(job, |s| {
                push_condition(s, condition("FailureTarget", reason, message))
            }) else {
                return;
            };
            self.event(&job, EventType::Warning, reason, message);
            self.finish_later(&job, Some((reason.to_owned(), message.to_owned())));
        } else {
            self.write_failed(job, reason, message);
        }
    }

    fn write_failed(&self, job: &Value, reason: &str, message: &str) {
        let Some(job) = self.update(job, |s| {
            push_condition(s, condition("Failed", reason, message))
        }) else {
            return;
        };
        self.schedule_ttl(&job);
    }

    fn schedule_ttl(&self, job: &Value) {
        if let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_u64() {
            let meta = &job["metadata"];
            let timer = Timer::Ttl {
                ns: text(&meta["namespace"]),
                name: text(&meta["name"]),
                uid: text(&meta["uid"]),
            };
            self.after(Duration::from_secs(ttl), timer);
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Deadline { ns, name, uid } => {
                let Some(job) = self.job(&ns, &name, &uid).filter(|j| !finished(j)) else {
                    return;
                };
                let Some(job) = self.update(&job, |s| {
                    push_condition(
                        s,
                        condition("FailureTarget", "DeadlineExceeded", DEADLINE_MESSAGE),
                    );
                }) else {
                    return;
                };
                self.event(
                    &job,
                    EventType::Warning,
                    "DeadlineExceeded",
                    DEADLINE_MESSAGE,
                );
                let mut active = 0;
                for (resource, pod_ns, pod_name) in self.shared.store.dependents(&uid) {
                    if resource != Resource::Pods {
                        continue;
                    }
                    let Some(pod) = self.shared.store.get(resource, &pod_ns, &pod_name) else {
                        continue;
                    };
                    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
                    if phase == "Succeeded" || phase == "Failed" {
                        continue;
                    }
                    active += 1;
                    if objects::delete(
                        &self.shared.store,
                        resource,
                        &pod_ns,
                        &pod_name,
                        Some(Propagation::Background),
                        None,
                        &Preconditions::default(),
                    )
                    .is_ok()
                    {
                        self.event(
                            &job,
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {pod_name}"),
                        );
                    }
                }
                if active == 0 {
                    self.fail(&job, "DeadlineExceeded", DEADLINE_MESSAGE, false);
                }
            }
            Timer::Finish {
                ns,
                name,
                uid,
                failed,
            } => {
                let Some(job) = self.job(&ns, &name, &uid).filter(|j| !finished(j)) else {
                    return;
                };
                match failed {
                    Some((reason, message)) => self.write_failed(&job, &reason, &message),
                    None => self.write_complete(&job),
                }
            }
            Timer::Ttl { ns, name, uid } => {
                if self.job(&ns, &name, &uid).is_some() {
                    // Already gone or being deleted by someone else: nothing to do.
                    let _ = objects::delete(
                        &self.shared.store,
                        Resource::Jobs,
                        &ns,
                        &name,
                        Some(Propagation::Background),
                        None,
                        &Preconditions::default(),
                    );
                }
            }
        }
    }
}
