//! API semantics: resourceVersion and watch (replay, 410, bookmarks, initial-events-end,
//! timeoutSeconds), selectors, garbage collection policies and TTL.

use std::time::Duration;

use opencode_k8s_testkit::{Cluster, ClusterOptions, Resource};
use serde_json::{Value, json};

use crate::{
    JOBS, WAIT, create_job, delete, demo_job, fixture, get, pod_name_of, post, raw, start,
    start_with, wait_gone,
};

const SECRETS: &str = "/api/v1/namespaces/capture/secrets";

fn events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The events of a watch that `path` opens and ends (with `timeoutSeconds`).
async fn watch(cluster: &Cluster, path: &str) -> Vec<Value> {
    events(&get(cluster, path).await.body)
}

fn secret(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "data": {}})
}

#[tokio::test]
async fn watch_replays_from_a_resource_version_and_answers_410_when_too_old() {
    let cluster = start_with(ClusterOptions {
        watch_history: 3,
        ..ClusterOptions::default()
    })
    .await;
    let first = post(&cluster, SECRETS, secret("a", json!({}))).await.json();
    let rv_a: u64 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    post(&cluster, SECRETS, secret("b", json!({}))).await;
    let path = format!("{SECRETS}?watch=true&resourceVersion={rv_a}&timeoutSeconds=1");
    let replay = watch(&cluster, &path).await;
    assert_eq!(
        replay.len(),
        1,
        "only changes after the version: {replay:?}"
    );
    assert_eq!(replay[0]["type"], "ADDED");
    assert_eq!(replay[0]["object"]["metadata"]["name"], "b");

    for name in ["c", "d", "e"] {
        post(&cluster, SECRETS, secret(name, json!({}))).await;
    }
    let expired = get(&cluster, &path).await;
    assert_eq!(
        expired.code, 200,
        "upstream answers an expired watch with an ERROR event"
    );
    let error = &events(&expired.body)[0];
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        error["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {rv_a} ("))
    );
}

#[tokio::test]
async fn watch_from_zero_with_initial_events_ends_with_the_annotated_bookmark() {
    let cluster = start_with(ClusterOptions {
        bookmark_interval: Duration::from_millis(100),
        ..ClusterOptions::default()
    })
    .await;
    cluster.faults().unschedulable("*");
    create_job(&cluster, demo_job("agent-opencode-demo-1", "echo hi")).await;
    let path = format!(
        "{JOBS}?watch=true&resourceVersion=0&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
    );
    let got = watch(&cluster, &path).await;
    assert_eq!(got[0]["type"], "ADDED");
    let theirs: Vec<Value> = std::fs::read_to_string(format!(
        "{}/../../fixtures/kube/21-watch-jobs-from-rv0.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let their_bookmark = theirs.iter().find(|e| e["type"] == "BOOKMARK").unwrap();
    let our_bookmark = got.iter().find(|e| e["type"] == "BOOKMARK").unwrap();
    assert_eq!(
        our_bookmark["object"]["kind"],
        their_bookmark["object"]["kind"]
    );
    assert_eq!(
        our_bookmark["object"]["apiVersion"],
        their_bookmark["object"]["apiVersion"]
    );
    assert_eq!(
        our_bookmark["object"]["metadata"]["annotations"],
        their_bookmark["object"]["metadata"]["annotations"]
    );
    assert!(
        got.iter().filter(|e| e["type"] == "BOOKMARK").count() >= 2,
        "periodic bookmarks follow: {got:?}"
    );
}

#[tokio::test]
async fn selectors_filter_lists_and_watches() {
    let cluster = start().await;
    post(
        &cluster,
        SECRETS,
        secret("one", json!({"tier": "a", "run": "1"})),
    )
    .await;
    post(&cluster, SECRETS, secret("two", json!({"tier": "b"}))).await;
    let names = |path: String| {
        let cluster = &cluster;
        async move {
            let list = get(cluster, &path).await.json();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let q = |s: &str| {
        format!(
            "{SECRETS}?labelSelector={}",
            s.replace(' ', "%20")
                .replace(',', "%2C")
                .replace('=', "%3D")
                .replace('!', "%21")
                .replace('(', "%28")
                .replace(')', "%29")
        )
    };
    assert_eq!(names(q("tier=a")).await, ["one"]);
    assert_eq!(names(q("tier!=a")).await, ["two"]);
    assert_eq!(names(q("tier in (a,b)")).await, ["one", "two"]);
    assert_eq!(names(q("tier notin (a)")).await, ["two"]);
    assert_eq!(names(q("run")).await, ["one"]);
    assert_eq!(names(q("!run")).await, ["two"]);
    assert_eq!(
        names(format!("{SECRETS}?fieldSelector=metadata.name%3Dtwo")).await,
        ["two"]
    );
    assert_eq!(
        names("/api/v1/secrets?fieldSelector=metadata.namespace%3Dcapture".to_owned()).await,
        ["one", "two"]
    );
    let bad = get(&cluster, &q("tier in a")).await;
    assert_eq!(bad.code, 400);

    let path = format!("{SECRETS}?watch=true&fieldSelector=metadata.name%3Done&timeoutSeconds=1");
    let watched = watch(&cluster, &path).await;
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0]["object"]["metadata"]["name"], "one");
}

#[tokio::test]
async fn events_are_selected_by_involved_object() {
    let cluster = start().await;
    cluster.faults().unschedulable("*");
    create_job(&cluster, demo_job("agent-opencode-demo-1", "echo hi")).await;
    let name = pod_name_of(&cluster, "capture", "agent-opencode-demo-1").await;
    cluster
        .wait_for(Resource::Pods, "capture", &name, WAIT, |p| {
            p.is_some_and(|p| p["status"]["conditions"].is_array())
        })
        .await
        .unwrap();
    let path = format!(
        "/api/v1/namespaces/capture/events?fieldSelector=involvedObject.kind%3DPod%2CinvolvedObject.name%3D{name}"
    );
    let list = get(&cluster, &path).await.json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let theirs = &fixture("11-list-events.json")["items"][0];
    assert_eq!(items[0]["reason"], theirs["reason"]);
    for field in [
        "action",
        "reportingComponent",
        "type",
        "source",
        "firstTimestamp",
    ] {
        assert_eq!(items[0][field], theirs[field], "{field}");
    }
}

#[tokio::test]
async fn background_delete_collects_pods_and_orphan_keeps_them() {
    let cluster = start().await;
    cluster.faults().unschedulable("*");
    for name in ["bg", "orphan"] {
        create_job(&cluster, demo_job(name, "echo hi")).await;
    }
    let bg_pod = pod_name_of(&cluster, "capture", "bg").await;
    let orphan_pod = pod_name_of(&cluster, "capture", "orphan").await;
    delete(
        &cluster,
        &format!("{JOBS}/bg"),
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    delete(
        &cluster,
        &format!("{JOBS}/orphan?propagationPolicy=Orphan"),
        None,
    )
    .await;
    wait_gone(&cluster, Resource::Pods, "capture", &bg_pod).await;
    let kept = cluster
        .get_json(Resource::Pods, "capture", &orphan_pod)
        .unwrap();
    assert!(
        kept["metadata"]["ownerReferences"].is_null(),
        "orphaned pods lose their owner reference"
    );
}

#[tokio::test]
async fn ttl_after_finished_deletes_the_job_and_its_pods() {
    let cluster = start().await;
    let mut job = demo_job("ttl", "echo bye");
    job["spec"]["ttlSecondsAfterFinished"] = json!(0);
    create_job(&cluster, job).await;
    let pod = pod_name_of(&cluster, "capture", "ttl").await;
    wait_gone(&cluster, Resource::Jobs, "capture", "ttl").await;
    wait_gone(&cluster, Resource::Pods, "capture", &pod).await;
}

#[tokio::test]
async fn watch_timeout_ends_the_stream() {
    let cluster = start().await;
    let started = tokio::time::Instant::now();
    let answer = get(&cluster, &format!("{SECRETS}?watch=true&timeoutSeconds=1")).await;
    assert_eq!(answer.code, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(answer.body.is_empty());
}

#[tokio::test]
async fn objects_entering_or_leaving_a_selector_are_added_or_deleted_for_the_watch() {
    let cluster = start().await;
    post(&cluster, SECRETS, secret("moving", json!({"tier": "a"}))).await;
    let list = get(&cluster, SECRETS).await.json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let relabel = |tier: &'static str| {
        let cluster = &cluster;
        async move {
            let patch = json!({"metadata": {"labels": {"tier": tier}}});
            raw(
                cluster,
                "PATCH",
                &format!("{SECRETS}/moving"),
                None,
                "application/merge-patch+json",
                Some(patch),
            )
            .await
        }
    };
    relabel("b").await;
    relabel("a").await;
    let path = format!(
        "{SECRETS}?watch=true&labelSelector=tier%3Da&resourceVersion={rv}&timeoutSeconds=1"
    );
    let types: Vec<String> = watch(&cluster, &path)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["DELETED", "ADDED"]);
}
