//! The benchmark against a real cluster (`--kubeconfig`): K short runs, one after the other,
//! through one engine in one namespace of the real-cluster tier (crates/cluster-tests), as a
//! ServiceAccount bound to the generated Role. Per run it measures the seconds the engine adds
//! around the agent — execute → the container's first output, and the container's last output
//! → the result, both by when the output reached the sink (see [`Record::output_span`]) — and, from the
//! API server's audit log, the requests the engine made.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow};
use opencode_k8s_cluster_tests::{AuditLog, Record, Tier, total};
use opencode_k8s_core::lifecycle::{Bounds, RunStatus};
use opencode_k8s_core::manifest::RunRequest;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Targets of issue 11 on a real cluster.
const END_TO_RESULT_TARGET_S: f64 = 0.25;
const REQUESTS_TARGET: f64 = 12.0;
/// What each run's fake agent does: a few lines, no pause.
const PLAN: &str = "lines=20";

/// What the real-cluster benchmark measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RealSummary {
    pub(crate) mode: &'static str,
    pub(crate) runs: usize,
    /// execute → the container's first output, seconds.
    pub(crate) execute_to_running_s: Quantiles,
    /// The container's last output → the result, seconds.
    pub(crate) end_to_result_s: Quantiles,
    /// Requests per run (distinct audit IDs of the engine's user); the first run of the
    /// namespace also starts the engine's shared watches. `None`: no audit log.
    pub(crate) requests_first_run: Option<usize>,
    pub(crate) requests_per_run: Option<Quantiles>,
    /// Requests of the later runs by `verb resource`, summed.
    pub(crate) requests_by_kind: BTreeMap<String, usize>,
    pub(crate) end_to_result_target_met: bool,
    pub(crate) requests_target_met: Option<bool>,
}

/// p50, p99 and max of a few samples (nearest rank).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Quantiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Quantiles {
    fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        Some(Self {
            p50: at(0.5),
            p99: at(0.99),
            max: *sorted.last()?,
        })
    }
}

fn seconds(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// K runs against the cluster of the admin kubeconfig `kubeconfig`.
pub(crate) async fn bench(
    kubeconfig: &Path,
    runs: usize,
    audit_log: Option<PathBuf>,
) -> anyhow::Result<RealSummary> {
    // The benchmark is its operator's own tool, like the CLI: the sandbox's engine kubeconfig
    // is a file path in the agent config.
    opencode_k8s_core::lifecycle::trust_agent_kubeconfig_paths();
    let tier = Tier::connect(kubeconfig)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("failed to use the cluster of {}", kubeconfig.display()))?;
    let audit = audit_log.map(AuditLog::new);
    let sandbox = tier
        .sandbox("bench", Default::default())
        .await
        .map_err(|e| anyhow!("failed to set up the benchmark's namespace: {e}"))?;
    let engine = sandbox.engine(Bounds::default());
    let config = sandbox.config(json!({}));
    let (mut to_running, mut to_result, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    let mut by_kind = BTreeMap::new();
    let mut first_requests = None;
    for i in 0..runs {
        let mark = match &audit {
            Some(audit) => Some(audit.mark().map_err(|e| anyhow!("audit log: {e}"))?),
            None => None,
        };
        let sink = Record::default();
        let started = SystemTime::now();
        let result = tokio::time::timeout(
            Duration::from_secs(120),
            engine.run(
                RunRequest {
                    // Agent pods mount only their workspace, below the shared volume's root.
                    cwd: Some("/paperclip/bench".into()),
                    ..sandbox.request(&format!("bench-{i}"), "agent-bench", PLAN)
                },
                &config,
                &sink,
                CancellationToken::new(),
            ),
        )
        .await
        .map_err(|_| anyhow!("run {i} did not end within 120 s"))?
        .map_err(|e| anyhow!("run {i} failed: {e}"))?;
        let ended = SystemTime::now();
        if result.status != RunStatus::Succeeded {
            return Err(anyhow!(
                "run {i} did not succeed: {result:?}\n{}",
                sink.lines().join("\n")
            ));
        }
        let (first, last) = sink
            .output_span()
            .ok_or_else(|| anyhow!("run {i} delivered no output"))?;
        to_running.push(seconds(started, first));
        to_result.push(seconds(last, ended));
        if let (Some(audit), Some(mark)) = (&audit, mark) {
            let counts = audit
                .requests_since(mark, &sandbox.engine_user())
                .await
                .map_err(|e| anyhow!("audit log: {e}"))?;
            if i == 0 {
                first_requests = Some(total(&counts));
            } else {
                requests.push(total(&counts) as f64);
                for (kind, n) in counts {
                    *by_kind.entry(kind).or_insert(0) += n;
                }
            }
        }
        crate::progress(&format!(
            "run {i}: first output {:.3} s after execute, result {:.3} s after the last output",
            seconds(started, first),
            seconds(last, ended)
        ));
    }
    let end_to_result = Quantiles::of(&to_result).ok_or_else(|| anyhow!("no runs"))?;
    let requests_per_run = Quantiles::of(&requests);
    Ok(RealSummary {
        mode: "real-cluster",
        runs,
        execute_to_running_s: Quantiles::of(&to_running).ok_or_else(|| anyhow!("no runs"))?,
        end_to_result_s: end_to_result,
        requests_first_run: first_requests,
        end_to_result_target_met: end_to_result.p50 <= END_TO_RESULT_TARGET_S,
        requests_target_met: requests_per_run.map(|q| q.p50 <= REQUESTS_TARGET),
        requests_per_run,
        requests_by_kind: by_kind,
    })
}

impl RealSummary {
    /// The human table.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let q = |q: &Quantiles| format!("p50 {:.3}  p99 {:.3}  max {:.3}", q.p50, q.p99, q.max);
        let _ = writeln!(
            out,
            "real cluster, {} sequential runs of `{PLAN}`",
            self.runs
        );
        let _ = writeln!(
            out,
            "  execute -> container running (first output): {} s",
            q(&self.execute_to_running_s)
        );
        let _ = writeln!(
            out,
            "  container end (last output) -> result:       {} s   target <= {END_TO_RESULT_TARGET_S} s: {}",
            q(&self.end_to_result_s),
            if self.end_to_result_target_met {
                "met"
            } else {
                "NOT met"
            }
        );
        match (&self.requests_per_run, self.requests_first_run) {
            (Some(per_run), first) => {
                let _ = writeln!(
                    out,
                    "  requests per run (audit log): {}   target <= {REQUESTS_TARGET}: {}; first run {}",
                    q(per_run),
                    if per_run.p50 <= REQUESTS_TARGET {
                        "met"
                    } else {
                        "NOT met"
                    },
                    first.map_or_else(|| "-".to_owned(), |n| n.to_string())
                );
                let _ = writeln!(
                    out,
                    "    by kind (later runs, summed): {:?}",
                    self.requests_by_kind
                );
            }
            (None, Some(first)) => {
                let _ = writeln!(
                    out,
                    "  requests: first run {first}; one run is too few for per-run numbers"
                );
            }
            (None, None) => {
                let _ = writeln!(out, "  requests per run: not measured (no --audit-log)");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let q = Quantiles::of(&[0.3, 0.1, 0.2, 0.4]).unwrap();
        assert_eq!((q.p50, q.p99, q.max), (0.2, 0.4, 0.4));
        assert!(Quantiles::of(&[]).is_none());
    }
}
