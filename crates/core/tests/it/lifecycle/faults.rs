//! Faults: cut log streams, API errors, dropped watches, an engine that goes away mid-run. No
//! output lost, none repeated, no false result.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use opencode_k8s_core::event::RunEvent;
use opencode_k8s_core::lifecycle::{Bounds, RunStatus, follow_pod_output};
use opencode_k8s_testkit::{LogCut, Verb};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Collect, Harness, request, succeeded};

/// A fake that writes `lines` numbered lines, pausing briefly every 20, and the text the process
/// wrote, for comparison. (One stream only: across stdout and stderr, Kubernetes — and testkit —
/// order lines by when they were read, not written.)
fn numbered(h: &Harness, lines: u32) -> String {
    h.opencode(&format!(
        "cat > /dev/null\ni=0\nwhile [ $i -lt {lines} ]; do\n  echo \"line $i padding-padding-padding\"\n  i=$((i + 1))\n  if [ $((i % 20)) -eq 0 ]; then sleep 0.1; fi\ndone\nprintf 'last line without newline'"
    ));
    let mut expected: String = (0..lines)
        .map(|i| format!("line {i} padding-padding-padding\n"))
        .collect();
    expected.push_str("last line without newline");
    expected
}

fn assert_no_line_twice(output: &str) {
    let mut seen = HashSet::new();
    for line in output.lines() {
        assert!(seen.insert(line), "line delivered twice: {line:?}");
    }
}

#[tokio::test]
async fn a_log_stream_cut_twenty_times_loses_and_repeats_nothing() {
    let h = Harness::start().await;
    let expected = numbered(&h, 800);
    h.cluster
        .faults()
        .cut_logs(LogCut::Every(Duration::from_millis(100)));
    let sink = Collect::default();
    let result = h
        .engine(Bounds::default())
        .run(
            request("run-cut", "agent-1"),
            &h.config(json!({})),
            &sink,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    let opens = h.cluster.requests().get(Verb::Follow, "pods/log");
    assert!(
        opens > 20,
        "the stream was cut at least 20 times ({opens} follow opens)"
    );
    assert_eq!(
        sink.output(),
        expected,
        "byte-identical to what the process wrote"
    );
    assert_no_line_twice(&sink.output());
}

#[tokio::test]
async fn api_errors_and_dropped_watches_give_the_right_result_not_a_timeout() {
    let h = Harness::start().await;
    let expected = numbered(&h, 400);
    let faults = h.cluster.faults().clone();
    for verb in [Verb::List, Verb::Watch, Verb::Get] {
        faults.fail_next(verb, "jobs", 3, 503);
        faults.fail_next(verb, "pods", 2, 500);
    }
    faults.fail_next(Verb::Watch, "events", 2, 429);
    let sink = Collect::default();
    let engine = h.engine(Bounds::default());
    let config = h.config(json!({}));
    let run = engine.run(
        request("run-flaky", "agent-1"),
        &config,
        &sink,
        CancellationToken::new(),
    );
    let chaos = async {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            faults.close_watches();
            faults.fail_next(Verb::Watch, "jobs", 2, 503);
        }
    };
    let (result, ()) = tokio::join!(run, chaos);
    let result = succeeded(result, &sink);
    assert!(!result.timed_out);
    assert_eq!(sink.output(), expected);
}

#[tokio::test]
async fn a_new_engine_continues_a_run_from_the_hosts_checkpoint_without_repeating_a_line() {
    let h = Harness::start().await;
    let expected = numbered(&h, 400);
    let config = h.config(json!({}));
    let first = Collect::default();
    {
        let engine = h.engine(Bounds::default());
        let run = engine.run(
            request("run-restart", "agent-1"),
            &config,
            &first,
            CancellationToken::new(),
        );
        let halfway = async {
            while first.output().lines().count() < 100 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        // The host process goes away mid-run: the run future is dropped, the Job keeps going.
        tokio::select! {
            _ = run => panic!("the run must still be going"),
            () = halfway => {}
        }
    }
    let checkpoint = first
        .events()
        .iter()
        .rev()
        .find_map(|e| match e {
            RunEvent::Output { checkpoint, .. } => checkpoint.clone(),
            _ => None,
        })
        .expect("output carries checkpoints");
    assert_eq!(h.jobs().len(), 1, "the Job survives its host");
    let second = Collect::default();
    let result = h
        .engine(Bounds::default())
        .reattach(
            request("run-restart", "agent-1"),
            &config,
            &checkpoint,
            &second,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    let combined = first.output() + &second.output();
    assert_eq!(
        combined, expected,
        "together, the two hosts delivered everything once"
    );
    assert!(
        second.lines().iter().any(|l| l.contains("reattaching")),
        "{:?}",
        second.lines()
    );
}

#[tokio::test]
async fn refused_connections_mid_run_are_ridden_out() {
    let h = Harness::start().await;
    let expected = numbered(&h, 300);
    let faults = Arc::new(h.cluster.faults().clone());
    let sink = Collect::default();
    let engine = h.engine(Bounds::default());
    let config = h.config(json!({}));
    let run = engine.run(
        request("run-refused", "agent-1"),
        &config,
        &sink,
        CancellationToken::new(),
    );
    let outage = async {
        while sink.output().lines().count() < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        faults.refuse_connections(Duration::from_millis(500));
    };
    let (result, ()) = tokio::join!(run, outage);
    let result = result.unwrap();
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(sink.output(), expected);
}

#[tokio::test]
async fn following_a_pod_from_outside_a_run_is_exactly_once_through_cuts() {
    let h = Harness::start().await;
    let expected = numbered(&h, 400);
    h.cluster
        .faults()
        .cut_logs(LogCut::Every(Duration::from_millis(100)));
    // The run keeps its Job and pod: once a pod is deleted its log is gone for every reader, and
    // the run's own cleanup would race the outside follower's last read.
    let config = h.config(json!({"retainJobs": true}));
    let engine = h.engine(Bounds::default());
    let run_sink = Collect::default();
    let run = engine.run(
        request("run-watched", "agent-1"),
        &config,
        &run_sink,
        CancellationToken::new(),
    );
    let watcher = async {
        let pod = loop {
            let pods = h
                .cluster
                .list_json(opencode_k8s_testkit::Resource::Pods, Some(super::NS));
            if let Some(name) = pods
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .find(|name| name.starts_with("oc-"))
            {
                break name.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let client = h.client().await;
        let sink = Collect::default();
        follow_pod_output(&client, super::NS, &pod, &sink, &CancellationToken::new())
            .await
            .unwrap();
        sink.output()
    };
    let (result, followed) = tokio::join!(run, watcher);
    assert_eq!(result.unwrap().status, RunStatus::Succeeded);
    assert_eq!(
        followed, expected,
        "the whole output, once, despite the cuts"
    );
}

/// A sink as slow as a busy host: every output chunk takes 20 ms.
#[derive(Default, Clone)]
struct SlowSink(Collect);

impl opencode_k8s_core::event::RunSink for SlowSink {
    fn emit(&self, event: RunEvent) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            if matches!(event, RunEvent::Output { .. }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.0.emit(event).await;
        })
    }
}

#[tokio::test]
async fn a_slow_sink_still_gets_the_whole_output_after_the_container_ended() {
    let h = Harness::start().await;
    h.opencode(
        "cat > /dev/null\ni=0\nwhile [ $i -lt 200 ]; do printf 'line %d ' $i; head -c 20000 /dev/zero | tr '\\0' x; echo; i=$((i + 1)); done",
    );
    let bounds = Bounds {
        settle: Duration::from_secs(1),
        ..Bounds::default()
    };
    let sink = SlowSink::default();
    let result = h
        .engine(bounds)
        .run(
            request("run-slow-sink", "agent-1"),
            &h.config(json!({})),
            &sink,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(result.status, RunStatus::Succeeded);
    let output = sink.0.output();
    assert_eq!(
        output.lines().count(),
        200,
        "every line, though delivery outlasts the settle time"
    );
    assert!(output.lines().last().unwrap().starts_with("line 199 "));
}
