use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use warden_audit::{AuditLog, Event, LOG_FILE, Outcome, Record};

/// A record that differs with `i`.
pub fn rec(i: u64) -> Record {
    Record::new(Event::Call, format!("req-{i}"))
        .at(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i))
        .with_tenant(if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        })
        .with_extension("hello")
        .with_version("1.0.0")
        .with_duration_ms(i)
        .with_outcome(Outcome::Ok)
        .with_message(format!("message {i}"))
}

/// A fresh audit folder (not yet created) inside a temporary folder.
pub fn audit_dir() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data").join("audit");
    (tmp, dir)
}

/// A log holding records 1..=n.
pub fn log_with(n: u64) -> (TempDir, PathBuf) {
    let (tmp, dir) = audit_dir();
    let log = AuditLog::open(&dir).unwrap();
    for i in 1..=n {
        log.append(rec(i)).unwrap();
    }
    (tmp, dir)
}

pub fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Rewrites the log with `lines`, each followed by a newline (the head is left alone).
pub fn write_lines(dir: &Path, lines: &[String]) {
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(dir.join(LOG_FILE), text).unwrap();
}

/// The hash field of a stored line.
pub fn hash_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["hash"].as_str().unwrap().to_owned()
}

/// A line built from the documented format alone, as a forger would: the hash is SHA-256 over
/// `{"seq":N,"prev":"…","record":{…}}`.
pub fn forge(seq: u64, prev: &str, record: &Record) -> String {
    #[derive(Serialize)]
    struct Unsigned<'a> {
        seq: u64,
        prev: &'a str,
        record: &'a Record,
    }
    let unsigned = serde_json::to_string(&Unsigned { seq, prev, record }).unwrap();
    let hash = hex::encode(Sha256::digest(unsigned.as_bytes()));
    format!("{},\"hash\":\"{hash}\"}}", &unsigned[..unsigned.len() - 1])
}
