//! `opencode-k8s gc`: delete the adapter's finished Jobs older than a bound, per-run Secrets
//! whose Job is gone and agents' Leases nobody has held for the bound; running Jobs and held
//! Leases are never touched.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use opencode_k8s_core::lifecycle::{GcReport, gc};

use crate::InputError;
use crate::cluster::ClusterArgs;
use crate::jobs::age;

/// Options of `gc`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  opencode-k8s gc -n paperclip --dry-run
  opencode-k8s gc -n paperclip --older-than 24h

Jobs kept by `retainJobs`, or left behind when Paperclip stopped before cleaning up, are deleted
once finished for longer than --older-than (their pods and Secrets go with them). Secrets whose
Job is gone are deleted at once; Secrets that never got an owner Job only after --older-than.
An agent's Lease (the guard of one run at a time) is deleted once nobody has held it for
--older-than; the agent's next run creates it again. The exit status is 1 when a deletion
failed.")]
pub(crate) struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only Jobs finished at least this long ago: a number with `s`, `m`, `h` or `d`.
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = parse_age)]
    older_than: Duration,
    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
fn parse_age(text: &str) -> Result<Duration, InputError> {
    let invalid = || InputError {
        what: format!("--older-than {text}"),
        problem: "expected a number with s, m, h or d, e.g. 30m or 24h".into(),
    };
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(invalid()),
    };
    Ok(Duration::from_secs(number.saturating_mul(unit)))
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
pub(crate) async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (client, namespace) = args.cluster.connect().await?;
    let report = gc(&client, &namespace, args.older_than, args.dry_run).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn text(report: &GcReport) -> String {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut out = String::new();
    // Secrets are listed without an age: a missing owner, not time, is why they go.
    for (kind, collected, since) in [
        ("Job", &report.jobs, Some("finished")),
        ("Secret", &report.secrets, None),
        ("Lease", &report.leases, Some("last written")),
    ] {
        for c in collected {
            let when = since
                .map(|since| format!(", {since} {} ago", age(c.age_seconds)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{verb} {kind} {}/{} ({}{when})",
                report.namespace, c.name, c.reason
            );
        }
    }
    for failure in &report.failures {
        let _ = writeln!(out, "{failure}");
    }
    let _ = writeln!(
        out,
        "{}: {} Jobs, {} Secrets, {} Leases in namespace {}; {} running Jobs left alone",
        if report.dry_run {
            "dry run, nothing deleted"
        } else {
            "done"
        },
        report.jobs.len(),
        report.secrets.len(),
        report.leases.len(),
        report.namespace,
        report.running
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_unit() {
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_age("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_age("1w").is_err());
        assert!(parse_age("h").is_err());
        assert!(parse_age("").is_err());
    }
}
