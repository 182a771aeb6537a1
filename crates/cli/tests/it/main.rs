//! The `opencode-k8s` binary as an operator runs it: output, exit status and error codes.

mod cluster_commands;
mod doctor;
mod rbac;
mod render;
mod restarts;
mod run;
mod sim;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the binary from the repository root, so example paths and snapshots are stable.
fn run(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Command::new(env!("CARGO_BIN_EXE_opencode-k8s"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}
