//! One run, phase by phase: prepare, hold the agent's Lease, guard and create (or harvest an
//! orphan first, or follow its own Job), follow, harvest, clean up, release the Lease.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{OutputError, RunError};
use super::guard::GuardError;
use super::informer::{NamespaceWatch, Subscription, Update};
use super::introspect::{self, Found};
use super::lease::{self, Acquired, AgentLease};
use super::logs::{self, Chunk, ContainerState, FollowStats, LogCursor, LogError};
use super::result::{Harvest, RunResult};
use super::status::{self, Blocker, Exit, JobEnd};
use super::{ClusterSource, Engine, guard, lock, objects};
use crate::config::AgentConfig;
use crate::error_code::ErrorCode;
use crate::event::{RunEvent, RunSink};
use crate::manifest::{
    self, CONTAINER_NAME, InheritedPod, Rendered, ResumeDecision, RunRequest, SessionResume,
    TASK_KEY_KEY,
};
use crate::parse::{OutputParser, RunOutput};

/// A Job that ended before its pod was seen: the pod watch is a separate stream and may lag the
/// Job's; wait this long for the pod before concluding there was none.
const POD_GRACE: Duration = Duration::from_secs(3);

/// A container that exited non-zero before the Job's `FailureTarget` was seen: wait this long
/// for it (a deadline writes it before killing the pod, but the Job watch is a separate stream),
/// so a timeout is not reported as a plain failure. An exit 0 needs no Job condition.
const JOB_TARGET_GRACE: Duration = Duration::from_millis(500);

pub(super) struct Run<'a> {
    engine: &'a Engine,
    request: RunRequest,
    config: &'a AgentConfig,
    sink: &'a dyn RunSink,
    cancel: CancellationToken,
    /// Output already delivered by an earlier process (reattach).
    checkpoint: Option<LogCursor>,
}

/// The cluster side of a run, resolved once.
struct Target {
    client: kube::Client,
    namespace: String,
    inherited: Option<Arc<InheritedPod>>,
    watch: Arc<NamespaceWatch>,
}

/// The first poll interval while another live process holds the agent's Lease (doubling up to
/// the Lease's renew period); a release by this engine, or the blocking Job ending, retries at
/// once.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// What waiting for another holder of the agent's Lease has done so far.
struct LeaseWait {
    /// The holder the run log's notices are about.
    holder: Option<String>,
    /// The holder's Job was named in the run log.
    named: bool,
    /// The run log said the run waits, without a Job to name yet.
    noticed: bool,
    /// The holder's Job, watched to try again as soon as it ends.
    blocking: Option<Subscription>,
    /// The next poll interval.
    pause: Duration,
}

/// How an attempt ended for the run, counting the attempts before it.
enum Attempted {
    /// The run's outcome is decided.
    Over(Harvest),
    /// Another attempt follows: this run's own after an orphan, or the fresh retry of a resume.
    Again(Harvest),
}

/// `harvest`, after the `previous` attempts: the last attempt decides, usage and cost add up.
fn after(previous: Option<Harvest>, harvest: Harvest) -> Harvest {
    match previous {
        Some(previous) => previous.then(harvest),
        None => harvest,
    }
}

/// What [`Run::start`] found to follow.
struct Started {
    job_name: String,
    sub: Subscription,
    /// The Job is an orphan to harvest before this run's own Job.
    orphan: Option<Box<Job>>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        mut request: RunRequest,
        config: &'a AgentConfig,
        sink: &'a dyn RunSink,
        cancel: CancellationToken,
        checkpoint: Option<LogCursor>,
    ) -> Self {
        request.attempt = 1;
        Self {
            engine,
            request,
            config,
            sink,
            cancel,
            checkpoint,
        }
    }

    async fn notice(&self, message: impl Into<String>) {
        self.sink.emit(RunEvent::notice(message)).await;
    }

    pub(super) async fn execute(mut self) -> Result<RunResult, RunError> {
        let target = self.prepare().await?;
        let rendered = self.render(&target).await?;
        let lease = self.hold_lease(&target).await?;
        let outcome = tokio::select! {
            outcome = self.attempts(&target, rendered) => outcome,
            () = lease.lost() => Err(GuardError::LeaseLost {
                lease: self.engine.options.bounds.lease,
            }
            .into()),
        };
        lease.release().await;
        self.engine.lease_released.notify_waiters();
        outcome
    }

    /// The attempts of the run, holding the agent's Lease: an orphan to harvest first, if any,
    /// then this run's own Job, and the fresh retry of a stale or hanging resume.
    async fn attempts(
        &mut self,
        target: &Target,
        mut rendered: Rendered,
    ) -> Result<RunResult, RunError> {
        let mut total: Option<Harvest> = None;
        loop {
            let Started {
                job_name,
                mut sub,
                orphan,
            } = self.start(target, &rendered).await?;
            let previous = total.take();
            let attempted = match orphan {
                Some(orphan) => {
                    self.orphan_attempt(target, &job_name, &mut sub, &orphan, &rendered, previous)
                        .await
                }
                None => {
                    self.own_attempt(target, &job_name, &mut sub, &rendered, previous)
                        .await
                }
            };
            match attempted {
                Attempted::Over(harvest) => {
                    return Ok(harvest.into_result(
                        self.config,
                        &self.request,
                        &target.namespace,
                        &job_name,
                    ));
                }
                Attempted::Again(harvest) => {
                    total = Some(harvest);
                    rendered = self.render(target).await?;
                }
            }
        }
    }

    /// Follow and clean up an orphan; this run's own prompt runs after it unless it was
    /// cancelled meanwhile.
    async fn orphan_attempt(
        &mut self,
        target: &Target,
        job_name: &str,
        sub: &mut Subscription,
        orphan: &Job,
        rendered: &Rendered,
        previous: Option<Harvest>,
    ) -> Attempted {
        // Its resume state is unknown: no hang detection for it.
        let unknown = Rendered {
            resume: ResumeDecision::New,
            ..rendered.clone()
        };
        let mut harvest = self.follow(target, sub, &unknown).await;
        self.finish_attempt(target, job_name, sub, &harvest).await;
        // Not an attempt of this run: its usage and cost count, its attempt does not.
        harvest.attempts = 0;
        let harvest = after(previous, harvest);
        if harvest.cancelled {
            return Attempted::Over(harvest);
        }
        self.after_orphan(target, orphan, &harvest).await;
        Attempted::Again(harvest)
    }

    /// Follow and clean up this run's own Job; a stale or hanging resume is retried once, fresh.
    async fn own_attempt(
        &mut self,
        target: &Target,
        job_name: &str,
        sub: &mut Subscription,
        rendered: &Rendered,
        previous: Option<Harvest>,
    ) -> Attempted {
        let harvest = self.follow(target, sub, rendered).await;
        let retry = self.retry_reason(&harvest, rendered);
        self.finish_attempt(target, job_name, sub, &harvest).await;
        let harvest = after(previous, harvest);
        match retry {
            Some(reason) if self.request.attempt == 1 => {
                self.notice(reason).await;
                self.request.attempt = 2;
                self.request.resume = None;
                Attempted::Again(harvest)
            }
            _ => Attempted::Over(harvest),
        }
    }

    /// An orphan was harvested: say what it cost, and resume the session it produced when it
    /// worked on this run's task (or this run names no task, as Paperclip's "Run now").
    async fn after_orphan(&mut self, target: &Target, orphan: &Job, harvest: &Harvest) {
        let name = orphan.metadata.name.as_deref().unwrap_or_default();
        let usage = &harvest.output.usage;
        let mut notice = format!(
            "harvested orphaned Job {}/{name}: {} input, {} output tokens, {:.4} USD, counted in this run; now running this run's own prompt",
            target.namespace, usage.input_tokens, usage.output_tokens, harvest.output.cost_usd
        );
        let task = annotation(orphan, TASK_KEY_KEY);
        let same_task = self.request.task_key.is_none() || task == self.request.task_key.as_deref();
        let session = harvest.output.session_id.clone();
        if let Some(session_id) = session.filter(|_| same_task) {
            notice.push_str(&format!(", continuing session {session_id} it produced"));
            self.request.resume = Some(SessionResume {
                session_id,
                cwd: working_dir(orphan),
            });
        }
        self.notice(notice).await;
    }

    /// Take the agent's Lease, waiting while another live process holds it. A Job whose Lease
    /// expired is not waited for: the next step harvests it.
    async fn hold_lease(&self, target: &Target) -> Result<Box<AgentLease>, RunError> {
        let bounds = self.engine.options.bounds;
        let waited_since = Instant::now();
        let mut wait = LeaseWait {
            holder: None,
            named: false,
            noticed: false,
            blocking: None,
            pause: LEASE_POLL,
        };
        loop {
            let released = self.engine.lease_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let (holder, expires_in) = match self.take_lease(target).await? {
                Acquired::Held(lease) => return Ok(lease),
                Acquired::Busy { holder, expires_in } => (holder, expires_in),
            };
            let left = bounds
                .concurrency_wait
                .saturating_sub(waited_since.elapsed());
            if left.is_zero() {
                let waited = bounds.concurrency_wait;
                return Err(GuardError::Busy { holder, waited }.into());
            }
            self.announce_wait(target, &holder, &mut wait).await;
            // Past the expiry by a hair, so the next try finds it expired.
            let nap = wait
                .pause
                .min(expires_in + Duration::from_millis(50))
                .min(left);
            tokio::select! {
                () = self.cancel.cancelled() => return Err(GuardError::Cancelled.into()),
                () = tokio::time::sleep(nap) => wait.pause = (wait.pause * 2).min(bounds.lease / 3),
                () = &mut released => wait.pause = LEASE_POLL,
                () = wait_free(wait.blocking.as_mut()) => {
                    wait.blocking = None;
                    wait.pause = LEASE_POLL;
                }
            }
        }
    }

    /// One try at the agent's Lease.
    async fn take_lease(&self, target: &Target) -> Result<Acquired, GuardError> {
        let api: Api<Lease> = Api::namespaced(target.client.clone(), &target.namespace);
        let agent = &self.request.agent_id;
        let name = manifest::agent_lease_name(agent);
        let me = lease::identity(&self.engine.process, &self.request.run_id);
        lease::acquire(&api, &name, agent, &me, self.engine.options.bounds.lease)
            .await
            .map_err(|source| GuardError::TakeLease {
                namespace: target.namespace.clone(),
                lease: name,
                agent: agent.clone(),
                source,
            })
    }

    /// Say in the run log what the run waits for, once per holder: the holder's Job once it
    /// exists (the holder may not have created it yet), and watch that Job to try again as soon
    /// as it ends.
    async fn announce_wait(&self, target: &Target, holder: &str, wait: &mut LeaseWait) {
        if wait.holder.as_deref() != Some(holder) {
            wait.holder = Some(holder.to_owned());
            (wait.named, wait.noticed) = (false, false);
        }
        if wait.named {
            return;
        }
        if let Some(job) = self.occupying_job(target).await {
            self.notice(format!(
                "waiting for Job {}/{job}, another run of this agent ({holder}), to finish",
                target.namespace
            ))
            .await;
            wait.blocking = Some(target.watch.subscribe(&job));
            wait.named = true;
        } else if !wait.noticed {
            self.notice(format!(
                "waiting for another run of this agent ({holder}) to finish"
            ))
            .await;
            wait.noticed = true;
        }
    }

    /// The agent's Job that occupies it now, to name in the run log; `None` if it cannot be
    /// listed (the wait goes on without it).
    async fn occupying_job(&self, target: &Target) -> Option<String> {
        let jobs: Api<Job> = Api::namespaced(target.client.clone(), &target.namespace);
        let params = kube::api::ListParams::default()
            .labels(&manifest::agent_selector(&self.request.agent_id));
        let listed = super::retry::retry("list the agent's Jobs", || jobs.list(&params))
            .await
            .ok()?;
        listed
            .items
            .into_iter()
            .find(status::job_occupies_agent)
            .and_then(|job| job.metadata.name)
    }

    /// Cluster client, namespace, the inherited pod and the namespace's shared watches.
    async fn prepare(&self) -> Result<Target, RunError> {
        let source = ClusterSource::from_fields(
            self.config.kubeconfig.as_deref(),
            self.config.kubeconfig_content.as_ref().map(|c| c.expose()),
        );
        let client = self.engine.clients.client(&source).await?;
        let inherited = self.inherited(&source, &client).await?;
        let namespace = self
            .config
            .namespace_for(&self.request.company_id)
            .or_else(|| inherited.as_ref().and_then(|pod| pod.namespace.clone()))
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let watch = self.engine.namespace_watch(&source, &client, &namespace);
        Ok(Target {
            client,
            namespace,
            inherited,
            watch,
        })
    }

    async fn inherited(
        &self,
        source: &ClusterSource,
        client: &kube::Client,
    ) -> Result<Option<Arc<InheritedPod>>, RunError> {
        if let Some(cached) = lock(&self.engine.inherited).get(source) {
            return Ok(cached.clone());
        }
        let found = match introspect::discover(client, &self.engine.options.self_pod).await? {
            Found::Pod(pod) => Some(Arc::new(*pod)),
            Found::NotFound(why) => {
                self.notice(format!("no Paperclip pod to inherit from: {why}"))
                    .await;
                None
            }
        };
        lock(&self.engine.inherited).insert(source.clone(), found.clone());
        Ok(found)
    }

    /// Render this attempt's objects (pure: a bad config fails here, before anything exists).
    async fn render(&self, target: &Target) -> Result<Rendered, RunError> {
        let rendered = manifest::render(&self.request, target.inherited.as_deref(), self.config)?;
        if !rendered.not_inherited.is_empty() {
            self.notice(format!(
                "not inherited from a Paperclip pod: {}",
                rendered.not_inherited.join(", ")
            ))
            .await;
        }
        for warning in &rendered.warnings {
            self.notice(warning.clone()).await;
        }
        match &rendered.resume {
            ResumeDecision::Resumed { session_id } => {
                self.notice(format!("resuming session {session_id}")).await
            }
            ResumeDecision::Fresh { reason } => self.notice(reason.clone()).await,
            ResumeDecision::New => {}
        }
        Ok(rendered)
    }

    /// Holding the agent's Lease: create the attempt's objects, follow this attempt's own Job
    /// (a reattach), or take an orphan to harvest first.
    async fn start(&self, target: &Target, rendered: &Rendered) -> Result<Started, RunError> {
        let waited_since = Instant::now();
        loop {
            let listed = self.agent_jobs(target).await?;
            let this_job = rendered.job.metadata.name.as_deref().unwrap_or_default();
            let blocking = match guard::judge(&listed, this_job, !self.config.retain_jobs) {
                // A reattach continues output that exists: it never starts the work again.
                guard::Verdict::Clear | guard::Verdict::Orphan(_) if self.checkpoint.is_some() => {
                    return Err(GuardError::ReattachGone {
                        namespace: target.namespace.clone(),
                        job: this_job.to_owned(),
                    }
                    .into());
                }
                guard::Verdict::Clear => return self.create(target, rendered).await,
                guard::Verdict::Mine(job) => return Ok(self.reattach(target, &job).await),
                guard::Verdict::Orphan(job) => return Ok(self.adopt_orphan(target, job).await),
                guard::Verdict::Deleting(job) => job,
            };
            self.wait_deleted(target, &blocking, waited_since).await?;
        }
    }

    /// The agent's Jobs in the run's namespace.
    async fn agent_jobs(&self, target: &Target) -> Result<Vec<Job>, GuardError> {
        let jobs: Api<Job> = Api::namespaced(target.client.clone(), &target.namespace);
        let params = kube::api::ListParams::default()
            .labels(&manifest::agent_selector(&self.request.agent_id));
        let listed = super::retry::retry("list the agent's Jobs", || jobs.list(&params))
            .await
            .map_err(|source| GuardError::ListJobs {
                namespace: target.namespace.clone(),
                agent: self.request.agent_id.clone(),
                source,
            })?;
        Ok(listed.items)
    }

    /// Create this attempt's Job, watching it from before it exists.
    async fn create(&self, target: &Target, rendered: &Rendered) -> Result<Started, RunError> {
        let name = rendered.job.metadata.name.clone().unwrap_or_default();
        let sub = target.watch.subscribe(&name);
        objects::create(&target.client, &target.namespace, rendered).await?;
        self.notice(format!("created Job {}/{name}", target.namespace))
            .await;
        Ok(Started {
            job_name: name,
            sub,
            orphan: None,
        })
    }

    /// Follow this attempt's Job, already there (a restart of this process).
    async fn reattach(&self, target: &Target, job: &Job) -> Started {
        let name = job.metadata.name.clone().unwrap_or_default();
        self.notice(format!(
            "reattaching to Job {}/{name}, already running this work",
            target.namespace
        ))
        .await;
        Started {
            sub: target.watch.subscribe(&name),
            job_name: name,
            orphan: None,
        }
    }

    /// Follow a Job nobody follows, to harvest it before this run's own.
    async fn adopt_orphan(&self, target: &Target, job: Box<Job>) -> Started {
        let name = job.metadata.name.clone().unwrap_or_default();
        let run = annotation(&job, manifest::RUN_ID_KEY).unwrap_or("an unknown run");
        self.notice(format!(
            "Job {}/{name} of run {run} was left behind and nobody follows it (the process that started it is gone and its Lease expired): following it first to record its output, usage and cost; this run's own prompt runs after it. Its output from the start:",
            target.namespace
        ))
        .await;
        Started {
            sub: target.watch.subscribe(&name),
            job_name: name,
            orphan: Some(job),
        }
    }

    /// Wait for a Job of this agent being deleted to be gone, up to the concurrency bound
    /// counted from `waited_since`.
    async fn wait_deleted(
        &self,
        target: &Target,
        blocking: &Job,
        waited_since: Instant,
    ) -> Result<(), GuardError> {
        let name = blocking.metadata.name.clone().unwrap_or_default();
        let bound = self.engine.options.bounds.concurrency_wait;
        let left = bound.saturating_sub(waited_since.elapsed());
        if left.is_zero() {
            return Err(GuardError::StillDeleting {
                namespace: target.namespace.clone(),
                job: name,
                waited: bound,
            });
        }
        self.notice(format!(
            "waiting for Job {}/{name}, another run of this agent, to be deleted",
            target.namespace
        ))
        .await;
        let mut sub = target.watch.subscribe(&name);
        tokio::select! {
            () = self.cancel.cancelled() => Err(GuardError::Cancelled),
            () = tokio::time::sleep(left) => Ok(()),
            () = wait_until_gone(&mut sub) => Ok(()),
        }
    }

    /// Follow the attempt's Job until it is over and its output fully delivered.
    async fn follow(
        &mut self,
        target: &Target,
        sub: &mut Subscription,
        rendered: &Rendered,
    ) -> Harvest {
        let resumed = matches!(rendered.resume, ResumeDecision::Resumed { .. });
        let cursor = self.checkpoint.take().unwrap_or_default();
        let mut follow = Follow::new(self.engine.options.bounds, resumed, cursor);
        loop {
            follow.promote_pending();
            if let Phase::Done(done) = follow.phase() {
                return follow.harvest(done);
            }
            let deadline = follow.next_deadline();
            tokio::select! {
                () = self.cancel.cancelled() => follow.cancelled = true,
                chunk = follow.next_chunk() => match chunk {
                    Some(Chunk { bytes, checkpoint }) => {
                        follow.parser.feed(&bytes);
                        let text = String::from_utf8(bytes).unwrap_or_else(|err| {
                            String::from_utf8_lossy(err.as_bytes()).into_owned()
                        });
                        // Output still flowing after the end is not a stuck run: restart the
                        // settle clock. A sink that blocks does not block a cancel.
                        if follow.settle_from.is_some() {
                            follow.settle_from = Some(Instant::now());
                        }
                        tokio::select! {
                            () = self.sink.emit(RunEvent::Output { text, checkpoint }) => {}
                            () = self.cancel.cancelled() => follow.cancelled = true,
                        }
                    }
                    None => {
                        if let Some(notice) = follow.logs_ended().await {
                            self.notice(notice).await;
                        }
                    }
                },
                update = sub.recv() => match update {
                    Some(update) => self.apply(target, &mut follow, update).await,
                    None => follow.vanished = true,
                },
                () = tokio::time::sleep_until(deadline) => follow.deadline_passed(),
            }
        }
    }

    async fn apply(&self, target: &Target, follow: &mut Follow, update: Update) {
        match update {
            Update::Job(job) => {
                if follow.job_end.is_none()
                    && let Some(end) = status::job_outcome(&job)
                {
                    follow.job_end = Some(end);
                    follow.settle_from.get_or_insert_with(Instant::now);
                }
            }
            Update::JobGone => follow.vanished = true,
            Update::Pod(pod) => {
                follow.observe_pod(&pod);
                if follow.log_task.is_none()
                    && !follow.logs_done
                    && *follow.state_tx.borrow() != ContainerState::Waiting
                {
                    let pods: Api<Pod> = Api::namespaced(target.client.clone(), &target.namespace);
                    follow.start_logs(pods, pod.metadata.name.clone().unwrap_or_default());
                }
            }
            Update::PodGone(name) => {
                if follow.pod_name.as_deref() == Some(name.as_str()) {
                    let _ = follow.state_tx.send(ContainerState::Gone);
                }
            }
            Update::Event(event) => {
                if let Some(line) = follow.observe_event(&event) {
                    self.sink.emit(line).await;
                }
            }
        }
    }

    /// Why this attempt should be retried fresh, if it should.
    fn retry_reason(&self, harvest: &Harvest, rendered: &Rendered) -> Option<String> {
        let ResumeDecision::Resumed { session_id } = &rendered.resume else {
            return None;
        };
        if harvest.cancelled {
            return None;
        }
        if harvest.hung_resume {
            return Some(format!(
                "resuming session {session_id} printed nothing for {} s after the container started (OpenCode hangs when a session cannot be resumed here); retrying once with a fresh session",
                self.engine.options.bounds.resume_first_event.as_secs()
            ));
        }
        harvest.output.stale_session.then(|| {
            format!("session {session_id} no longer exists; retrying once with a fresh session")
        })
    }

    /// Cancel or clean up the attempt's Job.
    async fn finish_attempt(
        &self,
        target: &Target,
        job_name: &str,
        sub: &mut Subscription,
        harvest: &Harvest,
    ) {
        let ns = &target.namespace;
        // An agent nobody can read any more is stopped too: its run has failed.
        let stop = harvest.cancelled
            || harvest.hung_resume
            || harvest.blocker.is_some()
            || harvest.output_error.is_some();
        if stop {
            match objects::delete_job(&target.client, ns, job_name, true).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    self.notice(format!("could not delete Job {ns}/{job_name}: {err}"))
                        .await;
                    return;
                }
            }
            let bound = self.engine.options.bounds.cancel;
            if tokio::time::timeout(bound, wait_until_gone(sub))
                .await
                .is_err()
            {
                self.notice(format!(
                    "Job {ns}/{job_name} was deleted but its pod was still terminating after {} s",
                    bound.as_secs()
                ))
                .await;
            }
        } else if self.config.retain_jobs {
            if let Err(err) = objects::delete_secret(&target.client, ns, job_name).await {
                self.notice(format!("could not delete Secret {ns}/{job_name}: {err}"))
                    .await;
            }
        } else if let Err(err) = objects::delete_job(&target.client, ns, job_name, false).await {
            self.notice(format!(
                "could not delete Job {ns}/{job_name}; its TTL removes it later: {err}"
            ))
            .await;
        }
    }
}

/// The raw value of one of the engine's annotations on a Job.
fn annotation<'j>(job: &'j Job, key: &str) -> Option<&'j str> {
    job.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The agent container's working directory: the cwd the Job's session was created in.
fn working_dir(job: &Job) -> Option<String> {
    let spec = job.spec.as_ref()?.template.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| c.name == CONTAINER_NAME)?
        .working_dir
        .clone()
}

/// Until the blocking Job, if there is one to watch, is finished or gone.
async fn wait_free(sub: Option<&mut Subscription>) {
    match sub {
        Some(sub) => wait_until_free(sub).await,
        None => std::future::pending().await,
    }
}

/// Until the Job is finished or gone.
async fn wait_until_free(sub: &mut Subscription) {
    while let Some(update) = sub.recv().await {
        match update {
            Update::Job(job) if !status::job_occupies_agent(&job) => return,
            Update::JobGone => return,
            _ => {}
        }
    }
}

/// Until the Job, deleted in the foreground, and so its pod are gone.
async fn wait_until_gone(sub: &mut Subscription) {
    // A foreground deletion removes the Job only once its pod is gone.
    while let Some(update) = sub.recv().await {
        if matches!(update, Update::JobGone) {
            return;
        }
    }
}

/// Where one attempt is, from its Job's creation to the end of following it: every attempt
/// moves forward through these, skipping some (a Job can end before its pod is scheduled) and
/// possibly jumping to `Done` from any of them (a cancel, a blocker, a vanished Job).
/// [`Follow::phase`] derives it from what was observed; each observation (`observe_pod`, a Job
/// update in `apply`, `logs_ended`, `deadline_passed`, a cancel) is a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The Job exists, its pod is not scheduled yet; bounded by [`super::Bounds::schedule`].
    Pending { since: Instant },
    /// The pod is on a node, the container has not started; bounded by
    /// [`super::Bounds::start`].
    Scheduled { since: Instant },
    /// The container started and its output is followed; a resumed session must print its
    /// first event within [`super::Bounds::resume_first_event`].
    Running { since: Instant },
    /// The Job or the container ended: waiting for the rest of the output, the pod or the Job's
    /// condition, at most [`super::Bounds::settle`] after the latest output.
    Ended { since: Instant },
    /// Following is over, for this reason.
    Done(Done),
}

/// Why following stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Finished,
    Cancelled,
    Blocked,
    HungResume,
    OutputLost,
    Vanished,
}

/// The state of following one attempt.
struct Follow {
    bounds: super::Bounds,
    resumed: bool,
    created_at: Instant,
    scheduled_at: Option<Instant>,
    started_at: Option<Instant>,
    settle_from: Option<Instant>,
    pod_name: Option<String>,
    state_tx: watch::Sender<ContainerState>,
    log_task: Option<JoinHandle<Result<FollowStats, LogError>>>,
    log_rx: Option<mpsc::Receiver<Chunk>>,
    /// Where output delivery starts (a reattach after a restart), else from the beginning.
    cursor: LogCursor,
    log_cancel: CancellationToken,
    logs_done: bool,
    parser: OutputParser,
    exit: Option<Exit>,
    exited_at: Option<Instant>,
    job_end: Option<JobEnd>,
    /// The output could not be read completely: the run cannot succeed.
    output_error: Option<Blocker>,
    blocker: Option<Blocker>,
    /// A blocker seen in the pod's status, and when it becomes fatal if it lasts.
    pending: Option<(Blocker, Instant)>,
    scale_up: bool,
    last_warning: Option<String>,
    seen_events: HashSet<(String, i32)>,
    cancelled: bool,
    vanished: bool,
    hung_resume: bool,
}

impl Follow {
    fn new(bounds: super::Bounds, resumed: bool, cursor: LogCursor) -> Self {
        Self {
            cursor,
            bounds,
            resumed,
            created_at: Instant::now(),
            scheduled_at: None,
            started_at: None,
            settle_from: None,
            pod_name: None,
            state_tx: watch::channel(ContainerState::Waiting).0,
            log_task: None,
            log_rx: None,
            log_cancel: CancellationToken::new(),
            logs_done: false,
            parser: OutputParser::new(),
            exit: None,
            exited_at: None,
            job_end: None,
            output_error: None,
            blocker: None,
            pending: None,
            scale_up: false,
            last_warning: None,
            seen_events: HashSet::new(),
            cancelled: false,
            vanished: false,
            hung_resume: false,
        }
    }

    /// The next chunk of output, or `None` once the log follower finished; pending forever while
    /// no follower runs.
    async fn next_chunk(&mut self) -> Option<Chunk> {
        match &mut self.log_rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The follower finished; returns the run-log notice when it failed.
    async fn logs_ended(&mut self) -> Option<String> {
        self.log_rx = None;
        self.logs_done = true;
        let error = match self.log_task.take()?.await {
            Ok(Ok(_)) => return None,
            Ok(Err(err)) => err.into_output_error(),
            Err(source) => OutputError::Follower { source },
        };
        let notice = format!("{error}; the output after that point is missing");
        self.output_error = Some(Blocker {
            code: error.code(),
            message: error.to_string(),
        });
        Some(notice)
    }

    fn start_logs(&mut self, pods: Api<Pod>, pod: String) {
        let (tx, rx) = mpsc::channel::<Chunk>(1);
        let state = self.state_tx.subscribe();
        let cancel = self.log_cancel.clone();
        let refused = self.bounds.refused;
        let mut cursor = std::mem::take(&mut self.cursor);
        self.log_rx = Some(rx);
        self.log_task = Some(tokio::spawn(async move {
            logs::follow(
                &pods,
                &pod,
                CONTAINER_NAME,
                &mut cursor,
                state,
                refused,
                &cancel,
                &tx,
            )
            .await
        }));
    }

    /// Take in a pod update.
    fn observe_pod(&mut self, pod: &Pod) {
        self.pod_name = pod.metadata.name.clone();
        if self.scheduled_at.is_none() && status::pod_scheduled(pod) {
            self.scheduled_at = Some(Instant::now());
        }
        let state = status::container_state(pod, CONTAINER_NAME);
        if state != ContainerState::Waiting {
            self.started_at.get_or_insert_with(Instant::now);
        }
        if self.exit.is_none()
            && let Some(exit) = status::container_exit(pod, CONTAINER_NAME)
        {
            self.exit = Some(exit);
            self.exited_at = Some(Instant::now());
            self.settle_from.get_or_insert_with(Instant::now);
        }
        logs::set_state(&self.state_tx, state);
        // A pod that cannot run fails the run only once that has lasted: the kubelet retries a
        // failed pull, a missing Secret can be created, an autoscaler can add a node.
        let blocked = status::pod_blocker(pod, CONTAINER_NAME)
            .map(|blocker| {
                let immediate = blocker.message.starts_with("InvalidImageName")
                    || blocker.message.starts_with("ErrImageNeverPull");
                let grace = if immediate {
                    Duration::ZERO
                } else {
                    self.bounds.blocked
                };
                (blocker, grace)
            })
            .or_else(|| {
                let message = status::unschedulable(pod).filter(|_| !self.scale_up)?;
                let blocker = Blocker {
                    code: ErrorCode::K8sPodUnschedulable,
                    message: format!("pod cannot be scheduled: {message}"),
                };
                Some((blocker, self.bounds.unschedulable))
            });
        self.pending = match (blocked, self.pending.take()) {
            // Still blocked the same way: keep the clock running, take the newest message.
            (Some((blocker, _)), Some((previous, fatal_at))) if previous.code == blocker.code => {
                Some((blocker, fatal_at))
            }
            (Some((blocker, grace)), _) => Some((blocker, Instant::now() + grace)),
            (None, _) => None,
        };
    }

    /// Take in a Kubernetes Event; returns the run-log line for it when it is new.
    fn observe_event(&mut self, event: &Event) -> Option<RunEvent> {
        let uid = event.metadata.uid.clone().unwrap_or_default();
        let count = event.count.unwrap_or(1);
        if !self.seen_events.insert((uid, count)) {
            return None;
        }
        let reason = event.reason.clone().unwrap_or_default();
        let message = event.message.clone().unwrap_or_default();
        let warning = event.type_.as_deref() == Some("Warning");
        if reason == "TriggeredScaleUp" {
            self.scale_up = true;
            self.pending
                .take_if(|(b, _)| b.code == ErrorCode::K8sPodUnschedulable);
        }
        if warning {
            self.last_warning = Some(format!("{reason}: {message}"));
        }
        // Only for a container that never started: an adopted Job's replayed history must not
        // stop it now.
        if self.blocker.is_none() && self.started_at.is_none() {
            self.blocker = status::event_blocker(event).or_else(|| {
                (reason == "FailedCreate" && message.contains("violates PodSecurity")).then(|| {
                    Blocker {
                        code: ErrorCode::K8sJobCreateFailed,
                        message: format!("the Job controller cannot create the pod: {message}"),
                    }
                })
            });
        }
        let object = format!(
            "{}/{}",
            event
                .involved_object
                .kind
                .as_deref()
                .unwrap_or_default()
                .to_lowercase(),
            event.involved_object.name.as_deref().unwrap_or_default()
        );
        Some(RunEvent::Kube {
            object,
            warning,
            reason,
            message,
            count: u32::try_from(count).unwrap_or(1),
        })
    }

    /// The attempt's phase now.
    fn phase(&self) -> Phase {
        self.stopped()
            .map_or_else(|| self.live_phase(), Phase::Done)
    }

    /// The phase the observations reached, before asking whether following is over.
    fn live_phase(&self) -> Phase {
        match (self.settle_from, self.scheduled_at, self.started_at) {
            (Some(since), _, _) => Phase::Ended { since },
            (None, None, _) => Phase::Pending {
                since: self.created_at,
            },
            (None, Some(since), None) => Phase::Scheduled { since },
            (None, Some(_), Some(since)) => Phase::Running { since },
        }
    }

    /// Why following is over, if it is.
    fn stopped(&self) -> Option<Done> {
        if self.cancelled {
            return Some(Done::Cancelled);
        }
        if self.blocker.is_some() {
            return Some(Done::Blocked);
        }
        if self.hung_resume {
            return Some(Done::HungResume);
        }
        // The output cannot be read: nothing later can make the run a success.
        if self.output_error.is_some() {
            return Some(Done::OutputLost);
        }
        let pod_over = *self.state_tx.borrow() == ContainerState::Gone || self.exit.is_some();
        if self.vanished && (self.logs_complete() || !pod_over) {
            return Some(if self.exit.is_some() {
                Done::Finished
            } else {
                Done::Vanished
            });
        }
        match self.live_phase() {
            Phase::Ended { .. } if self.ended_settled(pod_over) => Some(Done::Finished),
            _ => None,
        }
    }

    /// Whether an ended Job or container has nothing more to wait for.
    fn ended_settled(&self, pod_over: bool) -> bool {
        let settled = self.waited(self.bounds.settle);
        match (&self.job_end, &self.exit) {
            // The container's terminated state decides, as soon as its output is read: v1.36
            // writes `Complete`/`Failed` only after the pod's finalizer is gone, seconds later.
            (job_end, Some(exit)) if self.logs_complete() => {
                exit.code == 0 || job_end.is_some() || self.exited(JOB_TARGET_GRACE) || settled
            }
            // A Job that ended without its container ever running (deadline while pending).
            (Some(_), None) if self.started_at.is_none() => {
                pod_over || settled || self.pod_name.is_none() && self.waited(POD_GRACE)
            }
            _ => settled,
        }
    }

    /// Everything the container wrote was delivered, or no follower was ever needed.
    fn logs_complete(&self) -> bool {
        self.log_task.is_none() && self.log_rx.is_none() || self.logs_done
    }

    /// Whether `grace` has passed since the container exited.
    fn exited(&self, grace: Duration) -> bool {
        self.exited_at.is_some_and(|at| at.elapsed() >= grace)
    }

    /// Whether `grace` has passed since the Job or the container ended.
    fn waited(&self, grace: Duration) -> bool {
        self.settle_from.is_some_and(|from| from.elapsed() >= grace)
    }

    /// A blocker that lasted its grace ends the run.
    fn promote_pending(&mut self) {
        if self.blocker.is_none()
            && self.job_end.is_none()
            && self.exit.is_none()
            && self
                .pending
                .as_ref()
                .is_some_and(|(_, at)| Instant::now() >= *at)
        {
            self.blocker = self.pending.take().map(|(blocker, _)| blocker);
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut deadlines = vec![far];
        if let Some((_, at)) = &self.pending {
            deadlines.push(*at);
        }
        if let Some(at) = self.exited_at
            && self.job_end.is_none()
        {
            deadlines.push(at + JOB_TARGET_GRACE);
        }
        if let Some(from) = self.settle_from {
            deadlines.push(from + self.bounds.settle);
            if self.pod_name.is_none() {
                deadlines.push(from + POD_GRACE);
            }
        }
        match self.live_phase() {
            Phase::Pending { since } => deadlines.push(since + self.bounds.schedule),
            Phase::Scheduled { since } => deadlines.push(since + self.bounds.start),
            Phase::Running { since } if self.resumed && !self.parser.saw_event() => {
                deadlines.push(since + self.bounds.resume_first_event);
            }
            _ => {}
        }
        deadlines.into_iter().min().unwrap_or(far)
    }

    /// The bound of the current phase passed: a pod not scheduled or a container not started
    /// in time blocks the run, a resume that prints nothing hangs.
    fn deadline_passed(&mut self) {
        let warning = self
            .last_warning
            .as_deref()
            .map(|w| format!("; last warning: {w}"))
            .unwrap_or_default();
        match self.live_phase() {
            Phase::Pending { since } if since.elapsed() >= self.bounds.schedule => {
                self.blocker = Some(Blocker {
                    code: ErrorCode::K8sPodUnschedulable,
                    message: format!(
                        "the pod was not scheduled within {} s{warning}",
                        self.bounds.schedule.as_secs()
                    ),
                });
            }
            Phase::Scheduled { since } if since.elapsed() >= self.bounds.start => {
                self.blocker = Some(Blocker {
                    code: ErrorCode::K8sPodStartTimeout,
                    message: format!(
                        "the container did not start within {} s of scheduling{warning}",
                        self.bounds.start.as_secs()
                    ),
                });
            }
            Phase::Running { since }
                if self.resumed
                    && !self.parser.saw_event()
                    && since.elapsed() >= self.bounds.resume_first_event =>
            {
                self.hung_resume = true;
            }
            _ => {}
        }
    }

    fn harvest(mut self, done: Done) -> Harvest {
        if done == Done::Finished
            && self.exit.is_some()
            && !self.logs_complete()
            && self.output_error.is_none()
        {
            self.output_error = Some(Blocker {
                code: ErrorCode::K8sApiUnreachable,
                message: format!(
                    "the output of pod {} could not be read completely within {} s of the container's end; check the cluster API and the kubelet",
                    self.pod_name.as_deref().unwrap_or_default(),
                    self.bounds.settle.as_secs()
                ),
            });
        }
        self.log_cancel.cancel();
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        let output: RunOutput = self.parser.finish(self.exit.as_ref().map(|e| e.code));
        Harvest {
            output,
            exit: self.exit,
            job_end: self.job_end,
            blocker: self.blocker,
            output_error: self.output_error,
            cancelled: done == Done::Cancelled,
            vanished: done == Done::Vanished,
            hung_resume: done == Done::HungResume,
            attempts: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{first_pod, fixture};

    /// The pod updates a real watch delivered, from scheduled to succeeded (exit 0).
    fn lifecycle_pods() -> Vec<Pod> {
        let path = format!(
            "{}/../../fixtures/kube/40-watch-pod-lifecycle.jsonl",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                serde_json::from_value(event["object"].clone()).unwrap()
            })
            .collect()
    }

    fn follow() -> Follow {
        Follow::new(super::super::Bounds::default(), false, LogCursor::default())
    }

    /// A follower that is still delivering output.
    fn reading(follow: &mut Follow) -> mpsc::Sender<Chunk> {
        let (tx, rx) = mpsc::channel(1);
        follow.log_rx = Some(rx);
        tx
    }

    /// The phase without its times.
    fn name(phase: Phase) -> &'static str {
        match phase {
            Phase::Pending { .. } => "Pending",
            Phase::Scheduled { .. } => "Scheduled",
            Phase::Running { .. } => "Running",
            Phase::Ended { .. } => "Ended",
            Phase::Done(_) => "Done",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_passes_pending_scheduled_running_ended_done() {
        let mut follow = follow();
        let _follower = reading(&mut follow);
        let mut seen = vec![name(follow.phase())];
        for pod in lifecycle_pods() {
            follow.observe_pod(&pod);
            let phase = name(follow.phase());
            if seen.last() != Some(&phase) {
                seen.push(phase);
            }
        }
        assert_eq!(seen, ["Pending", "Scheduled", "Running", "Ended"]);
        assert_eq!(follow.logs_ended().await, None);
        assert_eq!(
            follow.phase(),
            Phase::Done(Done::Finished),
            "exit 0 and all output read: over at once, without waiting for the Job's condition"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_exit_waits_briefly_for_the_jobs_reason() {
        let pod = first_pod("35-pods-exit3.json");
        let mut follow = follow();
        follow.observe_pod(&pod);
        assert!(matches!(follow.phase(), Phase::Ended { .. }));
        tokio::time::advance(JOB_TARGET_GRACE).await;
        assert_eq!(follow.phase(), Phase::Done(Done::Finished));

        let mut follow = self::follow();
        follow.observe_pod(&pod);
        let job: Job = fixture("34-job-exit3.json");
        follow.job_end = status::job_outcome(&job);
        assert_eq!(
            follow.phase(),
            Phase::Done(Done::Finished),
            "the Job's failure came with it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ended_waits_for_the_output_until_settle() {
        let mut follow = follow();
        let _follower = reading(&mut follow);
        for pod in lifecycle_pods() {
            follow.observe_pod(&pod);
        }
        let almost = follow.bounds.settle - Duration::from_millis(1);
        tokio::time::advance(almost).await;
        assert!(matches!(follow.phase(), Phase::Ended { .. }));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(follow.phase(), Phase::Done(Done::Finished));
        let harvest = follow.harvest(Done::Finished);
        assert_eq!(
            harvest.output_error.map(|b| b.code),
            Some(ErrorCode::K8sApiUnreachable),
            "output not read completely is never a success"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_ends_before_its_pod_waits_for_the_pod_briefly() {
        let mut follow = follow();
        let job: Job = fixture("24-get-job-deadline-exceeded.json");
        follow.job_end = status::job_outcome(&job);
        follow.settle_from = Some(Instant::now());
        assert!(matches!(follow.phase(), Phase::Ended { .. }));
        tokio::time::advance(POD_GRACE).await;
        assert_eq!(follow.phase(), Phase::Done(Done::Finished));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_not_scheduled_in_time_blocks_the_run() {
        let mut follow = follow();
        let Phase::Pending { since } = follow.phase() else {
            panic!("{:?}", follow.phase());
        };
        assert_eq!(follow.next_deadline(), since + follow.bounds.schedule);
        tokio::time::advance(follow.bounds.schedule).await;
        follow.deadline_passed();
        assert_eq!(follow.phase(), Phase::Done(Done::Blocked));
        assert_eq!(
            follow.blocker.map(|b| b.code),
            Some(ErrorCode::K8sPodUnschedulable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_resume_hangs_but_a_fresh_run_does_not() {
        let pods = lifecycle_pods();
        for resumed in [true, false] {
            let mut follow = Follow::new(
                super::super::Bounds::default(),
                resumed,
                LogCursor::default(),
            );
            follow.observe_pod(&pods[2]);
            assert!(matches!(follow.phase(), Phase::Running { .. }));
            tokio::time::advance(follow.bounds.resume_first_event).await;
            follow.deadline_passed();
            let expected = if resumed {
                Phase::Done(Done::HungResume)
            } else {
                follow.live_phase()
            };
            assert_eq!(follow.phase(), expected, "resumed: {resumed}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_and_a_vanished_job_end_any_phase() {
        let pods = lifecycle_pods();
        let mut follow = follow();
        follow.observe_pod(&pods[2]);
        follow.cancelled = true;
        assert_eq!(follow.phase(), Phase::Done(Done::Cancelled));

        let mut follow = self::follow();
        follow.observe_pod(&pods[0]);
        follow.vanished = true;
        assert_eq!(follow.phase(), Phase::Done(Done::Vanished));
    }
}
