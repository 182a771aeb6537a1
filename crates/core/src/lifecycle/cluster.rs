//! Cluster access: which credentials a run uses, and one reused client per distinct cluster.
//!
//! Sources, as an operator configures them: the pod's own service account (the default when
//! Paperclip runs in the cluster), a kubeconfig file the operator names (the CLI's
//! `--kubeconfig`), a kubeconfig file an agent config names (honoured only inside the directory
//! [`KUBECONFIG_DIR_ENV`] allows), or kubeconfig content pasted into the agent's config (only
//! inline credentials; see [`crate::config::kubeconfig`]). A refused source never reaches the
//! kube client, not even through `doctor`. Clients are cached by source so a thousand runs
//! share one connection pool.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::{Digest, Sha256};

use crate::config::kubeconfig::{self, KUBECONFIG_DIR_ENV};
use crate::error_code::ErrorCode;

/// Where the engine gets its cluster credentials from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ClusterSource {
    /// In-cluster service account, falling back to `$KUBECONFIG` / `~/.kube/config` (the order
    /// `kube::Config::infer` uses), for an operator running the CLI on a workstation.
    Default,
    /// A kubeconfig file the operator chose (the CLI's `--kubeconfig`).
    KubeconfigPath(PathBuf),
    /// A kubeconfig file an agent config names (`kubeconfig`): read only when it lies inside
    /// the directory the server's [`KUBECONFIG_DIR_ENV`] names.
    AgentKubeconfigPath(PathBuf),
    /// Inline kubeconfig YAML (`kubeconfigContent`). Compared and hashed by content; never
    /// printed.
    KubeconfigContent(String),
}

impl ClusterSource {
    /// The source a config's `kubeconfig` / `kubeconfigContent` fields select.
    pub fn from_fields(path: Option<&str>, content: Option<&str>) -> Self {
        match (path, content) {
            (_, Some(content)) => Self::KubeconfigContent(content.to_owned()),
            (Some(path), None) => Self::AgentKubeconfigPath(PathBuf::from(path)),
            (None, None) => Self::Default,
        }
    }
}

impl fmt::Debug for ClusterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ClusterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => {
                f.write_str("the in-cluster service account or the default kubeconfig")
            }
            Self::KubeconfigPath(path) | Self::AgentKubeconfigPath(path) => {
                write!(f, "kubeconfig file {}", path.display())
            }
            Self::KubeconfigContent(content) => {
                let digest = Sha256::digest(content.as_bytes());
                write!(f, "inline kubeconfigContent (sha256 {:.12})", hex(&digest))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Failed to build a client for a [`ClusterSource`]: `k8s_api_unreachable`, or `config_invalid`
/// when the agent config's source is refused.
#[derive(Debug, thiserror::Error)]
#[error("failed to connect to the cluster using {source_desc}: {reason}; {hint}")]
pub struct ClusterError {
    /// The source that was tried (never the inline content itself).
    pub source_desc: String,
    /// What went wrong, in one line.
    pub reason: String,
    /// What the operator can do about it.
    pub hint: &'static str,
    /// The source was refused before any client was built.
    pub refused: bool,
}

impl ClusterError {
    /// `config_invalid` for a refused source, else `k8s_api_unreachable`.
    pub const fn code(&self) -> ErrorCode {
        if self.refused {
            ErrorCode::ConfigInvalid
        } else {
            ErrorCode::K8sApiUnreachable
        }
    }

    fn refused(source: &ClusterSource, reason: String) -> Self {
        Self {
            source_desc: source.to_string(),
            reason,
            hint: "which cluster agents run in is the operator's decision: fix the agent config's `kubeconfig` / `kubeconfigContent`",
            refused: true,
        }
    }

    fn new(source: &ClusterSource, reason: impl fmt::Display) -> Self {
        let hint = match source {
            ClusterSource::Default => {
                "run Paperclip in the cluster with a service account, or set `kubeconfig` / `kubeconfigContent` in the agent config"
            }
            ClusterSource::KubeconfigPath(_) | ClusterSource::AgentKubeconfigPath(_) => {
                "check that the file exists, is readable by the Paperclip process and is a valid kubeconfig"
            }
            ClusterSource::KubeconfigContent(_) => {
                "paste a complete kubeconfig (clusters, users, contexts, current-context) into kubeconfigContent"
            }
        };
        let mut reason = reason.to_string();
        if matches!(source, ClusterSource::KubeconfigContent(_)) {
            // YAML errors quote the offending lines, which may hold a token: keep the position only.
            reason.truncate(reason.find("-->").unwrap_or(reason.len()));
        }
        let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
        Self {
            source_desc: source.to_string(),
            reason,
            hint,
            refused: false,
        }
    }
}

/// One `kube::Client` per distinct [`ClusterSource`], created on first use and then reused.
#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<ClusterSource, kube::Client>>,
}

impl fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.clients.lock().map(|c| c.len()).unwrap_or_default();
        f.debug_struct("ClientCache")
            .field("clients", &count)
            .finish()
    }
}

impl ClientCache {
    /// The client for `source`, building it the first time.
    pub async fn client(&self, source: &ClusterSource) -> Result<kube::Client, ClusterError> {
        if let Some(client) = self.lock().get(source) {
            return Ok(client.clone());
        }
        let config = load_config(source).await?;
        let client = build_client(config).map_err(|e| ClusterError::new(source, e))?;
        Ok(self.lock().entry(source.clone()).or_insert(client).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterSource, kube::Client>> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Set when the agent configs of this process are the operator's own (the CLI).
static OPERATOR_CONFIGS: AtomicBool = AtomicBool::new(false);

/// Declares that every agent config this process runs comes from the operator — the
/// `opencode-k8s` CLI, where whoever passes `--config` also owns the machine — so their
/// `kubeconfig` paths are honoured anywhere. The Paperclip server never calls this: there agent
/// configs are edited by Paperclip users and paths are confined to [`KUBECONFIG_DIR_ENV`].
pub fn trust_agent_kubeconfig_paths() {
    OPERATOR_CONFIGS.store(true, Ordering::Relaxed);
}

/// Refuses an agent config's source the operator does not allow, before anything reads it.
fn check_allowed(source: &ClusterSource) -> Result<(), ClusterError> {
    match source {
        ClusterSource::AgentKubeconfigPath(_) if OPERATOR_CONFIGS.load(Ordering::Relaxed) => Ok(()),
        ClusterSource::AgentKubeconfigPath(path) => {
            let allowed = std::env::var(KUBECONFIG_DIR_ENV).ok();
            match kubeconfig::check_path(&path.to_string_lossy(), allowed.as_deref()) {
                None => Ok(()),
                Some(accepted) => Err(ClusterError::refused(
                    source,
                    format!("`kubeconfig` is refused: expected {accepted}"),
                )),
            }
        }
        ClusterSource::KubeconfigContent(content) => {
            let refusals = kubeconfig::check_content(content);
            if refusals.is_empty() {
                return Ok(());
            }
            let listed: Vec<String> = refusals
                .into_iter()
                .map(|r| format!("kubeconfigContent {}: {}", r.path, r.why))
                .collect();
            Err(ClusterError::refused(source, listed.join("; ")))
        }
        ClusterSource::Default | ClusterSource::KubeconfigPath(_) => Ok(()),
    }
}

/// The `kube::Config` a source describes. An agent config's source the operator does not allow
/// is refused here, before any file is read or plugin run.
pub async fn load_config(source: &ClusterSource) -> Result<kube::Config, ClusterError> {
    check_allowed(source)?;
    let options = KubeConfigOptions::default();
    match source {
        ClusterSource::Default => kube::Config::infer()
            .await
            .map_err(|e| ClusterError::new(source, e)),
        ClusterSource::KubeconfigPath(path) | ClusterSource::AgentKubeconfigPath(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| ClusterError::new(source, e))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| ClusterError::new(source, e))
        }
        ClusterSource::KubeconfigContent(content) => {
            let file = Kubeconfig::from_yaml(content).map_err(|e| ClusterError::new(source, e))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| ClusterError::new(source, e))
        }
    }
}

/// Read buffer of one HTTP/1 connection at most. hyper's default (~400 KiB) is held by every
/// follow stream whose reader lags, which is every stream when many runs write at full speed:
/// 200 concurrent runs then cost the engine ~450 MB instead of ~90 MB (scripts/bench).
const MAX_READ_BUFFER: usize = 64 * 1024;

/// `kube::Client::try_from(config)` with the same connector timeouts and layers (base URI,
/// auth, extra headers) but a bounded HTTP/1 read buffer, which kube's own builder does not
/// expose, and without kube's per-request retries (up to 15, minutes under throttling): the
/// engine retries one-shot calls itself within a few seconds, watches back off on their own,
/// and a cancel must not wait behind a retry loop.
fn build_client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    use kube::client::ConfigExt as _;
    let mut connector = hyper_timeout::TimeoutConnector::new(config.rustls_https_connector()?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http1_max_buf_size(MAX_READ_BUFFER)
        .build::<_, kube::client::Body>(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: secret-token\n";

    #[test]
    fn inline_content_is_never_displayed() {
        let source = ClusterSource::from_fields(None, Some(KUBECONFIG));
        let shown = source.to_string();
        assert!(
            shown.starts_with("inline kubeconfigContent (sha256 "),
            "{shown}"
        );
        assert!(!shown.contains("secret-token"));
        assert!(!format!("{source:?}").contains("secret-token"));
    }

    #[tokio::test]
    async fn refused_sources_never_reach_the_client() {
        // A file the agent config names, with no directory allowed by the operator (the test
        // process does not set OPENCODE_K8S_KUBECONFIG_DIR).
        let source = ClusterSource::from_fields(Some("/root/.kube/config"), None);
        let Err(err) = ClientCache::default().client(&source).await else {
            panic!("an agent kubeconfig path outside the allowed directory must be refused")
        };
        assert_eq!(err.code(), ErrorCode::ConfigInvalid);
        assert!(err.to_string().contains(KUBECONFIG_DIR_ENV), "{err}");

        let exec = KUBECONFIG.replace(
            "    token: secret-token\n",
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: touch\n      args: [/tmp/pwned]\n",
        );
        let Err(err) = ClientCache::default()
            .client(&ClusterSource::from_fields(None, Some(&exec)))
            .await
        else {
            panic!("an exec plugin must be refused")
        };
        assert_eq!(err.code(), ErrorCode::ConfigInvalid);
        assert!(err.to_string().contains("users[0].user.exec"), "{err}");
    }

    #[test]
    fn content_wins_over_path_and_neither_means_default() {
        assert_eq!(
            ClusterSource::from_fields(Some("/x"), Some("y")),
            ClusterSource::KubeconfigContent("y".into())
        );
        assert_eq!(
            ClusterSource::from_fields(None, None),
            ClusterSource::Default
        );
    }

    #[tokio::test]
    async fn missing_file_names_the_path_and_what_to_check() {
        let source = ClusterSource::KubeconfigPath("/nonexistent/kubeconfig".into());
        let Err(err) = ClientCache::default().client(&source).await else {
            panic!("a bad source must fail")
        };
        let text = err.to_string();
        assert!(
            text.starts_with(
                "failed to connect to the cluster using kubeconfig file /nonexistent/kubeconfig:"
            ),
            "{text}"
        );
        assert!(text.contains("check that the file exists"), "{text}");
    }

    #[tokio::test]
    async fn garbage_content_is_rejected_without_echoing_it() {
        let source = ClusterSource::KubeconfigContent("token: hunter2\n: : :".into());
        let Err(err) = ClientCache::default().client(&source).await else {
            panic!("a bad source must fail")
        };
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("kubeconfigContent"), "{err}");
    }

    #[tokio::test]
    async fn one_client_per_source() {
        let cache = ClientCache::default();
        let source = ClusterSource::from_fields(None, Some(KUBECONFIG));
        cache.client(&source).await.unwrap();
        cache.client(&source).await.unwrap();
        assert_eq!(cache.lock().len(), 1);
    }
}
