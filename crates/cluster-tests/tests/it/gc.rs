//! What a run leaves behind on a real cluster: nothing after a cancel; its Secret goes with its
//! Job (garbage collector); the TTL controller removes a finished Job nobody cleaned up; `gc`
//! removes an agent's Lease nobody holds, and the agent's next run makes it again.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::DeleteParams;
use opencode_k8s_cluster_tests::{Record, Sandbox, say, tier, wait_for};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{ClientCache, ClusterSource, RunStatus, gc};
use opencode_k8s_core::manifest::agent_lease_name;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{bounded, bounds, wait_nothing_left};

/// Until the run's output contains `needle` (the container is running and printing).
async fn until_printed(sink: &Record, needle: &str) {
    bounded(Duration::from_secs(90), "the agent's first lines", async {
        while !sink.output().contains(needle) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// The name of the one Job of the sandbox.
async fn job_name(sandbox: &Sandbox) -> String {
    let names = sandbox.names("jobs", "oc-").await.unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_removes_the_job_its_pod_and_its_secret() {
    let Some(tier) = tier("cancel").await else {
        return;
    };
    let sandbox = tier.sandbox("cancel", Default::default()).await.unwrap();
    let engine = sandbox.engine(bounds());
    let sink = Record::default();
    let cancel = CancellationToken::new();
    let request = sandbox.request("cancel", "agent-cancel", "lines=3 sleep=600");
    let config = sandbox.config(json!({}));
    let cancelled_at = async {
        until_printed(&sink, "line 3 out").await;
        cancel.cancel();
        Instant::now()
    };
    let (result, cancelled_at) = tokio::join!(
        bounded(
            Duration::from_secs(150),
            "the cancelled run",
            engine.run(request, &config, &sink, cancel.clone())
        ),
        cancelled_at
    );
    let to_result = cancelled_at.elapsed();
    let result = result.unwrap_or_else(|e| panic!("{e}\n{}", sink.lines().join("\n")));
    let to_gone = to_result + wait_nothing_left(&sandbox, Duration::from_secs(60)).await;
    say(&format!(
        "real-cluster tier: cancel: result {to_result:.2?} after the cancel, Job, pod and Secret gone after {to_gone:.2?}"
    ));
    assert_eq!(
        (result.status, result.error_code),
        (RunStatus::Cancelled, Some(ErrorCode::Cancelled)),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_garbage_collected_with_its_job() {
    let Some(tier) = tier("secret_gc").await else {
        return;
    };
    let sandbox = tier.sandbox("secret-gc", Default::default()).await.unwrap();
    let engine = sandbox.engine(bounds());
    let sink = Record::default();
    let request = sandbox.request("secret-gc", "agent-gc", "lines=2 sleep=600");
    let config = sandbox.config(json!({}));
    let delete_job = async {
        until_printed(&sink, "line 2 out").await;
        let name = job_name(&sandbox).await;
        let jobs = Api::<Job>::namespaced(tier.admin.clone(), &sandbox.ns);
        let secrets = Api::<Secret>::namespaced(tier.admin.clone(), &sandbox.ns);
        let uid = jobs.get(&name).await.unwrap().metadata.uid;
        let owners = secrets
            .get(&name)
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.kind == "Job" && Some(&o.uid) == uid.as_ref()),
            "the Secret is owned by its Job: {owners:?}"
        );
        // As `kubectl delete job` does: background propagation, the garbage collector does the rest.
        jobs.delete(&name, &DeleteParams::background())
            .await
            .unwrap();
        let started = Instant::now();
        wait_for(
            Duration::from_secs(60),
            "the Secret to be collected",
            || async {
                secrets
                    .get_opt(&name)
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await
        .unwrap();
        started.elapsed()
    };
    let (result, collected_in) = tokio::join!(
        bounded(
            Duration::from_secs(150),
            "the run whose Job was deleted",
            engine.run(request, &config, &sink, CancellationToken::new())
        ),
        delete_job
    );
    say(&format!(
        "real-cluster tier: secret_gc: Secret collected {collected_in:.2?} after its Job was deleted; run: {:?}",
        result.as_ref().map(|r| r.error_code).map_err(|e| e.code())
    ));
    let code = match &result {
        Ok(result) => result.error_code,
        Err(err) => Some(err.code()),
    };
    assert_eq!(
        code,
        Some(ErrorCode::K8sJobDeletedExternally),
        "{result:?}\n{}",
        sink.lines().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_removes_a_finished_job_nobody_cleaned_up() {
    let Some(tier) = tier("ttl").await else {
        return;
    };
    let sandbox = tier.sandbox("ttl", Default::default()).await.unwrap();
    let sink = Record::default();
    {
        // The engine goes away mid-run (its future dropped): nobody deletes the Job.
        let engine = sandbox.engine(bounds());
        let request = sandbox.request("ttl", "agent-ttl", "lines=2 sleep=3");
        let config = sandbox.config(json!({"ttlSecondsAfterFinished": "5"}));
        tokio::select! {
            result = engine.run(request, &config, &sink, CancellationToken::new()) => {
                panic!("the run ended before it was dropped: {result:?}")
            }
            () = until_printed(&sink, "line 2 out") => {}
        }
    }
    let name = job_name(&sandbox).await;
    let started = Instant::now();
    let jobs = Api::<Job>::namespaced(tier.admin.clone(), &sandbox.ns);
    let finished_in = wait_for(Duration::from_secs(60), "the Job to finish", || async {
        let job = jobs.get_opt(&name).await.ok()??;
        let done = job
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        done.then(|| started.elapsed())
    })
    .await
    .unwrap();
    // Panics if the Job, its pod or its Secret outlive the TTL by a minute and a half.
    let gone_in = wait_nothing_left(&sandbox, Duration::from_secs(90)).await;
    say(&format!(
        "real-cluster tier: ttl: Job complete {finished_in:.1?} after the engine left, it and its Secret removed {gone_in:.1?} later (TTL 5 s)"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_a_lease_nobody_holds_and_the_agent_runs_again() {
    let Some(tier) = tier("lease_gc").await else {
        return;
    };
    let sandbox = tier.sandbox("lease-gc", Default::default()).await.unwrap();
    // One engine for both runs: the second first tries to take back the Lease the first
    // released, which gc deleted in between.
    let engine = sandbox.engine(bounds());
    let config = sandbox.config(json!({}));
    // gc as the engine's ServiceAccount, with the Role `opencode-k8s rbac` generates.
    let client = ClientCache::default()
        .client(&ClusterSource::KubeconfigPath(sandbox.kubeconfig.clone()))
        .await
        .unwrap();
    let leases = Api::<Lease>::namespaced(tier.admin.clone(), &sandbox.ns);
    let name = agent_lease_name("agent-lease-gc");
    for run in ["lease-gc-1", "lease-gc-2"] {
        let sink = Record::default();
        let result = bounded(
            Duration::from_secs(150),
            run,
            engine.run(
                sandbox.request(run, "agent-lease-gc", "lines=1"),
                &config,
                &sink,
                CancellationToken::new(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{run}: {e}\n{}", sink.lines().join("\n")));
        assert_eq!(result.status, RunStatus::Succeeded, "{run}: {result:?}");
        assert!(
            leases.get_opt(&name).await.unwrap().is_some(),
            "{run} leaves the agent's Lease, released"
        );
        let started = Instant::now();
        let report = gc(&client, &sandbox.ns, Duration::ZERO, false)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(report.failures.is_empty(), "{run}: {report:#?}");
        let collected: Vec<_> = report
            .leases
            .iter()
            .map(|l| (l.name.as_str(), l.reason.as_str()))
            .collect();
        assert_eq!(collected, [(name.as_str(), "released")], "{run}");
        assert!(leases.get_opt(&name).await.unwrap().is_none(), "{run}");
        say(&format!(
            "real-cluster tier: lease_gc: {run} succeeded; gc deleted its released Lease in {took:.2?}"
        ));
    }
}
