//! Kubernetes `Event` objects written by the simulated controllers, scheduler and kubelet, in
//! the shapes a v1.36 cluster writes them (fixtures 11, 25, 36).

use serde_json::{Value, json};

use crate::objects::{now_micros, now_seconds, random_suffix};
use crate::resource::Resource;
use crate::store::Store;

/// Who reports an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reporter {
    /// `job-controller` (old-style event with counts and timestamps).
    JobController,
    /// `default-scheduler` (new-style event with `eventTime` and `action`).
    Scheduler,
    /// The kubelet of the simulated node.
    Kubelet,
}

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Normal,
    Warning,
}

/// The node every pod runs on.
pub(crate) const NODE_NAME: &str = "kube-sim-node";

/// What an event says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ev<'a> {
    pub(crate) reporter: Reporter,
    pub(crate) event_type: EventType,
    pub(crate) reason: &'a str,
    pub(crate) message: &'a str,
    /// `spec.containers{name}` for container events.
    pub(crate) field_path: Option<&'a str>,
}

/// Records an event about `involved` (a stored object of `resource`).
pub(crate) fn record(store: &Store, resource: Resource, involved: &Value, ev: Ev<'_>) {
    let Ev {
        reporter,
        event_type,
        reason,
        message,
        field_path,
    } = ev;
    let meta = &involved["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let ns = meta["namespace"].as_str().unwrap_or("default");
    let mut involved_ref = json!({
        "kind": resource.kind(),
        "namespace": ns,
        "name": name,
        "uid": meta["uid"],
        "apiVersion": resource.api_version(),
        "resourceVersion": meta["resourceVersion"],
    });
    if let Some(path) = field_path {
        involved_ref["fieldPath"] = json!(path);
    }
    // Upstream names events `<object>.<hex nanos>`; a random suffix keeps names unique here.
    let event_name = format!(
        "{name}.{:x}{}",
        jiff::Timestamp::now().as_nanosecond(),
        random_suffix()
    );
    let event_type = match event_type {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    let mut event = json!({
        "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": involved_ref,
        "reason": reason,
        "message": message,
        "type": event_type,
    });
    let now = now_seconds();
    match reporter {
        Reporter::Scheduler => {
            event["source"] = json!({});
            event["firstTimestamp"] = Value::Null;
            event["lastTimestamp"] = Value::Null;
            event["eventTime"] = json!(now_micros());
            event["action"] = json!(if reason == "Scheduled" {
                "Binding"
            } else {
                "Scheduling"
            });
            event["reportingComponent"] = json!("default-scheduler");
            event["reportingInstance"] = json!("default-scheduler-kube-sim");
        }
        Reporter::JobController => {
            event["source"] = json!({"component": "job-controller"});
            event["firstTimestamp"] = json!(now);
            event["lastTimestamp"] = json!(now);
            event["count"] = json!(1);
            event["eventTime"] = Value::Null;
            event["reportingComponent"] = json!("job-controller");
            event["reportingInstance"] = json!("");
        }
        Reporter::Kubelet => {
            event["source"] = json!({"component": "kubelet", "host": NODE_NAME});
            event["firstTimestamp"] = json!(now);
            event["lastTimestamp"] = json!(now);
            event["count"] = json!(1);
            event["eventTime"] = Value::Null;
            event["reportingComponent"] = json!("kubelet");
            event["reportingInstance"] = json!(NODE_NAME);
        }
    }
    if let Err(err) = crate::objects::create(store, Resource::Events, Some(ns), event) {
        // The namespace can vanish under a dying object; the event is then moot.
        tracing::debug!(reason, error = %err.message, "event not recorded");
    }
}
