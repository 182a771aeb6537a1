//! `gc` against the simulated cluster: finished adapter Jobs past the bound go, running ones
//! and other tools' Jobs stay; Secrets whose Job is gone go, young unowned ones stay; agents'
//! Leases nobody held for the bound go, and the agent's next run makes its Lease again.

use std::time::Duration;

use jiff::Timestamp;
use opencode_k8s_core::lifecycle::{Bounds, ClientCache, ClusterSource, RunStatus, gc};
use opencode_k8s_core::manifest::{MANAGED_BY_KEY, MANAGED_BY_VALUE, agent_lease_name};
use opencode_k8s_testkit::{Resource, Verb};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Collect, Harness, NS, request};

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

/// A Lease of the adapter's shape (or another tool's), last renewed `ago`.
fn lease(name: &str, managed: bool, holder: Option<&str>, ago: Duration) -> Value {
    let labels = if managed {
        json!({MANAGED_BY_KEY: MANAGED_BY_VALUE})
    } else {
        json!({})
    };
    let renewed = (Timestamp::now() - ago).strftime("%Y-%m-%dT%H:%M:%S.%6fZ");
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30, "renewTime": renewed.to_string()},
    })
}

#[tokio::test]
async fn leases_nobody_held_for_the_bound_go_held_and_recent_ones_stay() {
    let h = Harness::start().await;
    let hours = |n: u64| Duration::from_secs(n * 3600);
    for l in [
        lease("oc-agent-released", true, None, hours(2)),
        lease("oc-agent-expired", true, Some("host/1.1/run-x"), hours(2)),
        lease(
            "oc-agent-live",
            true,
            Some("host/1.1/run-y"),
            Duration::ZERO,
        ),
        lease("oc-agent-recent", true, None, Duration::from_secs(600)),
        lease("someone-elses", false, None, hours(2)),
    ] {
        h.cluster.create(l).unwrap();
    }
    let client = h.client().await;

    let dry = gc(&client, NS, hours(1), true).await.unwrap();
    let mut collected: Vec<_> = dry
        .leases
        .iter()
        .map(|l| (l.name.as_str(), l.reason.as_str()))
        .collect();
    collected.sort_unstable();
    assert_eq!(
        collected,
        [
            (
                "oc-agent-expired",
                "expired; host/1.1/run-x stopped renewing it"
            ),
            ("oc-agent-released", "released"),
        ]
    );
    assert!(dry.leases.iter().all(|l| l.age_seconds >= 7190), "{dry:#?}");
    assert!(
        exists(&h, Resource::Leases, "oc-agent-released"),
        "a dry run deletes nothing"
    );

    let report = gc(&client, NS, hours(1), false).await.unwrap();
    assert_eq!(report.leases.len(), 2, "{report:#?}");
    assert!(report.failures.is_empty(), "{report:#?}");
    for gone in ["oc-agent-released", "oc-agent-expired"] {
        assert!(!exists(&h, Resource::Leases, gone), "{gone}");
    }
    for stays in ["oc-agent-live", "oc-agent-recent", "someone-elses"] {
        assert!(exists(&h, Resource::Leases, stays), "{stays}");
    }
}

#[tokio::test]
async fn a_lease_that_changed_between_the_list_and_the_delete_stays_and_is_no_failure() {
    let h = Harness::start().await;
    let two_hours = Duration::from_secs(7200);
    h.cluster
        .create(lease("oc-agent-taken", true, None, two_hours))
        .unwrap();
    // The delete's version precondition fails, as when a run took the Lease after gc listed it.
    h.cluster.faults().fail_next(Verb::Delete, "leases", 1, 409);
    let client = h.client().await;
    let report = gc(&client, NS, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(report.leases.is_empty(), "{report:#?}");
    assert!(report.failures.is_empty(), "{report:#?}");
    assert!(exists(&h, Resource::Leases, "oc-agent-taken"));
}

#[tokio::test]
async fn an_agent_whose_lease_gc_deleted_runs_again_and_gets_a_new_one() {
    let h = Harness::start().await;
    h.opencode("cat > /dev/null; echo ran");
    // One engine for both runs: the second tries to take back the Lease the first released,
    // which gc deleted in between.
    let engine = h.engine(Bounds::default());
    let config = h.config(json!({}));
    let client = h.client().await;
    let name = agent_lease_name("agent-gc");
    for run in ["run-before-gc", "run-after-gc"] {
        let sink = Collect::default();
        let result = engine
            .run(
                request(run, "agent-gc"),
                &config,
                &sink,
                CancellationToken::new(),
            )
            .await
            .unwrap_or_else(|err| panic!("{run}: {err}\n{:?}", sink.lines()));
        assert_eq!(result.status, RunStatus::Succeeded, "{run}: {result:?}");
        assert!(sink.output().contains("ran"), "{run}");
        assert!(
            exists(&h, Resource::Leases, &name),
            "{run} leaves its Lease"
        );
        let report = gc(&client, NS, Duration::ZERO, false).await.unwrap();
        let leases: Vec<_> = report.leases.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(leases, [name.as_str()], "{run}: {report:#?}");
        assert!(!exists(&h, Resource::Leases, &name), "{run}: gc deleted it");
    }
}
