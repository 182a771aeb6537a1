//! Finding the Paperclip pod the agent Jobs inherit from: its image, pull secrets, DNS, env,
//! secret volumes and the shared volume at `/paperclip`. Read once per cluster and cached.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::error::{ApiCause, api_code};
use crate::error_code::ErrorCode;
use crate::manifest::{InheritedPod, ManifestError};

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How the engine finds the pod it runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SelfPod {
    /// From the environment, as in a Paperclip Deployment: name from `POD_NAME` or `HOSTNAME`,
    /// namespace from `PAPERCLIP_NAMESPACE`, `POD_NAMESPACE` or the service-account file.
    #[default]
    FromEnv,
    /// This pod (tests, or an operator pointing the CLI at the Paperclip pod).
    Named {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
    },
    /// Do not inherit from any pod: use the config's image (the CLI out of cluster).
    None,
}

impl SelfPod {
    /// The pod to read, if any.
    pub(crate) fn locate(&self) -> Option<(String, String)> {
        match self {
            Self::None => None,
            Self::Named { namespace, name } => Some((namespace.clone(), name.clone())),
            Self::FromEnv => {
                let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
                let name = env("POD_NAME").or_else(|| env("HOSTNAME"))?;
                let namespace = env("PAPERCLIP_NAMESPACE")
                    .or_else(|| env("POD_NAMESPACE"))
                    .or_else(|| {
                        std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_NAMESPACE))
                            .ok()
                            .map(|ns| ns.trim().to_owned())
                    })?;
                Some((namespace, name))
            }
        }
    }
}

/// Failed to read the Paperclip pod, or it cannot be inherited from.
///
/// Where the API refused, the message includes its message and `source()` is the `kube::Error`
/// (see [`RunError`](super::RunError)).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The API did not answer, or refused to read the pod.
    #[error("failed to read the Paperclip pod {namespace}/{name}: {}", ApiCause::engine(.source))]
    Read {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// The pod exists but Jobs cannot inherit from it (no shared `/paperclip` claim, …).
    #[error("failed to inherit from the Paperclip pod {namespace}/{name}: {source}")]
    Inherit {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
        /// What is missing.
        #[source]
        source: ManifestError,
    },
}

impl DiscoverError {
    /// `k8s_api_unreachable` or `k8s_forbidden` for a read, the manifest's code (`config_invalid`)
    /// for a pod that cannot be inherited from.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Read { source, .. } => api_code(source, ErrorCode::K8sApiUnreachable),
            Self::Inherit { source, .. } => source.code(),
        }
    }
}

/// What introspection found.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    Pod(Box<InheritedPod>),
    /// No pod to inherit from, and why (for the run log).
    NotFound(String),
}

/// Read the Paperclip pod. A missing pod is not an error (the CLI out of cluster); a pod that
/// exists but cannot be inherited from (no `/paperclip` volume) is.
pub(crate) async fn discover(
    client: &kube::Client,
    self_pod: &SelfPod,
) -> Result<Found, DiscoverError> {
    let Some((namespace, name)) = self_pod.locate() else {
        return Ok(Found::NotFound(
            "not running in a pod (no POD_NAME/HOSTNAME and namespace)".to_owned(),
        ));
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match super::retry::retry("get the Paperclip pod", || pods.get_opt(&name)).await {
        Ok(Some(pod)) => InheritedPod::from_pod(&pod, None)
            .map(|pod| Found::Pod(Box::new(pod)))
            .map_err(|source| DiscoverError::Inherit {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            }),
        Ok(None) => Ok(Found::NotFound(format!(
            "pod {namespace}/{name} was not found"
        ))),
        Err(source) => Err(DiscoverError::Read {
            namespace,
            name,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_none_are_taken_as_given() {
        let named = SelfPod::Named {
            namespace: "ns".into(),
            name: "paperclip-0".into(),
        };
        assert_eq!(named.locate(), Some(("ns".into(), "paperclip-0".into())));
        assert_eq!(SelfPod::None.locate(), None);
    }
}
