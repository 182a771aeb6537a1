//! `opencode-k8s logs RUN_ID`: a run's output, found by its run-id label, from every attempt's
//! pod in order; `--follow` keeps streaming the last attempt until its container ends.

use std::io::Write;
use std::time::Duration;

use futures::AsyncReadExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, LogParams};
use kube::runtime::wait::await_condition;
use opencode_k8s_core::lifecycle::{ApiError, follow_pod_output};
use opencode_k8s_core::manifest::{ATTEMPT_ANNOTATION, CONTAINER_NAME, run_selector};
use tokio_util::sync::CancellationToken;

use crate::CommandError;
use crate::cluster::ClusterArgs;
use crate::run::Printer;

/// How long `--follow` waits for a pending pod to start.
const START_WAIT: Duration = Duration::from_secs(600);
/// Label the Job controller puts on a Job's pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Options of `logs`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  opencode-k8s logs 7f1c2d9e-3b4a-4c5d-8e6f-0a1b2c3d4e5f -n paperclip
  opencode-k8s logs cli-1764255600-000000000-4242 --follow

A run's Job (and its pod, and so its log) is deleted once its result is read, unless the agent
config sets `retainJobs`; Paperclip's run log keeps the output either way.")]
pub(crate) struct Args {
    /// The Paperclip run id (the `opencode-k8s.dev/run-id` label of its Job).
    run_id: String,
    /// Keep streaming until the container ends.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn attempt(job: &Job) -> u32 {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ATTEMPT_ANNOTATION))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

#[expect(
    clippy::print_stderr,
    reason = "attempt headers go apart from the output"
)]
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    // Ctrl-C stops following; the Job goes on.
    let cancel = CancellationToken::new();
    if args.follow {
        crate::cancel_on_ctrl_c(cancel.clone());
    }
    let params = ListParams::default().labels(&run_selector(&args.run_id));
    let mut listed = jobs
        .list(&params)
        .await
        .map_err(|e| ApiError::new(format!("list the Jobs of run {}", args.run_id), e))?
        .items;
    if listed.is_empty() {
        return Err(CommandError::NoSuchRun {
            run_id: args.run_id.clone(),
            namespace,
        }
        .into());
    }
    listed.sort_by_key(attempt);
    let last = listed.len() - 1;
    for (i, job) in listed.iter().enumerate() {
        let name = job.metadata.name.clone().unwrap_or_default();
        if listed.len() > 1 {
            eprintln!(
                "[opencode-k8s] Job {namespace}/{name} (attempt {})",
                attempt(job)
            );
        }
        let selector = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={name}"));
        let found = pods
            .list(&selector)
            .await
            .map_err(|e| ApiError::new(format!("list the pods of Job {namespace}/{name}"), e))?;
        let Some(pod) = found
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .next()
        else {
            eprintln!("[opencode-k8s] Job {namespace}/{name} has no pod (yet, or any more)");
            continue;
        };
        if args.follow && i == last {
            wait_for_start(&pods, &pod).await?;
            // The engine's own follower: reconnects when the kubelet or the network drops the
            // stream, without losing or repeating a line.
            follow_pod_output(&client, &namespace, &pod, &Printer::plain(), &cancel).await?;
        } else {
            print_log(&pods, &pod).await?;
        }
    }
    Ok(())
}

/// The container has started (or already ended): its log can be followed.
fn started(pod: Option<&Pod>) -> bool {
    let Some(pod) = pod else {
        // Gone: reading the log says so.
        return true;
    };
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.name == CONTAINER_NAME)
        .any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
}

/// Following a pod that has not started yet fails (`container ... is waiting to start`): wait
/// for it, watching rather than polling, for at most [`START_WAIT`].
#[expect(clippy::print_stderr, reason = "a note while nothing else is printed")]
async fn wait_for_start(pods: &Api<Pod>, pod: &str) -> anyhow::Result<()> {
    let current = pods
        .get_opt(pod)
        .await
        .map_err(|e| ApiError::new(format!("get pod {pod}"), e))?;
    if started(current.as_ref()) {
        return Ok(());
    }
    eprintln!("[opencode-k8s] waiting for pod {pod} to start");
    match tokio::time::timeout(
        START_WAIT,
        await_condition(pods.clone(), pod, |p: Option<&Pod>| started(p)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(anyhow::Error::new(err).context(format!("failed to watch pod {pod}"))),
        Err(_) => Err(CommandError::PodNotStarted {
            pod: pod.to_owned(),
            waited: START_WAIT,
        }
        .into()),
    }
}

/// Copy one pod's log to stdout, bytes as they are (a last line without a newline stays without
/// one).
async fn print_log(pods: &Api<Pod>, pod: &str) -> anyhow::Result<()> {
    let params = LogParams {
        container: Some(CONTAINER_NAME.to_owned()),
        ..LogParams::default()
    };
    let mut stream = pods
        .log_stream(pod, &params)
        .await
        .map_err(|e| ApiError::new(format!("read the log of pod {pod}"), e))?;
    let mut buf = vec![0; 16 * 1024];
    let mut out = std::io::stdout();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}
