//! Upstream-shaped `Status` failures: every error the simulated API server answers with is built
//! here so codes, reasons and message wording match a real kube-apiserver (fixtures 01–30).

use serde_json::{Value, json};

use crate::resource::Resource;

/// One field problem inside a 422 `Invalid` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Upstream cause reason (`FieldValueInvalid`, `FieldValueRequired`, ...).
    pub reason: &'static str,
    /// The message without the field prefix (`Invalid value: "x": ...`).
    pub message: String,
    /// The field path (`metadata.name`).
    pub field: String,
}

impl Cause {
    /// A `FieldValueInvalid` cause for `value` at `field`.
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", quote(value)),
            field: field.into(),
        }
    }

    /// A `FieldValueRequired` cause at `field`.
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            message: format!("Required value: {detail}"),
            field: field.into(),
        }
    }
}

/// Go's `%q` for the strings we quote (escapes `"` and `\`).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A failed request, rendered as a `Status` body with its HTTP code.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("the API server answered {code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when upstream sends one.
    pub details: Option<Value>,
}

impl ApiError {
    /// 404 `<resource> "<name>" not found`.
    pub fn not_found(resource: Resource, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} {} not found", resource.qualified(), quote(name)),
            details: Some(details(resource, Some(name))),
        }
    }

    /// 409 `<resource> "<name>" already exists`.
    pub fn already_exists(resource: Resource, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} {} already exists", resource.qualified(), quote(name)),
            details: Some(details(resource, Some(name))),
        }
    }

    /// 422 `<Kind.group> "<name>" is invalid: ...` with one cause per problem.
    pub fn invalid(resource: Resource, name: &str, causes: Vec<Cause>) -> ApiError {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut details = json!({ "name": name });
        if !resource.group().is_empty() {
            details["group"] = json!(resource.group());
        }
        details["kind"] = json!(resource.kind());
        details["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "{} {} is invalid: {summary}",
                resource.qualified_kind(),
                quote(name)
            ),
            details: Some(details),
        }
    }

    /// 400 `BadRequest` with upstream's message and no details.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 400 for a body that cannot be decoded as the resource's kind.
    pub fn undecodable(resource: Resource, detail: &str) -> ApiError {
        ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: {detail}",
            resource.kind(),
            resource.kind()
        ))
    }

    /// 401 for a missing or unknown bearer token.
    pub fn unauthorized() -> ApiError {
        ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".to_owned(),
            details: None,
        }
    }

    /// 403 worded like RBAC's denial (fixture 15).
    pub fn forbidden(
        user: &str,
        verb: &str,
        resource: Resource,
        subresource: Option<&str>,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> ApiError {
        let rbac_resource = match subresource {
            Some(sub) => format!("{}/{sub}", resource.plural()),
            None => resource.plural().to_owned(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace {}", quote(ns)),
            None => "at the cluster scope".to_owned(),
        };
        let reason = format!(
            "User {} cannot {verb} resource {} in API group {} {scope}",
            quote(user),
            quote(&rbac_resource),
            quote(resource.group()),
        );
        let qualified = match (subresource, resource.group()) {
            (Some(sub), "") => format!("{}/{sub}", resource.plural()),
            (Some(sub), group) => format!("{}.{group}/{sub}", resource.plural()),
            (None, _) => resource.qualified(),
        };
        let message = match name {
            Some(name) => format!("{qualified} {} is forbidden: {reason}", quote(name)),
            None => format!("{qualified} is forbidden: {reason}"),
        };
        ApiError {
            code: 403,
            reason: "Forbidden",
            message,
            details: Some(details(resource, name)),
        }
    }

    /// 415 for a patch body in a content type the server does not accept (fixture 19).
    pub fn unsupported_media_type() -> ApiError {
        ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: "415: Unsupported Media Type".to_owned(),
            details: Some(json!({})),
        }
    }

    /// 405 for a verb the resource does not serve.
    pub fn method_not_allowed() -> ApiError {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".to_owned(),
            details: Some(json!({})),
        }
    }

    /// 404 for a path no resource is served under.
    pub fn no_route() -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".to_owned(),
            details: Some(json!({})),
        }
    }

    /// 410 for a watch or list from a resourceVersion older than the retained history.
    pub fn gone(requested: u64, oldest: u64) -> ApiError {
        ApiError {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {requested} ({oldest})"),
            details: None,
        }
    }

    /// An injected failure (fault injection): 429 `TooManyRequests`, 5xx `InternalError` & co.
    pub fn injected(code: u16) -> ApiError {
        let (reason, message) = match code {
            // What a writer that won a race gets (a stale resourceVersion or precondition).
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            ),
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later.",
            ),
            500 => (
                "InternalError",
                "Internal error occurred: injected by kube-sim",
            ),
            503 => (
                "ServiceUnavailable",
                "The server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "The server was unable to return a response in the time allotted",
            ),
            _ => ("InternalError", "injected failure"),
        };
        ApiError {
            code,
            reason,
            message: message.to_owned(),
            details: None,
        }
    }

    /// The `Status` object upstream sends.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status["code"] = json!(self.code);
        status
    }
}

/// `details` of NotFound/AlreadyExists/Forbidden: name, group (when not core), kind = plural.
fn details(resource: Resource, name: Option<&str>) -> Value {
    let mut details = json!({});
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    details["kind"] = json!(resource.plural());
    details
}

/// The `Status` `Success` a delete answers with when the object is gone at once (fixture 29).
pub(crate) fn delete_success(resource: Resource, name: &str, uid: &str) -> Value {
    let mut details = details(resource, Some(name));
    details["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_reads_like_rbac() {
        let err = ApiError::forbidden(
            "limited-user",
            "create",
            Resource::Secrets,
            None,
            None,
            Some("jobs-test"),
        );
        assert_eq!(
            err.message,
            "secrets is forbidden: User \"limited-user\" cannot create resource \"secrets\" in API group \"\" in the namespace \"jobs-test\""
        );
        assert_eq!(err.to_status()["details"], json!({"kind": "secrets"}));
    }

    #[test]
    fn invalid_with_many_causes_lists_them_in_brackets() {
        let err = ApiError::invalid(
            Resource::Jobs,
            "j",
            vec![
                Cause::invalid("metadata.labels", "x", "a"),
                Cause::invalid("metadata.labels", "x", "b"),
            ],
        );
        assert_eq!(
            err.message,
            "Job.batch \"j\" is invalid: [metadata.labels: Invalid value: \"x\": a, metadata.labels: Invalid value: \"x\": b]"
        );
    }
}
