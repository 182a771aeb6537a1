//! `opencode-k8s doctor`: every check a run depends on, with the fix for each that fails.

use std::fmt::Write as _;
use std::process::ExitCode;

use opencode_k8s_core::lifecycle::{CheckStatus, DoctorReport, DoctorTarget, doctor};

use crate::cluster::{ClusterArgs, InheritArgs};

/// Options of `doctor`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  opencode-k8s doctor --config agent.json --pod paperclip/paperclip-0
  kubectl exec -n paperclip deploy/paperclip -- opencode-k8s doctor
  opencode-k8s doctor --kubeconfig ~/.kube/config -n agents --json

Access is checked for the credentials doctor runs with: run it in the Paperclip pod (or with
the Paperclip service account's kubeconfig) to check what runs will be allowed. The exit
status is 1 when any check failed, 0 otherwise (warnings included).")]
pub(crate) struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    inherit: InheritArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
pub(crate) async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (source, namespace) = args.cluster.target()?;
    let self_pod = args.inherit.self_pod()?;
    let report = doctor(&DoctorTarget { source, namespace }, &self_pod).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The report as aligned lines, fixes indented under their check, and a count.
pub(crate) fn text(report: &DoctorReport) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or_default();
    let mut out = String::new();
    let (mut warned, mut failed) = (0, 0);
    for check in &report.checks {
        let label = match check.status {
            CheckStatus::Pass => "PASS",
            CheckStatus::Warn => {
                warned += 1;
                "WARN"
            }
            CheckStatus::Fail => {
                failed += 1;
                "FAIL"
            }
        };
        let _ = writeln!(out, "{label}  {:width$}  {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            let _ = writeln!(out, "      fix: {}", fix.replace('\n', "\n           "));
        }
    }
    let passed = report.checks.len() - warned - failed;
    let _ = writeln!(
        out,
        "{passed} passed, {warned} warnings, {failed} failed{}",
        report
            .namespace
            .as_deref()
            .map(|ns| format!(" (agent Jobs in namespace {ns})"))
            .unwrap_or_default()
    );
    out
}
