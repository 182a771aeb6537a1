//! The one vocabulary of run events: the CLI prints them, the addon forwards them to Paperclip's
//! run log, tests assert on them. Agent output is data here, never a tracing event.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Something that happened during a run, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RunEvent {
    /// The agent's output (stdout and stderr interleaved, as the pod wrote them), delivered
    /// exactly once and in order. Chunks end at line boundaries, except the very last one when
    /// the process ended without a newline.
    Output {
        /// The text, newlines included.
        text: String,
        /// Where the output stands after this chunk. A host that persists the log can persist
        /// this too and hand it back to [`crate::lifecycle::Engine::reattach`] after a restart,
        /// to continue without repeating a line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<String>,
    },
    /// What the engine did or decided, in one line: created the Job, waiting for another run,
    /// resuming or not and why, retrying.
    Notice {
        /// The message.
        message: String,
    },
    /// A Kubernetes Event about the run's Job or pod, as it happened.
    Kube {
        /// `job/NAME` or `pod/NAME`.
        object: String,
        /// `Warning` events are the ones worth an operator's attention.
        warning: bool,
        /// The event's reason, e.g. `FailedScheduling`.
        reason: String,
        /// The event's message.
        message: String,
        /// How many times Kubernetes has seen it (repeated events are folded into one object).
        count: u32,
    },
}

impl RunEvent {
    /// A notice.
    pub fn notice(message: impl Into<String>) -> Self {
        Self::Notice {
            message: message.into(),
        }
    }

    /// Agent output, without a checkpoint.
    pub fn output(text: impl Into<String>) -> Self {
        Self::Output {
            text: text.into(),
            checkpoint: None,
        }
    }
}

/// How a non-output event reads in a run log: one prefixed line, without a newline.
impl fmt::Display for RunEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Output { text, .. } => f.write_str(text),
            Self::Notice { message } => write!(f, "[opencode-k8s] {message}"),
            Self::Kube {
                object,
                warning,
                reason,
                message,
                count,
            } => {
                let kind = if *warning { "Warning" } else { "Normal" };
                write!(f, "[k8s] {kind} {reason} {object}: {message}")?;
                if *count > 1 {
                    write!(f, " (x{count})")?;
                }
                Ok(())
            }
        }
    }
}

/// Where a run's events go. The CLI prints them; the addon awaits Paperclip's `onLog`, which
/// gives per-run backpressure: the engine reads no further output until the sink took the last.
pub trait RunSink: Send + Sync {
    /// Take one event.
    fn emit(&self, event: RunEvent) -> futures::future::BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_tagged_in_camel_case() {
        let event = RunEvent::Kube {
            object: "pod/oc-a-1".into(),
            warning: true,
            reason: "FailedScheduling".into(),
            message: "0/3 nodes are available".into(),
            count: 2,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "kube");
        assert_eq!(json["reason"], "FailedScheduling");
        assert_eq!(serde_json::from_value::<RunEvent>(json).unwrap(), event);
        assert_eq!(
            event.to_string(),
            "[k8s] Warning FailedScheduling pod/oc-a-1: 0/3 nodes are available (x2)"
        );
    }

    #[test]
    fn notices_are_prefixed() {
        assert_eq!(
            RunEvent::notice("created Job x").to_string(),
            "[opencode-k8s] created Job x"
        );
    }
}
