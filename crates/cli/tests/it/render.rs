//! `opencode-k8s render`.

use std::io::Write as _;

use crate::{run, stderr, stdout};

#[test]
fn renders_job_and_redacted_secret_inheriting_from_a_pod() {
    let out = run(&[
        "render",
        "--config",
        "examples/agent-config-full.json",
        "--pod",
        "examples/paperclip-pod.yaml",
        "--agent-name",
        "Echo Agent",
        "--run-id",
        "285e8154-4155-4792-80e6-14b22ca3a76a",
        "--cwd",
        "/paperclip/workspaces/app",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert!(
        !yaml.contains("sk-or-example"),
        "secret value printed without --show-secrets"
    );
    assert!(yaml.contains("<redacted: 28 bytes>"));
    insta::assert_snapshot!("render_stdout", yaml);
    insta::assert_snapshot!("render_stderr", stderr(&out));
}

#[test]
fn show_secrets_prints_applyable_base64() {
    let out = run(&[
        "render",
        "--config",
        "examples/agent-config-full.json",
        "--pod",
        "examples/paperclip-pod.yaml",
        "--show-secrets",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // base64("sk-or-example-not-a-real-key")
    assert!(stdout(&out).contains("c2stb3ItZXhhbXBsZS1ub3QtYS1yZWFsLWtleQ=="));
}

#[test]
fn out_of_cluster_says_what_was_not_inherited() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    // A Paperclip agent object works too: its adapterConfig is used.
    write!(
        config,
        r#"{{"adapterConfig": {{"model": "a/b", "image": "ghcr.io/example/opencode:1"}}}}"#
    )
    .unwrap();
    let out = run(&[
        "render",
        "--config",
        config.path().to_str().unwrap(),
        "--session",
        "ses_1",
        "--session-cwd",
        "/old",
        "--cwd",
        "/paperclip/new",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not inherited: the shared volume at /paperclip"),
        "{err}"
    );
    assert!(
        err.contains("resume: fresh — saved session ses_1 was created in /old"),
        "{err}"
    );
    assert!(stdout(&out).contains("emptyDir"));
}

#[test]
fn bad_config_prints_every_problem_and_config_invalid_with_exit_2() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(config, r#"{{"model": "gpt", "timeoutSec": "soon", "resources": {{"limits": {{"memory": "2Gb"}}}}}}"#).unwrap();
    let out = run(&["render", "--config", config.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty(), "nothing rendered for a bad config");
    insta::assert_snapshot!(stderr(&out));
}

#[test]
fn huge_prompt_is_prompt_too_large_with_exit_2() {
    let mut prompt = tempfile::NamedTempFile::new().unwrap();
    prompt.write_all(&vec![b'x'; 1_100_000]).unwrap();
    let out = run(&[
        "render",
        "--config",
        "examples/agent-config-full.json",
        "--prompt-file",
        prompt.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\ncode: prompt_too_large\nhint: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unusable_pod_file_names_the_file() {
    let out = run(&[
        "render",
        "--config",
        "examples/agent-config-full.json",
        "--pod",
        "examples/agent-config.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: failed to use examples/agent-config.json: expected a Pod"),
        "{err}"
    );
}

#[test]
fn help_shows_an_example() {
    let out = run(&["render", "--help"]);
    assert!(stdout(&out).contains("opencode-k8s render --config examples/agent-config-full.json --pod examples/paperclip-pod.yaml"));
}
