//! The OpenCode output parser against every recorded scenario in `fixtures/opencode/`
//! (real opencode-ai 1.18.33 output): the facts a user sees in Paperclip for each run.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::parse::{OpenCodeError, Outcome, OutputParser, RunOutput, Usage};
use proptest::prelude::*;

fn fixtures_dir() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/opencode"
    ))
    .to_path_buf()
}

/// One recorded `opencode run`: its stdout and stderr as the pod log would serve them (stdout
/// first, then stderr) and its real exit code.
#[derive(Debug)]
struct Scenario {
    name: String,
    log: Vec<u8>,
    rc: i32,
}

/// Every `runN-*.rc` in the fixtures, with the stdout (`.stdout.jsonl`, `.txt` or `.raw`) and
/// the stderr recorded next to it, if any.
static SCENARIOS: LazyLock<Vec<Scenario>> = LazyLock::new(|| {
    let dir = fixtures_dir();
    let mut scenarios: Vec<Scenario> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|file| file.strip_suffix(".rc").map(str::to_owned))
        .map(|name| {
            let rc = std::fs::read_to_string(dir.join(format!("{name}.rc"))).expect("rc file");
            let rc = rc
                .trim()
                .strip_prefix("rc=")
                .expect("rc=N")
                .parse()
                .expect("rc number");
            let mut log = Vec::new();
            for suffix in [".stdout.jsonl", ".stdout.txt", ".stdout.raw", ".stderr.txt"] {
                if let Ok(bytes) = std::fs::read(dir.join(format!("{name}{suffix}"))) {
                    log.extend_from_slice(&bytes);
                }
            }
            Scenario { name, log, rc }
        })
        .collect();
    scenarios.sort_by(|a, b| a.name.cmp(&b.name));
    scenarios
});

fn scenario(name: &str) -> &'static Scenario {
    SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

fn parse(name: &str) -> RunOutput {
    let scenario = scenario(name);
    let mut parser = OutputParser::new();
    parser.feed(&scenario.log);
    parser.finish(Some(scenario.rc))
}

/// What the fake LLM reported per request (`prompt_tokens: 120` of which `cached_tokens: 20`,
/// `completion_tokens: 7`), as OpenCode accounts it.
const ONE_STEP: Usage = Usage {
    input_tokens: 100,
    cached_input_tokens: 20,
    output_tokens: 7,
};
const TWO_STEPS: Usage = Usage {
    input_tokens: 200,
    cached_input_tokens: 40,
    output_tokens: 14,
};
const FAKE_REPLY: &str = "Hi! I am the fake model.";

#[test]
fn all_22_recorded_runs_are_found() {
    assert_eq!(
        SCENARIOS.len(),
        22,
        "{:?}",
        SCENARIOS.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

#[test]
fn every_recorded_run_succeeds_exactly_when_opencode_exited_zero() {
    for scenario in SCENARIOS.iter() {
        let out = parse(&scenario.name);
        assert_eq!(
            out.outcome == Outcome::Succeeded,
            scenario.rc == 0,
            "{}",
            scenario.name
        );
        assert_eq!(
            out.error_message().is_none(),
            scenario.rc == 0,
            "{}",
            scenario.name
        );
        assert_eq!(out.exit_code, Some(scenario.rc));
    }
}

#[test]
fn simple_runs_report_session_usage_and_the_reply() {
    for (name, session) in [
        ("run1", "ses_de2d87857ffeYcorR0xMgtIWlV"),
        ("run12-opencode-db", "ses_de2ca76aeffesUU5Y6htfApO3D"),
        (
            "run18-ro-home-xdg-writable",
            "ses_de2c43a6effeITxOHR7baCktUz",
        ),
        ("run19-tty", "ses_de2c3b64dffeSG3L8IhNV1jVdD"),
        ("run22-responses-api", "ses_de2bff0d1ffeGacT7k1SAgs7L3"),
    ] {
        let out = parse(name);
        assert_eq!(out.outcome, Outcome::Succeeded, "{name}");
        assert_eq!(out.session_id.as_deref(), Some(session), "{name}");
        assert_eq!(out.usage, ONE_STEP, "{name}");
        assert_eq!(out.cost_usd, 0.0, "{name}");
        assert_eq!(out.summary.as_deref(), Some(FAKE_REPLY), "{name}");
        assert_eq!(out.last_error, None, "{name}");
        assert_eq!(out.stderr_tail, "", "{name}");
        assert_eq!(out.last_step_reason.as_deref(), Some("stop"), "{name}");
    }
}

#[test]
fn a_resumed_run_keeps_its_session_id() {
    assert_eq!(parse("run2-resume").session_id, parse("run1").session_id);
    let fresh_home = parse("run13-opencode-db-resume-fresh-home");
    assert_eq!(fresh_home.session_id, parse("run12-opencode-db").session_id);
    assert_eq!(fresh_home.summary.as_deref(), Some(FAKE_REPLY));
}

#[test]
fn a_tty_run_with_crlf_line_ends_parses_like_a_pipe_run() {
    let tty = parse("run19-tty");
    let pipe = parse("run1");
    assert_eq!(
        (tty.usage, tty.summary, tty.steps),
        (pipe.usage, pipe.summary, pipe.steps)
    );
}

#[test]
fn tool_runs_sum_both_steps_and_summarise_the_final_answer() {
    for (name, reply) in [
        ("run3-tool", "The tool said hello."),
        ("run21-steps-limit-1", "The tool said hello."),
        ("run15-slowtool", FAKE_REPLY),
    ] {
        let out = parse(name);
        assert_eq!(out.outcome, Outcome::Succeeded, "{name}");
        assert_eq!(out.usage, TWO_STEPS, "{name}");
        assert_eq!(out.steps, 2, "{name}");
        assert_eq!(out.tool_errors, 0, "{name}");
        assert_eq!(out.summary.as_deref(), Some(reply), "{name}");
    }
}

#[test]
fn usage_matches_opencodes_own_session_totals() {
    let export = std::fs::read_to_string(fixtures_dir().join("export-run3-tool-session.json"))
        .expect("export fixture");
    let export: serde_json::Value = serde_json::from_str(&export).expect("export json");
    let tokens = &export["info"]["tokens"];
    let out = parse("run3-tool");
    assert_eq!(export["info"]["id"].as_str(), out.session_id.as_deref());
    assert_eq!(tokens["input"].as_u64(), Some(out.usage.input_tokens));
    assert_eq!(
        tokens["cache"]["read"].as_u64(),
        Some(out.usage.cached_input_tokens)
    );
    let output = tokens["output"]
        .as_u64()
        .zip(tokens["reasoning"].as_u64())
        .map(|(o, r)| o + r);
    assert_eq!(output, Some(out.usage.output_tokens));
}

#[test]
fn a_rejected_permission_is_not_a_failed_run() {
    let out = parse("run4-permission-rejected");
    assert_eq!(out.outcome, Outcome::Succeeded);
    assert_eq!(out.tool_errors, 1);
    assert_eq!(
        out.summary, None,
        "the run ended on its tool step and said nothing"
    );
    assert_eq!(out.last_step_reason.as_deref(), Some("tool-calls"));
    assert_eq!(
        out.stderr_tail,
        "! permission requested: external_directory (/tmp/*); auto-rejecting"
    );
}

#[test]
fn a_failed_tool_call_is_not_a_failed_run() {
    let out = parse("run5-tool-error");
    assert_eq!(out.outcome, Outcome::Succeeded);
    assert_eq!(out.tool_errors, 1);
    assert_eq!(out.summary.as_deref(), Some("The read failed."));
    assert_eq!(out.usage, TWO_STEPS);
}

#[test]
fn reasoning_tokens_count_as_output_and_reasoning_text_is_not_the_summary() {
    for name in ["run9-reasoning-thinking", "run10-reasoning-nothinking"] {
        let out = parse(name);
        assert_eq!(out.usage, ONE_STEP, "{name}: output 4 + reasoning 3");
        assert!(
            (out.cost_usd - 0.000411).abs() < 1e-12,
            "{name}: {}",
            out.cost_usd
        );
        assert_eq!(out.summary.as_deref(), Some(FAKE_REPLY), "{name}");
    }
}

#[test]
fn a_bogus_session_is_detected_as_stale() {
    let out = parse("run6-bogus-session");
    assert_eq!(out.outcome, Outcome::SessionNotFound);
    assert!(out.stale_session);
    assert!(!out.saw_event);
    assert_eq!(out.session_id, None);
    assert_eq!(out.stderr_tail, "Error: Session not found");
    assert_eq!(
        out.outcome.error_code(),
        Some(ErrorCode::SessionUnavailable)
    );
}

#[test]
fn provider_errors_keep_name_message_and_http_status() {
    for (name, expected, message) in [
        (
            "run7-http500",
            ("APIError", "fake upstream exploded", Some(500)),
            "APIError (HTTP 500): fake upstream exploded",
        ),
        (
            "run8-http401",
            ("APIError", "Incorrect API key provided: fake", Some(401)),
            "APIError (HTTP 401): Incorrect API key provided: fake",
        ),
        (
            "run16-conn-refused",
            (
                "APIError",
                "Cannot connect to API: Unable to connect. Is the computer able to access the url?",
                None,
            ),
            "APIError: Cannot connect to API: Unable to connect. Is the computer able to access the url?",
        ),
        (
            "run20-unknown-model",
            (
                "UnknownError",
                "Unexpected server error. Check server logs for details.",
                None,
            ),
            "UnknownError: Unexpected server error. Check server logs for details.",
        ),
    ] {
        let out = parse(name);
        let (error_name, error_message, status_code) = expected;
        let error = OpenCodeError {
            name: error_name.to_owned(),
            message: error_message.to_owned(),
            status_code,
        };
        assert_eq!(out.outcome, Outcome::LlmError, "{name}");
        assert_eq!(out.last_error.as_ref(), Some(&error), "{name}");
        assert_eq!(out.error_message().as_deref(), Some(message), "{name}");
        assert_eq!(
            out.outcome.error_code(),
            Some(ErrorCode::LlmApiError),
            "{name}"
        );
        assert!(
            out.session_id.is_some(),
            "{name}: the error event names the session"
        );
        assert!(!out.stale_session, "{name}");
    }
}

#[test]
fn opencode_failures_without_an_error_event_explain_themselves_from_stderr() {
    for (name, message) in [
        (
            "run14-empty-prompt",
            "opencode exited with code 1: Error: You must provide a message or a command",
        ),
        (
            "run17-unwritable-home",
            "opencode exited with code 1: EACCES: permission denied, mkdir '/tmp/oc/ro-home/.local'",
        ),
        (
            "run11-resume-other-cwd",
            "opencode exited with code 124 and printed no error",
        ),
    ] {
        let out = parse(name);
        assert_eq!(out.outcome, Outcome::Failed, "{name}");
        assert_eq!(out.error_message().as_deref(), Some(message), "{name}");
        assert_eq!(
            out.outcome.error_code(),
            Some(ErrorCode::OpencodeFailed),
            "{name}"
        );
        assert!(!out.saw_event, "{name}");
        assert!(!out.stderr_tail.contains('\x1b'), "{name}: ANSI stripped");
    }
}

#[test]
fn the_first_event_is_visible_while_the_run_is_still_going() {
    let log = &scenario("run15-slowtool").log;
    let first_newline = log.iter().position(|&b| b == b'\n').expect("a line");
    let mut parser = OutputParser::new();
    parser.feed(&log[..first_newline]);
    assert!(
        !parser.saw_event(),
        "an unterminated line is not parsed yet"
    );
    parser.feed(&log[first_newline..=first_newline]);
    assert!(parser.saw_event());
    assert_eq!(parser.session_id(), Some("ses_de2c816c4ffer2BZL00jxJXyB3"));
}

#[test]
fn a_vanished_pod_still_reports_what_opencode_printed() {
    let mut parser = OutputParser::new();
    parser.feed(&scenario("run7-http500").log);
    let out = parser.finish(None);
    assert_eq!(out.outcome, Outcome::LlmError);
    let mut parser = OutputParser::new();
    parser.feed(&scenario("run3-tool").log);
    let out = parser.finish(None);
    assert_eq!(out.outcome, Outcome::NoExitCode);
    assert_eq!(
        out.usage, TWO_STEPS,
        "usage seen before the pod vanished is kept"
    );
}

#[test]
fn files_that_are_not_run_output_yield_no_event() {
    let dir = fixtures_dir();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let is_run_output = name.starts_with("run") && name.contains(".stdout.");
        let mut parser = OutputParser::new();
        parser.feed(&std::fs::read(&path).expect("fixture"));
        let out = parser.finish(Some(0));
        if !is_run_output {
            assert!(!out.saw_event, "{name}");
            assert_eq!(out.session_id, None, "{name}");
            assert_eq!(out.usage, Usage::default(), "{name}");
        }
        checked += 1;
    }
    assert!(checked > 22 * 3, "only {checked} fixture files");
}

fn parse_split(log: &[u8], cuts: &[usize], rc: i32) -> RunOutput {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (log.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parser = OutputParser::new();
    let mut start = 0;
    for cut in cuts {
        parser.feed(&log[start..cut]);
        start = cut;
    }
    parser.feed(&log[start..]);
    parser.finish(Some(rc))
}

proptest! {
    #[test]
    fn every_fixture_gives_the_same_result_for_any_split(
        index in 0..22usize,
        cuts in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        let scenario = &SCENARIOS[index % SCENARIOS.len()];
        // A multibyte stderr line too, so some cuts land inside a UTF-8 character.
        let mut log = scenario.log.clone();
        log.extend_from_slice("\x1b[2mnote: ünïcödé 日本 🎉\x1b[0m\n".as_bytes());
        prop_assert_eq!(parse_split(&log, &cuts, scenario.rc), parse_split(&log, &[], scenario.rc));
    }
}
