//! Fault injection from Rust and from the `/_testkit` control endpoint, and request accounting.

use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use http_body_util::Full;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{LogParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use opencode_k8s_testkit::{LogCut, Resource, Verb};
use serde_json::{Value, json};

use crate::{
    WAIT, create_job, demo_job, get, job_condition, kube_client, pod_log, pod_name_of, pod_of,
    post, raw, start, start_with, unschedulable_pod, waiting_reason,
};

/// The name of the next object a watcher stream yields.
async fn next_name<S>(stream: &mut S) -> Option<String>
where
    S: futures::Stream<Item = Result<Secret, watcher::Error>> + Unpin,
{
    let secret = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    secret.metadata.name
}

/// Follows a pod's log with timestamps, from `since_time` if given, until the stream ends.
async fn follow(pods: &Api<Pod>, name: &str, since_time: Option<jiff::Timestamp>) -> Vec<String> {
    let params = LogParams {
        follow: true,
        timestamps: true,
        since_time,
        ..LogParams::default()
    };
    pods.log_stream(name, &params)
        .await
        .unwrap()
        .lines()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn fail_next_answers_the_given_code_n_times_then_recovers() {
    let cluster = start().await;
    let jobs: Api<Job> = Api::namespaced(kube_client(&cluster).await, "capture");
    cluster.faults().fail_next(Verb::Get, "jobs", 2, 500);
    for _ in 0..2 {
        let err = jobs.get("nope").await.unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 500 && s.reason == "InternalError"),
            "{err}"
        );
    }
    let err = jobs.get("nope").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err}"
    );
    // kube-rs retries 429/503/504 on its own: the caller sees success, the server saw 3 lists.
    cluster.faults().fail_next(Verb::List, "jobs", 1, 429);
    cluster.faults().fail_next(Verb::List, "jobs", 1, 503);
    assert!(jobs.list(&Default::default()).await.is_ok());
    let counts = cluster.requests();
    assert_eq!(counts.get(Verb::Get, "jobs"), 3);
    assert_eq!(counts.get(Verb::List, "jobs"), 3);
    cluster.reset_requests();
    assert_eq!(cluster.requests().total(), 0);
}

#[tokio::test]
async fn closed_watches_are_reopened_by_the_watcher() {
    // Frequent bookmarks too: kube-runtime must parse them and carry on.
    let cluster = start_with(opencode_k8s_testkit::ClusterOptions {
        bookmark_interval: Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(kube_client(&cluster).await, "capture");
    let stream = watcher(secrets.clone(), watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    let make =
        |name: &str| serde_json::from_value::<Secret>(json!({"metadata": {"name": name}})).unwrap();
    secrets
        .create(&PostParams::default(), &make("before"))
        .await
        .unwrap();
    assert_eq!(
        next_name(&mut stream).await.as_deref(),
        Some("before"),
        "from the initial list"
    );
    secrets
        .create(&PostParams::default(), &make("watched"))
        .await
        .unwrap();
    assert_eq!(
        next_name(&mut stream).await.as_deref(),
        Some("watched"),
        "through the open watch"
    );
    cluster.faults().close_watches();
    secrets
        .create(&PostParams::default(), &make("after"))
        .await
        .unwrap();
    assert_eq!(
        next_name(&mut stream).await.as_deref(),
        Some("after"),
        "nothing lost across the reconnect"
    );
    assert!(
        cluster.requests().get(Verb::Watch, "secrets") >= 2,
        "{:?}",
        cluster.requests()
    );
}

#[tokio::test]
async fn refused_connections_come_back_after_the_window() {
    let cluster = start().await;
    cluster
        .faults()
        .refuse_connections(Duration::from_millis(300));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let get = || {
        let request = http::Request::get(format!("{}/version", cluster.url()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.request(request)
    };
    // The listener closes right away; a connection attempt during the window is refused.
    let mut refused = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        match get().await {
            Err(_) => refused = true,
            Ok(_) if refused => break,
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    assert!(refused, "connections were refused for a while");
    assert_eq!(get().await.expect("the port is back").status(), 200);
}

#[tokio::test]
async fn cut_logs_end_follow_streams_while_the_container_keeps_running() {
    let cluster = start().await;
    cluster.faults().cut_logs(LogCut::AfterLines(2));
    let client = kube_client(&cluster).await;
    let pods: Api<Pod> = Api::namespaced(client, "capture");
    let script = "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.2; done";
    create_job(&cluster, demo_job("ticks", script)).await;
    let name = pod_name_of(&cluster, "capture", "ticks").await;
    cluster
        .wait_for(Resource::Pods, "capture", &name, WAIT, |p| {
            p.is_some_and(|p| p["status"]["phase"] == "Running")
        })
        .await
        .unwrap();
    let lines = follow(&pods, &name, None).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let phase =
        cluster.get_json(Resource::Pods, "capture", &name).unwrap()["status"]["phase"].clone();
    assert_eq!(phase, "Running", "the container outlives the cut stream");
    // Reconnect with sinceTime = the last delivered timestamp: the rest arrives.
    cluster.faults().cut_logs(LogCut::Never);
    let last = lines[1]
        .split_once(' ')
        .unwrap()
        .0
        .parse::<jiff::Timestamp>()
        .unwrap();
    let rest = follow(&pods, &name, Some(last)).await;
    assert!(rest.last().unwrap().ends_with("tick-6"), "{rest:?}");
    assert_eq!(cluster.requests().get(Verb::Follow, "pods/log"), 2);
}

#[tokio::test]
async fn image_pull_failure_goes_to_backoff_and_the_job_has_no_condition() {
    let cluster = start_with(opencode_k8s_testkit::ClusterOptions {
        image_pull_backoff: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    cluster.faults().image_pull_fail("does-not-exist");
    let mut job = demo_job("imagepull", "echo never");
    job["spec"]["template"]["spec"]["containers"][0]["image"] =
        "docker.io/local/does-not-exist:1".into();
    create_job(&cluster, job).await;
    let name = pod_name_of(&cluster, "capture", "imagepull").await;
    cluster
        .wait_for(Resource::Pods, "capture", &name, WAIT, |p| {
            waiting_reason(p).as_deref() == Some("ImagePullBackOff")
        })
        .await
        .unwrap();
    let events = cluster.list_json(Resource::Events, Some("capture"));
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    for reason in ["Pulling", "Failed", "BackOff"] {
        assert!(reasons.contains(&reason), "{reason} in {reasons:?}");
    }
    assert!(events.iter().any(|e| e["message"] == "Error: ErrImagePull"));
    assert!(
        cluster
            .get_json(Resource::Jobs, "capture", "imagepull")
            .unwrap()["status"]["conditions"]
            .is_null()
    );
}

#[tokio::test]
async fn scripted_pods_get_oom_killed_or_exit_with_the_given_code() {
    let cluster = start().await;
    cluster.faults().oom_after("oom", "allocating\n");
    cluster.faults().exit_with("seven", "out-1\nout-2\n", 7);
    for name in ["oom", "seven"] {
        create_job(&cluster, demo_job(name, "echo not-this")).await;
    }
    let failed = job_condition(&cluster, "capture", "oom", "Failed").await;
    assert_eq!(
        failed["status"]["conditions"][1]["reason"],
        "BackoffLimitExceeded"
    );
    let pod = pod_of(&cluster, "capture", "oom").await;
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 137);
    assert_eq!(terminated["reason"], "OOMKilled");

    job_condition(&cluster, "capture", "seven", "Failed").await;
    let pod = pod_of(&cluster, "capture", "seven").await;
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        7
    );
    let name = pod["metadata"]["name"].as_str().unwrap();
    let log = pod_log(&cluster, name).await;
    assert_eq!(&log.body[..], b"out-1\nout-2\n");
}

#[tokio::test]
async fn latency_delays_every_request() {
    let cluster = start().await;
    cluster.faults().latency(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    get(&cluster, "/api/v1/namespaces/capture").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    cluster.faults().latency(Duration::ZERO);
}

#[tokio::test]
async fn control_endpoint_drives_the_same_faults_and_counters() {
    let cluster = start().await;
    let control = |path: &str, body: Value| {
        let cluster = &cluster;
        let path = format!("/_testkit/{path}");
        async move { post(cluster, &path, body).await }
    };
    assert_eq!(
        control(
            "faults/fail",
            json!({"verb": "get", "resource": "namespaces", "n": 1, "code": 500})
        )
        .await
        .code,
        200
    );
    let failed = get(&cluster, "/api/v1/namespaces/capture").await;
    assert_eq!(failed.code, 500);
    assert_eq!(failed.json()["reason"], "InternalError");
    let counts = get(&cluster, "/_testkit/requests").await.json();
    assert_eq!(counts["get namespaces"], 1);
    control("requests/reset", json!({})).await;
    assert_eq!(get(&cluster, "/_testkit/requests").await.json(), json!({}));

    control("users", json!({"token": "t", "name": "reader", "rules": [{"verbs": ["get"], "resources": ["namespaces"]}]})).await;
    assert_eq!(
        raw(
            &cluster,
            "GET",
            "/api/v1/namespaces/capture",
            Some("t"),
            "application/json",
            None
        )
        .await
        .code,
        200
    );
    assert_eq!(
        raw(
            &cluster,
            "GET",
            "/api/v1/namespaces",
            Some("t"),
            "application/json",
            None
        )
        .await
        .code,
        403
    );

    control(
        "faults/script",
        json!({"pods": "scripted", "output": "x\n", "outcome": {"exit": 4}}),
    )
    .await;
    control("faults/cut-logs", json!({"afterLines": 1})).await;
    control("faults/latency", json!({"ms": 0})).await;
    control("faults/close-watches", json!({})).await;
    create_job(&cluster, demo_job("scripted", "echo no")).await;
    job_condition(&cluster, "capture", "scripted", "Failed").await;
    let pod = pod_of(&cluster, "capture", "scripted").await;
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        4
    );
    control("faults/unschedulable", json!({"pods": "stuck"})).await;
    control("faults/image-pull", json!({"pattern": "nothing-matches"})).await;
    create_job(&cluster, demo_job("stuck", "echo no")).await;
    let stuck = pod_name_of(&cluster, "capture", "stuck").await;
    unschedulable_pod(&cluster, &stuck).await;
    assert_eq!(control("faults/clear", json!({})).await.code, 200);
    assert_eq!(
        control("faults/refuse-connections", json!({"ms": 1}))
            .await
            .code,
        200
    );
}
