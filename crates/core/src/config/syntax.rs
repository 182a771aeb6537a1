//! Kubernetes name and label syntax, checked the way kube-apiserver checks it.
//!
//! Config validation rejects what the API server would reject, and the manifest module builds
//! names and label values that pass these same checks, so a rendered object is never refused for
//! its syntax. The rules mirror `k8s.io/apimachinery/pkg/util/validation`.

/// Longest DNS-1123 label (namespace, Job name, container name).
pub const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain (Secret name, ServiceAccount name, label key prefix).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest label value and label key name part.
pub const LABEL_VALUE_MAX: usize = 63;

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

/// A label value: empty, or `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` of at most 63 characters.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// The name part of a qualified name: like a non-empty label value.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= LABEL_VALUE_MAX
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// An environment variable name every shell can use: `[A-Za-z_][A-Za-z0-9_]*`.
///
/// Kubernetes ≥ 1.30 accepts more, but older servers and `sh` do not, and the name also becomes
/// a Secret key (`env.NAME`), so the portable subset is the contract.
pub fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters.
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_SUBDOMAIN_MAX
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_label_matches_apiserver_rules() {
        for ok in ["a", "oc-agent-0123456789", "a1", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn subdomain_allows_dots_between_labels() {
        assert!(is_dns1123_subdomain("paperclip.agents"));
        assert!(!is_dns1123_subdomain("paperclip..agents"));
        assert!(!is_dns1123_subdomain(".a"));
    }

    #[test]
    fn label_values_and_keys() {
        assert!(is_label_value(""));
        assert!(is_label_value("Echo_Agent.v1"));
        assert!(!is_label_value("has space"));
        assert!(!is_label_value("_leading"));
        assert!(!is_label_value(&"x".repeat(64)));
        assert!(is_qualified_name("team"));
        assert!(is_qualified_name("example.com/team"));
        assert!(!is_qualified_name("Example.com/team"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(!is_qualified_name("example.com/"));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("OPENAI_API_KEY"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
