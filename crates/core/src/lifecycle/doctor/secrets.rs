//! The Secrets the inherited pod spec references: each must exist in the Jobs' namespace with
//! every key the spec reads from it, or the agent pods stay Pending.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{Check, find_rule, is_status, rule_fix};
use crate::lifecycle::retry::retry;
use crate::manifest::InheritedPod;

/// How the inherited pod spec uses one Secret.
#[derive(Debug, Default)]
struct SecretUse {
    /// Where the spec uses it (`env TOKEN`, `volume creds`, `imagePullSecrets`).
    uses: Vec<String>,
    /// The keys the spec reads from it.
    keys: Vec<String>,
    /// Every use is `optional: true`.
    optional: bool,
}

/// Every Secret the inherited pod spec references, by name.
fn secret_uses(pod: &InheritedPod) -> BTreeMap<String, SecretUse> {
    let mut uses: BTreeMap<String, SecretUse> = BTreeMap::new();
    let mut add = |name: &str, what: String, key: Option<&str>, optional: bool| {
        let entry = uses.entry(name.to_owned()).or_insert_with(|| SecretUse {
            optional: true,
            ..SecretUse::default()
        });
        entry.uses.push(what);
        entry.keys.extend(key.map(str::to_owned));
        entry.optional &= optional;
    };
    for secret in &pod.image_pull_secrets {
        add(&secret.name, "imagePullSecrets".to_owned(), None, false);
    }
    for volume in &pod.secret_volumes {
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let optional = secret.optional.unwrap_or(false);
            add(&name, format!("volume {}", volume.name), None, optional);
        }
    }
    for var in &pod.env {
        if let Some(sel) = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            let optional = sel.optional.unwrap_or(false);
            add(
                &sel.name,
                format!("env {}", var.name),
                Some(&sel.key),
                optional,
            );
        }
    }
    for from in &pod.env_from {
        if let Some(secret) = &from.secret_ref {
            let optional = secret.optional.unwrap_or(false);
            add(&secret.name, "envFrom".to_owned(), None, optional);
        }
    }
    uses
}

/// Every Secret the inherited pod spec references must exist where the Jobs run, or their pods
/// stay Pending (`CreateContainerConfigError`, `FailedMount`, `ErrImagePull`).
pub(super) async fn secret_checks(
    client: &kube::Client,
    namespace: &str,
    pod: &InheritedPod,
) -> Vec<Check> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let source_ns = pod.namespace.as_deref().unwrap_or(namespace);
    let mut checks = Vec::new();
    for (secret, used) in secret_uses(pod) {
        let name = format!("secret {secret}");
        let check = match retry("get the Secret", || api.get_opt(&secret)).await {
            Ok(found) => judge_secret(namespace, source_ns, &secret, &used, found.as_ref()),
            Err(err) if is_status(&err, 403) => Check::warn(
                name,
                format!("cannot read Secret {namespace}/{secret}: forbidden"),
                find_rule("", "secrets", "get").map(|r| rule_fix(r, namespace)),
            ),
            Err(err) => Check::fail(
                name,
                format!("failed to get Secret {namespace}/{secret}: {err}"),
                None,
            ),
        };
        checks.push(check);
    }
    checks
}

/// The check of Secret `secret` in the Jobs' namespace from what was `found` there: it must
/// exist (unless every use is optional) with every key the pod spec reads from it.
fn judge_secret(
    namespace: &str,
    source_ns: &str,
    secret: &str,
    used: &SecretUse,
    found: Option<&Secret>,
) -> Check {
    let name = format!("secret {secret}");
    let uses = used.uses.join(", ");
    let Some(found) = found else {
        let copy = Some(copy_secret_fix(namespace, source_ns, secret, &uses));
        return if used.optional {
            Check::warn(
                name,
                format!("optional Secret {namespace}/{secret} does not exist ({uses})"),
                copy,
            )
        } else {
            Check::fail(
                name,
                format!(
                    "Secret {namespace}/{secret} does not exist ({uses}); agent pods would stay Pending"
                ),
                copy,
            )
        };
    };
    let present = |key: &String| {
        found.data.as_ref().is_some_and(|d| d.contains_key(key))
            || found
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key))
    };
    let missing: Vec<&str> = used
        .keys
        .iter()
        .filter(|key| !present(key))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Check::pass(name, format!("Secret {namespace}/{secret} exists ({uses})"));
    }
    let keys = missing.join(", ");
    Check::fail(
        name,
        format!("Secret {namespace}/{secret} has no key {keys} ({uses})"),
        Some(format!("add key {keys} to Secret {namespace}/{secret}")),
    )
}

/// How to make a missing Secret exist in the Jobs' namespace: copied from the Paperclip pod's
/// namespace when that is another one.
fn copy_secret_fix(namespace: &str, source_ns: &str, secret: &str, uses: &str) -> String {
    let copy = if source_ns == namespace {
        String::new()
    } else {
        format!(
            ", e.g. copy it from {source_ns}: `kubectl get secret -n {source_ns} {secret} -o yaml | sed 's/namespace: {source_ns}/namespace: {namespace}/' | kubectl apply -f -`"
        )
    };
    format!(
        "create Secret {secret} in namespace {namespace} (the agent pods inherit its use: {uses}){copy}"
    )
}

#[cfg(test)]
mod tests {
    use super::super::CheckStatus;
    use super::*;

    fn used(keys: &[&str], optional: bool) -> SecretUse {
        SecretUse {
            uses: vec!["env TOKEN".to_owned()],
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            optional,
        }
    }

    fn secret(keys: &[&str]) -> Secret {
        let data = keys.iter().map(|k| ((*k).to_owned(), Default::default()));
        Secret {
            data: Some(data.collect()),
            ..Secret::default()
        }
    }

    #[test]
    fn a_secret_without_a_key_the_pod_reads_fails_naming_the_key() {
        let check = judge_secret(
            "agents",
            "agents",
            "creds",
            &used(&["token", "user"], false),
            Some(&secret(&["user"])),
        );
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(
            check.fix.as_deref(),
            Some("add key token to Secret agents/creds")
        );
        let whole = judge_secret(
            "agents",
            "agents",
            "creds",
            &used(&["token"], false),
            Some(&secret(&["token"])),
        );
        assert_eq!(whole.status, CheckStatus::Pass);
    }

    #[test]
    fn a_missing_secret_fails_unless_optional_and_says_how_to_copy_it() {
        let missing = judge_secret("agents", "paperclip", "creds", &used(&[], false), None);
        assert_eq!(missing.status, CheckStatus::Fail);
        let fix = missing.fix.unwrap();
        assert!(
            fix.contains("copy it from paperclip: `kubectl get secret -n paperclip creds"),
            "{fix}"
        );
        let optional = judge_secret("agents", "agents", "creds", &used(&[], true), None);
        assert_eq!(optional.status, CheckStatus::Warn);
        assert!(!optional.fix.unwrap().contains("copy it from"));
    }
}
