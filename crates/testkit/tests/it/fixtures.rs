//! Raw HTTP against kube-sim compared with responses captured from kube-apiserver v1.36: the
//! same status codes and the same `Status` bodies or object shapes.

use opencode_k8s_testkit::{Cluster, Resource, Rule};
use serde_json::{Value, json};

use crate::{
    JOBS, create_job, delete, demo_job, fixture, fixture_code, get, job_condition, normalize,
    pod_of, post, raw, start, wait_gone,
};

const SECRETS: &str = "/api/v1/namespaces/capture/secrets";

fn assert_status_like(case: &str, got: &crate::Answer) {
    assert_eq!(got.code, fixture_code(case), "{case}: status code");
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/json"),
        "{case}: content type"
    );
    assert_eq!(
        got.json(),
        fixture(&format!("{case}.json")),
        "{case}: Status body"
    );
}

/// The first event with `reason` in an event list.
fn event<'a>(list: &'a Value, reason: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == reason)
}

/// The uid of an object's first owner.
fn owner_uid(object: &Value) -> String {
    object["metadata"]["ownerReferences"][0]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Creates the Job of fixture 02's request.
async fn create_demo_job(cluster: &Cluster) -> crate::Answer {
    create_job(cluster, demo_job("agent-opencode-demo-1", "echo hi")).await
}

#[tokio::test]
async fn not_found_and_conflict_match_upstream() {
    let cluster = start().await;
    let got = get(&cluster, "/api/v1/namespaces/does-not-exist").await;
    assert_status_like("01-get-namespace-missing", &got);

    let created = create_demo_job(&cluster).await;
    assert_eq!(created.code, fixture_code("02-create-job"));
    let again = create_demo_job(&cluster).await;
    assert_status_like("03-create-job-again-conflict", &again);

    let missing = get(&cluster, &format!("{JOBS}/nope")).await;
    assert_status_like("08-get-job-missing", &missing);
    let gone = delete(&cluster, &format!("{JOBS}/agent-opencode-demo-5"), None).await;
    assert_status_like("30-delete-job-missing", &gone);
}

#[tokio::test]
async fn created_job_has_the_defaults_a_real_server_fills_in() {
    let cluster = start().await;
    cluster.faults().unschedulable("*");
    let created = create_demo_job(&cluster).await;
    assert_eq!(created.code, 201);
    let ours = created.json();
    let theirs = fixture("02-create-job.json");
    let uid = ours["metadata"]["uid"].as_str().unwrap().to_owned();
    let their_uid = theirs["metadata"]["uid"].as_str().unwrap();
    assert_eq!(normalize(&ours, &uid), normalize(&theirs, their_uid));

    let listed = get(
        &cluster,
        &format!("{JOBS}?labelSelector=paperclip.io%2Fagent-id%3Da1"),
    )
    .await;
    assert_eq!(listed.code, fixture_code("09-list-jobs-by-label"));
    let list = listed.json();
    let their_list = fixture("09-list-jobs-by-label.json");
    assert_eq!(list["kind"], their_list["kind"]);
    assert_eq!(list["apiVersion"], their_list["apiVersion"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        list["items"][0].get("kind").is_none(),
        "list items carry no kind, like upstream"
    );
    let none = get(
        &cluster,
        &format!("{JOBS}?labelSelector=paperclip.io%2Fagent-id%3Dother"),
    )
    .await;
    assert!(none.json()["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn validation_errors_match_upstream_word_for_word() {
    let cluster = start().await;
    let bad_name = create_job(&cluster, demo_job("Agent_Bad_Name", "echo hi")).await;
    assert_status_like("04-create-job-invalid-name", &bad_name);

    let mut bad_label = demo_job("agent-opencode-demo-2", "echo hi");
    bad_label["metadata"]["labels"]["paperclip.io/agent-id"] =
        json!(format!("{}/bad", "X".repeat(70)));
    let got = create_job(&cluster, bad_label).await;
    assert_status_like("05-create-job-invalid-label", &got);

    let mut bad_quantity = demo_job("agent-opencode-demo-3", "echo hi");
    bad_quantity["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"memory": "2Gb"}});
    let got = create_job(&cluster, bad_quantity).await;
    assert_status_like("06-create-job-invalid-quantity", &got);

    let mut over = demo_job("agent-opencode-demo-4", "echo hi");
    over["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "4"}, "limits": {"cpu": "1"}});
    let got = create_job(&cluster, over).await;
    assert_status_like("07-create-job-limit-below-request", &got);
    assert!(
        cluster
            .list_json(Resource::Jobs, Some("capture"))
            .is_empty(),
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn authentication_and_authorization_answer_like_rbac() {
    let cluster = start().await;
    cluster.create_namespace("jobs-test").unwrap();
    cluster.add_user(
        "limited",
        "limited-user",
        vec![
            Rule::allow(
                &["create", "get", "list", "watch", "delete"],
                "batch",
                &["jobs"],
                Some("jobs-test"),
            ),
            Rule::allow(
                &["get", "list", "watch"],
                "",
                &["pods", "pods/log", "events"],
                Some("jobs-test"),
            ),
        ],
    );
    let denied = raw(
        &cluster,
        "POST",
        "/api/v1/namespaces/jobs-test/secrets",
        Some("limited"),
        "application/json",
        Some(json!({"metadata": {"name": "s"}})),
    )
    .await;
    assert_status_like("15-forbidden-create-secret", &denied);

    let bad_token = raw(
        &cluster,
        "GET",
        "/api/v1/namespaces/jobs-test/pods",
        Some("nope"),
        "application/json",
        None,
    )
    .await;
    assert_status_like("16-unauthorized-bad-token", &bad_token);

    let ssar = |verb: &str, group: Option<&str>, resource: &str| {
        let mut attrs = json!({"namespace": "jobs-test", "verb": verb, "resource": resource});
        if let Some(g) = group {
            attrs["group"] = json!(g);
        }
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": attrs}})
    };
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let allowed = raw(
        &cluster,
        "POST",
        path,
        Some("limited"),
        "application/json",
        Some(ssar("create", Some("batch"), "jobs")),
    )
    .await;
    let theirs = fixture("13-ssar-allowed.json");
    assert_eq!(allowed.code, fixture_code("13-ssar-allowed"));
    let ours = allowed.json();
    assert_eq!(ours["kind"], theirs["kind"]);
    assert_eq!(ours["spec"], theirs["spec"]);
    assert_eq!(ours["status"]["allowed"], true);
    assert!(
        ours["status"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("RBAC: allowed by RoleBinding")
    );

    let denied = raw(
        &cluster,
        "POST",
        path,
        Some("limited"),
        "application/json",
        Some(ssar("create", None, "secrets")),
    )
    .await;
    let theirs = fixture("14-ssar-denied.json");
    assert_eq!(denied.code, fixture_code("14-ssar-denied"));
    assert_eq!(denied.json()["spec"], theirs["spec"]);
    assert_eq!(denied.json()["status"], theirs["status"]);
}

#[tokio::test]
async fn secrets_fold_string_data_and_take_owner_references_by_merge_patch_only() {
    let cluster = start().await;
    let job = create_demo_job(&cluster).await.json();
    let job_uid = job["metadata"]["uid"].as_str().unwrap().to_owned();
    let created = post(
        &cluster,
        SECRETS,
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "agent-opencode-demo-1-run"},
            "stringData": {"PAPERCLIP_API_KEY": "tok", "prompt": "hello"},
        }),
    )
    .await;
    assert_eq!(created.code, fixture_code("17-create-secret"));
    let ours = created.json();
    let theirs = fixture("17-create-secret.json");
    assert_eq!(normalize(&ours, ""), normalize(&theirs, ""));

    let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "agent-opencode-demo-1",
        "uid": job_uid, "controller": true, "blockOwnerDeletion": false}]}});
    let path = format!("{SECRETS}/agent-opencode-demo-1-run");
    let wrong = raw(
        &cluster,
        "PATCH",
        &path,
        None,
        "application/json",
        Some(owner.clone()),
    )
    .await;
    assert_status_like("19-patch-secret-wrong-content-type", &wrong);
    let patched = raw(
        &cluster,
        "PATCH",
        &path,
        None,
        "application/merge-patch+json",
        Some(owner),
    )
    .await;
    assert_eq!(patched.code, fixture_code("18-merge-patch-secret-owner"));
    let theirs = fixture("18-merge-patch-secret-owner.json");
    let their_uid = owner_uid(&theirs);
    assert_eq!(
        normalize(&patched.json(), &job_uid),
        normalize(&theirs, &their_uid)
    );

    let deleted = delete(
        &cluster,
        &format!("{JOBS}/agent-opencode-demo-1?propagationPolicy=Background"),
        None,
    )
    .await;
    assert_eq!(deleted.code, fixture_code("29-delete-job-background"));
    let status = deleted.json();
    assert_eq!(status["status"], "Success");
    assert_eq!(status["details"]["uid"], json!(job_uid));
    wait_gone(
        &cluster,
        Resource::Secrets,
        "capture",
        "agent-opencode-demo-1-run",
    )
    .await;
    let after = get(&cluster, &path).await;
    assert_status_like("28-get-secret-after-owner-deleted", &after);
}

#[tokio::test]
async fn foreground_delete_returns_the_marked_job_then_removes_it() {
    let cluster = start().await;
    cluster.faults().unschedulable("*");
    create_demo_job(&cluster).await;
    pod_of(&cluster, "capture", "agent-opencode-demo-1").await;
    let deleted = delete(
        &cluster,
        &format!("{JOBS}/agent-opencode-demo-1"),
        Some(
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}),
        ),
    )
    .await;
    assert_eq!(deleted.code, fixture_code("27-delete-job-foreground"));
    let ours = deleted.json();
    let theirs = fixture("27-delete-job-foreground.json");
    for field in ["finalizers", "deletionGracePeriodSeconds", "generation"] {
        assert_eq!(
            ours["metadata"][field], theirs["metadata"][field],
            "{field}"
        );
    }
    assert!(ours["metadata"]["deletionTimestamp"].is_string());
    wait_gone(&cluster, Resource::Jobs, "capture", "agent-opencode-demo-1").await;
    assert!(
        cluster
            .list_json(Resource::Pods, Some("capture"))
            .is_empty(),
        "dependents went first"
    );
}

#[tokio::test]
async fn pods_of_a_job_look_like_the_job_controllers() {
    let cluster = start().await;
    cluster.faults().unschedulable("*");
    create_demo_job(&cluster).await;
    let pod = pod_of(&cluster, "capture", "agent-opencode-demo-1").await;
    let listed = get(
        &cluster,
        "/api/v1/namespaces/capture/pods?labelSelector=job-name%3Dagent-opencode-demo-1",
    )
    .await;
    assert_eq!(listed.code, fixture_code("10-list-pods-of-job"));
    assert_eq!(listed.code, fixture_code("26-get-pod-unschedulable"));
    let ours = &listed.json()["items"][0];
    let theirs = &fixture("10-list-pods-of-job.json")["items"][0];
    let name = ours["metadata"]["name"].as_str().unwrap();
    assert_eq!(name, pod["metadata"]["name"]);
    assert!(
        name.starts_with("agent-opencode-demo-1-")
            && name.len() == "agent-opencode-demo-1-".len() + 5
    );
    let job_uid = owner_uid(ours);
    let their_job_uid = owner_uid(theirs);
    for field in ["labels", "ownerReferences", "generateName", "generation"] {
        assert_eq!(
            normalize(&ours["metadata"][field], &job_uid),
            normalize(&theirs["metadata"][field], &their_job_uid),
            "{field}"
        );
    }
    let strip_mounts = |spec: &Value| {
        let mut spec = spec.clone();
        spec.as_object_mut().unwrap().remove("volumes");
        spec["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("volumeMounts");
        spec
    };
    assert_eq!(strip_mounts(&ours["spec"]), strip_mounts(&theirs["spec"]));
    let theirs_status = normalize(
        &fixture("26-get-pod-unschedulable.json")["items"][0]["status"],
        "",
    );
    let ours_status = normalize(&ours["status"], "");
    assert_eq!(ours_status["phase"], theirs_status["phase"]);
    assert_eq!(ours_status["qosClass"], theirs_status["qosClass"]);
    assert_eq!(
        ours_status["conditions"][0]["reason"],
        theirs_status["conditions"][0]["reason"]
    );
    assert_eq!(ours_status["conditions"][0]["type"], "PodScheduled");

    let log = get(&cluster, &format!("/api/v1/namespaces/capture/pods/{name}/log?container=opencode&follow=true&timestamps=true")).await;
    assert_eq!(log.code, fixture_code("12-pod-log-pending"));
    assert!(log.body.is_empty());
    let bad = get(
        &cluster,
        &format!("/api/v1/namespaces/capture/pods/{name}/log?container=nope"),
    )
    .await;
    assert_eq!(bad.code, 400);
    assert_eq!(
        bad.json()["message"],
        format!("container nope is not valid for pod {name}")
    );

    let events = get(&cluster, "/api/v1/namespaces/capture/events").await;
    assert_eq!(events.code, fixture_code("11-list-events"));
    let events = events.json();
    let theirs = fixture("11-list-events.json");
    let reasons = |list: &Value| -> Vec<String> {
        let mut r: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_owned())
            .collect();
        r.sort();
        r.dedup();
        r
    };
    assert_eq!(reasons(&events), reasons(&theirs));
    let created = event(&events, "SuccessfulCreate").unwrap();
    let their_created = event(&theirs, "SuccessfulCreate").unwrap();
    for field in ["source", "type", "count", "reportingComponent", "eventTime"] {
        assert_eq!(created[field], their_created[field], "{field}");
    }
    assert_eq!(created["message"], format!("Created pod: {name}"));
}

#[tokio::test]
async fn deadline_exceeded_writes_failure_target_then_failed() {
    let cluster = start().await;
    let mut job = demo_job("agent-opencode-demo-5", "sleep 30");
    job["spec"]["activeDeadlineSeconds"] = json!(1);
    job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(1);
    let created = create_job(&cluster, job).await;
    assert_eq!(created.code, fixture_code("20-create-job-deadline"));
    job_condition(&cluster, "capture", "agent-opencode-demo-5", "Failed").await;
    let got = get(&cluster, &format!("{JOBS}/agent-opencode-demo-5")).await;
    assert_eq!(got.code, fixture_code("24-get-job-deadline-exceeded"));
    let ours = got.json();
    let theirs = fixture("24-get-job-deadline-exceeded.json");
    let strip = |v: &Value| normalize(&v["status"]["conditions"], "");
    assert_eq!(strip(&ours), strip(&theirs));
    assert_eq!(ours["status"]["failed"], theirs["status"]["failed"]);
    let listed = get(&cluster, "/api/v1/namespaces/capture/events").await;
    assert_eq!(listed.code, fixture_code("25-list-events-after-deadline"));
    let events = listed.json();
    let theirs = fixture("25-list-events-after-deadline.json");
    for reason in ["DeadlineExceeded", "SuccessfulDelete", "SuccessfulCreate"] {
        let ours = event(&events, reason).unwrap_or_else(|| panic!("event {reason}"));
        let their = event(&theirs, reason).unwrap();
        assert_eq!(ours["type"], their["type"], "{reason}");
        assert_eq!(ours["source"], their["source"], "{reason}");
        if reason == "DeadlineExceeded" {
            assert_eq!(ours["message"], their["message"]);
        }
    }
}
