//! Checks on a frame's body before serde_json sees it: UTF-8, then nesting depth by a flat
//! scan (no recursion, so 100 000 `[` cost a loop, not a stack).

use crate::error::ProtocolError;

/// The body as text, or the offset of its first invalid byte.
pub(crate) fn utf8(body: &[u8]) -> Result<&str, ProtocolError> {
    std::str::from_utf8(body).map_err(|e| ProtocolError::NotUtf8 {
        offset: e.valid_up_to(),
    })
}

/// Fails if arrays and objects nest deeper than `limit`.
///
/// Counts `[` and `{` outside strings (escapes skipped). For valid JSON that is exactly the
/// parser's depth at every point; for invalid JSON the parser stops at the first error, which
/// comes no later than where this count is wrong, so serde_json never goes deeper than this.
pub(crate) fn check_depth(text: &str, limit: u32) -> Result<(), ProtocolError> {
    let mut depth: u32 = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(ProtocolError::TooDeep { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_structure_not_strings() {
        assert_eq!(check_depth("[[[]]]", 3), Ok(()));
        assert_eq!(
            check_depth("[[[[]]]]", 3),
            Err(ProtocolError::TooDeep { limit: 3 })
        );
        assert_eq!(check_depth(r#"["[[[[[[", "\"[[[["]"#, 1), Ok(()));
        assert_eq!(
            check_depth(r#"{"a\\":[[1]]}"#, 2),
            Err(ProtocolError::TooDeep { limit: 2 })
        );
        // Closing more than opened never underflows into a large depth.
        assert_eq!(check_depth("]]]]][", 1), Ok(()));
    }

    #[test]
    fn a_hundred_thousand_brackets_are_refused_without_recursion() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(
            check_depth(&deep, 64),
            Err(ProtocolError::TooDeep { limit: 64 })
        );
        let deep = "{\"a\":".repeat(100_000);
        assert_eq!(
            check_depth(&deep, 64),
            Err(ProtocolError::TooDeep { limit: 64 })
        );
    }

    #[test]
    fn invalid_utf8_names_its_offset() {
        assert_eq!(
            utf8(b"{\"a\":\"\xff\"}"),
            Err(ProtocolError::NotUtf8 { offset: 6 })
        );
        // An overlong encoding and a lone surrogate are invalid too.
        assert_eq!(utf8(b"\xc0\xaf"), Err(ProtocolError::NotUtf8 { offset: 0 }));
        assert_eq!(
            utf8(b"ab\xed\xa0\x80"),
            Err(ProtocolError::NotUtf8 { offset: 2 })
        );
        // Cut in the middle of a character.
        assert_eq!(utf8(b"\xe2\x82"), Err(ProtocolError::NotUtf8 { offset: 0 }));
        assert_eq!(utf8("é".as_bytes()), Ok("é"));
    }
}
