//! `opencode-k8s demo`: one agent turn end to end on this machine, no cluster or LLM account
//! needed.
//!
//! It starts the simulated cluster (testkit, a TEST DOUBLE: pods run as local processes) with a
//! Paperclip pod and a fake OpenAI-compatible LLM, then runs one turn through the real engine
//! (`Engine::run`, exactly what Paperclip's adapter calls) with live output, and prints the
//! result and the Job the run created. The pod runs the real `opencode` when it is installed
//! (`scripts/setup-opencode`) and otherwise a clearly labelled scripted stand-in.

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use anyhow::Context as _;
use opencode_k8s_core::config::AgentConfig;
use opencode_k8s_core::event::{RunEvent, RunSink};
use opencode_k8s_core::lifecycle::{Engine, EngineOptions, RunResult, SelfPod};
use opencode_k8s_core::manifest::RunRequest;
use opencode_k8s_core::parse::strip_ansi;
use opencode_k8s_testkit::llm::{self, Behaviour};
use opencode_k8s_testkit::{Cluster, ClusterOptions, FakeLlm, Resource};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::output::{result_exit_code, result_text};
use crate::request::RequestArgs;

const NAMESPACE: &str = "paperclip";
const COMPANY: &str = "demo-company";
const AGENT: &str = "demo-agent";
const RUN_ID: &str = "demo-run-1";
const CWD: &str = "/paperclip/workspaces/demo";
const DEFAULT_PROMPT: &str = "Run `echo hello-from-tool` and tell me what it printed.";

/// Arguments of `opencode-k8s demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  opencode-k8s demo                      # the real opencode if installed, else the stand-in
  opencode-k8s demo --scripted --raw     # the stand-in, OpenCode's JSON lines as they come
  opencode-k8s demo --model fake-reasoning --prompt 'Say hi.'

Install the real opencode first with scripts/setup-opencode (npm opencode-ai@1.18.33).
Needs root: the simulated kubelet runs the pod as uid 1000 in a private mount namespace.")]
pub(crate) struct Args {
    /// The `opencode` binary the pod runs [default: $OPENCODE_BIN, else the one
    /// scripts/setup-opencode installed, else the scripted stand-in].
    #[arg(long, value_name = "PATH", conflicts_with = "scripted")]
    opencode: Option<PathBuf>,
    /// Run the scripted stand-in instead of the real opencode.
    #[arg(long)]
    scripted: bool,
    /// The prompt of the turn.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    /// The fake LLM's behaviour, by model id: fake-model (plain reply), fake-tool (a bash tool
    /// call, then a reply), fake-toolerr, fake-reasoning, fake-401, fake-slow. fake-500 makes
    /// OpenCode retry silently for ~90 s.
    #[arg(long, default_value = "fake-tool", value_parser = model_id)]
    model: Behaviour,
    /// Print OpenCode's raw JSON lines instead of rendering them.
    #[arg(long)]
    raw: bool,
}

fn model_id(id: &str) -> Result<Behaviour, String> {
    Behaviour::ALL
        .into_iter()
        .find(|b| b.model_id() == id)
        .ok_or_else(|| {
            let ids: Vec<&str> = Behaviour::ALL.iter().map(|b| b.model_id()).collect();
            format!("not a fake model; accepted: {}", ids.join(", "))
        })
}

/// Which `opencode` the pod runs.
enum Agent {
    Real(PathBuf),
    /// The stand-in, with why the real one is not used.
    Scripted(String),
}

/// Where the demo's lines go: stdout, or a test's buffer.
type Say = dyn Fn(&str) + Send + Sync;

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    demo(args, &print_line).await
}

async fn demo(args: Args, say: &Say) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let agent = choose_agent(&args);
    say("opencode-k8s demo: one agent turn through the real engine");
    let world = World::start(&args, &agent, say).await?;
    say(&format!("  prompt:  {}", args.prompt));
    say("");
    let result = world.run_turn(&args, say).await?;
    say("");
    for line in result_text(&result).lines() {
        say(line);
    }
    print_job(&world.cluster, &result, say);
    world.cluster.shutdown().await;
    say("");
    say(&format!(
        "Done in {:.1} s; the simulated cluster, the fake LLM and their files are gone.",
        started.elapsed().as_secs_f64()
    ));
    if matches!(agent, Agent::Scripted(_)) {
        say("This was the scripted stand-in; run scripts/setup-opencode for the real opencode.");
    }
    Ok(result_exit_code(&result))
}

/// What the demo's turn runs in: the simulated cluster with its Paperclip pod, the fake LLM,
/// and the directory of the pod's `opencode`.
struct World {
    cluster: Cluster,
    fake: FakeLlm,
    bin: BinDir,
}

impl World {
    /// Start everything, saying what each part is.
    async fn start(args: &Args, agent: &Agent, say: &Say) -> anyhow::Result<World> {
        say(
            "  cluster: simulated cluster (testkit) — no real Kubernetes; pods run as local processes",
        );
        let cluster = Cluster::start(ClusterOptions::default())
            .await
            .context("failed to start the simulated cluster")?;
        cluster
            .seed_paperclip_pod(NAMESPACE)
            .map_err(|e| anyhow::anyhow!("failed to seed the Paperclip pod: {}", e.message))?;
        say(&format!(
            "           {} with a Paperclip pod and its RWX volume in namespace {NAMESPACE}",
            cluster.url()
        ));
        let fake = FakeLlm::start()
            .await
            .context("failed to start the fake LLM")?;
        let unused = if matches!(agent, Agent::Scripted(_)) {
            " (the stand-in does not call it)"
        } else {
            ""
        };
        say(&format!(
            "  LLM:     fake OpenAI-compatible server (test double) at {}, model {}{unused}",
            fake.base_url(),
            args.model.model()
        ));
        let bin = BinDir::create()?;
        stage_agent(agent, &bin, say)?;
        Ok(World { cluster, fake, bin })
    }

    /// The turn through the engine, its output live; the result once the engine has stopped.
    async fn run_turn(&self, args: &Args, say: &Say) -> anyhow::Result<RunResult> {
        let config = config(&self.cluster, &self.fake, &self.bin, args.model)?;
        let engine = Engine::new(EngineOptions {
            self_pod: SelfPod::Named {
                namespace: NAMESPACE.into(),
                name: "paperclip".into(),
            },
            ..EngineOptions::default()
        });
        let sink = LiveLog {
            say,
            raw: args.raw,
            partial: Mutex::new(String::new()),
        };
        let cancel = CancellationToken::new();
        let on_ctrl_c = crate::cancel_on_ctrl_c(cancel.clone());
        let outcome = engine
            .run(request(&args.prompt)?, &config, &sink, cancel)
            .await;
        // Its namespace watches would outlive the run and see the cluster shut down after it.
        engine.shutdown().await;
        on_ctrl_c.abort();
        sink.flush();
        Ok(outcome?)
    }
}

/// Put the chosen `opencode` where the pod finds it.
fn stage_agent(agent: &Agent, bin: &BinDir, say: &Say) -> anyhow::Result<()> {
    match agent {
        Agent::Real(path) => {
            llm::stage_opencode(path, bin.path()).with_context(|| {
                format!("failed to make {} runnable by the pod", path.display())
            })?;
            say(&format!(
                "  agent:   the real opencode ({})",
                path.display()
            ));
        }
        Agent::Scripted(why) => {
            let script = bin.path().join("opencode");
            std::fs::write(&script, STAND_IN)?;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
            say(&format!(
                "  agent:   SCRIPTED STAND-IN for opencode, not the real agent ({why})"
            ));
        }
    }
    Ok(())
}

fn choose_agent(args: &Args) -> Agent {
    if args.scripted {
        return Agent::Scripted("--scripted".into());
    }
    if let Some(path) = &args.opencode {
        return Agent::Real(path.clone());
    }
    match llm::find_opencode() {
        Ok(path) => Agent::Real(path),
        Err(why) => Agent::Scripted(why),
    }
}

fn config(
    cluster: &Cluster,
    fake: &FakeLlm,
    bin: &BinDir,
    model: Behaviour,
) -> anyhow::Result<AgentConfig> {
    let config = json!({
        "model": model.model(),
        "kubeconfigContent": std::fs::read_to_string(cluster.kubeconfig_path())?,
        "namespace": NAMESPACE,
        "timeoutSec": "120",
        // Keep the Job after the run so it can be shown; the whole cluster goes afterwards.
        "retainJobs": "true",
        "env": {
            "PATH": format!("{}:/usr/local/bin:/usr/bin:/bin", bin.path().display()),
            "OPENCODE_CONFIG_CONTENT": fake.opencode_config().to_string(),
            "OPENCODE_DISABLE_MODELS_FETCH": "true",
        },
    });
    Ok(AgentConfig::from_json(&config)?)
}

/// The demo's run, as Paperclip would send it for an agent's first turn.
fn request(prompt: &str) -> anyhow::Result<RunRequest> {
    RequestArgs {
        prompt: Some(prompt.to_owned()),
        prompt_file: None,
        run_id: Some(RUN_ID.into()),
        agent_id: AGENT.into(),
        company_id: COMPANY.into(),
        agent_name: Some("Demo Agent".into()),
        task_key: None,
        cwd: Some(CWD.into()),
        session: None,
        session_cwd: None,
    }
    .request(|| RUN_ID.into(), prompt)
}

/// One line on stdout; a closed pipe must not stop the demo.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// A world-readable directory for the pod's `opencode` (the pod runs as uid 1000), removed on
/// drop.
struct BinDir(PathBuf);

impl BinDir {
    fn create() -> anyhow::Result<BinDir> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "opencode-k8s-demo-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier process with the same pid is ours to replace.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(BinDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prints the run log live: the engine's and Kubernetes' lines as they are, OpenCode's JSON
/// events rendered readably (or raw with `--raw`).
struct LiveLog<'a> {
    say: &'a Say,
    raw: bool,
    /// Output not yet ended by a newline.
    partial: Mutex<String>,
}

impl LiveLog<'_> {
    fn flush(&self) {
        let rest =
            std::mem::take(&mut *self.partial.lock().unwrap_or_else(PoisonError::into_inner));
        if !rest.is_empty() {
            self.output_line(&rest);
        }
    }

    fn output_line(&self, line: &str) {
        if self.raw {
            (self.say)(line);
        } else {
            for rendered in render_line(line) {
                (self.say)(&rendered);
            }
        }
    }
}

impl RunSink for LiveLog<'_> {
    fn emit(&self, event: RunEvent) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        match &event {
            RunEvent::Output { text, .. } => {
                let lines: Vec<String> = {
                    let mut partial = self.partial.lock().unwrap_or_else(PoisonError::into_inner);
                    partial.push_str(text);
                    let complete = partial.rfind('\n').map_or(0, |i| i + 1);
                    let done: String = partial.drain(..complete).collect();
                    done.lines().map(str::to_owned).collect()
                };
                for line in lines {
                    self.output_line(&line);
                }
            }
            other => (self.say)(&other.to_string()),
        }
        Box::pin(async {})
    }
}

/// One line of the pod's output, readably: OpenCode's events by type, anything else (stderr)
/// as is, without ANSI escapes.
fn render_line(line: &str) -> Vec<String> {
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        let text = strip_ansi(line);
        return if text.trim().is_empty() {
            Vec::new()
        } else {
            vec![format!("  | {text}")]
        };
    };
    let part = &event["part"];
    let text = |v: &Value| v.as_str().unwrap_or_default().trim_end().to_owned();
    match event["type"].as_str().unwrap_or_default() {
        "step_start" => vec!["  > step".to_owned()],
        "text" => indent("  assistant: ", &text(&part["text"])),
        "reasoning" => indent("  thinking:  ", &text(&part["text"])),
        "tool_use" => {
            let state = &part["state"];
            let input = state["input"]["command"]
                .as_str()
                .map_or_else(|| state["input"].to_string(), str::to_owned);
            let mut lines = vec![format!(
                "  tool {} ({}): {input}",
                text(&part["tool"]),
                text(&state["status"])
            )];
            let result = if state["status"] == "error" {
                text(&state["error"])
            } else {
                text(&state["output"])
            };
            lines.extend(indent("    -> ", &result));
            lines
        }
        "step_finish" => {
            let tokens = &part["tokens"];
            vec![format!(
                "  < step finished ({}): {} in, {} cached, {} out, {} reasoning tokens; ${:.6}",
                text(&part["reason"]),
                tokens["input"],
                tokens["cache"]["read"],
                tokens["output"],
                tokens["reasoning"],
                part["cost"].as_f64().unwrap_or_default()
            )]
        }
        "error" => vec![format!(
            "  error: {}: {}",
            text(&event["error"]["name"]),
            text(&event["error"]["data"]["message"])
        )],
        _ => vec![format!("  {line}")],
    }
}

/// `first` before the first line of `text`, its width of spaces before the others.
fn indent(first: &str, text: &str) -> Vec<String> {
    let pad = " ".repeat(first.chars().count());
    text.lines()
        .enumerate()
        .map(|(i, line)| format!("{}{line}", if i == 0 { first } else { &pad }))
        .collect()
}

/// The Job the run created, as the cluster stored it: identity, labels, the pod's security
/// settings and command; env by name only (values may be secrets and live in the Secret).
fn print_job(cluster: &Cluster, result: &RunResult, say: &Say) {
    say("");
    let Some(job) = cluster.get_json(Resource::Jobs, &result.namespace, &result.job_name) else {
        say(&format!(
            "The Job {}/{} is gone already.",
            result.namespace, result.job_name
        ));
        return;
    };
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    say("The Job it created (kept for this demo by retainJobs; a real cluster gets the same):");
    say(&format!(
        "  Job {}/{}, conditions: {}",
        result.namespace,
        result.job_name,
        true_conditions(&job).join(", ")
    ));
    say(&format!(
        "  image {} (inherited from the Paperclip pod; nothing is pulled here), cwd {}",
        container["image"].as_str().unwrap_or_default(),
        container["workingDir"].as_str().unwrap_or_default()
    ));
    let mut command = shell_words(&container["command"]);
    command.extend(shell_words(&container["args"]));
    say(&format!("  command: {}", command.join(" ")));
    say(&format!("  env: {}", env_names(container).join(", ")));
    for (title, value) in [
        ("labels", &job["metadata"]["labels"]),
        ("pod securityContext", &pod["securityContext"]),
        ("container securityContext", &container["securityContext"]),
        ("volumes", &pod["volumes"]),
    ] {
        say(&format!("  {title}:"));
        let yaml = serde_saphyr::to_string(value).unwrap_or_else(|_| format!("{value:#}"));
        for line in yaml.lines() {
            say(&format!("    {line}"));
        }
    }
}

/// The items of a JSON array, none for anything else.
fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A command's words as a shell would need them, quoted where they hold spaces or specials.
fn shell_words(words: &Value) -> Vec<String> {
    items(words)
        .iter()
        .map(|w| match w.as_str() {
            Some(w) if !w.contains([' ', '"', '$', '<']) => w.to_owned(),
            Some(w) => format!("'{w}'"),
            None => w.to_string(),
        })
        .collect()
}

/// The container's env by name, and where a value comes from when it is not literal.
fn env_names(container: &Value) -> Vec<String> {
    items(&container["env"])
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default();
            match e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                Some(secret) => format!("{name} (from Secret {secret})"),
                // A server-only variable masked over the Paperclip container's envFrom.
                None if e["value"] == "" => format!("{name} (withheld)"),
                None => name.to_owned(),
            }
        })
        .collect()
}

/// The types of the Job's conditions that hold.
fn true_conditions(job: &Value) -> Vec<&str> {
    items(&job["status"]["conditions"])
        .iter()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["type"].as_str())
        .collect()
}

/// The scripted stand-in for `opencode run --format json`: prints OpenCode-shaped events (one
/// tool call showing the pod's user, a reply, usage) and says on stderr what it is.
const STAND_IN: &str = r#"#!/bin/sh
# opencode-k8s demo: a SCRIPTED STAND-IN for opencode, not the real agent.
cat >/dev/null
echo "opencode (scripted stand-in): not the real OpenCode; run scripts/setup-opencode for it" >&2
s=ses_demo_scripted_stand_in
now() { date +%s000; }
ev() { printf '%s\n' "$1"; sleep 0.4; }
ev '{"type":"step_start","timestamp":'"$(now)"',"sessionID":"'$s'","part":{"type":"step-start"}}'
ev '{"type":"tool_use","timestamp":'"$(now)"',"sessionID":"'$s'","part":{"type":"tool","tool":"bash","state":{"status":"completed","input":{"command":"id -u"},"output":"'"$(id -u)"'"}}}'
ev '{"type":"step_finish","timestamp":'"$(now)"',"sessionID":"'$s'","part":{"type":"step-finish","reason":"tool-calls","tokens":{"input":100,"output":7,"reasoning":0,"cache":{"read":20,"write":0}},"cost":0.000411}}'
ev '{"type":"step_start","timestamp":'"$(now)"',"sessionID":"'$s'","part":{"type":"step-start"}}'
ev '{"type":"text","timestamp":'"$(now)"',"sessionID":"'$s'","part":{"type":"text","text":"(Scripted stand-in.) This pod runs as uid '"$(id -u)"' with HOME='"$HOME"'."}}'
ev '{"type":"step_finish","timestamp":'"$(now)"',"sessionID":"'$s'","part":{"type":"step-finish","reason":"stop","tokens":{"input":100,"output":7,"reasoning":0,"cache":{"read":20,"write":0}},"cost":0.000411}}'
"#;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Runs the demo, returning its exit status and everything it printed.
    async fn demo_output(opencode: Option<PathBuf>, scripted: bool) -> (ExitCode, String) {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let say = {
            let lines = lines.clone();
            move |line: &str| lines.lock().unwrap().push(line.to_owned())
        };
        let args = Args {
            opencode,
            scripted,
            prompt: DEFAULT_PROMPT.into(),
            model: Behaviour::ToolCall,
            raw: false,
        };
        let code = demo(args, &say).await.expect("the demo runs");
        let out = lines.lock().unwrap().join("\n");
        (code, out)
    }

    #[tokio::test]
    #[expect(
        clippy::print_stderr,
        reason = "a skipped end-to-end test says so in the test output"
    )]
    async fn the_demo_runs_the_real_opencode_when_installed() {
        if std::env::var("OPENCODE_K8S_SKIP_E2E").as_deref() == Ok("1") {
            eprintln!("skipped: OPENCODE_K8S_SKIP_E2E=1 (needs the real opencode)");
            return;
        }
        let opencode = llm::find_opencode().unwrap_or_else(|why| {
            panic!("{why}; or set OPENCODE_K8S_SKIP_E2E=1 to skip the end-to-end tests")
        });
        let (code, out) = demo_output(Some(opencode), false).await;
        assert_eq!(code, ExitCode::SUCCESS, "{out}");
        assert!(out.contains("  agent:   the real opencode ("), "{out}");
        assert!(!out.contains("STAND-IN"), "{out}");
        let tool = out
            .find("  tool bash (completed): echo hello-from-tool\n    -> hello-from-tool")
            .unwrap_or_else(|| panic!("the tool call is shown live: {out}"));
        let reply = out
            .find(&format!("  assistant: {}", llm::TOOL_REPLY))
            .unwrap_or_else(|| panic!("the reply is shown live: {out}"));
        let result = out
            .find("[opencode-k8s] result: succeeded (exit 0), Job paperclip/")
            .unwrap_or_else(|| panic!("the result is shown: {out}"));
        assert!(tool < reply && reply < result, "{out}");
        assert!(out.contains("  session:  ses_"), "{out}");
        assert!(
            out.contains("  cost:     $0.000822 (fake/fake-tool)"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn the_scripted_demo_shows_live_output_the_result_and_the_job() {
        let (code, out) = demo_output(None, true).await;
        assert_eq!(code, ExitCode::SUCCESS, "{out}");
        let position = |needle: &str| {
            out.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from:\n{out}"))
        };
        position("simulated cluster (testkit) — no real Kubernetes");
        position("SCRIPTED STAND-IN for opencode");
        let live = position("  | opencode (scripted stand-in)");
        let tool = position("  tool bash (completed): id -u\n    -> 1000");
        let result = position("[opencode-k8s] result: succeeded (exit 0), Job paperclip/");
        position("  cost:     $0.000822");
        let job = position("The Job it created");
        position("runAsUser: 1000");
        position("type: RuntimeDefault");
        assert!(live < tool && tool < result && result < job, "{out}");
    }

    #[test]
    fn events_render_readably() {
        let fixture = |name: &str| {
            let path = format!(
                "{}/../../fixtures/opencode/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let rendered: Vec<String> = fixture("run5-tool-error.stdout.jsonl")
            .lines()
            .flat_map(render_line)
            .collect();
        assert_eq!(
            rendered,
            [
                "  > step",
                "  tool read (error): {\"filePath\":\"/tmp/oc/work/does-not-exist.txt\"}",
                "    -> File not found: /tmp/oc/work/does-not-exist.txt",
                "  < step finished (tool-calls): 100 in, 20 cached, 7 out, 0 reasoning tokens; $0.000000",
                "  > step",
                "  assistant: The read failed.",
                "  < step finished (stop): 100 in, 20 cached, 7 out, 0 reasoning tokens; $0.000000",
            ]
        );
        let error: Vec<String> = fixture("run8-http401.stdout.jsonl")
            .lines()
            .flat_map(render_line)
            .collect();
        assert_eq!(
            error,
            ["  error: APIError: Incorrect API key provided: fake"]
        );
        assert_eq!(
            render_line("\u{1b}[91m\u{1b}[1mError: \u{1b}[0mSession not found"),
            ["  | Error: Session not found"]
        );
    }
}
