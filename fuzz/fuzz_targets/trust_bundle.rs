#![no_main]
//! Any text as a trust bundle: the parser returns Ok or an error, never panics, and an error
//! points at a line inside the document. A bundle that parses keeps its invariants (threshold in
//! range, trusted and revoked keys disjoint, every key indexed under its own publisher), and
//! each of its keys prints back as a `[[publisher]]` entry that parses to the same key.

use libfuzzer_sys::fuzz_target;
use warden_trust::{KeyStatus, TrustBundle, TrustError, publisher_entry};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1) + 1;
    let bundle = match TrustBundle::parse(text) {
        Ok(bundle) => bundle,
        Err(TrustError::Toml { path, error }) => {
            assert!(path.is_none(), "parse named a file: {path:?}");
            assert!(
                error.line <= lines,
                "error line {} beyond document ({lines})",
                error.line
            );
            let _ = error.to_string();
            return;
        }
        // Io, TooLarge and NotUtf8 come from reading a file, which `parse` does not do.
        Err(other) => panic!("parse returned a file error: {other:?}"),
    };
    for (i, p) in bundle.publishers().iter().enumerate() {
        let found = bundle
            .publisher(p.name())
            .expect("listed publisher not found by name");
        assert_eq!(found.name(), p.name());
        assert!(
            (1..=p.keys().len()).contains(&p.threshold()),
            "threshold {} with {} keys",
            p.threshold(),
            p.keys().len()
        );
        for (j, k) in p.keys().iter().enumerate() {
            assert!(
                !p.revoked().contains(k),
                "a key is both trusted and revoked"
            );
            assert!(!p.keys()[..j].contains(k), "a trusted key is listed twice");
            let (owner, status, key) = bundle
                .key_owner(&k.key_id())
                .expect("trusted key not indexed");
            assert_eq!(
                (owner.name(), status, key),
                (p.name(), KeyStatus::Trusted, k)
            );
            // Only the first few: each entry re-parses a PEM key.
            if j < 2 {
                let again = TrustBundle::parse(&publisher_entry(p.name(), k))
                    .expect("publisher_entry output parses");
                assert_eq!(again.publishers()[0].keys(), &[*k]);
            }
        }
        for (j, k) in p.revoked().iter().enumerate() {
            assert!(
                !p.revoked()[..j].contains(k),
                "a revoked key is listed twice"
            );
            let (owner, status, key) = bundle
                .key_owner(&k.key_id())
                .expect("revoked key not indexed");
            assert_eq!(
                (owner.name(), status, key),
                (p.name(), KeyStatus::Revoked, k)
            );
        }
        assert!(
            bundle.publishers()[..i]
                .iter()
                .all(|q| q.name() != p.name()),
            "publisher listed twice"
        );
    }
});
