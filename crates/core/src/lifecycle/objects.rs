//! Creating and deleting a run's objects: the Secret first, then the Job, then the Secret's
//! owner reference to the Job (a JSON merge patch, so Kubernetes garbage-collects the Secret
//! with its Job). A step the API refuses takes back what the earlier steps created; whatever
//! cannot be removed is named in the error, so nothing is left behind unnoticed.

use std::fmt;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::error::{ApiCause, api_code};
use super::retry::retry;
use crate::error_code::ErrorCode;
use crate::manifest::Rendered;

/// Failed to create a run's objects. The ones created before the refused step were taken back;
/// what could not be is listed in [`Leftovers`], and in the message.
///
/// Where the API refused, the message includes its message and `source()` is the `kube::Error`
/// (see [`RunError`](super::RunError)).
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// The API refused the run's Secret.
    #[error("failed to create Secret {namespace}/{name}: {}", ApiCause::engine(.source))]
    CreateSecret {
        /// Namespace of the run.
        namespace: String,
        /// The Secret (the run's Job's name).
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// The run's NetworkPolicy could not be created (or its owner Secret read).
    #[error("failed to create NetworkPolicy {namespace}/{name}: {}{leftovers}", ApiCause::engine(.source))]
    CreateNetworkPolicy {
        /// Namespace of the run.
        namespace: String,
        /// The NetworkPolicy (the run's Job's name).
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
        /// What could not be taken back.
        leftovers: Leftovers,
    },
    /// The API refused the run's Job.
    #[error("failed to create Job {namespace}/{name}: {}{leftovers}", ApiCause::engine(.source))]
    CreateJob {
        /// Namespace of the run.
        namespace: String,
        /// The Job.
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
        /// What could not be taken back.
        leftovers: Leftovers,
    },
    /// A Job of the run's name exists and could not be read to tell whose it is.
    #[error("failed to get Job {namespace}/{name}: {}", ApiCause::engine(.source))]
    GetJob {
        /// Namespace of the run.
        namespace: String,
        /// The Job.
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// A Job of the run's name exists and this run did not create it.
    #[error(
        "failed to create Job {namespace}/{name}: a Job of that name that this run did not create already exists; delete it"
    )]
    NameTaken {
        /// Namespace of the run.
        namespace: String,
        /// The Job.
        name: String,
    },
    /// The run's Secret could not be given its Job as owner.
    #[error("failed to set the owner of Secret {namespace}/{name}: {}{leftovers}", ApiCause::engine(.source))]
    OwnSecret {
        /// Namespace of the run.
        namespace: String,
        /// The Secret.
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
        /// What could not be taken back.
        leftovers: Leftovers,
    },
}

impl ObjectsError {
    /// `k8s_job_create_failed`, or `k8s_forbidden` / `k8s_api_unreachable` by the API's answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::CreateSecret { source, .. }
            | Self::CreateNetworkPolicy { source, .. }
            | Self::CreateJob { source, .. }
            | Self::GetJob { source, .. }
            | Self::OwnSecret { source, .. } => api_code(source, ErrorCode::K8sJobCreateFailed),
            Self::NameTaken { .. } => ErrorCode::K8sJobCreateFailed,
        }
    }

    /// The objects the run created and could not remove.
    pub fn leftovers(&self) -> &[DeleteError] {
        match self {
            Self::CreateNetworkPolicy { leftovers, .. }
            | Self::CreateJob { leftovers, .. }
            | Self::OwnSecret { leftovers, .. } => &leftovers.0,
            Self::CreateSecret { .. } | Self::GetJob { .. } | Self::NameTaken { .. } => &[],
        }
    }
}

/// The deletions that failed while taking back a failed run's objects; displayed as the end of
/// the run's error message, empty when everything was removed.
#[derive(Debug, Default)]
pub struct Leftovers(pub(super) Vec<DeleteError>);

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            f.write_str(if i == 0 {
                "; this run created objects it could not remove, delete them: "
            } else {
                "; "
            })?;
            let (kind, namespace, name) = err.object();
            write!(f, "{kind} {namespace}/{name} ({err})")?;
        }
        Ok(())
    }
}

/// Failed to delete one of a run's objects; one already gone is not an error.
///
/// The message includes the API's message and `source()` is the `kube::Error` (see
/// [`RunError`](super::RunError)).
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// The Job (and with it, through its owner reference, the Secret).
    #[error("failed to delete Job {namespace}/{name}: {}", ApiCause::engine(.source))]
    Job {
        /// Namespace of the run.
        namespace: String,
        /// The Job.
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// The Secret.
    #[error("failed to delete Secret {namespace}/{name}: {}", ApiCause::engine(.source))]
    Secret {
        /// Namespace of the run.
        namespace: String,
        /// The Secret.
        name: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
}

impl DeleteError {
    /// `adapter_internal`, or `k8s_forbidden` / `k8s_api_unreachable` by the API's answer.
    pub fn code(&self) -> ErrorCode {
        let (Self::Job { source, .. } | Self::Secret { source, .. }) = self;
        api_code(source, ErrorCode::AdapterInternal)
    }

    /// Kind, namespace and name of the object left.
    fn object(&self) -> (&'static str, &str, &str) {
        match self {
            Self::Job {
                namespace, name, ..
            } => ("Job", namespace, name),
            Self::Secret {
                namespace, name, ..
            } => ("Secret", namespace, name),
        }
    }
}

/// Create the Secret and the Job of `rendered` in `namespace`; returns the created Job.
pub(crate) async fn create(
    client: &kube::Client,
    namespace: &str,
    rendered: &Rendered,
) -> Result<Job, ObjectsError> {
    let name = rendered.job.metadata.name.clone().unwrap_or_default();
    create_secret(client, namespace, &name, rendered).await?;
    network_policy(client, namespace, rendered).await?;
    let job = create_job(client, namespace, &name, rendered).await?;
    own_secret(client, namespace, &name, &job).await?;
    Ok(job)
}

/// Create the run's Secret; one left by an earlier attempt of this run is reused.
async fn create_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    rendered: &Rendered,
) -> Result<(), ObjectsError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = PostParams::default();
    match retry("create the Secret", || {
        secrets.create(&params, &rendered.secret)
    })
    .await
    {
        Ok(_) => Ok(()),
        // Left by an earlier attempt of this same run that died between the two creates.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(ObjectsError::CreateSecret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Create the run's Job; on failure take back what the run created.
async fn create_job(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    rendered: &Rendered,
) -> Result<Job, ObjectsError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = PostParams::default();
    match retry("create the Job", || jobs.create(&params, &rendered.job)).await {
        Ok(job) => Ok(job),
        // A retried create whose first try went through: the Job is this run's.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = retry("get the Job", || jobs.get(name))
                .await
                .map_err(|source| ObjectsError::GetJob {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                })?;
            if existing.metadata.labels != rendered.job.metadata.labels {
                return Err(ObjectsError::NameTaken {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            }
            Ok(existing)
        }
        Err(source) => Err(ObjectsError::CreateJob {
            leftovers: take_back(client, namespace, name, false).await,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Make the Job the owner of the run's Secret, so the Secret goes with it.
async fn own_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    job: &Job,
) -> Result<(), ObjectsError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let owner = json!({
        "metadata": {"ownerReferences": [{
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": job.metadata.uid,
        }]}
    });
    let (patch, params) = (Patch::Merge(&owner), PatchParams::default());
    if let Err(source) = retry("set the Secret's owner", || {
        secrets.patch(name, &params, &patch)
    })
    .await
    {
        // Without the owner reference the Secret (prompt, agent token) would outlive its Job:
        // take both back rather than leave a Job nobody follows.
        return Err(ObjectsError::OwnSecret {
            leftovers: take_back(client, namespace, name, true).await,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Remove what a failed [`create`] made: the Job (with `job`) and the Secret. Returns what could
/// not be removed, each with why.
async fn take_back(client: &kube::Client, namespace: &str, name: &str, job: bool) -> Leftovers {
    let mut left = Vec::new();
    if job && let Err(err) = delete_job(client, namespace, name, false).await {
        tracing::warn!(job = %name, error = %err, "failed to remove a Job of a failed run");
        left.push(err);
    }
    if let Err(err) = delete_secret(client, namespace, name).await {
        tracing::warn!(secret = %name, error = %err, "failed to remove a Secret of a failed run");
        left.push(err);
    }
    Leftovers(left)
}

/// Create the run's NetworkPolicy, if it has one, before its Job: the pod must never start
/// without it. It is owned by the run's Secret, which the Job owns, so it goes with the run.
/// On failure the Secret is taken back and nothing of the run is left.
async fn network_policy(
    client: &kube::Client,
    namespace: &str,
    rendered: &Rendered,
) -> Result<(), ObjectsError> {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let Some(policy) = &rendered.network_policy else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let name = rendered.secret.metadata.name.clone().unwrap_or_default();
    let created = async {
        let secret = retry("get the Secret", || secrets.get(&name)).await?;
        let mut policy = policy.clone();
        policy.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: name.clone(),
                uid: secret.metadata.uid.unwrap_or_default(),
                ..Default::default()
            },
        ]);
        let params = PostParams::default();
        match retry("create the NetworkPolicy", || {
            policies.create(&params, &policy)
        })
        .await
        {
            // A retried attempt of this same run created it already.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            other => other.map(drop),
        }
    };
    if let Err(source) = created.await {
        return Err(ObjectsError::CreateNetworkPolicy {
            leftovers: take_back(client, namespace, &name, false).await,
            namespace: namespace.to_owned(),
            name,
            source,
        });
    }
    Ok(())
}

/// Delete a Job and (through the owner reference) its Secret. `Foreground` waits for the pod
/// in Kubernetes' own bookkeeping. `Ok(false)`: the Job was already gone.
pub(crate) async fn delete_job(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    foreground: bool,
) -> Result<bool, DeleteError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = if foreground {
        DeleteParams::foreground()
    } else {
        DeleteParams::background()
    };
    match retry("delete the Job", || jobs.delete(name, &params)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(DeleteError::Job {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Delete a Secret; one already gone is fine.
pub(crate) async fn delete_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), DeleteError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams::default();
    match retry("delete the Secret", || secrets.delete(name, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(DeleteError::Secret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}
