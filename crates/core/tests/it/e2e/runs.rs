//! Whole runs of the real OpenCode: sessions and their healing, tool errors, provider errors,
//! usage and cost, and the pod's user and HOME.

use std::os::unix::fs::MetadataExt;

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{RunResult, RunStatus};
use opencode_k8s_testkit::Resource;
use opencode_k8s_testkit::llm::{self, Behaviour};
use serde_json::{Value, json};

use super::E2e;
use crate::lifecycle::{Collect, NS, request, resume};

const CWD: &str = "/paperclip/workspaces/project";

fn assert_succeeded(result: &RunResult, sink: &Collect) {
    assert_eq!(
        result.status,
        RunStatus::Succeeded,
        "{result:#?}\nrun log: {:#?}\noutput: {}",
        sink.lines(),
        sink.output()
    );
    assert_eq!(result.exit_code, Some(0));
}

fn session_id(result: &RunResult) -> String {
    result
        .session
        .as_ref()
        .map(|s| s.session_id.clone())
        .unwrap_or_else(|| panic!("the run reports a session: {result:#?}"))
}

/// The conversation the fake LLM last saw for the agent (not the title agent).
fn last_conversation(e2e: &E2e) -> Value {
    e2e.llm
        .served()
        .into_iter()
        .rev()
        .find(|s| !s.title)
        .map(|s| s.body["messages"].clone())
        .expect("the agent asked the LLM")
}

#[tokio::test]
async fn a_session_is_resumed_in_the_same_cwd() {
    let Some(e2e) = E2e::start("a_session_is_resumed_in_the_same_cwd").await else {
        return;
    };
    let config = e2e.config(Behaviour::Plain, json!({}));

    let (first, sink) = e2e.run(request("run-1", "agent-1"), &config).await;
    assert_succeeded(&first, &sink);
    assert_eq!(first.summary.as_deref(), Some(llm::REPLY));
    let session = session_id(&first);
    assert!(session.starts_with("ses_"), "{session}");
    assert_eq!(
        first.session.as_ref().and_then(|s| s.cwd.as_deref()),
        Some(CWD)
    );

    let mut second = request("run-2", "agent-1");
    second.resume = resume(&session, CWD);
    let (resumed, sink) = e2e.run(second, &config).await;
    assert_succeeded(&resumed, &sink);
    assert_eq!(session_id(&resumed), session, "the same session continues");
    assert_eq!(resumed.attempts, 1);
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains(&format!("resuming session {session}"))),
        "{:?}",
        sink.lines()
    );
    let history = last_conversation(&e2e).to_string();
    assert!(
        history.contains(llm::REPLY),
        "the resumed turn carries the first turn's reply to the LLM: {history}"
    );
}

#[tokio::test]
async fn a_changed_cwd_starts_a_fresh_session_and_says_why() {
    let Some(e2e) = E2e::start("a_changed_cwd_starts_a_fresh_session...").await else {
        return;
    };
    let config = e2e.config(Behaviour::Plain, json!({}));
    // Saved in CWD by an earlier run: OpenCode would hang resuming it elsewhere, so the engine
    // must not even try (the session need not exist for that decision).
    let session = "ses_1111111111111111111111111111";
    let mut elsewhere = request("run-elsewhere", "agent-1");
    elsewhere.cwd = Some("/paperclip/workspaces/other".into());
    elsewhere.resume = resume(session, CWD);
    let (fresh, sink) = e2e.run(elsewhere, &config).await;
    assert_succeeded(&fresh, &sink);
    assert_ne!(session_id(&fresh), session, "a new session");
    assert_eq!(fresh.attempts, 1, "no hanging resume was attempted");
    let why = sink
        .lines()
        .into_iter()
        .find(|l| l.contains(&format!("saved session {session} was created in {CWD}")));
    let why = why.unwrap_or_else(|| panic!("the run log says why: {:?}", sink.lines()));
    assert!(why.contains("/paperclip/workspaces/other"), "{why}");
    assert!(why.contains("hangs"), "{why}");
}

#[tokio::test]
async fn a_stale_session_is_healed_within_the_same_run() {
    let Some(e2e) = E2e::start("a_stale_session_is_healed...").await else {
        return;
    };
    let config = e2e.config(Behaviour::Plain, json!({}));
    let stale = "ses_0000000000000000000000000000";
    let mut req = request("run-stale", "agent-1");
    req.resume = resume(stale, CWD);
    let (result, sink) = e2e.run(req, &config).await;
    assert_succeeded(&result, &sink);
    assert_eq!(result.attempts, 2, "one fresh retry in the same run");
    let healed = session_id(&result);
    assert_ne!(healed, stale);
    assert!(healed.starts_with("ses_"), "{healed}");
    assert!(!result.clear_session, "the new session is kept");
    assert!(
        sink.lines().iter().any(|l| l.contains(&format!(
            "session {stale} no longer exists; retrying once with a fresh session"
        ))),
        "{:?}",
        sink.lines()
    );
    assert_eq!(result.summary.as_deref(), Some(llm::REPLY));
}

#[tokio::test]
async fn a_tool_error_does_not_fail_the_run() {
    let Some(e2e) = E2e::start("a_tool_error_does_not_fail_the_run").await else {
        return;
    };
    let config = e2e.config(Behaviour::ToolError, json!({}));
    let (result, sink) = e2e.run(request("run-toolerr", "agent-1"), &config).await;
    assert_succeeded(&result, &sink);
    assert_eq!(result.error_code, None);
    assert_eq!(result.summary.as_deref(), Some(llm::TOOL_ERROR_REPLY));
    let failed_tool = sink
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "tool_use" && e["part"]["state"]["status"] == "error");
    let failed_tool = failed_tool.expect("the output shows the failed tool call");
    assert_eq!(failed_tool["part"]["tool"], "read");
}

#[tokio::test]
async fn an_http_401_fails_with_the_llm_error_code_and_the_providers_message() {
    let Some(e2e) = E2e::start("an_http_401_fails...").await else {
        return;
    };
    let config = e2e.config(Behaviour::Unauthorized, json!({}));
    let (result, sink) = e2e.run(request("run-401", "agent-1"), &config).await;
    assert_eq!(
        result.status,
        RunStatus::Failed,
        "{result:#?}\n{:?}",
        sink.lines()
    );
    assert_eq!(result.error_code, Some(ErrorCode::LlmApiError));
    assert_eq!(result.exit_code, Some(1));
    let message = result.error_message.clone().unwrap_or_default();
    assert!(message.contains(llm::UNAUTHORIZED_MESSAGE), "{message}");
    assert!(
        e2e.llm.served().iter().any(|s| s.status == 401),
        "the provider was asked"
    );
}

#[tokio::test]
async fn a_tool_run_as_uid_1000_reports_the_usage_and_cost_the_llm_reported() {
    let Some(e2e) = E2e::start("a_tool_run_as_uid_1000_reports...").await else {
        return;
    };
    let config = e2e.config(Behaviour::ToolCall, json!({"retainJobs": "true"}));
    let (result, sink) = e2e.run(request("run-tool", "agent-1"), &config).await;
    assert_succeeded(&result, &sink);
    assert_uid_1000_with_home_on_the_shared_volume(&e2e, &result, "agent-1");
    assert_eq!(result.summary.as_deref(), Some(llm::TOOL_REPLY));
    assert!(
        sink.output().contains("hello-from-tool"),
        "the bash tool ran in the pod: {}",
        sink.output()
    );
    let reported = e2e.llm.reported_usage();
    assert_eq!(
        reported.prompt_tokens,
        2 * 120,
        "a tool call and a reply: two completions ({reported:?})"
    );
    assert_eq!(
        result.usage.input_tokens,
        reported.prompt_tokens - reported.cached_tokens
    );
    assert_eq!(result.usage.cached_input_tokens, reported.cached_tokens);
    assert_eq!(result.usage.output_tokens, reported.completion_tokens);
    let expected = reported.cost_usd();
    assert!(expected > 0.0);
    assert!(
        (result.cost_usd - expected).abs() < 1e-9,
        "cost {} != {expected}",
        result.cost_usd
    );
    assert_eq!(
        (result.provider.as_str(), result.model.as_str()),
        (llm::PROVIDER, Behaviour::ToolCall.model_id())
    );
}

/// The retained Job of `result` ran its pod as uid 1000 with HOME on the shared volume, and what
/// OpenCode wrote under HOME and at `OPENCODE_DB` is on that volume, owned by the pod's user: the
/// next run's pod (on any node) finds the session.
fn assert_uid_1000_with_home_on_the_shared_volume(e2e: &E2e, result: &RunResult, agent: &str) {
    let job = e2e
        .cluster
        .get_json(Resource::Jobs, NS, &result.job_name)
        .expect("retained Job");
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let user = container["securityContext"]["runAsUser"]
        .as_i64()
        .or_else(|| pod["securityContext"]["runAsUser"].as_i64());
    assert_eq!(user, Some(1000), "{pod:#}");
    let env = container["env"].as_array().expect("env");
    let home = env.iter().find(|e| e["name"] == "HOME").expect("HOME set");
    // Each agent's HOME is its own state directory on the shared volume.
    assert_eq!(
        home["value"],
        format!("/paperclip/.opencode-k8s/company-1/{agent}")
    );

    let claim = e2e.cluster.pvc_path(NS, "paperclip-data");
    for path in [
        claim.join(format!(".opencode-k8s/company-1/{agent}/opencode.db")),
        claim.join(format!(
            ".opencode-k8s/company-1/{agent}/.local/share/opencode"
        )),
    ] {
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(meta.uid(), 1000, "{}", path.display());
    }
}
