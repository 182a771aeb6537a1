//! Each way a run fails on a real cluster gives its stable error code (DESIGN.md §7b).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use opencode_k8s_cluster_tests::{SandboxOptions, say, tier};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::RunStatus;
use serde_json::{Value, json};

use crate::{Outcome, run_once};

/// One run of `plan` with `config` in a fresh sandbox.
async fn outcome(
    test: &str,
    options: SandboxOptions,
    plan: &str,
    config: Value,
) -> Option<Outcome> {
    let tier = tier(test).await?;
    let sandbox = tier.sandbox(test, options).await.unwrap();
    let outcome = run_once(
        &sandbox,
        sandbox.request(test, &format!("agent-{}", test.replace('_', "-")), plan),
        config,
        Duration::from_secs(150),
    )
    .await;
    say(&format!(
        "real-cluster tier: {test}: {:?} in {:.1?}",
        outcome.code(),
        outcome.took
    ));
    Some(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonzero_exit_is_opencode_failed_with_its_code() {
    let Some(outcome) = outcome("exit_code", Default::default(), "lines=3 exit=3", json!({})).await
    else {
        return;
    };
    let result = outcome.ok();
    assert_eq!(
        (result.status, result.exit_code, result.error_code),
        (RunStatus::Failed, Some(3), Some(ErrorCode::OpencodeFailed)),
        "{result:?}\n{}",
        outcome.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_kill_is_k8s_oom_killed() {
    let config = json!({"resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "32Mi"}}});
    let Some(outcome) = outcome("oom", Default::default(), "lines=1 oom=256", config).await else {
        return;
    };
    assert_eq!(
        outcome.code(),
        Some(ErrorCode::K8sOomKilled),
        "{:?}\n{}",
        outcome.result,
        outcome.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_is_k8s_image_pull_failed() {
    let config = json!({"image": "local/opencode-k8s-tier-missing:1"});
    let Some(outcome) = outcome("image_pull", Default::default(), "lines=1", config).await else {
        return;
    };
    assert_eq!(
        outcome.code(),
        Some(ErrorCode::K8sImagePullFailed),
        "{:?}\n{}",
        outcome.result,
        outcome.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_secret_that_is_gone_is_k8s_container_config_error() {
    let Some(tier) = tier("missing_secret").await else {
        return;
    };
    let options = SandboxOptions {
        paperclip_env: vec![
            serde_json::from_value(json!({
                "name": "LLM_KEY",
                "valueFrom": {"secretKeyRef": {"name": "llm-keys", "key": "anthropic"}},
            }))
            .unwrap(),
        ],
        secrets: BTreeMap::from([(
            "llm-keys".to_owned(),
            BTreeMap::from([("anthropic".to_owned(), "sk-tier".to_owned())]),
        )]),
        ..Default::default()
    };
    let sandbox = tier.sandbox("missing-secret", options).await.unwrap();
    // The Paperclip pod started with the Secret; it is deleted before the agent's pod needs it.
    Api::<Secret>::namespaced(tier.admin.clone(), &sandbox.ns)
        .delete("llm-keys", &Default::default())
        .await
        .unwrap();
    let outcome = run_once(
        &sandbox,
        sandbox.request("missing-secret", "agent-secret", "lines=1"),
        json!({}),
        Duration::from_secs(150),
    )
    .await;
    say(&format!(
        "real-cluster tier: missing_secret: {:?} in {:.1?}",
        outcome.code(),
        outcome.took
    ));
    assert_eq!(
        outcome.code(),
        Some(ErrorCode::K8sContainerConfigError),
        "{:?}\n{}",
        outcome.result,
        outcome.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_is_timeout() {
    let Some(outcome) = outcome(
        "timeout",
        Default::default(),
        "lines=2 sleep=300",
        json!({"timeoutSec": "5"}),
    )
    .await
    else {
        return;
    };
    let result = outcome.ok();
    assert_eq!(
        (result.status, result.error_code, result.timed_out),
        (RunStatus::TimedOut, Some(ErrorCode::Timeout), true),
        "{result:?}\n{}",
        outcome.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_no_node_fits_is_k8s_pod_unschedulable() {
    let config = json!({"nodeSelector": {"opencode-k8s-tier/no-such-node": "true"}});
    let Some(outcome) = outcome("unschedulable", Default::default(), "lines=1", config).await
    else {
        return;
    };
    assert_eq!(
        outcome.code(),
        Some(ErrorCode::K8sPodUnschedulable),
        "{:?}\n{}",
        outcome.result,
        outcome.log()
    );
    assert!(
        outcome.log().contains("FailedScheduling"),
        "the scheduler's reason is in the run log:\n{}",
        outcome.log()
    );
}
