//! Whole runs: success, failure codes, resume and its self-healing, cleanup, cancel.

use std::time::Duration;

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{Bounds, RunStatus};
use opencode_k8s_testkit::Resource;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Collect, Harness, NS, fixture, request, resume, run_error};

const SESSION: &str = "ses_de2d87857ffeYcorR0xMgtIWlV";

/// A fake that prints a captured OpenCode run and exits as it did.
fn replay(h: &Harness, name: &str, rc: i32) {
    let out = h.file(
        &format!("{name}.jsonl"),
        &fixture(&format!("opencode/{name}.stdout.jsonl")),
    );
    h.opencode(&format!(
        "cat > /dev/null; cat {}; exit {rc}",
        out.display()
    ));
}

#[tokio::test]
async fn a_successful_run_delivers_its_output_and_result_and_cleans_up() {
    let h = Harness::start().await;
    replay(&h, "run1", 0);
    let (result, sink) = h.run(request("run-ok", "agent-1"), json!({})).await;
    assert_eq!(
        result.status,
        RunStatus::Succeeded,
        "{result:?}\n{:?}",
        sink.lines()
    );
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(
        sink.output().as_bytes(),
        fixture("opencode/run1.stdout.jsonl")
    );
    assert_eq!(
        result.session.as_ref().map(|s| s.session_id.as_str()),
        Some(SESSION)
    );
    assert_eq!(
        result.session.as_ref().and_then(|s| s.cwd.as_deref()),
        Some("/paperclip/workspaces/project")
    );
    assert_eq!(result.error_code, None::<ErrorCode>);
    assert_eq!(result.summary.as_deref(), Some("Hi! I am the fake model."));
    assert_eq!(
        (result.provider.as_str(), result.model.as_str()),
        ("fake", "fake-model")
    );
    let lines = sink.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[k8s] Normal Started pod/")),
        "{lines:?}"
    );
    h.wait_gone(
        Resource::Jobs,
        &result.job_name,
        "the Job is deleted after the run",
    )
    .await;
    h.wait_gone(
        Resource::Secrets,
        &result.job_name,
        "its Secret goes with it",
    )
    .await;
}

#[tokio::test]
async fn retain_jobs_keeps_the_job_but_not_the_secret() {
    let h = Harness::start().await;
    replay(&h, "run1", 0);
    let (result, _) = h
        .run(request("run-keep", "agent-1"), json!({"retainJobs": true}))
        .await;
    assert_eq!(result.status, RunStatus::Succeeded);
    let job = h
        .cluster
        .get_json(Resource::Jobs, NS, &result.job_name)
        .expect("the Job is kept");
    assert!(
        job["spec"]["ttlSecondsAfterFinished"].is_null(),
        "no TTL on a retained Job"
    );
    assert!(
        h.cluster
            .get_json(Resource::Secrets, NS, &result.job_name)
            .is_none(),
        "the prompt and token do not stay behind"
    );
}

#[tokio::test]
async fn an_llm_error_fails_with_the_providers_message() {
    let h = Harness::start().await;
    replay(&h, "run8-http401", 1);
    let (result, _) = h.run(request("run-401", "agent-1"), json!({})).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.exit_code, Some(1));
    assert_eq!(result.error_code, Some(ErrorCode::LlmApiError));
    let message = result.error_message.unwrap();
    assert!(message.contains("401"), "{message}");
}

#[tokio::test]
async fn a_nonzero_exit_without_an_error_event_keeps_the_stderr_tail() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null; echo 'plain output'; printf '\\033[31mError: disk on fire\\033[0m\\n' >&2; exit 3");
    let (result, sink) = h.run(request("run-exit3", "agent-1"), json!({})).await;
    assert_eq!(
        (result.status, result.exit_code),
        (RunStatus::Failed, Some(3))
    );
    assert_eq!(result.error_code, Some(ErrorCode::OpencodeFailed));
    assert!(
        result.output_tail.contains("Error: disk on fire"),
        "{:?}",
        result.output_tail
    );
    assert!(
        !result.output_tail.contains('\u{1b}'),
        "ANSI codes are stripped"
    );
    assert!(sink.output().contains("plain output\n"));
}

#[tokio::test]
async fn resuming_in_the_same_cwd_passes_the_session() {
    let h = Harness::start().await;
    let out = h.file("run2.jsonl", &fixture("opencode/run2-resume.stdout.jsonl"));
    h.opencode(&format!(
        "cat > /dev/null; echo \"args: $*\" >&2; cat {}",
        out.display()
    ));
    let mut req = request("run-resume", "agent-1");
    req.resume = resume(SESSION, "/paperclip/workspaces/project");
    let (result, sink) = h.run(req, json!({})).await;
    assert_eq!(result.status, RunStatus::Succeeded);
    assert!(
        sink.output().contains(&format!("--session {SESSION}")),
        "{}",
        sink.output()
    );
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains(&format!("resuming session {SESSION}")))
    );
}

#[tokio::test]
async fn a_changed_cwd_starts_fresh_and_says_why() {
    let h = Harness::start().await;
    let out = h.file("run1.jsonl", &fixture("opencode/run1.stdout.jsonl"));
    h.opencode(&format!(
        "cat > /dev/null; echo \"args: $*\" >&2; cat {}",
        out.display()
    ));
    let mut req = request("run-moved", "agent-1");
    req.resume = resume("ses_old", "/paperclip/workspaces/elsewhere");
    let (result, sink) = h.run(req, json!({})).await;
    assert_eq!(result.status, RunStatus::Succeeded);
    assert!(!sink.output().contains("--session"), "{}", sink.output());
    let lines = sink.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ses_old") && l.contains("/paperclip/workspaces/elsewhere")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_stale_session_is_retried_fresh_in_the_same_run() {
    let h = Harness::start().await;
    let out = h.file("run1.jsonl", &fixture("opencode/run1.stdout.jsonl"));
    let stale = String::from_utf8(fixture("opencode/run6-bogus-session.stderr.txt")).unwrap();
    let stale = h.file("stale.txt", stale.as_bytes());
    h.opencode(&format!(
        "cat > /dev/null\ncase \" $* \" in *' --session '*) cat {} >&2; exit 1;; esac\ncat {}",
        stale.display(),
        out.display()
    ));
    let mut req = request("run-stale", "agent-1");
    req.resume = resume("ses_gone", "/paperclip/workspaces/project");
    let (result, sink) = h.run(req, json!({})).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert_eq!(
        result.session.map(|s| s.session_id),
        Some(SESSION.to_owned()),
        "the new session is reported"
    );
    assert!(!result.clear_session);
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains("ses_gone no longer exists")),
        "{:?}",
        sink.lines()
    );
    assert!(h.jobs().is_empty(), "both attempts' Jobs are cleaned up");
}

#[tokio::test]
async fn a_resume_that_hangs_silently_is_retried_fresh() {
    let h = Harness::start().await;
    let out = h.file("run1.jsonl", &fixture("opencode/run1.stdout.jsonl"));
    h.opencode(&format!(
        "cat > /dev/null\ncase \" $* \" in *' --session '*) exec sleep 600;; esac\ncat {}",
        out.display()
    ));
    let mut req = request("run-hang", "agent-1");
    req.resume = resume("ses_elsewhere", "/paperclip/workspaces/project");
    let bounds = Bounds {
        resume_first_event: Duration::from_secs(2),
        ..Bounds::default()
    };
    let sink = Collect::default();
    let result = h
        .engine(bounds)
        .run(req, &h.config(json!({})), &sink, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains("printed nothing for 2 s")),
        "{:?}",
        sink.lines()
    );
}

#[tokio::test]
async fn the_deadline_times_the_run_out() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null; echo working; exec sleep 600");
    let (result, _) = h
        .run(request("run-slow", "agent-1"), json!({"timeoutSec": 2}))
        .await;
    assert_eq!(result.status, RunStatus::TimedOut, "{result:?}");
    assert!(result.timed_out);
    assert_eq!(result.error_code, Some(ErrorCode::Timeout));
}

#[tokio::test]
async fn oom_killed_is_reported_as_such() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null; exec sleep 600");
    h.cluster.faults().oom_after("*", "allocating\n");
    let (result, _) = h.run(request("run-oom", "agent-1"), json!({})).await;
    assert_eq!(
        result.error_code,
        Some(ErrorCode::K8sOomKilled),
        "{result:?}"
    );
    assert_eq!(result.exit_code, Some(137));
    assert!(
        result
            .error_message
            .unwrap()
            .contains("resources.limits.memory")
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_once_the_kubelet_keeps_failing() {
    let h = Harness::start().await;
    h.cluster.faults().image_pull_fail("does-not-exist");
    let bounds = Bounds {
        blocked: Duration::from_secs(2),
        ..Bounds::default()
    };
    let started = std::time::Instant::now();
    let (result, _) = h
        .run_bounded(
            bounds,
            request("run-pull", "agent-1"),
            json!({"image": "registry.example/does-not-exist:1"}),
        )
        .await;
    assert_eq!(
        result.error_code,
        Some(ErrorCode::K8sImagePullFailed),
        "{result:?}"
    );
    let message = result.error_message.unwrap_or_default();
    assert!(
        message.contains("ErrImagePull") && message.contains("registry.example/does-not-exist:1"),
        "{message}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "a pull that fails once is retried by the kubelet: the run waits out the grace"
    );
    assert!(h.jobs().is_empty(), "the Job is deleted");
}

#[tokio::test]
async fn an_unschedulable_pod_fails_with_the_schedulers_reason_once_it_lasts() {
    let h = Harness::start().await;
    h.cluster.faults().unschedulable("*");
    let bounds = Bounds {
        unschedulable: Duration::from_secs(1),
        ..Bounds::default()
    };
    let (result, _) = h
        .run_bounded(bounds, request("run-nosched", "agent-1"), json!({}))
        .await;
    assert_eq!(
        result.error_code,
        Some(ErrorCode::K8sPodUnschedulable),
        "{result:?}"
    );
    assert!(
        result
            .error_message
            .unwrap_or_default()
            .contains("pod cannot be scheduled"),
        "the scheduler's reason is kept"
    );
    assert!(h.jobs().is_empty());
}

#[tokio::test]
async fn a_stale_session_with_retained_jobs_still_retries_fresh() {
    let h = Harness::start().await;
    let out = h.file("run1.jsonl", &fixture("opencode/run1.stdout.jsonl"));
    h.opencode(&format!(
        "cat > /dev/null\ncase \" $* \" in *' --session '*) echo 'Error: Session not found' >&2; exit 1;; esac\ncat {}",
        out.display()
    ));
    let mut req = request("run-stale-kept", "agent-1");
    req.resume = resume("ses_gone", "/paperclip/workspaces/project");
    let (result, sink) = h.run(req, json!({"retainJobs": true})).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert!(
        result.job_name.ends_with("-a2"),
        "the retry ran its own Job: {}",
        result.job_name
    );
    assert_eq!(
        sink.output().matches("Error: Session not found").count(),
        1,
        "the first attempt's output is delivered once"
    );
    assert_eq!(h.jobs().len(), 2, "both attempts' Jobs are retained");
}

#[tokio::test]
async fn a_secret_that_cannot_be_owned_takes_its_job_back() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null; exec sleep 600");
    h.cluster
        .faults()
        .fail_next(opencode_k8s_testkit::Verb::Patch, "secrets", 20, 500);
    let err = run_error(
        &h.engine(Bounds::default()),
        request("run-unowned", "agent-1"),
        &h.config(json!({})),
    )
    .await;
    assert_eq!(err.code(), ErrorCode::K8sJobCreateFailed, "{err}");
    let name = opencode_k8s_core::manifest::object_name(Some("Fake Agent"), "run-unowned", 1);
    h.wait_gone(Resource::Jobs, &name, "no Job is left running unfollowed")
        .await;
    assert!(
        h.only_seeded_secrets(),
        "no Secret with the prompt and token is left behind"
    );
}

#[tokio::test]
async fn a_prompt_too_large_creates_nothing() {
    let h = Harness::start().await;
    let mut req = request("run-huge", "agent-1");
    req.prompt = "x".repeat(2_000_000);
    let err = run_error(&h.engine(Bounds::default()), req, &h.config(json!({}))).await;
    assert_eq!(err.code(), ErrorCode::PromptTooLarge);
    assert!(h.jobs().is_empty());
    assert!(h.only_seeded_secrets());
}

#[tokio::test]
async fn cancel_deletes_the_job_pod_and_secret() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null; echo started; exec sleep 600");
    let engine = h.engine(Bounds::default());
    let cancel = CancellationToken::new();
    let sink = Collect::default();
    let config = h.config(json!({}));
    let run = engine.run(
        request("run-cancel", "agent-1"),
        &config,
        &sink,
        cancel.clone(),
    );
    let trigger = async {
        while !sink.output().contains("started") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(run, trigger)
    })
    .await
    .expect("cancel is prompt");
    let result = result.unwrap();
    assert_eq!(result.status, RunStatus::Cancelled);
    assert_eq!(result.error_code, Some(ErrorCode::Cancelled));
    assert!(h.jobs().is_empty(), "Job gone");
    assert!(
        h.cluster
            .list_json(Resource::Pods, Some(NS))
            .iter()
            .all(|p| p["metadata"]["name"] == "paperclip"),
        "pod gone"
    );
    h.wait_gone(Resource::Secrets, &result.job_name, "Secret gone")
        .await;
}
