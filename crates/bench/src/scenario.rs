//! Scenarios and phases: how many runs, how concurrent, what each pod writes; running a phase
//! through the engine and summarizing it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt as _;
use opencode_k8s_core::config::AgentConfig;
use opencode_k8s_core::lifecycle::{Bounds, Engine, EngineOptions, RunStatus, SelfPod};
use opencode_k8s_core::manifest::RunRequest;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::generate::Plan;
use crate::measure::{Histogram, Quantiles, Rss, RssWatch, unix_nanos};
use crate::sim::{NS, Sim};
use crate::sink::{CountingSink, PhaseStats};

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// A scaled-down pass over every measurement, in seconds (safe for CI).
    Smoke,
    /// Log delivery latency at a paced rate, then 200 concurrent runs × 20,000 lines × 200 B.
    Standard,
    /// One run writing 1 GiB: engine RSS growth.
    Large,
    /// API requests of a lone 10 s run and a lone 10 min run.
    Duration,
    /// Large, standard and duration.
    All,
}

/// One phase: `runs` runs, at most `concurrency` at a time, each pod generating `plan`.
#[derive(Debug, Clone)]
pub(crate) struct PhaseSpec {
    pub(crate) name: String,
    pub(crate) runs: usize,
    pub(crate) concurrency: usize,
    pub(crate) plan: Plan,
}

fn phase(name: &str, runs: usize, lines: u64, bytes: usize, rate: Option<f64>) -> PhaseSpec {
    PhaseSpec {
        name: name.to_owned(),
        runs,
        concurrency: runs,
        plan: Plan { lines, bytes, rate },
    }
}

/// A lone run lasting about `seconds`, writing 10 lines a second.
fn lasting(seconds: u64) -> PhaseSpec {
    phase(
        &format!("duration-{seconds}s"),
        1,
        seconds * 10,
        200,
        Some(10.0),
    )
}

const GIB: u64 = 1 << 30;

impl Scenario {
    /// The phases, in order. The large run goes first, right after the warm-up, so its RSS
    /// growth is not hidden by memory an earlier phase left to the allocator.
    pub(crate) fn phases(self) -> Vec<PhaseSpec> {
        let latency = |runs, lines| phase("latency", runs, lines, 200, Some(200.0));
        match self {
            Self::Smoke => vec![
                latency(4, 200),
                phase("throughput", 8, 5_000, 200, None),
                phase("large", 1, 16 * (1 << 20) / 1024, 1024, None),
                lasting(1),
                lasting(3),
            ],
            Self::Standard => vec![
                latency(20, 2_000),
                phase("throughput", 200, 20_000, 200, None),
            ],
            Self::Large => vec![phase("large", 1, GIB / 1024, 1024, None)],
            Self::Duration => vec![lasting(10), lasting(600)],
            Self::All => [Self::Large, Self::Standard, Self::Duration]
                .into_iter()
                .flat_map(Self::phases)
                .collect(),
        }
    }
}

/// API requests per run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestsPerRun {
    /// `"verb resource"` → requests per run (watch opens count as `watch`, follow-log opens as
    /// `follow`).
    pub(crate) by_verb: BTreeMap<String, f64>,
    /// All of them.
    pub(crate) total: f64,
    /// Without log reads (`follow pods/log`, `get pods/log`).
    pub(crate) excluding_logs: f64,
}

/// Aggregate throughput of a phase.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Throughput {
    /// Lines delivered / phase wall time (pod starts and clean-up included).
    pub(crate) lines_per_sec: f64,
    /// MiB delivered / phase wall time.
    pub(crate) mib_per_sec: f64,
    /// Lines delivered / time from the first to the last output delivered.
    pub(crate) delivery_lines_per_sec: f64,
}

/// The measurements of one phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PhaseReport {
    pub(crate) name: String,
    pub(crate) runs: usize,
    pub(crate) concurrency: usize,
    /// Runs that ended `succeeded`.
    pub(crate) succeeded: usize,
    /// Every run delivered exactly the lines its pod wrote.
    pub(crate) complete: bool,
    /// Bytes per generated line, newline included.
    pub(crate) line_bytes: usize,
    /// Lines per second each pod wrote at (`null`: as fast as it could).
    pub(crate) rate_lines_per_sec: Option<f64>,
    /// Output lines delivered per run (generated lines plus OpenCode's `step_finish` and the
    /// exit line).
    pub(crate) lines_per_run: f64,
    /// Output bytes delivered per run.
    pub(crate) bytes_per_run: f64,
    pub(crate) wall_seconds: f64,
    pub(crate) requests_per_run: RequestsPerRun,
    /// Pod write → sink, per generated line.
    pub(crate) log_delivery: Quantiles,
    /// Container exit → `Engine::run` returned, per run. When pods write faster than the
    /// machine delivers, this includes draining the backlog: the engine returns only once every
    /// line was delivered.
    pub(crate) completion_detection: Quantiles,
    /// Last output delivered → `Engine::run` returned, per run: detection alone, without the
    /// backlog.
    pub(crate) result_after_last_output: Quantiles,
    pub(crate) throughput: Throughput,
    pub(crate) engine_rss: Rss,
    /// The first few runs that failed, and why.
    pub(crate) failures: Vec<String>,
}

/// The engine under test, the cluster process and the fake `opencode`.
#[derive(Debug)]
pub(crate) struct Bench {
    sim: Sim,
    engine: Engine,
    bin: tempfile::TempDir,
}

/// The fake `opencode` on the pod's PATH: this binary's generator.
const FAKE_OPENCODE: &str = "#!/bin/sh\nexec \"$(dirname \"$0\")/opencode-k8s-bench\" gen\n";

impl Bench {
    /// Start the cluster process, install the fake `opencode` and warm the engine up (clients,
    /// the inherited pod), so phases measure steady state.
    pub(crate) async fn start() -> anyhow::Result<Bench> {
        let sim = Sim::start().await?;
        // The pod runs as uid 1000: the directory, binary and script must be readable and
        // executable by it, wherever this binary was built.
        let bin = tempfile::Builder::new()
            .prefix("opencode-k8s-bench-")
            .tempdir()
            .context("failed to make a directory for the fake opencode")?;
        let world = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(bin.path(), world.clone())?;
        let exe = std::env::current_exe().context("failed to locate the benchmark binary")?;
        let copy = bin.path().join("opencode-k8s-bench");
        std::fs::copy(&exe, &copy).context("failed to copy the benchmark binary")?;
        std::fs::set_permissions(&copy, world.clone())?;
        let script = bin.path().join("opencode");
        std::fs::write(&script, FAKE_OPENCODE)?;
        std::fs::set_permissions(&script, world)?;
        let engine = Engine::new(EngineOptions {
            self_pod: SelfPod::Named {
                namespace: NS.into(),
                name: "paperclip".into(),
            },
            bounds: Bounds::default(),
        });
        let bench = Bench { sim, engine, bin };
        let warm_up = bench
            .phase(&phase("warm-up", 1, 10, 200, None))
            .await
            .context("the warm-up run failed")?;
        anyhow::ensure!(
            warm_up.succeeded == 1,
            "the warm-up run did not succeed: {:?}",
            warm_up.failures
        );
        Ok(bench)
    }

    /// Peak RSS of the cluster process so far, MiB.
    pub(crate) fn cluster_peak_rss_mb(&self) -> Option<f64> {
        self.sim.pid().and_then(crate::measure::peak_mb_of)
    }

    /// Stop the cluster process.
    pub(crate) async fn stop(self) {
        self.sim.stop().await;
    }

    fn config(&self, plan: Plan) -> anyhow::Result<AgentConfig> {
        let mut env = json!({
            "PATH": format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin.path().display()),
            "BENCH_GEN_LINES": plan.lines.to_string(),
            "BENCH_GEN_BYTES": plan.bytes.to_string(),
        });
        if let Some(rate) = plan.rate {
            env["BENCH_GEN_RATE"] = json!(rate.to_string());
        }
        let config = json!({
            "model": "fake/fake-model",
            "kubeconfig": self.sim.kubeconfig(),
            "namespace": NS,
            "env": env,
        });
        AgentConfig::from_json(&config).map_err(|err| anyhow::anyhow!("bench config: {err}"))
    }

    /// Run one phase and measure it.
    pub(crate) async fn phase(&self, spec: &PhaseSpec) -> anyhow::Result<PhaseReport> {
        let config = self.config(spec.plan)?;
        let stats = PhaseStats::new();
        self.sim.reset_requests().await?;
        let rss = RssWatch::start();
        let started = Instant::now();
        let outcomes: Vec<Outcome> = futures::stream::iter(0..spec.runs)
            .map(|i| self.one_run(spec, i, &config, &stats))
            .buffer_unordered(spec.concurrency.max(1))
            .collect()
            .await;
        let wall = started.elapsed().as_secs_f64();
        let engine_rss = rss.finish().await;
        let requests = self.sim.requests().await?;
        Ok(summarize(
            spec, &outcomes, &stats, wall, engine_rss, &requests,
        ))
    }

    async fn one_run(
        &self,
        spec: &PhaseSpec,
        index: usize,
        config: &AgentConfig,
        stats: &PhaseStats,
    ) -> Outcome {
        let run_id = format!("{}-{index}", spec.name);
        let request = RunRequest {
            run_id: run_id.clone(),
            agent_id: format!("agent-{run_id}"),
            company_id: "bench".into(),
            agent_name: Some("Bench".into()),
            task_key: None,
            prompt: "benchmark".into(),
            fresh_prompt: None,
            cwd: None,
            paperclip_env: BTreeMap::new(),
            api_key: None,
            resume: None,
            attempt: 1,
        };
        let sink = CountingSink::new(stats);
        let result = self
            .engine
            .run(request, config, &sink, CancellationToken::new())
            .await;
        let returned = unix_nanos();
        let exit = sink.exit_ns.load(Ordering::Relaxed);
        let last_output = sink.last_output_ns.load(Ordering::Relaxed);
        Outcome {
            error: match &result {
                Ok(r) if r.status == RunStatus::Succeeded => None,
                Ok(r) => Some(format!(
                    "{run_id}: {:?} {} {}",
                    r.status,
                    r.error_code.map(|c| c.as_str()).unwrap_or_default(),
                    r.error_message.as_deref().unwrap_or_default()
                )),
                Err(err) => Some(format!("{run_id}: {err}")),
            },
            lines: sink.lines.load(Ordering::Relaxed),
            data_lines: sink.data_lines.load(Ordering::Relaxed),
            bytes: sink.bytes.load(Ordering::Relaxed),
            completion_ns: (exit > 0).then(|| returned - exit),
            after_output_ns: (last_output > 0).then(|| returned - last_output),
        }
    }
}

/// How one run went.
#[derive(Debug)]
struct Outcome {
    error: Option<String>,
    lines: u64,
    data_lines: u64,
    bytes: u64,
    completion_ns: Option<i64>,
    after_output_ns: Option<i64>,
}

fn is_log_read(key: &str) -> bool {
    matches!(key, "follow pods/log" | "get pods/log")
}

fn summarize(
    spec: &PhaseSpec,
    outcomes: &[Outcome],
    stats: &PhaseStats,
    wall: f64,
    engine_rss: Rss,
    requests: &BTreeMap<String, u64>,
) -> PhaseReport {
    let runs = outcomes.len().max(1) as f64;
    let per_run = |n: u64| n as f64 / runs;
    let histogram = |of: fn(&Outcome) -> Option<i64>| {
        let mut h = Histogram::default();
        for ns in outcomes.iter().filter_map(of) {
            h.record_nanos(ns);
        }
        h.summary()
    };
    let lines: u64 = outcomes.iter().map(|o| o.lines).sum();
    let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
    let first = stats.first_output_ns.load(Ordering::Relaxed);
    let last = stats.last_output_ns.load(Ordering::Relaxed);
    let span = if last > first {
        (last - first) as f64 / 1e9
    } else {
        0.0
    };
    let rate = |n: f64, secs: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let total: u64 = requests.values().sum();
    let logs: u64 = requests
        .iter()
        .filter(|(key, _)| is_log_read(key))
        .map(|(_, n)| n)
        .sum();
    PhaseReport {
        name: spec.name.clone(),
        runs: outcomes.len(),
        concurrency: spec.concurrency,
        succeeded: outcomes.iter().filter(|o| o.error.is_none()).count(),
        complete: outcomes.iter().all(|o| o.data_lines == spec.plan.lines),
        line_bytes: spec.plan.bytes,
        rate_lines_per_sec: spec.plan.rate,
        lines_per_run: per_run(lines),
        bytes_per_run: per_run(bytes),
        wall_seconds: wall,
        requests_per_run: RequestsPerRun {
            by_verb: requests
                .iter()
                .map(|(key, &n)| (key.clone(), per_run(n)))
                .collect(),
            total: per_run(total),
            excluding_logs: per_run(total - logs),
        },
        log_delivery: stats
            .delivery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary(),
        completion_detection: histogram(|o| o.completion_ns),
        result_after_last_output: histogram(|o| o.after_output_ns),
        throughput: Throughput {
            lines_per_sec: rate(lines as f64, wall),
            mib_per_sec: rate(bytes as f64 / f64::from(1 << 20), wall),
            delivery_lines_per_sec: rate(lines as f64, span),
        },
        engine_rss,
        failures: outcomes
            .iter()
            .filter_map(|o| o.error.clone())
            .take(5)
            .collect(),
    }
}
