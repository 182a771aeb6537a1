//! Admission checks a real API server makes before storing an object: names (RFC 1123),
//! label syntax, resource quantities (a decode error, 400) and requests ≤ limits (422), with
//! upstream's wording (fixtures 04–07).

use serde_json::Value;

use crate::resource::Resource;
use crate::status::{ApiError, Cause};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_NAME_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const LABEL_KEY_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a lowercase RFC 1123 subdomain (object names).
pub(crate) fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks `metadata.name`: subdomain for most resources, a label for namespaces.
pub(crate) fn name(resource: Resource, name: &str) -> Vec<Cause> {
    if name.is_empty() {
        return vec![Cause::required(
            "metadata.name",
            "name or generateName is required",
        )];
    }
    if resource == Resource::Namespaces {
        if !is_label(name) {
            return vec![Cause::invalid("metadata.name", name, LABEL_NAME_MSG)];
        }
    } else if !is_subdomain(name) {
        return vec![Cause::invalid("metadata.name", name, SUBDOMAIN_MSG)];
    }
    Vec::new()
}

/// Checks every label key and value under `labels` (a JSON map) for `field`.
pub(crate) fn labels(field: &str, labels: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(map) = labels.as_object() else {
        return causes;
    };
    for (key, value) in map {
        let name_part = key.rsplit_once('/').map_or(key.as_str(), |(_, n)| n);
        let prefix_ok = key.rsplit_once('/').is_none_or(|(p, _)| is_subdomain(p));
        if name_part.len() > 63 {
            causes.push(Cause::invalid(
                field,
                key,
                "name part must be no more than 63 bytes",
            ));
        }
        if !is_qualified_part(name_part) || !prefix_ok {
            causes.push(Cause::invalid(field, key, LABEL_KEY_MSG));
        }
        let value = value.as_str().unwrap_or_default();
        if value.len() > 63 {
            causes.push(Cause::invalid(
                field,
                value,
                "must be no more than 63 bytes",
            ));
        }
        if !value.is_empty() && !is_qualified_part(value) {
            causes.push(Cause::invalid(field, value, LABEL_VALUE_MSG));
        }
    }
    causes
}

/// Parses a Kubernetes quantity (`500m`, `2Gi`, `1e3`) into a number; `None` if malformed.
pub(crate) fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && matches!(c, '+' | '-'))))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let rest = exp.strip_prefix(['e', 'E'])?;
            let power: i32 = rest.parse().ok()?;
            10f64.powi(power)
        }
    };
    Some(number * factor)
}

/// The containers of a pod spec (`spec` of a Pod, `spec.template.spec` of a Job) and the field
/// path prefix upstream reports for them.
fn pod_spec(resource: Resource, obj: &Value) -> Option<(&Value, &'static str)> {
    match resource {
        Resource::Pods => Some((&obj["spec"], "spec")),
        Resource::Jobs => Some((&obj["spec"]["template"]["spec"], "spec.template.spec")),
        _ => None,
    }
}

/// Decode-time checks: a malformed quantity is a 400, as upstream fails to decode it.
pub(crate) fn decode(resource: Resource, obj: &Value) -> Result<(), ApiError> {
    let Some((spec, _)) = pod_spec(resource, obj) else {
        return Ok(());
    };
    for container in spec["containers"].as_array().into_iter().flatten() {
        for section in ["requests", "limits"] {
            for value in container["resources"][section]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                let ok = match value {
                    Value::String(s) => quantity(s).is_some(),
                    Value::Number(_) => true,
                    _ => false,
                };
                if !ok {
                    return Err(ApiError::undecodable(resource, QUANTITY_MSG));
                }
            }
        }
    }
    Ok(())
}

fn quantity_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Validation checks (422): name, labels, requests ≤ limits.
pub(crate) fn object(resource: Resource, obj: &Value) -> Vec<Cause> {
    let mut causes = name(
        resource,
        obj["metadata"]["name"].as_str().unwrap_or_default(),
    );
    causes.extend(labels("metadata.labels", &obj["metadata"]["labels"]));
    if let Some((spec, prefix)) = pod_spec(resource, obj) {
        if resource == Resource::Jobs {
            causes.extend(labels(
                "spec.template.metadata.labels",
                &obj["spec"]["template"]["metadata"]["labels"],
            ));
        }
        let containers = spec["containers"].as_array();
        if containers.is_none_or(Vec::is_empty) {
            causes.push(Cause::required(format!("{prefix}.containers"), ""));
        }
        for (i, container) in containers.into_iter().flatten().enumerate() {
            let resources = &container["resources"];
            for (res, request) in resources["requests"].as_object().into_iter().flatten() {
                let Some(limit) = resources["limits"].get(res) else {
                    continue;
                };
                let (req_n, lim_n) = (
                    quantity(&quantity_text(request)),
                    quantity(&quantity_text(limit)),
                );
                if let (Some(r), Some(l)) = (req_n, lim_n)
                    && r > l
                {
                    causes.push(Cause::invalid(
                        format!("{prefix}.containers[{i}].resources.requests"),
                        &quantity_text(request),
                        &format!(
                            "must be less than or equal to {res} limit of {}",
                            quantity_text(limit)
                        ),
                    ));
                }
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_decode_like_upstream() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("2Gb"), None);
        assert_eq!(quantity("lots"), None);
    }

    #[test]
    fn names_must_be_subdomains() {
        assert!(name(Resource::Jobs, "agent-1.x").is_empty());
        let causes = name(Resource::Jobs, "Agent_Bad_Name");
        assert_eq!(causes[0].field, "metadata.name");
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"Agent_Bad_Name\": a lowercase RFC 1123 subdomain")
        );
        assert!(!name(Resource::Namespaces, "a.b").is_empty());
    }

    #[test]
    fn requests_above_limits_are_invalid() {
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}}]}}}});
        let causes = object(Resource::Jobs, &job);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"4\": must be less than or equal to cpu limit of 1"
        );
    }
}
