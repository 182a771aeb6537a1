//! `opencode-k8s`: the operator's command line over the engine.
//!
//! One module per subcommand; each returns `anyhow::Result` and this file maps failures to the
//! stable error code and exit status ([`exit_status`], the table in `--help`). What several
//! subcommands share is declared once: flags in `cluster` (`--kubeconfig`/`-n`, `--pod`/
//! `--no-inherit`) and `request` (what one run is), printing in `output`, logging in
//! `diagnostics`. `demo` embeds the simulated cluster and exists only with the default `demo`
//! feature; the operator build (`--no-default-features`) has no test double in it.

mod cluster;
#[cfg(feature = "demo")]
mod demo;
mod diagnostics;
mod doctor;
mod gc;
mod jobs;
mod logs;
mod output;
mod rbac;
mod render;
mod request;
mod run;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use opencode_k8s_core::config::ConfigError;
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::lifecycle::{ApiError, ClusterError, GcError, RunError};
use opencode_k8s_core::manifest::ManifestError;
use tokio_util::sync::CancellationToken;

/// Exit statuses, as `--help` shows them. [`exit_status`] is the mapping; a test keeps the two
/// in agreement.
const EXIT_STATUS_HELP: &str = "Exit status (run, and every command's errors):
  0    succeeded
  1    any other failure (adapter_internal, k8s_job_deleted_externally; doctor: a check failed)
  2    fix the input: config_invalid, prompt_too_large
  3    the agent failed: opencode_failed, llm_api_error, session_unavailable
  4    timeout (timeoutSec ran out)
  5    the pod could not run: k8s_pod_unschedulable, k8s_pod_start_timeout,
       k8s_image_pull_failed, k8s_container_config_error, k8s_volume_mount_failed,
       k8s_oom_killed
  6    cluster access: k8s_api_unreachable, k8s_forbidden, k8s_concurrency_guard_unreachable,
       k8s_job_create_failed
  7    k8s_concurrent_run_blocked (another run of the agent did not finish in time)
  130  cancelled (Ctrl-C)";

/// Run OpenCode agents as Kubernetes Jobs: run one from a terminal, check a cluster, list,
/// read and clean up the Jobs, inspect manifests and RBAC.
#[derive(Debug, Parser)]
#[command(
    name = "opencode-k8s",
    version,
    about,
    propagate_version = true,
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try it on this machine: one agent turn on a simulated cluster with a fake LLM, live.
    #[cfg(feature = "demo")]
    Demo(demo::Args),
    /// Run one agent turn as a Kubernetes Job, streaming its output; Ctrl-C cancels it.
    Run(run::Args),
    /// Check that runs can work here: API, Paperclip pod, namespace, RBAC, shared volume,
    /// Secrets; each failure says what to change.
    Doctor(doctor::Args),
    /// List the adapter's Jobs.
    Jobs(jobs::Args),
    /// Print the output of a run by its run id.
    Logs(logs::Args),
    /// Delete finished Jobs and leftover per-run Secrets.
    Gc(gc::Args),
    /// Print the Job and Secret one run would create, without a cluster.
    Render(render::Args),
    /// Print the RBAC objects the engine needs, generated from its table of verbs.
    Rbac(rbac::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    diagnostics::init();
    // The operator runs the CLI: the agent configs it is given are the operator's own.
    opencode_k8s_core::lifecycle::trust_agent_kubeconfig_paths();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return report(&anyhow::Error::new(err).context("failed to start the async runtime"));
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Doctor(args) => doctor::run(&args).await,
        Command::Jobs(args) => jobs::run(&args).await.map(success),
        Command::Logs(args) => logs::run(&args).await.map(success),
        Command::Gc(args) => gc::run(&args).await,
        Command::Render(args) => render::run(&args).map(success),
        Command::Rbac(args) => rbac::run(&args).map(success),
    }
}

/// The exit status of a command that finished its work.
fn success((): ()) -> ExitCode {
    ExitCode::SUCCESS
}

/// Prints the error, its cause chain, its code and hint; returns the exit status for it.
#[expect(
    clippy::print_stderr,
    reason = "reporting a failure to the operator is the point"
)]
fn report(err: &anyhow::Error) -> ExitCode {
    let code = error_code(err);
    eprint!("{}", output::error_text(err, code));
    ExitCode::from(exit_status(code))
}

/// Cancels `cancel` on Ctrl-C (the run or stream then ends and cleans up on its own).
fn cancel_on_ctrl_c(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    })
}

/// The stable exit status of a failure with `code` (see [`EXIT_STATUS_HELP`]).
pub(crate) const fn exit_status(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::ConfigInvalid | ErrorCode::PromptTooLarge => 2,
        ErrorCode::OpencodeFailed | ErrorCode::LlmApiError | ErrorCode::SessionUnavailable => 3,
        ErrorCode::Timeout => 4,
        ErrorCode::K8sPodUnschedulable
        | ErrorCode::K8sPodStartTimeout
        | ErrorCode::K8sImagePullFailed
        | ErrorCode::K8sContainerConfigError
        | ErrorCode::K8sVolumeMountFailed
        | ErrorCode::K8sOomKilled => 5,
        ErrorCode::K8sApiUnreachable
        | ErrorCode::K8sForbidden
        | ErrorCode::K8sConcurrencyGuardUnreachable
        | ErrorCode::K8sJobCreateFailed => 6,
        ErrorCode::K8sConcurrentRunBlocked => 7,
        ErrorCode::Cancelled => 130,
        ErrorCode::AdapterInternal | ErrorCode::K8sJobDeletedExternally => 1,
    }
}

fn error_code(err: &anyhow::Error) -> ErrorCode {
    if let Some(e) = err.downcast_ref::<ConfigError>() {
        e.code()
    } else if let Some(e) = err.downcast_ref::<ManifestError>() {
        e.code()
    } else if let Some(e) = err.downcast_ref::<RunError>() {
        e.code()
    } else if let Some(e) = err.downcast_ref::<GcError>() {
        e.code()
    } else if let Some(e) = err.downcast_ref::<ApiError>() {
        e.code()
    } else if let Some(e) = err.downcast_ref::<CommandError>() {
        e.code()
    } else if let Some(e) = err.downcast_ref::<ClusterError>() {
        e.code()
    } else if err.downcast_ref::<InputError>().is_some() {
        ErrorCode::ConfigInvalid
    } else {
        ErrorCode::AdapterInternal
    }
}

/// Whether `err`'s message already tells its causes: the engine's errors include the Kubernetes
/// API's message in their own and keep the `kube::Error` as their source only for programs to
/// match on, so a printed cause chain ends at them.
fn tells_its_causes(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<RunError>() || err.is::<GcError>() || err.is::<ApiError>()
}

/// A cluster command found nothing to work on, or waited in vain.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    /// `--pod` names a pod that does not exist.
    #[error(
        "failed to find the Paperclip pod {namespace}/{name} named by --pod: it does not exist; `kubectl -n {namespace} get pods` lists the pods, or pass --no-inherit to run without inheriting"
    )]
    NoSuchPod { namespace: String, name: String },
    /// No Job carries the run id (any more).
    #[error(
        "failed to find a Job of run {run_id} in namespace {namespace}: Jobs are deleted once their result is read unless `retainJobs` is set (`opencode-k8s jobs` lists what exists)"
    )]
    NoSuchRun { run_id: String, namespace: String },
    /// The pod to follow did not start in time.
    #[error("pod {pod} did not start within {} s; `kubectl describe pod {pod}` says why", .waited.as_secs())]
    PodNotStarted { pod: String, waited: Duration },
}

impl CommandError {
    const fn code(&self) -> ErrorCode {
        match self {
            Self::NoSuchPod { .. } | Self::NoSuchRun { .. } => ErrorCode::ConfigInvalid,
            Self::PodNotStarted { .. } => ErrorCode::K8sPodStartTimeout,
        }
    }
}

/// A file or value given on the command line cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("failed to use {what}: {problem}")]
struct InputError {
    /// The file path or `--option value`.
    what: String,
    /// What is wrong and what would work.
    problem: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_help_has_an_example() {
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("opencode-k8s "),
                "{} has no example",
                sub.get_name()
            );
        }
    }

    #[test]
    fn the_exit_status_help_lists_every_code_under_its_status() {
        let mut documented = std::collections::HashMap::new();
        let mut status = None;
        for line in EXIT_STATUS_HELP.lines().skip(1) {
            let line = line.trim_start();
            if let Some((number, _)) = line.split_once(' ')
                && let Ok(number) = number.parse::<u8>()
            {
                status = Some(number);
            }
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                documented.entry(word.to_owned()).or_insert(status);
            }
        }
        for &code in ErrorCode::ALL {
            assert_eq!(
                documented.get(code.as_str()).copied().flatten(),
                Some(exit_status(code)),
                "{code}"
            );
        }
    }
}
