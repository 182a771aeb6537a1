//! The one way the CLI builds a [`RunRequest`]: the flags `run` and `render` share (and the
//! values `demo` fills in), turned into the request Paperclip would send for the same run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use opencode_k8s_core::manifest::{RunRequest, SessionResume};

use crate::InputError;

/// What one run is: its prompt, identity and session. Flattened into `run` and `render`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RequestArgs {
    /// The prompt.
    #[arg(long, value_name = "TEXT", conflicts_with = "prompt_file")]
    pub(crate) prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE")]
    pub(crate) prompt_file: Option<PathBuf>,
    /// Paperclip run id [default: `run` generates `cli-<seconds>-<nanos>-<pid>`, `render` uses
    /// `dry-run`].
    #[arg(long)]
    pub(crate) run_id: Option<String>,
    /// Paperclip agent id (one run per agent at a time).
    #[arg(long, default_value = "cli")]
    pub(crate) agent_id: String,
    /// Paperclip company id.
    #[arg(long, default_value = "cli")]
    pub(crate) company_id: String,
    /// Agent name (used in object names).
    #[arg(long)]
    pub(crate) agent_name: Option<String>,
    /// Paperclip task key (a later run with the same key reattaches to a Job left running).
    #[arg(long)]
    pub(crate) task_key: Option<String>,
    /// The run's working directory in the pod (under /paperclip) [default: the config's `cwd`].
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<String>,
    /// Resume this OpenCode session.
    #[arg(long, value_name = "SESSION_ID")]
    pub(crate) session: Option<String>,
    /// The cwd the session was created in (resuming from another cwd starts fresh instead).
    #[arg(long, value_name = "DIR", requires = "session")]
    pub(crate) session_cwd: Option<String>,
}

impl RequestArgs {
    /// The request: `default_run_id()` unless `--run-id`, `default_prompt` unless `--prompt` or
    /// `--prompt-file`; the `PAPERCLIP_*` ids in the pod's environment, no agent token, attempt 1.
    pub(crate) fn request(
        &self,
        default_run_id: impl FnOnce() -> String,
        default_prompt: &str,
    ) -> anyhow::Result<RunRequest> {
        let prompt = match (&self.prompt, &self.prompt_file) {
            (_, Some(path)) => std::fs::read_to_string(path).map_err(|e| InputError {
                what: path.display().to_string(),
                problem: e.to_string(),
            })?,
            (Some(prompt), None) => prompt.clone(),
            (None, None) => default_prompt.to_owned(),
        };
        let run_id = self.run_id.clone().unwrap_or_else(default_run_id);
        let paperclip_env = BTreeMap::from([
            ("PAPERCLIP_RUN_ID".to_owned(), run_id.clone()),
            ("PAPERCLIP_AGENT_ID".to_owned(), self.agent_id.clone()),
            ("PAPERCLIP_COMPANY_ID".to_owned(), self.company_id.clone()),
        ]);
        Ok(RunRequest {
            run_id,
            agent_id: self.agent_id.clone(),
            company_id: self.company_id.clone(),
            agent_name: self.agent_name.clone(),
            task_key: self.task_key.clone(),
            prompt,
            fresh_prompt: None,
            cwd: self.cwd.clone(),
            paperclip_env,
            api_key: None,
            resume: self.session.clone().map(|session_id| SessionResume {
                session_id,
                cwd: self.session_cwd.clone(),
            }),
            attempt: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        request: RequestArgs,
    }

    fn request(args: &[&str]) -> RunRequest {
        Cli::try_parse_from([&["t"], args].concat())
            .unwrap()
            .request
            .request(|| "generated".into(), "default prompt")
            .unwrap()
    }

    #[test]
    fn flags_fill_the_request_and_its_paperclip_env() {
        let req = request(&[
            "--prompt",
            "Fix it",
            "--run-id",
            "r1",
            "--agent-id",
            "a1",
            "--session",
            "ses_1",
            "--session-cwd",
            "/paperclip/w",
        ]);
        assert_eq!(req.prompt, "Fix it");
        assert_eq!(req.run_id, "r1");
        assert_eq!(req.paperclip_env["PAPERCLIP_RUN_ID"], "r1");
        assert_eq!(req.paperclip_env["PAPERCLIP_AGENT_ID"], "a1");
        assert_eq!(req.paperclip_env["PAPERCLIP_COMPANY_ID"], "cli");
        let resume = req.resume.unwrap();
        assert_eq!(
            (resume.session_id.as_str(), resume.cwd.as_deref()),
            ("ses_1", Some("/paperclip/w"))
        );
    }

    #[test]
    fn defaults_apply_without_flags() {
        let req = request(&[]);
        assert_eq!(req.run_id, "generated");
        assert_eq!(req.prompt, "default prompt");
        assert_eq!(req.attempt, 1);
        assert!(req.api_key.is_none());
    }

    #[test]
    fn an_unreadable_prompt_file_is_named() {
        let err = Cli::try_parse_from(["t", "--prompt-file", "/nonexistent/prompt.md"])
            .unwrap()
            .request
            .request(|| "generated".into(), "")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to use /nonexistent/prompt.md: "),
            "{err}"
        );
    }
}
