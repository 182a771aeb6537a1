//! `doctor` against the simulated cluster: everything passes for an admin; a restricted
//! service account, a claim that is not ReadWriteMany and a missing Secret each fail with the
//! exact change to make.

use opencode_k8s_core::lifecycle::RunStatus;
use opencode_k8s_core::lifecycle::{
    CheckStatus, ClusterSource, DoctorReport, DoctorTarget, SelfPod, doctor,
};
use opencode_k8s_core::rbac::{RULES, Scope};
use opencode_k8s_testkit::{Resource, Rule};
use serde_json::json;

use super::{Harness, NS, fixture, request};

fn paperclip() -> SelfPod {
    SelfPod::Named {
        namespace: NS.into(),
        name: "paperclip".into(),
    }
}

fn target(h: &Harness) -> DoctorTarget {
    DoctorTarget {
        source: ClusterSource::KubeconfigPath(h.cluster.kubeconfig_path().to_owned()),
        namespace: None,
    }
}

/// The cluster's kubeconfig with the admin token swapped for `token`, as inline content.
fn as_user(h: &Harness, token: &str) -> DoctorTarget {
    let admin = std::fs::read_to_string(h.cluster.kubeconfig_path()).unwrap();
    DoctorTarget {
        source: ClusterSource::KubeconfigContent(admin.replace(h.cluster.admin_token(), token)),
        namespace: Some(NS.into()),
    }
}

fn check<'a>(report: &'a DoctorReport, name: &str) -> &'a opencode_k8s_core::lifecycle::Check {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#?}"))
}

/// Every check of `report` passed.
fn assert_all_passed(report: &DoctorReport) {
    let not_passed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status != CheckStatus::Pass)
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
}

/// The check `name` failed, its detail saying `detail`; what it says to do.
fn failed<'a>(report: &'a DoctorReport, name: &str, detail: &str) -> &'a str {
    let check = check(report, name);
    assert_eq!(check.status, CheckStatus::Fail, "{check:#?}");
    assert!(check.detail.contains(detail), "{check:#?}");
    check
        .fix
        .as_deref()
        .expect("a failed check says what to do")
}

#[tokio::test]
async fn an_admin_with_a_seeded_paperclip_pod_passes_every_check() {
    let h = Harness::start().await;
    let report = doctor(&target(&h), &paperclip()).await;
    assert_all_passed(&report);
    assert!(!report.failed());
    assert_eq!(report.namespace.as_deref(), Some(NS));
    let rbac_rows = report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("rbac "))
        .count();
    assert_eq!(rbac_rows, RULES.len(), "one access review per verb");
    assert!(
        check(&report, "secret paperclip-secrets")
            .detail
            .contains("envFrom"),
        "{report:#?}"
    );
    assert!(
        check(&report, "shared volume")
            .detail
            .contains("paperclip-data")
    );
}

#[tokio::test]
async fn a_denied_verb_fails_with_the_rule_to_add() {
    let h = Harness::start().await;
    let everything_but_logs = vec![
        Rule::allow(&["*"], "batch", &["jobs"], Some(NS)),
        Rule::allow(
            &["*"],
            "",
            &["pods", "secrets", "events", "persistentvolumeclaims"],
            Some(NS),
        ),
        Rule::allow(&["*"], "coordination.k8s.io", &["leases"], Some(NS)),
    ];
    h.cluster
        .add_user("restricted-token", "restricted", everything_but_logs);
    let report = doctor(&as_user(&h, "restricted-token"), &paperclip()).await;
    assert!(report.failed());
    let logs = check(&report, "rbac get pods/log");
    assert_eq!(logs.status, CheckStatus::Fail);
    assert!(
        logs.fix
            .as_deref()
            .unwrap()
            .ends_with("- apiGroups: [\"\"]\n  resources: [\"pods/log\"]\n  verbs: [\"get\"]"),
        "{logs:#?}"
    );
    // Cluster-scoped reads are optional: a warning, with the ClusterRole rule.
    let namespace = check(&report, "namespace");
    assert_eq!(namespace.status, CheckStatus::Warn, "{namespace:#?}");
    assert!(namespace.fix.as_deref().unwrap().contains("ClusterRole"));
    assert_eq!(
        check(&report, "rbac get namespaces").status,
        CheckStatus::Warn
    );
    assert_eq!(check(&report, "rbac create jobs").status, CheckStatus::Pass);
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["rbac get pods/log"]);
}

#[tokio::test]
async fn a_claim_that_is_not_read_write_many_and_a_missing_secret_fail_with_the_fix() {
    let h = Harness::start().await;
    h.cluster
        .create(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "single-node", "namespace": NS},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
    h.cluster
        .create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "paperclip-rwo", "namespace": NS},
            "spec": {
                "imagePullSecrets": [{"name": "regcred"}],
                "containers": [{
                    "name": "paperclip", "image": "paperclip:1",
                    "command": ["sh", "-c", "exec sleep 2147483647"],
                    "volumeMounts": [{"name": "data", "mountPath": "/paperclip"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "single-node"}}],
            },
        }))
        .unwrap();
    let pod = SelfPod::Named {
        namespace: NS.into(),
        name: "paperclip-rwo".into(),
    };
    let report = doctor(&target(&h), &pod).await;
    let fix = failed(&report, "shared volume", "ReadWriteOnce");
    assert!(fix.contains("spec.accessModes: [ReadWriteMany]"), "{fix}");
    let fix = failed(&report, "secret regcred", "imagePullSecrets");
    assert!(
        fix.starts_with("create Secret regcred in namespace paperclip"),
        "{fix}"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_one_failed_check() {
    let h = Harness::start().await;
    let admin = std::fs::read_to_string(h.cluster.kubeconfig_path()).unwrap();
    let closed = admin.replace(h.cluster.url(), "http://127.0.0.1:9");
    let target = DoctorTarget {
        source: ClusterSource::KubeconfigContent(closed),
        namespace: None,
    };
    let report = doctor(&target, &paperclip()).await;
    assert_eq!(report.checks.len(), 1, "{report:#?}");
    assert_eq!(report.checks[0].name, "api");
    assert_eq!(report.checks[0].status, CheckStatus::Fail);
}

/// The table of verbs is complete: an account granted exactly its rows (nothing else) passes
/// every check and runs an agent from start to cleanup — the seed's README granted fewer verbs
/// than its code used, and every run failed closed.
#[tokio::test]
async fn exactly_the_rules_of_the_table_are_enough_to_run() {
    let h = Harness::start().await;
    let granted = RULES
        .iter()
        .map(|r| {
            let namespace = (r.scope == Scope::Namespaced).then_some(NS);
            Rule::allow(&[r.verb], r.group, &[r.resource], namespace)
        })
        .collect();
    h.cluster.add_user("table-token", "paperclip-sa", granted);
    let report = doctor(&as_user(&h, "table-token"), &paperclip()).await;
    assert_all_passed(&report);

    let admin = std::fs::read_to_string(h.cluster.kubeconfig_path()).unwrap();
    let kubeconfig = admin.replace(h.cluster.admin_token(), "table-token");
    let out = h.file("run1.jsonl", &fixture("opencode/run1.stdout.jsonl"));
    h.opencode(&format!("cat > /dev/null; cat {}", out.display()));
    let (result, sink) = h
        .run(
            request("run-table", "agent-1"),
            json!({"kubeconfigContent": kubeconfig}),
        )
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", sink.lines());
    assert_eq!(
        sink.output().as_bytes(),
        fixture("opencode/run1.stdout.jsonl")
    );
    h.wait_gone(
        Resource::Jobs,
        &result.job_name,
        "the Job is cleaned up with the table's verbs",
    )
    .await;
}
