//! Per-container log store and log serving, like the kubelet's CRI log file.
//!
//! TEST DOUBLE: part of the simulated kubelet.
//!
//! Each container's output is appended to one file, already in the shape the kubelet serves
//! with `timestamps=true`: `2026-11-27T14:24:42.420363934Z <line>\n` (RFC3339Nano with nine
//! fixed digits, as captured in `fixtures/kube/31-log-follow-timestamps.raw`). The fixed-width
//! prefix makes `timestamps=false` a cut of 31 bytes per line and lets `sinceTime` compare text.
//!
//! Like containerd, each stream is stamped on its own when its output is read, and stderr's
//! reader lags stdout's by a little ([`DEFAULT_STDERR_LAG`], or
//! [`Faults::stream_lag`](crate::Faults::stream_lag)): the file is in write order, and where
//! the streams interleave, an entry may carry an earlier timestamp than the one before it
//! (measured on v1.36). `sinceTime`, truncated to whole seconds, filters each entry on its own,
//! the file's order kept, as the real kubelet does.
//! Memory holds only a sparse index (one mark per 64 KiB of file) and the unfinished line of each
//! stream, so a container writing 1 GiB costs a few hundred KiB of RAM. Followers are woken by a
//! `watch` channel, never by polling, and get every line written since their last wakeup as one
//! `Bytes`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Length of `2026-11-27T14:24:42.420363934Z`.
const TS_LEN: usize = 30;
/// Timestamp plus the space the kubelet puts after it.
const PREFIX_LEN: usize = TS_LEN + 1;
/// Distance between index marks: bounds the scan a `tailLines`/`sinceTime` lookup does.
const INDEX_STRIDE: u64 = 64 * 1024;
/// Bytes read per follower wakeup: large enough to batch thousands of lines into one `Bytes`.
const READ_CHUNK: usize = 256 * 1024;
/// A line with no newline after this many bytes is stored as a line of its own, so a process
/// that never writes a newline cannot grow memory without bound (containerd splits at 16 KiB
/// and the kubelet rejoins; we keep lines intact up to this size).
const MAX_LINE: usize = 2 * 1024 * 1024;
/// Room kept for an unfinished line between appends.
const PENDING_KEEP: usize = 64 * 1024;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// How much earlier than stdout's a stderr line is stamped by default: a few milliseconds, the
/// skew measured between containerd's two stream readers.
pub const DEFAULT_STDERR_LAG: std::time::Duration = std::time::Duration::from_millis(3);

/// The stored output of one container: a file of timestamped lines plus a compact index.
#[derive(Debug)]
pub struct LogBuffer {
    file: File,
    /// Deletes the file when the buffer is dropped.
    _path: tempfile::TempPath,
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
    /// Nanoseconds stderr's stamps lag behind the clock.
    stderr_lag: AtomicI64,
}

/// What followers need to know to read on: how far the file holds whole lines, and whether more
/// can come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    len: u64,
    lines: u64,
    closed: bool,
}

#[derive(Debug)]
struct State {
    /// The unfinished line of stdout and of stderr: the kubelet never mixes their bytes.
    pending: [Vec<u8>; 2],
    records: Records,
    closed: bool,
    has_output: bool,
}

/// The writer's view of the file: where it ends, how many lines it holds, and the index.
#[derive(Debug)]
struct Records {
    len: u64,
    lines: u64,
    /// The last stamp of stdout and of stderr: each strictly increases on its own.
    last_ns: [i64; 2],
    /// The latest stamp in the file.
    max_ns: i64,
    second: i64,
    second_text: [u8; 19],
    index: Vec<Mark>,
}

/// A line that starts at `offset` and is line number `line` (from 0); every line before it was
/// stamped at or before `max_before` (stamps are not in file order, their running maximum is).
#[derive(Clone, Copy, Debug)]
struct Mark {
    offset: u64,
    line: u64,
    max_before: i64,
}

impl LogBuffer {
    /// Create an empty log store whose file lives in `dir` (a uniquely named file, so several
    /// buffers may share a directory); the file is deleted when the buffer is dropped.
    pub fn new(dir: &Path) -> std::io::Result<Arc<LogBuffer>> {
        let (file, path) = tempfile::Builder::new()
            .prefix("container-")
            .suffix(".log")
            .tempfile_in(dir)?
            .into_parts();
        Ok(Arc::new(LogBuffer {
            file,
            _path: path,
            state: Mutex::new(State {
                pending: [Vec::new(), Vec::new()],
                records: Records {
                    len: 0,
                    lines: 0,
                    last_ns: [i64::MIN; 2],
                    max_ns: i64::MIN,
                    second: i64::MIN,
                    second_text: [0; 19],
                    index: Vec::new(),
                },
                closed: false,
                has_output: false,
            }),
            progress: watch::Sender::new(Progress::default()),
            stderr_lag: AtomicI64::new(nanos(DEFAULT_STDERR_LAG)),
        }))
    }

    /// Stamp stderr this much earlier than stdout from now on (zero: both by the same clock).
    pub fn set_stderr_lag(&self, lag: std::time::Duration) {
        self.stderr_lag.store(nanos(lag), Ordering::Relaxed);
    }

    /// Append output of one stream; splits into lines, stamps each line with the time it was
    /// read (RFC3339Nano, strictly increasing within the stream; stderr lagging by the stream
    /// lag), stdout and stderr interleaved as written. Output after `close()` is ignored.
    pub fn append(&self, stream: LogStream, bytes: &[u8]) {
        let lag = match stream {
            LogStream::Stdout => 0,
            LogStream::Stderr => self.stderr_lag.load(Ordering::Relaxed),
        };
        self.append_at(stream, bytes, now_ns().saturating_sub(lag));
    }

    /// `append` with the clock injected, so tests can place lines in chosen seconds.
    fn append_at(&self, stream: LogStream, bytes: &[u8], now: i64) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.has_output = true;
        let State {
            pending, records, ..
        } = &mut *state;
        let pending = &mut pending[stream as usize];
        let start = records.snapshot();
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(newline + 1);
            records.push(&mut out, stream, now, pending, line);
            pending.clear();
            rest = tail;
        }
        // Do not keep the room a long line needed once it is stored.
        pending.shrink_to(PENDING_KEEP);
        pending.extend_from_slice(rest);
        if pending.len() >= MAX_LINE {
            records.push(&mut out, stream, now, pending, b"\n");
            pending.clear();
            pending.shrink_to(PENDING_KEEP);
        }
        self.commit(&mut state, start, &out);
    }

    /// The container exited: flush a partial last line (delivered WITHOUT a trailing newline,
    /// as the real kubelet does) and wake followers so follow streams end.
    pub fn close(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let now = now_ns();
        let State {
            pending, records, ..
        } = &mut *state;
        let start = records.snapshot();
        let mut out = Vec::new();
        let partials: Vec<(LogStream, Vec<u8>)> = [LogStream::Stdout, LogStream::Stderr]
            .into_iter()
            .zip(pending.iter_mut().map(std::mem::take))
            .filter(|(_, partial)| !partial.is_empty())
            .collect();
        // Only the very last record may lack its newline, or it would run into the next one.
        for (i, (stream, partial)) in partials.iter().enumerate() {
            let end: &[u8] = if i + 1 == partials.len() { b"" } else { b"\n" };
            records.push(&mut out, *stream, now, partial, end);
        }
        state.closed = true;
        self.commit(&mut state, start, &out);
    }

    /// Whether the container wrote anything yet (including an unfinished line).
    pub fn has_output(&self) -> bool {
        self.lock().has_output
    }

    /// Bytes of memory this buffer holds, whatever the size of the log: the index and the
    /// unfinished lines. The output itself lives in the file.
    pub fn memory_bytes(&self) -> usize {
        let state = self.lock();
        std::mem::size_of::<Self>()
            + state.records.index.capacity() * std::mem::size_of::<Mark>()
            + state.pending.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Serve a log request. Follow streams deliver each line as soon as it is appended and end
    /// once `close()` was called and everything is delivered; `cut` ends a follow stream early
    /// (the kubelet closing on its own) while the container keeps running. A non-follow request
    /// serves what was written when it was made. Limits are applied to whole lines, prefix
    /// included; a read error ends the stream (logged).
    pub fn read(
        self: &Arc<Self>,
        query: LogQuery,
        cut: LogCut,
    ) -> impl Stream<Item = Bytes> + Send + 'static {
        let progress = self.progress.subscribe();
        let snapshot = *progress.borrow();
        let start = match self.start_offset(&query, snapshot) {
            Ok(offset) => offset,
            Err(error) => {
                tracing::warn!(%error, "failed to read container log; ending the log stream");
                snapshot.len
            }
        };
        let (lines_left, deadline) = match cut {
            LogCut::AfterLines(lines) if query.follow => (Some(lines), None),
            LogCut::Every(period) if query.follow => (None, Some(Instant::now() + period)),
            _ => (None, None),
        };
        let since = since_bound(&query, now_ns()).map(format_ts);
        let reader = Reader {
            buffer: Arc::clone(self),
            since,
            progress,
            pos: start,
            end: (!query.follow).then_some(snapshot.len),
            timestamps: query.timestamps,
            bytes_left: query.limit_bytes,
            lines_left,
            deadline,
            done: lines_left == Some(0) || query.limit_bytes == Some(0),
        };
        futures::stream::unfold(reader, |mut reader| async move {
            let batch = reader.next_batch().await?;
            Some((batch, reader))
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole records behind: keep serving them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write the records built since `start` and tell followers; on a write error drop them
    /// (logged) so the index never points past the file.
    fn commit(&self, state: &mut State, start: Progress, out: &[u8]) {
        if !out.is_empty()
            && let Err(error) = self.file.write_all_at(out, start.len)
        {
            tracing::warn!(%error, bytes = out.len(), "failed to store container output; dropping it");
            state.records.rollback(start);
        }
        let progress = Progress {
            len: state.records.len,
            lines: state.records.lines,
            closed: state.closed,
        };
        self.progress.send_replace(progress);
    }

    /// Where a request starts: the later of the `tailLines` and the since bounds.
    fn start_offset(&self, query: &LogQuery, snapshot: Progress) -> std::io::Result<u64> {
        let mut start = 0;
        if let Some(tail) = query.tail_lines {
            let first = snapshot.lines.saturating_sub(tail);
            start = start.max(self.offset_of_line(first, snapshot)?);
        }
        if let Some(bound) = since_bound(query, now_ns()) {
            start = start.max(self.offset_of_time(bound, snapshot)?);
        }
        Ok(start)
    }

    fn offset_of_line(&self, line: u64, snapshot: Progress) -> std::io::Result<u64> {
        if line >= snapshot.lines {
            return Ok(snapshot.len);
        }
        let mark = self.mark_before(|mark| mark.line <= line);
        let mut to_skip = line - mark.line;
        self.find_record(mark.offset, snapshot.len, |_| {
            let found = to_skip == 0;
            to_skip = to_skip.saturating_sub(1);
            found
        })
    }

    /// Where the lines stamped at or after `bound_ns` may start: every line before it is stamped
    /// earlier (the reader filters the rest line by line, as their stamps are not in order).
    fn offset_of_time(&self, bound_ns: i64, snapshot: Progress) -> std::io::Result<u64> {
        let mark = self.mark_before(|mark| mark.max_before < bound_ns);
        let bound = format_ts(bound_ns);
        // Fixed-width timestamps sort as text.
        self.find_record(mark.offset, snapshot.len, |record| {
            record.get(..TS_LEN).is_none_or(|ts| ts >= bound.as_slice())
        })
    }

    /// The last index mark satisfying `before` (marks are ordered), or the file start.
    fn mark_before(&self, before: impl Fn(&Mark) -> bool) -> Mark {
        let state = self.lock();
        let index = &state.records.index;
        let after = index.partition_point(before);
        after
            .checked_sub(1)
            .and_then(|i| index.get(i).copied())
            .unwrap_or(Mark {
                offset: 0,
                line: 0,
                max_before: i64::MIN,
            })
    }

    /// Offset of the first record at or after `from` for which `found` holds, or `end`.
    fn find_record(
        &self,
        from: u64,
        end: u64,
        mut found: impl FnMut(&[u8]) -> bool,
    ) -> std::io::Result<u64> {
        let mut pos = from;
        while pos < end {
            let chunk = self.read_records(pos, end)?;
            for record in chunk.split_inclusive(|&b| b == b'\n') {
                if found(record) {
                    return Ok(pos);
                }
                pos += record.len() as u64;
            }
        }
        Ok(end)
    }

    /// Whole records from `pos` (a record start) towards `end` (a record end): about
    /// `READ_CHUNK` bytes, more when one record is longer.
    fn read_records(&self, pos: u64, end: u64) -> std::io::Result<Vec<u8>> {
        let available = usize::try_from(end - pos).unwrap_or(usize::MAX);
        let mut want = available.min(READ_CHUNK);
        loop {
            let mut chunk = vec![0; want];
            self.file.read_exact_at(&mut chunk, pos)?;
            if want == available {
                return Ok(chunk);
            }
            if let Some(last_newline) = chunk.iter().rposition(|&b| b == b'\n') {
                chunk.truncate(last_newline + 1);
                return Ok(chunk);
            }
            want = available.min(want.saturating_mul(2));
        }
    }
}

impl Records {
    fn snapshot(&self) -> Progress {
        Progress {
            len: self.len,
            lines: self.lines,
            closed: false,
        }
    }

    /// Append one record of `stream` (`head` then `tail`, which carries the newline if any) to
    /// `out`.
    fn push(&mut self, out: &mut Vec<u8>, stream: LogStream, now: i64, head: &[u8], tail: &[u8]) {
        // Strictly increasing within the stream, as one reader's clock.
        let last = &mut self.last_ns[stream as usize];
        let ns = now.max(last.saturating_add(1));
        *last = ns;
        let offset = self.len;
        if self
            .index
            .last()
            .is_none_or(|mark| offset >= mark.offset + INDEX_STRIDE)
        {
            self.index.push(Mark {
                offset,
                line: self.lines,
                max_before: self.max_ns,
            });
        }
        self.max_ns = self.max_ns.max(ns);
        let before = out.len();
        self.stamp(out, ns);
        out.extend_from_slice(head);
        out.extend_from_slice(tail);
        self.len += (out.len() - before) as u64;
        self.lines += 1;
    }

    fn rollback(&mut self, to: Progress) {
        self.len = to.len;
        self.lines = to.lines;
        self.index.retain(|mark| mark.offset < to.len);
    }

    /// Write `2026-11-27T14:24:42.420363934Z ` formatting the date only when the second changes.
    fn stamp(&mut self, out: &mut Vec<u8>, ns: i64) {
        let second = ns.div_euclid(NANOS_PER_SECOND);
        if second != self.second {
            self.second = second;
            self.second_text = format_second(second);
        }
        out.extend_from_slice(&self.second_text);
        out.extend_from_slice(&fraction(ns));
        out.push(b' ');
    }
}

/// One in-flight log request.
struct Reader {
    buffer: Arc<LogBuffer>,
    /// Only lines stamped at or after this (the `sinceTime`/`sinceSeconds` bound).
    since: Option<[u8; TS_LEN]>,
    progress: watch::Receiver<Progress>,
    pos: u64,
    /// Where a non-follow request stops: the end of the log when it was made.
    end: Option<u64>,
    timestamps: bool,
    bytes_left: Option<u64>,
    lines_left: Option<u64>,
    deadline: Option<Instant>,
    done: bool,
}

impl Reader {
    async fn next_batch(&mut self) -> Option<Bytes> {
        loop {
            if self.done || self.deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            let progress = *self.progress.borrow_and_update();
            let end = self.end.unwrap_or(progress.len);
            if self.pos < end {
                let chunk = match self.buffer.read_records(self.pos, end) {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        tracing::warn!(%error, "failed to read container log; ending the log stream");
                        return None;
                    }
                };
                self.pos += chunk.len() as u64;
                let batch = self.render(chunk);
                if !batch.is_empty() {
                    return Some(batch);
                }
                continue;
            }
            if self.end.is_some() || progress.closed {
                return None;
            }
            let changed = self.progress.changed();
            match self.deadline {
                Some(deadline) => tokio::select! {
                    result = changed => result.ok()?,
                    () = tokio::time::sleep_until(deadline) => return None,
                },
                None => changed.await.ok()?,
            }
        }
    }

    /// Turn stored records into what the client asked for, applying the limits.
    fn render(&mut self, chunk: Vec<u8>) -> Bytes {
        if self.timestamps
            && self.since.is_none()
            && self.bytes_left.is_none()
            && self.lines_left.is_none()
        {
            return Bytes::from(chunk);
        }
        let mut out = Vec::with_capacity(chunk.len());
        for record in chunk.split_inclusive(|&b| b == b'\n') {
            if let Some(since) = &self.since
                && record.get(..TS_LEN).is_some_and(|ts| ts < since.as_slice())
            {
                continue;
            }
            let line = if self.timestamps {
                record
            } else {
                record.get(PREFIX_LEN..).unwrap_or_default()
            };
            if let Some(left) = self.bytes_left.as_mut() {
                // Whole lines up to the limit, as measured on a real kubelet.
                match left.checked_sub(line.len() as u64) {
                    Some(rest) => *left = rest,
                    None => {
                        self.done = true;
                        break;
                    }
                }
            }
            out.extend_from_slice(line);
            if let Some(left) = self.lines_left.as_mut() {
                *left -= 1;
                if *left == 0 {
                    self.done = true;
                    break;
                }
            }
        }
        Bytes::from(out)
    }
}

/// Which output stream of the container a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
}

/// The options of a pod log request.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    /// Keep the stream open and deliver lines as they are written.
    pub follow: bool,
    /// Prefix each line with `2026-11-27T14:37:43.424123456Z ` (nine digits, then a space).
    pub timestamps: bool,
    /// Only lines stamped at or after this time TRUNCATED TO WHOLE SECONDS, like the real
    /// server: a reconnect sees the boundary second again.
    pub since_time: Option<jiff::Timestamp>,
    /// Only lines from the last this many seconds (full precision).
    pub since_seconds: Option<i64>,
    /// Only the last this many lines (counted when the request is made).
    pub tail_lines: Option<u64>,
    /// At most this many bytes, whole lines only, timestamp prefixes included.
    pub limit_bytes: Option<u64>,
}

/// How the simulated kubelet ends a follow stream on its own (fault injection).
#[derive(Clone, Debug, Default)]
pub enum LogCut {
    /// Never cut.
    #[default]
    Never,
    /// End a follow stream after delivering this many lines.
    AfterLines(u64),
    /// End each follow stream this long after it started.
    Every(std::time::Duration),
}

/// The earliest time a line may have to be served: `sinceTime` truncated to whole seconds and
/// `sinceSeconds` before `now`, whichever is later.
fn since_bound(query: &LogQuery, now: i64) -> Option<i64> {
    let from_time = query
        .since_time
        .map(|t| t.as_second().saturating_mul(NANOS_PER_SECOND));
    let from_seconds = query
        .since_seconds
        .map(|s| now.saturating_sub(s.saturating_mul(NANOS_PER_SECOND)));
    from_time.max(from_seconds)
}

fn nanos(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn now_ns() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

/// `2026-11-27T14:24:42` for a Unix second.
fn format_second(second: i64) -> [u8; 19] {
    let time = jiff::Timestamp::from_second(second).unwrap_or_default();
    let text = time.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let mut out = [b'0'; 19];
    let len = text.len().min(out.len());
    out[..len].copy_from_slice(&text.as_bytes()[..len]);
    out
}

/// `.420363934Z`: always nine digits, like the kubelet's RFC3339NanoFixed.
fn fraction(ns: i64) -> [u8; 11] {
    let mut out = [b'.', 0, 0, 0, 0, 0, 0, 0, 0, 0, b'Z'];
    let mut rest = ns.rem_euclid(NANOS_PER_SECOND);
    for digit in out[1..10].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out
}

/// The full 30-byte timestamp for a time in nanoseconds.
fn format_ts(ns: i64) -> [u8; TS_LEN] {
    let mut out = [0; TS_LEN];
    out[..19].copy_from_slice(&format_second(ns.div_euclid(NANOS_PER_SECOND)));
    out[19..].copy_from_slice(&fraction(ns));
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    fn buffer() -> (tempfile::TempDir, Arc<LogBuffer>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let buffer = LogBuffer::new(dir.path()).expect("log buffer");
        (dir, buffer)
    }

    fn query() -> LogQuery {
        LogQuery::default()
    }

    async fn read_all(buffer: &Arc<LogBuffer>, query: LogQuery) -> String {
        let stream = buffer.read(query, LogCut::Never);
        let chunks: Vec<Bytes> = tokio::time::timeout(BOUND, stream.collect())
            .await
            .expect("log stream ended within the bound");
        String::from_utf8(chunks.concat()).expect("utf-8 log")
    }

    /// Nanoseconds of a time given as text, for placing lines.
    fn at(text: &str) -> i64 {
        let time: jiff::Timestamp = text.parse().expect("timestamp");
        i64::try_from(time.as_nanosecond()).expect("in range")
    }

    fn is_kubelet_timestamp(ts: &str) -> bool {
        let bytes = ts.as_bytes();
        ts.len() == TS_LEN
            && bytes[19] == b'.'
            && bytes[29] == b'Z'
            && bytes[20..29].iter().all(u8::is_ascii_digit)
            && ts.parse::<jiff::Timestamp>().is_ok()
    }

    #[tokio::test]
    async fn timestamps_have_the_kubelet_format_and_strictly_increase_per_stream() {
        let (_dir, buffer) = buffer();
        buffer.append(LogStream::Stdout, b"out-1\n");
        buffer.append(LogStream::Stderr, b"err-1\n");
        // Same instant for many lines: still strictly increasing.
        buffer.append_at(LogStream::Stdout, b"a\nb\nc\n", at("2026-11-27T14:24:42Z"));
        buffer.close();
        let text = read_all(
            &buffer,
            LogQuery {
                timestamps: true,
                ..query()
            },
        )
        .await;
        let lines: Vec<(&str, &str)> = text
            .lines()
            .map(|line| line.split_once(' ').expect("timestamp, space, line"))
            .collect();
        let contents: Vec<&str> = lines.iter().map(|(_, line)| *line).collect();
        assert_eq!(contents, ["out-1", "err-1", "a", "b", "c"]);
        for (ts, _) in &lines {
            assert!(
                is_kubelet_timestamp(ts),
                "{ts} is not RFC3339Nano with 9 digits"
            );
        }
        // Fixed width: text order is time order. stdout's own stamps increase; stderr's reader
        // lags, so its line is stamped before the stdout line written ahead of it.
        let stdout: Vec<&str> = [0, 2, 3, 4].iter().map(|&i| lines[i].0).collect();
        assert!(stdout.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(lines[1].0 < lines[0].0, "{text}");
    }

    #[tokio::test]
    async fn since_time_filters_each_line_of_interleaved_streams_on_its_own() {
        let (_dir, buffer) = buffer();
        // As containerd writes them: file order differs from timestamp order.
        buffer.append_at(
            LogStream::Stdout,
            b"out-1\n",
            at("2026-11-27T14:24:42.999Z"),
        );
        buffer.append_at(
            LogStream::Stdout,
            b"out-2\n",
            at("2026-11-27T14:24:43.002Z"),
        );
        buffer.append_at(
            LogStream::Stderr,
            b"err-1\n",
            at("2026-11-27T14:24:42.998Z"),
        );
        buffer.append_at(
            LogStream::Stdout,
            b"out-3\n",
            at("2026-11-27T14:24:43.500Z"),
        );
        buffer.append_at(
            LogStream::Stderr,
            b"err-2\n",
            at("2026-11-27T14:24:43.001Z"),
        );
        buffer.close();
        let all = read_all(&buffer, query()).await;
        assert_eq!(
            all, "out-1\nout-2\nerr-1\nout-3\nerr-2\n",
            "write order kept"
        );
        let since = LogQuery {
            since_time: Some("2026-11-27T14:24:43.7Z".parse().expect("time")),
            ..query()
        };
        // Truncated to :43, then each line on its own: err-1 (stamped :42.998) is left out
        // although it comes after a line that is served.
        assert_eq!(read_all(&buffer, since).await, "out-2\nout-3\nerr-2\n");
    }

    #[test]
    fn timestamp_keeps_trailing_zeros_like_the_kubelet() {
        // fixtures/kube/41-log-follow-live.raw: 2026-11-27T14:25:47.829007500Z
        let ns = at("2026-11-27T14:25:47.8290075Z");
        assert_eq!(&format_ts(ns), b"2026-11-27T14:25:47.829007500Z");
    }

    #[tokio::test]
    async fn partial_last_line_is_held_until_close_then_served_without_newline() {
        let (_dir, buffer) = buffer();
        buffer.append(LogStream::Stdout, b"line-1\npartial-");
        buffer.append(LogStream::Stdout, b"no-newline");
        assert!(buffer.has_output());
        assert_eq!(read_all(&buffer, query()).await, "line-1\n");
        buffer.close();
        assert_eq!(
            read_all(&buffer, query()).await,
            "line-1\npartial-no-newline"
        );
        buffer.append(LogStream::Stdout, b"after close\n");
        assert_eq!(
            read_all(&buffer, query()).await,
            "line-1\npartial-no-newline"
        );
    }

    #[tokio::test]
    async fn streams_keep_their_own_unfinished_lines() {
        let (_dir, buffer) = buffer();
        buffer.append(LogStream::Stdout, b"progress ");
        buffer.append(LogStream::Stderr, b"Error: boom\n");
        buffer.append(LogStream::Stdout, b"done\n");
        buffer.append(LogStream::Stdout, b"out-partial");
        buffer.append(LogStream::Stderr, b"err-partial");
        buffer.close();
        assert_eq!(
            read_all(&buffer, query()).await,
            "Error: boom\nprogress done\nout-partial\nerr-partial"
        );
    }

    #[tokio::test]
    async fn follow_delivers_each_line_live_and_ends_after_close() {
        let (_dir, buffer) = buffer();
        assert!(!buffer.has_output());
        let mut stream = Box::pin(buffer.read(
            LogQuery {
                follow: true,
                ..query()
            },
            LogCut::Never,
        ));
        for line in ["tick-1\n", "tick-2\n"] {
            buffer.append(LogStream::Stdout, line.as_bytes());
            let got = tokio::time::timeout(BOUND, stream.next())
                .await
                .expect("line arrives");
            assert_eq!(got.as_deref(), Some(line.as_bytes()));
        }
        buffer.append(LogStream::Stdout, b"last");
        buffer.close();
        let got = tokio::time::timeout(BOUND, stream.next())
            .await
            .expect("partial line arrives");
        assert_eq!(got.as_deref(), Some(&b"last"[..]));
        let end = tokio::time::timeout(BOUND, stream.next())
            .await
            .expect("stream ends");
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn since_time_is_truncated_to_whole_seconds() {
        let (_dir, buffer) = buffer();
        buffer.append_at(
            LogStream::Stdout,
            b"early\n",
            at("2026-11-27T14:24:42.900Z"),
        );
        buffer.append_at(
            LogStream::Stdout,
            b"line-3\n",
            at("2026-11-27T14:24:43.424Z"),
        );
        buffer.append_at(
            LogStream::Stdout,
            b"line-4\n",
            at("2026-11-27T14:24:43.926Z"),
        );
        buffer.append_at(
            LogStream::Stdout,
            b"line-5\n",
            at("2026-11-27T14:24:44.428Z"),
        );
        buffer.close();
        let since = |text: &str| LogQuery {
            since_time: Some(text.parse().expect("time")),
            ..query()
        };
        // As measured: sinceTime=...:43.5Z still returns the line stamped :43.424.
        assert_eq!(
            read_all(&buffer, since("2026-11-27T14:24:43.5Z")).await,
            "line-3\nline-4\nline-5\n"
        );
        assert_eq!(
            read_all(&buffer, since("2026-11-27T14:24:44Z")).await,
            "line-5\n"
        );
        assert_eq!(read_all(&buffer, since("2026-11-27T14:24:45Z")).await, "");
    }

    #[tokio::test]
    async fn since_seconds_counts_back_from_now() {
        let (_dir, buffer) = buffer();
        buffer.append_at(
            LogStream::Stdout,
            b"old\n",
            now_ns() - 120 * NANOS_PER_SECOND,
        );
        buffer.append(LogStream::Stdout, b"new\n");
        let recent = LogQuery {
            since_seconds: Some(60),
            ..query()
        };
        assert_eq!(read_all(&buffer, recent).await, "new\n");
    }

    #[tokio::test]
    async fn tail_lines_returns_the_last_lines() {
        let (_dir, buffer) = buffer();
        for i in 1..=10 {
            buffer.append(LogStream::Stdout, format!("line-{i}\n").as_bytes());
        }
        let tail = |n| LogQuery {
            tail_lines: Some(n),
            ..query()
        };
        assert_eq!(read_all(&buffer, tail(2)).await, "line-9\nline-10\n");
        assert_eq!(read_all(&buffer, tail(0)).await, "");
        assert_eq!(read_all(&buffer, tail(100)).await.lines().count(), 10);
    }

    #[tokio::test]
    async fn limit_bytes_returns_whole_lines_up_to_the_limit() {
        let (_dir, buffer) = buffer();
        buffer.append(LogStream::Stdout, b"line-1\nline-2\nline-3\n");
        let limit = |n, timestamps| LogQuery {
            limit_bytes: Some(n),
            timestamps,
            ..query()
        };
        assert_eq!(
            read_all(&buffer, limit(20, false)).await,
            "line-1\nline-2\n"
        );
        assert_eq!(
            read_all(&buffer, limit(21, false)).await,
            "line-1\nline-2\nline-3\n"
        );
        // The prefix counts: 31 + 7 bytes per line.
        assert_eq!(read_all(&buffer, limit(80, true)).await.lines().count(), 2);
    }

    #[tokio::test]
    async fn cut_after_lines_ends_a_follow_stream_while_the_container_runs() {
        let (_dir, buffer) = buffer();
        buffer.append(LogStream::Stdout, b"1\n2\n3\n");
        let follow = LogQuery {
            follow: true,
            ..query()
        };
        let stream = buffer.read(follow.clone(), LogCut::AfterLines(2));
        let chunks: Vec<Bytes> = tokio::time::timeout(BOUND, stream.collect())
            .await
            .expect("cut");
        assert_eq!(chunks.concat(), b"1\n2\n");
        // Reconnecting carries on; the buffer was never closed.
        let again = Box::pin(buffer.read(follow, LogCut::AfterLines(3)));
        let chunks: Vec<Bytes> = tokio::time::timeout(BOUND, again.collect())
            .await
            .expect("cut");
        assert_eq!(chunks.concat(), b"1\n2\n3\n");
    }

    #[tokio::test]
    async fn cut_every_ends_an_idle_follow_stream() {
        let (_dir, buffer) = buffer();
        buffer.append(LogStream::Stdout, b"only\n");
        let follow = LogQuery {
            follow: true,
            ..query()
        };
        let stream = buffer.read(follow, LogCut::Every(Duration::from_millis(50)));
        let chunks: Vec<Bytes> = tokio::time::timeout(BOUND, stream.collect())
            .await
            .expect("cut");
        assert_eq!(chunks.concat(), b"only\n");
    }

    #[tokio::test]
    async fn large_log_keeps_memory_small_and_serves_tail_and_since() {
        let (_dir, buffer) = buffer();
        let start = at("2026-11-27T14:00:00Z");
        let line = [b'x'; 199];
        let mut chunk = Vec::new();
        for _ in 0..320 {
            chunk.extend_from_slice(&line);
            chunk.push(b'\n');
        }
        // 64 MiB in 64 KiB pipe-sized appends, one simulated second per 10 appends.
        let appends = 64 * 1024 * 1024 / chunk.len();
        for i in 0..appends {
            let now = start + (i as i64 / 10) * NANOS_PER_SECOND;
            buffer.append_at(LogStream::Stdout, &chunk, now);
        }
        buffer.append_at(
            LogStream::Stdout,
            b"the end\n",
            start + 3600 * NANOS_PER_SECOND,
        );
        buffer.close();
        assert!(
            buffer.memory_bytes() < 128 * 1024,
            "bookkeeping for 64 MiB should stay small, was {} bytes",
            buffer.memory_bytes()
        );
        let tail = LogQuery {
            tail_lines: Some(2),
            ..query()
        };
        let expected_tail = format!("{}\nthe end\n", String::from_utf8_lossy(&line));
        assert_eq!(read_all(&buffer, tail).await, expected_tail);
        let since = LogQuery {
            since_time: Some(
                jiff::Timestamp::from_second(start / NANOS_PER_SECOND + 50).expect("time"),
            ),
            ..query()
        };
        let lines_since = read_all(&buffer, since).await.lines().count();
        let total_lines = appends * 320 + 1;
        assert_eq!(lines_since, total_lines - 500 * 320);
    }

    #[tokio::test]
    async fn endless_line_is_stored_in_bounded_pieces() {
        let (_dir, buffer) = buffer();
        let piece = vec![b'z'; 64 * 1024];
        for _ in 0..(MAX_LINE / piece.len() + 1) {
            buffer.append(LogStream::Stdout, &piece);
        }
        assert!(
            buffer.memory_bytes() < MAX_LINE,
            "the unfinished line was flushed"
        );
        buffer.close();
        let text = read_all(&buffer, query()).await;
        assert_eq!(text.len(), MAX_LINE + piece.len() + 1);
        assert_eq!(text.find('\n'), Some(MAX_LINE));
    }
}
