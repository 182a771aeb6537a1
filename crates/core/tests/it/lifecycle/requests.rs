//! API load: a run's requests do not grow with its length.

use std::time::Duration;

use opencode_k8s_core::lifecycle::{Bounds, Engine, RunStatus};
use opencode_k8s_testkit::{RequestCounts, Verb};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Collect, Harness, request};

async fn counted_run(h: &Harness, engine: &Engine, run_id: &str, seconds: u32) -> RequestCounts {
    h.opencode(&format!(
        "cat > /dev/null\ni=0\nwhile [ $i -lt {seconds} ]; do echo tick $i; sleep 1; i=$((i + 1)); done"
    ));
    h.cluster.reset_requests();
    let result = engine
        .run(
            request(run_id, "agent-1"),
            &h.config(json!({})),
            &Collect::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(result.status, RunStatus::Succeeded);
    // The Job is deleted in the background; let the request counts settle on the run's own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.cluster.requests()
}

fn without_logs(counts: &RequestCounts) -> u64 {
    counts.total() - counts.get(Verb::Follow, "pods/log") - counts.get(Verb::Get, "pods/log")
}

#[tokio::test]
async fn requests_per_run_do_not_grow_with_its_duration() {
    let h = Harness::start().await;
    let engine = h.engine(Bounds::default());
    counted_run(&h, &engine, "warm-up", 0).await;
    let short = counted_run(&h, &engine, "run-2s", 2).await;
    let long = counted_run(&h, &engine, "run-60s", 60).await;
    let (short_total, long_total) = (without_logs(&short), without_logs(&long));
    assert!(
        short_total <= 8,
        "a run after another of the same engine makes at most 8 requests besides logs: {short:?}"
    );
    for resource in ["jobs", "pods", "events"] {
        assert_eq!(
            short.get(Verb::Watch, resource),
            0,
            "the namespace watch of the run before is reused: {short:?}"
        );
    }
    assert_eq!(
        short.get(Verb::List, "jobs"),
        1,
        "only the guard lists the agent's Jobs; the shared watch does not list again: {short:?}"
    );
    assert_eq!(
        (
            short.get(Verb::Get, "leases"),
            short.get(Verb::Update, "leases")
        ),
        (0, 2),
        "the Lease this engine released is retaken with one replace and released with one: {short:?}"
    );
    // What grows with time is bounded per minute: a Lease renewal every 10 s and a reopen of
    // each of the three watches every 50 s (their liveness check).
    let renewals = long.get(Verb::Update, "leases") - short.get(Verb::Update, "leases");
    assert!(renewals <= 6, "one renewal per 10 s: {long:?}");
    assert!(
        long_total.abs_diff(short_total) <= 2 + 6 + 3,
        "2 s run: {short:?}\n60 s run: {long:?}"
    );
    assert!(
        long.get(Verb::Follow, "pods/log") <= 2,
        "one follow stream for a whole minute: {long:?}"
    );
}

#[tokio::test]
async fn retained_jobs_do_not_make_later_runs_costlier() {
    let h = Harness::start().await;
    // As on a real node: `Complete` comes seconds after `SuccessCriteriaMet`.
    h.cluster
        .faults()
        .job_finish_delay(opencode_k8s_testkit::REAL_JOB_FINISH_DELAY);
    let engine = h.engine(Bounds::default());
    h.opencode("cat > /dev/null\necho hi");
    let mut totals = Vec::new();
    for run in 0..4 {
        h.cluster.reset_requests();
        let result = engine
            .run(
                request(&format!("retained-{run}"), "agent-1"),
                &h.config(json!({"retainJobs": true})),
                &Collect::default(),
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let counts = h.cluster.requests();
        totals.push((without_logs(&counts), counts));
    }
    let (last, counts) = &totals[3];
    assert!(
        *last <= totals[1].0 + 1,
        "the fourth run with three Jobs retained costs what the second did: {:?}\n{counts:?}",
        totals.iter().map(|t| t.0).collect::<Vec<_>>()
    );
}
