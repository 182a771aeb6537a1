//! The real-cluster test tier: the engine against a real Kubernetes cluster (kind, minikube,
//! `../shared/k8s`, any conformant one) given by an admin kubeconfig in
//! `OPENCODE_K8S_TEST_KUBECONFIG`. Without it every test prints that it was skipped and passes.
//!
//! Each test gets a [`Sandbox`]: its own namespace (prefix `oct-`), a ServiceAccount bound to the
//! Role generated from the engine's table of verbs (never admin), a kubeconfig for that identity
//! from the TokenRequest API, a claim on the node directory every sandbox shares at
//! `/paperclip`, and a "Paperclip pod" the engine inherits image, env and volume from. The agent
//! is a fake `opencode` script (`images/agent/`) in an image built with the cluster's `mkimage`
//! (`build-images`), driven by the run's prompt.
//!
//! Other settings, all optional: `OPENCODE_K8S_TEST_HOSTPATH` (a world-writable directory on the
//! node for the claims; default the hostPath of the PV `shared` of `../shared/k8s`),
//! `OPENCODE_K8S_TEST_AUDIT_LOG` (the API server's audit log, for request counts; default
//! `../shared/k8s`'s, `~/.cache/local-k8s/audit.log`, when it exists), `OPENCODE_K8S_TEST_K8S_DIR` (the directory
//! with `up` and `down`, for the API server restart test; default `../shared/k8s`),
//! `OPENCODE_K8S_TEST_MKIMAGE` (see `build-images`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    EnvVar, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use opencode_k8s_core::config::AgentConfig;
use opencode_k8s_core::event::{RunEvent, RunSink};
use opencode_k8s_core::lifecycle::{Bounds, Engine, EngineOptions, SelfPod};
use opencode_k8s_core::manifest::RunRequest;
use opencode_k8s_core::rbac::{self, RbacOptions};
use serde_json::{Value, json};

/// The admin kubeconfig of the cluster to test against.
pub const KUBECONFIG_ENV: &str = "OPENCODE_K8S_TEST_KUBECONFIG";
/// Name of the Paperclip pod in every sandbox.
pub const PAPERCLIP_POD: &str = "paperclip";
/// Name of the engine's ServiceAccount in every sandbox.
pub const ENGINE_SA: &str = "engine";
const CLAIM: &str = "paperclip-data";
const STORAGE_CLASS: &str = "opencode-k8s-tier";
const REPO_SHARED_K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/k8s");

/// Any failure of the harness itself (not of the engine under test).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn err(message: impl Into<String>) -> Error {
    message.into().into()
}

/// The cluster under test, seen with admin rights.
#[derive(Clone)]
pub struct Tier {
    /// Admin client (setup, cleanup and checks only; the engine never gets it).
    pub admin: Client,
    kubeconfig: Kubeconfig,
    /// The fake agent image.
    pub image: String,
    hostpath: String,
    /// The API server's audit log, when readable here.
    pub audit_log: Option<PathBuf>,
    /// The directory with the cluster's `up` and `down` scripts, when there is one.
    pub k8s_dir: Option<PathBuf>,
}

impl fmt::Debug for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier")
            .field("image", &self.image)
            .field("hostpath", &self.hostpath)
            .field("audit_log", &self.audit_log)
            .field("k8s_dir", &self.k8s_dir)
            .finish_non_exhaustive()
    }
}

/// The tier for test `name`, or `None` (and a line saying it was skipped) without a cluster.
/// Panics when a cluster is given but cannot be used: a broken setup is not a skip.
pub async fn tier(name: &str) -> Option<Tier> {
    let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) else {
        say(&format!(
            "real-cluster tier: {name} SKIPPED (no cluster: set {KUBECONFIG_ENV})"
        ));
        return None;
    };
    Some(
        Tier::connect(Path::new(&path))
            .await
            .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: {e}", Path::new(&path).display())),
    )
}

/// One line on stderr (shown with `--nocapture`): skips and measured numbers.
#[expect(
    clippy::print_stderr,
    reason = "the tier reports skips and measurements"
)]
pub fn say(line: &str) {
    eprintln!("{line}");
}

impl Tier {
    /// Connects with the admin kubeconfig at `path` and makes sure the agent image is there.
    pub async fn connect(path: &Path) -> Result<Tier, Error> {
        // The tier is the operator: the engine kubeconfig paths in its agent configs are its own.
        opencode_k8s_core::lifecycle::trust_agent_kubeconfig_paths();
        let kubeconfig = Kubeconfig::read_from(path)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
                .await?;
        let admin = Client::try_from(config)?;
        let env_path = |key: &str| {
            std::env::var_os(key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let audit_log = env_path("OPENCODE_K8S_TEST_AUDIT_LOG").or_else(|| {
            let default =
                PathBuf::from(std::env::var_os("HOME")?).join(".cache/local-k8s/audit.log");
            default.exists().then_some(default)
        });
        let k8s_dir = env_path("OPENCODE_K8S_TEST_K8S_DIR")
            .or_else(|| Some(PathBuf::from(REPO_SHARED_K8S)))
            .filter(|dir| dir.join("up").exists() && dir.join("down").exists());
        let hostpath = match std::env::var("OPENCODE_K8S_TEST_HOSTPATH") {
            Ok(path) if !path.is_empty() => path,
            _ => Api::<PersistentVolume>::all(admin.clone())
                .get_opt("shared")
                .await?
                .and_then(|pv| pv.spec?.host_path.map(|h| h.path))
                .ok_or_else(|| {
                    err("no PV `shared` with a hostPath: set OPENCODE_K8S_TEST_HOSTPATH to a world-writable directory on the node")
                })?,
        };
        let image = ensure_image(&admin).await?;
        sweep_stale(&admin).await?;
        Ok(Tier {
            admin,
            kubeconfig,
            image,
            hostpath,
            audit_log,
            k8s_dir,
        })
    }

    /// The node directory behind every sandbox's `/paperclip` claim (the tier runs on the node).
    pub fn claim_host_dir(&self) -> &Path {
        Path::new(&self.hostpath)
    }

    /// A new sandbox namespace for `test`.
    pub async fn sandbox(&self, test: &str, options: SandboxOptions) -> Result<Sandbox, Error> {
        Sandbox::create(self, test, options).await
    }

    /// Until the API server answers `/readyz` (bounded).
    pub async fn wait_ready(&self, bound: Duration) -> Result<(), Error> {
        let until = Instant::now() + bound;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            if let Ok(text) = self.admin.request_text(request).await
                && text.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(err(format!(
                    "the API server was not ready within {bound:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Restarts the kube-apiserver with the cluster's `down kube-apiserver` and `up`; returns
    /// how long it was away. Only this tier does that on the shared cluster.
    pub async fn restart_apiserver(&self) -> Result<Duration, Error> {
        let dir = self
            .k8s_dir
            .as_ref()
            .ok_or_else(|| err("no cluster scripts directory (OPENCODE_K8S_TEST_K8S_DIR)"))?;
        let started = Instant::now();
        for (script, args) in [("down", &["kube-apiserver"][..]), ("up", &[][..])] {
            let out = tokio::process::Command::new(dir.join(script))
                .args(args)
                .output()
                .await?;
            if !out.status.success() {
                return Err(err(format!(
                    "{script} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        self.wait_ready(Duration::from_secs(60)).await?;
        Ok(started.elapsed())
    }
}

/// The agent image: its tag is a hash of `images/agent/`; built with `build-images` unless the
/// node already has it.
async fn ensure_image(admin: &Client) -> Result<String, Error> {
    static ENSURED: OnceLock<String> = OnceLock::new();
    if let Some(image) = ENSURED.get() {
        return Ok(image.clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-images");
    let reference = |args: &[&str]| -> Result<String, Error> {
        let out = std::process::Command::new(&script).args(args).output()?;
        if !out.status.success() {
            return Err(err(format!(
                "{} {args:?} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let image = reference(&["--print-ref"])?;
    let nodes = Api::<Node>::all(admin.clone())
        .list(&Default::default())
        .await?;
    let present = nodes.items.iter().all(|node| {
        node.status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .is_some_and(|images| {
                images
                    .iter()
                    .any(|i| i.names.iter().flatten().any(|n| n.ends_with(&image)))
            })
    });
    if !present {
        reference(&[]).map_err(|e| {
            err(format!(
                "the node does not list image {image} and building it failed: {e}\nbuild it with `build-images --output FILE` and load it into the cluster (README: the real-cluster tier)"
            ))
        })?;
    }
    Ok(ENSURED.get_or_init(|| image).clone())
}

/// The label of everything a sandbox creates outside its namespace, and of the namespace.
const PART_OF: &str = "app.kubernetes.io/part-of=opencode-k8s-tier";

/// Deletes sandboxes (namespaces and PVs) older than an hour: left by a test process that was
/// killed before it could clean up. Once per process.
async fn sweep_stale(admin: &Client) -> Result<(), Error> {
    static SWEPT: OnceLock<()> = OnceLock::new();
    if SWEPT.get().is_some() {
        return Ok(());
    }
    let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let stale = |meta: &kube::api::ObjectMeta| {
        meta.creation_timestamp
            .as_ref()
            .is_some_and(|t| t.0 < cutoff)
    };
    let lp = kube::api::ListParams::default().labels(PART_OF);
    let dp = DeleteParams::background();
    let namespaces = Api::<Namespace>::all(admin.clone());
    for ns in namespaces.list(&lp).await?.items {
        if let (true, Some(name)) = (stale(&ns.metadata), &ns.metadata.name) {
            namespaces.delete(name, &dp).await?;
        }
    }
    let volumes = Api::<PersistentVolume>::all(admin.clone());
    for pv in volumes.list(&lp).await?.items {
        if let (true, Some(name)) = (stale(&pv.metadata), &pv.metadata.name) {
            volumes.delete(name, &dp).await?;
        }
    }
    let _ = SWEPT.set(());
    Ok(())
}

/// How a sandbox differs from the default one.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Label the namespace `pod-security.kubernetes.io/enforce=restricted`.
    pub restricted: bool,
    /// The engine's Role rules instead of the generated Role's (`opencode-k8s rbac`).
    pub rules: Option<Vec<PolicyRule>>,
    /// More env of the Paperclip container.
    pub paperclip_env: Vec<EnvVar>,
    /// Secrets (name → key → value) to create before the Paperclip pod.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// One test's namespace, engine identity and Paperclip pod; deleted on drop.
pub struct Sandbox {
    /// The namespace.
    pub ns: String,
    /// The kubeconfig of the engine's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// The cluster.
    pub tier: Tier,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox").field("ns", &self.ns).finish()
    }
}

fn suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{:06x}",
        (nanos ^ u128::from(std::process::id())) & 0xff_ffff
    )
}

/// `test` as a DNS label fragment.
fn label(test: &str) -> String {
    let mut out: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(40);
    out.trim_matches('-').to_owned()
}

impl Sandbox {
    async fn create(tier: &Tier, test: &str, options: SandboxOptions) -> Result<Sandbox, Error> {
        let ns = format!("oct-{}-{}", label(test), suffix());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{ns}-"))
            .tempdir()?;
        let sandbox = Sandbox {
            kubeconfig: dir.path().join("engine.kubeconfig"),
            ns,
            tier: tier.clone(),
            _dir: dir,
        };
        sandbox.set_up(&options).await?;
        Ok(sandbox)
    }

    async fn set_up(&self, options: &SandboxOptions) -> Result<(), Error> {
        let admin = &self.tier.admin;
        let ns = self.ns.as_str();
        let pp = PostParams::default();
        let mut labels = json!({"app.kubernetes.io/part-of": "opencode-k8s-tier"});
        if options.restricted {
            labels["pod-security.kubernetes.io/enforce"] = json!("restricted");
            labels["pod-security.kubernetes.io/enforce-version"] = json!("latest");
        }
        Api::<Namespace>::all(admin.clone())
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}}))?,
            )
            .await?;
        let pv_name = ns;
        Api::<PersistentVolume>::all(admin.clone())
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/part-of": "opencode-k8s-tier"}},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": STORAGE_CLASS,
                        "hostPath": {"path": self.tier.hostpath},
                        "claimRef": {"namespace": ns, "name": CLAIM},
                    }
                }))?,
            )
            .await?;
        Api::<PersistentVolumeClaim>::namespaced(admin.clone(), ns)
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "metadata": {"name": CLAIM},
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "storageClassName": STORAGE_CLASS,
                        "volumeName": pv_name,
                        "resources": {"requests": {"storage": "1Gi"}},
                    }
                }))?,
            )
            .await?;
        self.bind_engine(options.rules.as_deref()).await?;
        for (name, data) in &options.secrets {
            Api::<Secret>::namespaced(admin.clone(), ns)
                .create(
                    &pp,
                    &serde_json::from_value(
                        json!({"metadata": {"name": name}, "stringData": data}),
                    )?,
                )
                .await?;
        }
        self.write_kubeconfig().await?;
        // Pods are refused until the namespace's default ServiceAccount exists.
        wait_for(
            Duration::from_secs(30),
            "the default ServiceAccount",
            || async {
                Api::<ServiceAccount>::namespaced(admin.clone(), ns)
                    .get_opt("default")
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ())
            },
        )
        .await?;
        let mut env = vec![
            json!({"name": "PAPERCLIP_API_URL", "value": "http://paperclip.tier.invalid:3100"}),
            json!({"name": "TIER_INHERITED", "value": "from-the-paperclip-pod"}),
        ];
        env.extend(
            options
                .paperclip_env
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?,
        );
        Api::<Pod>::namespaced(admin.clone(), ns)
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "metadata": {"name": PAPERCLIP_POD, "labels": {"app.kubernetes.io/name": "paperclip"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "automountServiceAccountToken": false,
                        "securityContext": {
                            "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [{
                            "name": "paperclip",
                            "image": self.tier.image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                            "env": env,
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "100m", "memory": "64Mi"},
                            },
                            "volumeMounts": [{"name": "data", "mountPath": "/paperclip"}],
                        }],
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}],
                    }
                }))?,
            )
            .await?;
        Ok(())
    }

    /// The engine's ServiceAccount, its Role and RoleBinding: with `rules`, a Role of those;
    /// without, the objects `opencode-k8s rbac` prints for this namespace and ServiceAccount.
    async fn bind_engine(&self, rules: Option<&[PolicyRule]>) -> Result<(), Error> {
        let admin = &self.tier.admin;
        let ns = self.ns.as_str();
        let pp = PostParams::default();
        Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": ENGINE_SA}}))?,
            )
            .await?;
        let generated = rbac::render_yaml(&RbacOptions {
            namespace: ns.to_owned(),
            subject: rbac::RbacSubject::ServiceAccount {
                namespace: ns.to_owned(),
                name: ENGINE_SA.to_owned(),
            },
            cluster_scoped: false,
            name: "opencode-k8s".to_owned(),
        })?;
        // The header comment, then one document per object.
        for document in generated.split("---\n").skip(1) {
            let object: Value = serde_saphyr::from_str(document)?;
            match object["kind"].as_str() {
                Some("Role") => {
                    let mut role: Role = serde_json::from_value(object)?;
                    if let Some(rules) = rules {
                        role.rules = Some(rules.to_vec());
                    }
                    Api::<Role>::namespaced(admin.clone(), ns)
                        .create(&pp, &role)
                        .await?;
                }
                Some("RoleBinding") => {
                    Api::<RoleBinding>::namespaced(admin.clone(), ns)
                        .create(&pp, &serde_json::from_value(object)?)
                        .await?;
                }
                other => return Err(err(format!("unexpected {other:?} in `opencode-k8s rbac`"))),
            }
        }
        Ok(())
    }

    /// The engine's kubeconfig: the admin's cluster entry, the ServiceAccount's token.
    async fn write_kubeconfig(&self) -> Result<(), Error> {
        let token = Api::<ServiceAccount>::namespaced(self.tier.admin.clone(), &self.ns)
            .create_token_request(
                ENGINE_SA,
                &PostParams::default(),
                &TokenRequest {
                    spec: TokenRequestSpec {
                        audiences: Vec::new(),
                        expiration_seconds: Some(3 * 3600),
                        bound_object_ref: None,
                    },
                    ..Default::default()
                },
            )
            .await?
            .status
            .ok_or_else(|| err("TokenRequest returned no status"))?
            .token;
        let admin = &self.tier.kubeconfig;
        let context = admin
            .contexts
            .iter()
            .find(|c| Some(&c.name) == admin.current_context.as_ref())
            .or_else(|| admin.contexts.first())
            .and_then(|c| c.context.as_ref())
            .ok_or_else(|| err("the admin kubeconfig has no context"))?;
        let cluster = admin
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| err("the admin kubeconfig's context names no cluster"))?;
        // JSON is YAML: the engine reads this file as any kubeconfig.
        let file = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tier", "cluster": cluster}],
            "users": [{"name": ENGINE_SA, "user": {"token": token}}],
            "contexts": [{"name": "tier", "context": {"cluster": "tier", "user": ENGINE_SA, "namespace": self.ns}}],
            "current-context": "tier",
        });
        std::fs::write(&self.kubeconfig, serde_json::to_vec_pretty(&file)?)?;
        Ok(())
    }

    /// The audit log's user name of the engine.
    pub fn engine_user(&self) -> String {
        format!("system:serviceaccount:{}:{ENGINE_SA}", self.ns)
    }

    /// An engine that inherits from this sandbox's Paperclip pod.
    pub fn engine(&self, bounds: Bounds) -> Engine {
        Engine::new(EngineOptions {
            self_pod: SelfPod::Named {
                namespace: self.ns.clone(),
                name: PAPERCLIP_POD.into(),
            },
            bounds,
        })
    }

    /// The agent config as JSON (small requests so runs fit any node), with `extra` merged in.
    pub fn config_json(&self, extra: Value) -> Value {
        let mut config = json!({
            "model": "fake/fake-model",
            "kubeconfig": self.kubeconfig,
            "namespace": self.ns,
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "1", "memory": "128Mi"},
            },
            "graceSec": "5",
            "ttlSecondsAfterFinished": "300",
        });
        if let (Some(into), Value::Object(from)) = (config.as_object_mut(), extra) {
            into.extend(from);
        }
        config
    }

    /// The agent config, with `extra` merged in.
    pub fn config(&self, extra: Value) -> AgentConfig {
        AgentConfig::from_json(&self.config_json(extra)).expect("the tier's config is valid")
    }

    /// A run request for `agent` whose prompt is the fake agent's plan.
    pub fn request(&self, run_id: &str, agent: &str, plan: &str) -> RunRequest {
        RunRequest {
            run_id: run_id.into(),
            agent_id: agent.into(),
            company_id: "tier".into(),
            agent_name: Some("Tier Agent".into()),
            task_key: Some(format!("task-{run_id}")),
            prompt: format!("{plan}\n"),
            fresh_prompt: None,
            cwd: Some("/paperclip/workspaces/tier".into()),
            paperclip_env: BTreeMap::from([("PAPERCLIP_RUN_ID".to_owned(), run_id.to_owned())]),
            api_key: Some("tier-agent-token".into()),
            resume: None,
            attempt: 1,
        }
    }

    /// Names of the objects of `kind` (`jobs`, `pods`, `secrets`) in the sandbox whose name
    /// starts with `prefix` (the engine names a run's objects `oc-...`).
    pub async fn names(&self, kind: &str, prefix: &str) -> Result<Vec<String>, Error> {
        let admin = self.tier.admin.clone();
        let ns = self.ns.as_str();
        let names = match kind {
            "jobs" => {
                list_names(Api::<k8s_openapi::api::batch::v1::Job>::namespaced(
                    admin, ns,
                ))
                .await?
            }
            "pods" => list_names(Api::<Pod>::namespaced(admin, ns)).await?,
            "secrets" => list_names(Api::<Secret>::namespaced(admin, ns)).await?,
            other => return Err(err(format!("unknown kind {other}"))),
        };
        Ok(names
            .into_iter()
            .flatten()
            .filter(|n| n.starts_with(prefix))
            .collect())
    }
}

/// The names of every object `api` lists.
async fn list_names<K>(api: Api<K>) -> Result<Vec<Option<String>>, kube::Error>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api.list(&Default::default()).await?;
    Ok(list
        .items
        .into_iter()
        .map(|o| o.meta().name.clone())
        .collect())
}

impl Drop for Sandbox {
    /// Deletes the namespace and its PV in the background of a thread of its own: a test that
    /// panicked still cleans up.
    fn drop(&mut self) {
        let (ns, admin) = (self.ns.clone(), self.tier.admin.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let dp = DeleteParams::background();
                let _ = Api::<Namespace>::all(admin.clone()).delete(&ns, &dp).await;
                let _ = Api::<PersistentVolume>::all(admin).delete(&ns, &dp).await;
            });
            Some(())
        });
        let _ = cleanup.join();
    }
}

/// Polls `probe` until it returns `Some`, at most `bound`; the error names `what`.
pub async fn wait_for<T, F, Fut>(bound: Duration, what: &str, mut probe: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + bound;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > until {
            return Err(err(format!("{what}: not within {bound:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One recorded event and when it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When the sink got it.
    pub at: SystemTime,
    /// The event.
    pub event: RunEvent,
}

/// A sink that records every event with its arrival time.
#[derive(Debug, Default, Clone)]
pub struct Record(Arc<Mutex<Vec<Recorded>>>);

impl RunSink for Record {
    fn emit(&self, event: RunEvent) -> BoxFuture<'_, ()> {
        self.lock().push(Recorded {
            at: SystemTime::now(),
            event,
        });
        Box::pin(async {})
    }
}

impl Record {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Recorded> {
        self.lock().clone()
    }

    /// All output, concatenated as delivered.
    pub fn output(&self) -> String {
        self.lock()
            .iter()
            .filter_map(|r| match &r.event {
                RunEvent::Output { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The run-log lines that are not output.
    pub fn lines(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|r| !matches!(r.event, RunEvent::Output { .. }))
            .map(|r| r.event.to_string())
            .collect()
    }

    /// The last output checkpoint.
    pub fn last_checkpoint(&self) -> Option<String> {
        self.lock().iter().rev().find_map(|r| match &r.event {
            RunEvent::Output { checkpoint, .. } => checkpoint.clone(),
            _ => None,
        })
    }

    /// When the first and the last output reached the sink: the follow stream delivers a line
    /// within milliseconds of the container writing it, while the engine's checkpoints carry
    /// timestamps floored to whole seconds less a 2 s skew margin and cannot time it.
    pub fn output_span(&self) -> Option<(SystemTime, SystemTime)> {
        let times: Vec<SystemTime> = self
            .lock()
            .iter()
            .filter(|r| matches!(r.event, RunEvent::Output { .. }))
            .map(|r| r.at)
            .collect();
        Some((*times.iter().min()?, *times.iter().max()?))
    }
}

/// How the numbered lines of the fake agent came through.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineReport {
    /// Lines printed and never delivered.
    pub missing: Vec<u64>,
    /// Lines delivered more than once (each extra copy counts).
    pub duplicated: Vec<u64>,
    /// Lines delivered after a later line of the same stream.
    pub out_of_order: Vec<u64>,
    /// Numbered lines delivered in all.
    pub delivered: u64,
}

impl LineReport {
    /// Every line exactly once, in each stream's order.
    pub fn exact(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.out_of_order.is_empty()
    }
}

impl fmt::Display for LineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = |v: &[u64]| {
            v.iter()
                .take(8)
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "{} numbered lines delivered; {} missing [{}]; {} duplicated [{}]; {} out of order [{}]",
            self.delivered,
            self.missing.len(),
            first(&self.missing),
            self.duplicated.len(),
            first(&self.duplicated),
            self.out_of_order.len(),
            first(&self.out_of_order),
        )
    }
}

/// Checks `output` against the fake agent's `lines=count`: each of `1..=count` exactly once,
/// and in order within its stream (`out` or `err`).
pub fn check_lines(output: &str, count: u64) -> LineReport {
    let mut report = LineReport::default();
    let mut seen = HashSet::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    for line in output.lines() {
        let mut words = line.split(' ');
        let (Some("line"), Some(n), Some(stream), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        report.delivered += 1;
        if !seen.insert(n) {
            report.duplicated.push(n);
        }
        let previous = last.entry(stream).or_insert(0);
        if n < *previous {
            report.out_of_order.push(n);
        }
        *previous = n.max(*previous);
    }
    report.missing = (1..=count).filter(|n| !seen.contains(n)).collect();
    report
}

/// The API server's audit log: distinct requests (audit IDs) per user since a mark.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// Where an audit log stood when it was marked.
#[derive(Debug, Clone, Copy)]
pub struct AuditMark(u64);

impl AuditLog {
    /// The log at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The end of the log now.
    pub fn mark(&self) -> Result<AuditMark, Error> {
        Ok(AuditMark(std::fs::metadata(&self.path)?.len()))
    }

    /// Requests of `user` logged after `mark`, by `verb resource[/subresource]`, once the
    /// count stopped changing (the server writes an event when a request completes; a watch or
    /// follow still open was logged when its response started).
    pub async fn requests_since(
        &self,
        mark: AuditMark,
        user: &str,
    ) -> Result<BTreeMap<String, usize>, Error> {
        let mut previous = None;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let counts = self.read_since(mark, user)?;
            if previous.as_ref() == Some(&counts) || Instant::now() > until {
                return Ok(counts);
            }
            previous = Some(counts);
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }

    fn read_since(&self, mark: AuditMark, user: &str) -> Result<BTreeMap<String, usize>, Error> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(mark.0))?;
        let mut requests: HashMap<String, String> = HashMap::new();
        let needle = format!("\"username\":\"{user}\"");
        for line in BufReader::new(file).lines() {
            let line = line?;
            if !line.contains(&needle) {
                continue;
            }
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["user"]["username"] != user {
                continue;
            }
            let object = &event["objectRef"];
            let mut what = format!(
                "{} {}",
                event["verb"].as_str().unwrap_or("?"),
                object["resource"].as_str().unwrap_or("-")
            );
            if let Some(sub) = object["subresource"].as_str() {
                what.push('/');
                what.push_str(sub);
            }
            if let Some(id) = event["auditID"].as_str() {
                requests.insert(id.to_owned(), what);
            }
        }
        let mut counts = BTreeMap::new();
        for what in requests.into_values() {
            *counts.entry(what).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

/// The total of a by-kind request count.
pub fn total(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_per_stream() {
        let ok = "x\nline 1 err\nline 2 out\nline 4 out\nline 3 err\n";
        let report = check_lines(ok, 4);
        assert!(report.exact(), "{report}");
        let bad = "line 2 out\nline 1 err\nline 2 out\nline 5 err\nline 3 err\n";
        let report = check_lines(bad, 5);
        assert_eq!(report.missing, [4]);
        assert_eq!(report.duplicated, [2]);
        assert_eq!(report.out_of_order, [3]);
    }

    #[test]
    fn test_names_become_labels() {
        assert_eq!(label("A_b::c"), "a-b--c");
    }
}
