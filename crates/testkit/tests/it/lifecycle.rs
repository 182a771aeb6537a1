//! The scheduler + kubelet + Job controller path: pod status transitions as v1.36 writes them,
//! env and volume resolution, config errors, and the seeded Paperclip pod.

use std::time::Duration;

use opencode_k8s_testkit::Resource;
use serde_json::{Value, json};

use crate::{
    WAIT, create_job, delete, demo_job, get, job_condition, pod_log, pod_name_of, pod_of, raw,
    start, unschedulable_pod, waiting_reason,
};

#[tokio::test]
async fn pod_watch_shows_terminated_while_running_then_succeeded() {
    let cluster = start().await;
    // Watching from the list's resourceVersion replays every change after it: no race.
    let list = get(&cluster, "/api/v1/namespaces/capture/pods")
        .await
        .json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    create_job(&cluster, demo_job("lifecycle", "echo hello")).await;
    job_condition(&cluster, "capture", "lifecycle", "Complete").await;
    let path = format!(
        "/api/v1/namespaces/capture/pods?watch=true&labelSelector=job-name%3Dlifecycle&resourceVersion={rv}&timeoutSeconds=1"
    );
    let text = get(&cluster, &path).await.text();
    let states: Vec<(String, String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| {
            let pod = &e["object"];
            let state = pod["status"]["containerStatuses"][0]["state"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            (
                e["type"].as_str().unwrap().to_owned(),
                pod["status"]["phase"].as_str().unwrap().to_owned(),
                state,
            )
        })
        .collect();
    let position = |phase: &str, state: &str| {
        states
            .iter()
            .position(|(_, p, s)| p == phase && s == state)
            .unwrap_or_else(|| panic!("{phase}/{state} in {states:?}"))
    };
    let creating = position("Pending", "waiting");
    let running = position("Running", "running");
    let terminated_running = position("Running", "terminated");
    let succeeded = position("Succeeded", "terminated");
    assert!(
        creating < running && running < terminated_running && terminated_running < succeeded,
        "{states:?}"
    );
    assert_eq!(states[0].0, "ADDED");

    let pod = pod_of(&cluster, "capture", "lifecycle").await;
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0);
    assert_eq!(terminated["reason"], "Completed");
    let events = cluster.list_json(Resource::Events, Some("capture"));
    for reason in [
        "SuccessfulCreate",
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
        "Completed",
    ] {
        assert!(
            events.iter().any(|e| e["reason"] == reason),
            "event {reason}"
        );
    }
}

#[tokio::test]
async fn env_secrets_volumes_and_working_dir_reach_the_process() {
    let cluster = start().await;
    cluster.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "run", "namespace": "capture"},
        "stringData": {"prompt": "hello prompt", "TOKEN": "t0k"}})).unwrap();
    cluster.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "capture"},
        "data": {"mode": "fast"}})).unwrap();
    cluster.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "capture"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    let mut job = demo_job(
        "env",
        "echo \"$GREETING|$TOKEN|$MODE|$POD|$FROM_ENV_TOKEN\"; cat /run/secret/prompt; echo; pwd; echo written > /work/out.txt; ls /scratch",
    );
    job["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "value": "hi-$(MODE_PRE)"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "run", "key": "TOKEN"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}}},
    ]);
    job["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"secretRef": {"name": "run"}, "prefix": "FROM_ENV_"}]);
    job["spec"]["template"]["spec"]["containers"][0]["workingDir"] = "/work".into();
    job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "secret", "mountPath": "/run/secret", "readOnly": true},
        {"name": "data", "mountPath": "/work"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]);
    job["spec"]["template"]["spec"]["volumes"] = json!([
        {"name": "secret", "secret": {"secretName": "run", "defaultMode": 256}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "scratch", "emptyDir": {}},
    ]);
    create_job(&cluster, job).await;
    job_condition(&cluster, "capture", "env", "Complete").await;
    let name = pod_name_of(&cluster, "capture", "env").await;
    let text = pod_log(&cluster, &name).await.text();
    assert_eq!(
        text,
        "hi-$(MODE_PRE)|t0k|fast|env|t0k\nhello prompt\n/work\n"
    );
    let written =
        std::fs::read_to_string(cluster.pvc_path("capture", "data").join("out.txt")).unwrap();
    assert_eq!(written, "written\n", "the PVC's directory backs the mount");
}

#[tokio::test]
async fn missing_secret_is_a_create_container_config_error_and_the_job_has_no_condition() {
    let cluster = start().await;
    let mut job = demo_job("cfgerr", "echo never");
    job["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing-secret", "key": "k"}}}]);
    create_job(&cluster, job).await;
    let name = pod_name_of(&cluster, "capture", "cfgerr").await;
    let pod = cluster
        .wait_for(Resource::Pods, "capture", &name, WAIT, |p| {
            waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
        })
        .await
        .unwrap()
        .unwrap();
    let theirs = crate::fixture("35-pods-cfgerr.json");
    let their_state = &theirs["items"][0]["status"]["containerStatuses"][0]["state"];
    assert_eq!(pod["status"]["containerStatuses"][0]["state"], *their_state);
    assert_eq!(pod["status"]["phase"], "Pending");
    let job = cluster
        .get_json(Resource::Jobs, "capture", "cfgerr")
        .unwrap();
    assert!(
        job["status"]["conditions"].is_null(),
        "no Job condition, like fixture 34-job-cfgerr"
    );
    let log = pod_log(&cluster, &name).await;
    assert_eq!(log.code, 400);
    assert!(
        log.json()["message"]
            .as_str()
            .unwrap()
            .contains("is waiting to start: CreateContainerConfigError")
    );
}

#[tokio::test]
async fn missing_pvc_keeps_the_pod_pending_with_failed_scheduling() {
    let cluster = start().await;
    let mut job = demo_job("nopvc", "echo never");
    job["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "d", "persistentVolumeClaim": {"claimName": "absent"}}]);
    create_job(&cluster, job).await;
    let name = pod_name_of(&cluster, "capture", "nopvc").await;
    let pod = unschedulable_pod(&cluster, &name).await;
    assert!(
        pod["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("persistentvolumeclaim \"absent\" not found")
    );
}

#[tokio::test]
async fn seeded_paperclip_pod_runs_with_its_volume() {
    let cluster = start().await;
    let seed = cluster.seed_paperclip_pod("paperclip").unwrap();
    let pod = cluster
        .wait_for(Resource::Pods, "paperclip", &seed.pod, WAIT, |p| {
            p.is_some_and(|p| p["status"]["phase"] == "Running")
        })
        .await
        .unwrap()
        .unwrap();
    let mounts = &pod["spec"]["containers"][0]["volumeMounts"];
    assert_eq!(mounts[0]["mountPath"], "/paperclip");
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        seed.pvc
    );
    assert!(
        cluster
            .get_json(Resource::PersistentVolumeClaims, "paperclip", &seed.pvc)
            .unwrap()["spec"]["accessModes"][0]
            == "ReadWriteMany"
    );
    assert!(cluster.pvc_path("paperclip", &seed.pvc).is_dir());
    let deleted = delete(
        &cluster,
        "/api/v1/namespaces/paperclip/pods/paperclip",
        Some(json!({"gracePeriodSeconds": 1})),
    )
    .await;
    assert_eq!(deleted.code, 200);
    assert!(
        deleted.json()["metadata"]["deletionTimestamp"].is_string(),
        "a running pod is deleted gracefully"
    );
    cluster
        .wait_for(
            Resource::Pods,
            "paperclip",
            "paperclip",
            Duration::from_secs(10),
            |p| p.is_none(),
        )
        .await
        .unwrap();
    let events = cluster.list_json(Resource::Events, Some("paperclip"));
    assert!(events.iter().any(|e| e["reason"] == "Killing"));
}

#[tokio::test]
async fn stdin_is_closed_and_run_as_user_is_honoured_as_root() {
    let cluster = start().await;
    let mut job = demo_job("ids", "cat; id -u");
    job["spec"]["template"]["spec"]["securityContext"] =
        json!({"runAsUser": 65534, "runAsGroup": 65534});
    create_job(&cluster, job).await;
    job_condition(&cluster, "capture", "ids", "Complete").await;
    let name = pod_name_of(&cluster, "capture", "ids").await;
    let uid = pod_log(&cluster, &name).await.text();
    // `cat` returned at once: stdin is /dev/null unless the container asks for stdin.
    if nix::unistd::Uid::effective().is_root() {
        assert_eq!(
            uid, "65534\n",
            "runAsUser applies when kube-sim runs as root"
        );
    } else {
        assert_eq!(uid, format!("{}\n", nix::unistd::Uid::effective()));
    }
}

#[tokio::test]
async fn log_options_select_lines_like_the_kubelet() {
    let cluster = start().await;
    // stdout only: the order of stdout versus stderr lines is up to the scheduler, as it is in a
    // real kubelet reading two pipes.
    let script = "for i in 1 2 3 4 5; do echo line-$i; done; printf partial-no-newline";
    create_job(&cluster, demo_job("opts", script)).await;
    job_condition(&cluster, "capture", "opts", "Complete").await;
    let name = pod_name_of(&cluster, "capture", "opts").await;
    let get = |query: &str| {
        let path = format!("/api/v1/namespaces/capture/pods/{name}/log?container=opencode&{query}");
        let cluster = &cluster;
        async move { crate::get(cluster, &path).await.text() }
    };
    let all = get("timestamps=true").await;
    let lines: Vec<&str> = all.split('\n').collect();
    assert_eq!(lines.len(), 6, "{all:?}");
    assert!(
        lines[5].ends_with(" partial-no-newline"),
        "the last line keeps having no newline"
    );
    let their_first = std::fs::read_to_string(format!(
        "{}/../../fixtures/kube/31-log-follow-timestamps.raw",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let their_stamp = their_first.split_once(' ').unwrap().0;
    assert_eq!(
        lines[0].split_once(' ').unwrap().0.len(),
        their_stamp.len(),
        "same RFC3339Nano width as the kubelet"
    );
    assert_eq!(get("tailLines=2").await, "line-5\npartial-no-newline");
    assert_eq!(get("limitBytes=20").await, "line-1\nline-2\n");
    let since = get("sinceSeconds=3600").await;
    assert!(since.starts_with("line-1\n"));
}

#[tokio::test]
async fn a_seed_file_creates_users_namespaces_and_objects() {
    let cluster = start().await;
    let seed = opencode_k8s_testkit::parse_seed(
        "namespaces: [jobs-test]\nobjects:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s, namespace: jobs-test}\n  stringData: {k: v}\nusers:\n- token: limited\n  name: limited-user\n  rules:\n  - verbs: [get]\n    resources: [secrets]\n    namespace: jobs-test\n",
    )
    .unwrap();
    cluster.apply_seed(&seed).unwrap();
    let got = raw(
        &cluster,
        "GET",
        "/api/v1/namespaces/jobs-test/secrets/s",
        Some("limited"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(got.code, 200);
    assert_eq!(got.json()["data"]["k"], "dg==");
    let denied = raw(
        &cluster,
        "DELETE",
        "/api/v1/namespaces/jobs-test/secrets/s",
        Some("limited"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(denied.code, 403);
}
