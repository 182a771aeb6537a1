//! The objects one run creates: a Job and its per-run Secret, as a pure function of the run
//! request, the Paperclip pod the Job inherits from, and the agent config.
//!
//! Rules that shape everything here (DESIGN.md §5–§7):
//! - the prompt and every secret (`PAPERCLIP_API_KEY`, config `env` values) live only in the
//!   Secret: the prompt is mounted as a file and fed on stdin, the rest read by `secretKeyRef`;
//!   nothing secret is ever literal in the Job spec;
//! - one container, the main image; one init container (same image, a fixed `mkdir`) creates
//!   the agent's state directory;
//! - the agent mounts only its own part of the shared volume ([`mounts`]);
//! - the pod passes Pod Security "restricted";
//! - env is layered inherited → `PAPERCLIP_*` → config `env` → engine-owned, later wins by
//!   name at the first position;
//! - `--session` only when resuming in the same cwd (OpenCode hangs otherwise).

mod inherit;
mod mounts;
mod names;
mod network;
mod yaml;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{AgentConfig, SecretString};
use crate::error_code::ErrorCode;
pub use crate::resume::ResumeDecision;
use crate::resume::{self, Saved};

pub use inherit::{
    EXCLUDE_SECRETS_ANNOTATION, INHERIT_SECRETS_ANNOTATION, InheritedPod, PAPERCLIP_CONTAINER,
};
pub use mounts::{HOME_INIT_CONTAINER, STATE_ROOT, agent_home};
pub use names::{
    AGENT_ID_KEY, AGENT_NAME_ANNOTATION, APP_NAME_KEY, APP_NAME_VALUE, ATTEMPT_ANNOTATION,
    COMPANY_ID_KEY, KEY_PREFIX, MANAGED_BY_KEY, MANAGED_BY_VALUE, RESUME_SESSION_ANNOTATION,
    RUN_ID_KEY, TASK_KEY_KEY, WITHHOLD_ENV_ANNOTATION, agent_lease_name, agent_selector,
    is_adapter_label_key, label_value, object_name, run_selector,
};
pub use yaml::{SecretValues, YamlError, to_yaml};

/// Env of the Paperclip server that no agent may see: what signs agent tokens and session
/// cookies, the database credentials, the secrets store's master key, and the server's own
/// service tokens (read from `@paperclipai/server` 2026.916.1). Agent Jobs inherit the rest of
/// the Paperclip container's env; a pod annotation can withhold more names.
pub const SERVER_ONLY_ENV: &[&str] = &[
    "BETTER_AUTH_SECRET",
    "PAPERCLIP_AGENT_JWT_SECRET",
    "DATABASE_URL",
    "PAPERCLIP_SECRETS_MASTER_KEY",
    "PAPERCLIP_SECRETS_MASTER_KEY_FILE",
    "PAPERCLIP_TOOL_ACTION_SIGNING_SECRET",
    "PAPERCLIP_TOOL_OAUTH_CLIENT_SECRET",
    "PAPERCLIP_CLOUD_TENANT_SERVER_TOKEN",
    "PAPERCLIP_TELEMETRY_BACKEND_TOKEN",
    "PAPERCLIP_FEEDBACK_EXPORT_BACKEND_TOKEN",
    "PAPERCLIP_DEV_SERVER_STATUS_TOKEN",
];

/// Where the shared Paperclip volume is mounted, in the Paperclip pod and the agent pod alike.
pub const WORKSPACE_MOUNT: &str = "/paperclip";
/// Where the per-run Secret's prompt file is mounted.
pub const SECRET_MOUNT: &str = "/var/run/opencode-k8s";
/// The agent container's name.
pub const CONTAINER_NAME: &str = "opencode";
/// Secret key of the prompt.
pub const PROMPT_KEY: &str = "prompt";
/// Secret key (and env name) of the agent's Paperclip token.
pub const API_KEY_KEY: &str = "PAPERCLIP_API_KEY";
/// Prefix of Secret keys holding inherited literal env values whose names look secret.
pub const INHERITED_KEY_PREFIX: &str = "inherited.";
/// Prefix of Secret keys holding config `env` values.
pub const ENV_KEY_PREFIX: &str = "env.";
/// Largest total of Secret keys and values the engine creates. The API server refuses
/// Secrets over 1 MiB; the rest is headroom for metadata.
pub const SECRET_LIMIT_BYTES: usize = 1_000_000;
/// Mode of the prompt file: readable by the pod's user and fsGroup only.
const PROMPT_FILE_MODE: i32 = 0o440;
const POD_UID: i64 = 1000;
const PROMPT_VOLUME: &str = "opencode-k8s-run";
const HOME_VOLUME: &str = "paperclip-home";
const TMP_VOLUME: &str = "opencode-k8s-tmp";

/// Why the objects of a run cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The Paperclip pod has no usable container.
    #[error("failed to inherit from pod {pod}: it has no container {}; pass the Paperclip container's name", wanted.as_deref().map_or_else(|| "at all".to_owned(), |w| format!("named `{w}`")))]
    NoContainer {
        /// The pod.
        pod: String,
        /// The container asked for, if any.
        wanted: Option<String>,
    },
    /// Nothing is mounted at `/paperclip` in the Paperclip container.
    #[error(
        "failed to inherit from pod {pod}: container {container} mounts nothing at /paperclip; mount the shared Paperclip PersistentVolumeClaim (ReadWriteMany) at /paperclip so agent pods see the same workspaces"
    )]
    NoWorkspaceVolume {
        /// The pod.
        pod: String,
        /// The container inspected.
        container: String,
    },
    /// `/paperclip` is not a PersistentVolumeClaim, so agent pods cannot share it.
    #[error(
        "failed to inherit from pod {pod}: volume {volume} mounted at /paperclip is not a PersistentVolumeClaim; agent pods on other nodes can only share a ReadWriteMany claim"
    )]
    WorkspaceNotClaim {
        /// The pod.
        pod: String,
        /// The volume mounted at `/paperclip`.
        volume: String,
    },
    /// The run's working directory is not on the shared claim, so the agent could not see it.
    #[error(
        "failed to render the agent Job: the run's working directory {cwd} is not below {WORKSPACE_MOUNT}, the shared volume; agent pods mount only their workspace from the shared claim, so give the agent a workspace under {WORKSPACE_MOUNT} (or set `cwd` in the agent config)"
    )]
    CwdOffClaim {
        /// The working directory.
        cwd: String,
    },
    /// `namespace` with `{companyId}` does not make a valid namespace for this company.
    #[error(
        "failed to render the agent Job: namespace {namespace:?} (from `namespace` with the company id) is not a DNS-1123 label; use a shorter prefix in `namespace`"
    )]
    BadNamespace {
        /// The namespace made.
        namespace: String,
    },
    /// Neither the config nor the Paperclip pod names an image.
    #[error(
        "failed to render the agent Job: no image; set `image` in the agent config to an image with `opencode` on PATH"
    )]
    NoImage,
    /// The prompt and secrets do not fit one Secret.
    #[error(
        "failed to render the agent Job: the per-run Secret would hold {bytes} bytes (prompt {prompt_bytes} bytes), over the {limit}-byte limit of a Kubernetes Secret; shorten the prompt template or instructions file, or move large env values out of the agent config"
    )]
    PromptTooLarge {
        /// Total bytes of keys and values.
        bytes: usize,
        /// Bytes of the prompt alone.
        prompt_bytes: usize,
        /// [`SECRET_LIMIT_BYTES`].
        limit: usize,
    },
}

impl ManifestError {
    /// The stable code: `prompt_too_large` for a prompt that does not fit, else `config_invalid`
    /// (the Paperclip pod or agent config cannot produce a working Job).
    pub const fn code(&self) -> ErrorCode {
        match self {
            ManifestError::PromptTooLarge { .. } => ErrorCode::PromptTooLarge,
            _ => ErrorCode::ConfigInvalid,
        }
    }
}

/// An OpenCode session to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionResume {
    /// `ses_...`.
    pub session_id: String,
    /// The cwd the session was created in, when known.
    pub cwd: Option<String>,
}

/// One run attempt, as the host describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// Paperclip run id.
    pub run_id: String,
    /// Paperclip agent id.
    pub agent_id: String,
    /// Paperclip company id.
    pub company_id: String,
    /// Agent display name (used in object names).
    pub agent_name: Option<String>,
    /// Paperclip task key (sessions are per task).
    pub task_key: Option<String>,
    /// The rendered prompt, fed to OpenCode on stdin; built for the request's own
    /// [`resume_decision`] (the short resume prompt when it resumes).
    pub prompt: String,
    /// The full prompt for a fresh session, when `prompt` is the short resume prompt: used
    /// whenever this attempt does not resume (the in-run fresh retry after a stale session).
    pub fresh_prompt: Option<String>,
    /// The workspace cwd of this run.
    pub cwd: Option<String>,
    /// `PAPERCLIP_*` variables computed by the host.
    pub paperclip_env: BTreeMap<String, String>,
    /// The agent's Paperclip token (`PAPERCLIP_API_KEY`); `Debug` shows only its length.
    pub api_key: Option<SecretString>,
    /// The saved session of the task, if any.
    pub resume: Option<SessionResume>,
    /// 1, or 2 for the in-run fresh retry after a stale session.
    pub attempt: u32,
}

/// The objects to create for one run attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The Job.
    pub job: Job,
    /// The per-run Secret (same name as the Job).
    pub secret: Secret,
    /// The resume decision, to log.
    pub resume: ResumeDecision,
    /// What could not be inherited because no Paperclip pod was given.
    pub not_inherited: Vec<String>,
    /// Things that render but may not work as the operator expects, for the run log.
    pub warnings: Vec<String>,
    /// What the Job inherits from the Paperclip pod, one line each (for `render` and `doctor`).
    pub inherited: Vec<String>,
    /// The run's default-deny egress policy, when `networkPolicy` is on.
    pub network_policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

/// Decides whether to pass `--session` (see [`crate::resume`]): the request's saved session
/// against this run's `cwd`.
pub fn resume_decision(
    req: &RunRequest,
    cwd: Option<&str>,
    config: &AgentConfig,
) -> ResumeDecision {
    let saved = req.resume.as_ref().map(|resume| Saved {
        session_id: &resume.session_id,
        cwd: resume.cwd.as_deref(),
    });
    resume::decide(saved, cwd, config.resume_last_session)
}

/// Env vars in order; setting a name again replaces its value in its first position.
#[derive(Debug, Default)]
struct EnvList(Vec<EnvVar>);

impl EnvList {
    fn set(&mut self, var: EnvVar) {
        match self.0.iter_mut().find(|v| v.name == var.name) {
            Some(slot) => *slot = var,
            None => self.0.push(var),
        }
    }

    fn literal(&mut self, name: &str, value: impl Into<String>) {
        self.set(EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        });
    }

    fn secret_ref(&mut self, name: &str, secret: &str, key: &str) {
        self.set(EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        });
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|v| v.name != name);
    }
}

/// Renders the Job and Secret of one run attempt.
///
/// `inherited` is the Paperclip pod's inheritable parts; without it (out-of-cluster use) the
/// config must name the image, `/paperclip` is an emptyDir, and [`Rendered::not_inherited`]
/// says what is missing.
pub fn render(
    req: &RunRequest,
    inherited: Option<&InheritedPod>,
    config: &AgentConfig,
) -> Result<Rendered, ManifestError> {
    let image = config
        .image
        .clone()
        .or_else(|| inherited.and_then(|p| p.image.clone()))
        .ok_or(ManifestError::NoImage)?;
    let name = object_name(req.agent_name.as_deref(), &req.run_id, req.attempt);
    let cwd = req.cwd.as_deref().or(config.cwd.as_deref());
    let resume = resume_decision(req, cwd, config);
    let mut warnings = Vec::new();
    let (labels, annotations) = labels_and_annotations(req, config, &resume);
    let namespace = job_namespace(req, inherited, config, &mut warnings)?;
    let home = mounts::agent_home(&req.company_id, &req.agent_id);
    let opencode_config = opencode_config_content(inherited, config, &mut warnings);
    let data = secret_data(req, &resume, inherited, config, opencode_config.as_ref())?;
    let env = build_env(req, inherited, config, &name, &home, opencode_config);
    let (storage, not_inherited) = match inherited {
        Some(pod) => (claim_storage(pod, config, cwd, &home, &image)?, Vec::new()),
        None => (
            Storage::scratch(),
            not_inherited_without_pod(config, namespace.is_none()),
        ),
    };
    let Storage {
        init_containers,
        mut volumes,
        mut mounts,
    } = storage;
    add_run_volumes(&name, config, &mut volumes, &mut mounts);
    let container = agent_container(image, config, &resume, cwd, inherited, env, mounts);
    let pod_spec = pod_spec(config, inherited, container, init_containers, volumes);
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.clone(),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..Default::default()
    };
    let job = job(meta.clone(), labels, annotations, pod_spec, config);
    let secret = run_secret(meta, data);
    let network_policy = config
        .network_policy
        .then(|| network::network_policy(&name, namespace.as_deref(), &job, inherited, config));
    Ok(Rendered {
        job,
        secret,
        resume,
        not_inherited,
        warnings,
        inherited: inherited.map(InheritedPod::summary).unwrap_or_default(),
        network_policy,
    })
}

/// The agent container: OpenCode under a signal-forwarding `sh` ([`agent_command`]), with the
/// run's env and mounts, locked down by [`container_security`].
fn agent_container(
    image: String,
    config: &AgentConfig,
    resume: &ResumeDecision,
    cwd: Option<&str>,
    inherited: Option<&InheritedPod>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(image),
        image_pull_policy: Some(config.image_pull_policy.as_str().into()),
        command: Some(agent_command()),
        args: Some(agent_args(config, resume)),
        working_dir: cwd.map(str::to_owned),
        env: Some(env),
        env_from: inherited
            .map(|p| p.env_from.clone())
            .filter(|e| !e.is_empty()),
        resources: Some(resources(config)),
        volume_mounts: Some(mounts),
        security_context: Some(container_security(config)),
        ..Default::default()
    }
}

/// The per-run Secret: immutable, named and labelled like the Job, holding `data`.
fn run_secret(metadata: ObjectMeta, data: BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// The labels and annotations of every object of the run.
fn labels_and_annotations(
    req: &RunRequest,
    config: &AgentConfig,
    resume: &ResumeDecision,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let ids = names::RunIds {
        run_id: &req.run_id,
        agent_id: &req.agent_id,
        company_id: &req.company_id,
        task_key: req.task_key.as_deref(),
    };
    let labels = ids.labels(&config.labels);
    let mut annotations = ids.annotations();
    if let Some(agent_name) = &req.agent_name {
        annotations.insert(AGENT_NAME_ANNOTATION.into(), agent_name.clone());
    }
    annotations.insert(ATTEMPT_ANNOTATION.into(), req.attempt.max(1).to_string());
    if let ResumeDecision::Resumed { session_id } = resume {
        annotations.insert(RESUME_SESSION_ANNOTATION.into(), session_id.clone());
    }
    (labels, annotations)
}

/// The namespace the run's objects go to, if one is set (else the client's default).
fn job_namespace(
    req: &RunRequest,
    inherited: Option<&InheritedPod>,
    config: &AgentConfig,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ManifestError> {
    let namespace = config
        .namespace_for(&req.company_id)
        .or_else(|| inherited.and_then(|p| p.namespace.clone()));
    if let Some(ns) = namespace.as_deref()
        && !crate::config::syntax::is_dns1123_label(ns)
    {
        return Err(ManifestError::BadNamespace {
            namespace: ns.to_owned(),
        });
    }
    if let (Some(pod), Some(ns)) = (inherited, &namespace)
        && pod.namespace.as_ref().is_some_and(|pod_ns| pod_ns != ns)
    {
        warnings.push(format!(
            "agent Jobs run in namespace {ns} but the Paperclip pod is in {}; the shared volume claim and inherited Secrets must exist in {ns} too",
            pod.namespace.as_deref().unwrap_or_default()
        ));
    }
    Ok(namespace)
}

/// The run Secret's data: everything secret, nothing else; bounded by the Secret size limit.
fn secret_data(
    req: &RunRequest,
    resume: &ResumeDecision,
    inherited: Option<&InheritedPod>,
    config: &AgentConfig,
    opencode_config: Option<&String>,
) -> Result<BTreeMap<String, Vec<u8>>, ManifestError> {
    let mut data = BTreeMap::new();
    let prompt = match (resume, &req.fresh_prompt) {
        (ResumeDecision::Resumed { .. }, _) | (_, None) => &req.prompt,
        (_, Some(fresh)) => fresh,
    };
    data.insert(PROMPT_KEY.to_owned(), prompt.clone().into_bytes());
    if let Some(key) = &req.api_key {
        data.insert(API_KEY_KEY.to_owned(), key.expose().as_bytes().to_vec());
    }
    for (env_name, value) in &config.env {
        let value = match (opencode_config, env_name.as_str()) {
            (Some(merged), "OPENCODE_CONFIG_CONTENT") => merged.clone(),
            _ => value.expose().to_owned(),
        };
        data.insert(format!("{ENV_KEY_PREFIX}{env_name}"), value.into_bytes());
    }
    for var in inherited.map(|p| p.env.as_slice()).unwrap_or_default() {
        if var.name == API_KEY_KEY {
            continue;
        }
        if let Some(value) = secret_literal(var) {
            data.insert(
                format!("{INHERITED_KEY_PREFIX}{}", var.name),
                value.as_bytes().to_vec(),
            );
        }
    }
    let bytes: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > SECRET_LIMIT_BYTES {
        return Err(ManifestError::PromptTooLarge {
            bytes,
            prompt_bytes: prompt.len(),
            limit: SECRET_LIMIT_BYTES,
        });
    }
    Ok(data)
}

/// The arguments of `opencode run`.
fn agent_args(config: &AgentConfig, resume: &ResumeDecision) -> Vec<String> {
    let mut args = vec![
        config
            .command
            .clone()
            .unwrap_or_else(|| "opencode".to_owned()),
        "run".into(),
        "--format".into(),
        "json".into(),
    ];
    args.extend(["--model".to_owned(), config.model.clone()]);
    if let Some(variant) = &config.variant {
        args.extend(["--variant".to_owned(), variant.clone()]);
    }
    if let ResumeDecision::Resumed { session_id } = resume {
        args.extend(["--session".to_owned(), session_id.clone()]);
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// The agent container's security context (PSS restricted).
fn container_security(config: &AgentConfig) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        run_as_non_root: Some(true),
        read_only_root_filesystem: config.read_only_root_filesystem.then_some(true),
        ..Default::default()
    }
}

/// The workspace storage of the pod: init containers, volumes and the agent's mounts.
struct Storage {
    init_containers: Vec<Container>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

impl Storage {
    /// An emptyDir at the workspace mount, when no Paperclip pod shares its volume.
    fn scratch() -> Self {
        Self {
            init_containers: Vec::new(),
            volumes: vec![Volume {
                name: HOME_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }],
            mounts: vec![VolumeMount {
                name: HOME_VOLUME.into(),
                mount_path: WORKSPACE_MOUNT.into(),
                ..Default::default()
            }],
        }
    }
}

/// The Paperclip pod's workspace claim and its Secret volumes, narrowed to what the run needs.
fn claim_storage(
    pod: &InheritedPod,
    config: &AgentConfig,
    cwd: Option<&str>,
    home: &str,
    image: &str,
) -> Result<Storage, ManifestError> {
    let instructions_dir = config
        .instructions_file_path
        .as_deref()
        .and_then(|f| std::path::Path::new(f).parent())
        .and_then(|d| d.to_str());
    let claim = mounts::claim_mounts(
        &pod.workspace_volume,
        &pod.workspace_mount,
        cwd,
        home,
        instructions_dir,
        Container {
            image: Some(image.to_owned()),
            image_pull_policy: Some(config.image_pull_policy.as_str().into()),
            resources: Some(resources(config)),
            security_context: Some(SecurityContext {
                read_only_root_filesystem: Some(true),
                ..container_security(config)
            }),
            ..Default::default()
        },
    )?;
    let mut volumes = vec![claim.volume];
    volumes.extend(pod.secret_volumes.iter().cloned());
    let mut mounts = claim.mounts;
    mounts.extend(pod.secret_mounts.iter().cloned());
    Ok(Storage {
        init_containers: vec![claim.init],
        volumes,
        mounts,
    })
}

/// What a run without a Paperclip pod to inherit from goes without.
fn not_inherited_without_pod(config: &AgentConfig, no_namespace: bool) -> Vec<String> {
    let mut not_inherited = vec![
        format!(
            "the shared volume at {WORKSPACE_MOUNT}: an emptyDir is used, so workspaces are not visible and sessions do not survive the run"
        ),
        "image pull secrets, DNS settings, Secret volumes and env of the Paperclip container".into(),
        "PAPERCLIP_API_URL of the Paperclip pod: set `paperclipApiUrl` if the host's URL is not reachable from pods".into(),
    ];
    if config.node_selector.is_empty() && config.tolerations.is_empty() {
        not_inherited.push("node selector and tolerations".into());
    }
    if no_namespace {
        not_inherited
            .push("namespace: none is set, so the client's default namespace is used".into());
    }
    not_inherited
}

/// The volumes every run has: a writable /tmp under a read-only root, and the prompt file.
fn add_run_volumes(
    name: &str,
    config: &AgentConfig,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    if config.read_only_root_filesystem {
        // OpenCode and the tools it runs write temporary files; caches live in HOME.
        volumes.push(Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        });
    }
    volumes.push(Volume {
        name: PROMPT_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.to_owned()),
            items: Some(vec![KeyToPath {
                key: PROMPT_KEY.into(),
                path: PROMPT_KEY.into(),
                mode: None,
            }]),
            default_mode: Some(PROMPT_FILE_MODE),
            optional: Some(false),
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: PROMPT_VOLUME.into(),
        mount_path: SECRET_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    });
}

/// The pod of the run: the agent container, placement and the pod's security context.
fn pod_spec(
    config: &AgentConfig,
    inherited: Option<&InheritedPod>,
    container: Container,
    init_containers: Vec<Container>,
    volumes: Vec<Volume>,
) -> PodSpec {
    let node_selector = if config.node_selector.is_empty() {
        inherited
            .map(|p| p.node_selector.clone())
            .unwrap_or_default()
    } else {
        config.node_selector.clone()
    };
    let tolerations = if config.tolerations.is_empty() {
        inherited.map(|p| p.tolerations.clone()).unwrap_or_default()
    } else {
        config.tolerations.clone()
    };
    PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![container],
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        runtime_class_name: config.runtime_class_name.clone(),
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        service_account_name: config.service_account_name.clone(),
        termination_grace_period_seconds: Some(i64::try_from(config.grace_sec).unwrap_or(i64::MAX)),
        image_pull_secrets: inherited
            .map(|p| p.image_pull_secrets.clone())
            .filter(|s| !s.is_empty()),
        dns_policy: inherited.and_then(|p| p.dns_policy.clone()),
        dns_config: inherited.and_then(|p| p.dns_config.clone()),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(POD_UID),
            run_as_group: Some(POD_UID),
            fs_group: Some(POD_UID),
            run_as_non_root: Some(true),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Job: one attempt, no retries, bounded by the agent's timeout, removed by its TTL.
fn job(
    metadata: ObjectMeta,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pod_spec: PodSpec,
    config: &AgentConfig,
) -> Job {
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: (config.timeout_sec > 0)
                .then(|| i64::try_from(config.timeout_sec).unwrap_or(i64::MAX)),
            ttl_seconds_after_finished: (!config.retain_jobs)
                .then(|| i32::try_from(config.ttl_seconds_after_finished).unwrap_or(i32::MAX)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The `OPENCODE_CONFIG_CONTENT` value the engine sets, if it sets one: the config's own (else
/// the Paperclip container's literal one) with the permission bypass merged in.
fn opencode_config_content(
    inherited: Option<&InheritedPod>,
    config: &AgentConfig,
    warnings: &mut Vec<String>,
) -> Option<String> {
    if !config.dangerously_skip_permissions {
        return None;
    }
    const NAME: &str = "OPENCODE_CONFIG_CONTENT";
    let from_config = config.env.get(NAME).map(|v| v.expose().to_owned());
    let inherited_var = inherited.and_then(|p| p.env_value(NAME));
    let base = from_config.or_else(|| {
        let var = inherited_var?;
        if var.value.is_none() {
            warnings.push(format!("the Paperclip container's {NAME} comes from a reference and is replaced by the permission bypass; put it in the agent config `env` to keep it"));
        }
        var.value.clone()
    });
    let mut object = base
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    // Nobody can answer a permission prompt inside a Job; "allow" sets every permission at once.
    object["permission"] = json!("allow");
    Some(object.to_string())
}

/// The value of an inherited variable written literally in the Paperclip container whose name
/// says it is a credential (`..._API_KEY`, `..._TOKEN`, `..._SECRET`, `..._PASSWORD`...): it moves
/// into the per-run Secret, so nobody who can read Jobs reads it.
fn secret_literal(var: &EnvVar) -> Option<&str> {
    let name = var.name.to_ascii_uppercase();
    let secret = ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"]
        .iter()
        .any(|word| name.contains(word));
    var.value.as_deref().filter(|v| secret && !v.is_empty())
}

/// The container's command: a small `sh` that runs OpenCode (`args`) as its child.
///
/// The container's first process is PID 1, which the kernel spares every signal it has no
/// handler for: an `exec`ed OpenCode ignored SIGTERM and every stop (timeout, cancel) waited the
/// whole grace period for SIGKILL (measured: a 5 s timeout ended after 35.8 s). This `sh` traps
/// TERM and INT and passes them on as TERM (a shell starts a background command with SIGINT
/// ignored), waits for OpenCode and exits with its status (143 when stopped by a signal). Its own
/// stderr goes to /dev/null (a shell reports a child killed by a signal, `Terminated`, which is
/// not the agent's output); OpenCode keeps the real one. It also
/// creates the session database's directory (OpenCode does not, and fails with "unable to open
/// database file") and feeds the prompt on stdin (as an argument it reaches the model quoted).
/// User data only ever travels as positional arguments, never quoted into the script.
fn agent_command() -> Vec<String> {
    let script = format!(
        "mkdir -p \"${{OPENCODE_DB%/*}}\" || exit\n\
         exec 3>&2 2>/dev/null\n\
         \"$@\" < {SECRET_MOUNT}/{PROMPT_KEY} 2>&3 3>&- &\n\
         pid=$!\n\
         trap 'kill -TERM \"$pid\"' TERM INT\n\
         wait \"$pid\"\n\
         status=$?\n\
         while kill -0 \"$pid\"; do wait \"$pid\"; status=$?; done\n\
         exit \"$status\"\n"
    );
    vec!["sh".into(), "-c".into(), script, "opencode".into()]
}

/// The agent's env, layered inherited → `PAPERCLIP_*` → config `env` → engine-owned; a later
/// layer replaces a name in its first position. Secret values are only ever `secretKeyRef`s
/// into the run's Secret `secret_name`.
fn build_env(
    req: &RunRequest,
    inherited: Option<&InheritedPod>,
    config: &AgentConfig,
    secret_name: &str,
    home: &str,
    opencode_config: Option<String>,
) -> Vec<EnvVar> {
    let mut env = inherited_env(inherited, secret_name);
    add_paperclip_env(&mut env, req, inherited);
    for name in config.env.keys() {
        env.secret_ref(name, secret_name, &format!("{ENV_KEY_PREFIX}{name}"));
    }
    if req.api_key.is_some() {
        env.secret_ref(API_KEY_KEY, secret_name, API_KEY_KEY);
    }
    if let Some(url) = &config.paperclip_api_url {
        env.literal("PAPERCLIP_API_URL", url.clone());
    }
    env.literal("HOME", home);
    env.literal("OPENCODE_DISABLE_PROJECT_CONFIG", "true");
    env.literal("OPENCODE_DISABLE_AUTOUPDATE", "1");
    // The same path as before agents got their own HOME, so saved sessions still resume.
    env.literal("OPENCODE_DB", format!("{home}/opencode.db"));
    match opencode_config {
        // A config-supplied value may hold provider keys: it stays in the Secret.
        Some(_) if config.env.contains_key("OPENCODE_CONFIG_CONTENT") => {}
        Some(merged) => env.literal("OPENCODE_CONFIG_CONTENT", merged),
        None => {}
    }
    env.0
}

/// The Paperclip container's env as the agent gets it: secret-looking literals moved into the
/// run's Secret, the server's API key dropped, withheld names masked.
fn inherited_env(inherited: Option<&InheritedPod>, secret_name: &str) -> EnvList {
    let mut env = EnvList::default();
    for var in inherited.map(|p| p.env.as_slice()).unwrap_or_default() {
        if secret_literal(var).is_some() {
            env.secret_ref(
                &var.name,
                secret_name,
                &format!("{INHERITED_KEY_PREFIX}{}", var.name),
            );
        } else {
            env.set(var.clone());
        }
    }
    // The Paperclip pod's own key must never reach an agent; the run's key is set later.
    env.remove(API_KEY_KEY);
    // `envFrom` cannot drop single keys: an explicit empty value masks a withheld one.
    if let Some(pod) = inherited.filter(|p| !p.env_from.is_empty()) {
        for name in &pod.withheld_env {
            env.literal(name, "");
        }
    }
    env
}

/// The host's `PAPERCLIP_*` variables, but for those the engine owns or the pod knows better.
fn add_paperclip_env(env: &mut EnvList, req: &RunRequest, inherited: Option<&InheritedPod>) {
    let inherited_api_url = inherited.is_some_and(|p| p.env_value("PAPERCLIP_API_URL").is_some());
    for (name, value) in &req.paperclip_env {
        let keep = match name.as_str() {
            // The host computes a localhost URL that is unreachable from a pod; the Paperclip
            // pod's own value is the one that works from inside the cluster.
            "PAPERCLIP_API_URL" => !inherited_api_url,
            // HOME, OPENCODE_DB, the API key...: set later, or only through the Secret.
            _ => !crate::config::ENGINE_OWNED_ENV
                .iter()
                .any(|(n, _)| n == name),
        };
        if keep {
            env.literal(name, value.clone());
        }
    }
}

/// The requests and limits of the config, for the agent and its init container alike.
fn resources(config: &AgentConfig) -> ResourceRequirements {
    let amounts = |a: &crate::config::ResourceAmounts| {
        BTreeMap::from([
            ("cpu".to_owned(), KubeQuantity(a.cpu.as_str().to_owned())),
            (
                "memory".to_owned(),
                KubeQuantity(a.memory.as_str().to_owned()),
            ),
        ])
    };
    ResourceRequirements {
        requests: Some(amounts(&config.resources.requests)),
        limits: Some(amounts(&config.resources.limits)),
        ..Default::default()
    }
}
