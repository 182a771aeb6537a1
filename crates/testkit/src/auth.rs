//! Bearer-token authentication and RBAC-like authorization: each token maps to a user and a
//! rule set; every request and every SelfSubjectAccessReview is answered from the same rules.

use std::collections::HashMap;
use std::sync::RwLock;

/// One allow rule, like a Role rule bound in one namespace. `"*"` matches anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `*`).
    pub verbs: Vec<String>,
    /// API groups (`""` core, `batch`, `*`).
    pub groups: Vec<String>,
    /// Resources, with subresources as `pods/log` (`*` for all).
    pub resources: Vec<String>,
    /// The namespace this rule applies in; `None` means every namespace and cluster scope
    /// (a ClusterRoleBinding).
    pub namespace: Option<String>,
}

impl Rule {
    /// A rule allowing `verbs` on `resources` of `group` in `namespace` (`None`: everywhere).
    pub fn allow(verbs: &[&str], group: &str, resources: &[&str], namespace: Option<&str>) -> Rule {
        Rule {
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            groups: vec![group.to_owned()],
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            namespace: namespace.map(str::to_owned),
        }
    }

    /// Everything, everywhere (cluster-admin).
    pub fn admin() -> Rule {
        Rule::allow(&["*"], "*", &["*"], None)
    }

    fn matches(&self, a: &Attributes<'_>) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        any(&self.verbs, a.verb)
            && any(&self.groups, a.group)
            && any(&self.resources, a.resource)
            && match (&self.namespace, a.namespace) {
                (None, _) => true,
                (Some(rule_ns), Some(ns)) => rule_ns == ns,
                (Some(_), None) => false,
            }
    }
}

/// What a request wants to do, in RBAC terms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attributes<'a> {
    /// Kubernetes verb.
    pub(crate) verb: &'a str,
    /// API group.
    pub(crate) group: &'a str,
    /// Resource, `pods/log` for a subresource.
    pub(crate) resource: &'a str,
    /// Namespace, if namespaced.
    pub(crate) namespace: Option<&'a str>,
}

/// A user known by token.
#[derive(Clone, Debug)]
pub(crate) struct User {
    /// The user name shown in 403 messages and SSAR reasons.
    pub(crate) name: String,
    /// What the user may do.
    pub(crate) rules: Vec<Rule>,
}

impl User {
    /// The rule allowing `attrs`, if any.
    pub(crate) fn allows(&self, attrs: &Attributes<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(attrs))
    }
}

/// Token → user table.
#[derive(Debug, Default)]
pub(crate) struct Authenticator {
    users: RwLock<HashMap<String, User>>,
}

impl Authenticator {
    /// Adds or replaces the user behind `token`.
    pub(crate) fn add(&self, token: &str, user: User) {
        self.users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), user);
    }

    /// The user behind an `Authorization: Bearer` header value, if known.
    pub(crate) fn authenticate(&self, header: Option<&str>) -> Option<User> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        self.users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_rules_do_not_leak_to_other_namespaces() {
        let user = User {
            name: "limited".into(),
            rules: vec![Rule::allow(
                &["create", "get"],
                "batch",
                &["jobs"],
                Some("jobs-test"),
            )],
        };
        let attrs = |ns| Attributes {
            verb: "create",
            group: "batch",
            resource: "jobs",
            namespace: Some(ns),
        };
        assert!(user.allows(&attrs("jobs-test")).is_some());
        assert!(user.allows(&attrs("other")).is_none());
        assert!(
            User {
                name: "a".into(),
                rules: vec![Rule::admin()]
            }
            .allows(&attrs("other"))
            .is_some()
        );
    }

    #[test]
    fn unknown_tokens_are_not_authenticated() {
        let auth = Authenticator::default();
        auth.add(
            "t1",
            User {
                name: "u".into(),
                rules: vec![],
            },
        );
        assert!(auth.authenticate(Some("Bearer t1")).is_some());
        assert!(auth.authenticate(Some("Bearer nope")).is_none());
        assert!(auth.authenticate(None).is_none());
    }
}
