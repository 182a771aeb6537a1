//! ANSI escape stripping for OpenCode's stderr (`\x1b[91m\x1b[1mError: \x1b[0m...`).
//!
//! Small on purpose: the UI parser and the log path mirror it in JavaScript, so it handles the
//! sequences terminal programs actually emit — CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL` or
//! `ESC ] ... ESC \`), and two-byte escapes (`ESC c`, `ESC ( B`, ...) — and nothing more.

use std::borrow::Cow;

const ESC: char = '\x1b';
const BEL: char = '\x07';

/// Removes ANSI escape sequences (CSI, OSC and two-byte escapes) from `text`.
///
/// Borrows when `text` has no escape character, which is the common case. An unterminated
/// sequence at the end of the text is dropped whole: a half-written colour code is noise, not
/// content.
pub fn strip_ansi(text: &str) -> Cow<'_, str> {
    if !text.contains(ESC) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ESC {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameter bytes 0x30–0x3F, intermediate bytes 0x20–0x2F, one final byte
            // 0x40–0x7E. Any other character ends a malformed sequence and is kept as text.
            Some('[') => {
                while let Some(&c) = chars.peek() {
                    if ('\x20'..='\x3f').contains(&c) {
                        chars.next();
                        continue;
                    }
                    if ('\x40'..='\x7e').contains(&c) {
                        chars.next();
                    }
                    break;
                }
            }
            // OSC (window titles, hyperlinks): ends at BEL or at the string terminator ESC '\'.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == BEL {
                        break;
                    }
                    if c == ESC {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            // Character-set designation takes one more byte: `ESC ( B`.
            Some('(' | ')' | '*' | '+') => {
                chars.next();
            }
            // Any other two-byte escape (`ESC c`, `ESC =`, `ESC 7`, ...), or a lone trailing ESC.
            Some(_) | None => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_opencode_error_colours() {
        let line = "\x1b[91m\x1b[1mError: \x1b[0mSession not found";
        assert_eq!(strip_ansi(line), "Error: Session not found");
    }

    #[test]
    fn borrows_plain_text() {
        assert!(matches!(
            strip_ansi("plain text"),
            Cow::Borrowed("plain text")
        ));
    }

    #[test]
    fn strips_osc_hyperlink_and_title() {
        let link = "\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\ and \x1b]0;title\x07done";
        assert_eq!(strip_ansi(link), "link and done");
    }

    #[test]
    fn strips_cursor_movement_and_charset_escapes() {
        assert_eq!(strip_ansi("a\x1b[2K\x1b[1;31Hb\x1b(Bc\x1bcd"), "abcd");
    }

    #[test]
    fn keeps_text_after_a_malformed_csi() {
        assert_eq!(strip_ansi("\x1b[1é!"), "é!");
    }

    #[test]
    fn drops_unterminated_sequences_at_the_end() {
        assert_eq!(strip_ansi("ok\x1b[31"), "ok");
        assert_eq!(strip_ansi("ok\x1b]0;title"), "ok");
        assert_eq!(strip_ansi("ok\x1b"), "ok");
    }

    #[test]
    fn keeps_multibyte_text_around_escapes() {
        assert_eq!(
            strip_ansi("\x1b[1mhéllo — 日本\x1b[0m 🎉"),
            "héllo — 日本 🎉"
        );
    }
}
