//! Which cluster and namespace the cluster commands (`doctor`, `jobs`, `logs`, `gc`) talk to:
//! `--kubeconfig`, else the agent config's `kubeconfig`/`kubeconfigContent`, else the
//! in-cluster service account or the default kubeconfig; `--namespace`, else the config's,
//! else the kubeconfig's. Also the Paperclip pod runs inherit from (`--pod`, `--no-inherit`).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use opencode_k8s_core::lifecycle::{ApiError, ClientCache, ClusterSource, SelfPod};
use serde_json::Value;

use crate::{CommandError, InputError};

/// `--kubeconfig` and `--namespace`: where the Jobs are, over what an agent config says.
/// Flattened into `run` and [`ClusterArgs`].
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KubeArgs {
    /// Kubeconfig file [default: the config's `kubeconfig`/`kubeconfigContent`, else in-cluster,
    /// else `$KUBECONFIG` / `~/.kube/config`].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the agent Jobs [default: the config's `namespace`, else the kubeconfig's].
    #[arg(long, short = 'n')]
    namespace: Option<String>,
}

impl KubeArgs {
    /// Put the flags given into an agent config (a JSON object; anything else is left for
    /// validation to reject with the field path).
    pub(crate) fn apply(&self, config: &mut Value) {
        let Some(object) = config.as_object_mut() else {
            return;
        };
        if let Some(path) = &self.kubeconfig {
            object.remove("kubeconfigContent");
            object.insert(
                "kubeconfig".into(),
                Value::String(path.display().to_string()),
            );
        }
        if let Some(namespace) = &self.namespace {
            object.insert("namespace".into(), Value::String(namespace.clone()));
        }
    }
}

/// Cluster selection shared by the cluster commands.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClusterArgs {
    #[command(flatten)]
    kube: KubeArgs,
    /// An agent config (adapterConfig JSON) to take `kubeconfig`, `kubeconfigContent` and
    /// `namespace` from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ClusterArgs {
    /// The credentials source and the namespace asked for (if any).
    pub(crate) fn target(&self) -> anyhow::Result<(ClusterSource, Option<String>)> {
        let mut config = match &self.config {
            Some(path) => crate::render::read_config(path)?,
            None => Value::Object(serde_json::Map::new()),
        };
        self.kube.apply(&mut config);
        let field = |key: &str| config.get(key).and_then(Value::as_str);
        let source = ClusterSource::from_fields(field("kubeconfig"), field("kubeconfigContent"));
        let namespace = field("namespace").map(str::to_owned);
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

/// `--pod` and `--no-inherit`: the Paperclip pod the Jobs inherit from (`run`, `doctor`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InheritArgs {
    /// Inherit image, pull secrets, env and the /paperclip volume from this Paperclip pod,
    /// which must exist [default: the pod this runs in, from POD_NAME/POD_NAMESPACE].
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "no_inherit")]
    pod: Option<String>,
    /// Inherit from no pod: Jobs use the config's `image` only (doctor then skips the pod,
    /// claim and Secret checks).
    #[arg(long)]
    no_inherit: bool,
}

impl InheritArgs {
    /// The flags as a [`SelfPod`].
    pub(crate) fn self_pod(&self) -> anyhow::Result<SelfPod> {
        if self.no_inherit {
            return Ok(SelfPod::None);
        }
        let Some(pod) = &self.pod else {
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
}

/// Fails unless the pod named by `--pod` exists: a run told to inherit from a pod must not
/// quietly run without its /paperclip volume and env. (The engine itself treats a missing pod
/// as "not in a cluster" and runs uninherited.)
pub(crate) async fn require_named_pod(
    source: &ClusterSource,
    self_pod: &SelfPod,
) -> anyhow::Result<()> {
    let SelfPod::Named { namespace, name } = self_pod else {
        return Ok(());
    };
    let client = ClientCache::default().client(source).await?;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    match pods.get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(CommandError::NoSuchPod {
            namespace: namespace.clone(),
            name: name.clone(),
        }
        .into()),
        Err(err) => Err(ApiError::new(
            format!("read the Paperclip pod {namespace}/{name} named by --pod"),
            err,
        )
        .into()),
    }
}
