//! The run lifecycle: the only part of the engine that talks to a cluster.
//!
//! One run: validate → hold the agent's Lease (one process follows an agent's Jobs at a time) →
//! guard (one active Job per agent) → create Secret, Job, owner reference → follow the pod
//! through the shared watches, its Events into the run log, its output exactly once into the
//! parser and the sink → harvest the result → clean up → release the Lease. A stale or hanging
//! resume is retried once, fresh, within the same run. Cancellation deletes the Job; the host
//! process shutting down never does — its Lease expires, and the next run of the agent, with or
//! without a task key, harvests the orphaned Job and then runs its own prompt.
//!
//! `run` drives those steps; `follow` holds the phases one attempt passes through (`Phase`:
//! Pending → Scheduled → Running → Ended → Done) as transitions over what is observed; `logs`
//! delivers the container's output; `status` reads Jobs and pods; `lease`, `guard`, `objects`,
//! `informer`, `introspect`, `gc`, `doctor` and `retry` are one noun each; `error` and `result`
//! are what a run returns.

pub mod cluster;
mod doctor;
mod error;
#[cfg(test)]
mod fixtures;
mod follow;
mod gc;
mod guard;
mod informer;
mod introspect;
mod lease;
mod logs;
mod objects;
mod result;
mod retry;
mod run;
mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use self::cluster::{ClientCache, ClusterError, ClusterSource, trust_agent_kubeconfig_paths};
pub use self::doctor::{Check, CheckStatus, DoctorReport, DoctorTarget, doctor};
pub use self::error::{ApiError, OutputError, RunError};
pub use self::gc::{Collected, GcError, GcReport, gc};
pub use self::guard::GuardError;
pub use self::introspect::{DiscoverError, SelfPod};
pub use self::logs::follow_pod_output;
pub use self::objects::{DeleteError, Leftovers, ObjectsError};
pub use self::result::{RunResult, RunStatus, SessionParams};
use crate::config::AgentConfig;
use crate::event::RunSink;
use crate::manifest::{InheritedPod, RunRequest};

/// How long the engine waits for things that may never happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Another run of the same agent must finish within this, else `k8s_concurrent_run_blocked`.
    pub concurrency_wait: Duration,
    /// How long the agent's Lease lasts unrenewed (its holder renews it every third of this): a
    /// process that dies leaves its Job to the next run of the agent after this.
    pub lease: Duration,
    /// The pod must be scheduled within this, else `k8s_pod_unschedulable`.
    pub schedule: Duration,
    /// Once scheduled, the container must start within this, else `k8s_pod_start_timeout`.
    pub start: Duration,
    /// A resumed session must print its first event within this after the container started;
    /// OpenCode hangs silently when resuming a session from another directory. Longer than
    /// OpenCode's ~90 s of silent retries when the LLM endpoint fails.
    pub resume_first_event: Duration,
    /// Cancelling waits this long for the pod to be gone (Paperclip waits 60 s for the
    /// acknowledgement).
    pub cancel: Duration,
    /// A scheduled pod may stay Unschedulable this long before the run fails (an autoscaler's
    /// `TriggeredScaleUp` extends it to `schedule`).
    pub unschedulable: Duration,
    /// After the Job or the container ended, how long to wait — without any output arriving —
    /// for the other (and the last log bytes) before harvesting with what is known.
    pub settle: Duration,
    /// A container may wait this long in ErrImagePull/ImagePullBackOff or a container config
    /// error (the kubelet retries; a missing Secret can still be created) before the run fails.
    pub blocked: Duration,
    /// The API may refuse every read of the agent's output (403 while an API server's authorizer
    /// warms up after a restart, 5xx, no connection) this long before the run fails with
    /// `k8s_forbidden` or `k8s_api_unreachable`.
    pub refused: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            concurrency_wait: Duration::from_secs(30 * 60),
            lease: Duration::from_secs(30),
            schedule: Duration::from_secs(5 * 60),
            start: Duration::from_secs(10 * 60),
            resume_first_event: Duration::from_secs(150),
            cancel: Duration::from_secs(45),
            unschedulable: Duration::from_secs(60),
            blocked: Duration::from_secs(30),
            settle: Duration::from_secs(30),
            refused: logs::REFUSED,
        }
    }
}

/// Engine-wide settings (the per-agent ones are in [`AgentConfig`]).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// How to find the Paperclip pod the Jobs inherit from.
    pub self_pod: SelfPod,
    /// Wait bounds.
    pub bounds: Bounds,
}

/// The engine: caches clients, the inherited pod template and the shared watches, and names
/// itself as a holder of agents' Leases. One per process; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    options: EngineOptions,
    clients: ClientCache,
    inherited: Mutex<HashMap<ClusterSource, Option<Arc<InheritedPod>>>>,
    /// The shared watches per (cluster, namespace); each lingers [`WATCH_LINGER`] after its
    /// last run, so sequential runs share one instead of each listing and watching anew.
    watches: Arc<Mutex<Watches>>,
    /// This engine as a Lease holder: `<host>/<pid>.<instance>`.
    process: String,
    /// Fires when a run of this engine released an agent's Lease, so runs of this engine
    /// waiting for it try at once instead of at their next poll.
    lease_released: tokio::sync::Notify,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(EngineOptions::default())
    }
}

/// How long the shared watches of a namespace outlive the last run using them (they stop between
/// one and two of these after it): a run starting meanwhile reuses them rather than paying three
/// lists and three watches, while an idle engine holds no connections for long.
pub(crate) const WATCH_LINGER: Duration = Duration::from_secs(120);

/// The shared watches, and for each the generation of its reaper: only the newest reaper of a
/// watch may stop it.
type Watches = HashMap<(ClusterSource, String), (Arc<informer::NamespaceWatch>, u64)>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Engine {
    /// A new engine.
    pub fn new(options: EngineOptions) -> Self {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        Self {
            options,
            clients: ClientCache::default(),
            inherited: Mutex::default(),
            watches: Arc::default(),
            process: lease::process_identity(INSTANCES.fetch_add(1, Ordering::Relaxed)),
            lease_released: tokio::sync::Notify::new(),
        }
    }

    /// Run one agent turn to its end. `Ok` is a run that reached an outcome — succeeded,
    /// failed, timed out or cancelled, with its error code; `Err` means the run could not be
    /// started or the engine could not follow it (with its code). Nothing is created for a
    /// request or config that fails validation.
    pub async fn run(
        &self,
        request: RunRequest,
        config: &AgentConfig,
        sink: &dyn RunSink,
        cancel: CancellationToken,
    ) -> Result<RunResult, RunError> {
        run::Run::new(self, request, config, sink, cancel, None)
            .execute()
            .await
    }

    /// Like [`Engine::run`], for a run whose Job may still be running from before a restart of
    /// the host: `checkpoint` is the last [`RunEvent::Output`](crate::event::RunEvent) checkpoint
    /// the host persisted, and output continues right after it, without repeating a line. A
    /// checkpoint that cannot be read is an error (`config_invalid`); nothing is created.
    pub async fn reattach(
        &self,
        request: RunRequest,
        config: &AgentConfig,
        checkpoint: &str,
        sink: &dyn RunSink,
        cancel: CancellationToken,
    ) -> Result<RunResult, RunError> {
        let cursor =
            logs::LogCursor::from_checkpoint(checkpoint).ok_or_else(|| RunError::Checkpoint {
                checkpoint: checkpoint.to_owned(),
            })?;
        run::Run::new(self, request, config, sink, cancel, Some(cursor))
            .execute()
            .await
    }

    /// Stop the engine's shared watches and wait until they have, so that nothing they report
    /// follows the last result: for a process that exits after its runs (the CLI). Runs still
    /// in progress keep theirs.
    pub async fn shutdown(self) {
        let watches = std::mem::take(&mut *lock(&self.watches));
        drop(self);
        for (watch, _) in watches.into_values() {
            if let Ok(watch) = Arc::try_unwrap(watch) {
                watch.stop().await;
            }
        }
    }

    fn namespace_watch(
        &self,
        source: &ClusterSource,
        client: &kube::Client,
        namespace: &str,
    ) -> Arc<informer::NamespaceWatch> {
        let key = (source.clone(), namespace.to_owned());
        let mut watches = lock(&self.watches);
        let (watch, generation) = watches.entry(key.clone()).or_insert_with(|| {
            (
                Arc::new(informer::NamespaceWatch::start(client, namespace)),
                0,
            )
        });
        *generation += 1;
        let (watch, generation) = (watch.clone(), *generation);
        tokio::spawn(reap(Arc::downgrade(&self.watches), key, generation));
        watch
    }
}

/// Stop the watch of `key` once no run has used it for [`WATCH_LINGER`] — unless a later run
/// took it meanwhile (its own reaper takes over) or the engine is gone (the watches with it).
async fn reap(watches: Weak<Mutex<Watches>>, key: (ClusterSource, String), generation: u64) {
    loop {
        tokio::time::sleep(WATCH_LINGER).await;
        let Some(watches) = watches.upgrade() else {
            return;
        };
        let mut watches = lock(&watches);
        match watches.get(&key) {
            Some((_, newest)) if *newest != generation => return,
            // Still followed by a run: look again a linger period later.
            Some((watch, _)) if Arc::strong_count(watch) > 1 => {}
            Some(_) => {
                watches.remove(&key);
                return;
            }
            None => return,
        }
    }
}
