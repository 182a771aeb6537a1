//! `opencode-k8s`: the operator's command line over the engine.
//!
//! One module per subcommand; each returns `anyhow::Result<()>` and this file maps failures to
//! the stable error code and exit status: 2 for input that cannot work (`config_invalid`,
//! `prompt_too_large`), 1 for everything else.

mod rbac;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opencode_k8s_core::config::ConfigError;
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::manifest::ManifestError;

/// Run OpenCode agents as Kubernetes Jobs: inspect manifests and RBAC.
#[derive(Debug, Parser)]
#[command(name = "opencode-k8s", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Job and Secret one run would create, without a cluster.
    Render(render::Args),
    /// Print the RBAC objects the engine needs, generated from its table of verbs.
    Rbac(rbac::Args),
}

/// Exit status for input the operator must fix.
const EXIT_INVALID_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render(args) => render::run(&args),
        Command::Rbac(args) => rbac::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

/// Prints the error, its cause chain and its code; returns the exit status for it.
#[expect(
    clippy::print_stderr,
    reason = "reporting a failure to the operator is the point"
)]
fn report(err: &anyhow::Error) -> ExitCode {
    let code = error_code(err);
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    eprintln!("code: {code}");
    match code {
        ErrorCode::ConfigInvalid | ErrorCode::PromptTooLarge => ExitCode::from(EXIT_INVALID_INPUT),
        _ => ExitCode::FAILURE,
    }
}

fn error_code(err: &anyhow::Error) -> ErrorCode {
    if let Some(e) = err.downcast_ref::<ConfigError>() {
        e.code()
    } else if let Some(e) = err.downcast_ref::<ManifestError>() {
        e.code()
    } else if err.downcast_ref::<InputError>().is_some() {
        ErrorCode::ConfigInvalid
    } else {
        ErrorCode::AdapterInternal
    }
}

/// A file or value given on the command line cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("failed to use {what}: {problem}")]
struct InputError {
    /// The file path or `--option value`.
    what: String,
    /// What is wrong and what would work.
    problem: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_help_has_an_example() {
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("opencode-k8s "),
                "{} has no example",
                sub.get_name()
            );
        }
    }
}
