//! The result of one run as the parser reports it: outcome, usage, cost, summary, error.
//!
//! Serializes with camelCase field names: it crosses to JavaScript as is.

use serde::Serialize;

use crate::error_code::ErrorCode;

/// Token usage of one run, summed over its steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Input tokens not served from the provider's cache (OpenCode's `tokens.input`).
    pub input_tokens: u64,
    /// Input tokens read from the provider's cache (`tokens.cache.read`), in addition to
    /// `input_tokens`.
    pub cached_input_tokens: u64,
    /// Output tokens including reasoning (`tokens.output + tokens.reasoning`).
    pub output_tokens: u64,
}

/// The last `error` event OpenCode printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenCodeError {
    /// `error.name`, e.g. `APIError`, `UnknownError`.
    pub name: String,
    /// `error.data.message`: the provider's message, kept verbatim (bounded to 4 KiB).
    pub message: String,
    /// `error.data.statusCode`: the provider's HTTP status, when there was a response.
    pub status_code: Option<u16>,
}

/// How the run ended, from the exit code and what OpenCode printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Exit code 0 — including runs whose tool calls failed or whose permissions were rejected.
    Succeeded,
    /// Non-zero exit after an `error` event: the LLM or its provider failed.
    LlmError,
    /// Non-zero exit with `Session not found`: the saved session is gone; retry without it.
    SessionNotFound,
    /// Non-zero exit with no OpenCode error event; the stderr tail says why.
    Failed,
    /// The container's exit code is unknown (the pod vanished) and OpenCode reported nothing.
    NoExitCode,
}

impl Outcome {
    /// The stable error code of this outcome, `None` for success.
    ///
    /// A stale session maps to [`ErrorCode::SessionUnavailable`] because the lifecycle retries
    /// fresh first and reports the outcome only when the retry could not help.
    /// [`Outcome::NoExitCode`] has no code here: only the lifecycle knows why the pod vanished.
    pub fn error_code(self) -> Option<ErrorCode> {
        match self {
            Self::Succeeded | Self::NoExitCode => None,
            Self::LlmError => Some(ErrorCode::LlmApiError),
            Self::SessionNotFound => Some(ErrorCode::SessionUnavailable),
            Self::Failed => Some(ErrorCode::OpencodeFailed),
        }
    }
}

/// Everything the run's result needs from OpenCode's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutput {
    /// How the run ended.
    pub outcome: Outcome,
    /// The container's exit code, when known.
    pub exit_code: Option<i32>,
    /// The OpenCode session id (first `sessionID` seen), to resume the next run.
    pub session_id: Option<String>,
    /// Tokens summed over every `step_finish`.
    pub usage: Usage,
    /// USD summed over every `step_finish.part.cost`.
    pub cost_usd: f64,
    /// The final assistant text: the text parts of the last step that produced text, joined by
    /// a blank line; the last 16 KiB of it, led by `…` when cut.
    pub summary: Option<String>,
    /// The last `error` event.
    pub last_error: Option<OpenCodeError>,
    /// The run failed because `--session` named a session that no longer exists.
    pub stale_session: bool,
    /// The end of the non-JSON output (OpenCode's stderr), ANSI stripped, at most 8 KiB.
    pub stderr_tail: String,
    /// At least one OpenCode JSON event was seen.
    pub saw_event: bool,
    /// Number of `step_finish` events (model requests).
    pub steps: u32,
    /// Number of tool calls that ended in error (failed or permission rejected).
    pub tool_errors: u32,
    /// The reason of the last `step_finish`: `stop`, or `tool-calls` when the run ended on a
    /// tool step (e.g. an agent step limit).
    pub last_step_reason: Option<String>,
    /// Lines longer than [`MAX_LINE_BYTES`](super::MAX_LINE_BYTES), cut before parsing.
    pub truncated_lines: u64,
}

impl RunOutput {
    /// A one-line explanation of a failed run for the user, `None` when it succeeded.
    pub fn error_message(&self) -> Option<String> {
        match self.outcome {
            Outcome::Succeeded => None,
            Outcome::LlmError => Some(match &self.last_error {
                Some(error) => describe_error(error),
                None => "OpenCode reported an error".to_owned(),
            }),
            Outcome::SessionNotFound => Some(
                "the saved OpenCode session no longer exists (Session not found); \
                 start a fresh session"
                    .to_owned(),
            ),
            Outcome::Failed => {
                let code = self
                    .exit_code
                    .map_or_else(|| "?".to_owned(), |c| c.to_string());
                Some(match stderr_headline(&self.stderr_tail) {
                    Some(line) => format!("opencode exited with code {code}: {line}"),
                    None => format!("opencode exited with code {code} and printed no error"),
                })
            }
            Outcome::NoExitCode => {
                Some("the OpenCode container ended without an exit code".to_owned())
            }
        }
    }
}

fn describe_error(error: &OpenCodeError) -> String {
    match error.status_code {
        Some(status) => format!("{} (HTTP {status}): {}", error.name, error.message),
        None => format!("{}: {}", error.name, error.message),
    }
}

/// The line of the stderr tail that best says why OpenCode failed: its own last `Error: ...`
/// line, else the first non-empty line (a runtime error such as `EACCES: ...` comes first and
/// is followed by its details).
fn stderr_headline(tail: &str) -> Option<&str> {
    let mut lines = tail.lines().map(str::trim);
    lines
        .clone()
        .rfind(|l| l.starts_with("Error:"))
        .or_else(|| lines.find(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_is_opencodes_last_error_line_else_the_first_line() {
        let tail = "\nwarning: slow disk\nError: first\nstack\nError: You must provide a message";
        assert_eq!(
            stderr_headline(tail),
            Some("Error: You must provide a message")
        );
        assert_eq!(
            stderr_headline("\n  EACCES: denied\n    path: x"),
            Some("EACCES: denied")
        );
        assert_eq!(stderr_headline("\n \n"), None);
    }
}
