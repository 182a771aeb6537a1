//! End to end: the pod's process is the real `opencode` (npm `opencode-ai@1.18.33`, installed
//! by `scripts/setup-opencode`), configured offline through `OPENCODE_CONFIG_CONTENT` against
//! the fake LLM (testkit), run by the engine on the simulated cluster as uid 1000 with HOME on
//! the shared volume.
//!
//! Without the binary these tests fail and say how to install it, unless
//! `OPENCODE_K8S_SKIP_E2E=1` (then they say they were skipped).

mod runs;

use opencode_k8s_core::config::AgentConfig;
use opencode_k8s_core::lifecycle::{Bounds, Engine, EngineOptions, RunResult, SelfPod};
use opencode_k8s_core::manifest::RunRequest;
use opencode_k8s_testkit::llm::{self, Behaviour};
use opencode_k8s_testkit::{AgentBin, Cluster, FakeLlm};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{Collect, NS};

/// A simulated cluster with a Paperclip pod, the fake LLM, the real `opencode` staged where the
/// pod's user can run it, and an engine inheriting from the Paperclip pod.
pub(crate) struct E2e {
    pub(crate) cluster: Cluster,
    pub(crate) llm: FakeLlm,
    bin: AgentBin,
    engine: Engine,
}

impl E2e {
    /// `None` when the binary is missing and `OPENCODE_K8S_SKIP_E2E=1`; panics with what to run
    /// when it is missing otherwise.
    pub(crate) async fn start(test: &str) -> Option<E2e> {
        let opencode = opencode_or_skip(test)?;
        let cluster = Cluster::start_with_paperclip_pod(NS)
            .await
            .expect("cluster starts");
        let llm = FakeLlm::start().await.expect("fake LLM starts");
        let bin = AgentBin::new("real-opencode-").unwrap();
        llm::stage_opencode(&opencode, bin.path()).expect("stage the opencode binary");
        let engine = Engine::new(EngineOptions {
            self_pod: SelfPod::Named {
                namespace: NS.into(),
                name: "paperclip".into(),
            },
            bounds: Bounds::default(),
        });
        Some(E2e {
            cluster,
            llm,
            bin,
            engine,
        })
    }

    /// An agent config running `model` against the fake LLM; `extra` is merged over it.
    pub(crate) fn config(&self, model: Behaviour, extra: Value) -> AgentConfig {
        let mut config = json!({
            "model": model.model(),
            "kubeconfigContent": std::fs::read_to_string(self.cluster.kubeconfig_path()).unwrap(),
            "namespace": NS,
            "timeoutSec": "120",
            "env": {
                "PATH": self.bin.path_env(),
                "OPENCODE_CONFIG_CONTENT": self.llm.opencode_config().to_string(),
                // Offline: no ~4 s timeout fetching models.dev per run (the fake provider is declared).
                "OPENCODE_DISABLE_MODELS_FETCH": "true",
            },
        });
        if let (Some(into), Value::Object(extra)) = (config.as_object_mut(), extra) {
            into.extend(extra);
        }
        AgentConfig::from_json(&config).expect("valid config")
    }

    /// Runs one turn to its outcome.
    pub(crate) async fn run(
        &self,
        request: RunRequest,
        config: &AgentConfig,
    ) -> (RunResult, Collect) {
        let sink = Collect::default();
        let result = self
            .engine
            .run(request, config, &sink, CancellationToken::new())
            .await
            .unwrap_or_else(|err| panic!("the run reaches an outcome: {err}\n{:?}", sink.lines()));
        (result, sink)
    }
}

#[expect(
    clippy::print_stderr,
    reason = "a skipped end-to-end test says so in the test output"
)]
fn opencode_or_skip(test: &str) -> Option<std::path::PathBuf> {
    if std::env::var("OPENCODE_K8S_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!(
            "skipped {test}: OPENCODE_K8S_SKIP_E2E=1 (end-to-end tests need the real opencode)"
        );
        return None;
    }
    match llm::find_opencode() {
        Ok(path) => Some(path),
        Err(why) => panic!(
            "{test} needs the real opencode: {why}. Run scripts/setup-opencode, or set OPENCODE_K8S_SKIP_E2E=1 to skip the end-to-end tests"
        ),
    }
}
