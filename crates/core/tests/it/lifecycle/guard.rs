//! One run per agent at a time, across concurrent executes.

use std::time::Duration;

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{Bounds, RunStatus};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Collect, Harness, NS, request};

/// A fake that records when it ran in a file on the shared volume.
fn timed(h: &Harness, seconds: &str) {
    h.opencode(&format!(
        "cat > /dev/null\necho \"start $PAPERCLIP_RUN_ID $(date +%s%N)\" >> /paperclip/workspaces/project/timeline\nsleep {seconds}\necho \"end $PAPERCLIP_RUN_ID $(date +%s%N)\" >> /paperclip/workspaces/project/timeline\necho done"
    ));
}

#[tokio::test]
async fn two_concurrent_runs_of_one_agent_run_one_after_the_other() {
    let h = Harness::start().await;
    timed(&h, "1");
    let engine = h.engine(Bounds::default());
    let config = h.config(json!({}));
    let (a, b) = (Collect::default(), Collect::default());
    let (first, second) = tokio::join!(
        engine.run(
            request("run-a", "agent-1"),
            &config,
            &a,
            CancellationToken::new()
        ),
        engine.run(
            request("run-b", "agent-1"),
            &config,
            &b,
            CancellationToken::new()
        ),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.status,
        RunStatus::Succeeded,
        "{first:?}\n{:?}",
        a.lines()
    );
    assert_eq!(
        second.status,
        RunStatus::Succeeded,
        "{second:?}\n{:?}",
        b.lines()
    );
    let timeline = std::fs::read_to_string(
        h.cluster
            .pvc_path(NS, "paperclip-data")
            .join("workspaces/project/timeline"),
    )
    .unwrap();
    let marks: Vec<(&str, &str)> = timeline
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    assert_eq!(marks.len(), 4, "{timeline}");
    assert_eq!(marks[0].0, "start");
    assert_eq!(
        marks[1],
        ("end", marks[0].1),
        "the first run ended before the second started:\n{timeline}"
    );
    assert_eq!(marks[2].0, "start");
    assert_eq!(marks[3], ("end", marks[2].1));
    let waited = [a.lines(), b.lines()].concat();
    assert!(
        waited.iter().any(|l| l.contains("waiting for Job")),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_run_blocked_past_the_bound_fails_with_the_seed_code() {
    let h = Harness::start().await;
    timed(&h, "5");
    let config = h.config(json!({}));
    let bounds = Bounds {
        concurrency_wait: Duration::from_millis(500),
        ..Bounds::default()
    };
    let first_engine = h.engine(Bounds::default());
    let second_engine = h.engine(bounds);
    let a = Collect::default();
    let first = first_engine.run(
        request("run-long", "agent-1"),
        &config,
        &a,
        CancellationToken::new(),
    );
    let second = async {
        while !a.lines().iter().any(|l| l.contains("created Job")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        second_engine
            .run(
                request("run-blocked", "agent-1"),
                &config,
                &Collect::default(),
                CancellationToken::new(),
            )
            .await
    };
    let (first, second) = tokio::join!(first, second);
    let err = second.unwrap_err();
    assert_eq!(err.code(), ErrorCode::K8sConcurrentRunBlocked);
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert_eq!(
        first.unwrap().status,
        RunStatus::Succeeded,
        "the first run is not disturbed"
    );
}

#[tokio::test]
async fn different_agents_run_side_by_side() {
    let h = Harness::start().await;
    timed(&h, "1");
    let engine = h.engine(Bounds::default());
    let config = h.config(json!({}));
    let started = std::time::Instant::now();
    let (x, y) = (Collect::default(), Collect::default());
    let (a, b) = tokio::join!(
        engine.run(
            request("run-x", "agent-x"),
            &config,
            &x,
            CancellationToken::new()
        ),
        engine.run(
            request("run-y", "agent-y"),
            &config,
            &y,
            CancellationToken::new()
        ),
    );
    assert_eq!(a.unwrap().status, RunStatus::Succeeded);
    assert_eq!(b.unwrap().status, RunStatus::Succeeded);
    let timeline = std::fs::read_to_string(
        h.cluster
            .pvc_path(NS, "paperclip-data")
            .join("workspaces/project/timeline"),
    )
    .unwrap();
    let order: Vec<&str> = timeline
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        order[..2],
        ["start", "start"],
        "both started before either ended:\n{timeline}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
