//! The simulated cluster (testkit, a TEST DOUBLE) in a process of its own, so the benchmark
//! process holds only the engine: this binary re-executed as `opencode-k8s-bench sim`. It serves
//! until its stdin closes, which also happens when the benchmark dies, so no cluster (and none
//! of its pod processes) outlives a benchmark.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opencode_k8s_testkit::Cluster;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The namespace with the Paperclip pod the Jobs inherit from.
pub(crate) const NS: &str = "paperclip";

/// What the child announces on its first stdout line.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    url: String,
    kubeconfig: PathBuf,
}

/// Child side: serve a cluster seeded with a Paperclip pod until stdin closes.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let cluster = Cluster::start_with_paperclip_pod(NS).await?;
    let ready = Ready {
        url: cluster.url().to_owned(),
        kubeconfig: cluster.kubeconfig_path().to_owned(),
    };
    announce(&serde_json::to_string(&ready)?);
    // EOF (or an error) on stdin: the benchmark is done or gone.
    let _ = tokio::task::spawn_blocking(|| {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
    })
    .await;
    cluster.shutdown().await;
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "the parent process reads the cluster's address from stdout"
)]
fn announce(line: &str) {
    println!("{line}");
}

/// Parent side: the running cluster process and its control endpoint.
#[derive(Debug)]
pub(crate) struct Sim {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    kubeconfig: PathBuf,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Sim {
    /// Start the cluster process and wait until it serves.
    pub(crate) async fn start() -> anyhow::Result<Sim> {
        let exe = std::env::current_exe().context("failed to locate the benchmark binary")?;
        let mut child = Command::new(exe)
            .arg("sim")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start the simulated cluster process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout of the cluster")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(60),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("the simulated cluster did not start within 60 s")??;
        let ready: Ready = serde_json::from_str(&line)
            .with_context(|| format!("the simulated cluster announced {line:?}"))?;
        Ok(Sim {
            child,
            stdin,
            url: ready.url,
            kubeconfig: ready.kubeconfig,
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The admin kubeconfig.
    pub(crate) fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// The cluster process's id (to read its memory).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn control(&self, method: http::Method, path: &str) -> anyhow::Result<Bytes> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}/_testkit/{path}", self.url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))?;
        let response = self
            .http
            .request(request)
            .await
            .with_context(|| format!("failed to call the testkit control endpoint {path}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "testkit control endpoint {path} answered {status}"
        );
        Ok(body)
    }

    /// API requests received since the last reset: `"verb resource"` → count.
    pub(crate) async fn requests(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let body = self.control(http::Method::GET, "requests").await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Zero the request counters.
    pub(crate) async fn reset_requests(&self) -> anyhow::Result<()> {
        self.control(http::Method::POST, "requests/reset").await?;
        Ok(())
    }

    /// Close its stdin and wait for it to shut down (killed after 30 s).
    pub(crate) async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
