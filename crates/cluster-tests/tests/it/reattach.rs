//! The engine killed mid-run on a real cluster, and a new one reattaching: the Job keeps
//! running, and the two outputs together are the pod's.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use opencode_k8s_cluster_tests::{Record, check_lines, say, tier};
use opencode_k8s_core::lifecycle::RunStatus;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::{bounded, bounds};

const LINES: u64 = 6000;
const PLAN: &str = "lines=6000 rate=500 stderr=1 every=1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_engine_and_a_new_one_from_its_checkpoint_deliver_the_pods_output_once() {
    let Some(tier) = tier("reattach_engine").await else {
        return;
    };
    let sandbox = tier
        .sandbox("reattach-engine", Default::default())
        .await
        .unwrap();
    let config = sandbox.config(json!({}));
    let request = sandbox.request("reattach", "agent-reattach", PLAN);
    let first = Record::default();
    {
        let engine = sandbox.engine(bounds());
        tokio::select! {
            result = engine.run(request.clone(), &config, &first, CancellationToken::new()) => {
                panic!("the run ended before the engine was dropped: {result:?}")
            }
            () = bounded(Duration::from_secs(90), "1,500 lines", async {
                while first.output().matches("\nline ").count() < 1500 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }) => {}
        }
    }
    let checkpoint = first
        .last_checkpoint()
        .expect("output came with checkpoints");
    let second = Record::default();
    let result = bounded(
        Duration::from_secs(120),
        "the reattached run",
        sandbox.engine(bounds()).reattach(
            request,
            &config,
            &checkpoint,
            &second,
            CancellationToken::new(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", second.lines().join("\n")));
    let together = first.output() + &second.output();
    let report = check_lines(&together, LINES);
    say(&format!(
        "real-cluster tier: reattach (engine dropped at checkpoint {checkpoint}): {report}"
    ));
    assert_eq!(
        result.status,
        RunStatus::Succeeded,
        "{result:?}\n{}",
        second.lines().join("\n")
    );
    assert!(report.exact(), "{report}");
    assert_eq!(
        together.matches("\"type\":\"step_finish\"").count(),
        7,
        "every step line once"
    );
}

/// The CLI binary next to this test binary (`cargo build -p opencode-k8s-cli` builds it).
fn cli() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("opencode-k8s"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p opencode-k8s-cli",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cli_run_is_finished_by_the_next_run_of_the_same_task() {
    let Some(tier) = tier("reattach_cli").await else {
        return;
    };
    let sandbox = tier
        .sandbox("reattach-cli", Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.json");
    std::fs::write(&config, sandbox.config_json(json!({})).to_string()).unwrap();
    let pod = format!("{}/paperclip", sandbox.ns);
    let command = || {
        let mut command = tokio::process::Command::new(cli());
        command
            .args(["run", "--config"])
            .arg(&config)
            .args(["--prompt", PLAN, "--pod", &pod])
            .args(["--run-id", "cli-reattach", "--agent-id", "agent-cli"])
            .args(["--task-key", "task-cli"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let mut first = command().spawn().unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let mut before = String::new();
    bounded(Duration::from_secs(90), "1,500 lines from the CLI", async {
        let mut numbered = 0;
        while numbered < 1500 {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the CLI still runs");
            numbered += u32::from(line.starts_with("line "));
            before.push_str(&line);
            before.push('\n');
        }
    })
    .await;
    first.kill().await.unwrap();
    let second = bounded(Duration::from_secs(120), "the second CLI run", async {
        let mut child = command().spawn().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (read_out, read_err) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        read_out.unwrap();
        read_err.unwrap();
        (child.wait().await.unwrap(), out, err)
    })
    .await;
    let (status, after, log) = second;
    let first_report = check_lines(&before, 0);
    let second_report = check_lines(&after, LINES);
    let replayed = check_lines(&(before.clone() + &after), LINES)
        .duplicated
        .len();
    say(&format!(
        "real-cluster tier: CLI killed after {} lines, the next run printed {} ({replayed} of them again): {second_report}",
        first_report.delivered, second_report.delivered
    ));
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("reattaching to Job"),
        "the second run adopts the Job:\n{log}"
    );
    assert!(
        first_report.duplicated.is_empty() && first_report.out_of_order.is_empty(),
        "{first_report}"
    );
    assert!(second_report.exact(), "{second_report}\n{log}");
}
