//! The one table of Kubernetes verbs the engine uses, and the RBAC objects generated from it.
//!
//! The seed adapter's README listed fewer verbs than its code used, so every run failed closed
//! (DESIGN.md §6.8). Here the table is the source: `opencode-k8s rbac`, the doctor's access
//! checks, the docs and `deploy/` are all generated from [`RULES`], and tests keep them in sync.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// Whether a resource lives in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Granted by a Role in the agents' namespace.
    Namespaced,
    /// Only a ClusterRole can grant it.
    Cluster,
}

/// One verb on one resource, and why the engine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// API group; `""` is the core group.
    pub group: &'static str,
    /// Resource, with subresource after `/` (`pods/log`).
    pub resource: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// Runs work without it (only `doctor` is less precise).
    pub optional: bool,
    /// What the engine does with it.
    pub why: &'static str,
}

const fn rule(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    why: &'static str,
) -> Rule {
    Rule {
        group,
        resource,
        verb,
        scope: Scope::Namespaced,
        optional: false,
        why,
    }
}

/// Every verb the engine uses.
pub const RULES: &[Rule] = &[
    rule("batch", "jobs", "create", "create the Job of a run"),
    rule(
        "batch",
        "jobs",
        "get",
        "read the Job a retried create found already there (the same run created it)",
    ),
    rule(
        "batch",
        "jobs",
        "list",
        "find the agent's Jobs (one run at a time, orphans to adopt), gc and `jobs`; the Job watch starts with a list",
    ),
    rule(
        "batch",
        "jobs",
        "watch",
        "follow a Job to Complete or Failed instead of polling",
    ),
    rule(
        "batch",
        "jobs",
        "delete",
        "stop a cancelled run or an orphan, take back a run refused midway, gc finished Jobs",
    ),
    rule(
        "",
        "pods",
        "get",
        "read the Paperclip pod the agent pods inherit from (image, env, volumes, the /paperclip claim)",
    ),
    rule(
        "",
        "pods",
        "list",
        "the pod watch starts by listing the Job's pod by its job-name label",
    ),
    rule(
        "",
        "pods",
        "watch",
        "see the pod start, fail to pull, or terminate as it happens",
    ),
    rule(
        "",
        "pods/log",
        "get",
        "stream the agent's output into the Paperclip run log",
    ),
    rule(
        "",
        "secrets",
        "create",
        "create the per-run Secret holding the prompt and keys",
    ),
    rule(
        "",
        "secrets",
        "get",
        "read the per-run Secret's uid to make it the NetworkPolicy's owner; doctor: check the inherited Secrets exist",
    ),
    rule(
        "",
        "secrets",
        "list",
        "gc of per-run Secrets whose Job is gone",
    ),
    rule(
        "",
        "secrets",
        "delete",
        "delete the per-run Secret when its Job could not be created, and gc's orphaned Secrets",
    ),
    rule(
        "",
        "secrets",
        "patch",
        "set the Secret's ownerReference to its Job (JSON merge patch) so it is garbage-collected with it",
    ),
    Rule {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verb: "create",
        scope: Scope::Namespaced,
        optional: true,
        why: "create the run's default-deny egress NetworkPolicy; only agents with `networkPolicy: true` need it",
    },
    rule(
        "",
        "events",
        "list",
        "the event watch starts with a list: explain a stuck pod (FailedScheduling, FailedMount, ...)",
    ),
    rule(
        "",
        "events",
        "watch",
        "show Kubernetes events in the run log as they happen",
    ),
    rule(
        "coordination.k8s.io",
        "leases",
        "get",
        "read the agent's Lease: who follows its Jobs, and whether that process is still alive",
    ),
    rule(
        "coordination.k8s.io",
        "leases",
        "create",
        "create the agent's Lease the first time one of its runs starts",
    ),
    rule(
        "coordination.k8s.io",
        "leases",
        "update",
        "take, renew and release the agent's Lease (one process at a time creates and follows its Jobs)",
    ),
    rule(
        "coordination.k8s.io",
        "leases",
        "list",
        "gc: find the agents' Leases nobody holds any more",
    ),
    rule(
        "coordination.k8s.io",
        "leases",
        "delete",
        "gc: delete a Lease nobody has held for --older-than (the agent's next run creates it again)",
    ),
    rule(
        "",
        "persistentvolumeclaims",
        "get",
        "doctor: check the shared /paperclip claim",
    ),
    Rule {
        group: "",
        resource: "namespaces",
        verb: "get",
        scope: Scope::Cluster,
        optional: true,
        why: "doctor: tell a missing namespace from missing permissions",
    },
    Rule {
        group: "authorization.k8s.io",
        resource: "selfsubjectaccessreviews",
        verb: "create",
        scope: Scope::Cluster,
        optional: true,
        why: "doctor: check each rule of this table; every authenticated user has it by default (system:basic-user)",
    },
];

/// Who the binding grants the role to: whoever runs the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RbacSubject {
    /// The ServiceAccount the Paperclip server runs as.
    ServiceAccount {
        /// Namespace of the ServiceAccount (usually Paperclip's).
        namespace: String,
        /// Name of the ServiceAccount.
        name: String,
    },
    /// A user as the API server authenticates it (a certificate's CN, an OIDC claim).
    User(String),
    /// A group of users.
    Group(String),
}

impl RbacSubject {
    /// The subject of a RoleBinding or ClusterRoleBinding.
    fn to_subject(&self) -> Subject {
        let (kind, name, namespace) = match self {
            Self::ServiceAccount { namespace, name } => {
                ("ServiceAccount", name, Some(namespace.clone()))
            }
            Self::User(name) => ("User", name, None),
            Self::Group(name) => ("Group", name, None),
        };
        Subject {
            kind: kind.into(),
            name: name.clone(),
            namespace,
            // Users and groups are of the RBAC API group; a ServiceAccount is of the core one.
            api_group: (kind != "ServiceAccount").then(|| "rbac.authorization.k8s.io".into()),
        }
    }
}

impl std::fmt::Display for RbacSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServiceAccount { namespace, name } => {
                write!(f, "ServiceAccount {namespace}/{name}")
            }
            Self::User(name) => write!(f, "User {name}"),
            Self::Group(name) => write!(f, "Group {name}"),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacOptions {
    /// Namespace of the agent Jobs (and of the Role/RoleBinding).
    pub namespace: String,
    /// Who runs the engine (the binding's subject).
    pub subject: RbacSubject,
    /// Generate a ClusterRole and ClusterRoleBinding instead of a Role and RoleBinding.
    pub cluster_scoped: bool,
    /// Name of the generated role and binding.
    pub name: String,
}

impl Default for RbacOptions {
    fn default() -> Self {
        Self {
            namespace: "paperclip".into(),
            subject: RbacSubject::ServiceAccount {
                namespace: "paperclip".into(),
                name: "paperclip".into(),
            },
            cluster_scoped: false,
            name: "opencode-k8s".into(),
        }
    }
}

/// Failed to serialize the RBAC objects (a bug: the objects are fixed shapes).
#[derive(Debug, thiserror::Error)]
#[error("failed to write RBAC YAML: {0}")]
pub struct RbacError(#[from] serde_saphyr::SerializeError);

/// Policy rules for the table entries `include` selects: one per (group, resource), verbs sorted.
pub fn policy_rules(include: impl Fn(&Rule) -> bool) -> Vec<PolicyRule> {
    let mut grouped: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for r in RULES.iter().filter(|r| include(r)) {
        grouped
            .entry((r.group, r.resource))
            .or_default()
            .push(r.verb);
    }
    grouped
        .into_iter()
        .map(|((group, resource), mut verbs)| {
            verbs.sort_unstable();
            verbs.dedup();
            PolicyRule {
                api_groups: Some(vec![group.to_owned()]),
                resources: Some(vec![resource.to_owned()]),
                verbs: verbs.into_iter().map(str::to_owned).collect(),
                ..Default::default()
            }
        })
        .collect()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        crate::manifest::MANAGED_BY_KEY.to_owned(),
        crate::manifest::MANAGED_BY_VALUE.to_owned(),
    )])
}

/// The RBAC objects as a multi-document YAML string with a comment header.
///
/// Namespaced: a Role with the namespaced rules and a RoleBinding; the cluster-scoped rules are
/// listed in the header (both are optional). Cluster-scoped: a ClusterRole with every rule and a
/// ClusterRoleBinding.
pub fn render_yaml(opts: &RbacOptions) -> Result<String, RbacError> {
    let mut out = String::from(
        "# RBAC for opencode-k8s, generated from its table of verbs (opencode-k8s rbac).\n",
    );
    let docs = if opts.cluster_scoped {
        out.push_str(&format!(
            "# ClusterRole: agent Jobs in any namespace, run by {}.\n",
            opts.subject
        ));
        cluster_docs(opts)?
    } else {
        out.push_str(&format!(
            "# Role in namespace {}, run by {}.\n# Not included (cluster-scoped, optional; use --cluster-scoped to grant them):\n",
            opts.namespace, opts.subject
        ));
        for r in RULES.iter().filter(|r| r.scope == Scope::Cluster) {
            let group = if r.group.is_empty() { "core" } else { r.group };
            out.push_str(&format!(
                "#   {} {} ({group}): {}\n",
                r.verb, r.resource, r.why
            ));
        }
        namespaced_docs(opts)?
    };
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// A ClusterRole with every rule and its binding, as YAML documents.
fn cluster_docs(opts: &RbacOptions) -> Result<Vec<String>, RbacError> {
    let meta = ObjectMeta {
        name: Some(opts.name.clone()),
        labels: Some(labels()),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: meta.clone(),
        rules: Some(policy_rules(|_| true)),
        aggregation_rule: None,
    };
    let binding = ClusterRoleBinding {
        metadata: meta,
        role_ref: role_ref("ClusterRole", opts),
        subjects: Some(vec![opts.subject.to_subject()]),
    };
    Ok(vec![
        serde_saphyr::to_string(&role)?,
        serde_saphyr::to_string(&binding)?,
    ])
}

/// A Role with the namespaced rules in the agents' namespace and its binding, as YAML
/// documents.
fn namespaced_docs(opts: &RbacOptions) -> Result<Vec<String>, RbacError> {
    let meta = ObjectMeta {
        name: Some(opts.name.clone()),
        namespace: Some(opts.namespace.clone()),
        labels: Some(labels()),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(policy_rules(|r| r.scope == Scope::Namespaced)),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: role_ref("Role", opts),
        subjects: Some(vec![opts.subject.to_subject()]),
    };
    Ok(vec![
        serde_saphyr::to_string(&role)?,
        serde_saphyr::to_string(&binding)?,
    ])
}

fn role_ref(kind: &str, opts: &RbacOptions) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: opts.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicates_and_every_rule_says_why() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RULES {
            assert!(
                seen.insert((r.group, r.resource, r.verb)),
                "duplicate {r:?}"
            );
            assert!(!r.why.is_empty());
        }
    }

    #[test]
    fn rules_group_per_resource_with_sorted_verbs() {
        let rules = policy_rules(|r| r.scope == Scope::Namespaced);
        let jobs = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["jobs".to_owned()][..]))
            .unwrap();
        assert_eq!(jobs.api_groups.as_deref(), Some(&["batch".to_owned()][..]));
        assert_eq!(jobs.verbs, ["create", "delete", "get", "list", "watch"]);
        assert!(
            !rules
                .iter()
                .any(|r| r.resources.as_ref().unwrap()[0] == "namespaces")
        );
    }

    #[test]
    fn users_and_groups_are_bound_with_the_rbac_api_group() {
        for (subject, kind) in [
            (RbacSubject::User("alice@example.com".into()), "User"),
            (RbacSubject::Group("paperclip-operators".into()), "Group"),
        ] {
            let opts = RbacOptions {
                subject: subject.clone(),
                ..RbacOptions::default()
            };
            let yaml = render_yaml(&opts).unwrap();
            assert!(yaml.contains(&format!("run by {subject}.")), "{yaml}");
            let binding: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
            let subjects = &binding[1]["subjects"];
            assert_eq!(subjects[0]["kind"], kind);
            assert_eq!(subjects[0]["apiGroup"], "rbac.authorization.k8s.io");
            assert!(subjects[0].get("namespace").is_none());
        }
    }

    #[test]
    fn the_verbs_the_seed_forgot_are_granted() {
        let yaml = render_yaml(&RbacOptions::default()).unwrap();
        for needle in ["- list", "pods/log", "- patch"] {
            assert!(yaml.contains(needle), "{needle} missing:\n{yaml}");
        }
    }
}
