//! What a real v1.36 cluster (kubelet on containerd) showed and the fast tier now reproduces:
//! per-stream timestamps out of order, 403s while a restarted API server's authorizer warms up,
//! `Complete` seconds after the container ended, a run refused midway, the kubelet's own error
//! text on the log endpoint, and an agent that is PID 1.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{Bounds, RunResult, RunStatus};
use opencode_k8s_core::rbac::{RULES, Scope};
use opencode_k8s_testkit::{LogCut, Resource, Rule};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Collect, Harness, NS, request};

const BOUND: Duration = Duration::from_secs(60);

/// Run in the background; returns the sink to watch and the run's handle.
fn spawn_run(
    h: &Harness,
    bounds: Bounds,
    run_id: &str,
) -> (Collect, tokio::task::JoinHandle<RunResult>) {
    let sink = Collect::default();
    let engine = h.engine(bounds);
    let config = h.config(json!({}));
    let request = request(run_id, "agent-1");
    let task_sink = sink.clone();
    let task = tokio::spawn(async move {
        engine
            .run(request, &config, &task_sink, CancellationToken::new())
            .await
            .unwrap_or_else(|err| panic!("the run reaches an outcome: {err}"))
    });
    (sink, task)
}

/// Until the run's output contains `text` (bounded).
async fn wait_output(sink: &Collect, text: &str) {
    tokio::time::timeout(BOUND, async {
        while !sink.output().contains(text) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("output {text:?} within the bound: {:?}", sink.lines()));
}

#[tokio::test]
async fn interleaved_stdout_and_stderr_arrive_whole_across_reconnects() {
    let h = Harness::start().await;
    // Alternating streams: containerd (and testkit) stamp each stream on its own, so the merged
    // log has entries stamped earlier than the entry before them.
    h.opencode(
        "cat > /dev/null\ni=0\nwhile [ $i -lt 3000 ]; do\n  echo \"out-$i\"\n  echo \"err-$i\" >&2\n  i=$((i + 1))\n  if [ $((i % 100)) -eq 0 ]; then sleep 0.02; fi\ndone",
    );
    h.cluster.faults().cut_logs(LogCut::AfterLines(700));
    let (result, sink) = h
        .run(request("run-interleaved", "agent-1"), json!({}))
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    let output = sink.output();
    let lines: Vec<&str> = output.lines().collect();
    let unique: BTreeSet<&str> = lines.iter().copied().collect();
    let expected: BTreeSet<String> = (0..3000)
        .flat_map(|i| [format!("out-{i}"), format!("err-{i}")])
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|line| !unique.contains(line.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lines missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(lines.len(), 6000, "no line twice");
}

#[tokio::test]
async fn output_after_an_api_server_restart_is_delivered_despite_its_403s() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null\necho before\nsleep 4\necho after");
    let (sink, task) = spawn_run(&h, Bounds::default(), "run-restart");
    wait_output(&sink, "before\n").await;
    // The restart: connections drop, then every request is forbidden for a few seconds.
    h.cluster
        .faults()
        .refuse_connections(Duration::from_millis(200));
    h.cluster.faults().forbid_all(Duration::from_secs(3));
    let result = tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    assert_eq!(
        result.status,
        RunStatus::Succeeded,
        "{result:?}\n{:?}",
        sink.lines()
    );
    assert_eq!(sink.output(), "before\nafter\n");
}

#[tokio::test]
async fn output_refused_for_good_fails_the_run_and_says_so() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null\necho before\nsleep 3\necho after");
    let bounds = Bounds {
        refused: Duration::from_secs(2),
        cancel: Duration::from_secs(2),
        ..Bounds::default()
    };
    let (sink, task) = spawn_run(&h, bounds, "run-refused");
    wait_output(&sink, "before\n").await;
    h.cluster
        .faults()
        .refuse_connections(Duration::from_millis(100));
    h.cluster.faults().forbid_all(Duration::from_secs(8));
    let result = tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    assert_ne!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(
        result.error_code,
        Some(ErrorCode::K8sForbidden),
        "{result:?}"
    );
    let message = result.error_message.clone().unwrap_or_default();
    assert!(message.contains("refused for 2 s"), "{message}");
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains("the output after that point is missing")),
        "{:?}",
        sink.lines()
    );
}

#[tokio::test]
async fn the_result_follows_the_containers_end_not_the_jobs_complete() {
    let h = Harness::start().await;
    // v1.36 writes `Complete` only once the pod's finalizer is gone; make it very late.
    h.cluster.faults().job_finish_delay(Duration::from_secs(30));
    // The fake's last words: when it ended, in nanoseconds since the epoch.
    h.opencode("cat > /dev/null\ndate +%s%N\nexit 0");
    let (result, sink) = h.run(request("run-latency", "agent-1"), json!({})).await;
    let now = jiff::Timestamp::now().as_nanosecond();
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    let ended: i128 = sink.output().trim().parse().expect("the fake's end time");
    let latency = Duration::from_nanos(u64::try_from(now - ended).unwrap());
    // 0.25 s on an idle machine; the bound leaves room for a loaded one.
    assert!(
        latency < Duration::from_secs(3),
        "the run waited for Complete: {latency:?}"
    );
}

#[tokio::test]
async fn a_failed_container_is_judged_from_its_failure_target() {
    let h = Harness::start().await;
    h.cluster.faults().job_finish_delay(Duration::from_secs(30));
    h.opencode("cat > /dev/null\necho broken >&2\nexit 3");
    let started = Instant::now();
    let (result, _) = h.run(request("run-failed", "agent-1"), json!({})).await;
    assert_eq!(result.status, RunStatus::Failed, "{result:?}");
    assert_eq!(result.exit_code, Some(3));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_run_refused_midway_removes_what_it_created() {
    let h = Harness::start().await;
    // The table of verbs without `patch secrets`: the Secret and the Job get created, then the
    // owner reference is refused.
    let granted = RULES
        .iter()
        .filter(|r| !(r.verb == "patch" && r.resource == "secrets"))
        .map(|r| {
            let namespace = (r.scope == Scope::Namespaced).then_some(NS);
            Rule::allow(&[r.verb], r.group, &[r.resource], namespace)
        })
        .collect();
    h.cluster
        .add_user("no-patch-token", "paperclip-sa", granted);
    let admin = std::fs::read_to_string(h.cluster.kubeconfig_path()).unwrap();
    let kubeconfig = admin.replace(h.cluster.admin_token(), "no-patch-token");
    h.opencode("cat > /dev/null\nsleep 30");
    let sink = Collect::default();
    let err = h
        .engine(Bounds::default())
        .run(
            request("run-midway", "agent-1"),
            &h.config(json!({"kubeconfigContent": kubeconfig})),
            &sink,
            CancellationToken::new(),
        )
        .await
        .expect_err("the run is refused");
    assert_eq!(err.code(), ErrorCode::K8sForbidden, "{err}");
    assert!(err.to_string().contains("patch"), "{err}");
    let jobs = h.jobs();
    assert!(jobs.is_empty(), "no Job left: {jobs:?}");
    let secrets: Vec<_> = h
        .cluster
        .list_json(Resource::Secrets, Some(NS))
        .into_iter()
        .filter(|s| s["metadata"]["name"].as_str() != Some("paperclip-secrets"))
        .collect();
    assert!(secrets.is_empty(), "no Secret left: {secrets:?}");
}

#[tokio::test]
async fn objects_that_cannot_be_removed_are_named_in_the_error() {
    let h = Harness::start().await;
    // Neither `patch secrets` nor `delete` of anything: the run cannot clean up after itself.
    let granted = RULES
        .iter()
        .filter(|r| !(r.verb == "patch" && r.resource == "secrets") && r.verb != "delete")
        .map(|r| {
            let namespace = (r.scope == Scope::Namespaced).then_some(NS);
            Rule::allow(&[r.verb], r.group, &[r.resource], namespace)
        })
        .collect();
    h.cluster
        .add_user("no-delete-token", "paperclip-sa", granted);
    let admin = std::fs::read_to_string(h.cluster.kubeconfig_path()).unwrap();
    let kubeconfig = admin.replace(h.cluster.admin_token(), "no-delete-token");
    h.opencode("cat > /dev/null\nsleep 30");
    let sink = Collect::default();
    let err = h
        .engine(Bounds::default())
        .run(
            request("run-leftovers", "agent-1"),
            &h.config(json!({"kubeconfigContent": kubeconfig})),
            &sink,
            CancellationToken::new(),
        )
        .await
        .expect_err("the run is refused");
    let job = h.jobs()[0]["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(
        err.to_string().contains(&format!("Job {NS}/{job}"))
            && err.to_string().contains(&format!("Secret {NS}/{job}")),
        "{err}"
    );
}

#[tokio::test]
async fn the_kubelets_error_text_is_never_output() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null\necho one\necho two");
    h.cluster.faults().log_error_next(2);
    let (result, sink) = h
        .run(request("run-kubelet-text", "agent-1"), json!({}))
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(sink.output(), "one\ntwo\n");
}

#[tokio::test]
async fn a_timeout_stops_an_agent_without_a_sigterm_handler_at_once() {
    let h = Harness::start().await;
    // A fake without a handler: as PID 1 it would ignore SIGTERM for the whole grace period.
    h.opencode("cat > /dev/null\necho started\nsleep 120");
    let started = Instant::now();
    let (result, sink) = h
        .run(
            request("run-pid1", "agent-1"),
            json!({"timeoutSec": 2, "graceSec": 30}),
        )
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the stop waited for the grace period: {took:?}"
    );
    assert_eq!(result.status, RunStatus::TimedOut, "{result:?}");
    assert_eq!(sink.output(), "started\n");
}

#[tokio::test]
async fn a_fresh_retry_does_not_adopt_the_failed_attempt_still_short_of_failed() {
    let h = Harness::start().await;
    // The first attempt's Job shows `FailureTarget` but not yet `Failed` when the retry starts:
    // its pod has ended, so it neither blocks the retry nor is adopted by it.
    h.cluster
        .faults()
        .job_finish_delay(opencode_k8s_testkit::REAL_JOB_FINISH_DELAY);
    h.opencode(
        "cat > /dev/null\ncase \" $* \" in *' --session '*) echo 'Error: Session not found' >&2; exit 1;; esac\necho fresh",
    );
    let mut req = request("run-stale-real", "agent-1");
    req.resume = super::resume("ses_gone", "/paperclip/workspaces/project");
    let (result, sink) = h.run(req, json!({"retainJobs": true})).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert!(result.job_name.ends_with("-a2"), "{}", result.job_name);
    assert!(sink.output().ends_with("fresh\n"), "{}", sink.output());
}
