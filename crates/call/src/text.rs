//! Untrusted text, made safe to show: one definition of what must be escaped (shared with the
//! audit log's sanitizer) and one way to cut text at a byte budget.

/// Characters that never appear raw in a stored field or a printed line: controls, backslash,
/// and invisible or bidi-reordering characters that could disguise text on a terminal.
pub fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            // soft hyphen, Arabic letter mark
            '\u{ad}' | '\u{61c}'
            // Mongolian vowel separator, zero-width space/joiners, LRM, RLM
            | '\u{180e}' | '\u{200b}'..='\u{200f}'
            // line and paragraph separators, bidi embeddings and overrides
            | '\u{2028}'..='\u{202e}'
            // word joiner, invisible operators, bidi isolates, deprecated format characters
            | '\u{2060}'..='\u{206f}'
            // byte order mark / zero-width no-break space, interlinear annotation
            | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        )
}

/// Escapes control characters (including ESC, CR, NUL), invisible and bidi-reordering
/// characters, and invalid UTF-8 (as `\xNN`). A backslash is left as it is.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c != '\\' && needs_escape(c) {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// An error and its causes on one line: `what: cause: cause`, leaving out a cause the text
/// before it already quotes (many errors repeat their source in their own message).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut cause = error.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !last.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        last = t;
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_bidi_and_invalid_utf8_but_not_backslash() {
        assert_eq!(
            escape(b"a\x1b[31m\\b\r\xff\xe2\x80\xae"),
            "a\\u{1b}[31m\\b\\r\\xff\\u{202e}"
        );
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("ab", 10), "ab");
    }

    #[test]
    fn chain_skips_causes_already_quoted() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "open: disk full",
            Some(Box::new(E(
                "disk full",
                Some(Box::new(E("errno 28", None))),
            ))),
        );
        assert_eq!(super::chain(&e), "open: disk full: errno 28");
        assert_eq!(super::chain(&E("alone", None)), "alone");
    }
}
