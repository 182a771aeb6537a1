//! Isolation on a real cluster: from inside an agent pod only its workspace and its own home are
//! visible on the shared claim, and the tenancy options (a RuntimeClass, the per-run egress
//! NetworkPolicy, a read-only root filesystem) are accepted by the real API server and kubelet.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use opencode_k8s_cluster_tests::{AuditLog, say, tier};
use serde_json::json;

use crate::run_once;

/// Plants `contents` at `relative` under the claim's directory on the node (the tier runs there).
fn plant(claim: &Path, relative: &str, contents: &str) -> std::io::Result<()> {
    let path = claim.join(relative);
    std::fs::create_dir_all(path.parent().expect("a file below the claim"))?;
    std::fs::write(path, contents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pod_sees_only_its_workspace_and_its_home() {
    let Some(tier) = tier("isolation").await else {
        return;
    };
    let sandbox = tier.sandbox("isolation", Default::default()).await.unwrap();
    let claim = tier.claim_host_dir();
    // What else lives on a Paperclip instance's volume: another company's code, the server's
    // secrets key, the adapter plugins the server loads.
    let tag = sandbox.ns.clone();
    for (relative, contents) in [
        (format!("workspaces/other-{tag}/secret-code.txt"), "theirs"),
        (format!("instances/{tag}/secrets/master.key"), "key"),
        (format!("adapter-plugins/{tag}/index.js"), "plugin"),
        (format!("workspaces/tier/mine-{tag}.txt"), "mine"),
    ] {
        plant(claim, &relative, contents).unwrap();
    }
    let outcome = run_once(
        &sandbox,
        sandbox.request("isolation", "agent-isolation", "list=/paperclip lines=1"),
        json!({}),
        Duration::from_secs(120),
    )
    .await;
    outcome.succeeded();
    let output = outcome.sink.output();
    let seen: Vec<String> = output
        .lines()
        .filter_map(|l| l.strip_prefix("seen ").map(str::to_owned))
        .collect();
    say(&format!(
        "isolation: the agent pod sees {} paths under /paperclip",
        seen.len()
    ));
    assert!(
        seen.contains(&format!("/paperclip/workspaces/tier/mine-{tag}.txt")),
        "its own workspace is there: {seen:?}"
    );
    let home = "/paperclip/.opencode-k8s/";
    for path in &seen {
        let allowed = path == "/paperclip"
            || path == "/paperclip/workspaces"
            || path.starts_with("/paperclip/workspaces/tier")
            || path.starts_with(home)
            || home.starts_with(&format!("{path}/"));
        assert!(allowed, "the agent pod can see {path}: {seen:?}");
    }
    assert!(
        seen.iter().any(|p| p.starts_with(home)),
        "its home is there: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_class_network_policy_and_read_only_root_run_on_a_real_node() {
    let Some(tier) = tier("tenancy").await else {
        return;
    };
    let sandbox = tier.sandbox("tenancy", Default::default()).await.unwrap();
    // containerd's default handler, under a RuntimeClass of this test's own.
    let class_name = format!("{}-runc", sandbox.ns);
    let classes: Api<RuntimeClass> = Api::all(tier.admin.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": class_name}, "handler": "runc"}))
                .unwrap(),
        )
        .await
        .unwrap();
    let audit = tier.audit_log.clone().map(AuditLog::new);
    let mark = audit.as_ref().map(|a| a.mark().unwrap());
    let outcome = run_once(
        &sandbox,
        sandbox.request("tenancy", "agent-tenancy", "lines=5"),
        json!({
            "runtimeClassName": class_name,
            "networkPolicy": true,
            "networkPolicyEgress": ["10.0.0.0/8:443"],
            "readOnlyRootFilesystem": true,
        }),
        Duration::from_secs(120),
    )
    .await;
    let cleanup = classes.delete(&class_name, &DeleteParams::default()).await;
    outcome.succeeded();
    assert!(
        outcome.sink.output().contains("line 5 out"),
        "the agent ran: {}",
        outcome.sink.output()
    );
    cleanup.unwrap();
    match (audit, mark) {
        (Some(audit), Some(mark)) => {
            let counts = audit
                .requests_since(mark, &sandbox.engine_user())
                .await
                .unwrap();
            assert_eq!(
                counts.get("create networkpolicies"),
                Some(&1),
                "the run created its NetworkPolicy: {counts:?}"
            );
        }
        _ => say("tenancy: the NetworkPolicy create not counted (no audit log)"),
    }
}
