//! The cluster commands against a simulated cluster (testkit) started in the test process: the
//! binary talks to it through its kubeconfig, a fake `opencode` script plays the agent.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use opencode_k8s_testkit::{AgentBin, Cluster, Resource};
use serde_json::{Value, json};

pub(crate) const NS: &str = "paperclip";
/// The seeded Paperclip pod, as `--pod` takes it.
pub(crate) const POD: &str = "paperclip/paperclip";

pub(crate) struct Sim {
    pub(crate) cluster: Cluster,
    /// Holds the fake `opencode`, readable by the pod's user.
    bin: AgentBin,
    /// Configs and kubeconfigs written for the binary.
    pub(crate) dir: tempfile::TempDir,
}

impl Sim {
    pub(crate) async fn start() -> Sim {
        let cluster = Cluster::start_with_paperclip_pod(NS)
            .await
            .expect("cluster starts");
        Sim {
            cluster,
            bin: AgentBin::new("fake-opencode-").unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Install the fake `opencode` (a POSIX shell script body; the prompt is on stdin).
    pub(crate) fn opencode(&self, body: &str) {
        self.bin.fake_opencode(body).unwrap();
    }

    /// A fake that prints a captured OpenCode run and exits with `rc`.
    pub(crate) fn replay(&self, fixture_name: &str, rc: i32) {
        let out = self
            .bin
            .file(
                &format!("{fixture_name}.jsonl"),
                &fixture(&format!("opencode/{fixture_name}.stdout.jsonl")),
            )
            .unwrap();
        self.opencode(&format!(
            "cat > /dev/null; cat {}; exit {rc}",
            out.display()
        ));
    }

    /// The directory of the fake, visible to the pods.
    pub(crate) fn bin_path(&self) -> &Path {
        self.bin.path()
    }

    pub(crate) fn kubeconfig(&self) -> &str {
        self.cluster.kubeconfig_path().to_str().unwrap()
    }

    /// A kubeconfig like the admin's, authenticating with `token`.
    pub(crate) fn kubeconfig_for(&self, token: &str) -> PathBuf {
        let admin = std::fs::read_to_string(self.cluster.kubeconfig_path()).unwrap();
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        std::fs::write(&path, admin.replace(self.cluster.admin_token(), token)).unwrap();
        path
    }

    /// An agent config file running the fake in the seeded namespace, `extra` merged over it.
    pub(crate) fn config(&self, extra: Value) -> PathBuf {
        let mut config = json!({
            "model": "fake/fake-model",
            "kubeconfig": self.kubeconfig(),
            "namespace": NS,
            "env": {"PATH": self.bin.path_env()},
        });
        if let (Some(into), Value::Object(from)) = (config.as_object_mut(), extra) {
            into.extend(from);
        }
        let path = self.dir.path().join("agent.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    /// The binary with `args`, outside any pod (no inheritance from the environment).
    pub(crate) fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opencode-k8s"));
        command
            .args(args)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("PAPERCLIP_NAMESPACE")
            .env_remove("KUBECONFIG")
            .env_remove("OPENCODE_K8S_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Run the binary to its end.
    pub(crate) async fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("the binary runs")
    }

    pub(crate) fn jobs(&self) -> Vec<Value> {
        self.cluster.list_json(Resource::Jobs, Some(NS))
    }
}

/// The arguments of `opencode-k8s run` with the agent config file `config` and `prompt`, then
/// `more`.
pub(crate) fn run_args<'a>(config: &'a str, prompt: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--config", config, "--prompt", prompt];
    args.extend_from_slice(more);
    args
}

pub(crate) fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(path),
    )
    .unwrap()
}
