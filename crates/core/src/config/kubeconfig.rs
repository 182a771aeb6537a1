//! What a kubeconfig from an agent's config may contain.
//!
//! Whoever edits an agent in Paperclip is not necessarily whoever runs the Paperclip server, yet
//! the kubeconfig is loaded *by the server*: an `exec` credential plugin would run a command in
//! the server, `auth-provider` runs provider code, and a `tokenFile` or any other file reference
//! (`certificate-authority`, `client-certificate`, `client-key`) reads the server's own files.
//! So inline content may carry only inline credentials (`token`, `*-data`), and a kubeconfig
//! *file* is honoured only inside the directory the operator names in
//! [`KUBECONFIG_DIR_ENV`] — which cluster agents run in is the operator's decision.

use std::path::{Component, Path};

use serde_json::Value;

/// Environment variable of the server naming the one directory whose kubeconfig files agent
/// configs may point at (`kubeconfig`). Unset: no agent config may name a kubeconfig file.
pub const KUBECONFIG_DIR_ENV: &str = "OPENCODE_K8S_KUBECONFIG_DIR";

/// Keys of a kubeconfig user or cluster that make the loader run code or read a file.
const REFUSED_KEYS: &[(&str, &str)] = &[
    (
        "exec",
        "an exec credential plugin would run a command in the Paperclip server",
    ),
    (
        "auth-provider",
        "an auth provider plugin would run in the Paperclip server",
    ),
    (
        "tokenFile",
        "a token file would be read from the Paperclip server's disk; paste `token` instead",
    ),
    (
        "token-file",
        "a token file would be read from the Paperclip server's disk; paste `token` instead",
    ),
    (
        "client-certificate",
        "a file reference would be read from the Paperclip server's disk; use `client-certificate-data`",
    ),
    (
        "client-key",
        "a file reference would be read from the Paperclip server's disk; use `client-key-data`",
    ),
    (
        "certificate-authority",
        "a file reference would be read from the Paperclip server's disk; use `certificate-authority-data`",
    ),
];

/// One refused part of inline kubeconfig content: the path inside it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Path inside the content, e.g. `users[0].user.exec`.
    pub path: String,
    /// Why it is refused and what to use instead.
    pub why: String,
}

/// Checks inline kubeconfig content: it must parse as a kubeconfig and use only inline
/// credentials. Returns every refusal; a parse failure is one refusal at `(root)` that never
/// quotes the text (it may hold a token).
pub fn check_content(content: &str) -> Vec<Refusal> {
    let value = match serde_saphyr::from_str::<Value>(content) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) | Err(_) => {
            return vec![Refusal {
                path: "(root)".into(),
                why: "YAML text of a kubeconfig (clusters, users, contexts, current-context)"
                    .into(),
            }];
        }
    };
    if let Err(err) = kube::config::Kubeconfig::from_yaml(content) {
        let mut reason = err.to_string();
        reason.truncate(reason.find("-->").unwrap_or(reason.len()));
        return vec![Refusal {
            path: "(root)".into(),
            why: format!(
                "a kubeconfig that parses ({})",
                reason.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        }];
    }
    let mut out = Vec::new();
    for (list, inner) in [("users", "user"), ("clusters", "cluster")] {
        for (i, entry) in value[list].as_array().into_iter().flatten().enumerate() {
            let Some(fields) = entry[inner].as_object() else {
                continue;
            };
            for (key, why) in REFUSED_KEYS {
                if fields.get(*key).is_some_and(|v| !v.is_null()) {
                    out.push(Refusal {
                        path: format!("{list}[{i}].{inner}.{key}"),
                        why: (*why).to_owned(),
                    });
                }
            }
        }
    }
    out
}

/// Why a kubeconfig file path from an agent config is refused, or `None` when it lies inside
/// `allowed_dir` (the value of [`KUBECONFIG_DIR_ENV`]). Purely lexical: the path must be
/// absolute and free of `..`, so no symlink-free prefix check can be fooled by it; symlinks
/// inside the operator's directory are the operator's own.
pub fn check_path(path: &str, allowed_dir: Option<&str>) -> Option<String> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Some("an absolute path without `..`".into());
    }
    let Some(dir) = allowed_dir.filter(|d| !d.trim().is_empty()) else {
        return Some(format!(
            "no kubeconfig file: the operator has not allowed any (set {KUBECONFIG_DIR_ENV} on the Paperclip server to a directory of kubeconfig files, or paste `kubeconfigContent`)"
        ));
    };
    if p.starts_with(Path::new(dir)) && p != Path::new(dir) {
        None
    } else {
        Some(format!(
            "a kubeconfig file inside {dir} (the directory {KUBECONFIG_DIR_ENV} allows)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_user(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://k:6443\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n{user}"
        )
    }

    fn refused_paths(content: &str) -> Vec<String> {
        check_content(content).into_iter().map(|r| r.path).collect()
    }

    #[test]
    fn inline_token_and_data_fields_are_accepted() {
        let content = with_user("    token: abc\n    client-key-data: Zm9v\n");
        assert_eq!(check_content(&content), vec![]);
    }

    #[test]
    fn every_refused_user_form_is_named() {
        for (user, key) in [
            (
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n",
                "exec",
            ),
            ("    auth-provider:\n      name: gcp\n", "auth-provider"),
            ("    tokenFile: /etc/shadow\n", "tokenFile"),
            (
                "    client-certificate: /paperclip/cert\n",
                "client-certificate",
            ),
            ("    client-key: /paperclip/key\n", "client-key"),
        ] {
            assert_eq!(
                refused_paths(&with_user(user)),
                vec![format!("users[0].user.{key}")],
                "{key}"
            );
        }
    }

    #[test]
    fn cluster_file_reference_is_named() {
        let content = with_user("    token: t\n").replace(
            "server: https://k:6443",
            "server: https://k:6443\n    certificate-authority: /paperclip/ca.crt",
        );
        assert_eq!(
            refused_paths(&content),
            vec!["clusters[0].cluster.certificate-authority"]
        );
    }

    #[test]
    fn unparsable_content_is_refused_without_quoting_it() {
        let refusals = check_content("token: hunter2\n: : :");
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].path, "(root)");
        assert!(!refusals[0].why.contains("hunter2"));
        assert_eq!(refused_paths("just text"), vec!["(root)"]);
    }

    #[test]
    fn paths_only_inside_the_allowed_directory() {
        let dir = Some("/etc/opencode-k8s/kubeconfigs");
        assert_eq!(check_path("/etc/opencode-k8s/kubeconfigs/prod", dir), None);
        for bad in [
            "/etc/opencode-k8s/kubeconfigs/../../../paperclip/kc",
            "/etc/opencode-k8s/kubeconfigs-evil/kc",
            "/etc/opencode-k8s/kubeconfigs",
            "relative/kc",
            "/root/.kube/config",
        ] {
            assert!(check_path(bad, dir).is_some(), "{bad}");
        }
        let unset = check_path("/etc/opencode-k8s/kubeconfigs/prod", None).unwrap();
        assert!(unset.contains(KUBECONFIG_DIR_ENV), "{unset}");
    }
}
