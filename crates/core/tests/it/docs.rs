//! The README and `deploy/` agree with the code they describe: the configuration reference and
//! the RBAC table are generated from `config::FIELDS` and `rbac::RULES`, every error code has a
//! troubleshooting entry, the committed RBAC equals `opencode-k8s rbac`, and the example
//! Deployment is one the engine can inherit from.
//!
//! `UPDATE_DOCS=1 cargo test -p opencode-k8s-core --test it docs` rewrites the generated parts
//! (README blocks between `<!-- BEGIN GENERATED: x -->` markers, `deploy/**/rbac.yaml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, Namespace, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use opencode_k8s_core::config::{AgentConfig, ENGINE_OWNED_ENV, FIELDS, FieldKind};
use opencode_k8s_core::error_code::ErrorCode;
use opencode_k8s_core::manifest::{self, InheritedPod, RunRequest};
use opencode_k8s_core::rbac::{self, RULES, RbacOptions, Scope};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1")
}

/// Compare a generated file with the committed one, or rewrite it under `UPDATE_DOCS=1`.
fn sync_file(relative: &str, expected: &str) {
    let path = repo().join(relative);
    if updating() {
        std::fs::write(&path, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{relative} is out of date; run `UPDATE_DOCS=1 cargo test -p opencode-k8s-core --test it docs` or write:\n{expected}"
    );
}

static README_LOCK: Mutex<()> = Mutex::new(());

/// Compare the README block between the `name` markers with `expected`, or rewrite it.
fn sync_readme_block(name: &str, expected: &str) {
    let begin = format!("<!-- BEGIN GENERATED: {name} -->\n");
    let end = format!("<!-- END GENERATED: {name} -->");
    // Tests run in parallel: two blocks rewritten at once would lose one of the edits.
    let _held = README_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let readme = read("README.md");
    let start = readme
        .find(&begin)
        .unwrap_or_else(|| panic!("README.md has no `{}` marker", begin.trim()))
        + begin.len();
    let stop = start
        + readme[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("README.md has no `{end}` marker"));
    if updating() {
        let updated = format!("{}{expected}{}", &readme[..start], &readme[stop..]);
        std::fs::write(repo().join("README.md"), updated).unwrap();
        return;
    }
    assert!(
        readme[start..stop] == *expected,
        "the README's generated `{name}` block is out of date; run `UPDATE_DOCS=1 cargo test -p opencode-k8s-core --test it docs` or paste:\n{expected}"
    );
}

/// A Markdown table cell: pipes escaped so a text cannot break the table, and outside code
/// spans the characters Markdown would read as emphasis or links (`[A-Za-z_]*`).
fn cell(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                return part.replace('|', "\\|");
            }
            let mut out = String::with_capacity(part.len());
            for c in part.chars() {
                if "|*_[]\\".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        })
        .collect::<Vec<_>>()
        .join("`")
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Text => "text",
        FieldKind::Textarea => "multi-line text",
        FieldKind::Integer => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::Quantity => "quantity",
        FieldKind::Choice(_) => "choice",
        FieldKind::Map => "map",
        FieldKind::Tolerations => "tolerations",
        FieldKind::Args => "arguments",
    }
}

fn config_table() -> String {
    let mut out = String::from(
        "| Field | Type | Default | Accepted | What it does |\n|---|---|---|---|---|\n",
    );
    for f in FIELDS {
        let default = f
            .default
            .map_or_else(|| "—".to_owned(), |d| format!("`{d}`"));
        out.push_str(&format!(
            "| `{}` | {} | {default} | {} | {} |\n",
            f.name,
            kind_name(f.kind),
            cell(f.accepted),
            cell(f.hint)
        ));
    }
    out
}

fn rbac_table() -> String {
    let mut out = String::from(
        "| API group | Resource | Verb | Scope | Why the engine needs it |\n|---|---|---|---|---|\n",
    );
    for r in RULES {
        let group = if r.group.is_empty() {
            "core".to_owned()
        } else {
            format!("`{}`", r.group)
        };
        let scope = match (r.scope, r.optional) {
            (Scope::Namespaced, false) => "namespace",
            (Scope::Namespaced, true) => "namespace, optional",
            (Scope::Cluster, false) => "cluster",
            (Scope::Cluster, true) => "cluster, optional",
        };
        out.push_str(&format!(
            "| {group} | `{}` | `{}` | {scope} | {} |\n",
            r.resource,
            r.verb,
            cell(r.why)
        ));
    }
    out
}

#[test]
fn readme_configuration_reference_is_generated_from_the_fields_table() {
    sync_readme_block("config", &config_table());
}

#[test]
fn readme_names_every_env_variable_the_config_may_not_set() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Configuration reference")
        .nth(1)
        .expect("README.md has a `## Configuration reference` section");
    for (name, _) in ENGINE_OWNED_ENV {
        assert!(
            section.contains(&format!("`{name}`")),
            "the configuration reference does not say that `env` may not set {name}"
        );
    }
}

#[test]
fn readme_rbac_table_is_generated_from_the_verbs_table() {
    sync_readme_block("rbac", &rbac_table());
}

/// The troubleshooting section: `### \`code\`` headings and the text under each.
fn troubleshooting_entries() -> Vec<(String, String)> {
    let readme = read("README.md");
    let section = readme
        .split("\n## Troubleshooting")
        .nth(1)
        .expect("README.md has a `## Troubleshooting` section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .split("\n### ")
        .skip(1)
        .map(|entry| {
            let (heading, body) = entry.split_once('\n').unwrap_or((entry, ""));
            (heading.trim().trim_matches('`').to_owned(), body.to_owned())
        })
        .collect()
}

#[test]
fn readme_troubleshoots_every_error_code_with_what_to_check_and_how_to_fix() {
    let entries = troubleshooting_entries();
    let headings: Vec<&str> = entries.iter().map(|(h, _)| h.as_str()).collect();
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        headings, codes,
        "one `### `code`` entry per error code, in ErrorCode::ALL order"
    );
    for (code, body) in &entries {
        for part in ["**Means:**", "**Check:**", "**Fix:**"] {
            assert!(body.contains(part), "`{code}` has no {part}");
        }
    }
}

#[test]
fn committed_rbac_equals_the_generator() {
    let base = RbacOptions::default();
    sync_file("deploy/base/rbac.yaml", &rbac::render_yaml(&base).unwrap());
    let agents = RbacOptions {
        namespace: AGENTS_NAMESPACE.into(),
        ..RbacOptions::default()
    };
    sync_file(
        "deploy/overlays/agents-namespace/rbac.yaml",
        &rbac::render_yaml(&agents).unwrap(),
    );
    let cluster = RbacOptions {
        cluster_scoped: true,
        ..RbacOptions::default()
    };
    sync_file(
        "deploy/overlays/cluster-wide/rbac.yaml",
        &rbac::render_yaml(&cluster).unwrap(),
    );
}

const AGENTS_NAMESPACE: &str = "paperclip-agents";

/// Every object of a kustomization, its own files and its bases', in order.
fn kustomize(dir: &str) -> Vec<Value> {
    let kustomization: Value =
        serde_saphyr::from_str(&read(&format!("{dir}/kustomization.yaml"))).unwrap();
    assert_eq!(kustomization["kind"], "Kustomization", "{dir}");
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_array().unwrap() {
        let resource = resource.as_str().unwrap();
        let path = format!("{dir}/{resource}");
        if repo().join(&path).is_dir() {
            objects.extend(kustomize(&path));
        } else {
            let docs: Vec<Value> = serde_saphyr::from_multiple(&read(&path)).unwrap();
            objects.extend(docs.into_iter().filter(|d| !d.is_null()));
        }
    }
    if let Some(ns) = kustomization["namespace"].as_str() {
        for object in &mut objects {
            if object["kind"] != "Namespace"
                && !object["kind"].as_str().unwrap().starts_with("Cluster")
            {
                assert_eq!(
                    object["metadata"]["namespace"], ns,
                    "{} {} in {dir} is written for another namespace than the kustomization's",
                    object["kind"], object["metadata"]["name"]
                );
            }
        }
    }
    objects
}

fn find<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str, name: &str) -> T {
    let object = objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

fn env_field_ref(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value_from
        .as_ref()?
        .field_ref
        .as_ref()
        .map(|f| f.field_path.clone())
}

fn paperclip_subject() -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: "paperclip".into(),
        namespace: Some("paperclip".into()),
        api_group: None,
    }
}

#[test]
fn example_deployment_gives_the_engine_what_it_inherits() {
    let objects = kustomize("deploy/base");
    let deployment: Deployment = find(&objects, "Deployment", "paperclip");
    let template = deployment.spec.as_ref().unwrap().template.clone();
    let spec = template.spec.as_ref().unwrap();

    // The server runs as the ServiceAccount the generated RoleBinding grants.
    let account = spec.service_account_name.clone().unwrap();
    let _: ServiceAccount = find(&objects, "ServiceAccount", &account);
    let binding: RoleBinding = find(&objects, "RoleBinding", "opencode-k8s");
    assert_eq!(binding.subjects.unwrap(), [paperclip_subject()]);

    // The engine finds its own pod through the downward API.
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == manifest::PAPERCLIP_CONTAINER)
        .expect("a container named `paperclip`, the one agent Jobs inherit from");
    assert_eq!(
        env_field_ref(container, "POD_NAME").as_deref(),
        Some("metadata.name")
    );
    assert_eq!(
        env_field_ref(container, "POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );

    // /paperclip is the ReadWriteMany claim.
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == manifest::WORKSPACE_MOUNT)
        .expect("a volume mounted at /paperclip");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let claim_name = &volume.persistent_volume_claim.as_ref().unwrap().claim_name;
    let claim: PersistentVolumeClaim = find(&objects, "PersistentVolumeClaim", claim_name);
    assert_eq!(claim.spec.unwrap().access_modes.unwrap(), ["ReadWriteMany"]);

    // PAPERCLIP_API_URL is the Service's in-cluster address, on the port that reaches the pod.
    let service: Service = find(&objects, "Service", "paperclip");
    let service_spec = service.spec.unwrap();
    let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    for (key, value) in service_spec.selector.unwrap() {
        assert_eq!(labels.get(&key), Some(&value), "Service selector {key}");
    }
    let port = &service_spec.ports.unwrap()[0];
    let url = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PAPERCLIP_API_URL")
        .and_then(|e| e.value.clone())
        .unwrap();
    assert_eq!(
        url,
        format!("http://paperclip.paperclip.svc.cluster.local:{}", port.port)
    );
    let container_port = container.ports.iter().flatten().find(|p| {
        serde_json::to_value(port.target_port.as_ref().unwrap()).unwrap()
            == json!(p.name.as_deref().unwrap_or_default())
    });
    assert_eq!(container_port.map(|p| p.container_port), Some(port.port));

    // And the engine renders a working Job from it: same claim, same image, the Service URL.
    let pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        status: None,
    };
    let inherited = InheritedPod::from_pod(&pod, None).unwrap();
    let config = AgentConfig::from_json(&json!({"model": "anthropic/claude-sonnet-4-5"})).unwrap();
    let request = RunRequest {
        run_id: "285e8154-4155-4792-80e6-14b22ca3a76a".into(),
        agent_id: "2a47a922-df57-40c7-9df4-1fec93a4f5cb".into(),
        company_id: "652fd1a3-6342-470f-91db-c07fbacd1374".into(),
        agent_name: Some("Engineer".into()),
        task_key: None,
        prompt: "hello".into(),
        fresh_prompt: None,
        cwd: Some("/paperclip/instances/default/workspaces/app".into()),
        paperclip_env: BTreeMap::new(),
        api_key: None,
        resume: None,
        attempt: 1,
    };
    let rendered = manifest::render(&request, Some(&inherited), &config).unwrap();
    let job = serde_json::to_value(&rendered.job).unwrap();
    let pod_spec = &job["spec"]["template"]["spec"];
    assert!(
        pod_spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == claim_name.as_str()),
        "agent pods mount {claim_name}"
    );
    assert_eq!(pod_spec["containers"][0]["image"], json!(container.image));
    assert!(
        pod_spec["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "PAPERCLIP_API_URL" && e["value"] == url.as_str())
    );
}

#[test]
fn overlays_grant_the_paperclip_service_account_where_agents_run() {
    let objects = kustomize("deploy/overlays/agents-namespace");
    let _: Namespace = find(&objects, "Namespace", AGENTS_NAMESPACE);
    let bindings: Vec<RoleBinding> = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding")
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect();
    let namespaces: Vec<_> = bindings
        .iter()
        .map(|b| b.metadata.namespace.clone().unwrap())
        .collect();
    // Its own namespace (to read the Paperclip pod) and the agents' namespace.
    assert_eq!(namespaces, ["paperclip", AGENTS_NAMESPACE]);
    for binding in bindings {
        assert_eq!(binding.subjects.unwrap(), [paperclip_subject()]);
    }
    // The agents' namespace has a claim named like the one the Paperclip pod mounts.
    let claims: Vec<PersistentVolumeClaim> = objects
        .iter()
        .filter(|o| o["kind"] == "PersistentVolumeClaim")
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect();
    assert!(
        claims
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("paperclip-data")
                && c.metadata.namespace.as_deref() == Some(AGENTS_NAMESPACE))
    );

    let objects = kustomize("deploy/overlays/cluster-wide");
    let binding: ClusterRoleBinding = find(&objects, "ClusterRoleBinding", "opencode-k8s");
    assert_eq!(binding.subjects.unwrap(), [paperclip_subject()]);
    assert_eq!(binding.role_ref.kind, "ClusterRole");
}

#[test]
fn every_deploy_file_is_part_of_a_kustomization() {
    fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                yaml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy"), &mut files);
    for file in files {
        if file.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let dir = file.parent().unwrap();
        let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(&format!("- {name}\n")),
            "{} is not listed in its kustomization",
            file.display()
        );
    }
}

#[test]
fn paths_the_readme_names_exist() {
    let readme = read("README.md");
    let mut missing = Vec::new();
    for token in readme.split(|c: char| c.is_whitespace() || "`()[]<>\"',".contains(c)) {
        let token = token.trim_end_matches(['.', ':', ';']);
        let known_root = ["deploy/", "crates/", "scripts/", "examples/", "docs/"]
            .iter()
            .any(|root| token.starts_with(root));
        if known_root && !token.contains('*') && !repo().join(token).exists() {
            missing.push(token.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "README.md names missing paths: {missing:?}"
    );
}
