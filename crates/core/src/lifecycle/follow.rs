//! Following one attempt: the phases it passes through as pure transitions over what the Job and
//! pod watches, the log follower and the clock report, and what it harvested when it is done.
//! [`super::run`] drives it with the watches' updates; the one I/O it starts is the log
//! follower's task ([`super::logs::follow`]), whose chunks come back through a channel.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::OutputError;
use super::logs::{self, Chunk, ContainerState, FollowStats, LogCursor, LogError};
use super::result::Harvest;
use super::status::{self, Blocker, Exit, JobEnd};
use crate::error_code::ErrorCode;
use crate::event::RunEvent;
use crate::manifest::CONTAINER_NAME;
use crate::parse::{OutputParser, RunOutput};

/// A Job that ended before its pod was seen: the pod watch is a separate stream and may lag the
/// Job's; wait this long for the pod before concluding there was none.
const POD_GRACE: Duration = Duration::from_secs(3);

/// A container that exited non-zero before the Job's `FailureTarget` was seen: wait this long
/// for it (a deadline writes it before killing the pod, but the Job watch is a separate stream),
/// so a timeout is not reported as a plain failure. An exit 0 needs no Job condition.
const JOB_TARGET_GRACE: Duration = Duration::from_millis(500);

/// Where one attempt is, from its Job's creation to the end of following it: every attempt
/// moves forward through these, skipping some (a Job can end before its pod is scheduled) and
/// possibly jumping to `Done` from any of them (a cancel, a blocker, a vanished Job).
/// [`Follow::phase`] derives it from what was observed; each observation (`observe_pod`, a Job
/// update in `apply`, `logs_ended`, `deadline_passed`, a cancel) is a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
pub(super) enum Done {
    Finished,
    Cancelled,
    Blocked,
    HungResume,
    OutputLost,
    Vanished,
}

/// The state of following one attempt.
pub(super) struct Follow {
    bounds: super::Bounds,
    resumed: bool,
    created_at: Instant,
    scheduled_at: Option<Instant>,
    started_at: Option<Instant>,
    pub(super) settle_from: Option<Instant>,
    pub(super) pod_name: Option<String>,
    pub(super) state_tx: watch::Sender<ContainerState>,
    pub(super) log_task: Option<JoinHandle<Result<FollowStats, LogError>>>,
    log_rx: Option<mpsc::Receiver<Chunk>>,
    /// Where output delivery starts (a reattach after a restart), else from the beginning.
    cursor: LogCursor,
    log_cancel: CancellationToken,
    pub(super) logs_done: bool,
    pub(super) parser: OutputParser,
    exit: Option<Exit>,
    exited_at: Option<Instant>,
    pub(super) job_end: Option<JobEnd>,
    /// The output could not be read completely: the run cannot succeed.
    output_error: Option<Blocker>,
    blocker: Option<Blocker>,
    /// A blocker seen in the pod's status, and when it becomes fatal if it lasts.
    pending: Option<(Blocker, Instant)>,
    scale_up: bool,
    last_warning: Option<String>,
    seen_events: HashSet<(String, i32)>,
    pub(super) cancelled: bool,
    pub(super) vanished: bool,
    hung_resume: bool,
}

impl Follow {
    pub(super) fn new(bounds: super::Bounds, resumed: bool, cursor: LogCursor) -> Self {
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
    pub(super) async fn next_chunk(&mut self) -> Option<Chunk> {
        match &mut self.log_rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The follower finished; returns the run-log notice when it failed.
    pub(super) async fn logs_ended(&mut self) -> Option<String> {
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

    pub(super) fn start_logs(&mut self, pods: Api<Pod>, pod: String) {
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
    pub(super) fn observe_pod(&mut self, pod: &Pod) {
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
    pub(super) fn observe_event(&mut self, event: &Event) -> Option<RunEvent> {
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
    pub(super) fn phase(&self) -> Phase {
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
    pub(super) fn promote_pending(&mut self) {
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

    pub(super) fn next_deadline(&self) -> Instant {
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
    pub(super) fn deadline_passed(&mut self) {
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

    pub(super) fn harvest(mut self, done: Done) -> Harvest {
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
    use k8s_openapi::api::batch::v1::Job;

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
