//! One run, phase by phase: prepare, hold the agent's Lease, guard and create (or harvest an
//! orphan first, or follow its own Job), follow, harvest, clean up, release the Lease.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::RunError;
use super::follow::{Follow, Phase};
use super::guard::GuardError;
use super::informer::{NamespaceWatch, Subscription, Update};
use super::introspect::{self, Found};
use super::lease::{self, Acquired, AgentLease};
use super::logs::{Chunk, ContainerState, LogCursor};
use super::result::{Harvest, RunResult};
use super::status::{self};
use super::{ClusterSource, Engine, guard, lock, objects};
use crate::config::AgentConfig;
use crate::event::{RunEvent, RunSink};
use crate::manifest::{
    self, CONTAINER_NAME, InheritedPod, Rendered, ResumeDecision, RunRequest, SessionResume,
    TASK_KEY_KEY,
};

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
