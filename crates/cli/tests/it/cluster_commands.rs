//! `jobs`, `logs` and `gc` against the simulated cluster, on a Job kept by `retainJobs`.

use std::time::Duration;

use opencode_k8s_testkit::Resource;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::sim::{NS, POD, Sim, fixture, run_args};
use crate::{stderr, stdout};

/// Every run of digits followed by `s` at the end of a line (the AGE column) as `<age>`.
fn without_age(table: &str) -> String {
    table
        .lines()
        .map(|line| match line.rsplit_once("   ") {
            Some((rest, age))
                if age.ends_with('s') && age[..age.len() - 1].parse::<u64>().is_ok() =>
            {
                format!("{rest}   <age>")
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_logs_and_gc_of_a_retained_job() {
    let sim = Sim::start().await;
    sim.replay("run1", 0);
    let config = sim.config(json!({"retainJobs": true}));
    let config = config.to_str().unwrap();
    let out = sim
        .cli(&run_args(
            config,
            "Say hi.",
            &[
                "--pod",
                POD,
                "--run-id",
                "run-kept",
                "--agent-name",
                "Kept Agent",
                "--json",
            ],
        ))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let job = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["jobName"]
        .as_str()
        .unwrap()
        .to_owned();

    // jobs: the cluster comes from the agent config.
    let out = sim.cli(&["jobs", "--config", config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!("jobs_table", without_age(&stdout(&out)));
    let out = sim.cli(&["jobs", "--config", config, "--json"]).await;
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["name"], job.as_str());
    assert_eq!(rows[0]["runId"], "run-kept");
    assert_eq!(rows[0]["agent"], "Kept Agent");
    assert_eq!(rows[0]["status"], "Succeeded");

    // logs: the pod's output, byte for byte.
    let out = sim
        .cli(&[
            "logs",
            "run-kept",
            "--kubeconfig",
            sim.kubeconfig(),
            "-n",
            NS,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, fixture("opencode/run1.stdout.jsonl"));
    let out = sim
        .cli(&["logs", "run-kept", "--follow", "--config", config])
        .await;
    assert_eq!(out.stdout, fixture("opencode/run1.stdout.jsonl"));

    // gc: a dry run first, then for real. The run released the agent's Lease.
    let leases = || sim.cluster.list_json(Resource::Leases, Some(NS));
    let lease = leases()[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let out = sim
        .cli(&["gc", "--config", config, "--older-than", "0s", "--dry-run"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!(
            "would delete Job paperclip/{job} (completed, finished "
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!(
            "\nwould delete Lease paperclip/{lease} (released, last written "
        )),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).ends_with("dry run, nothing deleted: 1 Jobs, 0 Secrets, 1 Leases in namespace paperclip; 0 running Jobs left alone\n"));
    assert_eq!(sim.jobs().len(), 1);
    assert_eq!(leases().len(), 1);
    let out = sim
        .cli(&["gc", "--config", config, "--older-than", "0s"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&format!("deleted Job paperclip/{job} ")));
    assert!(leases().is_empty(), "gc deletes the released Lease");
    let out = sim.cli(&["jobs", "--config", config]).await;
    assert_eq!(
        stderr(&out),
        "no opencode-k8s Jobs in namespace paperclip\n"
    );

    // logs of a run whose Job is gone says why.
    let out = sim.cli(&["logs", "run-kept", "--config", config]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unless `retainJobs` is set"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_list_exits_with_k8s_forbidden() {
    let sim = Sim::start().await;
    sim.cluster.add_user("nobody", "nobody", Vec::new());
    let kubeconfig = sim.kubeconfig_for("nobody");
    let out = sim
        .cli(&[
            "jobs",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "-n",
            NS,
        ])
        .await;
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("\ncode: k8s_forbidden\nhint: "),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_a_running_job_to_its_end() {
    let sim = Sim::start().await;
    let go = sim.bin_path().join("go");
    sim.opencode(&format!(
        "cat > /dev/null; echo one; while [ ! -e {} ]; do sleep 0.05; done; echo two",
        go.display()
    ));
    let config = sim.config(json!({}));
    let config = config.to_str().unwrap();
    let mut run = sim
        .command(&run_args(
            config,
            "hi",
            &["--pod", POD, "--run-id", "run-follow"],
        ))
        .spawn()
        .unwrap();
    let mut run_out = BufReader::new(run.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut run_out).await.as_deref(), Some("one"));

    let mut logs = sim
        .command(&["logs", "run-follow", "--follow", "--config", config])
        .spawn()
        .unwrap();
    let mut logs_out = BufReader::new(logs.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut logs_out).await.as_deref(), Some("one"));
    std::fs::write(&go, "").unwrap();
    assert_eq!(next_line(&mut logs_out).await.as_deref(), Some("two"));
    assert_eq!(
        next_line(&mut logs_out).await,
        None,
        "the stream ends with the container"
    );
    let status = tokio::time::timeout(WAIT, logs.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(WAIT, run.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

const WAIT: Duration = Duration::from_secs(60);

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Option<String> {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line within the bound")
        .unwrap()
}
