//! What an agent Job inherits from the running Paperclip pod.
//!
//! The Paperclip Deployment already knows how to reach the registry, the shared volume and the
//! Paperclip API from inside the cluster; copying those parts keeps the agent pod working
//! without the operator repeating them in every agent's config. Only the listed parts are
//! copied: never the pod's service account token, its probes, ports or other containers, and
//! never the server's own data (its secrets env, a Secret volume holding the secrets master key
//! file; the shared claim is narrowed by [`super::mounts`]).
//!
//! The operator narrows what Secrets are inherited with annotations on the Paperclip pod:
//! [`EXCLUDE_SECRETS_ANNOTATION`] drops the named Secrets, [`INHERIT_SECRETS_ANNOTATION`]
//! switches to an allow-list of them. Both apply to Secret volumes, `envFrom` Secrets and env
//! `secretKeyRef`s alike; [`InheritedPod::summary`] lists what is left.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, LocalObjectReference, Pod, PodDNSConfig, Toleration, Volume,
    VolumeMount,
};

use serde::Serialize;

use super::{CONTAINER_NAME, ManifestError, WORKSPACE_MOUNT};

/// Annotation on the Paperclip pod: Secrets (comma-separated names) its agent Jobs must not
/// inherit as volumes, `envFrom` or `secretKeyRef` env.
pub const EXCLUDE_SECRETS_ANNOTATION: &str = "opencode-k8s.dev/exclude-secrets";
/// Annotation on the Paperclip pod: when present, agent Jobs inherit only these Secrets
/// (comma-separated names; empty for none) — an allow-list instead of the default deny-list.
pub const INHERIT_SECRETS_ANNOTATION: &str = "opencode-k8s.dev/inherit-secrets";
/// Labels a controller sets per revision; selecting on them would miss the next rollout.
const REVISION_LABELS: &[&str] = &["pod-template-hash", "controller-revision-hash"];

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
    /// The pod's labels without per-revision ones: how a NetworkPolicy reaches Paperclip.
    pub labels: BTreeMap<String, String>,
    /// Secrets not inherited because of the pod's annotations or because they hold the
    /// server's own data, with why.
    pub excluded_secrets: Vec<String>,
}

/// The pod's labels without per-revision ones, which select every Paperclip pod across rollouts.
fn selector_labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !REVISION_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Which Secrets the pod's annotations let through.
struct SecretFilter {
    allow: Option<Vec<String>>,
    exclude: Vec<String>,
}

impl SecretFilter {
    fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Self {
        let list = |key: &str| {
            annotations.and_then(|a| a.get(key)).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        Self {
            allow: list(INHERIT_SECRETS_ANNOTATION),
            exclude: list(EXCLUDE_SECRETS_ANNOTATION).unwrap_or_default(),
        }
    }

    /// Why Secret `name` is not inherited, or `None` when it is.
    fn refuses(&self, name: &str) -> Option<&'static str> {
        if self.exclude.iter().any(|n| n == name) {
            Some(EXCLUDE_SECRETS_ANNOTATION)
        } else if self
            .allow
            .as_ref()
            .is_some_and(|a| !a.iter().any(|n| n == name))
        {
            Some(INHERIT_SECRETS_ANNOTATION)
        } else {
            None
        }
    }
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
        let no_container = || ManifestError::NoContainer {
            pod: pod_name.clone(),
            wanted: container_hint.map(str::to_owned),
        };
        let spec = pod.spec.as_ref().ok_or_else(no_container)?;
        let container = match container_hint {
            Some(hint) => spec.containers.iter().find(|c| c.name == hint),
            None => spec
                .containers
                .iter()
                .find(|c| c.name == PAPERCLIP_CONTAINER)
                .or_else(|| spec.containers.first()),
        }
        .ok_or_else(no_container)?;
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        let (workspace_volume, workspace_mount) = workspace(&pod_name, container, volumes)?;
        let filter = SecretFilter::from_annotations(pod.metadata.annotations.as_ref());
        let mut excluded = Excluded::default();
        let (secret_volumes, secret_mounts) =
            secret_volumes(container, volumes, &filter, &mut excluded);
        let withheld_env = withheld_env(pod);
        let env = inherited_env(container, &withheld_env, &filter, &mut excluded);
        let env_from = inherited_env_from(container, &filter, &mut excluded);
        Ok(InheritedPod {
            labels: selector_labels(pod),
            excluded_secrets: excluded.0,
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
            env_from,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            tolerations: tolerations(spec.tolerations.as_deref().unwrap_or_default()),
            pod_name,
        })
    }

    /// What an agent Job inherits, one line each: env (names and where values come from, never
    /// the values), `envFrom` sources, Secret volumes, and what was left out and why.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for var in &self.env {
            let from = match &var.value_from {
                None => "literal".to_owned(),
                Some(source) => match (&source.secret_key_ref, &source.config_map_key_ref) {
                    (Some(s), _) => format!("Secret {} key {}", s.name, s.key),
                    (None, Some(c)) => format!("ConfigMap {} key {}", c.name, c.key),
                    (None, None) => "a field or resource reference".to_owned(),
                },
            };
            out.push(format!("env {} ({from})", var.name));
        }
        for source in &self.env_from {
            let prefix = source.prefix.as_deref().unwrap_or_default();
            if let Some(s) = &source.secret_ref {
                out.push(format!("envFrom Secret {} (prefix {prefix:?})", s.name));
            }
            if let Some(c) = &source.config_map_ref {
                out.push(format!("envFrom ConfigMap {} (prefix {prefix:?})", c.name));
            }
        }
        for mount in &self.secret_mounts {
            let secret = self
                .secret_volumes
                .iter()
                .find(|v| v.name == mount.name)
                .and_then(|v| v.secret.as_ref()?.secret_name.clone())
                .unwrap_or_default();
            out.push(format!(
                "volume {} (Secret {secret}) at {}",
                mount.name, mount.mount_path
            ));
        }
        if !self.env_from.is_empty() {
            out.push(format!(
                "env masked with empty values over envFrom (withheld): {}",
                self.withheld_env.join(", ")
            ));
        }
        out.extend(
            self.excluded_secrets
                .iter()
                .map(|e| format!("not inherited: {e}")),
        );
        out
    }

    /// The value of a literal env var of the Paperclip container.
    pub(crate) fn env_value(&self, name: &str) -> Option<&EnvVar> {
        self.env.iter().find(|v| v.name == name)
    }
}

/// The Secrets kept from agent pods, each line once, in the order met.
#[derive(Default)]
struct Excluded(Vec<String>);

impl Excluded {
    fn add(&mut self, name: &str, why: String) {
        let line = format!("Secret {name}: {why}");
        if !self.0.contains(&line) {
            self.0.push(line);
        }
    }
}

/// The container's workspace mount and the claim volume behind it.
fn workspace<'p>(
    pod_name: &str,
    container: &'p Container,
    volumes: &'p [Volume],
) -> Result<(&'p Volume, &'p VolumeMount), ManifestError> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == WORKSPACE_MOUNT)
        .ok_or_else(|| ManifestError::NoWorkspaceVolume {
            pod: pod_name.to_owned(),
            container: container.name.clone(),
        })?;
    let volume = volumes
        .iter()
        .find(|v| v.name == mount.name)
        .filter(|v| v.persistent_volume_claim.is_some())
        .ok_or_else(|| ManifestError::WorkspaceNotClaim {
            pod: pod_name.to_owned(),
            volume: mount.name.clone(),
        })?;
    Ok((volume, mount))
}

/// The container's Secret volumes and mounts agents may have: never the API token, never the
/// server's secrets master key, none the pod's annotations refuse.
fn secret_volumes(
    container: &Container,
    volumes: &[Volume],
    filter: &SecretFilter,
    excluded: &mut Excluded,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    // The file the server reads its secrets master key from, if it says where.
    let master_key_file = container
        .env
        .iter()
        .flatten()
        .find(|v| v.name == "PAPERCLIP_SECRETS_MASTER_KEY_FILE")
        .and_then(|v| v.value.clone());
    let mut secret_volumes: Vec<Volume> = Vec::new();
    let mut secret_mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .filter(|v| v.secret.is_some())
        else {
            continue;
        };
        // Agent pods never get an API token, whatever the Paperclip pod mounts.
        if mount.mount_path.starts_with(SERVICE_ACCOUNT_MOUNT) {
            continue;
        }
        let secret_name = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .unwrap_or_default();
        if let Some(file) = &master_key_file
            && std::path::Path::new(file).starts_with(&mount.mount_path)
        {
            let why = format!(
                "volume {} holds the server's secrets master key",
                volume.name
            );
            excluded.add(&secret_name, why);
            continue;
        }
        if let Some(annotation) = filter.refuses(&secret_name) {
            excluded.add(
                &secret_name,
                format!("volume {} ({annotation})", volume.name),
            );
            continue;
        }
        if !secret_volumes.iter().any(|v| v.name == volume.name) {
            secret_volumes.push(volume.clone());
        }
        secret_mounts.push(mount.clone());
    }
    (secret_volumes, secret_mounts)
}

/// The server-only variables, plus those the pod's annotation withholds.
fn withheld_env(pod: &Pod) -> Vec<String> {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::WITHHOLD_ENV_ANNOTATION));
    let mut withheld: Vec<String> = super::SERVER_ONLY_ENV
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    for name in annotated.into_iter().flat_map(|list| list.split(',')) {
        let name = name.trim();
        if !name.is_empty() && !withheld.iter().any(|n| n == name) {
            withheld.push(name.to_owned());
        }
    }
    withheld
}

/// The container's env agents get: none withheld, no refused Secret's key.
fn inherited_env(
    container: &Container,
    withheld: &[String],
    filter: &SecretFilter,
    excluded: &mut Excluded,
) -> Vec<EnvVar> {
    container
        .env
        .iter()
        .flatten()
        .filter(|var| !withheld.contains(&var.name))
        .filter(|var| {
            let Some(secret) = var
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            else {
                return true;
            };
            match filter.refuses(&secret.name) {
                Some(annotation) => {
                    excluded.add(&secret.name, format!("env {} ({annotation})", var.name));
                    false
                }
                None => true,
            }
        })
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
        .collect()
}

/// The container's `envFrom` agents get: no refused Secret.
fn inherited_env_from(
    container: &Container,
    filter: &SecretFilter,
    excluded: &mut Excluded,
) -> Vec<EnvFromSource> {
    container
        .env_from
        .iter()
        .flatten()
        .filter(|source| {
            let Some(secret) = source.secret_ref.as_ref() else {
                return true;
            };
            match filter.refuses(&secret.name) {
                Some(annotation) => {
                    excluded.add(&secret.name, format!("envFrom ({annotation})"));
                    false
                }
                None => true,
            }
        })
        .cloned()
        .collect()
}

/// The pod's tolerations without the ones Kubernetes adds to every pod.
fn tolerations(tolerations: &[Toleration]) -> Vec<Toleration> {
    tolerations
        .iter()
        .filter(|t| {
            !(t.key
                .as_deref()
                .is_some_and(|k| DEFAULT_TOLERATION_KEYS.contains(&k))
                && t.toleration_seconds == Some(300))
        })
        .cloned()
        .collect()
}
