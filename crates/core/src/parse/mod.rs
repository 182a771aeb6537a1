//! Incremental parser of `opencode run --format json` output, as a pod's log serves it.
//!
//! The pod log interleaves OpenCode's stdout (JSONL events, one per line) and stderr (plain text
//! with ANSI colours) in one stream. [`OutputParser`] takes that stream in any chunking — bytes
//! through [`OutputParser::feed`] or whole lines through [`OutputParser::push_line`] — and keeps
//! only what the run's result needs, in memory bounded whatever the output size: the session id,
//! summed usage and cost, the last assistant text, the last `error` event and the end of the
//! non-JSON output. [`OutputParser::finish`] turns that plus the container's exit code into a
//! [`RunOutput`]. The parser never keeps the output itself; the log path forwards it separately.
//!
//! Facts this relies on (opencode-ai 1.18.33, `fixtures/opencode/`):
//! - `step_finish.part.tokens.input` already **excludes** cache reads: the fake LLM reported
//!   `prompt_tokens: 120` with `cached_tokens: 20`, and OpenCode printed `input: 100`,
//!   `cache.read: 20`. So [`Usage::input_tokens`] is the uncached input and
//!   [`Usage::cached_input_tokens`] is added on top of it, never subtracted from it — the same
//!   convention as Paperclip's own `opencode_local` adapter. `output` excludes `reasoning`
//!   (`output: 4, reasoning: 3` for 7 completion tokens), so both are summed into
//!   [`Usage::output_tokens`].
//! - Exit code 0 is success even when tool calls failed or permissions were auto-rejected;
//!   exit code 1 comes with an `error` event (LLM/provider failure) or with a plain-text
//!   `Error: ...` on stderr (stale session, empty prompt, unwritable HOME).
//!
//! Pure: no I/O, no clock, no async. Malformed input is data, never an error, so there is no
//! error type here.

mod ansi;
mod lines;
mod output;
mod tail;

use std::borrow::Cow;

use serde_json::Value;

pub use ansi::strip_ansi;
pub use lines::{LineSplitter, MAX_LINE_BYTES, RawLine};
pub use output::{OpenCodeError, Outcome, RunOutput, Usage};
use tail::{TailBuffer, truncate_to};

/// The summary keeps the last 16 KiB of the final assistant text.
pub const SUMMARY_MAX_BYTES: usize = 16 * 1024;
/// The stderr tail keeps the last 8 KiB of non-JSON output.
pub const STDERR_TAIL_MAX_BYTES: usize = 8 * 1024;
/// Longest error message kept from an `error` event.
const ERROR_MESSAGE_MAX_BYTES: usize = 4 * 1024;
/// Longest error name kept from an `error` event.
const ERROR_NAME_MAX_BYTES: usize = 256;
/// A `sessionID` longer than this is not an OpenCode session id (they are ~30 bytes) and is
/// ignored rather than cut: a cut id would resume the wrong session.
const SESSION_ID_MAX_BYTES: usize = 256;
/// What OpenCode prints on stderr when `--session` names a session its database does not have.
const SESSION_NOT_FOUND: &str = "Session not found";
/// Marks text dropped from the front of a bounded summary.
const ELLIPSIS: &str = "…";

/// What one line of the pod log was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind<'a> {
    /// A JSON event from OpenCode's stdout.
    Event(EventKind),
    /// Any other line — OpenCode's stderr in practice — with ANSI escapes removed.
    Stderr(Cow<'a, str>),
}

/// The `type` of an OpenCode JSON event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `step_start`: the model starts one request/response step.
    StepStart,
    /// `text`: a complete assistant text part.
    Text,
    /// `reasoning`: a complete reasoning part (only with `--thinking`).
    Reasoning,
    /// `tool_use`: a completed or failed tool call.
    ToolUse,
    /// `step_finish`: a step ended, with its tokens and cost.
    StepFinish,
    /// `error`: the run failed (provider error, unknown model, ...); OpenCode exits 1.
    Error,
    /// A JSON object with a `type` this parser does not know; ignored but counted as an event.
    Other,
    /// A line over [`MAX_LINE_BYTES`] that starts like JSON: an event too large to parse.
    Truncated,
}

/// Parses OpenCode's output incrementally; see the module docs.
#[derive(Debug)]
pub struct OutputParser {
    splitter: LineSplitter,
    state: State,
}

/// Everything kept between lines. Each field is bounded.
#[derive(Debug)]
struct State {
    saw_event: bool,
    session_id: Option<String>,
    usage: Usage,
    cost_usd: f64,
    steps: u32,
    tool_errors: u32,
    last_step_reason: Option<String>,
    /// Text parts of the step in progress.
    step_text: TailBuffer,
    /// Text of the last step that produced text.
    summary: TailBuffer,
    last_error: Option<OpenCodeError>,
    session_not_found: bool,
    stderr_tail: TailBuffer,
    truncated_lines: u64,
}

impl Default for OutputParser {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputParser {
    /// A parser for one OpenCode run.
    pub fn new() -> Self {
        Self {
            splitter: LineSplitter::new(),
            state: State {
                saw_event: false,
                session_id: None,
                usage: Usage::default(),
                cost_usd: 0.0,
                steps: 0,
                tool_errors: 0,
                last_step_reason: None,
                step_text: TailBuffer::new(SUMMARY_MAX_BYTES),
                summary: TailBuffer::new(SUMMARY_MAX_BYTES),
                last_error: None,
                session_not_found: false,
                stderr_tail: TailBuffer::new(STDERR_TAIL_MAX_BYTES),
                truncated_lines: 0,
            },
        }
    }

    /// Feeds raw log bytes in any chunking; complete lines are parsed as they appear.
    pub fn feed(&mut self, bytes: &[u8]) {
        let state = &mut self.state;
        self.splitter.push(bytes, |line| {
            state.handle(line.text, line.truncated);
        });
    }

    /// Parses one complete line (without its newline) and says what it was.
    ///
    /// Use this when the caller already splits lines (the log follower does, to drop its
    /// timestamps); do not mix it with [`OutputParser::feed`] on the same parser while `feed`
    /// holds an unterminated line. A line over [`MAX_LINE_BYTES`] is cut like `feed` would.
    pub fn push_line<'l>(&mut self, line: &'l str) -> LineKind<'l> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let cut = truncate_to(line, MAX_LINE_BYTES);
        self.state.handle(cut, cut.len() < line.len())
    }

    /// At least one OpenCode JSON event has been seen. A resume from another working directory
    /// hangs without printing anything, so the lifecycle retries fresh when this stays false.
    pub fn saw_event(&self) -> bool {
        self.state.saw_event
    }

    /// The session id, as soon as the first event carried it.
    pub fn session_id(&self) -> Option<&str> {
        self.state.session_id.as_deref()
    }

    /// Heap bytes the parser holds. Bounded by about `2 × MAX_LINE_BYTES` plus a few times the
    /// summary and tail bounds, whatever the output size.
    pub fn retained_bytes(&self) -> usize {
        let s = &self.state;
        self.splitter.retained_bytes()
            + s.step_text.retained_bytes()
            + s.summary.retained_bytes()
            + s.stderr_tail.retained_bytes()
            + s.session_id.as_ref().map_or(0, String::capacity)
            + s.last_step_reason.as_ref().map_or(0, String::capacity)
            + s.last_error
                .as_ref()
                .map_or(0, |e| e.name.capacity() + e.message.capacity())
    }

    /// Ends the stream (an unterminated last line is parsed) and classifies the run with the
    /// container's exit code, `None` when it is unknown.
    pub fn finish(mut self, exit_code: Option<i32>) -> RunOutput {
        let state = &mut self.state;
        self.splitter.finish(|line| {
            state.handle(line.text, line.truncated);
        });
        self.state.into_output(exit_code)
    }
}

impl State {
    fn handle<'l>(&mut self, line: &'l str, truncated: bool) -> LineKind<'l> {
        if truncated {
            self.truncated_lines += 1;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('{') {
            if truncated {
                // An event too large to parse still proves OpenCode is running.
                self.saw_event = true;
                return LineKind::Event(EventKind::Truncated);
            }
            if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(trimmed)
                && let Some(Value::String(kind)) = event.get("type")
            {
                return LineKind::Event(self.event(kind, &event));
            }
        }
        let text = strip_ansi(line);
        if text.contains(SESSION_NOT_FOUND) {
            self.session_not_found = true;
        }
        if !self.stderr_tail.is_empty() {
            self.stderr_tail.push_str("\n");
        }
        self.stderr_tail.push_str(&text);
        LineKind::Stderr(text)
    }

    fn event(&mut self, kind: &str, event: &serde_json::Map<String, Value>) -> EventKind {
        self.saw_event = true;
        if self.session_id.is_none()
            && let Some(id) = event.get("sessionID").and_then(Value::as_str)
            && !id.is_empty()
            && id.len() <= SESSION_ID_MAX_BYTES
        {
            self.session_id = Some(id.to_owned());
        }
        let part = event.get("part");
        match kind {
            "step_start" => {
                self.end_step();
                EventKind::StepStart
            }
            "text" => {
                if let Some(text) = part.and_then(|p| p.get("text")).and_then(Value::as_str) {
                    self.add_text(text);
                }
                EventKind::Text
            }
            "reasoning" => EventKind::Reasoning,
            "tool_use" => {
                let status = part
                    .and_then(|p| p.pointer("/state/status"))
                    .and_then(Value::as_str);
                if status == Some("error") {
                    self.tool_errors = self.tool_errors.saturating_add(1);
                }
                EventKind::ToolUse
            }
            "step_finish" => {
                if let Some(part) = part {
                    self.add_step(part);
                }
                self.end_step();
                EventKind::StepFinish
            }
            "error" => {
                self.last_error = Some(parse_error(event.get("error")));
                EventKind::Error
            }
            _ => EventKind::Other,
        }
    }

    fn add_text(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if !self.step_text.is_empty() {
            self.step_text.push_str("\n\n");
        }
        self.step_text.push_str(text);
    }

    fn add_step(&mut self, part: &Value) {
        self.steps = self.steps.saturating_add(1);
        let count = |pointer: &str| part.pointer(pointer).map_or(0, as_count);
        let usage = &mut self.usage;
        usage.input_tokens = usage.input_tokens.saturating_add(count("/tokens/input"));
        usage.cached_input_tokens = usage
            .cached_input_tokens
            .saturating_add(count("/tokens/cache/read"));
        usage.output_tokens = usage
            .output_tokens
            .saturating_add(count("/tokens/output"))
            .saturating_add(count("/tokens/reasoning"));
        // A negative or non-finite cost is not a price; skipping it keeps the sum meaningful.
        if let Some(cost) = part.get("cost").and_then(Value::as_f64)
            && cost.is_finite()
            && cost >= 0.0
        {
            self.cost_usd += cost;
        }
        if let Some(reason) = part.get("reason").and_then(Value::as_str) {
            self.last_step_reason = Some(truncate_to(reason, ERROR_NAME_MAX_BYTES).to_owned());
        }
    }

    /// A step boundary: the step's text, if any, becomes the summary candidate.
    fn end_step(&mut self) {
        if !self.step_text.is_empty() {
            std::mem::swap(&mut self.summary, &mut self.step_text);
            self.step_text.clear();
        }
    }

    fn into_output(mut self, exit_code: Option<i32>) -> RunOutput {
        // A run cut off mid-step (error event, killed pod) still said what it said.
        self.end_step();
        let stale = self.session_not_found
            || self
                .last_error
                .as_ref()
                .is_some_and(|e| e.message.contains(SESSION_NOT_FOUND));
        let outcome = match exit_code {
            Some(0) => Outcome::Succeeded,
            _ if stale => Outcome::SessionNotFound,
            _ if self.last_error.is_some() => Outcome::LlmError,
            Some(_) => Outcome::Failed,
            None => Outcome::NoExitCode,
        };
        let summary = match self.summary.tail() {
            ("", _) => None,
            (text, false) => Some(text.to_owned()),
            (text, true) => Some(format!("{ELLIPSIS}{}", text.trim_start())),
        };
        RunOutput {
            outcome,
            exit_code,
            session_id: self.session_id,
            usage: self.usage,
            cost_usd: self.cost_usd,
            summary,
            last_error: self.last_error,
            stale_session: outcome == Outcome::SessionNotFound,
            stderr_tail: self.stderr_tail.tail().0.trim().to_owned(),
            saw_event: self.saw_event,
            steps: self.steps,
            tool_errors: self.tool_errors,
            last_step_reason: self.last_step_reason,
            truncated_lines: self.truncated_lines,
        }
    }
}

/// A token count: a non-negative integer, or a float OpenCode may print for some providers.
fn as_count(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| match value.as_f64() {
        // `as` saturates for floats too large for u64, which is the intent.
        Some(f) if f.is_finite() && f > 0.0 => f.round() as u64,
        _ => 0,
    })
}

/// Reads `error.name`, `error.data.message` and `error.data.statusCode`, tolerating older or
/// odd shapes (`error.message`, a bare string).
fn parse_error(error: Option<&Value>) -> OpenCodeError {
    let error = error.unwrap_or(&Value::Null);
    let name = error
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("UnknownError");
    let message = error
        .pointer("/data/message")
        .or_else(|| error.get("message"))
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .unwrap_or(name);
    let status_code = error
        .pointer("/data/statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    OpenCodeError {
        name: truncate_to(name, ERROR_NAME_MAX_BYTES).to_owned(),
        message: truncate_to(message, ERROR_MESSAGE_MAX_BYTES).to_owned(),
        status_code,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::error_code::ErrorCode;

    const SESSION: &str = "ses_test0000000000000000000001";

    fn event(kind: &str, part: &str) -> String {
        format!(r#"{{"type":"{kind}","timestamp":1,"sessionID":"{SESSION}","part":{part}}}"#)
    }

    fn text(text: &str) -> String {
        event(
            "text",
            &serde_json::json!({ "type": "text", "text": text }).to_string(),
        )
    }

    fn step_finish(input: u64, cached: u64, output: u64, reasoning: u64, cost: f64) -> String {
        let part = serde_json::json!({
            "type": "step-finish",
            "reason": "stop",
            "tokens": {
                "input": input, "output": output, "reasoning": reasoning,
                "cache": { "read": cached, "write": 0 }
            },
            "cost": cost,
        });
        event("step_finish", &part.to_string())
    }

    fn tool_step(status: &str) -> Vec<String> {
        let tool = format!(r#"{{"type":"tool","tool":"read","state":{{"status":"{status}"}}}}"#);
        vec![
            event("step_start", "{}"),
            event("tool_use", &tool),
            event(
                "step_finish",
                r#"{"reason":"tool-calls","tokens":{"input":1},"cost":0}"#,
            ),
        ]
    }

    fn run(lines: &[String], exit_code: Option<i32>) -> RunOutput {
        let mut parser = OutputParser::new();
        for line in lines {
            parser.feed(line.as_bytes());
            parser.feed(b"\n");
        }
        parser.finish(exit_code)
    }

    fn error_event(message: &str, status: Option<u16>) -> String {
        let error = serde_json::json!({
            "name": "APIError",
            "data": { "message": message, "statusCode": status },
        });
        format!(r#"{{"type":"error","sessionID":"{SESSION}","error":{error}}}"#)
    }

    #[test]
    fn sums_usage_and_cost_over_steps_with_reasoning_as_output() {
        let out = run(
            &[
                step_finish(100, 20, 4, 3, 0.25),
                step_finish(50, 10, 2, 0, 0.5),
            ],
            Some(0),
        );
        let usage = Usage {
            input_tokens: 150,
            cached_input_tokens: 30,
            output_tokens: 9,
        };
        assert_eq!(out.usage, usage);
        assert!((out.cost_usd - 0.75).abs() < 1e-12);
        assert_eq!(out.steps, 2);
    }

    #[test]
    fn summary_is_the_last_step_that_produced_text() {
        let mut lines = vec![
            event("step_start", "{}"),
            text("first"),
            step_finish(1, 0, 1, 0, 0.0),
        ];
        lines.extend([event("step_start", "{}"), text("  second  "), text("third")]);
        lines.push(step_finish(1, 0, 1, 0, 0.0));
        lines.extend(tool_step("completed"));
        let out = run(&lines, Some(0));
        assert_eq!(out.summary.as_deref(), Some("second\n\nthird"));
        assert_eq!(out.last_step_reason.as_deref(), Some("tool-calls"));
    }

    #[test]
    fn text_of_a_step_cut_off_by_an_error_is_still_the_summary() {
        let lines = [
            event("step_start", "{}"),
            text("partial answer"),
            error_event("boom", None),
        ];
        let out = run(&lines, Some(1));
        assert_eq!(out.summary.as_deref(), Some("partial answer"));
        assert_eq!(out.outcome, Outcome::LlmError);
    }

    #[test]
    fn a_run_without_text_has_no_summary() {
        assert_eq!(run(&tool_step("error"), Some(0)).summary, None);
    }

    #[test]
    fn a_huge_summary_keeps_its_end_behind_an_ellipsis() {
        let long = format!("{}THE END", "é".repeat(SUMMARY_MAX_BYTES));
        let out = run(&[event("step_start", "{}"), text(&long)], Some(0));
        let summary = out.summary.expect("summary");
        assert!(summary.starts_with(ELLIPSIS), "{}", &summary[..10]);
        assert!(summary.ends_with("THE END"));
        assert!(summary.len() <= SUMMARY_MAX_BYTES + ELLIPSIS.len());
    }

    #[test]
    fn exit_zero_succeeds_despite_tool_errors_and_rejected_permissions() {
        let mut lines = tool_step("error");
        lines.push("\x1b[93m\x1b[1m! \x1b[0mpermission requested: read; auto-rejecting".to_owned());
        let out = run(&lines, Some(0));
        assert_eq!(out.outcome, Outcome::Succeeded);
        assert_eq!(out.tool_errors, 1);
        assert_eq!(out.error_message(), None);
        assert_eq!(
            out.stderr_tail,
            "! permission requested: read; auto-rejecting"
        );
    }

    #[test]
    fn outcome_follows_the_exit_code_and_what_opencode_printed() {
        let llm = [error_event("upstream exploded", Some(500))];
        let stale = ["\x1b[91m\x1b[1mError: \x1b[0mSession not found".to_owned()];
        let cases: [(&[String], Option<i32>, Outcome); 7] = [
            (&llm, Some(1), Outcome::LlmError),
            (&llm, None, Outcome::LlmError),
            (&llm, Some(0), Outcome::Succeeded),
            (&stale, Some(1), Outcome::SessionNotFound),
            (&[], Some(1), Outcome::Failed),
            (&[], Some(137), Outcome::Failed),
            (&[], None, Outcome::NoExitCode),
        ];
        for (lines, rc, expected) in cases {
            let out = run(lines, rc);
            assert_eq!(out.outcome, expected, "{lines:?} rc {rc:?}");
            assert_eq!(out.stale_session, expected == Outcome::SessionNotFound);
        }
    }

    #[test]
    fn error_messages_name_the_cause() {
        let llm = run(&[error_event("upstream exploded", Some(500))], Some(1));
        assert_eq!(
            llm.error_message().as_deref(),
            Some("APIError (HTTP 500): upstream exploded")
        );
        assert_eq!(llm.outcome.error_code(), Some(ErrorCode::LlmApiError));
        let lines = ["EACCES: permission denied".to_owned(), "Bun v1".to_owned()];
        let failed = run(&lines, Some(1));
        assert_eq!(
            failed.error_message().as_deref(),
            Some("opencode exited with code 1: EACCES: permission denied")
        );
        let silent = run(&[], Some(124));
        assert_eq!(
            silent.error_message().as_deref(),
            Some("opencode exited with code 124 and printed no error")
        );
    }

    #[test]
    fn push_line_classifies_events_and_strips_stderr_colours() {
        let mut parser = OutputParser::new();
        assert!(!parser.saw_event());
        assert_eq!(
            parser.push_line("\x1b[1mhello\x1b[0m\r\n"),
            LineKind::Stderr("hello".into())
        );
        assert_eq!(
            parser.push_line(r#"{"not":"an event"}"#),
            LineKind::Stderr(r#"{"not":"an event"}"#.into())
        );
        assert!(!parser.saw_event());
        assert_eq!(parser.session_id(), None);
        assert_eq!(
            parser.push_line(&event("step_start", "{}")),
            LineKind::Event(EventKind::StepStart)
        );
        assert!(parser.saw_event());
        assert_eq!(parser.session_id(), Some(SESSION));
        assert_eq!(
            parser.push_line(&event("mystery", "{}")),
            LineKind::Event(EventKind::Other)
        );
    }

    #[test]
    fn an_overlong_json_line_counts_as_an_event_seen() {
        let mut parser = OutputParser::new();
        let huge = format!(
            r#"{{"type":"tool_use","part":"{}"}}"#,
            "x".repeat(MAX_LINE_BYTES)
        );
        assert_eq!(
            parser.push_line(&huge),
            LineKind::Event(EventKind::Truncated)
        );
        assert!(parser.saw_event());
        assert_eq!(parser.finish(Some(0)).truncated_lines, 1);
    }

    #[test]
    fn serializes_camel_case_for_javascript() {
        let out = run(&[error_event("nope", Some(401))], Some(1));
        let json = serde_json::to_value(&out).expect("serialize");
        assert_eq!(json["outcome"], "llmError");
        assert_eq!(json["lastError"]["statusCode"], 401);
        assert_eq!(json["usage"]["cachedInputTokens"], 0);
        assert_eq!(json["sessionId"], SESSION);
    }

    #[test]
    fn memory_stays_bounded_over_100_mib_of_output() {
        let mut chunk = Vec::new();
        chunk.extend_from_slice(event("step_start", "{}").as_bytes());
        chunk.push(b'\n');
        chunk.extend_from_slice(text(&"answer ".repeat(500)).as_bytes());
        chunk.push(b'\n');
        chunk.extend_from_slice(step_finish(10, 1, 1, 0, 0.001).as_bytes());
        chunk.push(b'\n');
        for _ in 0..200 {
            chunk.extend_from_slice(
                b"\x1b[31mnoise on stderr, a line of about sixty bytes\x1b[0m\n",
            );
        }
        // One line far over the line bound, cut across many chunks.
        let overlong = vec![b'y'; 3 * MAX_LINE_BYTES];
        let mut parser = OutputParser::new();
        let mut fed = 0usize;
        let mut peak = 0usize;
        while fed < 100 << 20 {
            parser.feed(&chunk);
            fed += chunk.len();
            peak = peak.max(parser.retained_bytes());
        }
        for piece in overlong.chunks(64 * 1024) {
            parser.feed(piece);
            peak = peak.max(parser.retained_bytes());
        }
        parser.feed(b"\n");
        let bound =
            2 * (MAX_LINE_BYTES + 1) + 6 * SUMMARY_MAX_BYTES * 2 + 6 * STDERR_TAIL_MAX_BYTES;
        assert!(peak < bound, "peak retained {peak} bytes, bound {bound}");
        let out = parser.finish(Some(0));
        assert!(out.steps > 1000);
        assert!(out.stderr_tail.len() <= STDERR_TAIL_MAX_BYTES);
        assert_eq!(out.truncated_lines, 1);
    }

    /// A transcript exercising every path: events, CRLF, ANSI stderr, multibyte text, invalid
    /// UTF-8, an unterminated last line.
    fn transcript() -> Vec<u8> {
        let mut bytes = Vec::new();
        for line in [
            event("step_start", "{}"),
            text("héllo — 日本語 🎉"),
            "\x1b[93m! \x1b[0mpermission requested: é; auto-rejecting".to_owned(),
            step_finish(100, 20, 4, 3, 0.000411),
        ] {
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"bad \xff\xfe utf8\n");
        bytes.extend_from_slice(error_event("ünïcode failure", Some(429)).as_bytes());
        bytes.extend_from_slice(b"\ntrailing line without newline \xe2\x9c\x93");
        bytes
    }

    fn feed_split(bytes: &[u8], cuts: &[usize]) -> RunOutput {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parser = OutputParser::new();
        let mut start = 0;
        for cut in cuts {
            parser.feed(&bytes[start..cut]);
            start = cut;
        }
        parser.feed(&bytes[start..]);
        parser.finish(Some(1))
    }

    #[test]
    fn the_transcript_parses_as_expected() {
        let out = feed_split(&transcript(), &[]);
        assert_eq!(out.summary.as_deref(), Some("héllo — 日本語 🎉"));
        assert_eq!(out.usage.output_tokens, 7);
        assert_eq!(
            out.last_error.as_ref().map(|e| e.status_code),
            Some(Some(429))
        );
        assert!(out.stderr_tail.contains("bad \u{fffd}\u{fffd} utf8"));
        assert!(out.stderr_tail.ends_with("trailing line without newline ✓"));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_result(cuts in prop::collection::vec(any::<usize>(), 0..40)) {
            let bytes = transcript();
            prop_assert_eq!(feed_split(&bytes, &cuts), feed_split(&bytes, &[]));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let out = feed_split(&bytes, &cuts);
            prop_assert!(out.stderr_tail.len() <= STDERR_TAIL_MAX_BYTES);
        }

        #[test]
        fn arbitrary_json_like_lines_never_panic(
            lines in prop::collection::vec(
                prop_oneof![
                    r#"\{"type":"(text|step_finish|error|tool_use|step_start)"[ -~]{0,60}\}"#,
                    r#"\{"type":"step_finish","part":\{"tokens":\{"input":-?[0-9e.]{1,8}\},"cost":-?[0-9e.]{1,8}\}\}"#,
                    r#"\{"type":"error","error":(null|"x"|\{"data":\{"statusCode":-?[0-9]{1,7}\}\})\}"#,
                    "\\PC{0,40}",
                ],
                0..30,
            ),
        ) {
            let mut parser = OutputParser::new();
            for line in &lines {
                parser.push_line(line);
            }
            let out = parser.finish(Some(0));
            prop_assert_eq!(out.outcome, Outcome::Succeeded);
        }

        #[test]
        fn push_line_agrees_with_feed(lines in prop::collection::vec("\\PC{0,30}", 0..20)) {
            let mut by_line = OutputParser::new();
            let mut by_bytes = OutputParser::new();
            for line in &lines {
                by_line.push_line(line);
                by_bytes.feed(line.as_bytes());
                by_bytes.feed(b"\n");
            }
            prop_assert_eq!(by_line.finish(None), by_bytes.finish(None));
        }
    }
}
