//! How the CLI shows the end of a command: a run's result (`run` and `demo` print the same
//! lines), the exit status it maps to, and a failure as message, cause chain, code and hint.

use std::fmt::Write as _;
use std::process::ExitCode;

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{RunResult, RunStatus};

use crate::exit_status;

/// A run's result in a few lines (each ending in a newline), for after the agent's output.
pub(crate) fn result_text(result: &RunResult) -> String {
    let mut out = headline(result);
    for (label, text) in details(result) {
        let _ = writeln!(out, "  {label:<9} {}", text.replace('\n', "\n            "));
    }
    if result.status != RunStatus::Succeeded && !result.output_tail.trim().is_empty() {
        let _ = writeln!(
            out,
            "  output tail:\n    {}",
            result.output_tail.trim_end().replace('\n', "\n    ")
        );
    }
    out
}

/// `[opencode-k8s] result: <status> (<exit>, <code>), Job <namespace>/<name>`.
fn headline(result: &RunResult) -> String {
    let status = match result.status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::TimedOut => "timed out",
        RunStatus::Cancelled => "cancelled",
    };
    let exit = result
        .exit_code
        .map_or_else(|| "no exit code".to_owned(), |c| format!("exit {c}"));
    let code = result
        .error_code
        .map(|c| format!(", {c}"))
        .unwrap_or_default();
    format!(
        "[opencode-k8s] result: {status} ({exit}{code}), Job {}/{}\n",
        result.namespace, result.job_name
    )
}

/// The labelled lines under the headline, in the order they are shown.
fn details(result: &RunResult) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if let Some(message) = &result.error_message {
        lines.push(("error:", message.clone()));
    }
    if let Some(session) = &result.session {
        let cwd = session
            .cwd
            .as_deref()
            .map(|c| format!(" (cwd {c})"))
            .unwrap_or_default();
        let id = &session.session_id;
        lines.push(("session:", format!("{id}{cwd}; resume with --session {id}")));
    }
    let usage = &result.usage;
    lines.push((
        "tokens:",
        format!(
            "{} in, {} cached, {} out",
            usage.input_tokens, usage.cached_input_tokens, usage.output_tokens
        ),
    ));
    lines.push((
        "cost:",
        format!(
            "${:.6} ({}/{})",
            result.cost_usd, result.provider, result.model
        ),
    ));
    if result.attempts > 1 {
        lines.push((
            "attempts:",
            format!("{} (the resume was retried fresh)", result.attempts),
        ));
    }
    if let Some(summary) = &result.summary {
        lines.push(("summary:", summary.trim_end().to_owned()));
    }
    lines
}

/// The exit status of a run that came back with a result: 0 when it succeeded, else the status
/// of its error code.
pub(crate) fn result_exit_code(result: &RunResult) -> ExitCode {
    match result.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(exit_status(
            result.error_code.unwrap_or(ErrorCode::AdapterInternal),
        )),
    }
}

/// A failure as the operator sees it: the message, its causes, the stable code and where the
/// README explains that code.
pub(crate) fn error_text(err: &anyhow::Error, code: ErrorCode) -> String {
    let mut out = format!("error: {err}\n");
    let told = err
        .chain()
        .position(crate::tells_its_causes)
        .map_or(usize::MAX, |at| at + 1);
    for cause in err.chain().take(told).skip(1) {
        let _ = writeln!(out, "  caused by: {cause}");
    }
    let _ = writeln!(out, "code: {code}");
    let _ = writeln!(
        out,
        "hint: README.md, Troubleshooting, `{code}`: what it means, what to check, how to fix it"
    );
    out
}

#[cfg(test)]
mod tests {
    use opencode_k8s_core::lifecycle::ApiError;

    use super::*;

    #[test]
    fn the_error_names_its_causes_code_and_hint() {
        let err = anyhow::Error::new(std::io::Error::other("connection refused"))
            .context("failed to read the Paperclip pod paperclip/paperclip-0");
        insta::assert_snapshot!(error_text(&err, ErrorCode::K8sApiUnreachable), @r"
        error: failed to read the Paperclip pod paperclip/paperclip-0
          caused by: connection refused
        code: k8s_api_unreachable
        hint: README.md, Troubleshooting, `k8s_api_unreachable`: what it means, what to check, how to fix it
        ");
        let status = serde_json::from_value(serde_json::json!({
            "code": 403,
            "reason": "Forbidden",
            "message": "jobs.batch is forbidden: User \"dev\" cannot list resource \"jobs\""
        }))
        .unwrap();
        let api = ApiError::new(
            "list the Jobs of run r1",
            kube::Error::Api(Box::new(status)),
        );
        let code = api.code();
        // The API's message is part of the error's own; it is not repeated as a cause.
        insta::assert_snapshot!(error_text(&anyhow::Error::new(api), code), @r#"
        error: failed to list the Jobs of run r1: jobs.batch is forbidden: User "dev" cannot list resource "jobs"; `opencode-k8s doctor` names the rule to add
        code: k8s_forbidden
        hint: README.md, Troubleshooting, `k8s_forbidden`: what it means, what to check, how to fix it
        "#);
    }
}
