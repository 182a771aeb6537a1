//! Security on a real cluster: PodSecurity `restricted` admits the agent pods; the generated
//! Role is enough and `doctor` names exactly what a partial one lacks; a run refused midway
//! leaves nothing behind.

use std::collections::BTreeSet;
use std::time::Duration;

use opencode_k8s_cluster_tests::{PAPERCLIP_POD, SandboxOptions, check_lines, say, tier};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{CheckStatus, ClusterSource, DoctorTarget, SelfPod, doctor};
use opencode_k8s_core::rbac::{self, RULES, Scope};
use serde_json::json;

use crate::{run_once, wait_nothing_left};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_enforcing_restricted_admits_the_run() {
    let Some(tier) = tier("restricted").await else {
        return;
    };
    let options = SandboxOptions {
        restricted: true,
        ..Default::default()
    };
    let sandbox = tier.sandbox("restricted", options).await.unwrap();
    let outcome = run_once(
        &sandbox,
        sandbox.request("restricted", "agent-restricted", "lines=10"),
        json!({}),
        Duration::from_secs(120),
    )
    .await;
    outcome.succeeded();
    assert!(!outcome.log().contains("FailedCreate"), "{}", outcome.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_with_the_generated_role_runs_and_inherits_from_the_paperclip_pod() {
    let Some(tier) = tier("generated_role").await else {
        return;
    };
    let sandbox = tier
        .sandbox("generated-role", Default::default())
        .await
        .unwrap();
    let outcome = run_once(
        &sandbox,
        sandbox.request(
            "role",
            "agent-role",
            "lines=100 stderr=1 show=TIER_INHERITED",
        ),
        json!({}),
        Duration::from_secs(120),
    )
    .await;
    outcome.succeeded();
    let report = check_lines(&outcome.sink.output(), 100);
    assert!(report.exact(), "{report}");
    assert!(
        outcome
            .sink
            .output()
            .contains("env TIER_INHERITED=from-the-paperclip-pod\n"),
        "the pod got the env of {PAPERCLIP_POD}:\n{}",
        outcome.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_half_the_rules_doctor_names_exactly_the_other_half() {
    let Some(tier) = tier("doctor_half_rules").await else {
        return;
    };
    let namespaced: Vec<_> = RULES
        .iter()
        .filter(|r| r.scope == Scope::Namespaced)
        .collect();
    let name = |r: &rbac::Rule| format!("rbac {} {}", r.verb, r.resource);
    let granted: BTreeSet<String> = namespaced.iter().step_by(2).map(|r| name(r)).collect();
    let missing: BTreeSet<String> = namespaced
        .iter()
        .map(|r| name(r))
        .filter(|n| !granted.contains(n))
        .collect();
    let options = SandboxOptions {
        rules: Some(rbac::policy_rules(|r| granted.contains(&name(r)))),
        ..Default::default()
    };
    let sandbox = tier.sandbox("doctor-half", options).await.unwrap();
    let report = doctor(
        &DoctorTarget {
            source: ClusterSource::KubeconfigPath(sandbox.kubeconfig.clone()),
            namespace: Some(sandbox.ns.clone()),
        },
        &SelfPod::Named {
            namespace: sandbox.ns.clone(),
            name: PAPERCLIP_POD.into(),
        },
    )
    .await;
    let failed: BTreeSet<String> = report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("rbac ") && c.status == CheckStatus::Fail)
        .map(|c| c.name.clone())
        .collect();
    say(&format!(
        "real-cluster tier: doctor with {} of {} rules names {} missing",
        granted.len(),
        namespaced.len(),
        failed.len()
    ));
    assert_eq!(failed, missing, "{:#?}", report.checks);
    for check in report.checks.iter().filter(|c| missing.contains(&c.name)) {
        let fix = check.fix.as_deref().unwrap_or_default();
        let (_, verb_resource) = check.name.split_at("rbac ".len());
        let (verb, resource) = verb_resource.split_once(' ').unwrap_or_default();
        assert!(
            fix.contains(verb) && fix.contains(resource),
            "{check:?} names the rule to add"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_midway_leaves_nothing_behind() {
    let Some(tier) = tier("refused_midway").await else {
        return;
    };
    let options = SandboxOptions {
        rules: Some(rbac::policy_rules(|r| {
            r.scope == Scope::Namespaced && (r.resource, r.verb) != ("secrets", "patch")
        })),
        ..Default::default()
    };
    let sandbox = tier.sandbox("refused-midway", options).await.unwrap();
    let outcome = run_once(
        &sandbox,
        sandbox.request("refused", "agent-refused", "lines=1"),
        json!({}),
        Duration::from_secs(120),
    )
    .await;
    let left = wait_nothing_left(&sandbox, Duration::from_secs(60)).await;
    say(&format!(
        "real-cluster tier: refused_midway (no `patch secrets`): {:?}, cleaned up {left:.1?} after the result",
        outcome.code()
    ));
    assert_eq!(
        outcome.code(),
        Some(ErrorCode::K8sForbidden),
        "{:?}\n{}",
        outcome.result,
        outcome.log()
    );
    // Refused at the ownerReference patch, after the Secret and the Job were created.
    assert!(outcome.message().contains("patch"), "{}", outcome.message());
}
