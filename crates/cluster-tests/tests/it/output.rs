//! Output exactly once on a real cluster: fast interleaved streams, and API server restarts in
//! the middle of a long run.

use std::time::{Duration, Instant};

use opencode_k8s_cluster_tests::{Record, check_lines, say, tier};
use opencode_k8s_core::lifecycle::RunStatus;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{bounded, bounds, run_once};

const SESSION: &str = "ses_tierfake0000000000000000";

/// The fake agent's own measure of how fast it printed (lines per second).
fn printed_rate(output: &str, lines: u64) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.starts_with("fake-opencode: printed "))?;
    let seconds: f64 = line.rsplit(' ').nth(1)?.parse().ok()?;
    Some(lines as f64 / seconds.max(0.01))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_stdout_and_stderr_at_2000_lines_per_second_arrive_exactly_once() {
    let Some(tier) = tier("interleaved_streams").await else {
        return;
    };
    let sandbox = tier
        .sandbox("interleaved", Default::default())
        .await
        .unwrap();
    let plan = "lines=20000 rate=2600 stderr=1 every=1000";
    let outcome = run_once(
        &sandbox,
        sandbox.request("interleaved", "agent-lines", plan),
        json!({}),
        Duration::from_secs(120),
    )
    .await;
    let result = outcome.ok();
    let output = outcome.sink.output();
    let report = check_lines(&output, 20_000);
    let rate = printed_rate(&output, 20_000);
    say(&format!(
        "real-cluster tier: interleaved 20,000 lines printed at {rate:.0?} lines/s: {report}"
    ));
    outcome.succeeded();
    assert!(
        rate.is_some_and(|r| r >= 2000.0),
        "the agent printed at {rate:?} lines/s, under the 2,000 the scenario needs"
    );
    assert!(report.exact(), "{report}");
    // 20 steps in the lines and one at the end: a repeated or lost step line shows here too.
    assert_eq!(
        (result.usage.input_tokens, result.usage.output_tokens),
        (210, 42),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_server_restarts_during_a_long_run_lose_and_repeat_nothing() {
    let Some(tier) = tier("apiserver_restarts").await else {
        return;
    };
    if tier.k8s_dir.is_none() {
        say(
            "real-cluster tier: apiserver_restarts SKIPPED (no up/down scripts: set OPENCODE_K8S_TEST_K8S_DIR)",
        );
        return;
    }
    let sandbox = tier.sandbox("restarts", Default::default()).await.unwrap();
    let engine = sandbox.engine(bounds());
    let plan = format!("lines=50000 rate=850 every=1000 session={SESSION}");
    let request = sandbox.request("restarts", "agent-restarts", &plan);
    let config = sandbox.config(json!({}));
    let sink = Record::default();
    let delivered = |sink: &Record| sink.output().matches("\nline ").count();
    let restarts = async {
        let mut away = Vec::new();
        for after in [8_000, 28_000] {
            let reached = tokio::time::timeout(Duration::from_secs(90), async {
                while delivered(&sink) < after {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            if reached.is_err() {
                return Err(format!(
                    "after {} restart(s) the output stalled at {} lines for 90 s (waiting for {after})",
                    away.len(),
                    delivered(&sink)
                ));
            }
            away.push(
                tier.restart_apiserver()
                    .await
                    .expect("restart the kube-apiserver"),
            );
        }
        Ok(away)
    };
    let started = Instant::now();
    let run = bounded(
        Duration::from_secs(240),
        "the run",
        engine.run(request, &config, &sink, CancellationToken::new()),
    );
    tokio::pin!(run);
    let away = tokio::select! {
        result = &mut run => Err(match result {
            Ok(r) => format!(
                "the run ended before the second restart: {:?} (exit {:?}, code {:?}, {:?})",
                r.status, r.exit_code, r.error_code, r.usage
            ),
            Err(e) => format!("the run ended before the second restart: {} ({e})", e.code()),
        }),
        away = restarts => away,
    };
    let away = away.unwrap_or_else(|problem| {
        panic!(
            "{problem}\n{}\n{}",
            check_lines(&sink.output(), 50_000),
            sink.lines().join("\n")
        )
    });
    let result = run.await;
    let output = sink.output();
    let report = check_lines(&output, 50_000);
    say(&format!(
        "real-cluster tier: 50,000 lines in {:.0?} with the API server restarted twice (away {away:.1?}): {report}",
        started.elapsed()
    ));
    let log = sink.lines().join("\n");
    let result = result.unwrap_or_else(|err| panic!("the run reaches an outcome: {err}\n{log}"));
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}\n{log}");
    assert!(!result.timed_out, "no false timeout: {result:?}");
    assert!(report.exact(), "{report}\n{log}");
    assert_eq!(
        result.session.as_ref().map(|s| s.session_id.as_str()),
        Some(SESSION)
    );
    assert_eq!(
        (
            result.usage.input_tokens,
            result.usage.output_tokens,
            result.usage.cached_input_tokens
        ),
        (510, 102, 51),
        "usage of 51 steps, each counted once: {result:?}"
    );
    assert!((result.cost_usd - 12.75).abs() < 1e-9, "{result:?}");
}
