//! The exported `Engine` class, its run handle, and the environment checks.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use napi_derive::napi;
use opencode_k8s_core::config::{AgentConfig, FIELDS};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{
    self, CheckStatus, DoctorTarget, EngineOptions, RunError, SelfPod,
};
use opencode_k8s_core::manifest;
use opencode_k8s_core::resume::{self, Saved};
use tokio_util::sync::CancellationToken;

use crate::convert::{
    CheckJs, ConfigFieldJs, EngineOptionsJs, ResumeDecisionJs, RunErrorJs, RunOutcomeJs,
    RunRequestJs, SessionJs,
};
use crate::sink::{EventCallback, JsSink};

/// The engine: one per adapter instance (Paperclip creates one per process). It caches cluster
/// clients, the inherited pod template and the shared watches, and runs one Job per agent at a
/// time.
#[napi]
#[derive(Debug)]
pub struct Engine {
    inner: Arc<lifecycle::Engine>,
    self_pod: SelfPod,
}

#[napi]
impl Engine {
    /// A new engine. Without options the Jobs inherit from the pod this process runs in
    /// (`POD_NAME`/`HOSTNAME` and `PAPERCLIP_NAMESPACE`/`POD_NAMESPACE`).
    #[napi(constructor, catch_unwind)]
    pub fn new(options: Option<EngineOptionsJs>) -> Self {
        let options = options.unwrap_or_default();
        let self_pod = match (options.self_pod_namespace, options.self_pod_name) {
            (Some(namespace), Some(name)) => SelfPod::Named { namespace, name },
            _ => SelfPod::FromEnv,
        };
        Self {
            inner: Arc::new(lifecycle::Engine::new(EngineOptions {
                self_pod: self_pod.clone(),
                ..EngineOptions::default()
            })),
            self_pod,
        }
    }

    /// Check what runs of `config` need (Paperclip's "test" button), in Paperclip's
    /// `AdapterEnvironmentCheck` shape: the config, then every check of `opencode-k8s doctor`.
    #[napi(ts_args_type = "config: Record<string, unknown>")]
    pub async fn check_environment(&self, config: serde_json::Value) -> Vec<CheckJs> {
        check_environment(self.self_pod.clone(), config).await
    }

    /// Start one run. `config` is the agent's `adapterConfig`; `onEvent` receives every event in
    /// order and may return a promise, which is awaited before the next one. `checkpoint`, from
    /// an earlier process's last output event, continues a Job without repeating output.
    /// Never throws for a bad request or config: the handle's `outcome()` carries the code.
    #[napi(
        catch_unwind,
        ts_args_type = "request: RunRequestJs, config: Record<string, unknown>, onEvent: (event: RunEventJs) => Promise<void> | void, checkpoint?: string | undefined | null"
    )]
    pub fn run(
        &self,
        request: RunRequestJs,
        config: serde_json::Value,
        on_event: EventCallback,
        checkpoint: Option<String>,
    ) -> RunHandle {
        let cancel = CancellationToken::new();
        let engine = Arc::clone(&self.inner);
        let token = cancel.clone();
        // A task of its own: a panic anywhere in the engine ends that task, not the host, and
        // comes back through the join handle as a failed outcome.
        let run = async move {
            let sink = JsSink::new(on_event, &request.run_id);
            let config = AgentConfig::from_json(&config).map_err(RunError::from)?;
            let request = request.into();
            match checkpoint {
                Some(checkpoint) => {
                    engine
                        .reattach(request, &config, &checkpoint, &sink, token)
                        .await
                }
                None => engine.run(request, &config, &sink, token).await,
            }
        };
        let task = napi::bindgen_prelude::within_runtime_if_available(|| tokio::spawn(run));
        let outcome = async move {
            match task.await {
                Ok(Ok(result)) => RunOutcomeJs {
                    result: Some(result.into()),
                    error: None,
                },
                Ok(Err(error)) => RunOutcomeJs {
                    result: None,
                    error: Some(error.into()),
                },
                Err(join) => RunOutcomeJs {
                    result: None,
                    error: Some(RunErrorJs {
                        code: ErrorCode::AdapterInternal.as_str().to_owned(),
                        message: internal_message(join),
                    }),
                },
            }
        };
        RunHandle {
            cancel,
            outcome: outcome.boxed().shared(),
        }
    }
}

fn internal_message(join: tokio::task::JoinError) -> String {
    let what = if join.is_panic() {
        let payload = join.into_panic();
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    } else {
        "the run task was stopped".to_owned()
    };
    format!(
        "the engine failed unexpectedly (a bug in opencode-k8s): {what}; its Job may still be running and is harvested by the next run of this agent — please report this"
    )
}

/// A started run: cancel it, or wait for its outcome.
#[napi]
pub struct RunHandle {
    cancel: CancellationToken,
    outcome: Shared<BoxFuture<'static, RunOutcomeJs>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[napi]
impl RunHandle {
    /// Stop the run: its Job, pod and Secret are deleted and the outcome is `cancelled`.
    /// Calling it again, or after the run ended, does nothing.
    #[napi(catch_unwind)]
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The run's outcome, once it ended. May be awaited more than once.
    #[napi]
    pub async fn outcome(&self) -> RunOutcomeJs {
        self.outcome.clone().await
    }
}

/// The engine's version: the workspace version, which `opencode-k8s --version` prints too and
/// the npm package's version equals (the package's tests check it).
#[napi(catch_unwind)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Whether a run of `config` at `cwd` resumes the saved `session`: the engine's one decision,
/// asked before the prompt is built so the prompt matches it (the short resume prompt only for
/// a session that is resumed). The Job's cwd is `cwd`, else the config's `cwd`. A config that
/// does not validate decides with the default `resumeLastSession` (true): its run fails with
/// `config_invalid` before any prompt is used.
#[napi(
    catch_unwind,
    ts_args_type = "session: SessionJs | null | undefined, cwd: string | null | undefined, config: Record<string, unknown>"
)]
pub fn resume_decision(
    session: Option<SessionJs>,
    cwd: Option<String>,
    config: serde_json::Value,
) -> ResumeDecisionJs {
    let config = AgentConfig::from_json(&config).ok();
    let cwd = cwd.or_else(|| config.as_ref().and_then(|c| c.cwd.clone()));
    let saved = session.as_ref().map(|s| Saved {
        session_id: &s.session_id,
        cwd: s.cwd.as_deref(),
    });
    let enabled = config.as_ref().is_none_or(|c| c.resume_last_session);
    resume::decide(saved, cwd.as_deref(), enabled).into()
}

/// The agent's state directory, its pod's `HOME` (`/paperclip/.opencode-k8s/<company>/<agent>`,
/// ids that are not plain path segments hashed): the Paperclip pod mounts the shared volume at
/// the same `/paperclip`, so files the adapter puts there (the agent's skills) are in the pod.
#[napi(catch_unwind)]
pub fn agent_home(company_id: String, agent_id: String) -> String {
    manifest::agent_home(&company_id, &agent_id)
}

/// Every agent configuration field, in the order the UI shows them.
#[napi(catch_unwind)]
pub fn config_fields() -> Vec<ConfigFieldJs> {
    FIELDS.iter().map(ConfigFieldJs::from).collect()
}

/// Check what runs of this config need, in Paperclip's check format: the config validates,
/// then every check of core's doctor (API, Paperclip pod, namespace, one access review per RBAC
/// rule, shared claim, referenced Secrets), each failing one with its exact fix as the hint.
pub(crate) async fn check_environment(
    self_pod: SelfPod,
    config: serde_json::Value,
) -> Vec<CheckJs> {
    let config = match AgentConfig::from_json(&config) {
        Ok(config) => config,
        Err(e) => {
            return vec![check(
                e.code().as_str(),
                "error",
                "Adapter configuration is invalid.".to_owned(),
                Some(e.to_string()),
                Some(
                    "Fix the fields listed in the detail; nothing is created for an invalid config.",
                ),
            )];
        }
    };
    let mut checks = vec![check(
        "config",
        "info",
        format!("Adapter configuration is valid (model {}).", config.model),
        None,
        None,
    )];
    let report = lifecycle::doctor(&DoctorTarget::from_config(&config), &self_pod).await;
    checks.extend(report.checks.into_iter().map(|c| {
        let level = match c.status {
            CheckStatus::Pass => "info",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "error",
        };
        let code = c.name.replace([' ', '/', '-'], "_");
        check(
            &code,
            level,
            format!("{}: {}", c.name, c.detail),
            None,
            c.fix.as_deref(),
        )
    }));
    checks
}

fn check(
    code: &str,
    level: &str,
    message: String,
    detail: Option<String>,
    hint: Option<&str>,
) -> CheckJs {
    CheckJs {
        code: code.to_owned(),
        level: level.to_owned(),
        message,
        detail,
        hint: hint.map(str::to_owned),
    }
}
