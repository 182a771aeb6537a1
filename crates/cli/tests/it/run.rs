//! `opencode-k8s run` against the simulated cluster: live output, the result as text and JSON,
//! exit statuses from error codes, and Ctrl-C cancelling the run and deleting its Job.

use std::process::Output;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opencode_k8s_testkit::{Resource, Rule};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::sim::{NS, POD, Sim, fixture, run_args};
use crate::{stderr, stdout};

const SESSION: &str = "ses_de2d87857ffeYcorR0xMgtIWlV";

/// Runs `opencode-k8s run` to its end with an agent config of `extra` over the defaults,
/// `prompt` and `more` arguments.
async fn run(sim: &Sim, extra: Value, prompt: &str, more: &[&str]) -> Output {
    let config = sim.config(extra);
    sim.cli(&run_args(config.to_str().unwrap(), prompt, more))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_streams_the_output_and_prints_the_result() {
    let sim = Sim::start().await;
    sim.replay("run1", 0);
    let out = run(
        &sim,
        json!({}),
        "Say hi.",
        &["--pod", POD, "--cwd", "/paperclip/workspaces/project"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, fixture("opencode/run1.stdout.jsonl"));
    let err = stderr(&out);
    assert!(
        err.contains("[opencode-k8s] created Job paperclip/oc-"),
        "{err}"
    );
    assert!(
        err.contains("[opencode-k8s] result: succeeded (exit 0), Job paperclip/oc-"),
        "{err}"
    );
    assert!(
        err.contains(&format!("  session:  {SESSION} (cwd /paperclip/workspaces/project); resume with --session {SESSION}")),
        "{err}"
    );
    assert!(
        err.contains("  summary:  Hi! I am the fake model."),
        "{err}"
    );
    let job = err
        .split("created Job paperclip/")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap();
    // The result as printed, from its first line on (the Kubernetes events before it vary
    // with timing); the Job name carries a random suffix.
    let result = &err[err.find("[opencode-k8s] result:").unwrap()..];
    insta::assert_snapshot!("run_result", result.replace(job, "<job>"));
    sim.cluster
        .wait_for(Resource::Jobs, NS, job, Duration::from_secs(10), |j| {
            j.is_none()
        })
        .await
        .expect("the finished Job is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prints_only_the_result_on_stdout() {
    let sim = Sim::start().await;
    sim.replay("run1", 0);
    let out = run(
        &sim,
        json!({}),
        "Say hi.",
        &["--pod", POD, "--run-id", "run-json", "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&stdout(&out)).expect("stdout is one JSON document");
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["errorCode"], Value::Null);
    assert_eq!(result["session"]["sessionId"], SESSION);
    assert_eq!(result["summary"], "Hi! I am the fake model.");
    assert_eq!(result["namespace"], NS);
    assert_eq!(result["provider"], "fake");
    assert!(
        result["usage"]["outputTokens"].as_u64().unwrap() > 0,
        "{result}"
    );
    // The agent's output still streams, on stderr.
    assert!(
        stderr(&out).contains(&String::from_utf8(fixture("opencode/run1.stdout.jsonl")).unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_exits_with_the_status_of_its_error_code() {
    let sim = Sim::start().await;
    sim.opencode("cat > /dev/null; echo 'Error: something broke' >&2; exit 3");
    let out = run(&sim, json!({}), "Say hi.", &["--pod", POD, "--json"]).await;
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["errorCode"], "opencode_failed");
    assert_eq!(result["exitCode"], 3);
    assert_eq!(out.status.code(), Some(3), "opencode_failed exits 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_creates_nothing_and_exits_2() {
    let sim = Sim::start().await;
    let out = run(&sim, json!({"timeoutSec": "soon"}), "hi", &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("timeoutSec"), "{}", stderr(&out));
    assert!(stderr(&out).contains("\ncode: config_invalid\nhint: "));
    assert!(sim.jobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_run_and_deletes_its_job() {
    let sim = Sim::start().await;
    sim.opencode("cat > /dev/null; echo started; exec sleep 300");
    let config = sim.config(json!({}));
    let mut child = sim
        .command(&run_args(
            config.to_str().unwrap(),
            "Work for a long time.",
            &["--pod", POD, "--run-id", "run-ctrl-c"],
        ))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the agent starts")
        .unwrap();
    assert_eq!(started.as_deref(), Some("started"));
    let job = sim.jobs()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("Ctrl-C ends the run promptly")
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("[opencode-k8s] cancelling: deleting the Job (Ctrl-C again to exit at once)"),
        "{err}"
    );
    assert!(err.contains("[opencode-k8s] result: cancelled ("), "{err}");
    assert!(
        sim.cluster.get_json(Resource::Jobs, NS, &job).is_none(),
        "the Job is gone"
    );
    assert!(
        sim.cluster.get_json(Resource::Secrets, NS, &job).is_none(),
        "the Secret is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pod_that_does_not_exist_fails_and_creates_nothing() {
    let sim = Sim::start().await;
    sim.replay("run1", 0);
    let secrets = sim.cluster.list_json(Resource::Secrets, Some(NS));
    // With an image of its own the run could go on uninherited: it must not.
    let out = run(
        &sim,
        json!({"image": "ghcr.io/example/opencode:1"}),
        "Say hi.",
        &["--pod", "paperclip/no-such-pod"],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    insta::assert_snapshot!("run_pod_not_found", err);
    assert!(sim.jobs().is_empty(), "no Job is created");
    assert_eq!(
        sim.cluster.list_json(Resource::Secrets, Some(NS)),
        secrets,
        "no Secret is created"
    );
    // With --json, stdout still holds one JSON document: the error.
    let out = run(
        &sim,
        json!({"image": "ghcr.io/example/opencode:1"}),
        "Say hi.",
        &["--pod", "paperclip/no-such-pod", "--json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let error: Value = serde_json::from_str(&stdout(&out)).expect("stdout is one JSON document");
    assert_eq!(error["error"]["code"], "config_invalid");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("failed to find the Paperclip pod paperclip/no-such-pod named by --pod"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_on_a_file_are_plain_readable_lines() {
    let sim = Sim::start().await;
    sim.replay("run1", 0);
    // Everything a run needs but the (optional) events: their watch fails with 403 and the
    // engine logs a warning while the run goes on.
    sim.cluster.add_user(
        "no-events",
        "paperclip-sa",
        vec![
            Rule::allow(&["*"], "batch", &["jobs"], Some(NS)),
            Rule::allow(&["*"], "", &["pods", "pods/log", "secrets"], Some(NS)),
            Rule::allow(&["*"], "coordination.k8s.io", &["leases"], Some(NS)),
        ],
    );
    let kubeconfig = sim.kubeconfig_for("no-events");
    let out = run(
        &sim,
        json!({"kubeconfig": kubeconfig}),
        "Say hi.",
        &["--pod", POD],
    )
    .await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("event watch interrupted"))
        .collect();
    assert!(!warnings.is_empty(), "the failing watch is reported: {err}");
    for line in warnings {
        assert!(
            line.starts_with("[opencode-k8s] warning: event watch interrupted; retrying"),
            "{line}"
        );
        assert!(
            line.contains("forbidden"),
            "the API's message is kept: {line}"
        );
        assert!(!line.contains("Status {"), "no Debug dump: {line}");
    }
    assert!(!err.contains('\u{1b}'), "no ANSI escapes: {err:?}");
    assert!(!err.contains("Status {"), "no Debug dump: {err}");
}

/// Inline kubeconfig content is the agent config's, not the operator's: a credential plugin in it
/// is refused before any client is built, even by the CLI (which trusts kubeconfig *files*).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_kubeconfig_content_with_an_exec_plugin_is_refused_and_never_runs() {
    let sim = Sim::start().await;
    let marker = sim.dir.path().join("exec-ran");
    let content = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:9'}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\nusers: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: touch, args: ['{}']}}}}}}]\n",
        marker.display()
    );
    let out = run(
        &sim,
        json!({"kubeconfig": "", "kubeconfigContent": content}),
        "hi",
        &["--pod", POD],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\ncode: config_invalid\nhint: "), "{err}");
    assert!(
        err.contains("kubeconfigContent"),
        "the field is named: {err}"
    );
    assert!(!marker.exists(), "the exec plugin never ran");
    assert!(sim.jobs().is_empty());
}
