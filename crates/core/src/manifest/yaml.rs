//! The rendered objects as YAML documents, for `opencode-k8s render`, dry runs from JS and
//! snapshot tests — one printer, so what an operator reviews is what the tests pin.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::Rendered;

/// How Secret values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretValues {
    /// `<redacted: N bytes>`: safe to paste anywhere.
    Redacted,
    /// Base64 as the API stores it: the output can be applied as is.
    Base64,
    /// UTF-8 text (lossy): for reading and review only.
    Decoded,
}

/// Failed to write YAML (a bug: the objects are fixed shapes).
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The object did not convert to a JSON value.
    #[error("failed to convert the {kind} to YAML: {source}")]
    Value {
        /// `Job` or `Secret`.
        kind: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The YAML serializer failed.
    #[error("failed to write the {kind} as YAML: {source}")]
    Yaml {
        /// `Job` or `Secret`.
        kind: &'static str,
        /// The cause.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// A comment listing what the Job inherits from the Paperclip pod, then the Job, the Secret
/// and (with `networkPolicy`) the NetworkPolicy, each as a `---`-separated YAML document with
/// `apiVersion` and `kind`.
pub fn to_yaml(rendered: &Rendered, values: SecretValues) -> Result<String, YamlError> {
    let job = object_value("Job", &rendered.job)?;
    let mut secret = object_value("Secret", &rendered.secret)?;
    if let Some(Value::Object(data)) = secret.get_mut("data") {
        let raw = rendered.secret.data.as_ref();
        for (key, value) in data.iter_mut() {
            let bytes = raw
                .and_then(|d| d.get(key))
                .map(|b| b.0.as_slice())
                .unwrap_or_default();
            *value = Value::String(match values {
                SecretValues::Redacted => format!("<redacted: {} bytes>", bytes.len()),
                SecretValues::Base64 => STANDARD.encode(bytes),
                SecretValues::Decoded => String::from_utf8_lossy(bytes).into_owned(),
            });
        }
    }
    let mut out = String::new();
    if !rendered.inherited.is_empty() {
        out.push_str("# inherited from the Paperclip pod:\n");
        for line in &rendered.inherited {
            out.push_str(&format!("#   {line}\n"));
        }
    }
    let mut docs = vec![("Job", job), ("Secret", secret)];
    if let Some(policy) = &rendered.network_policy {
        docs.push(("NetworkPolicy", object_value("NetworkPolicy", policy)?));
    }
    for (kind, doc) in docs {
        let text =
            serde_saphyr::to_string(&doc).map_err(|source| YamlError::Yaml { kind, source })?;
        out.push_str("---\n");
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// The object as JSON with `apiVersion` and `kind` first (k8s-openapi adds them on serialize).
fn object_value(kind: &'static str, object: &impl serde::Serialize) -> Result<Value, YamlError> {
    serde_json::to_value(object).map_err(|source| YamlError::Value { kind, source })
}
