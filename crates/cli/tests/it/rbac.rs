//! `opencode-k8s rbac`.

use opencode_k8s_core::rbac::{RbacOptions, RbacSubject, render_yaml};

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
        subject: RbacSubject::ServiceAccount {
            namespace: "paperclip".into(),
            name: "pc".into(),
        },
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

#[test]
fn a_user_or_a_group_can_be_the_subject() {
    let out = run(&[
        "rbac",
        "--namespace",
        "agents",
        "--user",
        "alice@example.com",
    ]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("# Role in namespace agents, run by User alice@example.com.\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: alice@example.com\n"
        ),
        "{text}"
    );
    assert!(!text.contains("ServiceAccount"), "{text}");

    let out = run(&["rbac", "--cluster-scoped", "--group", "platform-team"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("kind: ClusterRoleBinding\n"), "{text}");
    assert!(
        text.contains("subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: platform-team\n"),
        "{text}"
    );
    assert!(text.contains("run by Group platform-team."), "{text}");
}

#[test]
fn a_user_and_a_service_account_cannot_both_be_the_subject() {
    let out = run(&["rbac", "--user", "alice", "--service-account", "pc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out)
            .contains("'--user <USER>' cannot be used with '--service-account <SERVICE_ACCOUNT>'"),
        "{}",
        crate::stderr(&out)
    );
    let out = run(&["rbac", "--group", " "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out)
            .starts_with("error: failed to use --group  : empty or has control characters"),
        "{}",
        crate::stderr(&out)
    );
}
