//! The generated RBAC objects, pinned as YAML, and checked against the verbs table.

use opencode_k8s_core::rbac::{self, RULES, RbacOptions, RbacSubject, Scope};

#[test]
fn namespaced_role_and_binding() {
    let yaml = rbac::render_yaml(&RbacOptions::default()).unwrap();
    insta::assert_snapshot!(yaml);
}

#[test]
fn cluster_role_and_binding() {
    let opts = RbacOptions {
        cluster_scoped: true,
        subject: RbacSubject::ServiceAccount {
            namespace: "paperclip".into(),
            name: "paperclip-server".into(),
        },
        ..RbacOptions::default()
    };
    let yaml = rbac::render_yaml(&opts).unwrap();
    insta::assert_snapshot!(yaml);
}

#[test]
fn every_rule_of_the_table_is_granted_in_cluster_mode() {
    let rules = rbac::policy_rules(|_| true);
    for r in RULES {
        assert!(
            rules
                .iter()
                .any(|p| p.api_groups.as_ref().unwrap()[0] == r.group
                    && p.resources.as_ref().unwrap()[0] == r.resource
                    && p.verbs.iter().any(|v| v == r.verb)),
            "{r:?} not granted"
        );
    }
    let namespaced = rbac::policy_rules(|r| r.scope == Scope::Namespaced);
    let granted: usize = namespaced.iter().map(|p| p.verbs.len()).sum();
    assert_eq!(
        granted,
        RULES
            .iter()
            .filter(|r| r.scope == Scope::Namespaced)
            .count()
    );
}
