//! Agent configuration as the Paperclip UI sends it: accepted forms, rejected values, and the
//! error text an operator reads.

use opencode_k8s_core::config::{AgentConfig, FIELDS, ImagePullPolicy};
use opencode_k8s_core::error_code::ErrorCode;
use serde_json::{Value, json};

fn with_model(mut extra: Value) -> Value {
    extra
        .as_object_mut()
        .unwrap()
        .entry("model")
        .or_insert(json!("anthropic/claude"));
    extra
}

fn parse(extra: Value) -> AgentConfig {
    AgentConfig::from_json(&with_model(extra)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ui_forms_are_accepted() {
    let c = parse(json!({
        "timeoutSec": "600", "graceSec": 10, "retainJobs": "TRUE", "ttlSecondsAfterFinished": "",
        "dangerouslySkipPermissions": "false", "resumeLastSession": 0, "imagePullPolicy": "always",
        "variant": "", "namespace": " agents ", "paperclipRuntimeSkills": [{"key": "x"}],
        "resources.limits.memory": "16Gi", "resources": {"requests": {"cpu": 0.5}},
        "env": "# comment\n\nA=1\nB=\"two words\"\nC=x=y\n",
        "labels": "team=platform, tier=agents\nempty=",
        "nodeSelector": {"pool": "agents", "gpu": true},
        "extraArgs": ["--agent", "build", 3],
    }));
    assert_eq!(c.timeout_sec, 600);
    assert_eq!(c.grace_sec, 10);
    assert!(c.retain_jobs && !c.dangerously_skip_permissions && !c.resume_last_session);
    assert_eq!(c.ttl_seconds_after_finished, 300, "\"\" means unset");
    assert_eq!(c.image_pull_policy, ImagePullPolicy::Always);
    assert_eq!(c.variant, None);
    assert_eq!(c.namespace.as_deref(), Some("agents"));
    assert_eq!(c.resources.limits.memory.as_str(), "16Gi");
    assert_eq!(c.resources.requests.cpu.as_str(), "0.5");
    let env: Vec<(&str, &str)> = c
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(env, [("A", "1"), ("B", "two words"), ("C", "x=y")]);
    assert_eq!(c.labels.len(), 3);
    assert_eq!(c.labels["empty"], "");
    assert_eq!(c.node_selector["gpu"], "true");
    assert_eq!(c.extra_args, ["--agent", "build", "3"]);
}

#[test]
fn text_forms_of_maps_and_lists() {
    let c = parse(json!({
        "env": "{\"TOKEN\": {\"type\": \"plain\", \"value\": \"t\"}, \"N\": 5}",
        "labels": "{\"a\": \"b\"}",
        "tolerations": "[{\"key\": \"k\", \"operator\": \"Exists\", \"effect\": \"NoSchedule\"}]",
        "extraArgs": "--title 'a b' --thinking",
    }));
    assert_eq!(c.env["TOKEN"].expose(), "t");
    assert_eq!(c.env["N"].expose(), "5");
    assert_eq!(c.labels["a"], "b");
    assert_eq!(c.tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(c.extra_args, ["--title", "a b", "--thinking"]);
    let quoted = parse(json!({"extraArgs": "--agent build \"a \\\"b\\\"\" c\\ d\n--thinking ''"}));
    assert_eq!(
        quoted.extra_args,
        ["--agent", "build", "a \"b\"", "c d", "--thinking", ""],
        "split as a POSIX shell does"
    );
    let single = parse(json!({"tolerations": {"key": "k", "value": "v"}}));
    assert_eq!(
        single.tolerations[0].operator.as_deref(),
        Some("Equal"),
        "operator defaults to Equal"
    );
}

/// Each case: a config fragment and the field paths it must be rejected at.
#[test]
fn unworkable_values_are_rejected_at_their_path() {
    let cases: &[(Value, &[&str])] = &[
        (json!({"model": ""}), &["model"]),
        (json!({"model": "claude"}), &["model"]),
        (json!({"model": "a/b c"}), &["model"]),
        (json!({"namespace": "Agents"}), &["namespace"]),
        (
            json!({"serviceAccountName": "sa_1"}),
            &["serviceAccountName"],
        ),
        (
            json!({"imagePullPolicy": "Sometimes"}),
            &["imagePullPolicy"],
        ),
        (json!({"image": "my image"}), &["image"]),
        (json!({"timeoutSec": "-1"}), &["timeoutSec"]),
        (json!({"timeoutSec": 1.5}), &["timeoutSec"]),
        (json!({"graceSec": "soon"}), &["graceSec"]),
        (
            json!({"ttlSecondsAfterFinished": 3_000_000_000u64}),
            &["ttlSecondsAfterFinished"],
        ),
        (json!({"retainJobs": "maybe"}), &["retainJobs"]),
        (
            json!({"resources": {"limits": {"memory": "2Gb"}}}),
            &["resources.limits.memory"],
        ),
        (
            json!({"resources": {"requests": {"cpu": "0"}}}),
            &["resources.requests.cpu"],
        ),
        (
            json!({"resources": {"requests": {"memory": "16Gi"}}}),
            &["resources.limits.memory"],
        ),
        (json!({"env": {"MY-VAR": "x"}}), &["env.MY-VAR"]),
        (
            json!({"env": {"PAPERCLIP_API_KEY": "x"}}),
            &["env.PAPERCLIP_API_KEY"],
        ),
        (json!({"env": {"HOME": "/root"}}), &["env.HOME"]),
        (
            json!({"env": {"OPENCODE_CONFIG_CONTENT": "not json"}}),
            &["env.OPENCODE_CONFIG_CONTENT"],
        ),
        (
            json!({"env": {"S": {"type": "secret_ref", "secretId": "s1"}}}),
            &["env.S"],
        ),
        (json!({"env": {"L": [1]}}), &["env.L"]),
        (
            json!({"env": "A=1\nthis line has no equals"}),
            &["env (line 2)"],
        ),
        (json!({"env": 7}), &["env"]),
        (
            json!({"labels": {"opencode-k8s.dev/run-id": "x"}}),
            &["labels.opencode-k8s.dev/run-id"],
        ),
        (
            json!({"labels": {"app.kubernetes.io/managed-by": "me"}}),
            &["labels.app.kubernetes.io/managed-by"],
        ),
        (json!({"labels": {"bad key": "x"}}), &["labels.bad key"]),
        (json!({"labels": {"k": "v".repeat(64)}}), &["labels.k"]),
        (json!({"nodeSelector": "pool"}), &["nodeSelector (line 1)"]),
        (json!({"nodeSelector": "{not json"}), &["nodeSelector"]),
        (json!({"tolerations": "key: [unclosed"}), &["tolerations"]),
        (
            json!({"tolerations": [{"key": "k", "operator": "In"}]}),
            &["tolerations[0].operator"],
        ),
        (
            json!({"tolerations": [{"key": "k", "effect": "NoRun"}]}),
            &["tolerations[0].effect"],
        ),
        (
            json!({"tolerations": [{"operator": "Exists", "value": "v"}]}),
            &["tolerations[0].value"],
        ),
        (
            json!({"tolerations": [{"value": "v"}]}),
            &["tolerations[0].operator"],
        ),
        (
            json!({"tolerations": [{"key": "k", "tolerationSeconds": 5}]}),
            &["tolerations[0].tolerationSeconds"],
        ),
        (
            json!({"tolerations": [{"key": "k", "effects": "NoSchedule"}]}),
            &["tolerations[0].effects"],
        ),
        (json!({"tolerations": [1]}), &["tolerations[0]"]),
        (json!({"extraArgs": "--title 'open"}), &["extraArgs"]),
        (json!({"extraArgs": ["--model", "x/y"]}), &["extraArgs[0]"]),
        (
            json!({"extraArgs": "--session=ses_1 -c"}),
            &["extraArgs[0]", "extraArgs[1]"],
        ),
        (json!({"extraArgs": [{"a": 1}]}), &["extraArgs[0]"]),
        (
            json!({"paperclipApiUrl": "paperclip:3100"}),
            &["paperclipApiUrl"],
        ),
        (json!({"cwd": "workspaces/app"}), &["cwd"]),
        (json!({"variant": "--high"}), &["variant"]),
        (
            json!({"kubeconfig": "/k", "kubeconfigContent": "x"}),
            &["kubeconfigContent", "kubeconfigContent"],
        ),
        (json!({"promptTemplate": 5}), &["promptTemplate"]),
    ];
    for (input, want) in cases {
        let got = AgentConfig::from_json(&with_model(input.clone()))
            .err()
            .unwrap_or_else(|| panic!("{input} was accepted"));
        assert_eq!(got.code(), ErrorCode::ConfigInvalid);
        let paths: Vec<&str> = got.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(&paths, want, "for {input}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let err = AgentConfig::from_json(&json!({
        "model": "gpt-4o",
        "namespace": "Paperclip Agents",
        "imagePullPolicy": "sometimes",
        "resources": {"requests": {"memory": "4Gi"}, "limits": {"cpu": "2Gb", "memory": "2Gi"}},
        "timeoutSec": "ten minutes",
        "env": "GOOD=1\nBAD-NAME=2\nsk-ant-api03-pasted-secret-without-a-name",
        "labels": {"team": "platform/ai"},
        "tolerations": "- key: gpu\n  operator: Exist\n  effect: NoSchedule",
        "extraArgs": "--model other/model",
        "paperclipApiUrl": "localhost:3100",
    }))
    .unwrap_err();
    let text = err.to_string();
    assert!(
        !text.contains("sk-ant-api03"),
        "a pasted secret must not be echoed"
    );
    insta::assert_snapshot!(text);
}

#[test]
fn the_field_table_documents_every_default_the_parser_applies() {
    for f in FIELDS {
        if let Some(default) = f.default {
            // Sending the documented default explicitly gives the same config as omitting it.
            let explicit = AgentConfig::from_json(&with_model(json!({ f.name: default }))).unwrap();
            assert_eq!(explicit, parse(json!({})), "default of {}", f.name);
        }
    }
}

/// The value quoted in a captured kube-apiserver `Status` cause.
fn refused_value(fixture: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/kube/");
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{path}{fixture}")).unwrap())
            .unwrap();
    let message = status["details"]["causes"][0]["message"].as_str().unwrap();
    message.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn values_a_real_apiserver_refused_are_refused_here_first() {
    let name = refused_value("04-create-job-invalid-name.json");
    assert_eq!(name, "Agent_Bad_Name");
    assert!(!opencode_k8s_core::config::syntax::is_dns1123_subdomain(
        &name
    ));
    let label = refused_value("05-create-job-invalid-label.json");
    let rejected =
        AgentConfig::from_json(&with_model(json!({"labels": {"team": label}}))).unwrap_err();
    assert_eq!(rejected.errors[0].path, "labels.team");
    let quantity = AgentConfig::from_json(&with_model(
        json!({"resources": {"limits": {"memory": "2Gb"}}}),
    ));
    assert!(quantity.is_err(), "06: 2Gb is not a quantity");
    let below = AgentConfig::from_json(&with_model(
        json!({"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}}),
    ));
    assert_eq!(
        below.unwrap_err().errors[0].path,
        "resources.limits.cpu",
        "07: request above limit"
    );
}
