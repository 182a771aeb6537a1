//! [`Cluster`]: starts the API server on 127.0.0.1, the controllers (job, garbage collector,
//! scheduler + kubelet) and writes a kubeconfig; the Rust face tests use to seed objects, read
//! the store, wait for states, inject faults and read request counts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accounting::{Accounting, RequestCounts};
use crate::auth::{Authenticator, Rule, User};
use crate::faults::Faults;
use crate::kubelet::{self, Node};
use crate::net::FaultyListener;
use crate::podspec;
use crate::resource::Resource;
use crate::status::ApiError;
use crate::store::Store;
use crate::{gc, jobs, objects, server};

/// How to start a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Port on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// Where to write the kubeconfig (default: inside the cluster's temporary directory).
    pub kubeconfig_path: Option<PathBuf>,
    /// The admin bearer token (default: random).
    pub admin_token: Option<String>,
    /// Watch events kept per resource for watch-from-resourceVersion; older versions get 410.
    pub watch_history: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How long an image pull failure shows ErrImagePull before ImagePullBackOff.
    pub image_pull_backoff: Duration,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            port: 0,
            kubeconfig_path: None,
            admin_token: None,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(30),
            image_pull_backoff: Duration::from_secs(1),
        }
    }
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The temporary directory for logs and volumes could not be made.
    #[error("failed to create the cluster's temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// The port could not be bound.
    #[error("failed to listen on 127.0.0.1:{port}: {source}; pick another port or 0")]
    Bind {
        /// The port asked for.
        port: u16,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("failed to write the kubeconfig to {path}: {source}")]
    Kubeconfig {
        /// Where it was to be written.
        path: PathBuf,
        /// The write error.
        #[source]
        source: std::io::Error,
    },
    /// A seed object was refused.
    #[error("failed to create the initial namespace: {0}")]
    Seed(String),
}

/// Why [`Cluster::wait_for`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The condition did not hold within the bound.
    #[error("timed out after {timeout:?} waiting for {what}; last state: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        timeout: Duration,
        /// The object's last state (`null` when absent).
        last: Value,
    },
}

/// Everything the server and controllers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) auth: Authenticator,
    pub(crate) faults: Faults,
    pub(crate) accounting: Accounting,
    pub(crate) node: Node,
    pub(crate) options: ClusterOptions,
    /// Per-pod logs and volumes, per-PVC directories.
    pub(crate) dir: PathBuf,
}

/// A running simulated cluster (a TEST DOUBLE: it runs pods as local processes, never real
/// workloads). Dropping it stops the server and kills every process it started.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    url: String,
    kubeconfig: PathBuf,
    admin_token: String,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn random_token() -> String {
    let n: u128 = rand::rng().random();
    format!("kube-sim-{n:032x}")
}

impl Cluster {
    /// Starts the API server and controllers and writes the kubeconfig. Needs a tokio runtime.
    pub async fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let dir = tempfile::Builder::new()
            .prefix("kube-sim-")
            .tempdir()
            .map_err(ClusterError::TempDir)?;
        let admin_token = options.admin_token.clone().unwrap_or_else(random_token);
        let shared = Arc::new(Shared {
            store: Store::new(options.watch_history),
            auth: Authenticator::default(),
            faults: Faults::default(),
            accounting: Accounting::default(),
            node: Node::default(),
            options: options.clone(),
            dir: dir.path().to_owned(),
        });
        shared.auth.add(
            &admin_token,
            User {
                name: "kube-sim-admin".to_owned(),
                rules: vec![Rule::admin()],
            },
        );
        let cancel = CancellationToken::new();
        let mut tasks = vec![
            tokio::spawn(gc::run(
                shared.clone(),
                shared.store.subscribe(),
                cancel.clone(),
            )),
            tokio::spawn(jobs::run(
                shared.clone(),
                shared.store.subscribe(),
                cancel.clone(),
            )),
            tokio::spawn(kubelet::run(
                shared.clone(),
                shared.store.subscribe(),
                cancel.clone(),
            )),
        ];
        objects::create(
            &shared.store,
            Resource::Namespaces,
            None,
            json!({"metadata": {"name": "default"}}),
        )
        .map_err(|e| ClusterError::Seed(e.message))?;
        let bind = |source| ClusterError::Bind {
            port: options.port,
            source,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(bind)?;
        let listener = FaultyListener::new(listener, shared.faults.clone()).map_err(bind)?;
        let addr = axum::serve::Listener::local_addr(&listener).map_err(bind)?;
        let router = server::router(shared.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "kube-sim API server stopped");
            }
        }));
        let url = format!("http://{addr}");
        let kubeconfig = options
            .kubeconfig_path
            .clone()
            .unwrap_or_else(|| dir.path().join("kubeconfig"));
        std::fs::write(&kubeconfig, kubeconfig_yaml(&url, &admin_token)).map_err(|source| {
            ClusterError::Kubeconfig {
                path: kubeconfig.clone(),
                source,
            }
        })?;
        tracing::info!(%url, kubeconfig = %kubeconfig.display(), "kube-sim (test double) is serving");
        Ok(Cluster {
            shared,
            url,
            kubeconfig,
            admin_token,
            cancel,
            tasks,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig (cluster `kube-sim`, admin user, namespace `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin's bearer token (allowed everything).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Adds (or replaces) a user behind `token` allowed only `rules`.
    pub fn add_user(&self, token: &str, name: &str, rules: Vec<Rule>) {
        self.shared.auth.add(
            token,
            User {
                name: name.to_owned(),
                rules,
            },
        );
    }

    /// The fault switchboard.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Requests received so far, per verb and resource.
    pub fn requests(&self) -> RequestCounts {
        self.shared.accounting.snapshot()
    }

    /// Sets every request counter back to zero.
    pub fn reset_requests(&self) {
        self.shared.accounting.reset();
    }

    /// Creates any supported object (its `kind` picks the resource) as a POST would.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = Resource::from_kind(kind).ok_or_else(|| {
            ApiError::bad_request(format!("kube-sim does not serve kind {kind:?}"))
        })?;
        let ns = object["metadata"]["namespace"].as_str().map(str::to_owned);
        objects::create(&self.shared.store, resource, ns.as_deref(), object).map(|o| (*o).clone())
    }

    /// Creates a namespace.
    pub fn create_namespace(&self, name: &str) -> Result<Value, ApiError> {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    }

    /// One object as stored (`ns` is ignored for namespaces).
    pub fn get_json(&self, resource: Resource, ns: &str, name: &str) -> Option<Value> {
        let ns = if resource.namespaced() { ns } else { "" };
        self.shared
            .store
            .get(resource, ns, name)
            .map(|o| (*o).clone())
    }

    /// Every object of `resource` in `ns` (all namespaces when `None`).
    pub fn list_json(&self, resource: Resource, ns: Option<&str>) -> Vec<Value> {
        self.shared
            .store
            .list(resource, ns, |_| true)
            .0
            .iter()
            .map(|o| (**o).clone())
            .collect()
    }

    /// The host directory backing a PVC, where pods mounting it read and write.
    pub fn pvc_path(&self, ns: &str, claim: &str) -> PathBuf {
        podspec::pvc_dir(&self.shared.dir, ns, claim)
    }

    /// Waits until `check` holds for the object (`None` when absent), reacting to store changes
    /// (no polling), for at most `timeout`. Returns the object's state that satisfied it.
    pub async fn wait_for(
        &self,
        resource: Resource,
        ns: &str,
        name: &str,
        timeout: Duration,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>, WaitError> {
        let ns = if resource.namespaced() { ns } else { "" };
        let mut changes = self.shared.store.subscribe();
        let current = || self.shared.store.get(resource, ns, name);
        let satisfied = || {
            let obj = current();
            check(obj.as_deref()).then(|| obj.map(|o| (*o).clone()))
        };
        let waited = tokio::time::timeout(timeout, async {
            if let Some(found) = satisfied() {
                return Some(found);
            }
            while let Some(change) = changes.recv().await {
                let meta = &change.object["metadata"];
                if change.resource == resource
                    && meta["name"].as_str() == Some(name)
                    && meta["namespace"].as_str().unwrap_or_default() == ns
                    && let Some(found) = satisfied()
                {
                    return Some(found);
                }
            }
            None
        })
        .await;
        match waited {
            Ok(Some(found)) => Ok(found),
            _ => Err(WaitError::Timeout {
                what: format!("{} {ns}/{name}", resource.plural()),
                timeout,
                last: current().map(|o| (*o).clone()).unwrap_or(Value::Null),
            }),
        }
    }

    /// Stops the server and controllers and kills every container, waiting (briefly) for the
    /// processes to be gone.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for container in self.shared.node.kill_all() {
            // A process that ignores SIGKILL for 5 s is beyond our help; do not hang shutdown.
            let _ = tokio::time::timeout(Duration::from_secs(5), container.wait()).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in &self.tasks {
            task.abort();
        }
        self.shared.node.kill_all();
    }
}

fn kubeconfig_yaml(url: &str, token: &str) -> String {
    format!(
        "# kube-sim: a simulated cluster for tests (a test double; it runs no real workloads)\n\
apiVersion: v1\n\
kind: Config\n\
clusters:\n\
- name: kube-sim\n  cluster:\n    server: {url}\n\
contexts:\n\
- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim-admin\n    namespace: default\n\
current-context: kube-sim\n\
users:\n\
- name: kube-sim-admin\n  user:\n    token: {token}\n"
    )
}
