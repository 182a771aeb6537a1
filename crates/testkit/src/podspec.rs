//! How the simulated kubelet turns a pod's main container into a [`ProcessSpec`]: env
//! (`value` with `$(VAR)` expansion, `secretKeyRef`, `configMapKeyRef`, `fieldRef`, `envFrom`),
//! Secret/ConfigMap files, emptyDir and PVC directories, command/args, workingDir, ids, stdin.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::cluster::Shared;
use crate::events::NODE_NAME;
use crate::faults::{Outcome, Script};
use crate::resource::Resource;
use crate::runtime::{MountSpec, ProcessSpec};

/// The address every pod and the node report (processes run on this host).
pub(crate) const LOCAL_IP: &str = "127.0.0.1";

/// Why a container cannot be created.
#[derive(Debug)]
pub(crate) enum ConfigError {
    /// `CreateContainerConfigError` (missing Secret/ConfigMap or key).
    Container(String),
    /// A volume could not be set up (`FailedMount`).
    Mount(String),
}

/// Expands `$(VAR)` references like the kubelet (`$$` escapes; unknown references stay).
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn decode(data: &Value, key: &str) -> Option<String> {
    let raw = data[key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Looks up a key of a Secret (`data`, base64) or ConfigMap (`data`, plain).
fn lookup(
    shared: &Shared,
    ns: &str,
    secret: bool,
    name: &str,
    key: &str,
) -> Result<String, ConfigError> {
    let (resource, kind, title) = if secret {
        (Resource::Secrets, "secret", "Secret")
    } else {
        (Resource::ConfigMaps, "configmap", "ConfigMap")
    };
    let obj = shared
        .store
        .get(resource, ns, name)
        .ok_or_else(|| ConfigError::Container(format!("{kind} \"{name}\" not found")))?;
    let value = if secret {
        decode(&obj["data"], key)
    } else {
        obj["data"][key].as_str().map(str::to_owned)
    };
    value.ok_or_else(|| {
        ConfigError::Container(format!("couldn't find key {key} in {title} {ns}/{name}"))
    })
}

fn field_ref(pod: &Value, path: &str) -> String {
    let meta = &pod["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let keyed = |prefix: &str, map: &Value| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(|key| text(&map[key]))
    };
    match path {
        "metadata.name" => text(&meta["name"]),
        "metadata.namespace" => text(&meta["namespace"]),
        "metadata.uid" => text(&meta["uid"]),
        "spec.nodeName" => NODE_NAME.to_owned(),
        "spec.serviceAccountName" => text(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.hostIP" => LOCAL_IP.to_owned(),
        "status.podIPs" | "status.hostIPs" => LOCAL_IP.to_owned(),
        other => keyed("metadata.labels['", &meta["labels"])
            .or_else(|| keyed("metadata.annotations['", &meta["annotations"]))
            .unwrap_or_else(|| {
                tracing::debug!(field = other, "unsupported fieldRef");
                String::new()
            }),
    }
}

fn resolve_env(
    shared: &Shared,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or_default();
        let (secret, reference) = if source["secretRef"].is_object() {
            (true, &source["secretRef"])
        } else {
            (false, &source["configMapRef"])
        };
        let name = reference["name"].as_str().unwrap_or_default();
        let resource = if secret {
            Resource::Secrets
        } else {
            Resource::ConfigMaps
        };
        let Some(obj) = shared.store.get(resource, ns, name) else {
            if reference["optional"].as_bool() == Some(true) {
                continue;
            }
            let kind = if secret { "secret" } else { "configmap" };
            return Err(ConfigError::Container(format!(
                "{kind} \"{name}\" not found"
            )));
        };
        for key in obj["data"].as_object().into_iter().flat_map(|m| m.keys()) {
            let value = if secret {
                decode(&obj["data"], key)
            } else {
                obj["data"][key].as_str().map(str::to_owned)
            };
            env.push((format!("{prefix}{key}"), value.unwrap_or_default()));
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        let from = &var["valueFrom"];
        let value = if let Some(v) = var["value"].as_str() {
            expand(v, &env)
        } else if from["secretKeyRef"].is_object() || from["configMapKeyRef"].is_object() {
            let secret = from["secretKeyRef"].is_object();
            let r = if secret {
                &from["secretKeyRef"]
            } else {
                &from["configMapKeyRef"]
            };
            match lookup(
                shared,
                ns,
                secret,
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            ) {
                Ok(v) => v,
                Err(_) if r["optional"].as_bool() == Some(true) => continue,
                Err(e) => return Err(e),
            }
        } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, path)
        } else {
            String::new()
        };
        env.push((name, value));
    }
    Ok(env)
}

fn write_files(
    dir: &Path,
    data: &Value,
    items: &Value,
    mode: u32,
    secret: bool,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let keys: Vec<(String, String, u32)> = match items.as_array() {
        Some(items) => items
            .iter()
            .map(|i| {
                let item_mode = i["mode"]
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(mode);
                (
                    i["key"].as_str().unwrap_or_default().to_owned(),
                    i["path"].as_str().unwrap_or_default().to_owned(),
                    item_mode,
                )
            })
            .collect(),
        None => data
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .map(|k| (k.clone(), k.clone(), mode))
            .collect(),
    };
    for (key, path, mode) in keys {
        let bytes = if secret {
            data[&key]
                .as_str()
                .and_then(|raw| base64::engine::general_purpose::STANDARD.decode(raw).ok())
                .unwrap_or_default()
        } else {
            data[&key].as_str().unwrap_or_default().as_bytes().to_vec()
        };
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The host directory backing a PersistentVolumeClaim (shared by every pod that mounts it).
pub(crate) fn pvc_dir(root: &Path, ns: &str, claim: &str) -> PathBuf {
    root.join("pvcs").join(ns).join(claim)
}

fn resolve_volume(
    shared: &Shared,
    pod: &Value,
    volume: &Value,
) -> Result<Option<PathBuf>, ConfigError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = volume["name"].as_str().unwrap_or_default();
    let dir = shared
        .dir
        .join("pods")
        .join(pod["metadata"]["uid"].as_str().unwrap_or_default())
        .join("volumes")
        .join(name);
    let io = |e: std::io::Error| {
        ConfigError::Mount(format!(
            "MountVolume.SetUp failed for volume \"{name}\" : {e}"
        ))
    };
    let mode = |v: &Value| {
        v["defaultMode"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(0o644)
    };
    if let Some(secret) = volume.get("secret") {
        let secret_name = secret["secretName"].as_str().unwrap_or_default();
        let data = match shared.store.get(Resource::Secrets, ns, secret_name) {
            Some(obj) => obj["data"].clone(),
            None if secret["optional"].as_bool() == Some(true) => json!({}),
            None => {
                return Err(ConfigError::Mount(format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : secret \"{secret_name}\" not found"
                )));
            }
        };
        write_files(&dir, &data, &secret["items"], mode(secret), true).map_err(io)?;
        Ok(Some(dir))
    } else if let Some(cm) = volume.get("configMap") {
        let cm_name = cm["name"].as_str().unwrap_or_default();
        let data = match shared.store.get(Resource::ConfigMaps, ns, cm_name) {
            Some(obj) => obj["data"].clone(),
            None if cm["optional"].as_bool() == Some(true) => json!({}),
            None => {
                return Err(ConfigError::Mount(format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : configmap \"{cm_name}\" not found"
                )));
            }
        };
        write_files(&dir, &data, &cm["items"], mode(cm), false).map_err(io)?;
        Ok(Some(dir))
    } else if volume.get("emptyDir").is_some() {
        std::fs::create_dir_all(&dir).map_err(io)?;
        Ok(Some(dir))
    } else if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
        let dir = pvc_dir(&shared.dir, ns, claim);
        std::fs::create_dir_all(&dir).map_err(io)?;
        Ok(Some(dir))
    } else {
        // Projected service-account tokens and other sources are not simulated.
        Ok(None)
    }
}

/// The directory `sub` of a volume at `volume`, created when missing (as the kubelet does). Like
/// the API server and kubelet, refuses an absolute `sub` or one with `..`, and one that leaves
/// the volume through a symlink.
fn sub_path(volume: &Path, sub: &str) -> Result<PathBuf, ConfigError> {
    let relative = Path::new(sub);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ConfigError::Mount(format!(
            "subPath {sub:?} must be a relative path without '..'"
        )));
    }
    let source = volume.join(relative);
    let inside = |path: &Path| match (std::fs::canonicalize(path), std::fs::canonicalize(volume)) {
        (Ok(path), Ok(volume)) => path.starts_with(volume),
        _ => false,
    };
    let escapes = || ConfigError::Mount(format!("subPath {sub:?} is not within the volume"));
    // Check the part that exists before creating the rest, so nothing is created outside.
    let existing = source.ancestors().find(|a| a.exists()).unwrap_or(volume);
    if !inside(existing) {
        return Err(escapes());
    }
    std::fs::create_dir_all(&source).map_err(|e| ConfigError::Mount(e.to_string()))?;
    if !inside(&source) {
        return Err(escapes());
    }
    Ok(source)
}

/// Turns the pod's main container into a process: env, command, mounts, identity.
pub(crate) fn resolve(
    shared: &Shared,
    pod: &Value,
    script: Option<&Script>,
) -> Result<ProcessSpec, ConfigError> {
    let container = &pod["spec"]["containers"][0];
    let env = resolve_env(shared, pod, container)?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| expand(s.as_str().unwrap_or_default(), &env))
            .collect()
    };
    let command = match script {
        Some(Script {
            output,
            outcome: Outcome::Exit(code),
        }) => vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "printf '%s' \"$1\"; exit \"$2\"".to_owned(),
            "sh".to_owned(),
            output.clone(),
            code.to_string(),
        ],
        Some(Script {
            output,
            outcome: Outcome::Oom,
        }) => vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "printf '%s' \"$1\"; exec sleep 3600".to_owned(),
            "sh".to_owned(),
            output.clone(),
        ],
        None => {
            let mut command = strings(&container["command"]);
            command.extend(strings(&container["args"]));
            command
        }
    };
    if command.is_empty() {
        return Err(ConfigError::Container(
            "kube-sim runs no images: the container needs a command".to_owned(),
        ));
    }
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume_name = mount["name"].as_str().unwrap_or_default();
        let Some(volume) = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str() == Some(volume_name))
        else {
            continue;
        };
        let Some(mut source) = resolve_volume(shared, pod, volume)? else {
            continue;
        };
        if let Some(sub) = mount["subPath"].as_str().filter(|s| !s.is_empty()) {
            source = sub_path(&source, sub)?;
        }
        mounts.push(MountSpec {
            source,
            target: PathBuf::from(mount["mountPath"].as_str().unwrap_or_default()),
            read_only: mount["readOnly"].as_bool().unwrap_or(false),
        });
    }
    let id = |key: &str| {
        container["securityContext"][key]
            .as_u64()
            .or_else(|| pod["spec"]["securityContext"][key].as_u64())
            .and_then(|v| u32::try_from(v).ok())
    };
    Ok(ProcessSpec {
        command,
        env,
        mounts,
        working_dir: container["workingDir"].as_str().map(PathBuf::from),
        run_as_user: id("runAsUser"),
        run_as_group: id("runAsGroup"),
        fs_group: pod["spec"]["securityContext"]["fsGroup"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok()),
        stdin: container["stdin"].as_bool().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_references_expand_like_the_kubelet() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() {
        let volume = tempfile::tempdir().unwrap();
        let inside = sub_path(volume.path(), "a/b").unwrap();
        assert!(inside.is_dir() && inside.starts_with(volume.path()));
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), volume.path().join("link")).unwrap();
        for bad in ["../x", "a/../../x", "/etc", "link/x"] {
            assert!(
                matches!(sub_path(volume.path(), bad), Err(ConfigError::Mount(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn field_refs_read_pod_metadata() {
        let pod =
            json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "b"}}});
        assert_eq!(field_ref(&pod, "metadata.name"), "p");
        assert_eq!(field_ref(&pod, "metadata.labels['a']"), "b");
        assert_eq!(field_ref(&pod, "status.podIP"), LOCAL_IP);
    }
}
