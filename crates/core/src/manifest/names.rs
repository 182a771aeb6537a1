//! Object names, labels, annotations and label selectors of a run.
//!
//! Label values must be ≤ 63 characters of a restricted alphabet, so ids that do not fit are
//! replaced by a readable prefix plus a hash. Selectors are built with the same sanitizer as the
//! labels, so a list or watch by agent or run always matches what was created; the raw ids are
//! kept in annotations.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::config::syntax;

/// `app.kubernetes.io/managed-by` on everything the engine creates.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_KEY`].
pub const MANAGED_BY_VALUE: &str = "opencode-k8s";
/// `app.kubernetes.io/name` on everything the engine creates.
pub const APP_NAME_KEY: &str = "app.kubernetes.io/name";
/// Value of [`APP_NAME_KEY`].
pub const APP_NAME_VALUE: &str = "opencode-agent";
/// Prefix of the engine's own label and annotation keys.
pub const KEY_PREFIX: &str = "opencode-k8s.dev/";
/// Label (sanitized) and annotation (raw) key of the Paperclip agent id.
pub const AGENT_ID_KEY: &str = "opencode-k8s.dev/agent-id";
/// Label (sanitized) and annotation (raw) key of the Paperclip company id.
pub const COMPANY_ID_KEY: &str = "opencode-k8s.dev/company-id";
/// Label (sanitized) and annotation (raw) key of the Paperclip run id.
pub const RUN_ID_KEY: &str = "opencode-k8s.dev/run-id";
/// Label (sanitized) and annotation (raw) key of the Paperclip task key.
pub const TASK_KEY_KEY: &str = "opencode-k8s.dev/task-key";
/// Annotation with the agent's display name.
pub const AGENT_NAME_ANNOTATION: &str = "opencode-k8s.dev/agent-name";
/// Annotation with the attempt number within the run (2 for the in-run fresh retry).
pub const ATTEMPT_ANNOTATION: &str = "opencode-k8s.dev/attempt";
/// Annotation with the OpenCode session the run resumes.
pub const RESUME_SESSION_ANNOTATION: &str = "opencode-k8s.dev/resume-session-id";
/// Annotation on the Paperclip pod: more env names (comma-separated) its agent Jobs must not
/// inherit, besides [`crate::manifest::SERVER_ONLY_ENV`].
pub const WITHHOLD_ENV_ANNOTATION: &str = "opencode-k8s.dev/withhold-env";

const SLUG_MAX: usize = 20;
const NAME_HASH_HEX: usize = 10;
const LABEL_HASH_HEX: usize = 16;

/// True for label keys the engine sets itself; agent config `labels` may not use them.
pub fn is_adapter_label_key(key: &str) -> bool {
    key == MANAGED_BY_KEY || key == APP_NAME_KEY || key.starts_with(KEY_PREFIX)
}

/// Lowercase hex of the first `n` hex digits of SHA-256.
pub(crate) fn short_hash(s: &str, n: usize) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..n].to_owned()
}

/// A label value for an id: the id itself when it is a valid label value, else a readable
/// prefix and a hash of the full id (deterministic, so selectors match).
pub fn label_value(id: &str) -> String {
    if syntax::is_label_value(id) {
        return id.to_owned();
    }
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let prefix: String = cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(syntax::LABEL_VALUE_MAX - LABEL_HASH_HEX - 1)
        .collect();
    let prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let hash = short_hash(id, LABEL_HASH_HEX);
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Label selector of every object the engine made for one agent.
pub fn agent_selector(agent_id: &str) -> String {
    format!(
        "{MANAGED_BY_KEY}={MANAGED_BY_VALUE},{AGENT_ID_KEY}={}",
        label_value(agent_id)
    )
}

/// The name of an agent's Lease, the guard that one process at a time creates and follows the
/// agent's Jobs: `oc-agent-<16 hex of sha256(agent id)>` (the raw id is in its labels).
pub fn agent_lease_name(agent_id: &str) -> String {
    format!("oc-agent-{}", short_hash(agent_id, 16))
}

/// Label selector of every object the engine made for one run.
pub fn run_selector(run_id: &str) -> String {
    format!(
        "{MANAGED_BY_KEY}={MANAGED_BY_VALUE},{RUN_ID_KEY}={}",
        label_value(run_id)
    )
}

/// The Job and Secret name of a run attempt: `oc-<agent slug>-<10 hex of sha256(run id)>`,
/// plus `-a<attempt>` after the first attempt. A DNS-1123 label of at most 38 characters.
pub fn object_name(agent_name: Option<&str>, run_id: &str, attempt: u32) -> String {
    let mut slug = String::new();
    for c in agent_name.unwrap_or_default().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= SLUG_MAX {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "agent" } else { slug };
    let hash = short_hash(run_id, NAME_HASH_HEX);
    match attempt {
        0 | 1 => format!("oc-{slug}-{hash}"),
        n => format!("oc-{slug}-{hash}-a{n}"),
    }
}

/// The ids of one run, as labels and annotations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunIds<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) agent_id: &'a str,
    pub(crate) company_id: &'a str,
    pub(crate) task_key: Option<&'a str>,
}

impl RunIds<'_> {
    /// The engine's labels merged over the config's extra labels (which may not use the
    /// engine's keys; config validation refuses them).
    pub(crate) fn labels(&self, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut labels = extra.clone();
        labels.insert(MANAGED_BY_KEY.into(), MANAGED_BY_VALUE.into());
        labels.insert(APP_NAME_KEY.into(), APP_NAME_VALUE.into());
        labels.insert(AGENT_ID_KEY.into(), label_value(self.agent_id));
        labels.insert(COMPANY_ID_KEY.into(), label_value(self.company_id));
        labels.insert(RUN_ID_KEY.into(), label_value(self.run_id));
        if let Some(task_key) = self.task_key {
            labels.insert(TASK_KEY_KEY.into(), label_value(task_key));
        }
        labels
    }

    /// The raw ids, unchanged.
    pub(crate) fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        annotations.insert(AGENT_ID_KEY.into(), self.agent_id.into());
        annotations.insert(COMPANY_ID_KEY.into(), self.company_id.into());
        annotations.insert(RUN_ID_KEY.into(), self.run_id.into());
        if let Some(task_key) = self.task_key {
            annotations.insert(TASK_KEY_KEY.into(), task_key.into());
        }
        annotations
    }
}

/// A path segment safe under `/paperclip/.opencode-k8s/`: `[A-Za-z0-9._-]`, never `.` or
/// `..`, at most 64 bytes; anything else is hashed so distinct ids stay distinct.
pub(crate) fn path_segment(id: &str) -> String {
    let safe = !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if safe {
        id.to_owned()
    } else {
        format!("h-{}", short_hash(id, 32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_dns_labels() {
        let a = object_name(
            Some("Echo Agent!!"),
            "285e8154-4155-4792-80e6-14b22ca3a76a",
            1,
        );
        assert_eq!(
            a,
            object_name(
                Some("Echo Agent!!"),
                "285e8154-4155-4792-80e6-14b22ca3a76a",
                1
            )
        );
        assert!(a.starts_with("oc-echo-agent-"), "{a}");
        assert!(syntax::is_dns1123_label(&a));
        let long = object_name(Some(&"Ω very long name ".repeat(10)), "r", 2);
        assert!(
            syntax::is_dns1123_label(&long) && long.len() <= 63 && long.ends_with("-a2"),
            "{long}"
        );
        assert!(object_name(None, "r", 1).starts_with("oc-agent-"));
        assert!(object_name(Some("---"), "r", 1).starts_with("oc-agent-"));
        assert_ne!(object_name(None, "r1", 1), object_name(None, "r2", 1));
    }

    #[test]
    fn label_values_keep_valid_ids_and_hash_the_rest() {
        assert_eq!(
            label_value("2a47a922-df57-40c7-9df4-1fec93a4f5cb"),
            "2a47a922-df57-40c7-9df4-1fec93a4f5cb"
        );
        for raw in ["task/with spaces", &"x".repeat(80), "-lead", "ü", "a:b"] {
            let v = label_value(raw);
            assert!(syntax::is_label_value(&v) && !v.is_empty(), "{raw} -> {v}");
        }
        assert_ne!(
            label_value("a:b"),
            label_value("a/b"),
            "distinct ids stay distinct"
        );
    }

    #[test]
    fn selectors_use_the_sanitized_values() {
        assert_eq!(
            run_selector("run 1"),
            format!(
                "app.kubernetes.io/managed-by=opencode-k8s,opencode-k8s.dev/run-id={}",
                label_value("run 1")
            )
        );
        assert!(agent_selector("a").ends_with("opencode-k8s.dev/agent-id=a"));
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("652fd1a3-6342"), "652fd1a3-6342");
        for bad in ["..", ".", "a/b", "", "x y"] {
            let s = path_segment(bad);
            assert!(s.starts_with("h-") && !s.contains('/'), "{bad} -> {s}");
        }
    }
}
