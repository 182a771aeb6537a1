//! `opencode-k8s doctor` against the simulated cluster: an admin passes everything; a
//! restricted service account sees the failing row with the rule to add, and exit status 1.

use opencode_k8s_testkit::Rule;
use serde_json::Value;

use crate::sim::{NS, POD, Sim};
use crate::{stderr, stdout};

/// The report with the run-specific kubeconfig path replaced.
fn redacted(text: &str, kubeconfig: &str) -> String {
    text.replace(kubeconfig, "<kubeconfig>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_passes_every_check() {
    let sim = Sim::start().await;
    let out = sim
        .cli(&["doctor", "--kubeconfig", sim.kubeconfig(), "--pod", POD])
        .await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = redacted(&stdout(&out), sim.kubeconfig());
    assert!(!text.contains("WARN") && !text.contains("FAIL"), "{text}");
    insta::assert_snapshot!("doctor_admin", text);

    let out = sim
        .cli(&[
            "doctor",
            "--kubeconfig",
            sim.kubeconfig(),
            "--pod",
            POD,
            "--json",
        ])
        .await;
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["namespace"], NS);
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["status"] == "pass"), "{report}");
    assert_eq!(checks[0]["name"], "api");
    assert!(checks[0]["detail"].as_str().unwrap().contains("v1.36"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_account_sees_the_rule_to_add() {
    let sim = Sim::start().await;
    sim.cluster.add_user(
        "no-logs",
        "paperclip-sa",
        vec![
            Rule::allow(&["*"], "batch", &["jobs"], Some(NS)),
            Rule::allow(
                &["*"],
                "",
                &["pods", "secrets", "events", "persistentvolumeclaims"],
                Some(NS),
            ),
        ],
    );
    let kubeconfig = sim.kubeconfig_for("no-logs");
    let kubeconfig = kubeconfig.to_str().unwrap();
    let out = sim
        .cli(&["doctor", "--kubeconfig", kubeconfig, "-n", NS, "--pod", POD])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = redacted(&stdout(&out), kubeconfig);
    assert!(
        text.contains("\nFAIL  rbac get pods/log ")
            && text.contains("\n      fix: add this rule to the Role bound to kubeconfig user kube-sim-admin of kubeconfig file <kubeconfig> in namespace paperclip (`opencode-k8s rbac --namespace paperclip` prints the whole Role):\n           - apiGroups: [\"\"]\n             resources: [\"pods/log\"]\n             verbs: [\"get\"]\n"),
        "{text}"
    );
    insta::assert_snapshot!("doctor_restricted", text);
}
