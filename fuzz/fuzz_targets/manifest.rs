#![no_main]
//! Any text: the manifest and policy parsers must return Ok or an error, never panic, and an
//! error must point at a line inside the document.

use libfuzzer_sys::fuzz_target;
use warden_manifest::{Grant, Manifest, Policy, effective};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.lines().count().max(1) + 1;
    match Manifest::parse(text) {
        Ok(m) => {
            // A manifest that parses has a well-defined effective set under any grant.
            let _ = effective(&m, &Grant::All, &Policy::default());
            let _ = effective(&m, &Grant::None, &Policy::default());
        }
        Err(e) => assert!(e.line <= lines, "error line {} beyond document ({lines})", e.line),
    }
    let _ = Policy::parse(text);
});
