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

use std::collections::BTreeMap;
use std::time::Duration;

use futures::AsyncBufReadExt;
use jiff::{SignedDuration, Timestamp, ToSpan};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use tokio::sync::{mpsc, watch};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

use super::error::{OutputError, RunError};
use crate::event::{RunEvent, RunSink};
use crate::manifest::CONTAINER_NAME;
use tokio_util::sync::CancellationToken;

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

/// How far before the newest delivered timestamp a reconnect asks to start. containerd stamps
/// stdout and stderr on their own, so the merged log is in file order, not timestamp order: an
/// entry may follow a later-stamped one by a few milliseconds (measured on v1.36). Entries of
/// the file after the delivered ones but stamped more than this before the newest delivered
/// entry would be lost on a reconnect.
const SKEW_MARGIN: SignedDuration = SignedDuration::from_secs(2);

/// Which entries of a timestamped log were already delivered.
///
/// Within a connection entries are delivered by position, whatever their timestamps. Everything
/// delivered is a prefix of the log file, so the answer to `sinceTime=S` (the file filtered by
/// `ts >= S`, in file order) starts with exactly the delivered entries stamped `>= S`: a
/// reconnect skips that many. `S` is the newest delivered timestamp floored to the second less
/// [`SKEW_MARGIN`], so only a bounded window of delivered timestamps has to be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogCursor {
    /// The `sinceTime` of the current connection (`None`: from the beginning).
    since: Option<Timestamp>,
    /// How many delivered entries are stamped at or after `since`.
    prefix: u64,
    /// Delivered timestamps (with their counts) no older than the newest less the margin and a
    /// second: enough to count the prefix of any later `sinceTime`.
    window: BTreeMap<Timestamp, u64>,
    /// `window` holds every delivered entry stamped at or after `since` (false after a restore
    /// from a checkpoint, until the skipped entries were seen again).
    window_complete: bool,
    /// On the current connection: how many entries are still to be skipped.
    skip: u64,
    /// The last delivered entry is a line still being written, of which this many bytes were
    /// delivered (a line longer than [`MAX_PENDING`] is streamed rather than held whole).
    partial: Option<u64>,
}

impl Default for LogCursor {
    /// A cursor that has delivered nothing yet.
    fn default() -> Self {
        Self {
            since: None,
            prefix: 0,
            window: BTreeMap::new(),
            window_complete: true,
            skip: 0,
            partial: None,
        }
    }
}

/// What to do with an entry, by its position on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// New: deliver it.
    Deliver,
    /// Delivered before: drop it.
    Drop,
    /// Partly delivered before: deliver what follows its first `n` bytes.
    ResumeAfter(u64),
}

impl LogCursor {
    /// The cursor as an opaque string (`<sinceTime>/<count>[+<bytes>]`: reconnect from that whole
    /// second, skip `count` entries, then skip `bytes` of the next), `None` before any output.
    pub(crate) fn checkpoint(&self) -> Option<String> {
        let (since, count) = if self.window_complete {
            let since = self.next_since()?;
            (since, self.delivered_since(since))
        } else {
            (self.since?, self.prefix)
        };
        Some(match self.partial {
            Some(bytes) => format!("{since}/{count}+{bytes}"),
            None => format!("{since}/{count}"),
        })
    }

    /// A cursor from [`Self::checkpoint`]'s string.
    pub(crate) fn from_checkpoint(text: &str) -> Option<Self> {
        let (since, rest) = text.rsplit_once('/')?;
        let (count, partial) = match rest.split_once('+') {
            Some((count, bytes)) => (count, Some(bytes.parse().ok()?)),
            None => (rest, None),
        };
        let prefix = count.parse().ok()?;
        Some(Self {
            since: Some(since.parse().ok()?),
            prefix,
            window: BTreeMap::new(),
            window_complete: prefix == 0,
            skip: 0,
            partial,
        })
    }

    /// The `sinceTime` a reconnect asks for now: whole seconds (the server truncates, and a
    /// client library may round), never earlier than the current one.
    fn next_since(&self) -> Option<Timestamp> {
        let newest = *self.window.last_key_value()?.0;
        let since = floor_to_second(newest)
            .checked_sub(SKEW_MARGIN)
            .unwrap_or(newest);
        Some(self.since.map_or(since, |current| current.max(since)))
    }

    /// Delivered entries stamped at or after `since` (the window must be complete).
    fn delivered_since(&self, since: Timestamp) -> u64 {
        self.window.range(since..).map(|(_, n)| n).sum()
    }

    /// Start a new connection: the `sinceTime` to ask for.
    pub(crate) fn reconnect(&mut self) -> Option<Timestamp> {
        if self.window_complete {
            if let Some(since) = self.next_since() {
                self.prefix = self.delivered_since(since);
                self.since = Some(since);
                self.window = self.window.split_off(&since);
            }
        } else {
            // Restored, or cut while skipping: learn the delivered entries again as they are
            // skipped.
            self.window.clear();
        }
        self.skip = self.prefix;
        self.since
    }

    fn admit(&mut self, ts: Timestamp) -> Admit {
        if self.skip > 0 {
            self.skip -= 1;
            if !self.window_complete {
                *self.window.entry(ts).or_default() += 1;
                self.window_complete = self.skip == 0;
            }
            return match self.partial {
                // The last delivered entry is the one cut short.
                Some(bytes) if self.skip == 0 => Admit::ResumeAfter(bytes),
                _ => Admit::Drop,
            };
        }
        if self.since.is_none_or(|since| ts >= since) {
            self.prefix += 1;
        }
        *self.window.entry(ts).or_default() += 1;
        self.partial = None;
        self.prune();
        Admit::Deliver
    }

    /// Forget timestamps no later `sinceTime` can reach.
    fn prune(&mut self) {
        let Some((&newest, _)) = self.window.last_key_value() else {
            return;
        };
        let keep_from = newest
            .checked_sub(SKEW_MARGIN + SignedDuration::from_secs(1))
            .unwrap_or(newest);
        while self
            .window
            .first_key_value()
            .is_some_and(|(&oldest, _)| oldest < keep_from)
        {
            self.window.pop_first();
        }
    }
}

fn floor_to_second(ts: Timestamp) -> Timestamp {
    let nanos = ts.subsec_nanosecond();
    ts.checked_sub(i64::from(nanos).nanoseconds()).unwrap_or(ts)
}

/// How long the API may refuse every log read before a follow fails (an API server's
/// authorizer answers 403 for a few seconds after a restart).
pub(crate) const REFUSED: Duration = Duration::from_secs(60);

/// The most of one unfinished line held in memory; a longer line is streamed as it arrives.
const MAX_PENDING: usize = 1 << 20;

/// Splits the raw bytes of one `timestamps=true` connection into admitted output.
#[derive(Debug, Default)]
pub(crate) struct StampedLines {
    pending: Vec<u8>,
    /// The first entry without a timestamp on this connection: not the container's output.
    foreign: Option<String>,
    /// Inside a long entry whose start was already handled: its bytes up to the newline.
    streaming: Option<Streaming>,
    max_pending: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Streaming {
    /// Bytes of the entry's text seen so far on this connection.
    pos: u64,
    /// Deliver only from this position on (what an earlier connection delivered is skipped).
    from: u64,
    /// Whether the entry is being delivered at all (false: a repeat, dropped whole).
    deliver: bool,
}

impl StampedLines {
    #[cfg(test)]
    fn with_max_pending(max: usize) -> Self {
        Self {
            max_pending: Some(max),
            ..Self::default()
        }
    }

    /// Feed bytes; append the text of every newly admitted entry (prefix removed, newline kept)
    /// to `out`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], cursor: &mut LogCursor, out: &mut Vec<u8>) {
        if let Some(streaming) = self.streaming {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let end = newline.map_or(bytes.len(), |at| at + 1);
            self.stream(streaming, &bytes[..end], newline.is_some(), cursor, out);
            bytes = &bytes[end..];
        }
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            self.admit_entry(start..end, cursor, out);
            start = end;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.max_pending.unwrap_or(MAX_PENDING) {
            self.start_streaming(cursor, out);
        }
    }

    /// Deliver the whole entry `pending[range]` if the cursor admits it.
    fn admit_entry(
        &mut self,
        range: std::ops::Range<usize>,
        cursor: &mut LogCursor,
        out: &mut Vec<u8>,
    ) {
        let entry = &self.pending[range];
        match split_stamp(entry) {
            Some((ts, text)) => match cursor.admit(ts) {
                Admit::Deliver => out.extend_from_slice(text),
                Admit::ResumeAfter(from) => {
                    let skip = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
                    out.extend_from_slice(&text[skip..]);
                    cursor.partial = None;
                }
                Admit::Drop => {}
            },
            None => {
                let entry = entry.to_vec();
                self.note_foreign(&entry);
            }
        }
    }

    /// Remember (the start of) an entry that is not the container's output.
    fn note_foreign(&mut self, entry: &[u8]) {
        if self.foreign.is_none() {
            let head = &entry[..entry.len().min(512)];
            self.foreign = Some(String::from_utf8_lossy(head).trim_end().to_owned());
        }
    }

    /// The text of an entry without a timestamp seen on this connection, once.
    pub(crate) fn take_foreign(&mut self) -> Option<String> {
        self.foreign.take()
    }

    /// Hand the unfinished entry in `pending` over to streaming.
    fn start_streaming(&mut self, cursor: &mut LogCursor, out: &mut Vec<u8>) {
        let entry = std::mem::take(&mut self.pending);
        let (verdict, text) = match split_stamp(&entry) {
            Some((ts, text)) => (cursor.admit(ts), text),
            None => {
                self.note_foreign(&entry);
                (Admit::Drop, &entry[..])
            }
        };
        let streaming = match verdict {
            Admit::Deliver => Streaming {
                pos: 0,
                from: 0,
                deliver: true,
            },
            Admit::ResumeAfter(from) => Streaming {
                pos: 0,
                from,
                deliver: true,
            },
            Admit::Drop => Streaming {
                pos: 0,
                from: 0,
                deliver: false,
            },
        };
        self.stream(streaming, text, false, cursor, out);
    }

    /// Pass `text` of the streamed entry; `finished` when it ends with the entry's newline.
    fn stream(
        &mut self,
        mut state: Streaming,
        text: &[u8],
        finished: bool,
        cursor: &mut LogCursor,
        out: &mut Vec<u8>,
    ) {
        let start = state.pos;
        state.pos += text.len() as u64;
        if state.deliver {
            let skip = usize::try_from(state.from.saturating_sub(start))
                .unwrap_or(usize::MAX)
                .min(text.len());
            out.extend_from_slice(&text[skip..]);
            cursor.partial = (!finished).then_some(state.pos.max(state.from));
        }
        self.streaming = (!finished).then_some(state);
    }

    /// The connection ended. With `complete` (the container has exited) a trailing fragment is
    /// the process's real last line and is delivered; otherwise it is dropped, to come back whole
    /// on the next connection (a streamed long line resumes where it stopped).
    pub(crate) fn end(&mut self, complete: bool, cursor: &mut LogCursor, out: &mut Vec<u8>) {
        if complete && !self.pending.is_empty() {
            self.admit_entry(0..self.pending.len(), cursor, out);
        }
        if complete && self.streaming.is_some() {
            cursor.partial = None;
        }
        self.pending.clear();
        self.streaming = None;
    }
}

/// The timestamp and text of a `timestamps=true` entry.
fn split_stamp(entry: &[u8]) -> Option<(Timestamp, &[u8])> {
    let at = entry.iter().position(|&b| b == b' ')?;
    let ts = std::str::from_utf8(&entry[..at])
        .ok()?
        .parse::<Timestamp>()
        .ok()?;
    Some((ts, &entry[at + 1..]))
}

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
    mut state: watch::Receiver<ContainerState>,
    refused: Duration,
    cancel: &CancellationToken,
    out: &mpsc::Sender<Chunk>,
) -> Result<FollowStats, LogError> {
    let mut stats = FollowStats::default();
    let mut retry = Backoff::default();
    // Since when every request was refused (none got through).
    let mut refused_since: Option<tokio::time::Instant> = None;
    loop {
        let current = *state.borrow_and_update();
        match current {
            ContainerState::Gone => return Ok(stats),
            ContainerState::Waiting => {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(stats),
                    changed = state.changed() => if changed.is_err() { return Ok(stats) },
                }
                continue;
            }
            ContainerState::Running | ContainerState::Terminated => {}
        }
        let last_read = current == ContainerState::Terminated;
        let params = LogParams {
            container: Some(container.to_owned()),
            follow: !last_read,
            timestamps: true,
            since_time: cursor.reconnect(),
            ..LogParams::default()
        };
        stats.connections += 1;
        let opened = tokio::select! {
            () = cancel.cancelled() => return Ok(stats),
            opened = pods.log_stream(pod, &params) => opened,
        };
        let before = stats.bytes;
        let read = match opened {
            Ok(reader) => {
                refused_since = None;
                // A follow stream the kubelet keeps open up to a second past the container's
                // end is cut as soon as the pod watch reports the end: the last read follows at
                // once, and the result does not wait for the kubelet's next check.
                let ended = async {
                    while state.changed().await.is_ok() {
                        if *state.borrow() == ContainerState::Terminated {
                            return;
                        }
                    }
                    std::future::pending().await
                };
                let ended = std::pin::pin!(ended);
                let ended = if last_read { None } else { Some(ended) };
                read_connection(
                    reader,
                    last_read,
                    ended,
                    cursor,
                    cancel,
                    out,
                    &mut stats.bytes,
                )
                .await
            }
            Err(err) => Err(classify(err)),
        };
        if stats.bytes > before {
            retry.reset();
        }
        match read {
            Ok(()) if last_read => return Ok(stats),
            Ok(()) => {}
            Err(ReadFailure::Refused(source)) => {
                let since = *refused_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= refused {
                    return Err(LogError::Refused {
                        pod: pod.to_owned(),
                        secs: refused.as_secs(),
                        source,
                    });
                }
                tracing::warn!(pod, error = %source, "log read refused, retrying");
                retry.failed();
            }
            Err(ReadFailure::Transient(reason)) => {
                tracing::warn!(pod, %reason, "log stream failed, reconnecting");
                // A kubelet the API server cannot reach fails every time: back off further.
                retry.failed();
            }
            Err(ReadFailure::Cancelled | ReadFailure::Gone) => return Ok(stats),
        }
        // The container ended (the pod watch said so, maybe while this stream was open): the
        // last read, at once.
        if !last_read && *state.borrow() == ContainerState::Terminated {
            continue;
        }
        // A stream that ended (cut, or the container just exited): wait briefly — or until the
        // pod watch reports a change — before the next connection, growing the pause while
        // connections deliver nothing so a misbehaving kubelet is not hammered. A refused read
        // is retried on its own schedule: a pod update does not make the API answer sooner.
        let refusing = refused_since.is_some();
        tokio::select! {
            () = cancel.cancelled() => return Ok(stats),
            () = tokio::time::sleep(retry.next()) => {},
            _ = state.changed(), if !refusing => {},
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
    let mut states = watcher(pods.clone(), config).default_backoff().boxed();
    let (tx, mut rx) = mpsc::channel::<Chunk>(1);
    let mut cursor = LogCursor::default();
    let mut seen = false;
    let finished = {
        let follower = follow(
            &pods,
            pod,
            CONTAINER_NAME,
            &mut cursor,
            state_rx,
            REFUSED,
            cancel,
            &tx,
        );
        tokio::pin!(follower);
        loop {
            tokio::select! {
                finished = &mut follower => break finished,
                Some(chunk) = rx.recv() => {
                    let text = String::from_utf8_lossy(&chunk.bytes).into_owned();
                    sink.emit(RunEvent::Output { text, checkpoint: chunk.checkpoint }).await;
                }
                Some(event) = states.next() => {
                    let state = match event {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            seen = true;
                            Some(super::status::container_state(&p, CONTAINER_NAME))
                        }
                        Ok(watcher::Event::Delete(_)) => Some(ContainerState::Gone),
                        Ok(watcher::Event::InitDone) if !seen => Some(ContainerState::Gone),
                        _ => None,
                    };
                    if let Some(state) = state {
                        set_state(&state_tx, state);
                    }
                }
            }
        }
    };
    drop(tx);
    while let Some(chunk) = rx.recv().await {
        let text = String::from_utf8_lossy(&chunk.bytes).into_owned();
        sink.emit(RunEvent::Output {
            text,
            checkpoint: chunk.checkpoint,
        })
        .await;
    }
    finished
        .map(drop)
        .map_err(|err| err.into_output_error().into())
}

enum ReadFailure {
    /// The API refused the request (401/403, 429, 5xx) or could not be reached: retried for a
    /// bounded time, an API server restarting answers 403 for a few seconds.
    Refused(kube::Error),
    Transient(String),
    /// The pod is gone (deleted with its Job): there is nothing more to read.
    Gone,
    Cancelled,
}

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

async fn read_connection(
    reader: impl futures::AsyncBufRead,
    last_read: bool,
    mut ended: Option<std::pin::Pin<&mut impl Future<Output = ()>>>,
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
            // The container ended: stop following, like a stream that ended (a fragment held
            // back arrives whole with the last read).
            () = async { ended.as_mut().expect("guarded").await }, if ended.is_some() => {
                ended = None;
                Err(std::io::Error::other(CUT))
            }
            read = reader.fill_buf() => read.map(|buf| {
                let take = buf.len().min(MAX_CHUNK);
                chunk.reserve(take);
                lines.feed(&buf[..take], cursor, &mut chunk);
                take
            }),
        };
        let result = match read {
            Ok(0) => {
                lines.end(last_read, cursor, &mut chunk);
                Some(Ok(()))
            }
            Ok(n) => {
                reader.consume_unpin(n);
                None
            }
            Err(err) if err.to_string() == CUT => {
                lines.end(false, cursor, &mut chunk);
                Some(Ok(()))
            }
            Err(err) => {
                lines.end(false, cursor, &mut chunk);
                Some(Err(ReadFailure::Transient(err.to_string())))
            }
        };
        // The kubelet's own words (the stream is over): what came before is delivered, the
        // connection counts as failed.
        let result = match lines.take_foreign() {
            Some(text) => {
                lines.end(false, cursor, &mut chunk);
                Some(Err(ReadFailure::Transient(format!(
                    "the log endpoint answered with text that is not the container's output: {text}"
                ))))
            }
            None => result,
        };
        if !chunk.is_empty() {
            *delivered += chunk.len() as u64;
            let chunk = Chunk {
                bytes: chunk,
                checkpoint: cursor.checkpoint(),
            };
            if out.send(chunk).await.is_err() {
                // Nobody follows this run any more.
                return Err(ReadFailure::Cancelled);
            }
        }
        if let Some(result) = result {
            return result;
        }
    }
}

/// Why a follow connection was closed by the engine: the container ended.
const CUT: &str = "the container ended";

/// Most bytes taken from the stream per chunk: bounds the memory a run holds in flight
/// (chunks queued for the sink) whatever the size of the frames the server sends.
const MAX_CHUNK: usize = 16 * 1024;

/// Pause between connections that deliver nothing: 50 ms doubling to 2 s, or to 30 s while
/// connections fail.
#[derive(Debug)]
struct Backoff(Duration);

const MAX_PAUSE: Duration = Duration::from_secs(2);
const MAX_PAUSE_FAILING: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(50))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(MAX_PAUSE.max(self.0));
        now
    }

    /// A failed connection: the next pauses may grow to [`MAX_PAUSE_FAILING`].
    fn failed(&mut self) {
        self.0 = (self.0 * 2).min(MAX_PAUSE_FAILING);
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn run(conn: &[&str], complete: bool, cursor: &mut LogCursor) -> String {
        let mut lines = StampedLines::default();
        let mut out = Vec::new();
        for chunk in conn.iter() {
            lines.feed(chunk.as_bytes(), cursor, &mut out);
        }
        lines.end(complete, cursor, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reconnect_floors_since_time_and_drops_the_boundary_second() {
        let mut cursor = LogCursor::default();
        assert_eq!(cursor.reconnect(), None);
        let first = run(
            &[
                "2026-11-27T14:37:43.100000000Z a\n2026-11-27T14:37:43.6",
                "00000000Z b\n",
            ],
            false,
            &mut cursor,
        );
        assert_eq!(first, "a\nb\n");
        assert_eq!(cursor.reconnect(), Some(ts("2026-11-27T14:37:41Z")));
        // The server sends the whole boundary second again.
        let second = run(
            &[
                "2026-11-27T14:37:43.100000000Z a\n2026-11-27T14:37:43.600000000Z b\n2026-11-27T14:37:44.000000001Z c\n",
            ],
            false,
            &mut cursor,
        );
        assert_eq!(second, "c\n");
    }

    #[test]
    fn equal_timestamps_are_told_apart_by_position() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.500000000Z";
        assert_eq!(
            run(&[&format!("{t} one\n{t} two\n")], false, &mut cursor),
            "one\ntwo\n"
        );
        cursor.reconnect();
        assert_eq!(
            run(
                &[&format!("{t} one\n{t} two\n{t} three\n")],
                false,
                &mut cursor
            ),
            "three\n"
        );
    }

    #[test]
    fn a_fragment_cut_mid_run_is_held_back_and_arrives_whole() {
        let mut cursor = LogCursor::default();
        let out = run(
            &["2026-11-27T14:37:43.1Z hello\n2026-11-27T14:37:43.2Z wor"],
            false,
            &mut cursor,
        );
        assert_eq!(out, "hello\n");
        cursor.reconnect();
        let out = run(
            &["2026-11-27T14:37:43.1Z hello\n2026-11-27T14:37:43.2Z world\n"],
            false,
            &mut cursor,
        );
        assert_eq!(out, "world\n");
    }

    #[test]
    fn the_last_line_without_newline_is_delivered_without_one_once_complete() {
        let mut cursor = LogCursor::default();
        let out = run(
            &["2026-11-27T14:37:43.1Z done\n2026-11-27T14:37:43.2Z no newline"],
            true,
            &mut cursor,
        );
        assert_eq!(out, "done\nno newline");
    }

    #[test]
    fn the_real_kubelet_capture_is_delivered_without_prefixes() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/kube/31-log-follow-timestamps.raw"
        ))
        .unwrap();
        let mut cursor = LogCursor::default();
        let mut lines = StampedLines::default();
        let mut out = Vec::new();
        lines.feed(&raw, &mut cursor, &mut out);
        lines.end(true, &mut cursor, &mut out);
        let expected: Vec<u8> = raw
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|line| {
                let at = line.iter().position(|&b| b == b' ').unwrap();
                line[at + 1..].to_vec()
            })
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        assert!(
            !out.ends_with(b"\n"),
            "the capture's last line has no newline"
        );
    }

    #[test]
    fn a_checkpoint_restores_the_cursor() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.500000000Z";
        run(&[&format!("{t} one\n{t} two\n")], false, &mut cursor);
        let checkpoint = cursor.checkpoint().unwrap();
        let mut restored = LogCursor::from_checkpoint(&checkpoint).unwrap();
        assert_eq!(restored.reconnect(), Some(ts("2026-11-27T14:37:41Z")));
        assert_eq!(
            run(
                &[&format!("{t} one\n{t} two\n{t} three\n")],
                false,
                &mut restored
            ),
            "three\n"
        );
        assert!(LogCursor::from_checkpoint("garbage").is_none());
    }

    fn feed_all(
        lines: &mut StampedLines,
        conn: &[&str],
        complete: bool,
        cursor: &mut LogCursor,
    ) -> String {
        let mut out = Vec::new();
        for chunk in conn {
            lines.feed(chunk.as_bytes(), cursor, &mut out);
        }
        lines.end(complete, cursor, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_long_line_is_streamed_and_resumed_where_a_cut_stopped_it() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.100000000Z";
        let mut lines = StampedLines::with_max_pending(8);
        let first = feed_all(
            &mut lines,
            &[&format!("{t} abcdefghij"), "klmn"],
            false,
            &mut cursor,
        );
        assert_eq!(
            first, "abcdefghijklmn",
            "streamed before its end, not held whole"
        );
        assert!(lines.pending.is_empty());
        let checkpoint = cursor.checkpoint().unwrap();
        assert!(checkpoint.ends_with("/1+14"), "{checkpoint}");
        cursor.reconnect();
        let mut lines = StampedLines::with_max_pending(8);
        let second = feed_all(
            &mut lines,
            &[
                &format!("{t} abcdefghijklmnopq"),
                "rstu\n2026-11-27T14:37:44Z next\n",
            ],
            false,
            &mut cursor,
        );
        assert_eq!(
            second, "opqrstu\nnext\n",
            "the cut line continues, nothing repeated"
        );
        assert_eq!(cursor.partial, None);
    }

    #[test]
    fn a_checkpoint_inside_a_long_line_survives_a_restart() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.100000000Z";
        let mut lines = StampedLines::with_max_pending(4);
        feed_all(
            &mut lines,
            &[&format!("{t} 0123456789")],
            false,
            &mut cursor,
        );
        let mut restored = LogCursor::from_checkpoint(&cursor.checkpoint().unwrap()).unwrap();
        restored.reconnect();
        let out = run(&[&format!("{t} 0123456789ABC\n")], false, &mut restored);
        assert_eq!(out, "ABC\n");
    }

    #[test]
    fn a_repeated_long_line_is_dropped_whole() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.100000000Z";
        run(&[&format!("{t} 0123456789\n")], false, &mut cursor);
        cursor.reconnect();
        let mut lines = StampedLines::with_max_pending(4);
        let out = feed_all(
            &mut lines,
            &[&format!("{t} 01234"), "56789\n2026-11-27T14:37:44Z new\n"],
            false,
            &mut cursor,
        );
        assert_eq!(out, "new\n");
    }

    /// A log file of `(timestamp, line)` in file order, served like the kubelet: each entry
    /// filtered on its own by `sinceTime` truncated to the second, the file's order kept.
    fn serve(file: &[(&str, String)], since: Option<Timestamp>) -> String {
        let bound = since.map(floor_to_second);
        file.iter()
            .filter(|(t, _)| bound.is_none_or(|b| ts(t) >= b))
            .map(|(t, line)| format!("{t} {line}\n"))
            .collect()
    }

    /// stdout and stderr stamped each on its own and merged: later entries may carry earlier
    /// timestamps, across a second boundary too (as measured on v1.36 with containerd).
    fn interleaved() -> Vec<(&'static str, String)> {
        let stamps = [
            "2026-11-27T14:37:42.900000000Z",
            "2026-11-27T14:37:42.999000000Z",
            "2026-11-27T14:37:42.998000000Z",
            "2026-11-27T14:37:43.001000000Z",
            "2026-11-27T14:37:42.999500000Z",
            "2026-11-27T14:37:43.500000000Z",
            "2026-11-27T14:37:43.500000000Z",
            "2026-11-27T14:37:43.499000000Z",
            "2026-11-27T14:37:44.000000001Z",
            "2026-11-27T14:37:43.999000000Z",
            "2026-11-27T14:37:45.100000000Z",
            "2026-11-27T14:37:46.200000000Z",
            "2026-11-27T14:37:46.100000000Z",
            "2026-11-27T14:37:47.300000000Z",
        ];
        stamps
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, format!("line-{i}")))
            .collect()
    }

    fn all_lines(file: &[(&str, String)]) -> String {
        file.iter().map(|(_, line)| format!("{line}\n")).collect()
    }

    #[test]
    fn entries_stamped_earlier_than_the_one_before_are_delivered() {
        let file = interleaved();
        let mut cursor = LogCursor::default();
        assert_eq!(cursor.reconnect(), None);
        let out = run(&[&serve(&file, None)], true, &mut cursor);
        assert_eq!(out, all_lines(&file), "nothing dropped for its timestamp");
    }

    #[test]
    fn a_reconnect_after_out_of_order_entries_continues_exactly_after_them() {
        let file = interleaved();
        // Cut the connection after every possible entry, twice in a row.
        for first in 0..=file.len() {
            for second in first..=file.len() {
                let mut cursor = LogCursor::default();
                let mut out = String::new();
                for cut in [first, second] {
                    let since = cursor.reconnect();
                    let answer = serve(&file, since);
                    let delivered_before = out.lines().count();
                    let upto: String = answer
                        .split_inclusive('\n')
                        .take(cut.saturating_sub(delivered_before) + answer_prefix(&answer, &out))
                        .collect();
                    out += &run(&[&upto], false, &mut cursor);
                }
                let since = cursor.reconnect();
                out += &run(&[&serve(&file, since)], true, &mut cursor);
                assert_eq!(out, all_lines(&file), "cut after {first} then {second}");
            }
        }
    }

    /// How many entries of `answer` were already delivered in `out` (they come back first).
    fn answer_prefix(answer: &str, out: &str) -> usize {
        let delivered: Vec<&str> = out.lines().collect();
        answer
            .lines()
            .filter_map(|entry| entry.split_once(' ').map(|(_, line)| line))
            .filter(|line| delivered.contains(line))
            .count()
    }

    #[test]
    fn a_checkpoint_taken_anywhere_resumes_without_loss_or_repeat() {
        let file = interleaved();
        for cut in 0..=file.len() {
            let mut cursor = LogCursor::default();
            cursor.reconnect();
            let head: String = serve(&file, None).split_inclusive('\n').take(cut).collect();
            let mut out = run(&[&head], false, &mut cursor);
            let mut restored = match cursor.checkpoint() {
                Some(checkpoint) => LogCursor::from_checkpoint(&checkpoint).unwrap(),
                None => LogCursor::default(),
            };
            // The restored cursor is cut once more before it relearned its window.
            let since = restored.reconnect();
            let partial: String = serve(&file, since).split_inclusive('\n').take(1).collect();
            out += &run(&[&partial], false, &mut restored);
            let since = restored.reconnect();
            out += &run(&[&serve(&file, since)], true, &mut restored);
            assert_eq!(out, all_lines(&file), "checkpoint after {cut} entries");
        }
    }

    #[test]
    fn the_window_of_delivered_timestamps_stays_bounded() {
        let mut cursor = LogCursor::default();
        let start = ts("2026-11-27T14:00:00Z");
        let mut conn = String::new();
        for i in 0..10_000_i64 {
            let t = start
                .checked_add(SignedDuration::from_millis(i * 10))
                .unwrap();
            conn += &format!("{t} line-{i}\n");
        }
        run(&[&conn], false, &mut cursor);
        // 100 entries a second, kept for the margin and one second more.
        assert!(cursor.window.len() <= 400, "{}", cursor.window.len());
        assert_eq!(cursor.reconnect(), Some(ts("2026-11-27T14:01:37Z")));
        assert_eq!(cursor.skip, 300);
    }

    #[test]
    fn text_without_a_timestamp_is_not_output() {
        let mut cursor = LogCursor::default();
        let mut lines = StampedLines::default();
        let mut out = Vec::new();
        lines.feed(
            b"2026-11-27T14:37:43.1Z real\nunable to retrieve container logs for containerd://0123abcd",
            &mut cursor,
            &mut out,
        );
        lines.end(true, &mut cursor, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "real\n");
        assert_eq!(
            lines.take_foreign().as_deref(),
            Some("unable to retrieve container logs for containerd://0123abcd")
        );
    }

    #[test]
    fn floor_keeps_whole_seconds() {
        assert_eq!(
            floor_to_second(ts("2026-11-27T14:37:43.999999999Z")),
            ts("2026-11-27T14:37:43Z")
        );
        assert_eq!(
            floor_to_second(ts("2026-11-27T14:37:43Z")),
            ts("2026-11-27T14:37:43Z")
        );
    }
}
