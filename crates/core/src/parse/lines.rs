//! Bytes in any chunking → complete lines, with a bound on the length of one line.
//!
//! The pod log arrives in chunks that ignore line boundaries and may cut a UTF-8 character in
//! two. [`LineSplitter`] reassembles lines byte-exactly before decoding, so the lines it yields do
//! not depend on where the chunks were cut. A line longer than the bound keeps its first
//! `max_line` bytes and is flagged as truncated; the rest is skipped without being stored.

use std::borrow::Cow;

/// Default bound on one line: 1 MiB. OpenCode's largest lines are `tool_use` events carrying a
/// tool's (already truncated) output, far below this.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The buffer of a partial line is shrunk back to this after a long line, so an idle splitter
/// does not keep a megabyte because one line once was that long.
const IDLE_CAPACITY: usize = 64 * 1024;

/// One complete line, without its `\n` or `\r\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine<'a> {
    /// The line's text; invalid UTF-8 is replaced with U+FFFD.
    pub text: &'a str,
    /// The line was longer than the bound and `text` holds only its beginning.
    pub truncated: bool,
}

/// Splits a byte stream into lines, whatever the chunking, with bounded memory.
#[derive(Debug)]
pub struct LineSplitter {
    /// Bytes of the current, unterminated line: at most `max_line + 1` (room for a `\r`).
    partial: Vec<u8>,
    /// The current line overflowed `partial`; its remaining bytes are being skipped.
    overflow: bool,
    max_line: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl LineSplitter {
    /// A splitter with the default line bound, [`MAX_LINE_BYTES`].
    pub fn new() -> Self {
        Self::with_max_line(MAX_LINE_BYTES)
    }

    /// A splitter that truncates lines longer than `max_line` bytes (at least 1).
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            overflow: false,
            max_line: max_line.max(1),
        }
    }

    /// Feeds one chunk and calls `on_line` for every line it completes, in order.
    pub fn push(&mut self, mut chunk: &[u8], mut on_line: impl FnMut(RawLine<'_>)) {
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&chunk[..newline], &chunk[newline + 1..]);
            if self.partial.is_empty() && !self.overflow {
                // The whole line is in this chunk: decode it in place, no copy.
                emit(head, false, self.max_line, &mut on_line);
            } else {
                self.buffer(head);
                emit(&self.partial, self.overflow, self.max_line, &mut on_line);
                self.reset();
            }
            chunk = rest;
        }
        self.buffer(chunk);
    }

    /// Ends the stream: yields the last line if it had no terminating newline.
    pub fn finish(&mut self, mut on_line: impl FnMut(RawLine<'_>)) {
        if !self.partial.is_empty() || self.overflow {
            emit(&self.partial, self.overflow, self.max_line, &mut on_line);
        }
        self.reset();
    }

    /// Heap bytes held, for tests and metrics that prove memory stays bounded.
    pub fn retained_bytes(&self) -> usize {
        self.partial.capacity()
    }

    fn buffer(&mut self, bytes: &[u8]) {
        let room = self.max_line + 1 - self.partial.len();
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.overflow = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn reset(&mut self) {
        self.partial.clear();
        self.partial.shrink_to(IDLE_CAPACITY);
        self.overflow = false;
    }
}

/// Decodes one line and hands it over. Truncation is decided on the whole line's bytes, so the
/// result is the same whether the line came in one chunk or many.
fn emit(bytes: &[u8], overflow: bool, max_line: usize, on_line: &mut impl FnMut(RawLine<'_>)) {
    let mut line = bytes;
    let mut truncated = overflow;
    if !truncated && let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    if line.len() > max_line {
        line = &line[..max_line];
        truncated = true;
    }
    let text: Cow<'_, str> = String::from_utf8_lossy(line);
    on_line(RawLine {
        text: &text,
        truncated,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(splitter: &mut LineSplitter, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| lines.push((l.text.to_owned(), l.truncated)));
        }
        splitter.finish(|l| lines.push((l.text.to_owned(), l.truncated)));
        lines
    }

    fn plain(lines: &[&str]) -> Vec<(String, bool)> {
        lines.iter().map(|l| ((*l).to_owned(), false)).collect()
    }

    #[test]
    fn joins_lines_cut_across_chunks_and_strips_crlf() {
        let mut s = LineSplitter::new();
        let lines = split_all(&mut s, &[b"one\r", b"\ntw", b"o\nthr", b"ee"]);
        assert_eq!(lines, plain(&["one", "two", "three"]));
    }

    #[test]
    fn keeps_empty_lines_and_yields_no_phantom_last_line() {
        let mut s = LineSplitter::new();
        assert_eq!(split_all(&mut s, &[b"a\n\nb\n"]), plain(&["a", "", "b"]));
    }

    #[test]
    fn reassembles_a_utf8_character_cut_between_chunks() {
        let text = "héllo 🎉\n".as_bytes();
        let mut s = LineSplitter::new();
        let lines = split_all(&mut s, &[&text[..2], &text[2..8], &text[8..]]);
        assert_eq!(lines, plain(&["héllo 🎉"]));
    }

    #[test]
    fn replaces_invalid_utf8() {
        let mut s = LineSplitter::new();
        assert_eq!(split_all(&mut s, &[b"a\xffb\n"]), plain(&["a\u{fffd}b"]));
    }

    #[test]
    fn truncates_long_lines_the_same_way_for_any_chunking() {
        let whole = split_all(&mut LineSplitter::with_max_line(4), &[b"abcdefgh\nxy\n"]);
        let bytewise: Vec<&[u8]> = b"abcdefgh\nxy\n".chunks(1).collect();
        let split = split_all(&mut LineSplitter::with_max_line(4), &bytewise);
        let expected = vec![("abcd".to_owned(), true), ("xy".to_owned(), false)];
        assert_eq!(whole, expected);
        assert_eq!(split, expected);
    }

    #[test]
    fn a_line_exactly_at_the_bound_with_crlf_is_not_truncated() {
        let chunks: [&[u8]; 2] = [b"abcd\r", b"\n"];
        assert_eq!(
            split_all(&mut LineSplitter::with_max_line(4), &chunks),
            plain(&["abcd"])
        );
    }

    #[test]
    fn an_overlong_unterminated_line_is_yielded_truncated_at_finish() {
        let mut s = LineSplitter::with_max_line(3);
        assert_eq!(
            split_all(&mut s, &[b"abcdef", b"gh"]),
            vec![("abc".to_owned(), true)]
        );
    }

    #[test]
    fn memory_stays_bounded_by_the_line_limit() {
        let mut s = LineSplitter::with_max_line(1000);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..100 {
            s.push(&chunk, |_| {});
            assert!(
                s.retained_bytes() <= 2 * 1001,
                "retained {}",
                s.retained_bytes()
            );
        }
    }
}
