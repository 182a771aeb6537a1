//! `opencode-k8s rbac`.

use opencode_k8s_core::rbac::{RbacOptions, render_yaml};

use crate::{run, stdout};

#[test]
fn prints_the_role_generated_from_the_verbs_table() {
    let out = run(&[
        "rbac",
        "--namespace",
        "agents",
        "--service-account",
        "pc",
        "--service-account-namespace",
        "paperclip",
    ]);
    assert!(out.status.success());
    let expected = render_yaml(&RbacOptions {
        namespace: "agents".into(),
        service_account: "pc".into(),
        service_account_namespace: "paperclip".into(),
        ..RbacOptions::default()
    })
    .unwrap();
    assert_eq!(stdout(&out), expected);
    insta::assert_snapshot!(stdout(&out));
}

#[test]
fn cluster_scoped_prints_a_cluster_role() {
    let out = run(&["rbac", "--cluster-scoped"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("kind: ClusterRole\n") && text.contains("kind: ClusterRoleBinding\n"));
    assert!(text.contains("selfsubjectaccessreviews") && text.contains("namespaces"));
}

#[test]
fn invalid_names_are_refused_with_exit_2() {
    let out = run(&["rbac", "--namespace", "Paperclip"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        crate::stderr(&out),
        "error: failed to use --namespace Paperclip: not a Kubernetes name; use lowercase letters, digits and `-`\ncode: config_invalid\nhint: README.md, Troubleshooting, `config_invalid`: what it means, what to check, how to fix it\n"
    );
}
