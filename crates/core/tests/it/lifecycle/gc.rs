//! `gc` against the simulated cluster: finished adapter Jobs past the bound go, running ones
//! and other tools' Jobs stay; Secrets whose Job is gone go, young unowned ones stay.

use std::time::Duration;

use opencode_k8s_core::lifecycle::{ClientCache, ClusterSource, gc};
use opencode_k8s_core::manifest::{MANAGED_BY_KEY, MANAGED_BY_VALUE};
use opencode_k8s_testkit::Resource;
use serde_json::{Value, json};

use super::{Harness, NS};

const WAIT: Duration = Duration::from_secs(20);

fn job(name: &str, managed_by: &str, command: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": {MANAGED_BY_KEY: managed_by}},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "opencode", "image": "x", "command": ["sh", "-c", command]}],
            }},
        },
    })
}

fn secret(name: &str, owner: Option<(&str, &str)>) -> Value {
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "labels": {MANAGED_BY_KEY: MANAGED_BY_VALUE}},
        "stringData": {"prompt": "hi"},
    });
    if let Some((job, uid)) = owner {
        secret["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": uid}]);
    }
    secret
}

async fn complete(h: &Harness, name: &str) -> Value {
    h.cluster
        .wait_for(Resource::Jobs, NS, name, WAIT, |j| {
            j.and_then(|j| j["status"]["conditions"].as_array())
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Complete"))
        })
        .await
        .unwrap()
        .unwrap()
}

fn exists(h: &Harness, resource: Resource, name: &str) -> bool {
    h.cluster.get_json(resource, NS, name).is_some()
}

#[tokio::test]
async fn finished_jobs_and_orphaned_secrets_go_running_jobs_stay() {
    let h = Harness::start().await;
    for running in ["oc-running", "oc-running-unowned"] {
        h.cluster.faults().unschedulable(running);
        h.cluster
            .create(job(running, MANAGED_BY_VALUE, "exit 0"))
            .unwrap();
    }
    let running = h
        .cluster
        .get_json(Resource::Jobs, NS, "oc-running")
        .unwrap();
    h.cluster
        .create(job("oc-done", MANAGED_BY_VALUE, "exit 0"))
        .unwrap();
    h.cluster
        .create(job("someone-elses", "helm", "exit 0"))
        .unwrap();
    let done = complete(&h, "oc-done").await;
    complete(&h, "someone-elses").await;
    let uid = |j: &Value| j["metadata"]["uid"].as_str().unwrap().to_owned();
    for s in [
        secret("oc-running", Some(("oc-running", &uid(&running)))),
        secret("oc-done", Some(("oc-done", &uid(&done)))),
        secret("oc-owner-gone", Some(("oc-deleted", "0000-gone"))),
        secret("oc-unowned", None),
        secret("oc-running-unowned", None),
    ] {
        h.cluster.create(s).unwrap();
    }
    let client = ClientCache::default()
        .client(&ClusterSource::KubeconfigPath(
            h.cluster.kubeconfig_path().to_owned(),
        ))
        .await
        .unwrap();

    // With a one-hour bound nothing just finished is old enough; the orphan still goes.
    let report = gc(&client, NS, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(report.jobs.is_empty(), "{report:#?}");
    let names: Vec<_> = report.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["oc-owner-gone"]);
    assert_eq!(report.secrets[0].reason, "Job oc-deleted is gone");
    assert_eq!(report.running, 2);
    assert!(!exists(&h, Resource::Secrets, "oc-owner-gone"));
    assert!(exists(&h, Resource::Secrets, "oc-unowned"));

    // A dry run with no bound reports without deleting.
    let dry = gc(&client, NS, Duration::ZERO, true).await.unwrap();
    let jobs: Vec<_> = dry.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(jobs, ["oc-done"]);
    assert_eq!(dry.jobs[0].reason, "completed");
    let secrets: Vec<_> = dry.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(secrets, ["oc-unowned"]);
    assert!(exists(&h, Resource::Jobs, "oc-done"));

    let report = gc(&client, NS, Duration::ZERO, false).await.unwrap();
    assert_eq!(report.jobs.len(), 1, "{report:#?}");
    assert!(report.failures.is_empty(), "{report:#?}");
    for gone in ["oc-done"] {
        h.wait_gone(Resource::Jobs, gone, "gc deletes the finished Job")
            .await;
        h.wait_gone(Resource::Secrets, gone, "and its Secret").await;
    }
    assert!(!exists(&h, Resource::Secrets, "oc-unowned"));
    assert!(exists(&h, Resource::Jobs, "oc-running"));
    assert!(exists(&h, Resource::Secrets, "oc-running"));
    assert!(
        exists(&h, Resource::Secrets, "oc-running-unowned"),
        "a Secret whose owner patch failed stays while its Job runs"
    );
    assert!(exists(&h, Resource::Jobs, "someone-elses"));
}
