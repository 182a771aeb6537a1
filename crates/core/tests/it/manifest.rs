//! Rendered Job and Secret for representative configurations, pinned as YAML snapshots, plus a
//! validity walk that checks each against the rules kube-apiserver and Pod Security
//! "restricted" enforce.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use opencode_k8s_core::config::{AgentConfig, Quantity, syntax};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::manifest::{
    self, InheritedPod, ManifestError, Rendered, ResumeDecision, RunRequest, SecretValues,
    SessionResume,
};
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
const API_KEY: &str = "pcp-agent-jwt-SECRET-do-not-leak";
const PROMPT: &str = "You are agent Echo Agent. Continue your Paperclip work.\n";
const CWD: &str = "/paperclip/workspaces/app";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config(v: Value) -> AgentConfig {
    AgentConfig::from_json(&v).unwrap_or_else(|e| panic!("{e}"))
}

fn example_config(file: &str) -> AgentConfig {
    config(serde_json::from_str(&read(&format!("{EXAMPLES}/{file}"))).unwrap())
}

fn example_pod() -> InheritedPod {
    let pod: Pod =
        serde_saphyr::from_str(&read(&format!("{EXAMPLES}/paperclip-pod.yaml"))).unwrap();
    InheritedPod::from_pod(&pod, None).unwrap()
}

/// A request with the ids and `PAPERCLIP_*` env of a real captured Paperclip execute.
fn request() -> RunRequest {
    let ctx: Value = serde_json::from_str(&read(&format!(
        "{FIXTURES}/paperclip/ctx-issue-assigned.json"
    )))
    .unwrap();
    let golden: Value = serde_json::from_str(&read(&format!(
        "{FIXTURES}/paperclip/adapter-utils-golden.json"
    )))
    .unwrap();
    let paperclip_env = golden["outputs"]["buildPaperclipEnv"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .chain([(
            "PAPERCLIP_RUN_ID".to_owned(),
            ctx["runId"].as_str().unwrap().to_owned(),
        )])
        .collect();
    RunRequest {
        run_id: ctx["runId"].as_str().unwrap().into(),
        agent_id: ctx["agent"]["id"].as_str().unwrap().into(),
        company_id: ctx["agent"]["companyId"].as_str().unwrap().into(),
        agent_name: ctx["agent"]["name"].as_str().map(str::to_owned),
        task_key: ctx["runtime"]["taskKey"].as_str().map(str::to_owned),
        prompt: PROMPT.into(),
        fresh_prompt: None,
        cwd: Some(CWD.into()),
        paperclip_env,
        api_key: Some(API_KEY.into()),
        resume: None,
        attempt: 1,
    }
}

/// The snapshot text: what the run log would say, then the objects (Secret values decoded).
fn snapshot_text(r: &Rendered) -> String {
    let mut out = format!("# resume: {}\n", serde_json::to_string(&r.resume).unwrap());
    for line in &r.not_inherited {
        out.push_str(&format!("# not inherited: {line}\n"));
    }
    for line in &r.warnings {
        out.push_str(&format!("# warning: {line}\n"));
    }
    out + &manifest::to_yaml(r, SecretValues::Decoded).unwrap()
}

fn render_ok(req: &RunRequest, pod: Option<&InheritedPod>, cfg: &AgentConfig) -> Rendered {
    let r = manifest::render(req, pod, cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_valid(&r, req);
    r
}

#[test]
fn minimal_in_cluster() {
    let r = render_ok(
        &request(),
        Some(&example_pod()),
        &config(json!({"model": "anthropic/claude-sonnet-4-5"})),
    );
    assert_eq!(r.resume, ResumeDecision::New);
    assert!(r.not_inherited.is_empty());
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn full_config() {
    let r = render_ok(
        &request(),
        Some(&example_pod()),
        &example_config("agent-config-full.json"),
    );
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn out_of_cluster_without_a_pod() {
    let cfg = example_config("agent-config.json");
    assert!(matches!(
        manifest::render(&request(), None, &cfg),
        Err(ManifestError::NoImage)
    ));
    let cfg = config(
        json!({"model": "anthropic/claude-sonnet-4-5", "image": "ghcr.io/example/opencode:1.18.33"}),
    );
    let r = render_ok(&request(), None, &cfg);
    assert!(
        r.not_inherited.iter().any(|l| l.contains("emptyDir")),
        "{:?}",
        r.not_inherited
    );
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn resume_in_the_same_cwd_passes_session() {
    let mut req = request();
    req.resume = Some(SessionResume {
        session_id: "ses_de2d4f85cffeXTeIpIgen2Yy5j".into(),
        cwd: Some(format!("{CWD}/")),
    });
    let r = render_ok(&req, Some(&example_pod()), &config(json!({"model": "a/b"})));
    assert_eq!(
        r.resume,
        ResumeDecision::Resumed {
            session_id: "ses_de2d4f85cffeXTeIpIgen2Yy5j".into()
        }
    );
    let args = container_args(&r);
    let at = args
        .iter()
        .position(|a| a == "--session")
        .expect("--session passed");
    assert_eq!(args[at + 1], "ses_de2d4f85cffeXTeIpIgen2Yy5j");
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn fresh_after_cwd_change() {
    let mut req = request();
    req.resume = Some(SessionResume {
        session_id: "ses_x".into(),
        cwd: Some("/paperclip/workspaces/old".into()),
    });
    let r = render_ok(&req, Some(&example_pod()), &config(json!({"model": "a/b"})));
    let ResumeDecision::Fresh { reason } = &r.resume else {
        panic!("{:?}", r.resume)
    };
    assert!(
        reason.contains("/paperclip/workspaces/old") && reason.contains(CWD),
        "{reason}"
    );
    assert!(!container_args(&r).contains(&"--session".to_owned()));
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn resume_rules_for_missing_cwds_and_disabled_resume() {
    let cfg = config(json!({"model": "a/b"}));
    let mut req = request();
    req.cwd = None;
    req.resume = Some(SessionResume {
        session_id: "ses_x".into(),
        cwd: None,
    });
    assert!(matches!(
        manifest::resume_decision(&req, None, &cfg),
        ResumeDecision::Resumed { .. }
    ));
    assert!(matches!(
        manifest::resume_decision(&req, Some(CWD), &cfg),
        ResumeDecision::Fresh { .. }
    ));
    let off = config(json!({"model": "a/b", "resumeLastSession": "false"}));
    let ResumeDecision::Fresh { reason } = manifest::resume_decision(&req, None, &off) else {
        panic!()
    };
    assert!(reason.contains("resumeLastSession is false"));
    req.resume = Some(SessionResume {
        session_id: "--help".into(),
        cwd: None,
    });
    assert!(matches!(
        manifest::resume_decision(&req, None, &cfg),
        ResumeDecision::Fresh { .. }
    ));
}

#[test]
fn huge_prompt_fails_before_anything_is_created() {
    let mut req = request();
    req.prompt = "x".repeat(1_000_001);
    let err =
        manifest::render(&req, Some(&example_pod()), &config(json!({"model": "a/b"}))).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PromptTooLarge);
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn retain_jobs_has_no_ttl() {
    let cfg = config(
        json!({"model": "a/b", "retainJobs": "true", "timeoutSec": "0", "ttlSecondsAfterFinished": 60}),
    );
    let r = render_ok(&request(), Some(&example_pod()), &cfg);
    let spec = r.job.spec.as_ref().unwrap();
    assert_eq!(spec.ttl_seconds_after_finished, None);
    assert_eq!(spec.active_deadline_seconds, None);
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn tolerations_text_replaces_the_pods() {
    let yaml = "- key: dedicated\n  operator: Equal\n  value: agents\n  effect: NoSchedule\n- operator: Exists\n  effect: NoExecute\n  tolerationSeconds: \"60\"\n";
    let cfg = config(
        json!({"model": "a/b", "tolerations": yaml, "nodeSelector": "{\"pool\": \"agents\"}"}),
    );
    let r = render_ok(&request(), Some(&example_pod()), &cfg);
    let pod = r.job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 2);
    assert_eq!(tolerations[1].toleration_seconds, Some(60));
    assert_eq!(
        pod.node_selector
            .as_ref()
            .unwrap()
            .get("pool")
            .map(String::as_str),
        Some("agents")
    );
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn retry_attempt_with_merged_opencode_config_in_the_secret() {
    let mut req = request();
    req.attempt = 2;
    req.api_key = None;
    let cfg = config(json!({
        "model": "a/b",
        "env": {"OPENCODE_CONFIG_CONTENT": "{\"provider\":{\"x\":{\"options\":{\"apiKey\":\"sk-provider\"}}}}"}
    }));
    let r = render_ok(&req, Some(&example_pod()), &cfg);
    assert!(r.job.metadata.name.as_deref().unwrap().ends_with("-a2"));
    let data = r.secret.data.as_ref().unwrap();
    let merged: Value = serde_json::from_slice(&data["env.OPENCODE_CONFIG_CONTENT"].0).unwrap();
    assert_eq!(merged["permission"], "allow");
    assert_eq!(merged["provider"]["x"]["options"]["apiKey"], "sk-provider");
    assert!(!data.contains_key("PAPERCLIP_API_KEY"));
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn inherited_pod_from_the_example() {
    let pod = example_pod();
    assert_eq!(pod.container_name, "paperclip");
    assert!(
        pod.secret_mounts
            .iter()
            .all(|m| !m.mount_path.contains("serviceaccount"))
    );
    assert_eq!(
        pod.tolerations.len(),
        1,
        "default not-ready/unreachable tolerations dropped"
    );
    insta::assert_snapshot!(serde_saphyr::to_string(&pod).unwrap());
}

#[test]
fn env_layers_keep_first_position_and_inherited_api_url() {
    let r = render_ok(
        &request(),
        Some(&example_pod()),
        &example_config("agent-config.json"),
    );
    let env = container_env(&r);
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    // HOME keeps the Paperclip container's position, with the engine's value.
    assert_eq!(names[..3], ["PAPERCLIP_API_URL", "NODE_ENV", "HOME"]);
    let value = |n: &str| {
        env.iter()
            .find(|(name, _)| name == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        value("HOME"),
        json!(format!(
            "/paperclip/.opencode-k8s/{}/{}",
            request().company_id,
            request().agent_id
        ))
    );
    assert_eq!(
        value("PAPERCLIP_API_URL"),
        json!("http://paperclip.paperclip.svc.cluster.local:3100"),
        "host's localhost URL must not win"
    );
    assert_eq!(
        value("MEMORY_LIMIT")["resourceFieldRef"]["containerName"],
        "opencode"
    );
    assert_eq!(
        value("ANTHROPIC_API_KEY")["secretKeyRef"]["key"],
        "env.ANTHROPIC_API_KEY"
    );
    assert_eq!(
        value("OPENCODE_DB"),
        json!(format!(
            "/paperclip/.opencode-k8s/{}/{}/opencode.db",
            request().company_id,
            request().agent_id
        ))
    );
    let override_url = config(json!({"model": "a/b", "paperclipApiUrl": "https://pc.example.com"}));
    let r = render_ok(&request(), Some(&example_pod()), &override_url);
    assert!(
        container_env(&r).contains(&("PAPERCLIP_API_URL".into(), json!("https://pc.example.com")))
    );
    let r = render_ok(
        &request(),
        None,
        &config(json!({"model": "a/b", "image": "i"})),
    );
    assert!(
        container_env(&r).contains(&("PAPERCLIP_API_URL".into(), json!("http://127.0.0.1:3100")))
    );
}

#[test]
fn pods_without_a_shared_claim_are_refused_with_what_to_add() {
    let mut pod: Pod =
        serde_saphyr::from_str(&read(&format!("{EXAMPLES}/paperclip-pod.yaml"))).unwrap();
    let spec = pod.spec.as_mut().unwrap();
    spec.volumes.as_mut().unwrap()[0].persistent_volume_claim = None;
    spec.volumes.as_mut().unwrap()[0].empty_dir = Some(Default::default());
    let err = InheritedPod::from_pod(&pod, None).unwrap_err();
    assert!(
        err.to_string().contains("not a PersistentVolumeClaim"),
        "{err}"
    );
    spec_mounts_clear(&mut pod);
    let err = InheritedPod::from_pod(&pod, None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConfigInvalid);
    insta::assert_snapshot!(err.to_string());
    assert!(matches!(
        InheritedPod::from_pod(&pod, Some("nope")),
        Err(ManifestError::NoContainer { .. })
    ));
}

fn spec_mounts_clear(pod: &mut Pod) {
    for c in &mut pod.spec.as_mut().unwrap().containers {
        c.volume_mounts = None;
    }
}

fn pod_spec(r: &Rendered) -> Value {
    serde_json::to_value(&r.job).unwrap()["spec"]["template"]["spec"].clone()
}

fn container_args(r: &Rendered) -> Vec<String> {
    serde_json::from_value(pod_spec(r)["containers"][0]["args"].clone()).unwrap()
}

/// (name, value or valueFrom) of the container's env.
fn container_env(r: &Rendered) -> Vec<(String, Value)> {
    pod_spec(r)["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e.get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone()),
            )
        })
        .collect()
}

/// Checks what kube-apiserver validation and Pod Security "restricted" check, plus the
/// engine's own promises (no secret in the Job spec, names stable and short).
fn assert_valid(r: &Rendered, req: &RunRequest) {
    let job = serde_json::to_value(&r.job).unwrap();
    let secret = serde_json::to_value(&r.secret).unwrap();
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(syntax::is_dns1123_label(name), "job name {name}");
    assert_eq!(secret["metadata"]["name"], name);
    if let Some(ns) = job["metadata"]["namespace"].as_str() {
        assert!(syntax::is_dns1123_label(ns), "namespace {ns}");
    }
    for meta in [
        &job["metadata"],
        &job["spec"]["template"]["metadata"],
        &secret["metadata"],
    ] {
        for (k, v) in meta["labels"].as_object().unwrap() {
            assert!(syntax::is_qualified_name(k), "label key {k}");
            assert!(syntax::is_label_value(v.as_str().unwrap()), "label {k}={v}");
        }
        for k in meta["annotations"].as_object().unwrap().keys() {
            assert!(syntax::is_qualified_name(k), "annotation key {k}");
        }
        assert_eq!(
            meta["labels"]["opencode-k8s.dev/run-id"],
            manifest::label_value(&req.run_id)
        );
    }
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    for init in pod["initContainers"].as_array().into_iter().flatten() {
        // The init container runs only the engine's own fixed command, as locked down as the
        // agent, and sees no secret.
        assert_eq!(init["name"], manifest::HOME_INIT_CONTAINER);
        assert_eq!(init["command"][0], "mkdir");
        assert!(init.get("env").is_none() && init.get("envFrom").is_none());
        assert_eq!(init["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            init["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
    }
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
    let psc = &pod["securityContext"];
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_i64().unwrap() > 0);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert!(syntax::is_dns1123_label(c["name"].as_str().unwrap()));
    assert!(!c["image"].as_str().unwrap().is_empty());
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(c["securityContext"].get("privileged").is_none());
    for kind in ["cpu", "memory"] {
        let q =
            |which: &str| Quantity::parse(c["resources"][which][kind].as_str().unwrap()).unwrap();
        assert!(q("limits") >= q("requests"), "{kind} limit below request");
    }
    let volumes = pod["volumes"].as_array().unwrap();
    let volume_names: BTreeSet<&str> = volumes
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volume_names.len(), volumes.len(), "volume names unique");
    for v in volumes {
        assert!(syntax::is_dns1123_label(v["name"].as_str().unwrap()));
        let types: Vec<&String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        assert_eq!(types.len(), 1, "one source per volume: {v}");
        assert!(
            [
                "persistentVolumeClaim",
                "secret",
                "emptyDir",
                "configMap",
                "projected"
            ]
            .contains(&types[0].as_str()),
            "PSS restricted volume type {}",
            types[0]
        );
    }
    let mut paths = BTreeSet::new();
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(
            volume_names.contains(m["name"].as_str().unwrap()),
            "mount of a missing volume {m}"
        );
        assert!(
            paths.insert(m["mountPath"].as_str().unwrap()),
            "duplicate mount path {m}"
        );
    }
    assert!(paths.contains("/var/run/opencode-k8s"));
    // The shared claim is never mounted whole: only subPaths below /paperclip.
    for m in c["volumeMounts"].as_array().unwrap() {
        let volume = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        if volume.get("persistentVolumeClaim").is_some() {
            assert!(
                m["mountPath"].as_str().unwrap().starts_with("/paperclip/")
                    && !m["subPath"].as_str().unwrap_or_default().is_empty(),
                "claim mounted whole: {m}"
            );
        }
    }
    let data = secret["data"].as_object().unwrap();
    let mut names = BTreeSet::new();
    for e in c["env"].as_array().unwrap() {
        let n = e["name"].as_str().unwrap();
        assert!(names.insert(n), "duplicate env {n}");
        assert!(
            e.get("value").is_some() != e.get("valueFrom").is_some(),
            "env {n} needs value xor valueFrom"
        );
        if let Some(sel) = e["valueFrom"].get("secretKeyRef")
            && sel["name"] == name
        {
            assert!(
                data.contains_key(sel["key"].as_str().unwrap()),
                "env {n} refers to a missing key"
            );
        }
    }
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["immutable"], true);
    assert!(data.keys().all(|k| syntax::is_secret_key(k)));
    assert!(data.contains_key("prompt"));
    let job_text = job.to_string();
    assert!(
        !job_text.contains(API_KEY),
        "API key leaked into the Job spec"
    );
    assert!(
        !job_text.contains(req.prompt.trim_end()),
        "prompt leaked into the Job spec"
    );
    assert!(
        !job_text.contains("sk-ant-example") && !job_text.contains("sk-or-example"),
        "config env value leaked into the Job spec"
    );
    let args = container_args(r);
    assert_eq!(args[..4], ["opencode", "run", "--format", "json"]);
}

#[test]
fn debug_output_of_a_request_hides_the_api_key() {
    assert!(!format!("{:?}", request()).contains(API_KEY));
}

#[test]
fn printed_yaml_reads_back_as_the_same_objects() {
    let mut req = request();
    req.prompt = format!(
        "{}\n  indented line: with colon # and hash\n\"quoted\" 'single' {}\n",
        "long words ".repeat(40),
        "ü€"
    );
    let r = render_ok(
        &req,
        Some(&example_pod()),
        &example_config("agent-config-full.json"),
    );
    let text = manifest::to_yaml(&r, SecretValues::Base64).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(docs.len(), 2 + usize::from(r.network_policy.is_some()));
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(docs[0].clone()).unwrap();
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(docs[1].clone()).unwrap();
    assert_eq!(job, r.job);
    assert_eq!(secret, r.secret);
}

#[test]
fn the_servers_own_secrets_never_reach_an_agent() {
    let mut pod: Pod =
        serde_saphyr::from_str(&read(&format!("{EXAMPLES}/paperclip-pod.yaml"))).unwrap();
    pod.metadata.annotations = Some(
        [(
            "opencode-k8s.dev/withhold-env".to_owned(),
            "INTERNAL_TOKEN, ".to_owned(),
        )]
        .into(),
    );
    let container = &mut pod.spec.as_mut().unwrap().containers[0];
    let env = container.env.get_or_insert_with(Vec::new);
    for (name, value) in [
        ("BETTER_AUTH_SECRET", "signs-agent-tokens"),
        ("DATABASE_URL", "postgres://paperclip:pw@db/paperclip"),
        ("INTERNAL_TOKEN", "operator-said-no"),
        ("OPENAI_API_KEY", "sk-agents-need-this"),
    ] {
        env.push(serde_json::from_value(json!({"name": name, "value": value})).unwrap());
    }
    let inherited = InheritedPod::from_pod(&pod, None).unwrap();
    let rendered = render_ok(
        &request(),
        Some(&inherited),
        &example_config("agent-config.json"),
    );
    let job = serde_json::to_string(&rendered.job).unwrap();
    for secret in ["signs-agent-tokens", "postgres://", "operator-said-no"] {
        assert!(!job.contains(secret), "{secret} leaked into the Job");
    }
    assert!(
        !job.contains("sk-agents-need-this"),
        "a literal credential the agents need reaches them through the per-run Secret"
    );
    assert_eq!(
        rendered.secret.data.as_ref().unwrap()["inherited.OPENAI_API_KEY"].0,
        b"sk-agents-need-this"
    );
    let container = &rendered.job.spec.unwrap().template.spec.unwrap().containers[0];
    let masked: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .filter(|v| v.value.as_deref() == Some(""))
        .map(|v| v.name.as_str())
        .collect();
    if container.env_from.as_ref().is_some_and(|f| !f.is_empty()) {
        assert!(
            masked.contains(&"BETTER_AUTH_SECRET") && masked.contains(&"INTERNAL_TOKEN"),
            "{masked:?}"
        );
    }
}

#[test]
fn every_option_on() {
    let mut v: Value =
        serde_json::from_str(&read(&format!("{EXAMPLES}/agent-config-full.json"))).unwrap();
    for (key, value) in [
        ("namespace", json!("agents-{companyId}")),
        ("runtimeClassName", json!("gvisor")),
        ("networkPolicy", json!(true)),
        (
            "networkPolicyEgress",
            json!("0.0.0.0/0:443 10.20.0.0/16:8080,8443"),
        ),
        ("readOnlyRootFilesystem", json!("yes")),
    ] {
        v[key] = value;
    }
    let req = request();
    let r = render_ok(&req, Some(&example_pod()), &config(v));
    let pod = pod_spec(&r);
    assert_eq!(pod["runtimeClassName"], "gvisor");
    assert_eq!(
        r.job.metadata.namespace.as_deref(),
        Some(format!("agents-{}", req.company_id).as_str())
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    let policy = serde_json::to_value(r.network_policy.as_ref().unwrap()).unwrap();
    assert_eq!(
        policy["metadata"]["namespace"],
        r.job.metadata.namespace.as_deref().unwrap()
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Egress"]));
    insta::assert_snapshot!(snapshot_text(&r));
}

#[test]
fn an_agent_mounts_only_its_workspace_home_and_instructions() {
    let req = request();
    let r = render_ok(
        &req,
        Some(&example_pod()),
        &example_config("agent-config-full.json"),
    );
    let pod = pod_spec(&r);
    let claim = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("persistentVolumeClaim").is_some())
        .unwrap()["name"]
        .clone();
    let mut mounts: Vec<(String, bool)> = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == claim)
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                m["readOnly"] == true,
            )
        })
        .collect();
    mounts.sort();
    let home = format!(
        "/paperclip/.opencode-k8s/{}/{}",
        req.company_id, req.agent_id
    );
    assert_eq!(
        mounts,
        vec![
            (home.clone(), false),
            ("/paperclip/instructions".to_owned(), true),
            (CWD.to_owned(), false),
        ]
    );
    let env = container_env(&r);
    let get = |name: &str| env.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(get("HOME"), json!(home));
    assert_eq!(get("OPENCODE_DB"), json!(format!("{home}/opencode.db")));
}

#[test]
fn a_cwd_off_the_shared_claim_is_refused_before_anything_is_created() {
    let mut req = request();
    for cwd in ["/tmp/elsewhere", "/paperclip"] {
        req.cwd = Some(cwd.into());
        let err = manifest::render(&req, Some(&example_pod()), &config(json!({"model": "a/b"})))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigInvalid, "{cwd}");
        assert!(err.to_string().contains(cwd), "{err}");
    }
}

#[test]
fn secrets_the_operator_excludes_or_does_not_allow_are_not_inherited() {
    let mut pod: Pod =
        serde_saphyr::from_str(&read(&format!("{EXAMPLES}/paperclip-pod.yaml"))).unwrap();
    let spec = pod.spec.as_mut().unwrap();
    spec.volumes.get_or_insert_with(Vec::new).extend([
        serde_json::from_value(json!({"name": "ca", "secret": {"secretName": "ca-bundle"}}))
            .unwrap(),
        serde_json::from_value(json!({"name": "keys", "secret": {"secretName": "server-keys"}}))
            .unwrap(),
    ]);
    let container = &mut spec.containers[0];
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .extend([
            serde_json::from_value(json!({"name": "ca", "mountPath": "/etc/ca"})).unwrap(),
            serde_json::from_value(json!({"name": "keys", "mountPath": "/etc/paperclip-keys"}))
                .unwrap(),
        ]);
    container.env.get_or_insert_with(Vec::new).extend([
        serde_json::from_value(json!({"name": "PAPERCLIP_SECRETS_MASTER_KEY_FILE", "value": "/etc/paperclip-keys/master.key"})).unwrap(),
        serde_json::from_value(json!({"name": "LLM_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "k"}}})).unwrap(),
    ]);
    container.env_from = Some(vec![
        serde_json::from_value(json!({"secretRef": {"name": "server-env"}})).unwrap(),
        serde_json::from_value(json!({"secretRef": {"name": "llm"}})).unwrap(),
    ]);
    let mut summary = |annotations: &[(&str, &str)]| {
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let inherited = InheritedPod::from_pod(&pod, None).unwrap();
        render_ok(
            &request(),
            Some(&inherited),
            &config(json!({"model": "a/b"})),
        )
        .inherited
    };
    // Default: everything but the master key's volume is inherited, and listed.
    let all = summary(&[]);
    for line in [
        "volume ca (Secret ca-bundle) at /etc/ca",
        "envFrom Secret server-env (prefix \"\")",
        "env LLM_KEY (Secret llm key k)",
        "not inherited: Secret server-keys: volume keys holds the server's secrets master key",
    ] {
        assert!(
            all.iter().any(|l| l == line),
            "{line} missing from {all:#?}"
        );
    }
    let excluded = summary(&[(
        manifest::EXCLUDE_SECRETS_ANNOTATION,
        "server-env, ca-bundle",
    )]);
    assert!(
        !excluded
            .iter()
            .any(|l| l.starts_with("envFrom Secret server-env"))
    );
    assert!(!excluded.iter().any(|l| l.starts_with("volume ca ")));
    assert!(excluded.iter().any(|l| l.starts_with("env LLM_KEY")));
    // Allow-list: only `llm` gets through, as env and envFrom.
    let allowed = summary(&[(manifest::INHERIT_SECRETS_ANNOTATION, "llm")]);
    let inherited: Vec<&String> = allowed
        .iter()
        .filter(|l| !l.starts_with("not inherited") && l.contains("Secret"))
        .collect();
    assert_eq!(
        inherited,
        vec![
            "env LLM_KEY (Secret llm key k)",
            "envFrom Secret llm (prefix \"\")"
        ]
    );
}

/// From inside an agent pod (kube-sim binds each mount at its path), the claim shows only the
/// agent's workspace, its home and the read-only instructions; the rest of the Paperclip home —
/// other workspaces, instance data, the secrets key — is not there. kube-sim runs pods on the
/// host's root filesystem, so the test looks for the claim's files, not for an empty `/paperclip`.
#[tokio::test]
async fn from_inside_an_agent_pod_only_its_own_work_is_visible() {
    use crate::lifecycle::{Harness, NS, request};
    use opencode_k8s_core::lifecycle::RunStatus;

    let h = Harness::start().await;
    let claim = h.cluster.pvc_path(NS, "paperclip-data");
    for (path, text) in [
        ("workspaces/project/README.md", "mine"),
        ("workspaces/other-company/secret-plan.md", "theirs"),
        ("instances/default/secrets/master.key", "server key"),
        ("instances/default/plugins/adapter.js", "server code"),
        ("instructions/agent-1/AGENTS.md", "be nice"),
    ] {
        let file = claim.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
    }
    // Paperclip's own tree belongs to uid 1000 like the server's files.
    std::process::Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(&claim)
        .status()
        .unwrap();
    h.opencode(
        "cat > /dev/null\n\
         find /paperclip -type f 2>/dev/null | sort\n\
         echo HOME=$HOME\n\
         touch README.written && echo cwd-writable\n\
         touch \"$HOME/state\" && echo home-writable\n\
         touch /paperclip/instructions/agent-1/x 2>/dev/null || echo instructions-read-only",
    );
    let (result, sink) = h
        .run(
            request("run-ls", "agent-1"),
            json!({"instructionsFilePath": "/paperclip/instructions/agent-1/AGENTS.md"}),
        )
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", sink.lines());
    let out = sink.output();
    let home = "/paperclip/.opencode-k8s/company-1/agent-1";
    for seen in [
        "/paperclip/workspaces/project/README.md",
        "/paperclip/instructions/agent-1/AGENTS.md",
        &format!("HOME={home}"),
        "cwd-writable",
        "home-writable",
        "instructions-read-only",
    ] {
        assert!(out.contains(seen), "{seen} missing from:\n{out}");
    }
    for hidden in ["secret-plan.md", "master.key", "adapter.js"] {
        assert!(
            !out.contains(hidden),
            "{hidden} visible to the agent:\n{out}"
        );
    }
    assert!(claim.join("workspaces/project/README.written").exists());
    assert!(claim.join(".opencode-k8s/company-1/agent-1/state").exists());
}

/// A run in a directory off the shared claim, and an agent config naming a kubeconfig file the
/// operator did not allow, fail with `config_invalid` and leave nothing in the cluster.
#[tokio::test]
async fn refused_runs_create_nothing() {
    use crate::lifecycle::{Harness, request, run_error};
    use opencode_k8s_core::lifecycle::Bounds;

    let h = Harness::start().await;
    let engine = h.engine(Bounds::default());
    let mut off_claim = request("run-off-claim", "agent-1");
    off_claim.cwd = Some("/srv/elsewhere".into());
    let err = run_error(&engine, off_claim, &h.config(json!({}))).await;
    assert_eq!(err.code(), ErrorCode::ConfigInvalid);
    assert!(err.to_string().contains("/srv/elsewhere"), "{err}");

    // The agent config names the cluster's own kubeconfig file: refused, no client is built.
    let mut by_path = h.config(json!({}));
    by_path.kubeconfig_content = None;
    by_path.kubeconfig = Some(h.cluster.kubeconfig_path().display().to_string());
    let err = run_error(&engine, request("run-by-path", "agent-1"), &by_path).await;
    assert_eq!(err.code(), ErrorCode::ConfigInvalid);
    assert!(
        err.to_string().contains("OPENCODE_K8S_KUBECONFIG_DIR"),
        "{err}"
    );

    assert!(h.jobs().is_empty());
    assert!(h.only_seeded_secrets());
}
