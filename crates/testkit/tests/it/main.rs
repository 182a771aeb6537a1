//! Integration tests of kube-sim: kube-rs clients unmodified against it, raw HTTP compared with
//! responses captured from a real kube-apiserver v1.36, controllers, and fault injection.

mod faults;
mod fixtures;
mod kube_client;
mod lifecycle;
mod llm;
mod scale;
mod semantics;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opencode_k8s_testkit::{Cluster, ClusterOptions, Resource};
use serde_json::{Value, json};

/// A bound for every wait on state.
pub const WAIT: Duration = Duration::from_secs(20);

/// Starts a cluster with namespace `capture` (the fixtures' namespace).
pub async fn start() -> Cluster {
    start_with(ClusterOptions::default()).await
}

/// Starts a cluster with options and namespace `capture`.
pub async fn start_with(options: ClusterOptions) -> Cluster {
    let cluster = Cluster::start(options).await.expect("cluster starts");
    cluster.create_namespace("capture").expect("namespace");
    cluster
}

/// A kube-rs client from the cluster's kubeconfig, exactly as a user would build one.
pub async fn kube_client(cluster: &Cluster) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cluster.kubeconfig_path()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

/// Sends one raw request (admin token unless `token` says otherwise).
pub async fn raw(
    cluster: &Cluster,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Option<Value>,
) -> Answer {
    let token = token.unwrap_or(cluster.admin_token());
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", cluster.url()))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(request).await
}

/// Sends one HTTP request on a fresh client and collects the whole answer.
pub async fn send(request: http::Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.expect("request sent");
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        code,
        content_type,
        body,
    }
}

/// The Jobs of namespace `capture`.
pub const JOBS: &str = "/apis/batch/v1/namespaces/capture/jobs";

/// `GET path` as the admin.
pub async fn get(cluster: &Cluster, path: &str) -> Answer {
    raw(cluster, "GET", path, None, "application/json", None).await
}

/// `POST path` with a JSON body, as the admin.
pub async fn post(cluster: &Cluster, path: &str, body: Value) -> Answer {
    raw(cluster, "POST", path, None, "application/json", Some(body)).await
}

/// `DELETE path`, with delete options as the body if given, as the admin.
pub async fn delete(cluster: &Cluster, path: &str, options: Option<Value>) -> Answer {
    raw(cluster, "DELETE", path, None, "application/json", options).await
}

/// Creates a Job in `capture` through the API.
pub async fn create_job(cluster: &Cluster, job: Value) -> Answer {
    post(cluster, JOBS, job).await
}

/// The whole log of a pod in `capture`.
pub async fn pod_log(cluster: &Cluster, pod: &str) -> Answer {
    get(
        cluster,
        &format!("/api/v1/namespaces/capture/pods/{pod}/log"),
    )
    .await
}

/// A captured response body from `fixtures/kube/`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/../../fixtures/kube/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The status code of a captured request (`NAME.request` starts with it).
pub fn fixture_code(name: &str) -> u16 {
    let path = format!(
        "{}/../../fixtures/kube/{name}.request",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Drops fields that differ between any two servers (uids, versions, times, managedFields) and
/// replaces `uid` wherever it appears, so shapes can be compared.
pub fn normalize(value: &Value, uid: &str) -> Value {
    const VOLATILE: [&str; 9] = [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "startTime",
        "lastProbeTime",
        "lastTransitionTime",
        "completionTime",
        "deletionTimestamp",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), normalize(v, uid)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| normalize(v, uid)).collect()),
        Value::String(s) if s == uid => json!("<uid>"),
        other => other.clone(),
    }
}

/// The body of fixture 02's request: the Job the captures were made with.
pub fn demo_job(name: &str, command: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "paperclip", "paperclip.io/agent-id": "a1"}},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 300,
            "template": {
                "metadata": {"labels": {"paperclip.io/agent-id": "a1"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "opencode", "image": "busybox:1.36", "command": ["sh", "-c", command]}],
                },
            },
        },
    })
}

/// The single pod of a Job, once the Job controller made it (it counts the pod as active
/// right after creating it).
pub async fn pod_of(cluster: &Cluster, ns: &str, job: &str) -> Value {
    cluster
        .wait_for(Resource::Jobs, ns, job, WAIT, |j| {
            j.is_some_and(|j| {
                let s = &j["status"];
                s["active"].as_i64().unwrap_or(0) > 0
                    || s["failed"].is_number()
                    || s["succeeded"].is_number()
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cluster
        .list_json(Resource::Pods, Some(ns))
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == job)
        .unwrap_or_else(|| panic!("no pod for job {job}"))
}

/// The name of the single pod of a Job, once the Job controller made it.
pub async fn pod_name_of(cluster: &Cluster, ns: &str, job: &str) -> String {
    let pod = pod_of(cluster, ns, job).await;
    pod["metadata"]["name"].as_str().unwrap().to_owned()
}

/// Waits until an object is gone.
pub async fn wait_gone(cluster: &Cluster, resource: Resource, ns: &str, name: &str) {
    cluster
        .wait_for(resource, ns, name, WAIT, |o| o.is_none())
        .await
        .unwrap();
}

/// Waits until the scheduler marked a pod in `capture` unschedulable, and returns the pod.
pub async fn unschedulable_pod(cluster: &Cluster, name: &str) -> Value {
    cluster
        .wait_for(Resource::Pods, "capture", name, WAIT, |p| {
            p.is_some_and(|p| p["status"]["conditions"][0]["reason"] == "Unschedulable")
        })
        .await
        .unwrap()
        .unwrap()
}

/// The reason the first container of a pod is waiting, if it is.
pub fn waiting_reason(pod: Option<&Value>) -> Option<String> {
    pod?["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until a Job has a `type` condition with status True.
pub async fn job_condition(cluster: &Cluster, ns: &str, job: &str, kind: &str) -> Value {
    cluster
        .wait_for(Resource::Jobs, ns, job, WAIT, |j| {
            j.is_some_and(|j| {
                j["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == kind && c["status"] == "True")
                })
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("job exists")
}
