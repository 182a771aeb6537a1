//! A directory of programs for the agent pods' `PATH` — the fake `opencode` a test scripts, the
//! files it reads, or a staged real binary — and a fake that records when each run ran.
//!
//! A pod's main container runs as a local process under an unprivileged user (uid 1000), so
//! the directory and everything in it are world-readable, and the programs runnable.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A fake `opencode` body that appends `start <run id>`, sleeps a second, then appends
/// `end <run id>` to the file [`TIMELINE`] on the shared claim: runs that overlap interleave
/// their marks ([`assert_each_ran_alone`]).
pub const TIMELINE_AGENT: &str = "cat > /dev/null\necho \"start $PAPERCLIP_RUN_ID\" >> /paperclip/workspaces/project/timeline\nsleep 1\necho \"end $PAPERCLIP_RUN_ID\" >> /paperclip/workspaces/project/timeline\necho done";
/// Where [`TIMELINE_AGENT`] writes, relative to the claim's directory ([`crate::Cluster::pvc_path`]).
pub const TIMELINE: &str = "workspaces/project/timeline";

/// A temporary directory for an agent's programs, removed on drop.
#[derive(Debug)]
pub struct AgentBin(tempfile::TempDir);

impl AgentBin {
    /// A new, empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> io::Result<AgentBin> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        Ok(AgentBin(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// An agent's `PATH`: this directory first, then the system's.
    pub fn path_env(&self) -> String {
        format!("{}:/usr/local/bin:/usr/bin:/bin", self.path().display())
    }

    /// Installs the fake `opencode`: a POSIX shell script of `body` (`$@` holds OpenCode's
    /// arguments, the prompt is on stdin).
    pub fn fake_opencode(&self, body: &str) -> io::Result<PathBuf> {
        self.write("opencode", format!("#!/bin/sh\n{body}\n").as_bytes(), 0o755)
    }

    /// Writes a data file `name` for the fake to read; returns its path.
    pub fn file(&self, name: &str, contents: &[u8]) -> io::Result<PathBuf> {
        self.write(name, contents, 0o644)
    }

    fn write(&self, name: &str, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
        let path = self.path().join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(path)
    }
}

/// Checks a [`TIMELINE`] of `runs` runs of [`TIMELINE_AGENT`]: each run's end follows its own
/// start, so no two of them overlapped. Panics with the timeline otherwise.
pub fn assert_each_ran_alone(timeline: &str, runs: usize) {
    let marks: Vec<&str> = timeline.lines().collect();
    assert_eq!(marks.len(), 2 * runs, "{timeline}");
    for pair in marks.chunks(2) {
        let run = pair[0].strip_prefix("start ").expect(timeline);
        assert_eq!(
            pair[1],
            format!("end {run}"),
            "each Job ran alone:\n{timeline}"
        );
    }
}
