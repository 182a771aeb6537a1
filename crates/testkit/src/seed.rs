//! Seeding: a Paperclip-like pod (namespace, RWX PVC mounted at `/paperclip`, a Secret used
//! through env, envFrom and a volume) and the YAML seed file of `kube-sim serve --seed`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Rule;
use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::status::ApiError;

/// Names of what [`Cluster::seed_paperclip_pod`] created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaperclipSeed {
    /// The namespace.
    pub namespace: String,
    /// The pod (`paperclip`).
    pub pod: String,
    /// The ReadWriteMany PVC mounted at `/paperclip` (`paperclip-data`).
    pub pvc: String,
    /// The Secret with the provider keys (`paperclip-secrets`).
    pub secret: String,
}

/// The seed file of `kube-sim serve --seed`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Namespaces to create.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces to seed a Paperclip pod into (created if missing).
    #[serde(default)]
    pub paperclip: Vec<String>,
    /// Any other objects (JSON/YAML Kubernetes objects with `kind`).
    #[serde(default)]
    pub objects: Vec<Value>,
    /// Extra users.
    #[serde(default)]
    pub users: Vec<SeedUser>,
}

/// A user of the seed file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    /// Bearer token.
    pub token: String,
    /// User name.
    pub name: String,
    /// Allowed rules.
    pub rules: Vec<SeedRule>,
}

/// One rule of a seed user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRule {
    /// Verbs.
    pub verbs: Vec<String>,
    /// API group (`""` core).
    #[serde(default)]
    pub group: String,
    /// Resources (`pods/log` for subresources).
    pub resources: Vec<String>,
    /// Namespace (absent: everywhere).
    pub namespace: Option<String>,
}

/// Why a seed could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The YAML is malformed.
    #[error("failed to parse the seed file: {0}")]
    Parse(String),
    /// The cluster refused an object.
    #[error("failed to create {what} from the seed: {message}")]
    Refused {
        /// Which object.
        what: String,
        /// The API server's message.
        message: String,
    },
}

fn exists_ok(result: Result<Value, ApiError>) -> Result<(), ApiError> {
    match result {
        Err(e) if e.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

impl Cluster {
    /// A new cluster (default options) with [`Cluster::seed_paperclip_pod`] in `ns`: what a
    /// test of the engine or the CLI starts from.
    pub async fn start_with_paperclip_pod(ns: &str) -> Result<Cluster, ClusterError> {
        let cluster = Cluster::start(ClusterOptions::default()).await?;
        cluster
            .seed_paperclip_pod(ns)
            .map_err(|e| ClusterError::Seed(e.message))?;
        Ok(cluster)
    }

    /// Creates `ns` (if missing), a RWX PVC `paperclip-data`, a Secret `paperclip-secrets` and a
    /// running `paperclip` pod mounting the PVC at `/paperclip`, with env, envFrom and a secret
    /// volume, like a real Paperclip Deployment's pod.
    pub fn seed_paperclip_pod(&self, ns: &str) -> Result<PaperclipSeed, ApiError> {
        exists_ok(self.create_namespace(ns))?;
        exists_ok(self.create(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "paperclip-data", "namespace": ns},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
        })))?;
        exists_ok(self.create(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "paperclip-secrets", "namespace": ns},
            "stringData": {"OPENAI_API_KEY": "sk-kube-sim-test", "ANTHROPIC_API_KEY": "sk-ant-kube-sim-test"},
        })))?;
        exists_ok(self.create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "paperclip", "namespace": ns,
                         "labels": {"app.kubernetes.io/name": "paperclip", "app.kubernetes.io/component": "server"}},
            "spec": {
                "containers": [{
                    "name": "paperclip",
                    "image": "ghcr.io/paperclipai/paperclip:2026.916.1",
                    "command": ["sh", "-c", "exec sleep 2147483647"],
                    "workingDir": "/paperclip",
                    "env": [
                        {"name": "PAPERCLIP_API_URL", "value": format!("http://paperclip.{ns}.svc.cluster.local:3100")},
                        {"name": "PAPERCLIP_HOME", "value": "/paperclip"},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "paperclip-secrets", "key": "OPENAI_API_KEY"}}},
                    ],
                    "envFrom": [{"secretRef": {"name": "paperclip-secrets"}}],
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/paperclip"},
                        {"name": "secrets", "mountPath": "/etc/paperclip/secrets", "readOnly": true},
                    ],
                }],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "paperclip-data"}},
                    {"name": "secrets", "secret": {"secretName": "paperclip-secrets"}},
                ],
            },
        })))?;
        Ok(PaperclipSeed {
            namespace: ns.to_owned(),
            pod: "paperclip".to_owned(),
            pvc: "paperclip-data".to_owned(),
            secret: "paperclip-secrets".to_owned(),
        })
    }

    /// Applies a seed: users, namespaces, Paperclip pods, then the other objects in order.
    pub fn apply_seed(&self, seed: &Seed) -> Result<(), SeedError> {
        let refused = |what: String| {
            move |e: ApiError| SeedError::Refused {
                what,
                message: e.message,
            }
        };
        for user in &seed.users {
            let rules = user
                .rules
                .iter()
                .map(|r| Rule {
                    verbs: r.verbs.clone(),
                    groups: vec![r.group.clone()],
                    resources: r.resources.clone(),
                    namespace: r.namespace.clone(),
                })
                .collect();
            self.add_user(&user.token, &user.name, rules);
        }
        for ns in &seed.namespaces {
            exists_ok(self.create_namespace(ns)).map_err(refused(format!("namespace {ns}")))?;
        }
        for ns in &seed.paperclip {
            self.seed_paperclip_pod(ns)
                .map_err(refused(format!("the paperclip pod in {ns}")))?;
        }
        for obj in &seed.objects {
            let what = format!(
                "{} {}",
                obj["kind"].as_str().unwrap_or("object"),
                obj["metadata"]["name"].as_str().unwrap_or_default()
            );
            self.create(obj.clone()).map_err(refused(what))?;
        }
        Ok(())
    }
}

/// Parses a seed file.
pub fn parse_seed(yaml: &str) -> Result<Seed, SeedError> {
    serde_saphyr::from_str(yaml).map_err(|e| SeedError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_yaml_parses() {
        let seed = parse_seed(
            "namespaces: [a]\npaperclip: [pc]\nobjects:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s, namespace: a}\nusers:\n- token: t\n  name: u\n  rules:\n  - verbs: [get]\n    resources: [pods]\n    namespace: a\n",
        )
        .unwrap();
        assert_eq!(seed.namespaces, vec!["a"]);
        assert_eq!(seed.objects[0]["kind"], "Secret");
        assert_eq!(seed.users[0].rules[0].namespace.as_deref(), Some("a"));
        assert!(parse_seed("bogus: 1").is_err());
    }
}
