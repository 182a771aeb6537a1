//! Splitting the raw bytes of one `timestamps=true` connection into entries, stripping each
//! entry's stamp and delivering the ones the [`LogCursor`] admits. A line too long to hold is
//! streamed as it arrives; text without a stamp is noted as the kubelet's own words, never output.

use jiff::Timestamp;

use super::cursor::{Admit, LogCursor};

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
                    cursor.wholly_delivered();
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
            if finished {
                cursor.wholly_delivered();
            } else {
                cursor.partly_delivered(state.pos.max(state.from));
            }
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
            cursor.wholly_delivered();
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

#[cfg(test)]
impl StampedLines {
    fn with_max_pending(max: usize) -> Self {
        Self {
            max_pending: Some(max),
            ..Self::default()
        }
    }

    /// One connection's `conn` chunks through these lines, ending `complete` or not: the text
    /// delivered.
    pub(super) fn connection(
        &mut self,
        conn: &[&str],
        complete: bool,
        cursor: &mut LogCursor,
    ) -> String {
        let mut out = Vec::new();
        for chunk in conn {
            self.feed(chunk.as_bytes(), cursor, &mut out);
        }
        self.end(complete, cursor, &mut out);
        String::from_utf8(out).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conn: &[&str], complete: bool, cursor: &mut LogCursor) -> String {
        StampedLines::default().connection(conn, complete, cursor)
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
    fn a_long_line_is_streamed_and_resumed_where_a_cut_stopped_it() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.100000000Z";
        let mut lines = StampedLines::with_max_pending(8);
        let first = lines.connection(&[&format!("{t} abcdefghij"), "klmn"], false, &mut cursor);
        assert_eq!(
            first, "abcdefghijklmn",
            "streamed before its end, not held whole"
        );
        assert!(lines.pending.is_empty());
        let checkpoint = cursor.checkpoint().unwrap();
        assert!(checkpoint.ends_with("/1+14"), "{checkpoint}");
        cursor.reconnect();
        let mut lines = StampedLines::with_max_pending(8);
        let second = lines.connection(
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
        assert!(
            !cursor.checkpoint().unwrap().contains('+'),
            "the cut line is whole now"
        );
    }

    #[test]
    fn a_checkpoint_inside_a_long_line_survives_a_restart() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.100000000Z";
        let mut lines = StampedLines::with_max_pending(4);
        lines.connection(&[&format!("{t} 0123456789")], false, &mut cursor);
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
        let out = lines.connection(
            &[&format!("{t} 01234"), "56789\n2026-11-27T14:37:44Z new\n"],
            false,
            &mut cursor,
        );
        assert_eq!(out, "new\n");
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
}
