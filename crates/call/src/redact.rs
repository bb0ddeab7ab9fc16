//! Redaction of secret values. Every value handed to the guest during a call (see
//! the secrets capability) is recorded here, and everything the call reports leaves the runtime
//! through [`Redactor`]: captured stdout/stderr, `wasi:logging` lines, denial and grant targets
//! and reasons, and the call's error. Each occurrence becomes `[REDACTED]`.
//!
//! Matching is on the raw bytes before escaping, case-insensitive in the Unicode sense (both
//! sides are folded char by char with the full case mappings, so `straße`, `STRASSE` and
//! `Strasse` are one value, as are `ﬁle` and `FILE`; hosts are lowercased before they are
//! recorded), and ignores line breaks, so a value written in pieces across
//! lines of one stream (or one call's log messages) is still found. A text cut at a cap that
//! ends with the first bytes of a value (at least [`MIN_PARTIAL_BYTES`]) has that tail
//! redacted too. Limits: a value that the guest transforms (encodes, reverses, interleaves
//! with other text, or spreads over different streams) is not recognized: redaction stops
//! accidents and naive leaks; the egress allowlist is what stops deliberate exfiltration.

use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::error::CallError;

/// What replaces a value.
pub const REDACTED: &str = "[REDACTED]";
/// The shortest start of a value that is redacted at the end of a truncated text: shorter
/// prefixes are too likely to be ordinary text.
pub const MIN_PARTIAL_BYTES: usize = 4;
/// Distinct values remembered per call (a manifest names at most a few secrets).
const MAX_VALUES: usize = 256;

/// The values handed to one call's guest. Cloning shares the set; values are wiped on drop.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<Mutex<Vec<Zeroizing<Vec<u8>>>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor([REDACTED])")
    }
}

impl Redactor {
    /// Remembers a value handed to the guest (line breaks removed, see the module docs).
    pub fn add(&self, value: &str) {
        let skeleton = Zeroizing::new(fold(value.as_bytes()).bytes);
        if skeleton.is_empty() {
            return;
        }
        if let Ok(mut v) = self.values.lock()
            && v.len() < MAX_VALUES
            && !v.iter().any(|x| **x == *skeleton)
        {
            v.push(skeleton);
        }
    }

    /// Remembers every value `other` remembers as well (an instance kept between calls keeps
    /// the values of all its calls: its guest may still hold them).
    pub fn absorb(&self, other: &Redactor) {
        if Arc::ptr_eq(&self.values, &other.values) {
            return;
        }
        let Ok(theirs) = other.values.lock() else {
            return;
        };
        let theirs: Vec<Zeroizing<Vec<u8>>> = theirs.clone();
        if let Ok(mut v) = self.values.lock() {
            for x in theirs {
                if v.len() < MAX_VALUES && !v.iter().any(|y| **y == *x) {
                    v.push(x);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.lock().map(|v| v.is_empty()).unwrap_or(false)
    }

    /// `bytes` with every value replaced; `cut`: the bytes were cut at a cap right after their
    /// end, so a tail of any length that starts a value is replaced too.
    pub fn bytes(&self, bytes: &[u8], cut: bool) -> Vec<u8> {
        let tail = if cut { Tail::Cut } else { Tail::Whole };
        let mut out = self.parts_with(&[bytes], tail);
        out.pop().unwrap_or_default()
    }

    /// `text` (complete, never cut) with every value replaced.
    pub fn text(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.bytes(text.as_bytes(), false)).into_owned()
    }

    /// Redacts several pieces as if they were lines of one text (a value split across two
    /// pieces is found), returning each piece redacted. Any piece may have been cut at a cap,
    /// so a tail of at least [`MIN_PARTIAL_BYTES`] that starts a value is replaced too.
    pub fn parts(&self, parts: &[&[u8]]) -> Vec<Vec<u8>> {
        self.parts_with(parts, Tail::Guess)
    }

    fn parts_with(&self, parts: &[&[u8]], tail: Tail) -> Vec<Vec<u8>> {
        let Ok(values) = self.values.lock() else {
            // A poisoned lock means a panic mid-call: report nothing rather than risk a leak.
            return parts.iter().map(|_| REDACTED.as_bytes().to_vec()).collect();
        };
        if values.is_empty() {
            return parts.iter().map(|p| p.to_vec()).collect();
        }
        let mut hay = Vec::new();
        let mut ranges = Vec::with_capacity(parts.len());
        for p in parts {
            let start = hay.len();
            hay.extend_from_slice(p);
            ranges.push(start..hay.len());
            hay.push(b'\n');
        }
        let mask = mask(&hay, &values);
        ranges
            .into_iter()
            .map(|r| {
                // A part that ends with the start of a value may have been cut at a cap.
                let mut m = mask[r.clone()].to_vec();
                let min = match tail {
                    Tail::Whole => None,
                    Tail::Guess => Some(MIN_PARTIAL_BYTES),
                    Tail::Cut => Some(1),
                };
                if let Some(min) = min {
                    mask_partial_tail(&hay[r.clone()], &mut m, &values, min);
                }
                apply(&hay[r], &m)
            })
            .collect()
    }

    /// The error with every value replaced in its text.
    pub fn error(&self, e: CallError) -> CallError {
        if self.is_empty() {
            return e;
        }
        match e {
            CallError::Extension { code, message } => CallError::Extension {
                code: self.text(&code),
                message: self.text(&message),
            },
            CallError::Trap(m) => CallError::Trap(self.text(&m)),
            CallError::Busy(m) => CallError::Busy(self.text(&m)),
            CallError::Invalid(m) => CallError::Invalid(self.text(&m)),
            CallError::Quota(m) => CallError::Quota(self.text(&m)),
            CallError::Uninstalled(m) => CallError::Uninstalled(self.text(&m)),
            CallError::Untrusted(m) => CallError::Untrusted(self.text(&m)),
            // Text a remote chose (a parser quoting its answer, a gRPC status message) may
            // carry a value it read through a callback (red team, session 16).
            CallError::Remote(m) => CallError::Remote(self.text(&m)),
            // The cause cannot be rewritten in place: with values to hide, it is flattened
            // into the redacted text (the only case where a host failure loses its source).
            CallError::Host(f) => CallError::host(self.text(&crate::text::chain(&f))),
            CallError::Unavailable(f) => CallError::Unavailable(crate::error::HostFailure::new(
                self.text(&crate::text::chain(&f)),
            )),
            // Numbers and sizes only.
            e @ (CallError::Timeout(_)
            | CallError::MemoryLimit(_)
            | CallError::FuelExhausted(_)
            | CallError::TooLarge { .. }) => e,
        }
    }
}

/// What may follow the end of a text that was not kept.
#[derive(Clone, Copy)]
enum Tail {
    /// Nothing: the text is complete.
    Whole,
    /// Perhaps a cut: tails of at least [`MIN_PARTIAL_BYTES`] that start a value are replaced
    /// (shorter ones would hide too much ordinary text).
    Guess,
    /// Certainly a cut: any tail that starts a value is replaced.
    Cut,
}

fn is_break(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// A text folded for matching, line breaks dropped: `bytes[j]` came from the original bytes
/// `origin[j]` (a char's whole UTF-8 range, so a match marks whole chars).
struct Folded {
    bytes: Vec<u8>,
    origin: Vec<std::ops::Range<usize>>,
}

/// Folds `text`: ASCII bytes lower-cased; each other char lower-cased, upper-cased, then
/// lower-cased again (full Unicode mappings, so `ß`, `ẞ` and `SS` all give `ss`, `ﬁ` and `FI`
/// give `fi`); bytes that are not UTF-8 kept as they are.
fn fold(text: &[u8]) -> Folded {
    let mut out = Folded {
        bytes: Vec::with_capacity(text.len()),
        origin: Vec::with_capacity(text.len()),
    };
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b.is_ascii() {
            if !is_break(b) {
                out.bytes.push(b.to_ascii_lowercase());
                out.origin.push(i..i + 1);
            }
            i += 1;
            continue;
        }
        let len = utf8_len(b).min(text.len() - i);
        match std::str::from_utf8(&text[i..i + len])
            .ok()
            .and_then(|s| s.chars().next())
        {
            Some(c) => {
                let mut buf = [0u8; 4];
                let folded = c
                    .to_lowercase()
                    .flat_map(char::to_uppercase)
                    .flat_map(char::to_lowercase);
                for f in folded {
                    for &fb in f.encode_utf8(&mut buf).as_bytes() {
                        out.bytes.push(fb);
                        out.origin.push(i..i + len);
                    }
                }
                i += len;
            }
            None => {
                out.bytes.push(b);
                out.origin.push(i..i + 1);
                i += 1;
            }
        }
    }
    out
}

/// The length of the UTF-8 sequence a lead byte announces (1 for a byte that cannot lead).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Marks the bytes of `hay` that belong to an occurrence of a value, line breaks skipped.
fn mask(hay: &[u8], values: &[Zeroizing<Vec<u8>>]) -> Vec<bool> {
    let mut mask = vec![false; hay.len()];
    let skel = fold(hay);
    for v in values {
        for start in find_all(&skel.bytes, v) {
            for r in &skel.origin[start..start + v.len()] {
                for m in &mut mask[r.clone()] {
                    *m = true;
                }
            }
        }
    }
    mask
}

/// Every start of `needle` in `hay` (overlapping), in linear time (Knuth-Morris-Pratt), so a
/// hostile log of repeated near-matches costs no more than its length.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if needle.is_empty() || needle.len() > hay.len() {
        return out;
    }
    let mut fail = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = fail[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut k = 0;
    for (i, &b) in hay.iter().enumerate() {
        while k > 0 && b != needle[k] {
            k = fail[k - 1];
        }
        if b == needle[k] {
            k += 1;
        }
        if k == needle.len() {
            out.push(i + 1 - k);
            k = fail[k - 1];
        }
    }
    out
}

/// Marks the longest tail of `text` (at least `min` folded bytes) that is the start of a value.
fn mask_partial_tail(text: &[u8], mask: &mut [bool], values: &[Zeroizing<Vec<u8>>], min: usize) {
    let folded = fold(text);
    let f = &folded.bytes;
    for v in values {
        let longest = v.len().saturating_sub(1).min(f.len());
        for n in (min.max(1)..=longest).rev() {
            if f[f.len() - n..] == v[..n] {
                // From the first char of the tail to the end of the text (line breaks in it
                // are kept by `apply`).
                let from = folded.origin[f.len() - n].start;
                for m in &mut mask[from..] {
                    *m = true;
                }
                break;
            }
        }
    }
}

/// Replaces each run of marked bytes (line breaks kept) with [`REDACTED`].
fn apply(text: &[u8], mask: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut in_run = false;
    for (&b, &m) in text.iter().zip(mask) {
        if m && !is_break(b) {
            if !in_run {
                out.extend_from_slice(REDACTED.as_bytes());
                in_run = true;
            }
        } else {
            // A line break inside a value stays, so line structure survives.
            in_run = false;
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule of every cut (issue 9, finding 4): whatever the cut point, no prefix of any
    /// length of a value survives at the end of a text reported as cut.
    #[test]
    fn no_prefix_of_a_value_survives_at_any_cut() {
        let r = Redactor::default();
        let secret = "Sup3rS3cret";
        r.add(secret);
        for text in [
            format!("token={secret};next"),
            format!("{secret}{secret}"),
            format!("ab\n{}", secret.to_uppercase()),
            format!("xx{}yy", &secret[..5]),
        ] {
            for cut in 0..=text.len() {
                let out = r.bytes(&text.as_bytes()[..cut], true);
                let lower = String::from_utf8_lossy(&out).to_ascii_lowercase();
                let s = secret.to_ascii_lowercase();
                assert!(!lower.contains(&s), "{text:?} cut at {cut}: {lower:?}");
                for n in 1..s.len() {
                    assert!(
                        !lower.ends_with(&s[..n]),
                        "{text:?} cut at {cut}: {lower:?} ends with {:?}",
                        &s[..n]
                    );
                }
            }
        }
    }

    fn r(values: &[&str]) -> Redactor {
        let r = Redactor::default();
        for v in values {
            r.add(v);
        }
        r
    }

    #[test]
    fn replaces_every_occurrence_case_insensitively() {
        let r = r(&["Tok-3xAmple"]);
        assert_eq!(
            r.text("a Tok-3xAmple b tok-3xample.evil.test"),
            "a [REDACTED] b [REDACTED].evil.test"
        );
        assert_eq!(r.text("nothing here"), "nothing here");
    }

    #[test]
    fn values_split_across_lines_are_found() {
        let r = r(&["supersecret"]);
        assert_eq!(
            r.bytes(b"one super\nsecret two\n", false),
            b"one [REDACTED]\n[REDACTED] two\n"
        );
        let parts = r.parts(&[b"ctx supers", b"ecret!"]);
        assert_eq!(
            parts,
            vec![b"ctx [REDACTED]".to_vec(), b"[REDACTED]!".to_vec()]
        );
    }

    #[test]
    fn a_truncated_tail_is_redacted() {
        let r = r(&["supersecret"]);
        // A complete text keeps a tail that merely looks like the start of a value.
        assert_eq!(r.text("https://pad.supe"), "https://pad.supe");
        assert_eq!(r.text("target=rt.super"), "target=rt.super");
        // Cut at a cap: any tail that starts a value goes, however short.
        assert_eq!(r.bytes(b"pad.supe", true), b"pad.[REDACTED]");
        assert_eq!(r.bytes(b"qqqsup", true), b"qqq[REDACTED]");
        assert_eq!(r.bytes(b"qqqs", true), b"qqq[REDACTED]");
        // Pieces that may have been cut (log messages): tails of at least MIN_PARTIAL_BYTES.
        assert_eq!(r.parts(&[b"a supe"]), vec![b"a [REDACTED]".to_vec()]);
        assert_eq!(r.parts(&[b"a sup"]), vec![b"a sup".to_vec()]);
    }

    #[test]
    fn overlapping_and_adversarial_inputs() {
        let r = r(&["aaab"]);
        let hay = "a".repeat(100_000) + "b";
        let out = r.text(&hay);
        assert!(out.ends_with("[REDACTED]") && !out.contains("aaab"));
        assert_eq!(find_all(b"abababa", b"aba"), vec![0, 2, 4]);
    }

    /// Issue 9, F4: a secret the guest changes the case of with non-ASCII letters was not
    /// recognized (the matching was ASCII-only).
    #[test]
    fn non_ascii_case_changes_are_still_the_value() {
        let r = r(&["Straße-ﬁx-Ωmega-ǆ"]);
        for shown in [
            "STRASSE-FIX-ΩMEGA-Ǆ",
            "strasse-fix-ωmega-ǆ",
            "Straße-ﬁx-Ωmega-ǅ",
            "STRAẞE-FIX-ΩMEGA-Ǆ",
        ] {
            let out = r.text(&format!("[{shown}]"));
            assert_eq!(out, "[[REDACTED]]", "{shown}");
        }
        // Cut at a cap in the middle of the upper-cased value: the tail goes too.
        let up = "xx STRASSE-F";
        assert_eq!(r.bytes(up.as_bytes(), true), b"xx [REDACTED]");
        // Turkish dotless i upper-cases to ASCII I.
        let t = r_tr();
        assert_eq!(t.text("pass: KILIT"), "pass: [REDACTED]");
        // Invalid UTF-8 around a value does not hide it, and is kept.
        let out = r.bytes(b"\xff\xfeSTRASSE-FIX-\xce\xa9MEGA-\xc7\x84\xff", false);
        assert_eq!(out, b"\xff\xfe[REDACTED]\xff");
    }

    fn r_tr() -> Redactor {
        r(&["kılıt"])
    }

    #[test]
    fn errors_are_redacted() {
        let r = r(&["hunter22"]);
        let e = r.error(CallError::Extension {
            code: "x".into(),
            message: "token hunter22 rejected".into(),
        });
        assert_eq!(
            e,
            CallError::Extension {
                code: "x".into(),
                message: "token [REDACTED] rejected".into()
            }
        );
    }
}
