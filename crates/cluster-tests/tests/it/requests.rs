//! API requests per run, counted by the real API server's audit log: flat in run length.

use std::time::{Duration, SystemTime};

use opencode_k8s_cluster_tests::{AuditLog, Sandbox, say, tier, total};
use opencode_k8s_core::lifecycle::Engine;
use serde_json::json;

use crate::{bounds, run};

async fn counted(
    sandbox: &Sandbox,
    engine: &Engine,
    audit: &AuditLog,
    run_id: &str,
    plan: &str,
) -> (std::collections::BTreeMap<String, usize>, f64) {
    let mark = audit.mark().unwrap();
    let outcome = run(
        sandbox,
        engine,
        sandbox.request(run_id, "agent-requests", plan),
        json!({}),
        Duration::from_secs(120),
    )
    .await;
    let ended = SystemTime::now();
    outcome.succeeded();
    // From the last output reaching the sink (milliseconds after the container wrote it) to
    // the result.
    let (_, last) = outcome.sink.output_span().expect("output");
    let end_to_result = ended.duration_since(last).map_or(0.0, |d| d.as_secs_f64());
    let counts = audit
        .requests_since(mark, &sandbox.engine_user())
        .await
        .unwrap();
    (counts, end_to_result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_run_do_not_grow_with_its_length() {
    let Some(tier) = tier("requests_per_run").await else {
        return;
    };
    let Some(path) = tier.audit_log.clone() else {
        say(
            "real-cluster tier: requests_per_run SKIPPED (no audit log: set OPENCODE_K8S_TEST_AUDIT_LOG)",
        );
        return;
    };
    let audit = AuditLog::new(path);
    let sandbox = tier.sandbox("requests", Default::default()).await.unwrap();
    let engine = sandbox.engine(bounds());
    let (first, _) = counted(&sandbox, &engine, &audit, "warm-up", "lines=1").await;
    let (short, short_end) = counted(&sandbox, &engine, &audit, "short", "lines=1").await;
    let (long, long_end) =
        counted(&sandbox, &engine, &audit, "long", "lines=60 rate=1 every=5").await;
    say(&format!(
        "real-cluster tier: requests per run: first {}, short {}, 60 s {}; last output -> result {short_end:.2} s and {long_end:.2} s\n  short: {short:?}\n  long: {long:?}",
        total(&first),
        total(&short),
        total(&long)
    ));
    // Two things grow with time, by design and bounded per minute: the Lease's renewal every
    // 10 s (so a dead engine's Lease expires) and a reopen of each namespace watch every 50 s
    // (so a dead connection is noticed). Nothing else may grow: no polling.
    let heartbeat = |counts: &std::collections::BTreeMap<String, usize>| {
        counts.get("update leases").copied().unwrap_or(0)
            + ["watch jobs", "watch pods", "watch events"]
                .iter()
                .map(|k| counts.get(*k).copied().unwrap_or(0))
                .sum::<usize>()
    };
    let (short_rest, long_rest) = (
        total(&short) - heartbeat(&short),
        total(&long) - heartbeat(&long),
    );
    assert!(
        long_rest.abs_diff(short_rest) <= 2,
        "a 60 s run needs about as many requests as a 1-line one, heartbeats aside:\nshort: {short:?}\nlong: {long:?}"
    );
    assert!(
        heartbeat(&long) <= heartbeat(&short) + 7 + 6,
        "at most a renewal per 10 s and a reopen of each watch per 50 s:\nshort: {short:?}\nlong: {long:?}"
    );
    // The target is 12 a run (scripts/bench measures it): 9 besides reading the log, and the
    // log read once or twice (a third connection when the kubelet cuts a stream).
    let log_reads = short.get("get pods/log").copied().unwrap_or(0);
    assert!(
        total(&short) - log_reads <= 9 && log_reads <= 3,
        "a run after another: 9 requests besides its log reads, at most 3 of those: {short:?}"
    );
}
