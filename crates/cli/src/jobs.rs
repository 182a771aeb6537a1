//! `opencode-k8s jobs`: the adapter's Jobs, one line each, or as JSON.

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::ListParams;
use opencode_k8s_core::lifecycle::ApiError;
use opencode_k8s_core::manifest::{
    AGENT_ID_KEY, AGENT_NAME_ANNOTATION, MANAGED_BY_KEY, MANAGED_BY_VALUE, RUN_ID_KEY,
};
use serde::Serialize;

use crate::cluster::ClusterArgs;

/// Options of `jobs`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  opencode-k8s jobs -n paperclip
  opencode-k8s jobs --all-namespaces --json | jq '.[] | select(.status == \"Failed\")'")]
pub(crate) struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// List the Jobs of every namespace.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One Job, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobRow {
    namespace: String,
    name: String,
    /// Agent name (annotation), else its id label.
    agent: String,
    run_id: String,
    /// `Active`, `Succeeded`, `Failed (Reason)`, `Terminating`.
    status: String,
    /// Seconds since creation.
    age_seconds: u64,
}

fn label(job: &Job, key: &str) -> Option<String> {
    job.metadata.labels.as_ref()?.get(key).cloned()
}

fn status(job: &Job) -> String {
    if job.metadata.deletion_timestamp.is_some() {
        return "Terminating".to_owned();
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    // v1.36 writes `SuccessCriteriaMet` / `FailureTarget` seconds before `Complete` / `Failed`:
    // the Job is over from the first.
    let finished = |types: [&str; 2]| {
        conditions
            .iter()
            .filter(|c| c.status == "True")
            .find(|c| types.contains(&c.type_.as_str()))
    };
    let terminal = finished(["Complete", "Failed"])
        .or_else(|| finished(["SuccessCriteriaMet", "FailureTarget"]));
    match terminal {
        Some(c) if matches!(c.type_.as_str(), "Complete" | "SuccessCriteriaMet") => {
            "Succeeded".to_owned()
        }
        Some(c) => match c.reason.as_deref() {
            Some(reason) if !reason.is_empty() => format!("Failed ({reason})"),
            _ => "Failed".to_owned(),
        },
        None => "Active".to_owned(),
    }
}

pub(crate) fn row(job: &Job, now: Timestamp) -> JobRow {
    let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
    JobRow {
        namespace: job.metadata.namespace.clone().unwrap_or_default(),
        name: job.metadata.name.clone().unwrap_or_default(),
        agent: job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(AGENT_NAME_ANNOTATION).cloned())
            .or_else(|| label(job, AGENT_ID_KEY))
            .unwrap_or_default(),
        run_id: label(job, RUN_ID_KEY).unwrap_or_default(),
        status: status(job),
        age_seconds: created
            .and_then(|t| u64::try_from(now.as_second() - t.as_second()).ok())
            .unwrap_or_default(),
    }
}

/// An age the way kubectl shows it: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The rows as an aligned table with a header.
pub(crate) fn table(rows: &[JobRow]) -> String {
    let header = ["NAMESPACE", "NAME", "AGENT", "RUN", "STATUS", "AGE"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                r.name.clone(),
                r.agent.clone(),
                r.run_id.clone(),
                r.status.clone(),
                age(r.age_seconds),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:width$}   ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&header);
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

#[expect(clippy::print_stdout, reason = "the list is the command's output")]
#[expect(clippy::print_stderr, reason = "an empty list is explained on stderr")]
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let api: Api<Job> = if args.all_namespaces {
        Api::all(client)
    } else {
        Api::namespaced(client, &namespace)
    };
    let params = ListParams::default().labels(&format!("{MANAGED_BY_KEY}={MANAGED_BY_VALUE}"));
    let where_ = if args.all_namespaces {
        "any namespace".to_owned()
    } else {
        format!("namespace {namespace}")
    };
    let listed = api
        .list(&params)
        .await
        .map_err(|e| ApiError::new(format!("list the adapter's Jobs in {where_}"), e))?;
    let now = Timestamp::now();
    let mut rows: Vec<JobRow> = listed.items.iter().map(|job| row(job, now)).collect();
    rows.sort_by(|a, b| {
        (&a.namespace, b.age_seconds, &a.name).cmp(&(&b.namespace, a.age_seconds, &b.name))
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        eprintln!("no opencode-k8s Jobs in {where_}");
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(3 * 86400), "3d");
    }

    #[test]
    fn a_job_whose_success_criteria_are_met_is_succeeded_before_complete() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "oc-a-1", "namespace": "ns", "creationTimestamp": "2026-11-27T10:00:00Z"},
            "status": {"active": 1, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"}
            ]}
        }))
        .unwrap();
        let now: Timestamp = "2026-11-27T10:05:00Z".parse().unwrap();
        assert_eq!(row(&job, now).status, "Succeeded");
    }

    #[test]
    fn a_job_reads_its_status_from_its_terminal_condition() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "oc-a-1", "namespace": "ns", "creationTimestamp": "2026-11-27T10:00:00Z",
                         "labels": {AGENT_ID_KEY: "agent-1", RUN_ID_KEY: "run-1"}},
            "status": {"conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}
            ]}
        }))
        .unwrap();
        let now: Timestamp = "2026-11-27T10:05:00Z".parse().unwrap();
        let row = row(&job, now);
        assert_eq!(row.status, "Failed (DeadlineExceeded)");
        assert_eq!((row.agent.as_str(), row.age_seconds), ("agent-1", 300));
        assert_eq!(
            table(&[row]),
            "NAMESPACE   NAME     AGENT     RUN     STATUS                      AGE\nns          oc-a-1   agent-1   run-1   Failed (DeadlineExceeded)   5m\n"
        );
    }
}
