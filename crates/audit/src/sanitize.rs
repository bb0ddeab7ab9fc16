//! The one way free text enters an audit record.
//!
//! Text in a record comes from extensions, clients and manifests, so it is hostile: a newline
//! could start a forged record, an ESC sequence could rewrite an operator's terminal, a bidi
//! override could make a line read differently than it is stored, and a megabyte of it could
//! make a record too large to handle. [`sanitize`] escapes all of that and caps the length, and
//! [`is_clean`] is how a reader checks that text from a log file was sanitized.

use std::fmt::{self, Write as _};

/// Most bytes one text field of a record may hold, the truncation marker included.
///
/// Large enough for any request id, host name, path or error message worth reading; small
/// enough that a record (eight text fields at most) stays far below [`crate::MAX_LINE_BYTES`]
/// even after JSON escaping doubles every byte.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Room kept at the end of a truncated field for the marker: `…[truncated N bytes]` is at most
/// 3 + 11 + 20 + 7 = 41 bytes for any `u64` N.
const MARKER_RESERVE: usize = 48;

/// Escapes control characters and other characters that can change how a line is displayed or
/// split, and caps the result at [`MAX_FIELD_BYTES`] bytes.
///
/// - `\n`, `\r`, `\t`, NUL and backslash become `\n`, `\r`, `\t`, `\0` and `\\`;
/// - every other control character (C0, DEL, C1 such as the 8-bit CSI), the Unicode line and
///   paragraph separators, bidirectional controls, zero-width characters and the BOM become
///   `\u{XX}` (lowercase hex, as Rust's `escape_unicode` writes them);
/// - if the escaped text is longer than [`MAX_FIELD_BYTES`], it is cut on a character
///   boundary and `…[truncated N bytes]` is appended, where N counts the bytes of the
///   *original* text that were dropped.
///
/// The result never contains a character that [`is_clean`] rejects, and is never longer than
/// [`MAX_FIELD_BYTES`].
pub fn sanitize(text: &str) -> String {
    // Most text (ids, names, hashes) has nothing to escape and fits: copied as it is.
    if text.len() <= MAX_FIELD_BYTES - MARKER_RESERVE && plain(text) {
        return text.to_owned();
    }
    sanitize_display(&text)
}

/// Printable ASCII without backslashes: stored as it is.
fn plain(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
}

/// [`sanitize`] for anything that implements `Display` (ids, versions, errors), without first
/// building the whole string: past the cap, the remaining output is only counted.
pub fn sanitize_display(value: &dyn fmt::Display) -> String {
    let mut s = Sanitizer::default();
    // A Display impl may return an error; what it wrote until then is kept.
    let _ = write!(s, "{value}");
    s.finish()
}

/// True if `text` could have come out of [`sanitize`]: short enough and free of every character
/// that [`sanitize`] escapes (backslash excepted, since escapes are written with it).
pub fn is_clean(text: &str) -> bool {
    text.len() <= MAX_FIELD_BYTES && !text.chars().any(|c| c != '\\' && needs_escape(c))
}

pub use warden_call::text::needs_escape;

#[derive(Default)]
struct Sanitizer {
    out: String,
    /// Input bytes consumed so far.
    input: usize,
    /// `out.len()` and `input` at the last character boundary where the output still left room
    /// for the marker.
    keep_out: usize,
    keep_in: usize,
    /// The output went over the cap: from here on input is only counted.
    over: bool,
}

impl Sanitizer {
    fn push(&mut self, c: char) {
        match c {
            '\n' => self.out.push_str("\\n"),
            '\r' => self.out.push_str("\\r"),
            '\t' => self.out.push_str("\\t"),
            '\0' => self.out.push_str("\\0"),
            '\\' => self.out.push_str("\\\\"),
            c if needs_escape(c) => {
                // Writing to a String cannot fail.
                let _ = write!(self.out, "\\u{{{:x}}}", u32::from(c));
            }
            c => self.out.push(c),
        }
        self.input += c.len_utf8();
        if self.out.len() <= MAX_FIELD_BYTES - MARKER_RESERVE {
            self.keep_out = self.out.len();
            self.keep_in = self.input;
        } else if self.out.len() > MAX_FIELD_BYTES {
            self.over = true;
        }
    }

    fn finish(mut self) -> String {
        if self.over {
            let dropped = self.input - self.keep_in;
            self.out.truncate(self.keep_out);
            let _ = write!(self.out, "…[truncated {dropped} bytes]");
        }
        self.out
    }
}

impl fmt::Write for Sanitizer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.over {
            self.input += s.len();
            return Ok(());
        }
        // Fast path: printable ASCII without backslashes is stored as is, and a run that still
        // leaves room for the marker needs no per-character bookkeeping (ids, hashes, versions).
        if plain(s) && self.out.len() + s.len() <= MAX_FIELD_BYTES - MARKER_RESERVE {
            self.out.push_str(s);
            self.input += s.len();
            self.keep_out = self.out.len();
            self.keep_in = self.input;
            return Ok(());
        }
        for (i, c) in s.char_indices() {
            self.push(c);
            if self.over {
                self.input += s.len() - i - c.len_utf8();
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(sanitize("hello, wörld → ok"), "hello, wörld → ok");
        assert!(is_clean("hello, wörld → ok"));
    }

    #[test]
    fn escapes() {
        assert_eq!(sanitize("a\nb\r\tc\0"), "a\\nb\\r\\tc\\0");
        assert_eq!(
            sanitize("\u{1b}[2J\u{7f}\u{9b}"),
            "\\u{1b}[2J\\u{7f}\\u{9b}"
        );
        assert_eq!(sanitize("x\u{202e}y\u{2028}"), "x\\u{202e}y\\u{2028}");
        assert_eq!(sanitize(r"C:\dir"), r"C:\\dir");
        for s in ["a\nb", "\u{1b}", "\u{202e}", "\u{feff}"] {
            assert!(!is_clean(s), "{s:?}");
            assert!(is_clean(&sanitize(s)));
        }
    }

    #[test]
    fn truncates_on_a_char_boundary_with_marker() {
        let long = "é".repeat(MAX_FIELD_BYTES); // 2 bytes each
        let s = sanitize(&long);
        assert!(s.len() <= MAX_FIELD_BYTES, "{}", s.len());
        let kept = s.find('…').unwrap();
        assert_eq!(
            &s[kept..],
            format!("…[truncated {} bytes]", 2 * MAX_FIELD_BYTES - kept)
        );
        assert!(is_clean(&s));
    }

    #[test]
    fn exactly_at_the_cap_is_not_truncated() {
        let s = "a".repeat(MAX_FIELD_BYTES);
        assert_eq!(sanitize(&s), s);
        let s = "a".repeat(MAX_FIELD_BYTES + 1);
        let out = sanitize(&s);
        assert!(out.ends_with(&format!(
            "…[truncated {} bytes]",
            MAX_FIELD_BYTES + 1 - (MAX_FIELD_BYTES - MARKER_RESERVE)
        )));
        assert!(out.len() <= MAX_FIELD_BYTES);
    }

    #[test]
    fn escapes_count_toward_the_cap() {
        let s = "\u{1b}".repeat(MAX_FIELD_BYTES);
        let out = sanitize(&s);
        assert!(out.len() <= MAX_FIELD_BYTES);
        assert!(out.starts_with("\\u{1b}\\u{1b}"));
        let kept = (MAX_FIELD_BYTES - MARKER_RESERVE) / "\\u{1b}".len();
        assert!(out.ends_with(&format!("…[truncated {} bytes]", MAX_FIELD_BYTES - kept)));
    }

    #[test]
    fn display_values_are_sanitized_too() {
        let e = std::io::Error::other("bad\nthing");
        assert_eq!(sanitize_display(&e), "bad\\nthing");
    }
}
