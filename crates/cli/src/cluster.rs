//! Which cluster and namespace the cluster commands (`doctor`, `jobs`, `logs`, `gc`) talk to:
//! `--kubeconfig`, else the agent config's `kubeconfig`/`kubeconfigContent`, else the
//! in-cluster service account or the default kubeconfig; `--namespace`, else the config's,
//! else the kubeconfig's.

use std::path::PathBuf;

use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{ClientCache, ClusterSource, RunError, SelfPod};
use serde_json::Value;

use crate::InputError;

/// Cluster selection shared by the cluster commands.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClusterArgs {
    /// Kubeconfig file [default: the config's `kubeconfig`, else in-cluster, else
    /// `$KUBECONFIG` / `~/.kube/config`].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the agent Jobs [default: the config's `namespace`, else the kubeconfig's].
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// An agent config (adapterConfig JSON) to take `kubeconfig`, `kubeconfigContent` and
    /// `namespace` from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ClusterArgs {
    /// The credentials source and the namespace asked for (if any).
    pub(crate) fn target(&self) -> anyhow::Result<(ClusterSource, Option<String>)> {
        let config = match &self.config {
            Some(path) => crate::render::read_config(path)?,
            None => Value::Null,
        };
        let field = |key: &str| config.get(key).and_then(Value::as_str);
        let source = match &self.kubeconfig {
            Some(path) => ClusterSource::KubeconfigPath(path.clone()),
            None => ClusterSource::from_fields(field("kubeconfig"), field("kubeconfigContent")),
        };
        let namespace = self
            .namespace
            .clone()
            .or_else(|| field("namespace").map(str::to_owned));
        Ok((source, namespace))
    }

    /// A client and the namespace to work in.
    pub(crate) async fn connect(&self) -> anyhow::Result<(kube::Client, String)> {
        let (source, namespace) = self.target()?;
        let client = ClientCache::default().client(&source).await?;
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        Ok((client, namespace))
    }
}

/// `--pod NAMESPACE/NAME` and `--no-inherit` as a [`SelfPod`].
pub(crate) fn self_pod(pod: Option<&str>, no_inherit: bool) -> anyhow::Result<SelfPod> {
    if no_inherit {
        return Ok(SelfPod::None);
    }
    let Some(pod) = pod else {
        return Ok(SelfPod::FromEnv);
    };
    match pod.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok(SelfPod::Named {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(InputError {
            what: format!("--pod {pod}"),
            problem: "expected NAMESPACE/NAME of the Paperclip pod, e.g. paperclip/paperclip-0"
                .into(),
        }
        .into()),
    }
}

/// An API error while doing `what`, with the stable code a run would report for it.
pub(crate) fn api_error(what: &str, err: &kube::Error) -> RunError {
    let (code, message) = match err {
        kube::Error::Api(status) if status.code == 403 => (
            ErrorCode::K8sForbidden,
            format!(
                "failed to {what}: {}; `opencode-k8s doctor` names the rule to add",
                status.message
            ),
        ),
        kube::Error::Api(status) => (
            ErrorCode::AdapterInternal,
            format!("failed to {what}: {} ({})", status.message, status.code),
        ),
        other => (
            ErrorCode::K8sApiUnreachable,
            format!("failed to {what}: {other}; check that the cluster API is reachable"),
        ),
    };
    RunError { code, message }
}
