//! A bounded text buffer that keeps the end of what was written to it.
//!
//! Used for the summary and the stderr tail. The kept text is a pure function of everything
//! written (the last `cap` bytes, starting on a character boundary), never of how the writes
//! were batched, which keeps the parser's result independent of chunking.

/// Keeps the last `cap` bytes of the text pushed into it.
#[derive(Debug, Clone)]
pub(crate) struct TailBuffer {
    buf: String,
    cap: usize,
    /// Text was dropped from the front at some point (the total ever written exceeded `cap`).
    dropped: bool,
}

impl TailBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: String::new(),
            cap,
            dropped: false,
        }
    }

    pub(crate) fn push_str(&mut self, text: &str) {
        if text.len() > self.cap {
            // Only the end of an oversized write can survive: do not copy the rest first.
            self.buf.clear();
            self.buf
                .push_str(&text[ceil_boundary(text, text.len() - self.cap)..]);
            self.dropped = true;
            return;
        }
        self.buf.push_str(text);
        // Drain only when twice over the bound: amortised O(1) per byte, not a memmove per push.
        if self.buf.len() > 2 * self.cap {
            let cut = ceil_boundary(&self.buf, self.buf.len() - self.cap);
            self.buf.drain(..cut);
            self.dropped = true;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(self.cap);
        self.dropped = false;
    }

    /// The kept text and whether anything before it was dropped.
    pub(crate) fn tail(&self) -> (&str, bool) {
        let cut = ceil_boundary(&self.buf, self.buf.len().saturating_sub(self.cap));
        (&self.buf[cut..], self.dropped || cut > 0)
    }

    pub(crate) fn retained_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

/// The first character boundary at or after `index`.
fn ceil_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate_to(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_cap_bytes_whatever_the_batching() {
        let text = "0123456789abcdefghij";
        let mut whole = TailBuffer::new(8);
        whole.push_str(text);
        let mut bytewise = TailBuffer::new(8);
        for i in 0..text.len() {
            bytewise.push_str(&text[i..=i]);
        }
        assert_eq!(whole.tail(), ("cdefghij", true));
        assert_eq!(bytewise.tail(), ("cdefghij", true));
    }

    #[test]
    fn never_starts_inside_a_character() {
        let mut tail = TailBuffer::new(5);
        tail.push_str("aé日本");
        assert_eq!(tail.tail(), ("本", true));
    }

    #[test]
    fn reports_nothing_dropped_under_the_bound() {
        let mut tail = TailBuffer::new(8);
        tail.push_str("abc");
        assert_eq!(tail.tail(), ("abc", false));
        tail.clear();
        assert!(tail.is_empty());
    }

    #[test]
    fn truncate_to_respects_character_boundaries() {
        assert_eq!(truncate_to("日本", 4), "日");
        assert_eq!(truncate_to("abc", 10), "abc");
    }
}
