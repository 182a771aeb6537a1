//! Many Jobs at once, as the benchmark drives it: every Job completes and its whole output is
//! served, and the API work stays bounded per Job.

use opencode_k8s_testkit::{Resource, Verb};

use crate::{WAIT, create_job, demo_job, get, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_jobs_complete_with_all_their_output() {
    let cluster = start().await;
    let started = tokio::time::Instant::now();
    let creates = (0..200).map(|i| {
        let cluster = &cluster;
        async move {
            let job = demo_job(&format!("load-{i}"), "seq 1 100");
            assert_eq!(create_job(cluster, job).await.code, 201);
        }
    });
    futures::future::join_all(creates).await;
    for i in 0..200 {
        crate::job_condition(&cluster, "capture", &format!("load-{i}"), "Complete").await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed < WAIT, "200 jobs took {elapsed:?}");
    let pods = cluster.list_json(Resource::Pods, Some("capture"));
    assert_eq!(pods.len(), 200);
    let name = pods[123]["metadata"]["name"].as_str().unwrap();
    let log = get(
        &cluster,
        &format!("/api/v1/namespaces/capture/pods/{name}/log?tailLines=1"),
    )
    .await;
    assert_eq!(&log.body[..], b"100\n");
    assert_eq!(cluster.requests().get(Verb::Create, "jobs"), 200);
}
