//! Two engines — two Paperclip replicas, or the CLI beside the server — racing for one agent on
//! a real cluster: the agent's Lease lets exactly one Job run at a time.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use opencode_k8s_cluster_tests::{PAPERCLIP_POD, say, tier};
use serde_json::json;

use crate::{bounds, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_racing_for_one_agent_run_one_job_at_a_time() {
    let Some(tier) = tier("race").await else {
        return;
    };
    let sandbox = tier.sandbox("race", Default::default()).await.unwrap();
    let (first, second) = (sandbox.engine(bounds()), sandbox.engine(bounds()));
    // Jobs are kept so their pods can tell when each agent ran.
    let config = json!({"retainJobs": true});
    let (a, b) = tokio::join!(
        run(
            &sandbox,
            &first,
            sandbox.request("race-a", "agent-race", "lines=1 sleep=3"),
            config.clone(),
            Duration::from_secs(120),
        ),
        run(
            &sandbox,
            &second,
            sandbox.request("race-b", "agent-race", "lines=1 sleep=3"),
            config,
            Duration::from_secs(120),
        ),
    );
    for outcome in [&a, &b] {
        outcome.succeeded();
    }
    let pods: Api<Pod> = Api::namespaced(tier.admin.clone(), &sandbox.ns);
    let mut spans: Vec<_> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.name.as_deref() != Some(PAPERCLIP_POD))
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let terminated = p
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|s| s.into_iter().next())
                .and_then(|s| s.state?.terminated)
                .unwrap_or_else(|| panic!("pod {name} has ended"));
            let at = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                t.map(|t| t.0)
                    .expect("a terminated container has its times")
            };
            (at(terminated.started_at), at(terminated.finished_at), name)
        })
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 2, "one Job each: {spans:?}");
    say(&format!("race: the agents ran {spans:?}"));
    assert!(
        spans[0].1 <= spans[1].0,
        "the second agent started only after the first had ended: {spans:?}"
    );
}
