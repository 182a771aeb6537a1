//! `opencode-k8s render`: the Job and Secret one run would create, printed as YAML, with what
//! was not inherited and the resume decision on stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use opencode_k8s_core::config::AgentConfig;
use opencode_k8s_core::manifest::{
    self, InheritedPod, ResumeDecision, RunRequest, SecretValues, SessionResume,
};
use serde_json::{Value, json};

use crate::InputError;

/// Stand-in for the agent token Paperclip hands each run; shows where the real one goes.
const PLACEHOLDER_API_KEY: &str = "placeholder-agent-token-of-the-run";
/// What the host computes for `PAPERCLIP_API_URL` (unreachable from a pod).
const HOST_API_URL: &str = "http://localhost:3100";
const PLACEHOLDER_PROMPT: &str =
    "(no --prompt-file given: the prompt Paperclip renders for the run goes here)\n";

/// Options of `render`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  opencode-k8s render --config examples/agent-config-full.json --pod examples/paperclip-pod.yaml
  kubectl get pod -n paperclip paperclip-0 -o yaml > pod.yaml
  opencode-k8s render --config agent.json --pod pod.yaml --show-secrets \\
      | kubectl apply --dry-run=server -f -")]
pub(crate) struct Args {
    /// The agent's adapterConfig as JSON (or a Paperclip agent object with `adapterConfig`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The prompt to put in the Secret.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// The Paperclip pod to inherit from (`kubectl get pod -o yaml`; a Deployment, StatefulSet
    /// or Job works too). Without it the config's image is used and stderr lists what was not
    /// inherited.
    #[arg(long, value_name = "POD.yaml")]
    pod: Option<PathBuf>,
    /// Container of the Paperclip pod to inherit from [default: `paperclip`, else the first].
    #[arg(long)]
    container: Option<String>,
    /// Paperclip run id.
    #[arg(long, default_value = "dry-run")]
    run_id: String,
    /// Paperclip agent id.
    #[arg(long, default_value = "agent")]
    agent_id: String,
    /// Paperclip company id.
    #[arg(long, default_value = "company")]
    company_id: String,
    /// Agent name (used in object names).
    #[arg(long)]
    agent_name: Option<String>,
    /// Paperclip task key.
    #[arg(long)]
    task_key: Option<String>,
    /// The run's workspace cwd.
    #[arg(long)]
    cwd: Option<String>,
    /// A saved OpenCode session to resume.
    #[arg(long, value_name = "SESSION_ID")]
    session: Option<String>,
    /// The cwd the saved session was created in.
    #[arg(long, value_name = "DIR", requires = "session")]
    session_cwd: Option<String>,
    /// Attempt number (2 is the in-run fresh retry).
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// Print Secret values (base64, as applied) instead of `<redacted: N bytes>`.
    #[arg(long)]
    show_secrets: bool,
}

#[expect(
    clippy::print_stdout,
    reason = "the YAML on stdout is the command's output"
)]
#[expect(
    clippy::print_stderr,
    reason = "notes for the operator go to stderr, apart from the YAML"
)]
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let config = AgentConfig::from_json(&read_config(&args.config)?)?;
    let prompt = match &args.prompt_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| input_error(path, e))?,
        None => PLACEHOLDER_PROMPT.to_owned(),
    };
    let inherited = args
        .pod
        .as_deref()
        .map(|path| read_pod(path, args.container.as_deref()))
        .transpose()?;
    let paperclip_env = BTreeMap::from([
        ("PAPERCLIP_AGENT_ID".to_owned(), args.agent_id.clone()),
        ("PAPERCLIP_COMPANY_ID".to_owned(), args.company_id.clone()),
        ("PAPERCLIP_RUN_ID".to_owned(), args.run_id.clone()),
        ("PAPERCLIP_API_URL".to_owned(), HOST_API_URL.to_owned()),
    ]);
    let req = RunRequest {
        run_id: args.run_id.clone(),
        agent_id: args.agent_id.clone(),
        company_id: args.company_id.clone(),
        agent_name: args.agent_name.clone(),
        task_key: args.task_key.clone(),
        prompt,
        fresh_prompt: None,
        cwd: args.cwd.clone(),
        paperclip_env,
        api_key: Some(PLACEHOLDER_API_KEY.into()),
        resume: args.session.clone().map(|session_id| SessionResume {
            session_id,
            cwd: args.session_cwd.clone(),
        }),
        attempt: args.attempt,
    };
    let rendered = manifest::render(&req, inherited.as_ref(), &config)?;
    let values = if args.show_secrets {
        SecretValues::Base64
    } else {
        SecretValues::Redacted
    };
    print!("{}", manifest::to_yaml(&rendered, values)?);
    match &rendered.resume {
        ResumeDecision::New => eprintln!("resume: none saved, a new session starts"),
        ResumeDecision::Resumed { session_id } => eprintln!("resume: --session {session_id}"),
        ResumeDecision::Fresh { reason } => eprintln!("resume: fresh — {reason}"),
    }
    for line in &rendered.not_inherited {
        eprintln!("not inherited: {line}");
    }
    for line in &rendered.warnings {
        eprintln!("warning: {line}");
    }
    Ok(())
}

fn input_error(path: &Path, problem: impl ToString) -> InputError {
    InputError {
        what: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// The adapterConfig object: the file itself, or its `adapterConfig` member.
pub(crate) fn read_config(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| input_error(path, e))?;
    let mut value: Value =
        serde_json::from_str(&text).map_err(|e| input_error(path, format!("not JSON: {e}")))?;
    if let Some(inner) = value.get_mut("adapterConfig").filter(|v| v.is_object()) {
        return Ok(inner.take());
    }
    Ok(value)
}

/// A Pod from a Pod manifest, a workload's pod template, or the first Pod of a List.
fn read_pod(path: &Path, container: Option<&str>) -> anyhow::Result<InheritedPod> {
    let text = std::fs::read_to_string(path).map_err(|e| input_error(path, e))?;
    let value: Value =
        serde_saphyr::from_str(&text).map_err(|e| input_error(path, format!("not YAML: {e}")))?;
    let pod_value = pod_of(&value).ok_or_else(|| {
        input_error(path, "expected a Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or a List holding one")
    })?;
    let pod: Pod = serde_json::from_value(pod_value)
        .map_err(|e| input_error(path, format!("not a valid Pod: {e}")))?;
    Ok(InheritedPod::from_pod(&pod, container)?)
}

fn pod_of(value: &Value) -> Option<Value> {
    match value.get("kind")?.as_str()? {
        "Pod" => Some(value.clone()),
        "List" => value.get("items")?.as_array()?.iter().find_map(pod_of),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            let template = value.pointer("/spec/template")?;
            let mut metadata = template
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({}));
            if let Some(ns) = value.pointer("/metadata/namespace") {
                metadata["namespace"] = ns.clone();
            }
            if let Some(name) = value.pointer("/metadata/name").and_then(Value::as_str) {
                metadata["name"] = json!(format!("{name} (pod template)"));
            }
            Some(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec")?}),
            )
        }
        _ => None,
    }
}
