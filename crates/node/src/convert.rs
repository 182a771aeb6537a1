//! The typed objects crossing the boundary, and their conversions to and from core types.

use std::collections::{BTreeMap, HashMap};

use napi_derive::napi;
use opencode_k8s_core::config::{FieldKind, FieldSpec, SecretString};
use opencode_k8s_core::event::RunEvent;
use opencode_k8s_core::lifecycle::{RunError, RunResult, RunStatus};
use opencode_k8s_core::manifest::{RunRequest, SessionResume};
use opencode_k8s_core::resume::ResumeDecision;

/// Engine-wide settings. Paperclip passes none; tests name the pod to inherit from.
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct EngineOptionsJs {
    /// Namespace of the Paperclip pod the Jobs inherit from (default: from the environment).
    pub self_pod_namespace: Option<String>,
    /// Name of that pod (default: `POD_NAME` or `HOSTNAME`).
    pub self_pod_name: Option<String>,
}

/// One agent turn to run, as the JavaScript layer assembled it with the host's helpers.
#[napi(object)]
#[derive(Clone)]
pub struct RunRequestJs {
    /// Paperclip run id.
    pub run_id: String,
    /// Paperclip agent id.
    pub agent_id: String,
    /// Paperclip company id.
    pub company_id: String,
    /// Agent display name.
    pub agent_name: Option<String>,
    /// Paperclip task key (sessions and reattach are per task).
    pub task_key: Option<String>,
    /// The rendered prompt, fed to OpenCode on stdin, built for the engine's `resumeDecision`.
    pub prompt: String,
    /// The full prompt for a fresh session when `prompt` is the short resume prompt: the engine
    /// uses it for any attempt that does not resume (the fresh retry after a stale session).
    pub fresh_prompt: Option<String>,
    /// The workspace cwd of this run.
    pub cwd: Option<String>,
    /// `PAPERCLIP_*` variables computed by the host.
    pub paperclip_env: HashMap<String, String>,
    /// The agent's Paperclip token (`PAPERCLIP_API_KEY`); goes only into the per-run Secret.
    pub api_key: Option<String>,
    /// The saved session to resume, if any.
    pub resume: Option<SessionJs>,
}

/// Shows the API key only by length: a request may end up in a debug log.
impl std::fmt::Debug for RunRequestJs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRequestJs")
            .field("run_id", &self.run_id)
            .field("agent_id", &self.agent_id)
            .field("task_key", &self.task_key)
            .field("api_key", &self.api_key.as_ref().map(String::len))
            .finish_non_exhaustive()
    }
}

/// Whether a run resumes its saved session, as the engine decides it.
#[napi(object)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeDecisionJs {
    /// `new` (no saved session), `resumed` (`--session` is passed) or `fresh` (a saved session
    /// is not resumed).
    pub decision: String,
    /// The session resumed.
    pub session_id: Option<String>,
    /// Why a saved session is not resumed, for the run log.
    pub reason: Option<String>,
}

impl From<ResumeDecision> for ResumeDecisionJs {
    fn from(decision: ResumeDecision) -> Self {
        let (name, session_id, reason) = match decision {
            ResumeDecision::New => ("new", None, None),
            ResumeDecision::Resumed { session_id } => ("resumed", Some(session_id), None),
            ResumeDecision::Fresh { reason } => ("fresh", None, Some(reason)),
        };
        Self {
            decision: name.to_owned(),
            session_id,
            reason,
        }
    }
}

/// An OpenCode session: `sessionId` alone is enough; `cwd` tells whether resuming is safe.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct SessionJs {
    /// OpenCode's `ses_...`.
    pub session_id: String,
    /// The working directory the session was created in.
    pub cwd: Option<String>,
}

impl From<RunRequestJs> for RunRequest {
    fn from(js: RunRequestJs) -> Self {
        RunRequest {
            run_id: js.run_id,
            agent_id: js.agent_id,
            company_id: js.company_id,
            agent_name: js.agent_name,
            task_key: js.task_key,
            prompt: js.prompt,
            fresh_prompt: js.fresh_prompt,
            cwd: js.cwd,
            paperclip_env: js.paperclip_env.into_iter().collect::<BTreeMap<_, _>>(),
            api_key: js.api_key.map(SecretString::new),
            resume: js.resume.map(|s| SessionResume {
                session_id: s.session_id,
                cwd: s.cwd,
            }),
            attempt: 1,
        }
    }
}

/// One run event for the host's log. `type` is `output` (agent output, newlines included),
/// `notice` (what the engine did, one line) or `kube` (a Kubernetes Event, one line).
#[napi(object)]
#[derive(Debug, Clone)]
pub struct RunEventJs {
    /// `output`, `notice` or `kube`.
    #[napi(js_name = "type")]
    pub kind: String,
    /// The output text, or the event's run-log line (without a newline).
    pub text: String,
    /// Where output stands after this chunk (persist it to continue after a host restart).
    pub checkpoint: Option<String>,
    /// A Kubernetes `Warning` event.
    pub warning: bool,
}

impl From<RunEvent> for RunEventJs {
    fn from(event: RunEvent) -> Self {
        let line = event.to_string();
        match event {
            RunEvent::Output { text, checkpoint } => RunEventJs {
                kind: "output".into(),
                text,
                checkpoint,
                warning: false,
            },
            RunEvent::Notice { .. } => RunEventJs {
                kind: "notice".into(),
                text: line,
                checkpoint: None,
                warning: false,
            },
            RunEvent::Kube { warning, .. } => RunEventJs {
                kind: "kube".into(),
                text: line,
                checkpoint: None,
                warning,
            },
        }
    }
}

/// Token usage of a run (every attempt added up).
#[napi(object)]
#[derive(Debug, Clone)]
pub struct UsageJs {
    /// Input tokens not served from the provider's cache.
    pub input_tokens: f64,
    /// Input tokens read from the cache.
    pub cached_input_tokens: f64,
    /// Output tokens, reasoning included.
    pub output_tokens: f64,
}

/// The outcome of a run that got as far as a Job.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct RunResultJs {
    /// `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub status: String,
    /// The agent container's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The Job's deadline ran out.
    pub timed_out: bool,
    /// Stable code of a run that did not succeed.
    pub error_code: Option<String>,
    /// What went wrong, with what to do.
    pub error_message: Option<String>,
    /// The session to resume next time.
    pub session: Option<SessionJs>,
    /// The saved session must be forgotten.
    pub clear_session: bool,
    /// Tokens.
    pub usage: UsageJs,
    /// USD cost OpenCode computed.
    pub cost_usd: f64,
    /// `provider` part of the model.
    pub provider: String,
    /// `model` part of the model.
    pub model: String,
    /// The agent's final message.
    pub summary: Option<String>,
    /// The last non-event output lines (errors, stack traces), ANSI removed.
    pub output_tail: String,
    /// Namespace of the Job.
    pub namespace: String,
    /// Name of the (last) Job.
    pub job_name: String,
    /// Attempts made (2 after a fresh retry of a stale resume).
    pub attempts: u32,
}

/// Token counts fit a JavaScript number exactly far beyond any real run.
#[expect(
    clippy::cast_precision_loss,
    reason = "token counts stay far below 2^53"
)]
fn tokens(n: u64) -> f64 {
    n as f64
}

impl From<RunResult> for RunResultJs {
    fn from(r: RunResult) -> Self {
        let status = match r.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
        };
        RunResultJs {
            status: status.into(),
            exit_code: r.exit_code,
            timed_out: r.timed_out,
            error_code: r.error_code.map(|c| c.as_str().to_owned()),
            error_message: r.error_message,
            session: r.session.map(|s| SessionJs {
                session_id: s.session_id,
                cwd: s.cwd,
            }),
            clear_session: r.clear_session,
            usage: UsageJs {
                input_tokens: tokens(r.usage.input_tokens),
                cached_input_tokens: tokens(r.usage.cached_input_tokens),
                output_tokens: tokens(r.usage.output_tokens),
            },
            cost_usd: r.cost_usd,
            provider: r.provider,
            model: r.model,
            summary: r.summary,
            output_tail: r.output_tail,
            namespace: r.namespace,
            job_name: r.job_name,
            attempts: r.attempts,
        }
    }
}

/// Why a run could not be started or followed, with its stable code.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct RunErrorJs {
    /// Stable snake_case code (`config_invalid`, `k8s_forbidden`, `adapter_internal`, ...).
    pub code: String,
    /// What failed and what to do.
    pub message: String,
}

impl From<RunError> for RunErrorJs {
    fn from(e: RunError) -> Self {
        RunErrorJs {
            code: e.code().as_str().to_owned(),
            message: e.to_string(),
        }
    }
}

/// Exactly one of `result` and `error` is set. A run whose agent failed is a `result`;
/// `error` means the run could not happen or the engine broke.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct RunOutcomeJs {
    /// The run reached an outcome.
    pub result: Option<RunResultJs>,
    /// The run could not be started or followed.
    pub error: Option<RunErrorJs>,
}

/// One environment check, in Paperclip's `AdapterEnvironmentCheck` shape.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct CheckJs {
    /// Stable code of the check.
    pub code: String,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// One line.
    pub message: String,
    /// More detail.
    pub detail: Option<String>,
    /// What to do.
    pub hint: Option<String>,
}

/// One agent configuration field, from core's single table (for the UI schema and the docs).
#[napi(object)]
#[derive(Debug, Clone)]
pub struct ConfigFieldJs {
    /// The key in `adapterConfig` (nested fields use dots).
    pub name: String,
    /// The form's label.
    pub label: String,
    /// The form's section: `Model`, `Kubernetes`, `Resources`, `Session` or `Advanced`.
    pub group: String,
    /// `text`, `textarea`, `integer`, `boolean`, `quantity`, `choice`, `map`, `tolerations`
    /// or `args`.
    pub kind: String,
    /// The allowed values of a `choice`.
    pub options: Vec<String>,
    /// The default when absent.
    pub default: Option<String>,
    /// What is accepted, in the words error messages use.
    pub accepted: String,
    /// A one-line explanation.
    pub hint: String,
}

impl From<&FieldSpec> for ConfigFieldJs {
    fn from(spec: &FieldSpec) -> Self {
        let (kind, options): (&str, &[&str]) = match spec.kind {
            FieldKind::Text => ("text", &[]),
            FieldKind::Textarea => ("textarea", &[]),
            FieldKind::Integer => ("integer", &[]),
            FieldKind::Boolean => ("boolean", &[]),
            FieldKind::Quantity => ("quantity", &[]),
            FieldKind::Choice(options) => ("choice", options),
            FieldKind::Map => ("map", &[]),
            FieldKind::Tolerations => ("tolerations", &[]),
            FieldKind::Args => ("args", &[]),
        };
        ConfigFieldJs {
            name: spec.name.to_owned(),
            label: spec.label.to_owned(),
            group: spec.group.as_str().to_owned(),
            kind: kind.to_owned(),
            options: options.iter().map(|&o| o.to_owned()).collect(),
            default: spec.default.map(str::to_owned),
            accepted: spec.accepted.to_owned(),
            hint: spec.hint.to_owned(),
        }
    }
}
