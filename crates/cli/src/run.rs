//! `opencode-k8s run`: one agent turn from a terminal, through the same engine Paperclip uses.
//! The agent's output streams to stdout as the pod writes it, engine notices and Kubernetes
//! events to stderr, a progress line shows while the pod waits to be scheduled (on a terminal),
//! Ctrl-C cancels the run (the Job is deleted), and the exit status tells how it ended.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opencode_k8s_core::config::{AgentConfig, SecretString};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::event::{RunEvent, RunSink};
use opencode_k8s_core::lifecycle::{ClusterSource, Engine, EngineOptions, RunResult};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cluster::{InheritArgs, KubeArgs, require_named_pod};
use crate::exit_status;
use crate::output::{result_exit_code, result_text};
use crate::request::RequestArgs;

/// Options of `run`.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("prompt_source").required(true).args(["prompt", "prompt_file"])),
    after_help = "Examples:
  opencode-k8s run --config agent.json --prompt 'Fix the failing test in ./api'
  opencode-k8s run --config agent.json --prompt-file task.md --cwd /paperclip/workspaces/api \\
      --session ses_0123456789abcdefghijklmnop --pod paperclip/paperclip-0
  opencode-k8s run --config agent.json --prompt hi --json > result.json

The agent's output goes to stdout (to stderr with --json, where stdout holds only the result);
engine notices, Kubernetes events and the result summary go to stderr. The first Ctrl-C
cancels the run and deletes its Job; a second one exits at once (the Job keeps running).
The exit status is 0 when the run succeeded, else the status of its error code (see
`opencode-k8s --help`). PAPERCLIP_API_KEY, when set, is passed to the pod as the agent token."
)]
pub(crate) struct Args {
    /// The agent's adapterConfig as JSON (or a Paperclip agent object with `adapterConfig`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    request: RequestArgs,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    inherit: InheritArgs,
    /// Print the result as JSON on stdout (the agent's output then goes to stderr).
    #[arg(long)]
    json: bool,
}

/// A run id nobody else has: seconds and nanoseconds of now, and the process id.
fn generated_run_id() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "cli-{}-{:09}-{}",
        now.as_second(),
        now.subsec_nanosecond(),
        std::process::id()
    )
}

fn config(args: &Args) -> anyhow::Result<AgentConfig> {
    let mut value = crate::render::read_config(&args.config)?;
    args.kube.apply(&mut value);
    Ok(AgentConfig::from_json(&value)?)
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let outcome = run_turn(args).await;
    // With --json, stdout holds a JSON document whatever happened.
    if json && let Err(err) = &outcome {
        print_json(&json!({"error": {"code": crate::error_code(err), "message": err.to_string()}}));
    }
    outcome
}

async fn run_turn(args: Args) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let mut request = args.request.request(generated_run_id, "")?;
    request.api_key = std::env::var("PAPERCLIP_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .map(SecretString::new);
    let self_pod = args.inherit.self_pod()?;
    let source = ClusterSource::from_fields(
        config.kubeconfig.as_deref(),
        config.kubeconfig_content.as_ref().map(|c| c.expose()),
    );
    require_named_pod(&source, &self_pod).await?;
    let engine = Engine::new(EngineOptions {
        self_pod,
        ..EngineOptions::default()
    });
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Arc::new(Progress::default()));
    let sink = Printer {
        output_to_stderr: args.json,
        progress: progress.clone(),
    };
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(on_ctrl_c(cancel.clone(), progress.clone()));
    let ticker = progress.map(|p| tokio::spawn(p.tick()));
    let outcome = engine.run(request, &config, &sink, cancel).await;
    // The engine keeps its namespace watches for a later run; this process has none, so stop
    // them now rather than let them report the connections the exit closes.
    engine.shutdown().await;
    signals.abort();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    sink.clear_progress();
    let result = outcome?;
    if args.json {
        print_json(&serde_json::to_value(&result)?);
    } else {
        print_summary(&result);
    }
    Ok(result_exit_code(&result))
}

/// First Ctrl-C: cancel (the engine deletes the Job and returns a cancelled result). Second:
/// leave at once, as a terminal user expects.
#[expect(clippy::print_stderr, reason = "telling the operator what Ctrl-C does")]
async fn on_ctrl_c(cancel: CancellationToken, progress: Option<Arc<Progress>>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    if let Some(progress) = &progress {
        progress.finish();
    }
    eprintln!("[opencode-k8s] cancelling: deleting the Job (Ctrl-C again to exit at once)");
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("[opencode-k8s] exiting without waiting; the Job may still be running");
        std::process::exit(i32::from(exit_status(ErrorCode::Cancelled)));
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the JSON result is the command's output"
)]
fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// The result on stderr, after the agent's output.
#[expect(clippy::print_stderr, reason = "the summary goes next to the run log")]
fn print_summary(result: &RunResult) {
    eprint!("{}", result_text(result));
}

/// The progress line shown while the pod is not running yet.
#[derive(Debug, Default)]
struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Debug, Default)]
struct ProgressState {
    /// Waiting for the pod since then.
    waiting_since: Option<Instant>,
    /// The pod started (or the run ended): no more progress line.
    finished: bool,
    /// A progress line is on screen and must be erased before anything else is printed.
    shown: bool,
}

/// Erases the current terminal line.
const CLEAR_LINE: &str = "\r\x1b[2K";

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take in an event: a created or adopted Job starts the wait; the pod starting or the
    /// first output ends it.
    fn observe(&self, event: &RunEvent) {
        let mut state = self.lock();
        match event {
            RunEvent::Notice { message }
                if message.starts_with("created Job") || message.starts_with("reattaching") =>
            {
                state.waiting_since.get_or_insert_with(Instant::now);
            }
            RunEvent::Output { .. } => state.finished = true,
            RunEvent::Kube { reason, .. } if reason == "Started" => state.finished = true,
            _ => {}
        }
    }

    fn finish(&self) {
        self.lock().finished = true;
        self.erase();
    }

    /// Erase the progress line if it is on screen (before printing anything else).
    fn erase(&self) {
        let mut state = self.lock();
        if state.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{CLEAR_LINE}");
            let _ = err.flush();
            state.shown = false;
        }
    }

    /// Redraw the line twice a second while waiting.
    async fn tick(self: Arc<Self>) {
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            interval.tick().await;
            let mut state = self.lock();
            let Some(since) = state.waiting_since.filter(|_| !state.finished) else {
                continue;
            };
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "{CLEAR_LINE}[opencode-k8s] waiting for the pod to be scheduled and start ({} s)",
                since.elapsed().as_secs()
            );
            let _ = err.flush();
            state.shown = true;
        }
    }
}

/// Prints a run's events as they come.
pub(crate) struct Printer {
    /// `--json`: stdout is reserved for the result.
    output_to_stderr: bool,
    progress: Option<Arc<Progress>>,
}

impl Printer {
    /// Output to stdout, notices to stderr, no progress line (`logs --follow`).
    pub(crate) fn plain() -> Self {
        Self {
            output_to_stderr: false,
            progress: None,
        }
    }

    fn clear_progress(&self) {
        if let Some(progress) = &self.progress {
            progress.finish();
        }
    }
}

impl RunSink for Printer {
    fn emit(&self, event: RunEvent) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        if let Some(progress) = &self.progress {
            progress.observe(&event);
            progress.erase();
        }
        // Write errors (a closed pipe) must not stop the run; the result still comes back.
        let _ = match &event {
            RunEvent::Output { text, .. } if !self.output_to_stderr => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
            RunEvent::Output { text, .. } => {
                let mut err = std::io::stderr().lock();
                err.write_all(text.as_bytes()).and_then(|()| err.flush())
            }
            other => writeln!(std::io::stderr().lock(), "{other}"),
        };
        Box::pin(async {})
    }
}
