#![no_main]
//! Any text, any secret, any cut point: what the redactor reports of a text cut at a cap never
//! contains the secret, and never ends with a prefix (of any length >= 1) of it, compared
//! ASCII-case-insensitively as the redactor matches. The replacement markers are taken out
//! before the check (the marker's own letters may spell a short secret).

use libfuzzer_sys::fuzz_target;
use warden_call::Redactor;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let secret_len = 1 + usize::from(data[0] % 32);
    let cut_at = usize::from(data[1]) | (usize::from(data[2]) << 8);
    let rest = &data[3..];
    if rest.len() < secret_len {
        return;
    }
    let secret: String = rest[..secret_len]
        .iter()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[usize::from(*b) % 62]))
        .collect();
    let text = &rest[secret_len..];
    let cut = cut_at.min(text.len());
    let r = Redactor::default();
    r.add(&secret);
    let out = r.bytes(&text[..cut], true);
    let shown = String::from_utf8_lossy(&out).replace("[REDACTED]", "\0");
    let lower: Vec<u8> = shown.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let s = secret.to_ascii_lowercase().into_bytes();
    assert!(
        !lower.windows(s.len()).any(|w| w == s.as_slice()),
        "the secret survived"
    );
    for n in 1..s.len() {
        assert!(
            !lower.ends_with(&s[..n]),
            "a {n}-byte prefix of the secret survived at the cut"
        );
    }
});
