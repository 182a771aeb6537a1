//! The run lifecycle against the simulated cluster (testkit): a fake `opencode` script plays
//! the agent inside the pod, the engine drives everything else for real.

mod doctor;
mod faults;
mod gc;
mod guard;
mod reality;
mod requests;
mod restarts;
mod runs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use opencode_k8s_core::config::AgentConfig;
use opencode_k8s_core::event::{RunEvent, RunSink};
use opencode_k8s_core::lifecycle::{
    Bounds, Engine, EngineOptions, RunError, RunResult, RunStatus, SelfPod,
};
use opencode_k8s_core::manifest::{RunRequest, SessionResume};
use opencode_k8s_testkit::{AgentBin, Cluster, Resource};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub(crate) const NS: &str = "paperclip";

/// A simulated cluster with a Paperclip pod, a directory for the fake `opencode`, and an engine
/// that inherits from that pod.
pub(crate) struct Harness {
    pub(crate) cluster: Cluster,
    bin: AgentBin,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        let cluster = Cluster::start_with_paperclip_pod(NS)
            .await
            .expect("cluster starts");
        Harness {
            cluster,
            bin: AgentBin::new("fake-opencode-").unwrap(),
        }
    }

    /// A client of the cluster's admin, for a test acting beside the engine.
    pub(crate) async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.cluster.kubeconfig_path()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    pub(crate) fn engine(&self, bounds: Bounds) -> Engine {
        Engine::new(EngineOptions {
            self_pod: SelfPod::Named {
                namespace: NS.into(),
                name: "paperclip".into(),
            },
            bounds,
        })
    }

    /// Install the fake `opencode`: a POSIX shell script body; `$@` holds OpenCode's arguments
    /// after `opencode`, the prompt is on stdin.
    pub(crate) fn opencode(&self, body: &str) {
        self.bin.fake_opencode(body).unwrap();
    }

    /// Write a data file next to the fake, readable by the pod's user; returns its path.
    pub(crate) fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        self.bin.file(name, contents).unwrap()
    }

    pub(crate) fn config(&self, extra: Value) -> AgentConfig {
        let mut config = json!({
            "model": "fake/fake-model",
            "kubeconfigContent": std::fs::read_to_string(self.cluster.kubeconfig_path()).unwrap(),
            "namespace": NS,
            "env": {"PATH": self.bin.path_env()},
            "ttlSecondsAfterFinished": "300",
        });
        merge(&mut config, extra);
        AgentConfig::from_json(&config).expect("valid config")
    }

    /// One run with default bounds and `extra` config; it must reach an outcome.
    pub(crate) async fn run(&self, request: RunRequest, extra: Value) -> (RunResult, Collect) {
        self.run_bounded(Bounds::default(), request, extra).await
    }

    /// One run with `bounds` and `extra` config; it must reach an outcome.
    pub(crate) async fn run_bounded(
        &self,
        bounds: Bounds,
        request: RunRequest,
        extra: Value,
    ) -> (RunResult, Collect) {
        let sink = Collect::default();
        let result = self
            .engine(bounds)
            .run(
                request,
                &self.config(extra),
                &sink,
                CancellationToken::new(),
            )
            .await
            .unwrap_or_else(|err| panic!("the run reaches an outcome: {err}\n{:?}", sink.lines()));
        (result, sink)
    }

    /// Waits (bounded) until `name` of `resource` no longer exists; panics with `what` if it stays.
    pub(crate) async fn wait_gone(&self, resource: Resource, name: &str, what: &str) {
        self.cluster
            .wait_for(resource, NS, name, Duration::from_secs(20), |object| {
                object.is_none()
            })
            .await
            .unwrap_or_else(|err| panic!("{what}: {err}"));
    }

    /// Whether no Secret of a run is left: only the seeded `paperclip-secrets` is there.
    pub(crate) fn only_seeded_secrets(&self) -> bool {
        self.cluster
            .list_json(Resource::Secrets, Some(NS))
            .iter()
            .all(|s| s["metadata"]["name"] == "paperclip-secrets")
    }

    pub(crate) fn jobs(&self) -> Vec<Value> {
        self.cluster
            .list_json(opencode_k8s_testkit::Resource::Jobs, Some(NS))
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        for (key, value) in from {
            into.insert(key, value);
        }
    }
}

/// The result of a run logged in `sink`, which must have succeeded; panics with the result and
/// the run log otherwise.
pub(crate) fn succeeded(result: Result<RunResult, RunError>, sink: &Collect) -> RunResult {
    let result = result.unwrap();
    assert_eq!(
        result.status,
        RunStatus::Succeeded,
        "{result:?}\n{:?}",
        sink.lines()
    );
    result
}

/// One run of `engine` with `config` that must fail without reaching an outcome; its error.
pub(crate) async fn run_error(
    engine: &Engine,
    request: RunRequest,
    config: &AgentConfig,
) -> RunError {
    engine
        .run(
            request,
            config,
            &Collect::default(),
            CancellationToken::new(),
        )
        .await
        .expect_err("the run fails without an outcome")
}

pub(crate) fn request(run_id: &str, agent_id: &str) -> RunRequest {
    RunRequest {
        run_id: run_id.into(),
        agent_id: agent_id.into(),
        company_id: "company-1".into(),
        agent_name: Some("Fake Agent".into()),
        task_key: Some(format!("task-of-{run_id}")),
        prompt: "Say hi.".into(),
        fresh_prompt: None,
        cwd: Some("/paperclip/workspaces/project".into()),
        paperclip_env: BTreeMap::from([("PAPERCLIP_RUN_ID".to_owned(), run_id.to_owned())]),
        api_key: Some("agent-jwt-secret".into()),
        resume: None,
        attempt: 1,
    }
}

pub(crate) fn resume(session_id: &str, cwd: &str) -> Option<SessionResume> {
    Some(SessionResume {
        session_id: session_id.into(),
        cwd: Some(cwd.into()),
    })
}

/// Records every event of a run.
#[derive(Default, Clone)]
pub(crate) struct Collect(Arc<Mutex<Vec<RunEvent>>>);

impl RunSink for Collect {
    fn emit(&self, event: RunEvent) -> BoxFuture<'_, ()> {
        self.0.lock().unwrap().push(event);
        Box::pin(async {})
    }
}

impl Collect {
    /// All output, concatenated as delivered.
    pub(crate) fn output(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                RunEvent::Output { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Every event so far.
    pub(crate) fn events(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap().clone()
    }

    /// The run-log lines that are not output.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| !matches!(e, RunEvent::Output { .. }))
            .map(ToString::to_string)
            .collect()
    }
}

pub(crate) fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(path),
    )
    .unwrap()
}
