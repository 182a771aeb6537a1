//! Container runtime of the simulated kubelet: runs a container's command as a real local
//! process and stores its output in a [`LogBuffer`].
//!
//! TEST DOUBLE: the process runs on this machine, not in a cluster.
//!
//! The workspace forbids `unsafe`, so there is no `pre_exec`. When testkit runs as root, the
//! command is wrapped with util-linux tools (present on Debian 12 in `util-linux` and `mount`):
//!
//! ```text
//! unshare --mount --propagation private --pid --fork --kill-child -- /bin/sh -c '<bind mounts>;
//!     cd WD; exec setpriv --reuid U --regid G --groups F -- "$@"' sh CMD ARGS...
//! ```
//!
//! so the bind mounts are private to the container (the host's view never changes), the ids
//! are switched after mounting (an unwritable HOME then fails like in a cluster), and the
//! command is PID 1 of its own PID namespace, as in a container: the kernel delivers it only the
//! signals it has a handler for, so a command without a SIGTERM handler ignores a stop until the
//! grace period's SIGKILL (measured on v1.36: a 5 s timeout took 35.8 s). `unshare` passes the
//! command's exit status (or its deadly signal) on. Missing
//! top-level mountpoints are created on the host as empty directories (or empty files for a
//! file mount); nothing else on the host is changed except the group of the mounted sources
//! when `fs_group` is set, as the kubelet does for volumes. When not root, the command runs
//! directly as the current user, and a mount can only be honoured if its target is its source.
//!
//! Every process lives in its own process group. A stop sends SIGTERM to the container's first
//! process only, as a container runtime does, and SIGKILL to the whole group after the grace; an
//! OOM kill signals the whole group; when the main process exits the rest of the group is
//! killed, as a container's processes die with it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::logs::{LogBuffer, LogStream};

/// One pipe read: the default pipe capacity, so a read drains the pipe without holding more
/// memory per container than the kernel already does.
const PIPE_READ: usize = 64 * 1024;
/// How long output may still arrive after the main process exited and its group was killed:
/// a process that left the group could hold the pipes open forever.
const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// What to run for one container.
#[derive(Clone, Debug, Default)]
pub struct ProcessSpec {
    /// `command` followed by `args`, already resolved.
    pub command: Vec<String>,
    /// Environment, already resolved, in order; later entries win. `PATH` defaults to testkit's
    /// own, `HOME` to testkit's own when running as the current user and to `/` when switching
    /// to another user (as a runtime does for a user without a passwd entry).
    pub env: Vec<(String, String)>,
    /// Host paths to bind at targets inside the container, in order.
    pub mounts: Vec<MountSpec>,
    /// Working directory inside the container; created when missing (as runc does) when root.
    pub working_dir: Option<PathBuf>,
    /// User id to run as (root only).
    pub run_as_user: Option<u32>,
    /// Primary group id to run as (root only); defaults to 0 when only the user is set.
    pub run_as_group: Option<u32>,
    /// Supplementary group; the mounted sources are given to it (root only).
    pub fs_group: Option<u32>,
    /// Keep stdin open (nothing is ever written to it); false means stdin is /dev/null.
    pub stdin: bool,
}

/// Bind the host path `source` (prepared by the kubelet) at `target` inside the container.
#[derive(Clone, Debug)]
pub struct MountSpec {
    /// Host file or directory.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// A running (or finished) container process.
#[derive(Debug)]
pub struct Container {
    pid: u32,
    /// The command runs as the child of `unshare` (PID 1 of its namespace), not as `pid`.
    in_namespace: bool,
    exited: Arc<AtomicBool>,
    oom: Arc<AtomicBool>,
    kill_at: watch::Sender<Option<Instant>>,
    termination: watch::Receiver<Option<Termination>>,
}

impl Container {
    /// Spawn: in a private mount namespace when root (so `/paperclip`, `/var/run/...` can be
    /// bound without touching the host's view), as run_as_user/group when root (so an unwritable
    /// HOME fails like in a cluster). Stdout and stderr go to `logs`, which is closed once the
    /// process has exited and its output is stored.
    pub async fn start(spec: ProcessSpec, logs: Arc<LogBuffer>) -> Result<Container, RuntimeError> {
        let root = nix::unistd::geteuid().is_root();
        let mut command = if root {
            wrapped_command(&spec)?
        } else {
            direct_command(&spec)?
        };
        command
            .env_clear()
            .envs(environment(&spec, root))
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| RuntimeError::Spawn {
            program: spec.command.first().cloned().unwrap_or_default(),
            source,
        })?;
        let started_at = jiff::Timestamp::now();
        let pid = child.id().ok_or(RuntimeError::Vanished)?;
        let pumps = [
            child
                .stdout
                .take()
                .map(|out| tokio::spawn(pump(out, LogStream::Stdout, Arc::clone(&logs)))),
            child
                .stderr
                .take()
                .map(|err| tokio::spawn(pump(err, LogStream::Stderr, Arc::clone(&logs)))),
        ];
        let exited = Arc::new(AtomicBool::new(false));
        let oom = Arc::new(AtomicBool::new(false));
        let (kill_at, kill_rx) = watch::channel(None);
        let (done, termination) = watch::channel(None);
        let supervisor = Supervisor {
            child,
            group: ProcessGroup(pid),
            pumps,
            logs,
            exited: Arc::clone(&exited),
            oom: Arc::clone(&oom),
            kill_at: kill_rx,
            done,
            started_at,
        };
        tokio::spawn(supervisor.run());
        Ok(Container {
            pid,
            in_namespace: root,
            exited,
            oom,
            kill_at,
            termination,
        })
    }

    /// Process id of the container's main process (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    /// Resolves when the process has exited and its output is fully in the LogBuffer (closed).
    /// Cancel-safe, callable from many tasks.
    pub async fn wait(&self) -> Termination {
        let mut termination = self.termination.clone();
        let result = termination.wait_for(Option::is_some).await;
        match result.ok().and_then(|t| t.clone()) {
            Some(termination) => termination,
            // The supervisor task is gone (its runtime shut down): report a runtime failure
            // rather than hang, with the exit code Kubernetes uses for runtime errors.
            None => {
                let now = jiff::Timestamp::now();
                Termination {
                    exit_code: 128,
                    reason: TerminationReason::Error,
                    started_at: now,
                    finished_at: now,
                    signal: None,
                }
            }
        }
    }

    /// SIGTERM to the container's first process only, as a container runtime does (as PID 1 it
    /// gets it only if it has a handler), SIGKILL to the whole group after `grace` (deadline,
    /// delete, Killing). A second call can only shorten the grace.
    pub fn stop(&self, grace: Duration) {
        if self.exited.load(Ordering::Acquire) {
            return;
        }
        match self.init_pid() {
            Some(init) => {
                // ESRCH only means it has just exited.
                let _ = nix::sys::signal::kill(init, Signal::SIGTERM);
            }
            None => ProcessGroup(self.pid).signal(Signal::SIGTERM),
        }
        let deadline = Instant::now() + grace;
        self.kill_at.send_modify(|kill_at| {
            *kill_at = Some(kill_at.map_or(deadline, |earlier| earlier.min(deadline)));
        });
    }

    /// The container's first process: `unshare`'s child in a PID namespace (`None` before it
    /// forked), else the process itself.
    fn init_pid(&self) -> Option<Pid> {
        let leader = i32::try_from(self.pid).ok()?;
        if !self.in_namespace {
            return Some(Pid::from_raw(leader));
        }
        let children =
            std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children")).ok()?;
        let child = children.split_whitespace().next()?.parse().ok()?;
        Some(Pid::from_raw(child))
    }

    /// SIGKILL now and report reason OOMKilled, exit code 137.
    pub fn oom_kill(&self) {
        if self.exited.load(Ordering::Acquire) {
            return;
        }
        self.oom.store(true, Ordering::Release);
        ProcessGroup(self.pid).signal(Signal::SIGKILL);
    }
}

impl Drop for Container {
    /// A container nobody holds any more is torn down, like a pod sandbox, so no test leaks
    /// processes.
    fn drop(&mut self) {
        if !self.exited.load(Ordering::Acquire) {
            ProcessGroup(self.pid).signal(Signal::SIGKILL);
        }
    }
}

/// How a container ended.
#[derive(Clone, Debug)]
pub struct Termination {
    /// Exit code; 128 + signal when killed by a signal, like a container runtime.
    pub exit_code: i32,
    /// Completed, Error or OOMKilled.
    pub reason: TerminationReason,
    /// When the process started.
    pub started_at: jiff::Timestamp,
    /// When the process exited.
    pub finished_at: jiff::Timestamp,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
}

/// The `reason` of a terminated container state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationReason {
    /// Exit code 0.
    Completed,
    /// Any other exit, including a kill by signal.
    Error,
    /// Killed for exceeding its memory limit.
    OomKilled,
}

impl TerminationReason {
    /// The reason string Kubernetes shows: `Completed`, `Error` or `OOMKilled`.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationReason::Completed => "Completed",
            TerminationReason::Error => "Error",
            TerminationReason::OomKilled => "OOMKilled",
        }
    }
}

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec has no command.
    #[error("failed to start container: the command is empty; give the container a command")]
    EmptyCommand,
    /// The executable does not exist where the container would look for it.
    #[error(
        "failed to start container: executable {program:?} not found in the container's PATH or working directory"
    )]
    ExecutableNotFound {
        /// The program as given.
        program: String,
    },
    /// The container's user may not execute the program (its mode or a parent directory's).
    #[error(
        "failed to start container: {path} is not executable by uid {uid}; testkit runs the host's files as the pod's runAsUser, so make the file and its parent directories accessible to that user"
    )]
    ExecutableNotAccessible {
        /// The executable, as the container sees it.
        path: PathBuf,
        /// The container's user.
        uid: u32,
    },
    /// A mount source does not exist.
    #[error("failed to start container: mount source {source_path} is missing: {error}")]
    MountSource {
        /// Host path.
        source_path: PathBuf,
        /// Why it could not be read.
        #[source]
        error: std::io::Error,
    },
    /// A mount target is not an absolute path.
    #[error("failed to start container: mount target {target} must be an absolute path")]
    RelativeTarget {
        /// The target as given.
        target: PathBuf,
    },
    /// A mountpoint could not be created on the host.
    #[error("failed to start container: could not create mountpoint {target}: {error}")]
    Mountpoint {
        /// The missing target.
        target: PathBuf,
        /// Why it could not be created.
        #[source]
        error: std::io::Error,
    },
    /// Binding needs a private mount namespace, which needs root.
    #[error(
        "failed to start container: testkit needs root to bind-mount {source_path} at {target} (a private mount namespace); run it as root or mount the source at its own path"
    )]
    MountNeedsRoot {
        /// Host path.
        source_path: PathBuf,
        /// Path inside the container.
        target: PathBuf,
    },
    /// The working directory does not exist (when not root it cannot be created privately).
    #[error("failed to start container: working directory {path} does not exist")]
    WorkingDir {
        /// The working directory.
        path: PathBuf,
    },
    /// A util-linux tool needed to run containers as root is missing.
    #[error(
        "failed to start container: `{tool}` not found in PATH; testkit running as root needs util-linux (unshare, setpriv), mount and coreutils"
    )]
    ToolMissing {
        /// The missing tool.
        tool: &'static str,
    },
    /// `fs_group` could not be applied to a mount source.
    #[error("failed to start container: could not give {path} to fsGroup {gid}: {error}")]
    FsGroup {
        /// The mount source.
        path: PathBuf,
        /// The group.
        gid: u32,
        /// Why it failed.
        #[source]
        error: std::io::Error,
    },
    /// The process could not be spawned.
    #[error("failed to start container process {program:?}: {source}")]
    Spawn {
        /// The program as given.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process was reaped before its id could be read (cannot happen while we hold it).
    #[error("failed to start container: the process vanished right after spawning")]
    Vanished,
}

/// The process group of a container, named by its leader's pid.
#[derive(Clone, Copy, Debug)]
struct ProcessGroup(u32);

impl ProcessGroup {
    fn signal(self, signal: Signal) {
        if let Ok(pgid) = i32::try_from(self.0) {
            // ESRCH only means the group is already gone.
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }
}

/// Owns the child process: enforces the stop deadline, reaps it, finishes its logs and
/// publishes the termination.
struct Supervisor {
    child: Child,
    group: ProcessGroup,
    pumps: [Option<tokio::task::JoinHandle<()>>; 2],
    logs: Arc<LogBuffer>,
    exited: Arc<AtomicBool>,
    oom: Arc<AtomicBool>,
    kill_at: watch::Receiver<Option<Instant>>,
    done: watch::Sender<Option<Termination>>,
    started_at: jiff::Timestamp,
}

impl Supervisor {
    async fn run(mut self) {
        let status = self.reap().await;
        let finished_at = jiff::Timestamp::now();
        self.exited.store(true, Ordering::Release);
        // The container's other processes die with its main process.
        self.group.signal(Signal::SIGKILL);
        let drain_until = Instant::now() + DRAIN_BOUND;
        for pump in self.pumps.iter_mut().flatten() {
            if tokio::time::timeout_at(drain_until, &mut *pump)
                .await
                .is_err()
            {
                pump.abort();
            }
        }
        self.logs.close();
        let termination = match status {
            Ok(status) => termination(
                status,
                self.oom.load(Ordering::Acquire),
                self.started_at,
                finished_at,
            ),
            Err(error) => {
                tracing::warn!(%error, pid = self.group.0, "failed to wait for container process");
                Termination {
                    exit_code: 128,
                    reason: TerminationReason::Error,
                    started_at: self.started_at,
                    finished_at,
                    signal: None,
                }
            }
        };
        self.done.send_replace(Some(termination));
    }

    /// Wait for the main process, sending SIGKILL to its group when a stop deadline passes.
    async fn reap(&mut self) -> std::io::Result<ExitStatus> {
        let mut stop_requests_open = true;
        loop {
            let deadline = *self.kill_at.borrow_and_update();
            tokio::select! {
                status = self.child.wait() => return status,
                () = sleep_until(deadline) => {
                    self.group.signal(Signal::SIGKILL);
                    // Once killed, only the exit is left to wait for.
                    let status = self.child.wait().await;
                    return status;
                }
                changed = self.kill_at.changed(), if stop_requests_open => {
                    stop_requests_open = changed.is_ok();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Copy one output stream into the log as it arrives, so the process never blocks on a full
/// pipe whether or not anyone reads its logs.
async fn pump(mut pipe: impl AsyncRead + Unpin, stream: LogStream, logs: Arc<LogBuffer>) {
    let mut buf = vec![0; PIPE_READ];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => logs.append(stream, &buf[..n]),
            Err(error) => {
                tracing::warn!(%error, ?stream, "failed to read container output");
                break;
            }
        }
    }
}

fn termination(
    status: ExitStatus,
    oom: bool,
    started_at: jiff::Timestamp,
    finished_at: jiff::Timestamp,
) -> Termination {
    let (exit_code, signal) = match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (128, None),
    };
    let reason = if oom {
        TerminationReason::OomKilled
    } else if exit_code == 0 {
        TerminationReason::Completed
    } else {
        TerminationReason::Error
    };
    let (exit_code, signal) = if oom {
        (137, Some(Signal::SIGKILL as i32))
    } else {
        (exit_code, signal)
    };
    Termination {
        exit_code,
        reason,
        started_at,
        finished_at,
        signal,
    }
}

/// The process environment: defaults a runtime provides, then the spec's in order.
fn environment(spec: &ProcessSpec, root: bool) -> Vec<(OsString, OsString)> {
    let switches_user = root && spec.run_as_user.is_some_and(|uid| uid != 0);
    let home = if switches_user {
        Some(OsString::from("/"))
    } else {
        std::env::var_os("HOME")
    };
    let mut env: Vec<(OsString, OsString)> = [("PATH", std::env::var_os("PATH")), ("HOME", home)]
        .into_iter()
        .filter_map(|(name, value)| Some((OsString::from(name), value?)))
        .collect();
    env.extend(
        spec.env
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value))),
    );
    env
}

/// The PATH the container's command will be looked up in.
fn container_path(spec: &ProcessSpec) -> OsString {
    spec.env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| OsString::from(value))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default()
}

/// Run as the current user, no namespace: mounts must already be in place.
fn direct_command(spec: &ProcessSpec) -> Result<Command, RuntimeError> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or(RuntimeError::EmptyCommand)?;
    for mount in &spec.mounts {
        let source = canonical_source(mount)?;
        if std::fs::canonicalize(&mount.target).ok().as_deref() != Some(source.as_path()) {
            return Err(RuntimeError::MountNeedsRoot {
                source_path: mount.source.clone(),
                target: mount.target.clone(),
            });
        }
    }
    if let Some(dir) = &spec.working_dir
        && !dir.is_dir()
    {
        return Err(RuntimeError::WorkingDir { path: dir.clone() });
    }
    check_executable(spec, &[], false)?;
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    Ok(command)
}

/// Run through `unshare` + `sh` + `setpriv`: private bind mounts, then the ids.
fn wrapped_command(spec: &ProcessSpec) -> Result<Command, RuntimeError> {
    if spec.command.is_empty() {
        return Err(RuntimeError::EmptyCommand);
    }
    let unshare = find_tool("unshare")?;
    let mount = find_tool("mount")?;
    // Absolute tool paths: the script runs with the container's PATH, which may lack them.
    let mut mkdir_p = quote(find_tool("mkdir")?.as_os_str());
    mkdir_p.extend_from_slice(b" -p");
    let touch = quote(find_tool("touch")?.as_os_str());
    let mut mounts = Vec::with_capacity(spec.mounts.len());
    for spec_mount in &spec.mounts {
        if !spec_mount.target.is_absolute() {
            return Err(RuntimeError::RelativeTarget {
                target: spec_mount.target.clone(),
            });
        }
        mounts.push((canonical_source(spec_mount)?, spec_mount));
    }
    // Parents before children, so a nested target is bound inside its parent's mount.
    mounts.sort_by_key(|(_, m)| m.target.components().count());
    let mapped: Vec<(PathBuf, PathBuf)> = mounts
        .iter()
        .map(|(source, m)| (m.target.clone(), source.clone()))
        .collect();
    check_executable(spec, &mapped, true)?;

    let mut script: Vec<u8> = b"set -e\n".to_vec();
    for (index, (source, m)) in mounts.iter().enumerate() {
        let is_dir = source.is_dir();
        let nested = mounts[..index]
            .iter()
            .any(|(_, parent)| m.target.starts_with(&parent.target));
        if nested {
            let make = if is_dir { &mkdir_p } else { &touch };
            push_line(&mut script, &[make, b" -- ", &quote(m.target.as_os_str())]);
        } else {
            create_mountpoint(&m.target, is_dir)?;
        }
        if let Some(gid) = spec.fs_group {
            give_to_group(source, gid, m.read_only)?;
        }
        let mount_cmd = quote(mount.as_os_str());
        push_line(
            &mut script,
            &[
                &mount_cmd,
                b" --bind -- ",
                &quote(source.as_os_str()),
                b" ",
                &quote(m.target.as_os_str()),
            ],
        );
        if m.read_only {
            push_line(
                &mut script,
                &[
                    &mount_cmd,
                    b" -o remount,bind,ro -- ",
                    &quote(m.target.as_os_str()),
                ],
            );
        }
    }
    if let Some(dir) = &spec.working_dir {
        let dir = quote(dir.as_os_str());
        push_line(&mut script, &[&mkdir_p, b" -- ", &dir, b" && cd -- ", &dir]);
    }
    let ids = [spec.run_as_user, spec.run_as_group, spec.fs_group];
    if ids.iter().any(Option::is_some) {
        let setpriv = find_tool("setpriv")?;
        let mut line = vec![b"exec ".to_vec(), quote(setpriv.as_os_str())];
        if let Some(uid) = spec.run_as_user {
            line.push(format!(" --reuid {uid}").into_bytes());
        }
        if spec.run_as_user.is_some() || spec.run_as_group.is_some() {
            let gid = spec.run_as_group.unwrap_or(0);
            line.push(format!(" --regid {gid}").into_bytes());
        }
        line.push(match spec.fs_group {
            Some(gid) => format!(" --groups {gid}").into_bytes(),
            None => b" --clear-groups".to_vec(),
        });
        line.push(b" -- \"$@\"".to_vec());
        let parts: Vec<&[u8]> = line.iter().map(Vec::as_slice).collect();
        push_line(&mut script, &parts);
    } else {
        push_line(&mut script, &[b"exec \"$@\""]);
    }

    let mut command = Command::new(unshare);
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg(OsString::from_vec(script))
        .arg("sh")
        .args(&spec.command);
    Ok(command)
}

fn canonical_source(mount: &MountSpec) -> Result<PathBuf, RuntimeError> {
    std::fs::canonicalize(&mount.source).map_err(|error| RuntimeError::MountSource {
        source_path: mount.source.clone(),
        error,
    })
}

/// Create a missing top-level mountpoint on the host: an empty directory or empty file.
fn create_mountpoint(target: &Path, is_dir: bool) -> Result<(), RuntimeError> {
    let error = |error| RuntimeError::Mountpoint {
        target: target.to_path_buf(),
        error,
    };
    if target.exists() {
        return Ok(());
    }
    if is_dir {
        return std::fs::create_dir_all(target).map_err(error);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(error)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target)
        .map(drop)
        .map_err(error)
}

/// Hand a mounted source to the pod's fsGroup like the kubelet does for volumes: group owner,
/// group access, and setgid on directories so new files inherit the group. The files of a
/// read-only (Secret) volume get the group too, keeping their `defaultMode`, so a `0440` file
/// is readable by the pod's user through its fsGroup, as in a cluster.
fn give_to_group(source: &Path, gid: u32, read_only: bool) -> Result<(), RuntimeError> {
    let error = |error| RuntimeError::FsGroup {
        path: source.to_path_buf(),
        gid,
        error,
    };
    std::os::unix::fs::chown(source, None, Some(gid)).map_err(error)?;
    if read_only && source.is_dir() {
        for entry in std::fs::read_dir(source).map_err(error)? {
            let path = entry.map_err(error)?.path();
            std::os::unix::fs::lchown(&path, None, Some(gid)).map_err(error)?;
        }
    }
    let metadata = std::fs::metadata(source).map_err(error)?;
    let mut mode = metadata.permissions().mode() | 0o040;
    if !read_only {
        mode |= 0o020;
    }
    if metadata.is_dir() {
        mode |= 0o2010;
    }
    std::fs::set_permissions(source, std::fs::Permissions::from_mode(mode)).map_err(error)
}

/// Fail `start` like a runtime does (StartError) when the executable is missing or the
/// container's user may not run it, instead of letting the wrapper exit 126/127. `mounts` maps
/// container targets to host sources; `switches_ids` says whether the ids of the spec apply.
fn check_executable(
    spec: &ProcessSpec,
    mounts: &[(PathBuf, PathBuf)],
    switches_ids: bool,
) -> Result<(), RuntimeError> {
    let program = spec.command.first().ok_or(RuntimeError::EmptyCommand)?;
    let is_file = |path: &Path| on_host(mounts, path).is_file();
    let found = if program.contains('/') {
        let path = Path::new(program);
        let base = spec
            .working_dir
            .clone()
            .or_else(|| std::env::current_dir().ok());
        let absolute = match base {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        is_file(&absolute).then_some(absolute)
    } else {
        std::env::split_paths(&container_path(spec))
            .map(|dir| dir.join(program))
            .find(|candidate| is_file(candidate))
    };
    let Some(executable) = found else {
        return Err(RuntimeError::ExecutableNotFound {
            program: program.clone(),
        });
    };
    // Only a switched user can be denied; testkit's own access shows at spawn.
    let Some(uid) = spec.run_as_user.filter(|&uid| uid != 0 && switches_ids) else {
        return Ok(());
    };
    let gids: Vec<u32> = [Some(spec.run_as_group.unwrap_or(0)), spec.fs_group]
        .into_iter()
        .flatten()
        .collect();
    if executable
        .ancestors()
        .all(|path| may_execute(&on_host(mounts, path), uid, &gids))
    {
        Ok(())
    } else {
        Err(RuntimeError::ExecutableNotAccessible {
            path: executable,
            uid,
        })
    }
}

/// Where a container path lives on the host, through the innermost mount holding it.
fn on_host(mounts: &[(PathBuf, PathBuf)], path: &Path) -> PathBuf {
    mounts
        .iter()
        .rev()
        .find_map(|(target, source)| path.strip_prefix(target).ok().map(|rest| source.join(rest)))
        .unwrap_or_else(|| path.to_path_buf())
}

/// The execute/search permission check the kernel does for `uid` in `gids` (ACLs aside).
fn may_execute(path: &Path, uid: u32, gids: &[u32]) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        // A missing path is reported by the lookup above, not here.
        return true;
    };
    let bit = if metadata.uid() == uid {
        0o100
    } else if gids.contains(&metadata.gid()) {
        0o010
    } else {
        0o001
    };
    metadata.mode() & bit != 0
}

fn find_tool(tool: &'static str) -> Result<PathBuf, RuntimeError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .ok_or(RuntimeError::ToolMissing { tool })
}

fn push_line(script: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        script.extend_from_slice(part);
    }
    script.push(b'\n');
}

/// Single-quote for `sh`.
fn quote(text: &OsStr) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &byte in text.as_bytes() {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;
    use crate::logs::{LogCut, LogQuery};

    const BOUND: Duration = Duration::from_secs(10);

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn sh(script: &str) -> ProcessSpec {
        ProcessSpec {
            command: vec!["sh".into(), "-c".into(), script.into()],
            ..ProcessSpec::default()
        }
    }

    struct Run {
        _dir: tempfile::TempDir,
        logs: Arc<LogBuffer>,
        container: Container,
    }

    async fn start(spec: ProcessSpec) -> Run {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = LogBuffer::new(dir.path()).expect("log buffer");
        let container = Container::start(spec, Arc::clone(&logs))
            .await
            .expect("container starts");
        Run {
            _dir: dir,
            logs,
            container,
        }
    }

    impl Run {
        async fn finish(&self) -> Termination {
            tokio::time::timeout(BOUND, self.container.wait())
                .await
                .expect("container exits within the bound")
        }

        async fn output(&self) -> String {
            let stream = self.logs.read(LogQuery::default(), LogCut::Never);
            let chunks: Vec<Bytes> = stream.collect().await;
            String::from_utf8(chunks.concat()).expect("utf-8 output")
        }
    }

    async fn run(spec: ProcessSpec) -> (Termination, String) {
        let run = start(spec).await;
        let termination = run.finish().await;
        (termination, run.output().await)
    }

    #[tokio::test]
    async fn exit_codes_map_to_completed_and_error() {
        let (ok, _) = run(sh("exit 0")).await;
        assert_eq!(
            (ok.exit_code, ok.reason, ok.signal),
            (0, TerminationReason::Completed, None)
        );
        assert!(ok.started_at <= ok.finished_at);
        let (failed, _) = run(sh("exit 3")).await;
        assert_eq!(
            (failed.exit_code, failed.reason),
            (3, TerminationReason::Error)
        );
        assert_eq!(failed.reason.as_str(), "Error");
    }

    #[tokio::test]
    async fn stdout_and_stderr_reach_the_log_in_write_order_live() {
        let dir = tempfile::tempdir().expect("temp dir");
        // One fifo per step: a reader reopening the same fifo could meet the last writer still
        // holding it open and read its end instead of waiting.
        let fifos = [dir.path().join("go-1"), dir.path().join("go-2")];
        for fifo in &fifos {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o666))
                .expect("fifo");
        }
        let mut spec =
            sh("echo out-1; read _ <\"$GO1\"; echo err-1 >&2; read _ <\"$GO2\"; printf out-2");
        spec.env
            .push(("GO1".into(), fifos[0].display().to_string()));
        spec.env
            .push(("GO2".into(), fifos[1].display().to_string()));
        let run = start(spec).await;
        // One clock for both streams: this test is about order, not stderr's lag.
        run.logs.set_stderr_lag(Duration::ZERO);
        let follow = LogQuery {
            follow: true,
            timestamps: true,
            ..LogQuery::default()
        };
        let mut stream = Box::pin(run.logs.read(follow, LogCut::Never));
        let mut seen = Vec::new();
        for (step, expected) in ["out-1\n", "err-1\n", "out-2"].into_iter().enumerate() {
            let chunk = tokio::time::timeout(BOUND, stream.next())
                .await
                .expect("line arrives while the process waits")
                .expect("stream open");
            let text = String::from_utf8(chunk.to_vec()).expect("utf-8");
            let (ts, line) = text.split_once(' ').expect("timestamp prefix");
            assert_eq!(line, expected);
            seen.push(ts.to_owned());
            // The process only writes the next line once this one was delivered.
            if let Some(fifo) = fifos.get(step).cloned() {
                tokio::task::spawn_blocking(move || std::fs::write(fifo, "go\n"))
                    .await
                    .expect("join")
                    .expect("release the process");
            }
        }
        let end = tokio::time::timeout(BOUND, stream.next())
            .await
            .expect("stream ends");
        assert!(
            end.is_none(),
            "follow stream ends after the container exits"
        );
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "timestamps increase: {seen:?}"
        );
        assert_eq!(run.finish().await.reason, TerminationReason::Completed);
    }

    #[tokio::test]
    async fn partial_last_line_is_kept_without_newline() {
        let (_, output) = run(sh("echo line-1; echo err-1 >&2; printf partial-no-newline")).await;
        assert!(output.ends_with("partial-no-newline"), "{output:?}");
        assert_eq!(output.lines().count(), 3);
    }

    /// Until the container wrote `ready` (its trap is in place then).
    async fn wait_ready(run: &Run) {
        let mut stream = Box::pin(run.logs.read(
            LogQuery {
                follow: true,
                ..LogQuery::default()
            },
            LogCut::Never,
        ));
        let ready = tokio::time::timeout(BOUND, stream.next())
            .await
            .expect("ready");
        assert_eq!(ready.as_deref(), Some(&b"ready\n"[..]));
    }

    #[tokio::test]
    async fn stop_terminates_the_process_group_within_the_grace() {
        let run = start(sh("trap 'exit 143' TERM; echo ready; sleep 1000 & wait")).await;
        assert!(run.container.pid().is_some());
        wait_ready(&run).await;
        let asked = std::time::Instant::now();
        run.container.stop(Duration::from_secs(30));
        let termination = run.finish().await;
        assert!(asked.elapsed() < Duration::from_secs(5));
        assert_eq!(termination.exit_code, 143);
        assert_eq!(termination.reason, TerminationReason::Error);
    }

    #[tokio::test]
    async fn as_pid_1_a_command_without_a_handler_ignores_sigterm_until_the_grace() {
        if skip_unless_root("as_pid_1_a_command_without_a_handler_ignores_sigterm_until_the_grace")
        {
            return;
        }
        let run = start(sh("echo ready; exec sleep 1000")).await;
        wait_ready(&run).await;
        let grace = Duration::from_millis(700);
        let asked = std::time::Instant::now();
        run.container.stop(grace);
        let termination = run.finish().await;
        assert!(asked.elapsed() >= grace, "{:?}", asked.elapsed());
        assert_eq!((termination.exit_code, termination.signal), (137, Some(9)));
    }

    #[tokio::test]
    async fn stop_kills_a_process_ignoring_sigterm_after_the_grace() {
        let run = start(sh("trap '' TERM; echo ready; sleep 1000")).await;
        wait_ready(&run).await;
        run.container.stop(Duration::from_millis(200));
        let termination = run.finish().await;
        assert_eq!((termination.exit_code, termination.signal), (137, Some(9)));
    }

    #[tokio::test]
    async fn oom_kill_reports_oomkilled_137() {
        let run = start(ProcessSpec {
            command: vec!["sleep".into(), "1000".into()],
            ..ProcessSpec::default()
        })
        .await;
        run.container.oom_kill();
        let termination = run.finish().await;
        assert_eq!(termination.exit_code, 137);
        assert_eq!(termination.reason.as_str(), "OOMKilled");
    }

    #[tokio::test]
    async fn stdin_is_closed_so_cat_exits_at_once() {
        let (termination, output) = run(ProcessSpec {
            command: vec!["cat".into()],
            ..ProcessSpec::default()
        })
        .await;
        assert_eq!(termination.reason, TerminationReason::Completed);
        assert_eq!(output, "");
    }

    #[tokio::test]
    async fn background_children_die_with_the_main_process() {
        // Without killing the group, `sleep` would hold the pipes open and wait() would hang.
        let (termination, output) = run(sh("sleep 1000 & echo started")).await;
        assert_eq!(termination.reason, TerminationReason::Completed);
        assert_eq!(output, "started\n");
    }

    #[tokio::test]
    async fn output_nobody_reads_never_blocks_the_process() {
        let (termination, output) = run(sh("yes 0123456789 | head -n 200000")).await;
        assert_eq!(termination.exit_code, 0);
        assert_eq!(output.lines().count(), 200_000);
    }

    #[tokio::test]
    async fn env_and_working_dir_are_applied() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spec = sh("echo \"$GREETING $PWD\"");
        spec.command[0] = "/bin/sh".into();
        // A container PATH without the host tools must not break the wrapper.
        spec.env = vec![
            ("PATH".into(), "/nowhere".into()),
            ("GREETING".into(), "first".into()),
            ("GREETING".into(), "hello".into()),
        ];
        spec.working_dir = Some(dir.path().to_path_buf());
        let (_, output) = run(spec).await;
        assert_eq!(output, format!("hello {}\n", dir.path().display()));
    }

    #[tokio::test]
    async fn missing_executable_fails_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = LogBuffer::new(dir.path()).expect("log buffer");
        let spec = ProcessSpec {
            command: vec!["no-such-binary-testkit".into()],
            ..ProcessSpec::default()
        };
        let error = Container::start(spec, logs).await.expect_err("start fails");
        assert!(
            error
                .to_string()
                .contains("\"no-such-binary-testkit\" not found"),
            "{error}"
        );
    }

    #[expect(clippy::print_stderr, reason = "say why a root-only test did not run")]
    fn skip_unless_root(test: &str) -> bool {
        if !is_root() {
            eprintln!("skipping {test}: needs root (mount namespace, setpriv)");
        }
        !is_root()
    }

    #[tokio::test]
    async fn run_as_user_cannot_write_as_root() {
        if skip_unless_root("run_as_user_cannot_write_as_root") {
            return;
        }
        let mut spec = sh("id -u; touch /root/testkit-should-not-exist");
        spec.run_as_user = Some(1000);
        spec.run_as_group = Some(1000);
        let (termination, output) = run(spec).await;
        assert_eq!(termination.reason, TerminationReason::Error);
        assert!(output.starts_with("1000\n"), "{output}");
        assert!(output.contains("Permission denied"), "{output}");
        assert!(!Path::new("/root/testkit-should-not-exist").exists());
    }

    #[tokio::test]
    async fn mounts_are_visible_inside_only() {
        if skip_unless_root("mounts_are_visible_inside_only") {
            return;
        }
        let host = tempfile::tempdir().expect("temp dir");
        let source = host.path().join("volume");
        std::fs::create_dir(&source).expect("source");
        std::fs::write(source.join("hello"), "from the volume\n").expect("file");
        let secret = host.path().join("secret");
        std::fs::create_dir(&secret).expect("secret");
        std::fs::write(secret.join("token"), "s3cret\n").expect("token");
        let target = host.path().join("paperclip");
        let nested = target.join("run").join("secret");
        let mut spec = sh("cat hello; cat run/secret/token; touch written; \
             touch run/secret/nope 2>/dev/null || echo read-only");
        spec.mounts = vec![
            MountSpec {
                source: secret.clone(),
                target: nested,
                read_only: true,
            },
            MountSpec {
                source: source.clone(),
                target: target.clone(),
                read_only: false,
            },
        ];
        spec.working_dir = Some(target.clone());
        spec.run_as_user = Some(1000);
        spec.fs_group = Some(2000);
        let (termination, output) = run(spec).await;
        assert_eq!(output, "from the volume\ns3cret\nread-only\n");
        assert_eq!(termination.reason, TerminationReason::Completed);
        // The host only got an empty mountpoint; the write landed in the source.
        let on_host: Vec<_> = std::fs::read_dir(&target).expect("mountpoint").collect();
        assert!(on_host.is_empty(), "host view changed: {on_host:?}");
        assert!(source.join("written").exists());
        assert!(!secret.join("nope").exists());
    }

    #[tokio::test]
    async fn executable_the_user_cannot_reach_fails_start() {
        if skip_unless_root("executable_the_user_cannot_reach_fails_start") {
            return;
        }
        // A 0700 root directory: uid 1000 cannot search it, as in an image that keeps the
        // binary in root's home.
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("mode");
        let script = dir.path().join("agent");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let logs = LogBuffer::new(dir.path()).expect("log buffer");
        let spec = ProcessSpec {
            command: vec![script.display().to_string()],
            run_as_user: Some(1000),
            ..ProcessSpec::default()
        };
        let error = Container::start(spec, logs).await.expect_err("start fails");
        assert!(
            matches!(
                &error,
                RuntimeError::ExecutableNotAccessible { uid: 1000, .. }
            ),
            "{error}"
        );
    }

    #[test]
    fn without_root_a_mount_elsewhere_is_refused_with_a_hint() {
        let host = tempfile::tempdir().expect("temp dir");
        let mut spec = sh("true");
        spec.mounts = vec![MountSpec {
            source: host.path().to_path_buf(),
            target: PathBuf::from("/paperclip"),
            read_only: false,
        }];
        let error = direct_command(&spec).expect_err("refused");
        assert!(
            error.to_string().contains("needs root to bind-mount"),
            "{error}"
        );
        spec.mounts[0].target = host.path().to_path_buf();
        assert!(
            direct_command(&spec).is_ok(),
            "a mount at its own path needs nothing"
        );
    }
}
