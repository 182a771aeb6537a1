//! Restarts and replicas: two engines (two processes, as far as the cluster can tell) share an
//! agent through its Lease; a process that dies leaves an orphan the next run harvests before
//! running its own prompt; nobody waits on a Job nobody follows.

use std::time::Duration;

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{Bounds, Engine, RunStatus};
use opencode_k8s_core::parse::OutputParser;
use opencode_k8s_testkit::{Resource, TIMELINE, TIMELINE_AGENT, Verb, assert_each_ran_alone};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Collect, Harness, NS, fixture, request, succeeded};

const SESSION: &str = "ses_de2d87857ffeYcorR0xMgtIWlV";

/// Short enough that a test waits for an expiry in seconds.
fn bounds() -> Bounds {
    Bounds {
        lease: Duration::from_secs(2),
        ..Bounds::default()
    }
}

/// A fake that prints its arguments and prompt, then — for a prompt starting with `long` — one
/// line every 0.1 s for `lines` lines, then the captured OpenCode run1 (session, usage, cost).
fn fake(h: &Harness, lines: u32) {
    let run1 = h.file("run1.jsonl", &fixture("opencode/run1.stdout.jsonl"));
    h.opencode(&format!(
        "prompt=$(cat)\necho \"args: $*\"\necho \"prompt: $prompt\"\ncase \"$prompt\" in long*)\n  i=0\n  while [ $i -lt {lines} ]; do echo \"orphan line $i\"; sleep 0.1; i=$((i + 1)); done;;\nesac\ncat {}",
        run1.display()
    ));
}

/// Start a run of `long` work on an engine, wait for its first output, then drop the engine
/// and the run without any cleanup — a host process killed mid-run.
async fn orphan(h: &Harness, task_key: Option<&str>) {
    let engine = h.engine(bounds());
    let mut req = request("run-before-restart", "agent-1");
    req.task_key = task_key.map(str::to_owned);
    req.prompt = "long work".into();
    let sink = Collect::default();
    let config = h.config(json!({}));
    let run = engine.run(req, &config, &sink, CancellationToken::new());
    let started = async {
        while !sink.output().contains("orphan line") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = run => panic!("the run must still be going"),
        started = tokio::time::timeout(Duration::from_secs(20), started) => started.expect("the orphan's output starts"),
    }
}

fn run1_usage() -> (u64, f64) {
    let mut parser = OutputParser::new();
    parser.feed(&fixture("opencode/run1.stdout.jsonl"));
    let out = parser.finish(Some(0));
    (out.usage.output_tokens, out.cost_usd)
}

async fn next_run_harvests_the_orphan_then_runs_its_own_prompt(task_key: Option<&str>) {
    let h = Harness::start().await;
    fake(&h, 30);
    orphan(&h, Some("task-7")).await;
    let mut next = request("run-after-restart", "agent-1");
    next.task_key = task_key.map(str::to_owned);
    next.prompt = "my own prompt".into();
    let sink = Collect::default();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        h.engine(bounds())
            .run(next, &h.config(json!({})), &sink, CancellationToken::new()),
    )
    .await
    .expect("the next run does not wait on the orphan")
    .unwrap();
    assert_eq!(
        result.status,
        RunStatus::Succeeded,
        "{result:?}\n{:?}",
        sink.lines()
    );
    let output = sink.output();
    let orphan_end = output.find("orphan line 29").expect(&output);
    let own = output.find("prompt: my own prompt").expect(&output);
    assert!(
        orphan_end < own,
        "the orphan's output, then the own prompt's:\n{output}"
    );
    assert!(
        output.contains("prompt: long work"),
        "the orphan's output from its start: {output}"
    );
    assert!(
        output[orphan_end..].contains(&format!("--session {SESSION}")),
        "the own prompt continues the session the orphan produced:\n{output}"
    );
    let lines = sink.lines();
    assert!(
        lines.iter().any(|l| l.contains("nobody follows it")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("harvested orphaned Job") && l.contains("own prompt")),
        "{lines:?}"
    );
    let (tokens, cost) = run1_usage();
    assert_eq!(
        result.usage.output_tokens,
        2 * tokens,
        "the orphan's usage is recorded with this run's"
    );
    assert!((result.cost_usd - 2.0 * cost).abs() < 1e-9, "{result:?}");
    assert_eq!(
        result.attempts, 1,
        "the orphan is not an attempt of this run"
    );
    assert_eq!(h.cluster.requests().get(Verb::Create, "jobs"), 2);
    for job in h.jobs() {
        h.wait_gone(
            Resource::Jobs,
            job["metadata"]["name"].as_str().unwrap(),
            "both Jobs are cleaned up",
        )
        .await;
    }
}

#[tokio::test]
async fn the_next_run_of_the_same_task_harvests_the_orphan_then_runs_its_own_prompt() {
    next_run_harvests_the_orphan_then_runs_its_own_prompt(Some("task-7")).await;
}

#[tokio::test]
async fn a_run_without_task_key_harvests_the_orphan_instead_of_waiting_on_it() {
    next_run_harvests_the_orphan_then_runs_its_own_prompt(None).await;
}

#[tokio::test]
async fn cancelling_a_run_that_adopted_an_orphan_ends_the_orphan() {
    let h = Harness::start().await;
    fake(&h, 6000);
    orphan(&h, Some("task-7")).await;
    let orphan_job = h.jobs()[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let sink = Collect::default();
    let cancel = CancellationToken::new();
    let engine = h.engine(bounds());
    let config = h.config(json!({}));
    let run = engine.run(
        request("run-after-restart", "agent-1"),
        &config,
        &sink,
        cancel.clone(),
    );
    let cancel_once_adopted = async {
        while !sink.lines().iter().any(|l| l.contains("nobody follows it")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
    };
    let (result, ()) = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join(run, cancel_once_adopted),
    )
    .await
    .expect("the run ends");
    let result = result.unwrap();
    assert_eq!(result.status, RunStatus::Cancelled, "{:?}", sink.lines());
    h.wait_gone(Resource::Jobs, &orphan_job, "the orphan Job is deleted")
        .await;
    assert_eq!(
        h.cluster.requests().get(Verb::Create, "jobs"),
        1,
        "the cancelled run's own prompt never started"
    );
}

#[tokio::test]
async fn two_engines_racing_for_one_agent_run_one_job_at_a_time() {
    let h = Harness::start().await;
    h.opencode(TIMELINE_AGENT);
    let (a, b): (Engine, Engine) = (h.engine(bounds()), h.engine(bounds()));
    let config = h.config(json!({}));
    let sinks: Vec<Collect> = (0..4).map(|_| Collect::default()).collect();
    let runs = sinks.iter().enumerate().map(|(i, sink)| {
        let engine = if i % 2 == 0 { &a } else { &b };
        engine.run(
            request(&format!("run-{i}"), "agent-1"),
            &config,
            sink,
            CancellationToken::new(),
        )
    });
    h.cluster.reset_requests();
    let results = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(runs))
        .await
        .expect("all four runs end");
    for (result, sink) in results.into_iter().zip(&sinks) {
        succeeded(result, sink);
    }
    let timeline =
        std::fs::read_to_string(h.cluster.pvc_path(NS, "paperclip-data").join(TIMELINE)).unwrap();
    assert_each_ran_alone(&timeline, 4);
    let counts = h.cluster.requests();
    assert_eq!(counts.get(Verb::Create, "jobs"), 4, "{counts:?}");
    assert_eq!(
        h.cluster.list_json(Resource::Leases, Some(NS)).len(),
        1,
        "one Lease per agent, however many raced to create it: {counts:?}"
    );
}

#[tokio::test]
async fn a_job_whose_holder_is_alive_is_waited_for_up_to_the_bound_naming_the_holder() {
    let h = Harness::start().await;
    fake(&h, 6000);
    let engine = h.engine(bounds());
    let config = h.config(json!({}));
    let holder = Collect::default();
    let cancel_holder = CancellationToken::new();
    let mut long = request("run-long", "agent-1");
    long.prompt = "long work".into();
    let holding = engine.run(long, &config, &holder, cancel_holder.clone());
    let blocked = h.engine(Bounds {
        concurrency_wait: Duration::from_secs(3),
        ..bounds()
    });
    let waiter = Collect::default();
    let second = async {
        while !holder.output().contains("orphan line") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = blocked
            .run(
                request("run-blocked", "agent-1"),
                &config,
                &waiter,
                CancellationToken::new(),
            )
            .await;
        cancel_holder.cancel();
        waited
    };
    let (held, waited) = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join(holding, second),
    )
    .await
    .expect("both end");
    let err = waited.expect_err("a live holder is waited for, up to the bound");
    assert_eq!(err.code(), ErrorCode::K8sConcurrentRunBlocked, "{err}");
    assert!(
        waiter
            .lines()
            .iter()
            .any(|l| l.contains("waiting for Job") && l.contains("run-long")),
        "the wait names the Job and its holder: {:?}",
        waiter.lines()
    );
    assert_eq!(held.unwrap().status, RunStatus::Cancelled);
}

#[tokio::test]
async fn the_fresh_retry_after_a_stale_session_gets_the_full_prompt_not_the_resume_prompt() {
    let h = Harness::start().await;
    let out = h.file("run1.jsonl", &fixture("opencode/run1.stdout.jsonl"));
    let stale = h.file(
        "stale.txt",
        &fixture("opencode/run6-bogus-session.stderr.txt"),
    );
    h.opencode(&format!(
        "prompt=$(cat)\necho \"prompt: $prompt\"\ncase \" $* \" in *' --session '*) cat {} >&2; exit 1;; esac\ncat {}",
        stale.display(),
        out.display()
    ));
    let mut req = request("run-stale", "agent-1");
    req.resume = super::resume("ses_gone", "/paperclip/workspaces/project");
    req.prompt = "short resume prompt".into();
    req.fresh_prompt = Some("full fresh prompt".into());
    let (result, sink) = h.run(req, json!({})).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 2);
    let output = sink.output();
    let resumed = output.find("prompt: short resume prompt").expect(&output);
    let fresh = output.find("prompt: full fresh prompt").expect(&output);
    assert!(resumed < fresh, "{output}");
}

#[tokio::test]
async fn a_holder_whose_lease_was_taken_over_stops_following_and_leaves_the_job() {
    use k8s_openapi::api::coordination::v1::Lease;
    let h = Harness::start().await;
    fake(&h, 6000);
    let engine = h.engine(bounds());
    let config = h.config(json!({}));
    let sink = Collect::default();
    let mut long = request("run-long", "agent-1");
    long.prompt = "long work".into();
    let run = engine.run(long, &config, &sink, CancellationToken::new());
    let take_over = async {
        while !sink.output().contains("orphan line") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let client = h.client().await;
        let leases: kube::Api<Lease> = kube::Api::namespaced(client, NS);
        let name = opencode_k8s_core::manifest::agent_lease_name("agent-1");
        // Another process took the Lease while this one stalled (no renewal reached it).
        let mut lease = leases.get(&name).await.unwrap();
        lease.spec.as_mut().unwrap().holder_identity = Some("other-host/1.1/run-other".into());
        leases
            .replace(&name, &kube::api::PostParams::default(), &lease)
            .await
            .unwrap();
    };
    let (result, ()) = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join(run, take_over),
    )
    .await
    .expect("the run stops once its renewal finds the new holder");
    let err = result.expect_err("losing the Lease ends following");
    assert_eq!(err.code(), ErrorCode::K8sConcurrentRunBlocked, "{err}");
    assert_eq!(
        h.jobs().len(),
        1,
        "the Job is left to the new holder, not deleted"
    );
    assert!(
        h.jobs()[0]["metadata"]["deletionTimestamp"].is_null(),
        "{:?}",
        h.jobs()
    );
}
