//! The typed agent configuration, parsed from Paperclip's `adapterConfig` JSON.
//!
//! The Paperclip UI sends numbers and booleans as strings, textareas as multi-line text and `""`
//! for a cleared field, so parsing is lenient in form and strict in meaning: every value that
//! cannot work in a cluster is rejected with its field path, the bad value and what is accepted,
//! and all problems are reported at once. Unknown keys are ignored because the host adds its own
//! (`paperclipRuntimeSkills`, `paperclipSkillSync`, ...).
//!
//! Precedence with the Paperclip pod the Job inherits from: `image`, `nodeSelector` and
//! `tolerations` from this config replace the pod's when set; unset, the pod's are used.

mod egress;
mod fields;
mod forms;
pub mod kubeconfig;
mod quantity;
pub mod syntax;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Toleration;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error_code::ErrorCode;

pub use fields::{FIELDS, FieldKind, FieldSpec, Group};
pub use quantity::{Quantity, QuantityError};

/// Environment variables the engine sets itself; `env` may not override them.
pub const ENGINE_OWNED_ENV: &[(&str, &str)] = &[
    (
        "PAPERCLIP_API_KEY",
        "the run's agent token is injected by the engine",
    ),
    ("PAPERCLIP_API_URL", "set `paperclipApiUrl` instead"),
    (
        "OPENCODE_DB",
        "each agent gets its own session database on the shared volume",
    ),
    (
        "HOME",
        "HOME is the agent's own state directory on the shared volume, so sessions persist",
    ),
    (
        "OPENCODE_DISABLE_PROJECT_CONFIG",
        "project config is always disabled in agent pods",
    ),
    (
        "OPENCODE_DISABLE_AUTOUPDATE",
        "autoupdate is always disabled in agent pods",
    ),
];

/// A string that may hold a secret: `Debug` and `Serialize` show only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that must put it somewhere (the per-run Secret).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted: {} bytes>", self.0.len())
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("<redacted: {} bytes>", self.0.len()))
    }
}

/// `imagePullPolicy` of the agent container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum ImagePullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node does not have the image.
    #[default]
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// CPU and memory amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceAmounts {
    /// CPU, e.g. `1000m`.
    pub cpu: Quantity,
    /// Memory, e.g. `2Gi`.
    pub memory: Quantity,
}

/// Requests and limits of the agent container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// What the scheduler reserves.
    pub requests: ResourceAmounts,
    /// The ceiling; each limit is at least its request.
    pub limits: ResourceAmounts,
}

/// A validated agent configuration. See [`FIELDS`] for every field's forms and defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// `provider/model`.
    pub model: String,
    /// `--variant`; Paperclip's Thinking effort (`effort`) when unset.
    pub variant: Option<String>,
    /// Paperclip's Thinking effort, as sent.
    pub effort: Option<String>,
    /// The OpenCode binary in the pod; `None` means `opencode` on PATH.
    pub command: Option<String>,
    /// Namespace of the agent's Jobs, possibly with a [`COMPANY_ID_PLACEHOLDER`]; `None` means
    /// the engine's default namespace. Use [`AgentConfig::namespace_for`].
    pub namespace: Option<String>,
    /// Image override; `None` means the Paperclip pod's image.
    pub image: Option<String>,
    /// Pull policy.
    pub image_pull_policy: ImagePullPolicy,
    /// Path of a kubeconfig file.
    pub kubeconfig: Option<String>,
    /// Inline kubeconfig YAML.
    pub kubeconfig_content: Option<SecretString>,
    /// ServiceAccount of the pod.
    pub service_account_name: Option<String>,
    /// Requests and limits.
    pub resources: Resources,
    /// Run deadline in seconds; 0 means none.
    pub timeout_sec: u64,
    /// Termination grace period in seconds.
    pub grace_sec: u64,
    /// Keep finished Jobs (no TTL, no delete).
    pub retain_jobs: bool,
    /// TTL of finished Jobs in seconds (ignored when `retain_jobs`).
    pub ttl_seconds_after_finished: u32,
    /// Extra environment; values may be resolved secrets, so they only go into the Secret.
    pub env: BTreeMap<String, SecretString>,
    /// Node selector override; empty means inherit.
    pub node_selector: BTreeMap<String, String>,
    /// Extra labels for the Job, pod and Secret.
    pub labels: BTreeMap<String, String>,
    /// Tolerations override; empty means inherit.
    pub tolerations: Vec<Toleration>,
    /// Extra `opencode run` arguments.
    pub extra_args: Vec<String>,
    /// Paperclip prompt template.
    pub prompt_template: Option<String>,
    /// Paperclip prompt template for fresh sessions.
    pub bootstrap_prompt_template: Option<String>,
    /// Allow every tool without asking.
    pub dangerously_skip_permissions: bool,
    /// Resume the saved session when the cwd is unchanged.
    pub resume_last_session: bool,
    /// RuntimeClass of the agent pod (a sandboxed runtime such as gVisor or Kata).
    pub runtime_class_name: Option<String>,
    /// Create a default-deny egress NetworkPolicy for each run.
    pub network_policy: bool,
    /// Egress the NetworkPolicy allows besides DNS and the Paperclip API.
    pub network_policy_egress: Vec<EgressRule>,
    /// Make the container's root filesystem read-only (with writable emptyDirs where needed).
    pub read_only_root_filesystem: bool,
    /// Agent instructions file (read by the host).
    pub instructions_file_path: Option<String>,
    /// Working directory when the run has none.
    pub cwd: Option<String>,
    /// Pod-reachable Paperclip API URL.
    pub paperclip_api_url: Option<String>,
}

/// Placeholder in `namespace` replaced by the run's company id: one namespace per company.
pub const COMPANY_ID_PLACEHOLDER: &str = "{companyId}";

/// One egress destination the run's NetworkPolicy allows: a CIDR and, optionally, TCP ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    /// `10.0.0.0/8`, `203.0.113.7/32`, `::/0`.
    pub cidr: String,
    /// TCP ports; empty means every port.
    pub ports: Vec<u16>,
}

impl AgentConfig {
    /// The namespace of this agent's Jobs for a company: `namespace` with
    /// [`COMPANY_ID_PLACEHOLDER`] replaced by the company id in lowercase (ids are UUIDs).
    /// `None` when `namespace` is unset.
    pub fn namespace_for(&self, company_id: &str) -> Option<String> {
        self.namespace
            .as_deref()
            .map(|ns| ns.replace(COMPANY_ID_PLACEHOLDER, &company_id.to_ascii_lowercase()))
    }
}

/// One rejected value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where, e.g. `resources.limits.memory`, `env.MY-VAR`, `tolerations[1].effect`.
    pub path: String,
    /// The bad value as received, shortened; secrets are shown only by length.
    pub value: String,
    /// What would be accepted.
    pub accepted: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: got {}; expected {}",
            self.path, self.value, self.accepted
        )
    }
}

/// The configuration was rejected; holds every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// All problems, in field order.
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    /// Always [`ErrorCode::ConfigInvalid`].
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::ConfigInvalid
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid agent configuration ({n} problem{}); fix the adapter config and retry:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl AgentConfig {
    /// Parses and validates `adapterConfig`, reporting every problem at once.
    pub fn from_json(value: &Value) -> Result<AgentConfig, ConfigError> {
        let Some(obj) = value.as_object() else {
            return Err(ConfigError {
                errors: vec![FieldError {
                    path: "(root)".into(),
                    value: forms::show(value),
                    accepted: "a JSON object of adapter settings".into(),
                }],
            });
        };
        let mut r = forms::Reader::new(obj);
        let config = read(&mut r);
        match r.finish() {
            errors if errors.is_empty() => Ok(config),
            errors => Err(ConfigError { errors }),
        }
    }
}

/// Reads every field of the config, recording each problem in `r`.
fn read(r: &mut forms::Reader<'_>) -> AgentConfig {
    let model = r.text("model", forms::valid_model).unwrap_or_default();
    if r.raw("model").is_none() {
        r.fail("model", "nothing".into());
    }
    for parent in ["resources", "resources.requests", "resources.limits"] {
        r.object_parent(parent);
    }
    let (kubeconfig, kubeconfig_content) = read_kubeconfig(r);
    let resources = read_resources(r);
    let (variant, effort) = read_variant(r);
    AgentConfig {
        model,
        variant,
        effort,
        command: r.text("command", |s| {
            !s.is_empty() && !s.contains(char::is_whitespace) && !s.starts_with('-')
        }),
        namespace: r.text("namespace", |s| {
            // A company id is a lowercase UUID: check the longest name it can make.
            syntax::is_dns1123_label(&s.replace(COMPANY_ID_PLACEHOLDER, &"0".repeat(36)))
        }),
        image: r.text("image", |s| !s.contains(char::is_whitespace)),
        image_pull_policy: r
            .choice("imagePullPolicy")
            .map_or_else(Default::default, |s| match s {
                "Always" => ImagePullPolicy::Always,
                "Never" => ImagePullPolicy::Never,
                _ => ImagePullPolicy::IfNotPresent,
            }),
        kubeconfig,
        kubeconfig_content,
        service_account_name: r.text("serviceAccountName", syntax::is_dns1123_subdomain),
        resources,
        timeout_sec: r.integer("timeoutSec", 0, i64::MAX as u64),
        grace_sec: r.integer("graceSec", 30, i64::MAX as u64),
        retain_jobs: r.boolean("retainJobs", false),
        ttl_seconds_after_finished: u32::try_from(r.integer(
            "ttlSecondsAfterFinished",
            300,
            i32::MAX as u64,
        ))
        .unwrap_or(300),
        env: r.env("env"),
        node_selector: r.label_map("nodeSelector", |_| false),
        labels: r.label_map("labels", is_reserved_label_key),
        tolerations: r.tolerations("tolerations"),
        extra_args: r.args("extraArgs"),
        prompt_template: r.verbatim("promptTemplate"),
        bootstrap_prompt_template: r.verbatim("bootstrapPromptTemplate"),
        dangerously_skip_permissions: r.boolean("dangerouslySkipPermissions", true),
        resume_last_session: r.boolean("resumeLastSession", true),
        runtime_class_name: r.text("runtimeClassName", syntax::is_dns1123_subdomain),
        network_policy: r.boolean("networkPolicy", false),
        network_policy_egress: r.egress("networkPolicyEgress"),
        read_only_root_filesystem: r.boolean("readOnlyRootFilesystem", false),
        instructions_file_path: r.text("instructionsFilePath", |s| {
            s.starts_with('/') && !s.contains('\0')
        }),
        cwd: r.text("cwd", |s| s.starts_with('/') && !s.contains('\0')),
        paperclip_api_url: r.text("paperclipApiUrl", forms::valid_http_url),
    }
}

/// `kubeconfig` and `kubeconfigContent`: at most one of them, the content checked for what the
/// engine refuses to run (exec plugins, files on the host...).
fn read_kubeconfig(r: &mut forms::Reader<'_>) -> (Option<String>, Option<SecretString>) {
    let kubeconfig = r.text("kubeconfig", |s| {
        kubeconfig::check_path(s, Some("/")).is_none()
    });
    let kubeconfig_content = r.verbatim("kubeconfigContent");
    if let Some(content) = &kubeconfig_content {
        for refusal in kubeconfig::check_content(content) {
            let path = match refusal.path.as_str() {
                "(root)" => "kubeconfigContent".to_owned(),
                inner => format!("kubeconfigContent.{inner}"),
            };
            r.fail_with(
                &path,
                format!("kubeconfig text of {} bytes", content.len()),
                refusal.why,
            );
        }
    }
    let kubeconfig_content = kubeconfig_content.map(SecretString::new);
    if kubeconfig.is_some() && kubeconfig_content.is_some() {
        r.fail(
            "kubeconfigContent",
            "both `kubeconfig` and `kubeconfigContent`".into(),
        );
    }
    (kubeconfig, kubeconfig_content)
}

/// The model variant (`variant`, else the Thinking effort) and the Thinking effort.
fn read_variant(r: &mut forms::Reader<'_>) -> (Option<String>, Option<String>) {
    let variant_name = |s: &str| !s.contains(char::is_whitespace) && !s.starts_with('-');
    let variant = r.text("variant", variant_name);
    // Paperclip's form writes `effort` when an agent is edited but `thinkingEffort` when it is
    // created (its generic buildAdapterConfig): both are the Thinking effort.
    let effort = r.text("effort", variant_name).or_else(|| {
        let value = r.raw("thinkingEffort")?;
        match value.as_str().map(str::trim).filter(|s| variant_name(s)) {
            Some(text) => Some(text.to_owned()),
            None => {
                r.fail_with(
                    "thinkingEffort",
                    forms::show(value),
                    fields::spec("effort").accepted.to_owned(),
                );
                None
            }
        }
    });
    (variant.or_else(|| effort.clone()), effort)
}

/// Label keys an agent config may not set: the engine's own, and the prefixes Kubernetes and
/// Paperclip reserve (`kubernetes.io/`, `k8s.io/`, `paperclip.io/` and their subdomains), except
/// the recommended `app.kubernetes.io/` labels the engine does not set itself.
fn is_reserved_label_key(key: &str) -> bool {
    if crate::manifest::is_adapter_label_key(key) {
        return true;
    }
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    prefix != "app.kubernetes.io"
        && [
            "kubernetes.io",
            "k8s.io",
            "paperclip.io",
            "opencode-k8s.dev",
        ]
        .iter()
        .any(|reserved| prefix == *reserved || prefix.ends_with(&format!(".{reserved}")))
}

fn read_resources(r: &mut forms::Reader<'_>) -> Resources {
    let mut pair = |kind: &str, name: &str| {
        let request_path = format!("resources.requests.{name}");
        let limit_path = format!("resources.limits.{name}");
        let request = r.quantity(&request_path);
        let limit = r.quantity(&limit_path);
        if let (Some(request), Some(limit)) = (&request, &limit)
            && request > limit
        {
            r.fail_with(
                &limit_path,
                format!("{:?}", limit.as_str()),
                format!("a {kind} limit at least the request ({})", request.as_str()),
            );
        }
        (
            request.unwrap_or_else(|| forms::default_quantity(&request_path)),
            limit.unwrap_or_else(|| forms::default_quantity(&limit_path)),
        )
    };
    let (cpu_request, cpu_limit) = pair("CPU", "cpu");
    let (memory_request, memory_limit) = pair("memory", "memory");
    Resources {
        requests: ResourceAmounts {
            cpu: cpu_request,
            memory: memory_request,
        },
        limits: ResourceAmounts {
            cpu: cpu_limit,
            memory: memory_limit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A serialized field as text, found by its dotted table name.
    fn lookup_serialized(c: &AgentConfig, name: &str) -> String {
        let v = serde_json::to_value(c).unwrap();
        let leaf = name.split('.').fold(&v, |v, part| &v[part]);
        match leaf {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Paths of serialized fields, descending only into objects the table names by prefix.
    fn serialized_leaf_paths(v: &Value, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (k, child) in v.as_object().unwrap() {
            let path = format!("{prefix}{k}");
            let nested = format!("{path}.");
            if FIELDS.iter().any(|f| f.name.starts_with(&nested)) {
                out.extend(serialized_leaf_paths(child, &nested));
            } else {
                out.push(path);
            }
        }
        out
    }

    fn errors(v: Value) -> Vec<String> {
        AgentConfig::from_json(&v)
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = AgentConfig::from_json(&json!({"model": "anthropic/claude"})).unwrap();
        for f in FIELDS {
            let Some(default) = f.default else { continue };
            let got = lookup_serialized(&c, f.name);
            assert_eq!(got, default, "default of {}", f.name);
        }
        assert!(c.env.is_empty() && c.tolerations.is_empty() && c.extra_args.is_empty());
    }

    #[test]
    fn every_struct_field_is_in_the_table_and_back() {
        let c = AgentConfig::from_json(&json!({"model": "a/b"})).unwrap();
        let mut leaves = serialized_leaf_paths(&serde_json::to_value(&c).unwrap(), "");
        leaves.sort();
        let mut names: Vec<String> = FIELDS.iter().map(|f| f.name.to_owned()).collect();
        names.sort();
        assert_eq!(leaves, names);
    }

    #[test]
    fn non_object_root_is_one_error() {
        assert_eq!(errors(json!([1])), vec!["(root)"]);
    }

    #[test]
    fn a_group_that_is_not_an_object_is_refused_not_defaulted() {
        assert_eq!(
            errors(json!({"model": "a/b", "resources": "4Gi"})),
            vec!["resources"]
        );
        assert_eq!(
            errors(json!({"model": "a/b", "resources": {"limits": ["8Gi"]}})),
            vec!["resources.limits"]
        );
    }

    #[test]
    fn reserved_label_prefixes_are_refused() {
        for key in [
            "kubernetes.io/x",
            "node.kubernetes.io/x",
            "k8s.io/x",
            "paperclip.io/x",
            "opencode-k8s.dev/x",
            "app.kubernetes.io/managed-by",
        ] {
            assert_eq!(
                errors(json!({"model": "a/b", "labels": {key: "v"}})),
                vec![format!("labels.{key}")],
                "{key}"
            );
        }
        let ok = json!({"model": "a/b", "labels": {"app.kubernetes.io/part-of": "x", "example.com/team": "y"}});
        assert!(AgentConfig::from_json(&ok).is_ok());
    }

    #[test]
    fn paths_must_be_absolute_and_kubeconfig_content_inline_only() {
        assert_eq!(
            errors(
                json!({"model": "a/b", "instructionsFilePath": "AGENTS.md", "kubeconfig": "k/config"})
            ),
            vec!["kubeconfig", "instructionsFilePath"]
        );
        let exec = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers:\n- name: u\n  user:\n    exec:\n      command: sh\n";
        assert_eq!(
            errors(json!({"model": "a/b", "kubeconfigContent": exec})),
            vec!["kubeconfigContent.users[0].user.exec"]
        );
    }

    #[test]
    fn namespace_per_company() {
        let c = AgentConfig::from_json(&json!({"model": "a/b", "namespace": "agents-{companyId}"}))
            .unwrap();
        assert_eq!(c.namespace_for("ABC-1").as_deref(), Some("agents-abc-1"));
        assert_eq!(
            errors(
                json!({"model": "a/b", "namespace": "a-much-too-long-prefix-for-a-namespace-{companyId}"})
            ),
            vec!["namespace"]
        );
    }

    #[test]
    fn thinking_effort_is_the_variant_unless_one_is_set() {
        let c = AgentConfig::from_json(&json!({"model": "a/b", "effort": "high"})).unwrap();
        assert_eq!(c.variant.as_deref(), Some("high"));
        let c =
            AgentConfig::from_json(&json!({"model": "a/b", "effort": "high", "variant": "max"}))
                .unwrap();
        assert_eq!(c.variant.as_deref(), Some("max"));
    }

    #[test]
    fn kubeconfig_sources_are_exclusive() {
        let v = json!({"model": "a/b", "kubeconfig": "/k", "kubeconfigContent": "apiVersion: v1"});
        assert_eq!(errors(v), vec!["kubeconfigContent"]);
    }

    #[test]
    fn limits_below_requests_name_the_limit() {
        let v = json!({"model": "a/b", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}});
        let err = AgentConfig::from_json(&v).unwrap_err();
        assert_eq!(err.errors[0].path, "resources.limits.cpu");
        assert!(
            err.errors[0].accepted.contains("(2)"),
            "{}",
            err.errors[0].accepted
        );
    }

    #[test]
    fn secret_values_never_show_in_debug_or_serialization() {
        let c =
            AgentConfig::from_json(&json!({"model": "a/b", "env": {"TOKEN": "hunter2"}})).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
        assert_eq!(c.env["TOKEN"].expose(), "hunter2");
    }
}
