//! The real-cluster tier: every scenario drives the engine (or the CLI) against a real
//! Kubernetes cluster from `OPENCODE_K8S_TEST_KUBECONFIG`, in a namespace of its own, as a
//! ServiceAccount bound to the generated Role. Without a cluster each test prints that it was
//! skipped. Run one test at a time (`--test-threads=1`): some restart the API server, and all
//! share one node.

mod codes;
mod gc;
mod isolation;
mod output;
mod race;
mod reattach;
mod requests;
mod security;

use std::future::Future;
use std::time::{Duration, Instant};

use opencode_k8s_cluster_tests::{Record, Sandbox};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{Bounds, Engine, RunError, RunResult, RunStatus};
use opencode_k8s_core::manifest::RunRequest;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Bounds short enough for a test tier: a pod blocked or unschedulable fails in 10 s.
pub(crate) fn bounds() -> Bounds {
    Bounds {
        blocked: Duration::from_secs(10),
        unschedulable: Duration::from_secs(10),
        schedule: Duration::from_secs(60),
        start: Duration::from_secs(60),
        ..Bounds::default()
    }
}

/// `future`, or a panic naming `what` after `bound`.
pub(crate) async fn bounded<T>(bound: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {bound:?}"))
}

/// One run to its end (bounded), with what it printed and how long it took.
pub(crate) struct Outcome {
    pub(crate) result: Result<RunResult, RunError>,
    pub(crate) sink: Record,
    pub(crate) took: Duration,
}

impl Outcome {
    /// The run's error code, whether the run reached an outcome or not.
    pub(crate) fn code(&self) -> Option<ErrorCode> {
        match &self.result {
            Ok(result) => result.error_code,
            Err(err) => Some(err.code()),
        }
    }

    /// The error message, whether the run reached an outcome or not.
    pub(crate) fn message(&self) -> String {
        match &self.result {
            Ok(result) => result.error_message.clone().unwrap_or_default(),
            Err(err) => err.to_string(),
        }
    }

    /// The result; panics with the run log when the run did not reach an outcome.
    pub(crate) fn ok(&self) -> &RunResult {
        self.result
            .as_ref()
            .unwrap_or_else(|err| panic!("the run reaches an outcome: {err}\n{}", self.log()))
    }

    /// The result, which must be a success; panics with it and the run log otherwise.
    pub(crate) fn succeeded(&self) -> &RunResult {
        let result = self.ok();
        assert_eq!(
            result.status,
            RunStatus::Succeeded,
            "{result:?}\n{}",
            self.log()
        );
        result
    }

    /// The run log's non-output lines, for failure messages.
    pub(crate) fn log(&self) -> String {
        self.sink.lines().join("\n")
    }
}

pub(crate) async fn run(
    sandbox: &Sandbox,
    engine: &Engine,
    request: RunRequest,
    config: Value,
    bound: Duration,
) -> Outcome {
    let sink = Record::default();
    let started = Instant::now();
    let result = bounded(
        bound,
        "the run",
        engine.run(
            request,
            &sandbox.config(config),
            &sink,
            CancellationToken::new(),
        ),
    )
    .await;
    Outcome {
        result,
        sink,
        took: started.elapsed(),
    }
}

/// [`run`] by an engine of its own, with the tier's [`bounds`].
pub(crate) async fn run_once(
    sandbox: &Sandbox,
    request: RunRequest,
    config: Value,
    bound: Duration,
) -> Outcome {
    run(sandbox, &sandbox.engine(bounds()), request, config, bound).await
}

/// Until no object of the run (`oc-` Jobs, pods, Secrets) is left in the sandbox; how long
/// that took. Panics naming what stayed.
pub(crate) async fn wait_nothing_left(sandbox: &Sandbox, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut left = Vec::new();
        for kind in ["jobs", "pods", "secrets"] {
            for name in sandbox.names(kind, "oc-").await.expect("list") {
                left.push(format!("{kind}/{name}"));
            }
        }
        if left.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "still there after {bound:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
