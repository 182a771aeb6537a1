//! The one list of stable error codes (DESIGN.md §7b).
//!
//! A run that fails carries exactly one of these codes. The same snake_case string appears in the
//! CLI's output, the JS result's `errorCode`, the docs' troubleshooting section and the tests, so
//! the strings never change once released: add new variants, never rename old ones. Codes the
//! seed adapter already used keep their meaning so existing dashboards keep working.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stable, user-facing failure code. Serializes as its snake_case string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// Validation of the agent configuration failed; nothing was created.
    ConfigInvalid,
    /// The prompt (with the other per-run secret values) cannot fit the per-run Secret.
    PromptTooLarge,
    /// No connection to a cluster could be made.
    K8sApiUnreachable,
    /// RBAC denied a verb the run needs.
    K8sForbidden,
    /// The agent's Jobs could not be listed for the concurrency guard (seed code).
    K8sConcurrencyGuardUnreachable,
    /// Another run of the agent outlived the wait bound (seed code).
    K8sConcurrentRunBlocked,
    /// The API refused the Job or the Secret.
    K8sJobCreateFailed,
    /// The pod could not be scheduled within its bound.
    K8sPodUnschedulable,
    /// The container did not start within its bound.
    K8sPodStartTimeout,
    /// `ErrImagePull` / `ImagePullBackOff`.
    K8sImagePullFailed,
    /// `CreateContainerConfigError`, e.g. a missing Secret key.
    K8sContainerConfigError,
    /// `FailedMount` or another volume mount error.
    K8sVolumeMountFailed,
    /// The container was terminated with reason `OOMKilled`.
    K8sOomKilled,
    /// The Job vanished before a result was read.
    K8sJobDeletedExternally,
    /// `activeDeadlineSeconds` was exceeded (Paperclip's own code).
    Timeout,
    /// The operator cancelled the run (Paperclip's own code).
    Cancelled,
    /// Resuming was impossible even after the in-run fresh retry.
    SessionUnavailable,
    /// OpenCode reported an `error` event.
    LlmApiError,
    /// OpenCode exited non-zero without an `error` event.
    OpencodeFailed,
    /// A bug in the engine.
    AdapterInternal,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::ConfigInvalid,
        ErrorCode::PromptTooLarge,
        ErrorCode::K8sApiUnreachable,
        ErrorCode::K8sForbidden,
        ErrorCode::K8sConcurrencyGuardUnreachable,
        ErrorCode::K8sConcurrentRunBlocked,
        ErrorCode::K8sJobCreateFailed,
        ErrorCode::K8sPodUnschedulable,
        ErrorCode::K8sPodStartTimeout,
        ErrorCode::K8sImagePullFailed,
        ErrorCode::K8sContainerConfigError,
        ErrorCode::K8sVolumeMountFailed,
        ErrorCode::K8sOomKilled,
        ErrorCode::K8sJobDeletedExternally,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::SessionUnavailable,
        ErrorCode::LlmApiError,
        ErrorCode::OpencodeFailed,
        ErrorCode::AdapterInternal,
    ];

    /// The stable string, e.g. `config_invalid`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::PromptTooLarge => "prompt_too_large",
            ErrorCode::K8sApiUnreachable => "k8s_api_unreachable",
            ErrorCode::K8sForbidden => "k8s_forbidden",
            ErrorCode::K8sConcurrencyGuardUnreachable => "k8s_concurrency_guard_unreachable",
            ErrorCode::K8sConcurrentRunBlocked => "k8s_concurrent_run_blocked",
            ErrorCode::K8sJobCreateFailed => "k8s_job_create_failed",
            ErrorCode::K8sPodUnschedulable => "k8s_pod_unschedulable",
            ErrorCode::K8sPodStartTimeout => "k8s_pod_start_timeout",
            ErrorCode::K8sImagePullFailed => "k8s_image_pull_failed",
            ErrorCode::K8sContainerConfigError => "k8s_container_config_error",
            ErrorCode::K8sVolumeMountFailed => "k8s_volume_mount_failed",
            ErrorCode::K8sOomKilled => "k8s_oom_killed",
            ErrorCode::K8sJobDeletedExternally => "k8s_job_deleted_externally",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::SessionUnavailable => "session_unavailable",
            ErrorCode::LlmApiError => "llm_api_error",
            ErrorCode::OpencodeFailed => "opencode_failed",
            ErrorCode::AdapterInternal => "adapter_internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not one of [`ErrorCode::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code `{0}`")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_string_and_serde() {
        for &code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s} is not snake_case"
            );
        }
        assert_eq!(seen.len(), 20);
    }

    #[test]
    fn unknown_code_is_rejected_with_its_text() {
        let err = "nope".parse::<ErrorCode>().unwrap_err();
        assert_eq!(err.to_string(), "unknown error code `nope`");
    }
}
