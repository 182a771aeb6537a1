//! Exactly-once delivery of a container's output across follow-stream reconnects.
//!
//! The kubelet closes follow streams on its own (timeouts, log rotation) and connections drop.
//! Every connection asks for `timestamps=true`; on reconnect the engine asks for `sinceTime` =
//! the last delivered timestamp. The server truncates `sinceTime` to whole seconds (measured on
//! v1.36; kube-rs also *rounds* it, which could skip ahead half a second, so the engine floors
//! it itself), so the boundary second comes back: [`LogCursor`] drops what was already delivered
//! by comparing full-precision timestamps, and position among equal ones. Never `sinceSeconds`
//! plus content heuristics.
//!
//! A connection that ends inside a line while the container still runs holds that fragment back:
//! the same entry arrives whole on the next connection. Only once the container has terminated is
//! a last line without a newline delivered, without one, as the process wrote it.

use std::time::Duration;

use futures::AsyncBufReadExt;
use jiff::{Timestamp, ToSpan};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use tokio::sync::{mpsc, watch};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

use super::result::RunError;
use crate::error_code::ErrorCode;
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

/// Which entries of a timestamped log were already delivered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LogCursor {
    last: Option<Timestamp>,
    /// How many delivered entries carry exactly `last` (timestamps may repeat).
    delivered_at_last: u64,
    /// On the current connection: how many entries stamped `last` are still to be skipped.
    skip_at_last: u64,
    /// The last entry is a line still being written, of which this many bytes were delivered
    /// (a line longer than [`MAX_PENDING`] is streamed rather than held whole in memory).
    partial: Option<u64>,
}

/// What to do with an entry, by its timestamp.
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
    /// The cursor as an opaque string (`<timestamp>/<count>[+<bytes>]`), `None` before any output.
    pub(crate) fn checkpoint(&self) -> Option<String> {
        let ts = self.last?;
        Some(match self.partial {
            Some(bytes) => format!("{ts}/{}+{bytes}", self.delivered_at_last),
            None => format!("{ts}/{}", self.delivered_at_last),
        })
    }

    /// A cursor from [`Self::checkpoint`]'s string.
    pub(crate) fn from_checkpoint(text: &str) -> Option<Self> {
        let (ts, rest) = text.rsplit_once('/')?;
        let (count, partial) = match rest.split_once('+') {
            Some((count, bytes)) => (count, Some(bytes.parse().ok()?)),
            None => (rest, None),
        };
        Some(Self {
            last: Some(ts.parse().ok()?),
            delivered_at_last: count.parse().ok()?,
            skip_at_last: 0,
            partial,
        })
    }

    /// Start a new connection: the `sinceTime` to ask for (floored to whole seconds, so neither
    /// the server's truncation nor a client's rounding can skip an entry).
    pub(crate) fn reconnect(&mut self) -> Option<Timestamp> {
        self.skip_at_last = self.delivered_at_last;
        self.last.map(floor_to_second)
    }

    fn admit(&mut self, ts: Timestamp) -> Admit {
        match self.last {
            Some(last) if ts < last => Admit::Drop,
            Some(last) if ts == last && self.skip_at_last > 0 => {
                self.skip_at_last -= 1;
                match self.partial {
                    // The last delivered entry at this timestamp is the one cut short.
                    Some(bytes) if self.skip_at_last == 0 => Admit::ResumeAfter(bytes),
                    _ => Admit::Drop,
                }
            }
            Some(last) if ts == last => {
                self.delivered_at_last += 1;
                self.partial = None;
                Admit::Deliver
            }
            _ => {
                self.last = Some(ts);
                self.delivered_at_last = 1;
                self.skip_at_last = 0;
                self.partial = None;
                Admit::Deliver
            }
        }
    }
}

fn floor_to_second(ts: Timestamp) -> Timestamp {
    let nanos = ts.subsec_nanosecond();
    ts.checked_sub(i64::from(nanos).nanoseconds()).unwrap_or(ts)
}

/// The most of one unfinished line held in memory; a longer line is streamed as it arrives.
const MAX_PENDING: usize = 1 << 20;

/// Splits the raw bytes of one `timestamps=true` connection into admitted output.
#[derive(Debug, Default)]
pub(crate) struct StampedLines {
    pending: Vec<u8>,
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
            admit_entry(&self.pending[start..end], cursor, out);
            start = end;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.max_pending.unwrap_or(MAX_PENDING) {
            self.start_streaming(cursor, out);
        }
    }

    /// Hand the unfinished entry in `pending` over to streaming.
    fn start_streaming(&mut self, cursor: &mut LogCursor, out: &mut Vec<u8>) {
        let entry = std::mem::take(&mut self.pending);
        let (verdict, text) = match split_stamp(&entry) {
            Some((ts, text)) => (cursor.admit(ts), text),
            None => (Admit::Deliver, &entry[..]),
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
            admit_entry(&self.pending, cursor, out);
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

fn admit_entry(entry: &[u8], cursor: &mut LogCursor, out: &mut Vec<u8>) {
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
        // Not a stamped entry (a server that ignores `timestamps`): deliver it as is.
        None => out.extend_from_slice(entry),
    }
}

/// Failed to read a container's log; maps to `k8s_api_unreachable` or `k8s_forbidden`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// The API refused the log read in a way retrying cannot fix.
    #[error("failed to read the log of pod {pod}: {source}")]
    Api {
        pod: String,
        #[source]
        source: kube::Error,
    },
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
/// the reads). `state` comes from the pod watch.
pub(crate) async fn follow(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    cursor: &mut LogCursor,
    mut state: watch::Receiver<ContainerState>,
    cancel: &CancellationToken,
    out: &mpsc::Sender<Chunk>,
) -> Result<FollowStats, LogError> {
    let mut stats = FollowStats::default();
    let mut retry = Backoff::default();
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
                read_connection(reader, last_read, cursor, cancel, out, &mut stats.bytes).await
            }
            Err(err) => Err(classify(err)),
        };
        if stats.bytes > before {
            retry.reset();
        }
        match read {
            Ok(()) if last_read => return Ok(stats),
            Ok(()) => {}
            Err(ReadFailure::Fatal(source)) => {
                return Err(LogError::Api {
                    pod: pod.to_owned(),
                    source,
                });
            }
            Err(ReadFailure::Transient(reason)) => {
                tracing::warn!(pod, %reason, "log stream failed, reconnecting");
                // A kubelet the API server cannot reach fails every time: back off further.
                retry.failed();
            }
            Err(ReadFailure::Cancelled | ReadFailure::Gone) => return Ok(stats),
        }
        // A stream that ended (cut, or the container just exited): wait briefly — or until the
        // pod watch reports a change — before the next connection, growing the pause while
        // connections deliver nothing so a misbehaving kubelet is not hammered.
        tokio::select! {
            () = cancel.cancelled() => return Ok(stats),
            () = tokio::time::sleep(retry.next()) => {},
            _ = state.changed() => {},
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
        .map_err(|err| RunError::new(ErrorCode::K8sForbidden, err.to_string()))
}

enum ReadFailure {
    Fatal(kube::Error),
    Transient(String),
    /// The pod is gone (deleted with its Job): there is nothing more to read.
    Gone,
    Cancelled,
}

fn classify(err: kube::Error) -> ReadFailure {
    match &err {
        kube::Error::Api(status) if status.code == 404 => ReadFailure::Gone,
        kube::Error::Api(status) if matches!(status.code, 401 | 403) => ReadFailure::Fatal(err),
        _ => ReadFailure::Transient(err.to_string()),
    }
}

async fn read_connection(
    reader: impl futures::AsyncBufRead,
    last_read: bool,
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
            Err(err) => {
                lines.end(false, cursor, &mut chunk);
                Some(Err(ReadFailure::Transient(err.to_string())))
            }
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
        assert_eq!(cursor.reconnect(), Some(ts("2026-11-27T14:37:43Z")));
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
        assert_eq!(restored.reconnect(), Some(ts("2026-11-27T14:37:43Z")));
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
