//! What a run returns: the outcome Paperclip records, judged from what its attempts produced.
//! Why a run could not happen at all is [`RunError`](super::RunError).

use serde::Serialize;

use super::status::{Blocker, Exit, JobEnd};
use crate::config::AgentConfig;
use crate::error_code::ErrorCode;
use crate::manifest::RunRequest;
use crate::parse::{RunOutput, Usage};

/// How the run ended, in Paperclip's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The agent exited 0 (tool errors and rejected permissions included).
    Succeeded,
    /// The agent or its pod failed; see the error code.
    Failed,
    /// `timeoutSec` (the Job's `activeDeadlineSeconds`) ran out.
    TimedOut,
    /// The operator cancelled the run; the Job was deleted.
    Cancelled,
}

/// What Paperclip stores to resume the session next time. `session_id` alone is enough; `cwd`
/// lets the next run decide whether resuming is safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionParams {
    /// OpenCode's `ses_...`.
    pub session_id: String,
    /// The working directory the session was created in.
    pub cwd: Option<String>,
}

/// The outcome of a run that got as far as a Job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// How it ended.
    pub status: RunStatus,
    /// The agent container's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The Job's deadline ran out.
    pub timed_out: bool,
    /// Stable code of a run that did not succeed.
    pub error_code: Option<ErrorCode>,
    /// What went wrong, in one or two lines, with what to do.
    pub error_message: Option<String>,
    /// The session to resume next time, if OpenCode reported one.
    pub session: Option<SessionParams>,
    /// The saved session must be forgotten (it could not be resumed, even after a fresh retry).
    pub clear_session: bool,
    /// Tokens of this run (every attempt added up).
    pub usage: Usage,
    /// USD cost OpenCode computed for this run.
    pub cost_usd: f64,
    /// `provider` part of the model.
    pub provider: String,
    /// `model` part of the model.
    pub model: String,
    /// The agent's final message.
    pub summary: Option<String>,
    /// The last lines that were not OpenCode events (errors, stack traces), ANSI removed.
    pub output_tail: String,
    /// Namespace of the Job.
    pub namespace: String,
    /// Name of the (last) Job.
    pub job_name: String,
    /// Attempts made: 2 when a stale or hanging resume was retried fresh.
    pub attempts: u32,
}

/// A run's status, error code and message.
type Verdict = (RunStatus, Option<ErrorCode>, Option<String>);

/// The verdict of a run that failed with `code`.
fn failed(code: ErrorCode, message: String) -> Verdict {
    (RunStatus::Failed, Some(code), Some(message))
}

/// The verdict of a run whose `timeoutSec` ran out.
fn timed_out(config: &AgentConfig) -> Verdict {
    (
        RunStatus::TimedOut,
        Some(ErrorCode::Timeout),
        Some(format!(
            "the run exceeded timeoutSec ({} s) and was stopped",
            config.timeout_sec
        )),
    )
}

/// What one or more attempts of a run produced, before it is judged.
#[derive(Debug)]
pub(crate) struct Harvest {
    pub(crate) output: RunOutput,
    pub(crate) exit: Option<Exit>,
    pub(crate) job_end: Option<JobEnd>,
    pub(crate) blocker: Option<Blocker>,
    /// The agent's output could not be read completely (the API refused, the kubelet failed).
    pub(crate) output_error: Option<Blocker>,
    pub(crate) cancelled: bool,
    pub(crate) vanished: bool,
    pub(crate) hung_resume: bool,
    pub(crate) attempts: u32,
}

impl Harvest {
    /// This attempt followed by a retry: the retry decides the outcome; usage and cost add up.
    pub(crate) fn then(self, mut next: Harvest) -> Harvest {
        let (usage, previous) = (&mut next.output.usage, &self.output.usage);
        usage.input_tokens += previous.input_tokens;
        usage.cached_input_tokens += previous.cached_input_tokens;
        usage.output_tokens += previous.output_tokens;
        next.output.cost_usd += self.output.cost_usd;
        next.attempts += self.attempts;
        next
    }

    /// Status, error code and message, in the order that decides them: a cancel, a blocker, output
    /// that could not be read completely, the container's own exit (an exit 0 is success whatever
    /// any timer thought), then the Job.
    fn judge(&self, config: &AgentConfig) -> Verdict {
        if self.cancelled {
            return (
                RunStatus::Cancelled,
                Some(ErrorCode::Cancelled),
                Some("cancelled; the Job was deleted".to_owned()),
            );
        }
        if let Some(blocker) = &self.blocker {
            return failed(blocker.code, blocker.message.clone());
        }
        // Whatever the exit code: a result read from incomplete output is not a success.
        if let Some(error) = &self.output_error {
            return failed(error.code, error.message.clone());
        }
        match &self.exit {
            Some(exit) => self.judge_exit(exit, config),
            None if self.hung_resume => failed(
                ErrorCode::SessionUnavailable,
                "the session could not be resumed".to_owned(),
            ),
            None => self.judge_job_end(config),
        }
    }

    /// The container exited: its exit code decides, unless memory or the deadline killed it.
    fn judge_exit(&self, exit: &Exit, config: &AgentConfig) -> Verdict {
        if exit.code == 0 {
            return (RunStatus::Succeeded, None, None);
        }
        if exit.reason == "OOMKilled" {
            return failed(
                ErrorCode::K8sOomKilled,
                format!(
                    "the agent container ran out of memory (OOMKilled, exit {}); raise resources.limits.memory",
                    exit.code
                ),
            );
        }
        if self.deadline_exceeded() {
            return timed_out(config);
        }
        let code = self
            .output
            .outcome
            .error_code()
            .unwrap_or(ErrorCode::OpencodeFailed);
        let message = self
            .output
            .error_message()
            .unwrap_or_else(|| format!("opencode exited with code {}", exit.code));
        failed(code, message)
    }

    /// No exit was seen: the Job's end decides, or its absence.
    fn judge_job_end(&self, config: &AgentConfig) -> Verdict {
        match &self.job_end {
            _ if self.deadline_exceeded() => timed_out(config),
            Some(JobEnd::Complete) => (RunStatus::Succeeded, None, None),
            Some(JobEnd::Failed { reason, message }) => {
                failed(ErrorCode::OpencodeFailed, format!("the Job failed ({reason}): {message}"))
            }
            None if self.vanished => failed(
                ErrorCode::K8sJobDeletedExternally,
                "the Job was deleted before its result could be read; check who deletes Jobs in this namespace".to_owned(),
            ),
            None => failed(ErrorCode::AdapterInternal, "the run ended without a result; this is a bug".to_owned()),
        }
    }

    /// The Job's `activeDeadlineSeconds` ran out.
    fn deadline_exceeded(&self) -> bool {
        matches!(&self.job_end, Some(JobEnd::Failed { reason, .. }) if reason == "DeadlineExceeded")
    }

    pub(crate) fn into_result(
        self,
        config: &AgentConfig,
        request: &RunRequest,
        namespace: &str,
        job_name: &str,
    ) -> RunResult {
        let (status, error_code, error_message) = self.judge(config);
        let cwd = request.cwd.clone().or_else(|| config.cwd.clone());
        let (provider, model) = config
            .model
            .split_once('/')
            .unwrap_or(("", config.model.as_str()));
        let output = self.output;
        RunResult {
            status,
            exit_code: self.exit.as_ref().map(|e| e.code),
            timed_out: status == RunStatus::TimedOut,
            clear_session: error_code == Some(ErrorCode::SessionUnavailable),
            error_code,
            error_message,
            session: output
                .session_id
                .map(|session_id| SessionParams { session_id, cwd }),
            usage: output.usage,
            cost_usd: output.cost_usd,
            provider: provider.to_owned(),
            model: model.to_owned(),
            summary: output.summary,
            output_tail: output.stderr_tail,
            namespace: namespace.to_owned(),
            job_name: job_name.to_owned(),
            attempts: self.attempts,
        }
    }
}
