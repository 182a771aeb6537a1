//! The HTTP face of the simulated API server: routes Kubernetes paths to the store, applying
//! latency and failure faults, request accounting, bearer-token authentication and RBAC-like
//! authorization first, and answering with upstream status codes and `Status` bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::Response;
use http::{Method, StatusCode, header};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::auth::{Attributes, User};
use crate::cluster::Shared;
use crate::faults::Verb;
use crate::objects::{self, Deleted, Propagation};
use crate::resource::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, delete_success};
use crate::{control, logs_api, watch};

/// Bodies larger than this are refused (real servers cap requests at ~3 MiB; be generous).
const MAX_BODY: usize = 64 << 20;

/// The router serving Kubernetes paths and the `/_testkit` control endpoint.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest("/_testkit", control::routes())
        .fallback(kube_api)
        .with_state(shared)
}

/// A JSON response with `code`.
pub(crate) fn json_response(code: u16, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default()
}

/// The `Status` response for an error.
pub(crate) fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.to_status())
}

/// What a request path addresses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `/version`.
    Version,
    /// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
    AccessReview,
    /// A resource collection or object, maybe a subresource of it.
    Object {
        resource: Resource,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
}

/// Parses a Kubernetes API path.
pub(crate) fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["version"] => return Some(Target::Version),
        ["api", "v1", rest @ ..] => ("", rest),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] => {
            return Some(Target::AccessReview);
        }
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let object = |plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        let resource = Resource::from_path(group, plural)?;
        if resource.namespaced() != ns.is_some() && !(resource.namespaced() && name.is_none()) {
            return None;
        }
        Some(Target::Object {
            resource,
            namespace: ns.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: sub.map(str::to_owned),
        })
    };
    match rest {
        [plural] => object(plural, None, None, None),
        ["namespaces", name] if group.is_empty() => object("namespaces", None, Some(name), None),
        ["namespaces", ns, plural] => object(plural, Some(ns), None, None),
        ["namespaces", ns, plural, name] => object(plural, Some(ns), Some(name), None),
        ["namespaces", ns, plural, name, sub] => object(plural, Some(ns), Some(name), Some(sub)),
        _ => None,
    }
}

/// Serializes a stored object without `kind`/`apiVersion`, as list items are (fixture 09).
struct Item<'a>(&'a Value);

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(map) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut out = s.serialize_map(None)?;
        for (k, v) in map
            .iter()
            .filter(|(k, _)| *k != "kind" && *k != "apiVersion")
        {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Filter {
    fn from_query(
        namespace: Option<String>,
        q: &HashMap<String, String>,
    ) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    /// Whether an object passes the namespace and both selectors.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

/// One parsed, authenticated request.
struct Call {
    shared: Arc<Shared>,
    query: HashMap<String, String>,
    content_type: String,
    body: bytes::Bytes,
}

fn truthy(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

async fn kube_api(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let latency = shared.faults.current_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match handle(shared, req).await {
        Ok(response) => response,
        Err(err) => error_response(&err),
    }
}

async fn handle(shared: Arc<Shared>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let target = parse_path(parts.uri.path()).ok_or_else(ApiError::no_route)?;
    let auth_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = shared.auth.authenticate(auth_header);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("failed to read the request body: {e}")))?;
    let (resource, namespace, name, subresource) = match target {
        Target::Version => {
            return Ok(json_response(
                200,
                &json!({"major": "1", "minor": "36", "gitVersion": "v1.36.2-kube-sim", "platform": "linux/amd64"}),
            ));
        }
        Target::AccessReview => {
            shared
                .accounting
                .count(Verb::Create, "selfsubjectaccessreviews");
            let user = user.ok_or_else(ApiError::unauthorized)?;
            if parts.method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            return access_review(&user, &body);
        }
        Target::Object {
            resource,
            namespace,
            name,
            subresource,
        } => (resource, namespace, name, subresource),
    };
    let verb = match (&parts.method, &name, subresource.as_deref()) {
        (&Method::GET, None, None) if truthy(&query, "watch") => Verb::Watch,
        (&Method::GET, None, None) => Verb::List,
        (&Method::GET, Some(_), None) => Verb::Get,
        (&Method::GET, Some(_), Some("log")) if resource == Resource::Pods => {
            if truthy(&query, "follow") {
                Verb::Follow
            } else {
                Verb::Get
            }
        }
        (&Method::POST, None, None) => Verb::Create,
        (&Method::PATCH, Some(_), None) => Verb::Patch,
        (&Method::PUT, Some(_), None) => Verb::Update,
        (&Method::DELETE, Some(_), None) => Verb::Delete,
        (_, _, Some(_)) => return Err(ApiError::no_route()),
        _ => return Err(ApiError::method_not_allowed()),
    };
    let accounted = match &subresource {
        Some(sub) => format!("{}/{sub}", resource.plural()),
        None => resource.plural().to_owned(),
    };
    shared.accounting.count(verb, &accounted);
    let user = user.ok_or_else(ApiError::unauthorized)?;
    let rbac_ns = if resource == Resource::Namespaces {
        name.as_deref()
    } else {
        namespace.as_deref()
    };
    let attrs = Attributes {
        verb: verb.rbac(),
        group: resource.group(),
        resource: &accounted,
        namespace: rbac_ns,
    };
    // An API server whose authorizer is not ready denies everything, worded like RBAC.
    if user.allows(&attrs).is_none() || shared.faults.forbidding() {
        return Err(ApiError::forbidden(
            &user.name,
            verb.rbac(),
            resource,
            subresource.as_deref(),
            name.as_deref(),
            rbac_ns,
        ));
    }
    if let Some(code) = shared.faults.take_failure(verb, &accounted) {
        return Err(ApiError::injected(code));
    }
    let call = Call {
        shared,
        query,
        content_type,
        body,
    };
    let ns = namespace.as_deref();
    match (verb, name.as_deref()) {
        (Verb::List, _) => list(&call, resource, namespace),
        (Verb::Watch, _) => {
            let filter = Filter::from_query(namespace, &call.query)?;
            watch::serve(&call.shared, resource, filter, &call.query)
        }
        (Verb::Create, _) => {
            let obj = parse_body(resource, &call.body)?;
            let created = objects::create(&call.shared.store, resource, ns, obj)?;
            Ok(json_response(201, &*created))
        }
        (Verb::Get | Verb::Follow, Some(name)) if subresource.is_some() => {
            logs_api::serve(&call.shared, ns.unwrap_or_default(), name, &call.query).await
        }
        (Verb::Get, Some(name)) => {
            let obj = call
                .shared
                .store
                .get(resource, ns.unwrap_or_default(), name)
                .ok_or_else(|| ApiError::not_found(resource, name))?;
            Ok(json_response(200, &*obj))
        }
        (Verb::Patch, Some(name)) => patch(&call, resource, ns.unwrap_or_default(), name),
        (Verb::Update, Some(name)) => update(&call, resource, ns.unwrap_or_default(), name),
        (Verb::Delete, Some(name)) => delete(&call, resource, ns.unwrap_or_default(), name),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_body(resource: Resource, body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: {e}",
            resource.kind(),
            resource.kind()
        ))
    })
}

fn list(call: &Call, resource: Resource, namespace: Option<String>) -> Result<Response, ApiError> {
    let filter = Filter::from_query(namespace, &call.query)?;
    let store = &call.shared.store;
    let (items, rv) = match (filter.fields.pinned_name(), filter.namespace.as_deref()) {
        (Some(name), Some(ns)) => {
            let one = store.get(resource, ns, name).filter(|o| filter.matches(o));
            (one.into_iter().collect(), store.current_rv())
        }
        _ => store.list(resource, filter.namespace.as_deref(), |o| filter.matches(o)),
    };
    Ok(json_response(
        200,
        &ListBody {
            kind: format!("{}List", resource.kind()),
            api_version: resource.api_version(),
            metadata: json!({"resourceVersion": rv.to_string()}),
            items: items.iter().map(|o| Item(o)).collect(),
        },
    ))
}

/// A list answer, serialized straight from the stored objects (no copies).
#[derive(serde::Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Value,
    items: Vec<Item<'a>>,
}

fn patch(call: &Call, resource: Resource, ns: &str, name: &str) -> Result<Response, ApiError> {
    match call.content_type.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {}
        _ => return Err(ApiError::unsupported_media_type()),
    }
    let patch: Value = serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let patched = objects::patch(&call.shared.store, resource, ns, name, &patch)?;
    Ok(json_response(200, &*patched))
}

fn update(call: &Call, resource: Resource, ns: &str, name: &str) -> Result<Response, ApiError> {
    let new = parse_body(resource, &call.body)?;
    let wanted_rv = new["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned);
    let updated = call.shared.store.update(resource, ns, name, |obj| {
        if let Some(rv) = &wanted_rv
            && obj["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())
        {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    resource.qualified()
                ),
                details: Some(json!({"name": name, "group": resource.group(), "kind": resource.plural()})),
            });
        }
        let keep = obj["metadata"].clone();
        *obj = new;
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        for field in ["uid", "creationTimestamp", "generation", "deletionTimestamp"] {
            match keep.get(field) {
                Some(value) => obj["metadata"][field] = value.clone(),
                None => {
                    if let Some(meta) = obj["metadata"].as_object_mut() {
                        meta.remove(field);
                    }
                }
            }
        }
        obj["kind"] = json!(resource.kind());
        obj["apiVersion"] = json!(resource.api_version());
        objects::after_update(resource, name, obj)
    })?;
    Ok(json_response(200, &*updated))
}

fn delete(call: &Call, resource: Resource, ns: &str, name: &str) -> Result<Response, ApiError> {
    let options: Value = if call.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&call.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = call
        .query
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| options["propagationPolicy"].as_str())
        .map(Propagation::parse)
        .transpose()?;
    let grace = call
        .query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| options["gracePeriodSeconds"].as_i64());
    let preconditions = objects::Preconditions::parse(&options);
    match objects::delete(
        &call.shared.store,
        resource,
        ns,
        name,
        policy,
        grace,
        &preconditions,
    )? {
        Deleted::Marked(obj) => Ok(json_response(200, &*obj)),
        // Pods answer with the deleted object, other resources with a Status (fixture 29).
        Deleted::Gone(obj) if resource == Resource::Pods => Ok(json_response(200, &*obj)),
        Deleted::Gone(obj) => Ok(json_response(
            200,
            &delete_success(
                resource,
                name,
                obj["metadata"]["uid"].as_str().unwrap_or_default(),
            ),
        )),
    }
}

fn access_review(user: &User, body: &[u8]) -> Result<Response, ApiError> {
    let review: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "SelfSubjectAccessReview in version \"v1\" cannot be handled as a SelfSubjectAccessReview: {e}"
        ))
    })?;
    let spec = review["spec"].clone();
    let ra = &spec["resourceAttributes"];
    let text = |k: &str| ra[k].as_str().unwrap_or_default().to_owned();
    let resource = match text("subresource").as_str() {
        "" => text("resource"),
        sub => format!("{}/{sub}", text("resource")),
    };
    let namespace = text("namespace");
    let attrs = Attributes {
        verb: &text("verb"),
        group: &text("group"),
        resource: &resource,
        namespace: (!namespace.is_empty()).then_some(namespace.as_str()),
    };
    let status = match user.allows(&attrs) {
        Some(rule) => {
            let binding = match &rule.namespace {
                Some(ns) => format!(
                    "RoleBinding \"kube-sim-{}/{ns}\" of Role \"kube-sim\"",
                    user.name
                ),
                None => format!(
                    "ClusterRoleBinding \"kube-sim-{}\" of ClusterRole \"kube-sim\"",
                    user.name
                ),
            };
            json!({"allowed": true, "reason": format!("RBAC: allowed by {binding} to User \"{}\"", user.name)})
        }
        None => json!({"allowed": false}),
    };
    Ok(json_response(
        201,
        &json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {},
            "spec": spec,
            "status": status,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_like_the_kubernetes_api() {
        assert_eq!(
            parse_path("/apis/batch/v1/namespaces/capture/jobs/j"),
            Some(Target::Object {
                resource: Resource::Jobs,
                namespace: Some("capture".into()),
                name: Some("j".into()),
                subresource: None,
            })
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/does-not-exist"),
            Some(Target::Object {
                resource: Resource::Namespaces,
                namespace: None,
                name: Some("does-not-exist".into()),
                subresource: None,
            })
        );
        assert!(matches!(
            parse_path("/api/v1/pods"),
            Some(Target::Object {
                resource: Resource::Pods,
                namespace: None,
                name: None,
                ..
            })
        ));
        assert!(matches!(
            parse_path("/api/v1/namespaces/n/pods/p/log"),
            Some(Target::Object {
                subresource: Some(_),
                ..
            })
        ));
        assert_eq!(
            parse_path("/api/v1/pods/p"),
            None,
            "a namespaced object needs its namespace"
        );
        assert_eq!(parse_path("/apis/apps/v1/namespaces/n/deployments"), None);
    }
}
