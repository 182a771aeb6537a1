//! Creating and deleting a run's objects: the Secret first, then the Job, then the Secret's
//! owner reference to the Job (a JSON merge patch, so Kubernetes garbage-collects the Secret
//! with its Job). A step the API refuses takes back what the earlier steps created; whatever
//! cannot be removed is named in the error, so nothing is left behind unnoticed.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::result::RunError;
use super::retry::retry;
use crate::error_code::ErrorCode;
use crate::manifest::Rendered;

/// Create the Secret and the Job of `rendered` in `namespace`; returns the created Job.
pub(crate) async fn create(
    client: &kube::Client,
    namespace: &str,
    rendered: &Rendered,
) -> Result<Job, RunError> {
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
) -> Result<(), RunError> {
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
        Err(err) => Err(RunError::api(
            ErrorCode::K8sJobCreateFailed,
            &format!("create Secret {namespace}/{name}"),
            &err,
        )),
    }
}

/// Create the run's Job; on failure take back what the run created.
async fn create_job(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    rendered: &Rendered,
) -> Result<Job, RunError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = PostParams::default();
    match retry("create the Job", || jobs.create(&params, &rendered.job)).await {
        Ok(job) => Ok(job),
        // A retried create whose first try went through: the Job is this run's.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = retry("get the Job", || jobs.get(name))
                .await
                .map_err(|err| {
                    RunError::api(
                        ErrorCode::K8sJobCreateFailed,
                        &format!("get Job {namespace}/{name}"),
                        &err,
                    )
                })?;
            if existing.metadata.labels != rendered.job.metadata.labels {
                return Err(RunError::new(
                    ErrorCode::K8sJobCreateFailed,
                    format!(
                        "failed to create Job {namespace}/{name}: a Job of that name that this run did not create already exists; delete it"
                    ),
                ));
            }
            Ok(existing)
        }
        Err(err) => {
            let left = take_back(client, namespace, name, false).await;
            let error = RunError::api(
                ErrorCode::K8sJobCreateFailed,
                &format!("create Job {namespace}/{name}"),
                &err,
            );
            Err(with_leftovers(error, &left))
        }
    }
}

/// Make the Job the owner of the run's Secret, so the Secret goes with it.
async fn own_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    job: &Job,
) -> Result<(), RunError> {
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
    if let Err(err) = retry("set the Secret's owner", || {
        secrets.patch(name, &params, &patch)
    })
    .await
    {
        // Without the owner reference the Secret (prompt, agent token) would outlive its Job:
        // take both back rather than leave a Job nobody follows.
        let left = take_back(client, namespace, name, true).await;
        let error = RunError::api(
            ErrorCode::K8sJobCreateFailed,
            &format!("set the owner of Secret {namespace}/{name}"),
            &err,
        );
        return Err(with_leftovers(error, &left));
    }
    Ok(())
}

/// Remove what a failed [`create`] made: the Job (with `job`) and the Secret. Returns what could
/// not be removed, each with why.
async fn take_back(client: &kube::Client, namespace: &str, name: &str, job: bool) -> Vec<String> {
    let mut left = Vec::new();
    if job && let Err(err) = delete_job(client, namespace, name, false).await {
        tracing::warn!(job = %name, error = %err, "failed to remove a Job of a failed run");
        left.push(format!("Job {namespace}/{name} ({})", err.message));
    }
    if let Err(err) = delete_secret(client, namespace, name).await {
        tracing::warn!(secret = %name, error = %err, "failed to remove a Secret of a failed run");
        left.push(format!("Secret {namespace}/{name} ({})", err.message));
    }
    left
}

/// The error, saying what the run created and could not remove.
fn with_leftovers(mut error: RunError, left: &[String]) -> RunError {
    if !left.is_empty() {
        error.message = format!(
            "{}; this run created objects it could not remove, delete them: {}",
            error.message,
            left.join("; ")
        );
    }
    error
}

/// Create the run's NetworkPolicy, if it has one, before its Job: the pod must never start
/// without it. It is owned by the run's Secret, which the Job owns, so it goes with the run.
/// On failure the Secret is taken back and nothing of the run is left.
async fn network_policy(
    client: &kube::Client,
    namespace: &str,
    rendered: &Rendered,
) -> Result<(), RunError> {
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
    if let Err(err) = created.await {
        let left = take_back(client, namespace, &name, false).await;
        let error = RunError::api(
            ErrorCode::K8sJobCreateFailed,
            &format!("create NetworkPolicy {namespace}/{name}"),
            &err,
        );
        return Err(with_leftovers(error, &left));
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
) -> Result<bool, RunError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = if foreground {
        DeleteParams::foreground()
    } else {
        DeleteParams::background()
    };
    match retry("delete the Job", || jobs.delete(name, &params)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(RunError::api(
            ErrorCode::AdapterInternal,
            &format!("delete Job {namespace}/{name}"),
            &err,
        )),
    }
}

/// Delete a Secret; one already gone is fine.
pub(crate) async fn delete_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), RunError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams::default();
    match retry("delete the Secret", || secrets.delete(name, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(RunError::api(
            ErrorCode::AdapterInternal,
            &format!("delete Secret {namespace}/{name}"),
            &err,
        )),
    }
}
