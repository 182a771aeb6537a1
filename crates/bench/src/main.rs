//! `opencode-k8s-bench`: drives the engine (in this process) against the simulated cluster
//! (testkit, a TEST DOUBLE, in a process of its own) and prints a JSON summary on stdout and a
//! table on stderr: runs, log lines and bytes, API requests per run by verb, log delivery and
//! completion detection latency, aggregate throughput and the engine's RSS. A benchmark, not a
//! test: nothing here fails on a timing; the targets are reported as met or not.
//!
//! With `--kubeconfig` it measures a real cluster instead (`real`): the seconds the engine adds
//! per run and, with `--audit-log`, the API requests per run.
//!
//! The same binary is the pod's process (`gen`, behind the fake `opencode`) and the cluster's
//! (`sim`), so a benchmark needs nothing but this one file.

mod generate;
mod measure;
mod real;
mod report;
mod scenario;
mod sim;
mod sink;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::report::Summary;
use crate::scenario::{Bench, Scenario};

/// Benchmark of the opencode-k8s engine against a simulated cluster.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Which phases to run.
    #[arg(long, value_enum, default_value = "smoke")]
    scenario: Scenario,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Benchmark a real cluster instead of the simulated one: an admin kubeconfig (the runs
    /// use a namespace and ServiceAccount of their own, as the real-cluster test tier does).
    #[arg(long, value_name = "FILE", env = "OPENCODE_K8S_BENCH_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Runs against the real cluster, one after the other.
    #[arg(long, default_value_t = 10, requires = "kubeconfig")]
    runs: usize,
    /// The real cluster's API server audit log, to count requests per run (absent: not
    /// measured).
    #[arg(long, value_name = "FILE", requires = "kubeconfig")]
    audit_log: Option<PathBuf>,
    #[command(subcommand)]
    role: Option<Role>,
}

/// The benchmark's helper processes (not for direct use).
#[derive(Debug, Subcommand)]
enum Role {
    /// The pod's process: generate output (the fake `opencode` execs this).
    #[command(hide = true)]
    Gen {
        /// Data lines to write.
        #[arg(long, env = "BENCH_GEN_LINES", default_value_t = 1000)]
        lines: u64,
        /// Bytes per line, newline included.
        #[arg(long, env = "BENCH_GEN_BYTES", default_value_t = 200)]
        bytes: usize,
        /// Lines per second (absent: as fast as possible).
        #[arg(long, env = "BENCH_GEN_RATE")]
        rate: Option<f64>,
    },
    /// Serve the simulated cluster until stdin closes.
    #[command(hide = true)]
    Sim,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The benchmark is the operator's tool: its agent configs are its own.
    opencode_k8s_core::lifecycle::trust_agent_kubeconfig_paths();
    match cli.role {
        Some(Role::Gen { lines, bytes, rate }) => {
            generate::run(generate::Plan { lines, bytes, rate })
        }
        Some(Role::Sim) => runtime()?.block_on(sim::serve()),
        None => match cli.kubeconfig {
            Some(kubeconfig) => runtime()?.block_on(bench_real(
                &kubeconfig,
                cli.runs,
                cli.audit_log,
                cli.json_out,
            )),
            None => runtime()?.block_on(bench(cli.scenario, cli.json_out)),
        },
    }
}

/// A multi-thread runtime with one worker per CPU, as the Node addon gets from napi.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

async fn bench(scenario: Scenario, json_out: Option<PathBuf>) -> anyhow::Result<()> {
    let bench = Bench::start().await?;
    let mut phases = Vec::new();
    let mut failure = None;
    for spec in scenario.phases() {
        progress(&format!(
            "phase {}: {} runs, {} concurrent, {} lines of {} B each{}",
            spec.name,
            spec.runs,
            spec.concurrency,
            spec.plan.lines,
            spec.plan.bytes,
            spec.plan
                .rate
                .map(|r| format!(" at {r} lines/s"))
                .unwrap_or_default()
        ));
        match bench.phase(&spec).await {
            Ok(report) => phases.push(report),
            Err(err) => {
                failure = Some(err.context(format!("phase {} failed", spec.name)));
                break;
            }
        }
    }
    let cluster_peak = bench.cluster_peak_rss_mb();
    bench.stop().await;
    if let Some(err) = failure {
        return Err(err);
    }
    let summary = Summary::new(scenario, phases, cluster_peak);
    report(&summary, &summary.table(), json_out.as_deref())
}

async fn bench_real(
    kubeconfig: &std::path::Path,
    runs: usize,
    audit_log: Option<PathBuf>,
    json_out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let summary = real::bench(kubeconfig, runs.max(1), audit_log).await?;
    report(&summary, &summary.table(), json_out.as_deref())
}

/// Prints the human `table` and the JSON `summary` (also written to `json_out`, if given).
fn report(
    summary: &impl serde::Serialize,
    table: &str,
    json_out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(summary)?;
    if let Some(path) = json_out {
        std::fs::write(path, &json)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    progress(table);
    emit(&json);
    Ok(())
}

#[expect(
    clippy::print_stderr,
    reason = "progress and the human table go to stderr, the JSON to stdout"
)]
fn progress(text: &str) {
    eprintln!("{text}");
}

#[expect(clippy::print_stdout, reason = "the JSON summary is the output")]
fn emit(json: &str) {
    println!("{json}");
}
