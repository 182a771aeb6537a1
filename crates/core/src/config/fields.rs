//! The table of agent configuration fields: the single source for validation messages, the
//! Paperclip UI's `getConfigSchema()` and the README's config table.

use serde::Serialize;

/// How a field is entered and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FieldKind {
    /// A one-line string.
    Text,
    /// A multi-line string kept verbatim.
    Textarea,
    /// A non-negative integer (a JSON number or a string of digits).
    Integer,
    /// `true`/`false` (also `"true"`, `"1"`, `"yes"`, `"on"` and their opposites).
    Boolean,
    /// A Kubernetes resource quantity.
    Quantity,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A string map: an object, JSON text, or `key=value` lines.
    Map,
    /// Tolerations: an array, or JSON/YAML text.
    Tolerations,
    /// Extra `opencode run` arguments: an array, or shell-like text.
    Args,
}

/// The section of the agent form a field is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Group {
    /// Which model, how hard it thinks.
    Model,
    /// Where and how the Job runs.
    Kubernetes,
    /// CPU, memory and time.
    Resources,
    /// Prompts, sessions, the working directory.
    Session,
    /// Everything else.
    Advanced,
}

impl Group {
    /// The form's section title.
    pub const fn as_str(self) -> &'static str {
        match self {
            Group::Model => "Model",
            Group::Kubernetes => "Kubernetes",
            Group::Resources => "Resources",
            Group::Session => "Session",
            Group::Advanced => "Advanced",
        }
    }
}

/// One configuration field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    /// The key in `adapterConfig`; nested fields use dots (`resources.limits.cpu`) and may be
    /// sent either nested or as the flat dotted key.
    pub name: &'static str,
    /// The form's label, e.g. `Memory limit`.
    pub label: &'static str,
    /// The form's section.
    pub group: Group,
    /// How the value is parsed.
    pub kind: FieldKind,
    /// The default when the key is absent, `null` or `""`; `None` means unset.
    pub default: Option<&'static str>,
    /// What is accepted, in the words error messages use.
    pub accepted: &'static str,
    /// A one-line explanation for the UI and the docs.
    pub hint: &'static str,
}

const fn field(
    name: &'static str,
    label: &'static str,
    group: Group,
    kind: FieldKind,
    default: Option<&'static str>,
    accepted: &'static str,
    hint: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        label,
        group,
        kind,
        default,
        accepted,
        hint,
    }
}

use FieldKind::{Args, Boolean, Choice, Integer, Map, Quantity, Text, Textarea, Tolerations};

/// Every field of [`super::AgentConfig`], in the order the UI shows them.
pub const FIELDS: &[FieldSpec] = &[
    field(
        "model",
        "Model",
        Group::Model,
        Text,
        None,
        "`provider/model`, e.g. `anthropic/claude-sonnet-4-5`",
        "OpenCode model to run (required).",
    ),
    field(
        "variant",
        "Variant",
        Group::Model,
        Text,
        None,
        "a variant name without spaces, e.g. `high`",
        "Provider-specific reasoning effort passed as `--variant`.",
    ),
    field(
        "effort",
        "Thinking effort",
        Group::Model,
        Text,
        None,
        "a variant name without spaces, e.g. `high`",
        "Paperclip's Thinking effort (also read from `thinkingEffort`): passed as `--variant` when `variant` is not set.",
    ),
    field(
        "namespace",
        "Namespace",
        Group::Kubernetes,
        Text,
        None,
        "a DNS-1123 label: lowercase letters, digits and `-`, at most 63 characters; `{companyId}` is replaced by the company id",
        "Namespace for the agent's Jobs (e.g. `agents-{companyId}` for one per company); defaults to Paperclip's own namespace.",
    ),
    field(
        "image",
        "Image",
        Group::Kubernetes,
        Text,
        None,
        "a container image reference without spaces",
        "Image with `opencode` on PATH; defaults to the Paperclip pod's image.",
    ),
    field(
        "imagePullPolicy",
        "Image pull policy",
        Group::Kubernetes,
        Choice(&["Always", "IfNotPresent", "Never"]),
        Some("IfNotPresent"),
        "one of `Always`, `IfNotPresent`, `Never`",
        "When the kubelet pulls the image.",
    ),
    field(
        "kubeconfig",
        "Kubeconfig file",
        Group::Kubernetes,
        Text,
        None,
        "an absolute path to a kubeconfig file inside the directory the server's `OPENCODE_K8S_KUBECONFIG_DIR` allows (not together with `kubeconfigContent`)",
        "Talk to another cluster through a kubeconfig file the operator provides.",
    ),
    field(
        "kubeconfigContent",
        "Kubeconfig content",
        Group::Kubernetes,
        Textarea,
        None,
        "kubeconfig YAML text with inline credentials only: no `exec`, `auth-provider`, `tokenFile` or file paths (not together with `kubeconfig`)",
        "Inline kubeconfig for another cluster.",
    ),
    field(
        "serviceAccountName",
        "Service account",
        Group::Kubernetes,
        Text,
        None,
        "a DNS-1123 subdomain: lowercase letters, digits, `-` and `.`, at most 253 characters",
        "ServiceAccount of the agent pod (its token is not mounted).",
    ),
    field(
        "resources.requests.cpu",
        "CPU request",
        Group::Resources,
        Quantity,
        Some("1000m"),
        "a positive Kubernetes quantity, e.g. `500m`, `1`, `2.5`",
        "CPU the scheduler reserves for the agent.",
    ),
    field(
        "resources.requests.memory",
        "Memory request",
        Group::Resources,
        Quantity,
        Some("2Gi"),
        "a positive Kubernetes quantity, e.g. `512Mi`, `2Gi`, `1.5G`",
        "Memory the scheduler reserves for the agent.",
    ),
    field(
        "resources.limits.cpu",
        "CPU limit",
        Group::Resources,
        Quantity,
        Some("4000m"),
        "a positive Kubernetes quantity not below the CPU request, e.g. `4`",
        "CPU the agent may use at most.",
    ),
    field(
        "resources.limits.memory",
        "Memory limit",
        Group::Resources,
        Quantity,
        Some("8Gi"),
        "a positive Kubernetes quantity not below the memory request, e.g. `8Gi`",
        "Memory above which the agent is OOM-killed.",
    ),
    field(
        "timeoutSec",
        "Timeout (seconds)",
        Group::Resources,
        Integer,
        Some("0"),
        "a whole number of seconds, 0 for no timeout",
        "Run deadline (Job activeDeadlineSeconds).",
    ),
    field(
        "graceSec",
        "Grace period (seconds)",
        Group::Resources,
        Integer,
        Some("30"),
        "a whole number of seconds",
        "Time OpenCode gets to stop after SIGTERM.",
    ),
    field(
        "retainJobs",
        "Keep finished Jobs",
        Group::Kubernetes,
        Boolean,
        Some("false"),
        "true or false",
        "Keep finished Jobs and pods for debugging (no TTL, no delete).",
    ),
    field(
        "ttlSecondsAfterFinished",
        "Finished Job TTL (seconds)",
        Group::Kubernetes,
        Integer,
        Some("300"),
        "a whole number of seconds up to 2147483647",
        "How long a finished Job stays before Kubernetes deletes it.",
    ),
    field(
        "env",
        "Environment variables",
        Group::Advanced,
        Map,
        None,
        "an object of NAME: value, JSON text, or NAME=value lines; NAME matches [A-Za-z_][A-Za-z0-9_]*",
        "Extra environment for OpenCode (stored in the per-run Secret).",
    ),
    field(
        "nodeSelector",
        "Node selector",
        Group::Kubernetes,
        Map,
        None,
        "an object, JSON text, or key=value lines with Kubernetes label keys and values",
        "Schedule agent pods on matching nodes; replaces the Paperclip pod's.",
    ),
    field(
        "labels",
        "Labels",
        Group::Kubernetes,
        Map,
        None,
        "an object, JSON text, or key=value lines with Kubernetes label keys and values",
        "Extra labels on the Job, pod and Secret (not under kubernetes.io/, k8s.io/, paperclip.io/ or opencode-k8s.dev/).",
    ),
    field(
        "tolerations",
        "Tolerations",
        Group::Kubernetes,
        Tolerations,
        None,
        "a list of tolerations as an array, or JSON/YAML text",
        "Tolerations of agent pods; replace the Paperclip pod's.",
    ),
    field(
        "command",
        "Command",
        Group::Advanced,
        Text,
        None,
        "a command name or absolute path without spaces, e.g. `opencode` or `/opt/opencode/bin/opencode`",
        "The OpenCode binary run in the agent pod (Paperclip's Command field); defaults to `opencode` on PATH.",
    ),
    field(
        "extraArgs",
        "Extra args",
        Group::Advanced,
        Args,
        None,
        "an array of strings, one argument each (what Paperclip's comma-separated field sends: `--agent, build`), or text split like a shell (quotes group words)",
        "Extra `opencode run` arguments.",
    ),
    field(
        "promptTemplate",
        "Prompt template",
        Group::Session,
        Textarea,
        None,
        "any text",
        "Prompt template rendered by Paperclip for every run.",
    ),
    field(
        "bootstrapPromptTemplate",
        "Bootstrap prompt",
        Group::Session,
        Textarea,
        None,
        "any text",
        "Prompt template for a fresh session.",
    ),
    field(
        "dangerouslySkipPermissions",
        "Skip permission prompts",
        Group::Session,
        Boolean,
        Some("true"),
        "true or false",
        "Allow every OpenCode tool without asking (nobody can answer inside a Job).",
    ),
    field(
        "resumeLastSession",
        "Resume last session",
        Group::Session,
        Boolean,
        Some("true"),
        "true or false",
        "Resume the task's OpenCode session when the working directory is unchanged.",
    ),
    field(
        "runtimeClassName",
        "Runtime class",
        Group::Kubernetes,
        Text,
        None,
        "a RuntimeClass name (DNS-1123 subdomain), e.g. `gvisor`",
        "Run agent pods in a sandboxed runtime (gVisor, Kata) the cluster provides.",
    ),
    field(
        "networkPolicy",
        "Restrict egress (NetworkPolicy)",
        Group::Kubernetes,
        Boolean,
        Some("false"),
        "true or false",
        "Deny agent egress except DNS, the Paperclip API and `networkPolicyEgress` (needs a CNI that enforces NetworkPolicy).",
    ),
    field(
        "networkPolicyEgress",
        "Allowed egress",
        Group::Kubernetes,
        Args,
        None,
        "CIDR or CIDR:port[,port] entries, e.g. `0.0.0.0/0:443` or `[::/0]:443`, as an array or whitespace-separated text",
        "Egress allowed by the NetworkPolicy besides DNS and Paperclip, e.g. your LLM endpoints.",
    ),
    field(
        "readOnlyRootFilesystem",
        "Read-only root filesystem",
        Group::Kubernetes,
        Boolean,
        Some("false"),
        "true or false",
        "Make the agent container's root filesystem read-only (/tmp stays writable).",
    ),
    field(
        "instructionsFilePath",
        "Instructions file",
        Group::Session,
        Text,
        None,
        "an absolute file path",
        "Agent instructions file Paperclip adds to the prompt; its directory is mounted read-only when it is on the shared volume.",
    ),
    field(
        "cwd",
        "Working directory",
        Group::Session,
        Text,
        None,
        "an absolute path, e.g. `/paperclip/workspaces/app`",
        "Working directory when the run has no workspace cwd.",
    ),
    field(
        "paperclipApiUrl",
        "Paperclip API URL",
        Group::Advanced,
        Text,
        None,
        "an http:// or https:// URL reachable from the pod",
        "Paperclip API URL for the agent; defaults to the Paperclip pod's PAPERCLIP_API_URL.",
    ),
];

/// The spec of a field by name.
///
/// # Panics
/// When `name` is not in [`FIELDS`] — only possible through a typo in this crate, which the
/// unit tests catch.
pub(crate) fn spec(name: &str) -> &'static FieldSpec {
    FIELDS
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("config field `{name}` missing from FIELDS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_hints_are_one_line() {
        let mut names = std::collections::BTreeSet::new();
        for f in FIELDS {
            assert!(names.insert(f.name), "duplicate {}", f.name);
            assert!(
                !f.hint.contains('\n') && f.hint.ends_with('.'),
                "{}",
                f.name
            );
            assert!(!f.accepted.is_empty(), "{}", f.name);
            assert!(
                !f.label.is_empty() && f.label.chars().next().is_some_and(char::is_uppercase),
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn table_serializes_for_the_js_schema() {
        let json = serde_json::to_value(spec("imagePullPolicy")).unwrap();
        assert_eq!(json["kind"]["choice"][1], "IfNotPresent");
        assert_eq!(json["default"], "IfNotPresent");
    }
}
