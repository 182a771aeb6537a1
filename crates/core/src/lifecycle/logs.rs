//! Exactly-once delivery of a container's output across follow-stream reconnects.
//!
//! The kubelet closes follow streams on its own (timeouts, log rotation) and connections drop.
//! Every connection asks for `timestamps=true`. containerd stamps stdout and stderr each on its
//! own, so the merged log is in the file's order, not in timestamp order (measured on v1.36:
//! an entry may carry an earlier timestamp than the one before it). Delivery therefore goes by
//! position: [`LogCursor`] reconnects with a `sinceTime` a little before the newest delivered
//! timestamp, floored to whole seconds (the server truncates it and filters each entry on its
//! own; kube-rs would *round* it), and skips exactly the delivered entries that answer starts
//! with. Never `sinceSeconds` plus content heuristics.
//!
//! With `timestamps=true` every line the container wrote carries a prefix (the kubelet rejoins
//! containerd's partial lines, a 40 kB line comes back as one stamped entry). An entry without
//! one is the kubelet or the API server talking (`unable to retrieve container logs for
//! containerd://...`): it is never delivered as output, and the connection counts as failed.
//!
//! A connection that ends inside a line while the container still runs holds that fragment back:
//! the same entry arrives whole on the next connection. Only once the container has terminated is
//! a last line without a newline delivered, without one, as the process wrote it.
//!
//! The API refusing a read (401/403 while its authorizer warms up after a restart, 429, 5xx,
//! connections refused) is retried with backoff; only a refusal lasting the run's bound fails
//! the follow, and the run with it: output that could not be read completely is never a success.

use std::pin::Pin;
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{OutputError, RunError};
use super::retry::Reconnects;
use super::status::container_state;
use crate::event::{RunEvent, RunSink};
use crate::manifest::CONTAINER_NAME;

mod cursor;
mod stamped;

pub(crate) use self::cursor::LogCursor;
use self::stamped::StampedLines;

/// What the engine knows about the container whose log it follows, fed by the pod watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContainerState {
    /// Not started yet: the log endpoint answers 204 with no body.
    Waiting,
    /// Running: a stream that ends now was cut and must be reopened.
    Running,
    /// Exited: one last read collects anything a cut stream missed, then the log is complete.
    Terminated,
    /// The pod is gone: nothing more can be read.
    Gone,
}

/// How long the API may refuse every log read before a follow fails (an API server's
/// authorizer answers 403 for a few seconds after a restart).
pub(crate) const REFUSED: Duration = Duration::from_secs(60);

/// Failed to read a container's log; maps to `k8s_forbidden` or `k8s_api_unreachable`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// The API refused every log read for the whole bound.
    #[error("failed to read the log of pod {pod}: refused for {secs} s: {source}")]
    Refused {
        pod: String,
        secs: u64,
        #[source]
        source: kube::Error,
    },
}

impl LogError {
    /// The run's error for it, with the last refusal as its source: `k8s_forbidden` for a
    /// 401/403, else `k8s_api_unreachable`.
    pub(crate) fn into_output_error(self) -> OutputError {
        let Self::Refused { pod, secs, source } = self;
        OutputError::Refused { pod, secs, source }
    }
}

/// Output newly delivered, and the cursor after it.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) bytes: Vec<u8>,
    pub(crate) checkpoint: Option<String>,
}

/// How a finished follow went, for the run's statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FollowStats {
    /// Log connections opened, the first included.
    pub(crate) connections: u32,
    /// Bytes delivered to the sink.
    pub(crate) bytes: u64,
}

/// Follow `container` of `pod` until it has terminated and everything it wrote was delivered to
/// `out` exactly once, in order (the bounded channel carries backpressure from the sink back to
/// the reads). `state` comes from the pod watch. The API refusing every read for `refused`
/// fails the follow.
#[expect(
    clippy::too_many_arguments,
    reason = "the follower's inputs are independent"
)]
pub(crate) async fn follow(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    cursor: &mut LogCursor,
    state: watch::Receiver<ContainerState>,
    refused: Duration,
    cancel: &CancellationToken,
    out: &mpsc::Sender<Chunk>,
) -> Result<FollowStats, LogError> {
    let mut follower = Follower {
        pods,
        pod,
        container,
        cursor,
        state,
        cancel,
        out,
        stats: FollowStats::default(),
        pauses: Reconnects::default(),
        refusal: Refusal::new(refused),
    };
    loop {
        let Some(last_read) = follower.until_readable().await else {
            return Ok(follower.stats);
        };
        let failed = match follower.connection(last_read).await {
            Ok(()) if last_read => return Ok(follower.stats),
            Ok(()) => false,
            Err(ReadFailure::Refused(source)) => {
                follower.refused(source)?;
                true
            }
            Err(ReadFailure::Transient(reason)) => {
                tracing::warn!(pod, %reason, "log stream failed, reconnecting");
                // A kubelet the API server cannot reach fails every time: back off further.
                true
            }
            Err(ReadFailure::Cancelled | ReadFailure::Gone) => return Ok(follower.stats),
        };
        if !follower.pause(last_read, failed).await {
            return Ok(follower.stats);
        }
    }
}

/// One follow, across its connections.
struct Follower<'a> {
    pods: &'a Api<Pod>,
    pod: &'a str,
    container: &'a str,
    cursor: &'a mut LogCursor,
    state: watch::Receiver<ContainerState>,
    cancel: &'a CancellationToken,
    out: &'a mpsc::Sender<Chunk>,
    stats: FollowStats,
    pauses: Reconnects,
    refusal: Refusal,
}

impl Follower<'_> {
    /// Wait until the container has output to read: `Some(true)` when it has terminated (the
    /// last read), `None` when there is nothing (more) to read or the follow was cancelled.
    async fn until_readable(&mut self) -> Option<bool> {
        loop {
            let current = *self.state.borrow_and_update();
            match current {
                ContainerState::Gone => return None,
                ContainerState::Running => return Some(false),
                ContainerState::Terminated => return Some(true),
                ContainerState::Waiting => {}
            }
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                changed = self.state.changed() => changed.ok()?,
            }
        }
    }

    /// Open the log from where the cursor stands and deliver what the connection brings.
    async fn connection(&mut self, last_read: bool) -> Result<(), ReadFailure> {
        let params = LogParams {
            container: Some(self.container.to_owned()),
            follow: !last_read,
            timestamps: true,
            since_time: self.cursor.reconnect(),
            ..LogParams::default()
        };
        self.stats.connections += 1;
        let opened = tokio::select! {
            () = self.cancel.cancelled() => return Err(ReadFailure::Cancelled),
            opened = self.pods.log_stream(self.pod, &params) => opened,
        };
        let reader = opened.map_err(classify)?;
        self.refusal.clear();
        // A follow stream the kubelet keeps open up to a second past the container's end is cut
        // as soon as the pod watch reports the end: the last read follows at once, and the
        // result does not wait for the kubelet's next check.
        let ended = std::pin::pin!(terminated(&mut self.state));
        let ended = (!last_read).then_some(ended);
        let before = self.stats.bytes;
        let read = read_connection(
            reader,
            last_read,
            ended,
            self.cursor,
            self.cancel,
            self.out,
            &mut self.stats.bytes,
        )
        .await;
        if self.stats.bytes > before {
            self.pauses.progressed();
        }
        read
    }

    /// A read was refused: the follow goes on until refusals have lasted the bound.
    fn refused(&mut self, source: kube::Error) -> Result<(), LogError> {
        if self.refusal.over(Instant::now()) {
            return Err(LogError::Refused {
                pod: self.pod.to_owned(),
                secs: self.refusal.bound.as_secs(),
                source,
            });
        }
        tracing::warn!(pod = self.pod, error = %source, "log read refused, retrying");
        Ok(())
    }

    /// Wait before the next connection, after one that `failed` or ended; false when cancelled.
    async fn pause(&mut self, last_read: bool, failed: bool) -> bool {
        // The container ended (the pod watch said so, maybe while this stream was open): the
        // last read, at once.
        if !last_read && *self.state.borrow() == ContainerState::Terminated {
            return true;
        }
        // A stream that ended (cut, or the container just exited): wait briefly — or until the
        // pod watch reports a change — before the next connection, growing the pause while
        // connections deliver nothing so a misbehaving kubelet is not hammered. A refused read
        // is retried on its own schedule: a pod update does not make the API answer sooner.
        let pause = self.refusal.clamp(self.pauses.next(failed), Instant::now());
        let refusing = self.refusal.is_active();
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
            _ = self.state.changed(), if !refusing => true,
        }
    }
}

/// Resolves once the pod watch reports the container terminated; never if the watch ends first.
async fn terminated(state: &mut watch::Receiver<ContainerState>) {
    while state.changed().await.is_ok() {
        if *state.borrow() == ContainerState::Terminated {
            return;
        }
    }
    std::future::pending().await
}

/// Since when every log read was refused (none got through), against how long that may last.
#[derive(Debug)]
struct Refusal {
    bound: Duration,
    since: Option<Instant>,
}

impl Refusal {
    fn new(bound: Duration) -> Self {
        Self { bound, since: None }
    }

    /// A read got through.
    fn clear(&mut self) {
        self.since = None;
    }

    fn is_active(&self) -> bool {
        self.since.is_some()
    }

    /// A read was refused at `now`: whether the refusals have lasted the bound.
    fn over(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        now.duration_since(since) >= self.bound
    }

    /// `pause`, cut short to end with the bound: a refusal that lasts the bound fails the follow
    /// then, not up to a whole pause later.
    fn clamp(&self, pause: Duration, now: Instant) -> Duration {
        match self.since {
            Some(since) => pause.min((since + self.bound).saturating_duration_since(now)),
            None => pause,
        }
    }
}

/// Tell the follower what the pod watch saw; once the pod is gone it stays gone.
pub(crate) fn set_state(tx: &watch::Sender<ContainerState>, state: ContainerState) {
    tx.send_if_modified(|current| {
        let changed = *current != state && *current != ContainerState::Gone;
        if changed {
            *current = state;
        }
        changed
    });
}

/// Deliver the output of one agent pod to `sink` exactly once, following it until its container
/// has ended (or the pod is gone): the engine's own follower, for tools outside a run such as
/// `opencode-k8s logs --follow`. The pod's state comes from a watch of that one pod.
pub async fn follow_pod_output(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    sink: &dyn RunSink,
    cancel: &CancellationToken,
) -> Result<(), RunError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (state_tx, state_rx) = watch::channel(ContainerState::Waiting);
    let config = watcher::Config::default().fields(&format!("metadata.name={pod}"));
    let mut events = watcher(pods.clone(), config).default_backoff().boxed();
    let mut watched = PodWatch::default();
    let (tx, mut rx) = mpsc::channel::<Chunk>(1);
    let mut cursor = LogCursor::default();
    // The follower borrows `tx`: it is gone at the end of this block, so the drain below ends.
    let finished = {
        let mut follower = std::pin::pin!(follow(
            &pods,
            pod,
            CONTAINER_NAME,
            &mut cursor,
            state_rx,
            REFUSED,
            cancel,
            &tx,
        ));
        loop {
            tokio::select! {
                finished = &mut follower => break finished,
                Some(chunk) = rx.recv() => emit(sink, chunk).await,
                Some(event) = events.next() => {
                    if let Some(state) = watched.state(&event) {
                        set_state(&state_tx, state);
                    }
                }
            }
        }
    };
    drop(tx);
    while let Some(chunk) = rx.recv().await {
        emit(sink, chunk).await;
    }
    finished
        .map(drop)
        .map_err(|err| err.into_output_error().into())
}

/// Output of the follower as the sink's event.
async fn emit(sink: &dyn RunSink, chunk: Chunk) {
    let text = String::from_utf8_lossy(&chunk.bytes).into_owned();
    sink.emit(RunEvent::Output {
        text,
        checkpoint: chunk.checkpoint,
    })
    .await;
}

/// The container's state as the watch of its one pod reports it.
#[derive(Debug, Default)]
struct PodWatch {
    /// The pod showed up in the watch.
    seen: bool,
}

impl PodWatch {
    /// The state `event` reports, if any: a pod not seen by the end of the initial list is gone.
    fn state(&mut self, event: &watcher::Result<watcher::Event<Pod>>) -> Option<ContainerState> {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                self.seen = true;
                Some(container_state(pod, CONTAINER_NAME))
            }
            Ok(watcher::Event::Delete(_)) => Some(ContainerState::Gone),
            Ok(watcher::Event::InitDone) if !self.seen => Some(ContainerState::Gone),
            _ => None,
        }
    }
}

/// Why a log connection ended early.
enum ReadFailure {
    /// The API refused the request (401/403, 429, 5xx) or could not be reached: retried for a
    /// bounded time, an API server restarting answers 403 for a few seconds.
    Refused(kube::Error),
    /// The connection broke or the log endpoint answered with text not the container's own.
    Transient(String),
    /// The pod is gone (deleted with its Job): there is nothing more to read.
    Gone,
    /// The follow was cancelled, or nobody takes its output any more.
    Cancelled,
}

/// Why a log read could not be opened.
fn classify(err: kube::Error) -> ReadFailure {
    match &err {
        kube::Error::Api(status) if status.code == 404 => ReadFailure::Gone,
        kube::Error::Api(status)
            if matches!(status.code, 401 | 403 | 429) || status.code >= 500 =>
        {
            ReadFailure::Refused(err)
        }
        kube::Error::Api(_) => ReadFailure::Transient(err.to_string()),
        _ => ReadFailure::Refused(err),
    }
}

/// What one read of a log connection brought.
enum Read {
    /// This many bytes, fed to the lines already.
    Bytes(usize),
    /// The stream ended.
    Eof,
    /// The engine ended it: the container terminated while it was open.
    Ended,
    /// The connection broke.
    Failed(std::io::Error),
}

/// Deliver one connection's output to `out` until the stream ends, fails, or `ended` fires (the
/// container terminated: the follower stops following, and a fragment held back arrives whole
/// with the last read).
async fn read_connection(
    reader: impl futures::AsyncBufRead,
    last_read: bool,
    mut ended: Option<Pin<&mut impl Future<Output = ()>>>,
    cursor: &mut LogCursor,
    cancel: &CancellationToken,
    out: &mpsc::Sender<Chunk>,
    delivered: &mut u64,
) -> Result<(), ReadFailure> {
    let mut reader = std::pin::pin!(reader);
    let mut lines = StampedLines::default();
    loop {
        let mut chunk = Vec::new();
        let read = tokio::select! {
            () = cancel.cancelled() => return Err(ReadFailure::Cancelled),
            () = async { ended.as_mut().expect("guarded").await }, if ended.is_some() => Read::Ended,
            read = reader.fill_buf() => match read {
                Ok([]) => Read::Eof,
                Ok(buf) => {
                    let take = buf.len().min(MAX_CHUNK);
                    chunk.reserve(take);
                    lines.feed(&buf[..take], cursor, &mut chunk);
                    Read::Bytes(take)
                }
                Err(err) => Read::Failed(err),
            },
        };
        if let Read::Bytes(n) = read {
            reader.consume_unpin(n);
        }
        let outcome = after_read(read, last_read, &mut lines, cursor, &mut chunk);
        deliver(chunk, cursor, out, delivered).await?;
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
}

/// How the connection stands after `read`: `None` while it goes on. An ended connection settles
/// its unfinished entry, delivered only on the `last_read` of a stream that ended by itself.
fn after_read(
    read: Read,
    last_read: bool,
    lines: &mut StampedLines,
    cursor: &mut LogCursor,
    chunk: &mut Vec<u8>,
) -> Option<Result<(), ReadFailure>> {
    let outcome = match read {
        Read::Bytes(_) => None,
        Read::Eof => {
            lines.end(last_read, cursor, chunk);
            Some(Ok(()))
        }
        Read::Ended => {
            lines.end(false, cursor, chunk);
            Some(Ok(()))
        }
        Read::Failed(err) => {
            lines.end(false, cursor, chunk);
            Some(Err(ReadFailure::Transient(err.to_string())))
        }
    };
    // The kubelet's own words (the stream is over): what came before is delivered, the
    // connection counts as failed.
    let Some(text) = lines.take_foreign() else {
        return outcome;
    };
    lines.end(false, cursor, chunk);
    Some(Err(ReadFailure::Transient(format!(
        "the log endpoint answered with text that is not the container's output: {text}"
    ))))
}

/// Hand `chunk`, if any, with the cursor after it to the sink's channel.
async fn deliver(
    chunk: Vec<u8>,
    cursor: &LogCursor,
    out: &mpsc::Sender<Chunk>,
    delivered: &mut u64,
) -> Result<(), ReadFailure> {
    if chunk.is_empty() {
        return Ok(());
    }
    *delivered += chunk.len() as u64;
    let chunk = Chunk {
        bytes: chunk,
        checkpoint: cursor.checkpoint(),
    };
    // A closed channel: nobody follows this run any more.
    out.send(chunk).await.map_err(|_| ReadFailure::Cancelled)
}

/// Most bytes taken from the stream per chunk: bounds the memory a run holds in flight
/// (chunks queued for the sink) whatever the size of the frames the server sends.
const MAX_CHUNK: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_fails_the_follow_once_it_lasted_the_bound() {
        let start = Instant::now();
        let mut refusal = Refusal::new(Duration::from_secs(60));
        assert!(!refusal.over(start));
        assert!(!refusal.over(start + Duration::from_secs(59)));
        assert!(refusal.over(start + Duration::from_secs(60)));
        refusal.clear();
        assert!(
            !refusal.over(start + Duration::from_secs(61)),
            "a read that got through starts the clock over"
        );
    }

    #[test]
    fn the_pause_of_a_refused_follow_ends_with_the_bound() {
        let start = Instant::now();
        let mut refusal = Refusal::new(Duration::from_secs(60));
        let long = Duration::from_secs(30);
        assert_eq!(refusal.clamp(long, start), long, "nothing refused yet");
        refusal.over(start);
        assert_eq!(
            refusal.clamp(long, start + Duration::from_secs(50)),
            Duration::from_secs(10)
        );
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn a_pod_the_watch_never_lists_is_gone() {
        let mut watched = PodWatch::default();
        assert_eq!(watched.state(&Ok(watcher::Event::Init)), None);
        assert_eq!(
            watched.state(&Ok(watcher::Event::InitDone)),
            Some(ContainerState::Gone)
        );
    }

    #[test]
    fn the_watched_pod_reports_its_container_until_deleted() {
        let mut watched = PodWatch::default();
        let running = pod(serde_json::json!({"containerStatuses": [{
            "name": CONTAINER_NAME, "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}},
        }]}));
        assert_eq!(
            watched.state(&Ok(watcher::Event::InitApply(running.clone()))),
            Some(ContainerState::Running)
        );
        assert_eq!(watched.state(&Ok(watcher::Event::InitDone)), None);
        assert_eq!(
            watched.state(&Ok(watcher::Event::Delete(running))),
            Some(ContainerState::Gone)
        );
    }

    #[test]
    fn text_without_a_stamp_ends_the_connection_as_failed_after_what_came_before() {
        let mut lines = StampedLines::default();
        let mut cursor = LogCursor::default();
        let mut chunk = Vec::new();
        lines.feed(
            b"2026-11-27T14:37:43.1Z real\nunable to retrieve container logs\n",
            &mut cursor,
            &mut chunk,
        );
        let outcome = after_read(Read::Bytes(1), false, &mut lines, &mut cursor, &mut chunk);
        assert!(
            matches!(outcome, Some(Err(ReadFailure::Transient(ref reason))) if reason.contains("unable to retrieve")),
            "{:?}",
            outcome.map(|o| o.is_ok())
        );
        assert_eq!(chunk, b"real\n");
    }
}
