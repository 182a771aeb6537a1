//! What the API server does to an object between the request and the store: decoding checks,
//! validation, generateName, uid/creationTimestamp, the defaults v1.36 fills in (fixture 02),
//! JSON merge patch, and deletion with its propagation policy and foreground finalizer.

use std::sync::Arc;

use base64::Engine as _;
use rand::Rng as _;
use serde_json::{Map, Value, json};

use crate::resource::Resource;
use crate::status::{ApiError, Cause};
use crate::store::Store;
use crate::validate;

/// `2026-11-27T14:04:17Z`: the whole-second timestamps metadata and statuses use.
pub(crate) fn now_seconds() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `2026-11-27T14:04:17.128849Z`: the microsecond timestamps of `eventTime`.
pub(crate) fn now_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A random RFC 4122 v4 uid.
pub(crate) fn new_uid() -> String {
    let n: u128 = rand::rng().random();
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The 5-character suffix upstream appends to a generateName (no vowels, no confusables).
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        map.entry(key).or_insert(value);
    }
}

fn default_image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// Pod spec defaults (`spec` of a Pod or `spec.template.spec` of a Job).
fn default_pod_spec(spec: &mut Value, full_pod: bool) {
    if !spec.is_object() {
        *spec = json!({});
    }
    for container in spec["containers"].as_array_mut().into_iter().flatten() {
        let image = container["image"].as_str().unwrap_or_default().to_owned();
        set_default(container, "resources", json!({}));
        set_default(
            container,
            "terminationMessagePath",
            json!("/dev/termination-log"),
        );
        set_default(container, "terminationMessagePolicy", json!("File"));
        set_default(
            container,
            "imagePullPolicy",
            json!(default_image_pull_policy(&image)),
        );
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    if full_pod {
        set_default(spec, "serviceAccountName", json!("default"));
        let sa = spec["serviceAccountName"].clone();
        set_default(spec, "serviceAccount", sa);
        set_default(spec, "priority", json!(0));
        set_default(spec, "enableServiceLinks", json!(true));
        set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        set_default(
            spec,
            "tolerations",
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ]),
        );
    }
}

/// `BestEffort` without requests/limits, `Guaranteed` when every container's requests equal its
/// cpu and memory limits, `Burstable` otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let empty = |v: &Value| v.as_object().is_none_or(Map::is_empty);
    if containers
        .iter()
        .all(|c| empty(&c["resources"]["requests"]) && empty(&c["resources"]["limits"]))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let r = &c["resources"];
        ["cpu", "memory"].iter().all(|k| {
            let limit = &r["limits"][*k];
            !limit.is_null() && (r["requests"][*k].is_null() || r["requests"][*k] == *limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn apply_defaults(resource: Resource, obj: &mut Value) -> Result<(), ApiError> {
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match resource {
        Resource::Jobs => {
            let spec = &mut obj["spec"];
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completions", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(
                spec,
                "selector",
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
            set_default(spec, "manualSelector", json!(false));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            let template = &mut spec["template"];
            if !template["metadata"].is_object() {
                template["metadata"] = json!({});
            }
            let labels = &mut template["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["batch.kubernetes.io/controller-uid"] = json!(uid);
            labels["batch.kubernetes.io/job-name"] = json!(name);
            labels["controller-uid"] = json!(uid);
            labels["job-name"] = json!(name);
            default_pod_spec(&mut template["spec"], false);
            let restart = template["spec"]["restartPolicy"]
                .as_str()
                .unwrap_or_default();
            if restart != "Never" && restart != "OnFailure" {
                return Err(ApiError::invalid(
                    resource,
                    &name,
                    vec![Cause {
                        reason: "FieldValueNotSupported",
                        message: format!(
                            "Unsupported value: \"{restart}\": supported values: \"OnFailure\", \"Never\""
                        ),
                        field: "spec.template.spec.restartPolicy".into(),
                    }],
                ));
            }
            obj["status"] = json!({});
        }
        Resource::Pods => {
            default_pod_spec(&mut obj["spec"], true);
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        Resource::Secrets => {
            set_default(obj, "type", json!("Opaque"));
            if let Some(Value::Object(string_data)) =
                obj.as_object_mut().and_then(|m| m.remove("stringData"))
            {
                if !obj["data"].is_object() {
                    obj["data"] = json!({});
                }
                for (k, v) in string_data {
                    let text = v.as_str().unwrap_or_default();
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
        }
        Resource::PersistentVolumeClaims => {
            let modes = obj["spec"]["accessModes"].clone();
            let capacity = obj["spec"]["resources"]["requests"].clone();
            set_default(&mut obj["spec"], "volumeMode", json!("Filesystem"));
            obj["status"] = json!({"phase": "Bound", "accessModes": modes, "capacity": capacity});
        }
        Resource::Namespaces => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        Resource::ConfigMaps | Resource::Events | Resource::Leases => {}
    }
    Ok(())
}

/// Creates an object like `POST` does: checks, generateName, uid, defaults, store.
pub(crate) fn create(
    store: &Store,
    resource: Resource,
    ns: Option<&str>,
    mut obj: Value,
) -> Result<Arc<Value>, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; a {} object is required",
            resource.kind()
        )));
    }
    if let Some(kind) = obj["kind"].as_str()
        && kind != resource.kind()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            obj["apiVersion"].as_str().unwrap_or_default(),
            resource.api_version()
        )));
    }
    validate::decode(resource, &obj)?;
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if resource.namespaced() {
        let ns = ns.unwrap_or("default");
        match obj["metadata"]["namespace"].as_str() {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
        if store.get(Resource::Namespaces, "", ns).is_none() {
            return Err(ApiError::not_found(Resource::Namespaces, ns));
        }
    } else if let Some(map) = obj["metadata"].as_object_mut() {
        map.remove("namespace");
    }
    let generate = obj["metadata"]["generateName"].as_str().map(str::to_owned);
    let explicit = obj["metadata"]["name"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    if !explicit && let Some(prefix) = &generate {
        obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    let causes = validate::object(resource, &obj);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !causes.is_empty() {
        return Err(ApiError::invalid(resource, &name, causes));
    }
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(new_uid());
    meta["creationTimestamp"] = json!(now_seconds());
    if let Some(map) = meta.as_object_mut() {
        map.remove("resourceVersion");
        map.remove("deletionTimestamp");
    }
    if resource.has_generation() {
        meta["generation"] = json!(1);
    }
    if !resource.namespaced() {
        obj.as_object_mut().map(|m| m.remove("status"));
    }
    apply_defaults(resource, &mut obj)?;
    obj["kind"] = json!(resource.kind());
    obj["apiVersion"] = json!(resource.api_version());
    match store.create(resource, obj.clone()) {
        // A generated name collided: upstream retries with a new suffix.
        Err(e) if e.code == 409 && !explicit && generate.is_some() => {
            obj["metadata"]["name"] = json!(format!(
                "{}{}",
                generate.unwrap_or_default(),
                random_suffix()
            ));
            store.create(resource, obj)
        }
        other => other,
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// What an update (patch or replace) re-derives: Secret `stringData` folding, label validity.
pub(crate) fn after_update(
    resource: Resource,
    name: &str,
    obj: &mut Value,
) -> Result<(), ApiError> {
    if resource == Resource::Secrets {
        apply_defaults(resource, obj)?;
    }
    let causes = validate::labels("metadata.labels", &obj["metadata"]["labels"]);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, name, causes))
    }
}

/// Applies a merge patch and re-validates labels, like `PATCH` with
/// `application/merge-patch+json`.
pub(crate) fn patch(
    store: &Store,
    resource: Resource,
    ns: &str,
    name: &str,
    patch: &Value,
) -> Result<Arc<Value>, ApiError> {
    store.update(resource, ns, name, |obj| {
        merge_patch(obj, patch);
        after_update(resource, name, obj)
    })
}

/// How dependents are treated when their owner is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// Delete the owner now; the garbage collector deletes dependents shortly after.
    Background,
    /// Mark the owner (`foregroundDeletion` finalizer), delete dependents, then the owner.
    Foreground,
    /// Delete the owner and leave dependents (their ownerReferences are removed).
    Orphan,
}

impl Propagation {
    /// Parses `propagationPolicy`.
    pub(crate) fn parse(s: &str) -> Result<Propagation, ApiError> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// The result of a delete.
#[derive(Debug)]
pub(crate) enum Deleted {
    /// Removed from the store (answered with a `Status` Success, or the object for pods).
    Gone(Arc<Value>),
    /// Marked with a deletionTimestamp; something still has to finish (answered with it).
    Marked(Arc<Value>),
}

/// `DeleteOptions.preconditions`: delete only this version (or incarnation) of the object.
#[derive(Debug, Default)]
pub(crate) struct Preconditions {
    pub(crate) resource_version: Option<String>,
    pub(crate) uid: Option<String>,
}

impl Preconditions {
    /// From a `DeleteOptions` body.
    pub(crate) fn parse(options: &Value) -> Self {
        let field = |name: &str| options["preconditions"][name].as_str().map(str::to_owned);
        Preconditions {
            resource_version: field("resourceVersion"),
            uid: field("uid"),
        }
    }

    /// 409 Conflict, worded as the API server does (fixture 42), when `obj` is not what the
    /// delete was for.
    fn check(&self, resource: Resource, name: &str, obj: &Value) -> Result<(), ApiError> {
        let meta = &obj["metadata"];
        for (what, wanted, field, why) in [
            ("UID", &self.uid, "uid", "deleted and then recreated"),
            (
                "ResourceVersion",
                &self.resource_version,
                "resourceVersion",
                "modified",
            ),
        ] {
            let stored = meta[field].as_str().unwrap_or_default();
            if let Some(wanted) = wanted
                && wanted != stored
            {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the {what} in the precondition ({wanted}) does not match the {what} in record ({stored}). The object might have been {why}",
                        resource.qualified_kind()
                    ),
                    details: Some(
                        json!({"name": name, "group": resource.group(), "kind": resource.kind()}),
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Deletes like `DELETE` does, with its propagation policy, grace period and preconditions (a
/// removal checks them under the store's lock). Pods on a node with a live container are only
/// marked: the kubelet stops the container with the grace period, then removes them.
pub(crate) fn delete(
    store: &Store,
    resource: Resource,
    ns: &str,
    name: &str,
    propagation: Option<Propagation>,
    grace: Option<i64>,
    preconditions: &Preconditions,
) -> Result<Deleted, ApiError> {
    let obj = store
        .get(resource, ns, name)
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    preconditions.check(resource, name, &obj)?;
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Ok(Deleted::Marked(obj));
    }
    // batch/v1 Jobs orphan their pods unless told otherwise, for compatibility (upstream default).
    let propagation = propagation.unwrap_or(if resource == Resource::Jobs {
        Propagation::Orphan
    } else {
        Propagation::Background
    });
    if resource == Resource::Pods {
        let phase = obj["status"]["phase"].as_str().unwrap_or_default();
        let on_node = obj["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        if on_node && grace != Some(0) && phase != "Succeeded" && phase != "Failed" {
            let grace = grace
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            let marked = store.update(resource, ns, name, |p| {
                p["metadata"]["deletionTimestamp"] = json!(now_seconds());
                p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                Ok(())
            })?;
            return Ok(Deleted::Marked(marked));
        }
    }
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match propagation {
        Propagation::Foreground => {
            let marked = store.update(resource, ns, name, |o| {
                o["metadata"]["deletionTimestamp"] = json!(now_seconds());
                o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let finalizers = &mut o["metadata"]["finalizers"];
                if !finalizers.is_array() {
                    *finalizers = json!([]);
                }
                if let Some(list) = finalizers.as_array_mut()
                    && !list.iter().any(|f| f == "foregroundDeletion")
                {
                    list.push(json!("foregroundDeletion"));
                }
                // The mark is a spec-level change upstream (generation bumps, fixture 27).
                if resource.has_generation() {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    o["metadata"]["generation"] = json!(g + 1);
                }
                Ok(())
            })?;
            Ok(Deleted::Marked(marked))
        }
        Propagation::Orphan => {
            for (dep_resource, dep_ns, dep_name) in store.dependents(&uid) {
                // A dependent that vanished meanwhile needs no orphaning.
                let _ = store.update(dep_resource, &dep_ns, &dep_name, |d| {
                    if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                    }
                    if d["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(Vec::is_empty)
                        && let Some(meta) = d["metadata"].as_object_mut()
                    {
                        meta.remove("ownerReferences");
                    }
                    Ok(())
                });
            }
            store
                .remove(resource, ns, name)
                .map(Deleted::Gone)
                .ok_or_else(|| ApiError::not_found(resource, name))
        }
        Propagation::Background => store
            .remove_if(resource, ns, name, |current| {
                preconditions.check(resource, name, current)
            })?
            .map(Deleted::Gone)
            .ok_or_else(|| ApiError::not_found(resource, name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_ns() -> Store {
        let store = Store::new(100);
        create(
            &store,
            Resource::Namespaces,
            None,
            json!({"metadata": {"name": "capture"}}),
        )
        .unwrap();
        store
    }

    #[test]
    fn job_defaults_match_what_the_real_server_fills_in() {
        let store = store_with_ns();
        let job = json!({"metadata": {"name": "j"}, "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36", "command": ["true"]}]}}}});
        let job = create(&store, Resource::Jobs, Some("capture"), job).unwrap();
        let uid = job["metadata"]["uid"].as_str().unwrap();
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            json!(uid)
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            json!("j")
        );
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            json!("IfNotPresent")
        );
        assert_eq!(
            job["spec"]["backoffLimit"],
            json!(0),
            "a client's value is kept"
        );
        assert_eq!(
            job["spec"]["podReplacementPolicy"],
            json!("TerminatingOrFailed")
        );
        assert_eq!(job["metadata"]["generation"], json!(1));
    }

    #[test]
    fn string_data_is_folded_into_base64_data() {
        let store = store_with_ns();
        let secret = json!({"metadata": {"name": "s"}, "stringData": {"prompt": "hello"}});
        let secret = create(&store, Resource::Secrets, Some("capture"), secret).unwrap();
        assert_eq!(secret["data"]["prompt"], json!("aGVsbG8="));
        assert!(secret.get("stringData").is_none());
        assert_eq!(secret["type"], json!("Opaque"));
    }

    #[test]
    fn generate_name_appends_five_characters() {
        let store = store_with_ns();
        let s = create(
            &store,
            Resource::Secrets,
            Some("capture"),
            json!({"metadata": {"generateName": "run-"}}),
        )
        .unwrap();
        let name = s["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("run-") && name.len() == 9, "{name}");
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut target, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(target, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn uids_look_like_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
    }
}
