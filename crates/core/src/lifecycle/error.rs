//! Why a run could not happen: [`RunError`], which wraps the error of the phase that failed,
//! and the one classification of Kubernetes API failures every phase (and the CLI) shares.
//!
//! Every error here has a stable [`ErrorCode`] (`code()`) and a message that reads after
//! "failed to …", names the object and ends with what to do. Where a Kubernetes API call caused
//! the error, its `kube::Error` is the error's `source()`, for callers that match on it — and its
//! text is already part of the message, which is what users have always seen: a printer of cause
//! chains stops at these errors instead of printing the API's message twice.

use std::fmt;

use super::cluster::ClusterError;
use super::guard::GuardError;
use super::introspect::DiscoverError;
use super::objects::ObjectsError;
use crate::config::ConfigError;
use crate::error_code::ErrorCode;
use crate::manifest::ManifestError;

/// What a 403 from the API tells the engine's operator to do.
const ENGINE_FORBIDDEN: &str =
    "grant the engine's service account the missing rule (`opencode-k8s rbac` prints them all)";

/// What a 403 tells the operator of a CLI command to do: their own credentials were refused.
const OPERATOR_FORBIDDEN: &str = "`opencode-k8s doctor` names the rule to add";

/// The stable code of an API failure: 403 → `k8s_forbidden`, no answer from the API at all →
/// `k8s_api_unreachable`, any other status → `fallback` (what the failed step stands for).
pub(crate) fn api_code(err: &kube::Error, fallback: ErrorCode) -> ErrorCode {
    match err {
        kube::Error::Api(status) if status.code == 403 => ErrorCode::K8sForbidden,
        kube::Error::Api(_) => fallback,
        _ => ErrorCode::K8sApiUnreachable,
    }
}

/// An API failure as it reads after "failed to <what>: ": the API's own message with its status,
/// and what to do for a 403 or a connection failure. Pairs with [`api_code`].
pub(crate) struct ApiCause<'a> {
    err: &'a kube::Error,
    forbidden: &'static str,
}

impl<'a> ApiCause<'a> {
    /// A failure of the engine's own service account.
    pub(crate) const fn engine(err: &'a kube::Error) -> Self {
        Self {
            err,
            forbidden: ENGINE_FORBIDDEN,
        }
    }

    /// A failure of the credentials an operator's command runs with.
    const fn operator(err: &'a kube::Error) -> Self {
        Self {
            err,
            forbidden: OPERATOR_FORBIDDEN,
        }
    }
}

impl fmt::Display for ApiCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.err {
            kube::Error::Api(status) if status.code == 403 => {
                write!(f, "{}; {}", status.message, self.forbidden)
            }
            kube::Error::Api(status) => write!(f, "{} ({})", status.message, status.code),
            other => write!(f, "{other}; check that the cluster API is reachable"),
        }
    }
}

/// An API call of an operator's command (outside a run) failed while doing `what`. Classified
/// like the engine's own calls: 403 → `k8s_forbidden`, no answer → `k8s_api_unreachable`, any
/// other status → `adapter_internal`.
///
/// The message includes the API's message (see the module doc); `source()` is the `kube::Error`.
#[derive(Debug, thiserror::Error)]
#[error("failed to {what}: {}", ApiCause::operator(.source))]
pub struct ApiError {
    what: String,
    #[source]
    source: kube::Error,
}

impl ApiError {
    /// `source` happened while doing `what` ("list the Jobs of run …").
    pub fn new(what: impl Into<String>, source: kube::Error) -> Self {
        Self {
            what: what.into(),
            source,
        }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        api_code(&self.source, ErrorCode::AdapterInternal)
    }
}

/// Reading the agent's output failed, so the run cannot be judged from it.
///
/// The message includes the API's message (see the module doc); `source()` is the `kube::Error`.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The API refused every read of the pod's log for the whole bound.
    #[error("failed to read the output of pod {pod} (refused for {secs} s): {}", RefusedCause(.source))]
    Refused {
        /// The agent pod.
        pod: String,
        /// How long every read was refused.
        secs: u64,
        /// The last refusal.
        #[source]
        source: kube::Error,
    },
    /// The task following the log panicked or was aborted.
    #[error("the log follower failed: {source}; the output is incomplete")]
    Follower {
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl OutputError {
    /// `k8s_forbidden` for a 401 or 403, `adapter_internal` for a failed follower, else
    /// `k8s_api_unreachable`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Refused {
                source: kube::Error::Api(status),
                ..
            } if status.code == 401 => ErrorCode::K8sForbidden,
            Self::Refused { source, .. } => api_code(source, ErrorCode::K8sApiUnreachable),
            Self::Follower { .. } => ErrorCode::AdapterInternal,
        }
    }
}

/// A refused log read: a 401 means the engine's own credentials are no longer accepted.
struct RefusedCause<'a>(&'a kube::Error);

impl fmt::Display for RefusedCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            kube::Error::Api(status) if status.code == 401 => write!(
                f,
                "{} (401); check the engine's credentials",
                status.message
            ),
            other => ApiCause::engine(other).fmt(f),
        }
    }
}

/// A run that could not be started or followed: the error of the phase that failed. Carries the
/// same stable code ([`RunError::code`]) a failed [`RunResult`](super::RunResult) would.
///
/// Its Display is the phase error's message, unchanged, and `source()` is the phase error's
/// source: for a refused API call that is the `kube::Error`, whose text the message already
/// includes (see the module doc).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The agent configuration was rejected; nothing was created.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No client for the configured cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The Paperclip pod could not be read or inherited from.
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    /// The run's objects cannot be rendered (config, Paperclip pod, prompt size); nothing was
    /// created.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Another run of the agent kept it, or the agent's Lease or Jobs could not be read.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// The run's Secret, NetworkPolicy or Job could not be created.
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    /// The agent's output could not be read.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A reattach's output checkpoint is not one the engine produced; nothing was created.
    #[error(
        "output checkpoint {checkpoint:?} is not one the engine produced (expected `<RFC 3339 timestamp>/<count>`)"
    )]
    Checkpoint {
        /// The checkpoint as given.
        checkpoint: String,
    },
}

impl RunError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Config(err) => err.code(),
            Self::Cluster(err) => err.code(),
            Self::Discover(err) => err.code(),
            Self::Manifest(err) => err.code(),
            Self::Guard(err) => err.code(),
            Self::Objects(err) => err.code(),
            Self::Output(err) => err.code(),
            Self::Checkpoint { .. } => ErrorCode::ConfigInvalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::lifecycle::{DeleteError, Leftovers};

    /// What the API server answers with `code`.
    fn refusal(code: u16, message: &str) -> kube::Error {
        let status = json!({"status": "Failure", "code": code, "message": message});
        kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
    }

    fn no_connection() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::other("connection refused")))
    }

    /// The `kube::Error` under `err`, as a program matching on it finds it.
    fn kube_source(err: &RunError) -> &kube::Error {
        err.source()
            .and_then(|source| source.downcast_ref::<kube::Error>())
            .expect("the kube::Error is the source")
    }

    #[test]
    fn a_forbidden_secret_says_what_to_grant_and_keeps_the_api_error() {
        let err = RunError::from(ObjectsError::CreateSecret {
            namespace: "agents".into(),
            name: "oc-run-1".into(),
            source: refusal(
                403,
                r#"secrets is forbidden: User "system:serviceaccount:paperclip:paperclip" cannot create resource "secrets""#,
            ),
        });
        assert_eq!(err.code(), ErrorCode::K8sForbidden);
        assert_eq!(
            err.to_string(),
            r#"failed to create Secret agents/oc-run-1: secrets is forbidden: User "system:serviceaccount:paperclip:paperclip" cannot create resource "secrets"; grant the engine's service account the missing rule (`opencode-k8s rbac` prints them all)"#
        );
        assert!(
            matches!(kube_source(&err), kube::Error::Api(status) if status.code == 403),
            "{err:?}"
        );
        assert!(matches!(
            err,
            RunError::Objects(ObjectsError::CreateSecret { .. })
        ));
    }

    #[test]
    fn a_refused_job_names_what_the_run_could_not_take_back() {
        let left = DeleteError::Secret {
            namespace: "agents".into(),
            name: "oc-run-1".into(),
            source: no_connection(),
        };
        let err = RunError::from(ObjectsError::CreateJob {
            namespace: "agents".into(),
            name: "oc-run-1".into(),
            source: refusal(422, "Job.batch \"oc-run-1\" is invalid"),
            leftovers: Leftovers(vec![left]),
        });
        assert_eq!(err.code(), ErrorCode::K8sJobCreateFailed);
        assert_eq!(
            err.to_string(),
            "failed to create Job agents/oc-run-1: Job.batch \"oc-run-1\" is invalid (422); this run created objects it could not remove, delete them: Secret agents/oc-run-1 (failed to delete Secret agents/oc-run-1: ServiceError: connection refused; check that the cluster API is reachable)"
        );
        let RunError::Objects(objects) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(objects.leftovers()[0].code(), ErrorCode::K8sApiUnreachable);
        assert!(matches!(kube_source(&err), kube::Error::Api(status) if status.code == 422));
    }

    #[test]
    fn no_answer_from_the_api_is_unreachable_whatever_the_step() {
        let err = RunError::from(GuardError::ListJobs {
            namespace: "agents".into(),
            agent: "agent-1".into(),
            source: no_connection(),
        });
        assert_eq!(err.code(), ErrorCode::K8sApiUnreachable);
        assert_eq!(
            err.to_string(),
            "failed to list the Jobs of agent agent-1 in namespace agents: ServiceError: connection refused; check that the cluster API is reachable"
        );
        let err = RunError::from(GuardError::ListJobs {
            namespace: "agents".into(),
            agent: "agent-1".into(),
            source: refusal(500, "etcdserver: request timed out"),
        });
        assert_eq!(
            err.code(),
            ErrorCode::K8sConcurrencyGuardUnreachable,
            "{err}"
        );
    }

    #[test]
    fn refused_output_reads_are_forbidden_for_401_and_403_only() {
        let output = |code: u16| {
            RunError::from(OutputError::Refused {
                pod: "oc-run-1-x7k2p".into(),
                secs: 120,
                source: refusal(code, "Unauthorized"),
            })
        };
        let unauthorized = output(401);
        assert_eq!(unauthorized.code(), ErrorCode::K8sForbidden);
        assert_eq!(
            unauthorized.to_string(),
            "failed to read the output of pod oc-run-1-x7k2p (refused for 120 s): Unauthorized (401); check the engine's credentials"
        );
        assert_eq!(output(403).code(), ErrorCode::K8sForbidden);
        assert_eq!(output(503).code(), ErrorCode::K8sApiUnreachable);
    }

    #[test]
    fn another_run_keeping_the_agent_says_how_long_was_waited() {
        let err = RunError::from(GuardError::Busy {
            holder: "paperclip-0/7.1/run-0".into(),
            waited: Duration::from_secs(1800),
        });
        assert_eq!(err.code(), ErrorCode::K8sConcurrentRunBlocked);
        assert_eq!(
            err.to_string(),
            "another run of this agent (paperclip-0/7.1/run-0) did not finish within 1800 s; let it finish or cancel it, then retry"
        );
        assert!(err.source().is_none());
    }

    #[test]
    fn an_operators_forbidden_call_points_at_doctor() {
        let err = ApiError::new("get pod oc-run-1-x7k2p", refusal(403, "pods is forbidden"));
        assert_eq!(err.code(), ErrorCode::K8sForbidden);
        assert_eq!(
            err.to_string(),
            "failed to get pod oc-run-1-x7k2p: pods is forbidden; `opencode-k8s doctor` names the rule to add"
        );
        let err = ApiError::new("get pod oc-run-1-x7k2p", refusal(404, "not found"));
        assert_eq!(err.code(), ErrorCode::AdapterInternal);
    }
}
