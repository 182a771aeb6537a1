//! What an agent Job inherits from the running Paperclip pod.
//!
//! The Paperclip Deployment already knows how to reach the registry, the shared volume and the
//! Paperclip API from inside the cluster; copying those parts keeps the agent pod working
//! without the operator repeating them in every agent's config. Only the listed parts are
//! copied: never the pod's service account token, its probes, ports or other containers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, LocalObjectReference, Pod, PodDNSConfig, Toleration, Volume, VolumeMount,
};

use serde::Serialize;

use super::{CONTAINER_NAME, ManifestError, WORKSPACE_MOUNT};

/// The preferred container of the Paperclip pod; else the first container is used.
pub const PAPERCLIP_CONTAINER: &str = "paperclip";
const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Tolerations the DefaultTolerationSeconds admission plugin adds to every pod; it adds them
/// to the agent pod too, so copying them would only duplicate.
const DEFAULT_TOLERATION_KEYS: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// The parts of the Paperclip pod an agent Job reuses.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InheritedPod {
    /// Name of the pod (or `(pod template)`), for messages.
    pub pod_name: String,
    /// Namespace of the pod, the default namespace for agent Jobs.
    pub namespace: Option<String>,
    /// The container the parts were taken from.
    pub container_name: String,
    /// Its image.
    pub image: Option<String>,
    /// Env names of the Paperclip container an agent must not see: the server's own secrets
    /// ([`super::SERVER_ONLY_ENV`]) and those listed in the pod's
    /// [`super::WITHHOLD_ENV_ANNOTATION`]. Removed from the inherited env, and masked with an empty
    /// value when the container also has `envFrom` (which cannot drop single keys).
    pub withheld_env: Vec<String>,
    /// Registry credentials.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// DNS policy.
    pub dns_policy: Option<String>,
    /// DNS config.
    pub dns_config: Option<PodDNSConfig>,
    /// The PersistentVolumeClaim volume mounted at `/paperclip`.
    pub workspace_volume: Volume,
    /// Its mount (subPath kept).
    pub workspace_mount: VolumeMount,
    /// Secret volumes the container mounts (provider credentials, CA bundles, ...).
    pub secret_volumes: Vec<Volume>,
    /// Their mounts.
    pub secret_mounts: Vec<VolumeMount>,
    /// The container's env, `value` and `valueFrom` as they are.
    pub env: Vec<EnvVar>,
    /// The container's envFrom.
    pub env_from: Vec<EnvFromSource>,
    /// The pod's node selector.
    pub node_selector: BTreeMap<String, String>,
    /// The pod's own tolerations.
    pub tolerations: Vec<Toleration>,
}

impl InheritedPod {
    /// Takes the inheritable parts of `pod` (a live Pod, or a Deployment's pod template wrapped
    /// in a Pod). The container is `container_hint`, else `paperclip`, else the first.
    pub fn from_pod(
        pod: &Pod,
        container_hint: Option<&str>,
    ) -> Result<InheritedPod, ManifestError> {
        let pod_name = pod
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| "(pod template)".into());
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| ManifestError::NoContainer {
                pod: pod_name.clone(),
                wanted: container_hint.map(str::to_owned),
            })?;
        let container = match container_hint {
            Some(hint) => spec.containers.iter().find(|c| c.name == hint),
            None => spec
                .containers
                .iter()
                .find(|c| c.name == PAPERCLIP_CONTAINER)
                .or_else(|| spec.containers.first()),
        }
        .ok_or_else(|| ManifestError::NoContainer {
            pod: pod_name.clone(),
            wanted: container_hint.map(str::to_owned),
        })?;
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        let volume_named = |name: &str| volumes.iter().find(|v| v.name == name);

        let workspace_mount = mounts
            .iter()
            .find(|m| m.mount_path.trim_end_matches('/') == WORKSPACE_MOUNT)
            .ok_or_else(|| ManifestError::NoWorkspaceVolume {
                pod: pod_name.clone(),
                container: container.name.clone(),
            })?;
        let workspace_volume = volume_named(&workspace_mount.name)
            .filter(|v| v.persistent_volume_claim.is_some())
            .ok_or_else(|| ManifestError::WorkspaceNotClaim {
                pod: pod_name.clone(),
                volume: workspace_mount.name.clone(),
            })?;

        let mut secret_volumes = Vec::new();
        let mut secret_mounts = Vec::new();
        for mount in mounts {
            let Some(volume) = volume_named(&mount.name).filter(|v| v.secret.is_some()) else {
                continue;
            };
            // Agent pods never get an API token, whatever the Paperclip pod mounts.
            if mount.mount_path.starts_with(SERVICE_ACCOUNT_MOUNT) {
                continue;
            }
            if !secret_volumes
                .iter()
                .any(|v: &Volume| v.name == volume.name)
            {
                secret_volumes.push(volume.clone());
            }
            secret_mounts.push(mount.clone());
        }

        let annotated = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::WITHHOLD_ENV_ANNOTATION));
        let mut withheld_env: Vec<String> = super::SERVER_ONLY_ENV
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        for name in annotated.into_iter().flat_map(|list| list.split(',')) {
            let name = name.trim();
            if !name.is_empty() && !withheld_env.iter().any(|n| n == name) {
                withheld_env.push(name.to_owned());
            }
        }
        let env = container
            .env
            .iter()
            .flatten()
            .filter(|var| !withheld_env.contains(&var.name))
            .cloned()
            .map(|mut var| {
                // A resource reference to the Paperclip container must point at the agent's.
                if let Some(field) = var
                    .value_from
                    .as_mut()
                    .and_then(|f| f.resource_field_ref.as_mut())
                    && field.container_name.as_deref() == Some(container.name.as_str())
                {
                    field.container_name = Some(CONTAINER_NAME.into());
                }
                var
            })
            .collect();

        Ok(InheritedPod {
            namespace: pod.metadata.namespace.clone(),
            container_name: container.name.clone(),
            image: container.image.clone().filter(|i| !i.is_empty()),
            withheld_env,
            image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
            dns_policy: spec.dns_policy.clone(),
            dns_config: spec.dns_config.clone(),
            workspace_volume: workspace_volume.clone(),
            workspace_mount: workspace_mount.clone(),
            secret_volumes,
            secret_mounts,
            env,
            env_from: container.env_from.clone().unwrap_or_default(),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            tolerations: spec
                .tolerations
                .iter()
                .flatten()
                .filter(|t| {
                    !(t.key
                        .as_deref()
                        .is_some_and(|k| DEFAULT_TOLERATION_KEYS.contains(&k))
                        && t.toleration_seconds == Some(300))
                })
                .cloned()
                .collect(),
            pod_name,
        })
    }

    /// The value of a literal env var of the Paperclip container.
    pub(crate) fn env_value(&self, name: &str) -> Option<&EnvVar> {
        self.env.iter().find(|v| v.name == name)
    }
}
