//! What of the shared Paperclip volume an agent pod mounts: only its own work.
//!
//! The claim behind `/paperclip` is the Paperclip server's home: instance data, every company's
//! workspaces, installed adapter plugins (code the server loads) and the secrets master key. An
//! agent pod mounts three pieces of it, each at the same absolute path it has in the Paperclip
//! pod, through `subPath`:
//! - the run's working directory, read-write;
//! - the agent's state directory `/paperclip/.opencode-k8s/<company>/<agent>` as `HOME`
//!   (OpenCode's config, data and session database — so sessions resume across runs and
//!   survive pod restarts), read-write;
//! - the directory of the agent's instructions file, read-only, when it is on the claim (the
//!   instructions tell the agent to resolve relative references from there).
//!
//! A missing `subPath` directory would be created by the kubelet as root, which the agent
//! (uid 1000) then cannot write. So an init container — same image, same locked-down security
//! context, a fixed `mkdir -p` and no agent input — creates the state directory (and the
//! working directory, should Paperclip not have created it yet) first. It mounts
//! the claim the way the Paperclip pod does, because every parent of the state directory may be
//! missing on the first run of a company, and a subPath mount of a missing parent would again be
//! created by root.

use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{Container, Volume, VolumeMount};

use super::{ManifestError, WORKSPACE_MOUNT, names};

/// Directory under `/paperclip` holding one state directory per agent.
pub const STATE_ROOT: &str = ".opencode-k8s";
/// Name of the init container that creates the agent's state directory.
pub const HOME_INIT_CONTAINER: &str = "opencode-k8s-home";

/// The agent's state directory (its `HOME`), an absolute path in the pod and in the Paperclip
/// pod, which mounts the claim at the same `/paperclip` (so the adapter can put files there).
pub fn agent_home(company_id: &str, agent_id: &str) -> String {
    format!(
        "{WORKSPACE_MOUNT}/{STATE_ROOT}/{}/{}",
        names::path_segment(company_id),
        names::path_segment(agent_id)
    )
}

/// The path of `path` relative to `/paperclip`: `None` when it is not below it, is `/paperclip`
/// itself, or steps out with `..`.
pub(super) fn below_mount(path: &str) -> Option<String> {
    let rest = Path::new(path).strip_prefix(WORKSPACE_MOUNT).ok()?;
    let mut parts = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// One piece of the claim the agent mounts.
struct Piece {
    path: String,
    read_only: bool,
}

/// Volumes, mounts and the init container that give the agent only its own part of the claim
/// `claim` (mounted at `/paperclip` by the Paperclip pod as `paperclip_mount`).
pub(super) struct ClaimMounts {
    /// The claim volume.
    pub volume: Volume,
    /// The agent container's mounts of it.
    pub mounts: Vec<VolumeMount>,
    /// The init container creating the state directory.
    pub init: Container,
}

/// Builds the mounts of the claim for a run in `cwd` with state directory `home` and the
/// read-only directory of the instructions file, if any. `cwd` must be below `/paperclip`.
pub(super) fn claim_mounts(
    claim: &Volume,
    paperclip_mount: &VolumeMount,
    cwd: Option<&str>,
    home: &str,
    instructions_dir: Option<&str>,
    init_template: Container,
) -> Result<ClaimMounts, ManifestError> {
    if let Some(cwd) = cwd
        && below_mount(cwd).is_none()
    {
        return Err(ManifestError::CwdOffClaim {
            cwd: cwd.to_owned(),
        });
    }
    let base = paperclip_mount
        .sub_path
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/'));
    let sub_path = |rel: String| match base {
        Some(base) => format!("{base}/{rel}"),
        None => rel,
    };
    let mounts = pieces(cwd, home, instructions_dir)
        .into_iter()
        .filter_map(|piece| {
            let rel = below_mount(&piece.path)?;
            Some(VolumeMount {
                name: claim.name.clone(),
                mount_path: piece.path,
                sub_path: Some(sub_path(rel)),
                read_only: piece.read_only.then_some(true),
                ..Default::default()
            })
        })
        .collect();
    Ok(ClaimMounts {
        volume: claim.clone(),
        mounts,
        init: init_container(&claim.name, base, cwd, home, init_template),
    })
}

/// The pieces of the claim on it (below `/paperclip`), parents first; none inside a piece
/// already mounted read-write.
fn pieces(cwd: Option<&str>, home: &str, instructions_dir: Option<&str>) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    for (path, read_only) in [(cwd, false), (Some(home), false), (instructions_dir, true)] {
        let Some(path) = path.and_then(|p| below_mount(p).map(|_| p.trim_end_matches('/'))) else {
            continue;
        };
        // Inside a piece already mounted read-write, a second mount adds nothing.
        if pieces
            .iter()
            .any(|p| !p.read_only && Path::new(path).starts_with(&p.path))
        {
            continue;
        }
        pieces.push(Piece {
            path: path.to_owned(),
            read_only,
        });
    }
    // Parents first, so a nested mount lands inside its parent's.
    pieces.sort_by_key(|p| Path::new(&p.path).components().count());
    pieces
}

/// The init container creating `home` (and `cwd`) as the agent's user, with the claim `volume`
/// mounted the way the Paperclip pod mounts it (`base` is its subPath).
fn init_container(
    volume: &str,
    base: Option<&str>,
    cwd: Option<&str>,
    home: &str,
    template: Container,
) -> Container {
    // The working directory normally exists (Paperclip realizes the workspace first); if not,
    // it is created here too rather than by the kubelet as root.
    let mut command: Vec<String> = ["mkdir", "-p", "-m", "700", "--", home]
        .into_iter()
        .map(str::to_owned)
        .collect();
    command.extend(cwd.map(|c| c.trim_end_matches('/').to_owned()));
    Container {
        name: HOME_INIT_CONTAINER.into(),
        command: Some(command),
        volume_mounts: Some(vec![VolumeMount {
            name: volume.to_owned(),
            mount_path: WORKSPACE_MOUNT.into(),
            sub_path: base.map(str::to_owned),
            ..Default::default()
        }]),
        ..template
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_strictly_below_the_mount_are_on_the_claim() {
        assert_eq!(below_mount("/paperclip/ws/a/").as_deref(), Some("ws/a"));
        assert_eq!(below_mount("/paperclip/./ws").as_deref(), Some("ws"));
        for off in [
            "/paperclip",
            "/paperclip/",
            "/paperclipx/a",
            "/tmp/a",
            "/paperclip/a/../../etc",
            "ws",
        ] {
            assert_eq!(below_mount(off), None, "{off}");
        }
    }

    fn claim() -> (Volume, VolumeMount) {
        (
            Volume {
                name: "data".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: WORKSPACE_MOUNT.into(),
                sub_path: Some("tenant".into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn pieces_keep_their_absolute_paths_under_the_paperclip_sub_path() {
        let (volume, mount) = claim();
        let home = agent_home("c", "a");
        let built = claim_mounts(
            &volume,
            &mount,
            Some("/paperclip/ws/app"),
            &home,
            Some("/paperclip/instructions/a"),
            Container::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown: Vec<_> = built
            .mounts
            .iter()
            .map(|m| {
                (
                    m.mount_path.as_str(),
                    m.sub_path.as_deref().unwrap_or_default(),
                    m.read_only == Some(true),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                ("/paperclip/ws/app", "tenant/ws/app", false),
                ("/paperclip/instructions/a", "tenant/instructions/a", true),
                (
                    "/paperclip/.opencode-k8s/c/a",
                    "tenant/.opencode-k8s/c/a",
                    false
                ),
            ]
        );
        let init_mount = &built.init.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(init_mount.sub_path.as_deref(), Some("tenant"));
    }

    #[test]
    fn a_piece_inside_the_workspace_is_not_mounted_twice() {
        let (volume, mut mount) = claim();
        mount.sub_path = None;
        let built = claim_mounts(
            &volume,
            &mount,
            Some("/paperclip/ws"),
            &agent_home("c", "a"),
            Some("/paperclip/ws/docs"),
            Container::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(built.mounts.len(), 2);
        assert_eq!(built.mounts[0].sub_path.as_deref(), Some("ws"));
    }

    #[test]
    fn a_cwd_off_the_claim_is_refused() {
        let (volume, mount) = claim();
        for cwd in ["/tmp/x", "/paperclip"] {
            let err = claim_mounts(
                &volume,
                &mount,
                Some(cwd),
                "/paperclip/h",
                None,
                Container::default(),
            )
            .err()
            .unwrap();
            assert!(matches!(err, ManifestError::CwdOffClaim { .. }), "{cwd}");
        }
    }
}
