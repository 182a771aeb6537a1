//! kube-rs used unmodified against kube-sim: `Api`, `watcher`, `await_condition`, `logs` and
//! `log_stream` — including the "Done when" Job that exits 3.

use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt as _, wait::await_condition, watcher};
use kube::{Api, ResourceExt as _};
use opencode_k8s_testkit::Verb;
use serde_json::json;

use crate::{WAIT, demo_job, fixture, kube_client, start};

fn job(name: &str, command: &str) -> Job {
    serde_json::from_value(demo_job(name, command)).unwrap()
}

fn condition(kind: &'static str) -> impl Fn(Option<&Job>) -> bool {
    move |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
    }
}

/// Done when: a Job running `sh -c 'echo hi; echo err >&2; exit 3'` ends Failed with exit code
/// 3, and its log through the log API has both lines with timestamps.
#[tokio::test]
async fn failing_job_reports_exit_code_3_and_both_log_lines() {
    let cluster = start().await;
    let client = kube_client(&cluster).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "capture");
    let pods: Api<Pod> = Api::namespaced(client, "capture");
    jobs.create(
        &PostParams::default(),
        &job("exit3", "echo hi; echo err >&2; exit 3"),
    )
    .await
    .unwrap();
    let failed = tokio::time::timeout(
        WAIT,
        await_condition(jobs.clone(), "exit3", condition("Failed")),
    )
    .await
    .expect("job fails in time")
    .unwrap()
    .unwrap();
    let failed_condition = failed.status.unwrap().conditions.unwrap();
    let types: Vec<&str> = failed_condition.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["FailureTarget", "Failed"]);
    assert_eq!(
        failed_condition[1].reason.as_deref(),
        Some("BackoffLimitExceeded")
    );

    let pod = pods
        .list(&ListParams::default().labels("job-name=exit3"))
        .await
        .unwrap()
        .items
        .remove(0);
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));

    let params = LogParams {
        container: Some("opencode".into()),
        timestamps: true,
        ..LogParams::default()
    };
    let log = pods
        .logs(&pod.metadata.name.unwrap(), &params)
        .await
        .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log:?}");
    let mut texts: Vec<&str> = Vec::new();
    for line in &lines {
        let (stamp, text) = line.split_once(' ').unwrap();
        assert!(
            stamp.parse::<jiff::Timestamp>().is_ok(),
            "RFC3339 timestamp: {stamp}"
        );
        assert_eq!(
            stamp.len(),
            "2026-11-27T14:24:42.420363934Z".len(),
            "nanosecond precision: {stamp}"
        );
        texts.push(text);
    }
    texts.sort_unstable();
    assert_eq!(texts, ["err", "hi"]);
}

#[tokio::test]
async fn succeeding_job_completes_and_watches_see_every_step() {
    let cluster = start().await;
    let client = kube_client(&cluster).await;
    let jobs: Api<Job> = Api::namespaced(client, "capture");
    let rv = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    jobs.create(&PostParams::default(), &job("ok", "echo done"))
        .await
        .unwrap();
    // A watch from the list's resourceVersion replays every change of the Job.
    let events = jobs
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap();
    let mut events = std::pin::pin!(events);
    let mut seen: Vec<Vec<String>> = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.try_next().await.unwrap() {
            let (WatchEvent::Added(job) | WatchEvent::Modified(job)) = event else {
                continue;
            };
            let conditions: Vec<String> = job
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.type_)
                .collect();
            let done = conditions.iter().any(|c| c == "Complete");
            seen.push(conditions);
            if done {
                break;
            }
        }
    })
    .await
    .expect("the watch saw the job complete");
    assert!(
        seen.contains(&vec!["SuccessCriteriaMet".to_owned()]),
        "SuccessCriteriaMet first: {seen:?}"
    );
    assert_eq!(
        seen.last().unwrap(),
        &vec!["SuccessCriteriaMet".to_owned(), "Complete".to_owned()]
    );

    // kube-runtime's watcher (list + watch with bookmarks) sees the same end state.
    let stream = watcher(jobs.clone(), watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    let applied = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(condition("Complete")(Some(&applied)));
    let done = jobs.get("ok").await.unwrap().status.unwrap();
    assert_eq!(done.succeeded, Some(1));
    assert!(done.completion_time.is_some());
    assert_eq!(cluster.requests().get(Verb::Watch, "jobs"), 1);
    assert_eq!(cluster.requests().get(Verb::List, "jobs"), 2);
}

#[tokio::test]
async fn log_stream_follows_lines_as_written_and_ends_after_exit() {
    let cluster = start().await;
    let client = kube_client(&cluster).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "capture");
    let pods: Api<Pod> = Api::namespaced(client, "capture");
    let script = "for i in 1 2 3; do echo line-$i; sleep 0.1; done; printf partial-no-newline";
    jobs.create(&PostParams::default(), &job("follow", script))
        .await
        .unwrap();
    let pod = crate::pod_of(&cluster, "capture", "follow").await;
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    await_condition(
        pods.clone(),
        &name,
        kube::runtime::conditions::is_pod_running(),
    )
    .await
    .unwrap();
    let params = LogParams {
        follow: true,
        container: Some("opencode".into()),
        ..LogParams::default()
    };
    let stream = pods.log_stream(&name, &params).await.unwrap();
    let lines: Vec<String> = tokio::time::timeout(WAIT, stream.lines().try_collect())
        .await
        .expect("the follow stream ends after the container exits")
        .unwrap();
    assert_eq!(lines, ["line-1", "line-2", "line-3", "partial-no-newline"]);
    assert_eq!(cluster.requests().get(Verb::Follow, "pods/log"), 1);
}

#[tokio::test]
async fn crud_through_api_works_unmodified() {
    let cluster = start().await;
    let client = kube_client(&cluster).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert_eq!(
        namespaces.get("capture").await.unwrap().name_any(),
        "capture"
    );
    let secrets: Api<Secret> = Api::namespaced(client, "capture");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s", "labels": {"a": "b"}}, "stringData": {"k": "v"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let got = secrets.get("s").await.unwrap();
    assert_eq!(got.data.unwrap()["k"].0, b"v");
    let patch = json!({"metadata": {"labels": {"c": "d"}}});
    let patched = secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.labels().get("c").map(String::as_str), Some("d"));
    assert_eq!(patched.labels().get("a").map(String::as_str), Some("b"));
    assert_eq!(
        secrets
            .list(&ListParams::default().labels("c=d"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let mut replaced = patched.clone();
    replaced.string_data = Some([("k".to_owned(), "w".to_owned())].into());
    let replaced = secrets
        .replace("s", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap()["k"].0, b"w");
    let stale = secrets
        .replace("s", &PostParams::default(), &patched)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, kube::Error::Api(ref s) if s.code == 409),
        "a stale resourceVersion conflicts: {stale}"
    );
    assert!(
        secrets
            .delete("s", &DeleteParams::default())
            .await
            .unwrap()
            .is_right()
    );
    let err = secrets.get("s").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err}"
    );
}

/// Leases as leader election uses them: a second create of the same name is 409 AlreadyExists,
/// a replace from a stale resourceVersion is 409 Conflict, so two holders cannot both win.
#[tokio::test]
async fn leases_give_exactly_one_winner_through_resource_versions() {
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = start().await;
    let client = kube_client(&cluster).await;
    let leases: Api<Lease> = Api::namespaced(client, "capture");
    let lease = |holder: &str| -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "agent-1"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30},
        }))
        .unwrap()
    };
    let created = leases
        .create(&PostParams::default(), &lease("a"))
        .await
        .unwrap();
    let again = leases
        .create(&PostParams::default(), &lease("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{again:?}"
    );
    let mut by_b = lease("b");
    by_b.metadata.resource_version = created.metadata.resource_version.clone();
    let mut by_c = lease("c");
    by_c.metadata.resource_version = created.metadata.resource_version.clone();
    let won = leases
        .replace("agent-1", &PostParams::default(), &by_b)
        .await
        .unwrap();
    let lost = leases
        .replace("agent-1", &PostParams::default(), &by_c)
        .await
        .unwrap_err();
    assert!(
        matches!(&lost, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{lost:?}"
    );
    let now = leases.get("agent-1").await.unwrap();
    assert_eq!(
        now.spec.unwrap().holder_identity.as_deref(),
        Some("b"),
        "the first replace from the version it read wins"
    );
    assert_eq!(now.metadata.resource_version, won.metadata.resource_version);
    assert_eq!(
        cluster.requests().get(Verb::Update, "leases"),
        2,
        "both replaces reached the server"
    );
}

/// A delete with a resourceVersion precondition removes only that version: after a write it is
/// 409 Conflict, worded as the API server words it (fixture 42), and the object stays.
#[tokio::test]
async fn a_delete_with_a_stale_resource_version_precondition_is_refused() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{DeleteParams, Preconditions};
    let cluster = start().await;
    let client = kube_client(&cluster).await;
    let leases: Api<Lease> = Api::namespaced(client, "capture");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "agent-1"},
        "spec": {"leaseDurationSeconds": 30},
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let seen = created.metadata.resource_version.clone();
    let mut taken = created;
    taken.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let taken = leases
        .replace("agent-1", &PostParams::default(), &taken)
        .await
        .unwrap();
    let only = |version: Option<String>| DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: version,
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let refused = leases
        .delete("agent-1", &only(seen.clone()))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let real = fixture("42-delete-precondition-conflict.json");
    let (real_seen, real_stored) = ("13148", "13149");
    assert_eq!(
        status.message,
        real["message"]
            .as_str()
            .unwrap()
            .replace(real_seen, &seen.unwrap())
            .replace(
                real_stored,
                taken.metadata.resource_version.as_deref().unwrap()
            )
    );
    assert_eq!(
        status.details.as_ref().unwrap().kind,
        real["details"]["kind"]
    );
    assert!(leases.get_opt("agent-1").await.unwrap().is_some());
    leases
        .delete("agent-1", &only(taken.metadata.resource_version))
        .await
        .unwrap();
    assert!(leases.get_opt("agent-1").await.unwrap().is_none());
}
