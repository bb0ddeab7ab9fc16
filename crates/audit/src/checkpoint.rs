//! Checkpoints: the log's (seq, hash) at a moment, exported somewhere the data dir's writers
//! cannot reach (a file on another disk or host, syslog), one JSON line each:
//!
//! ```text
//! {"seq":N,"hash":"<64 hex>","time":"<RFC 3339>","mac":"<64 hex>"}
//! ```
//!
//! A later [`check`] proves the log still holds every checkpointed record unchanged: records
//! cut from the end (whatever the head says), or history rewritten from some record on, fail
//! even when the one who did it held the audit key, as long as the checkpoints were out of
//! reach. `mac` (the audit key's MAC of seq and hash) says a checkpoint was made by a holder of
//! the key; it is absent when the log has no key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chain::{ChainError, is_hash_hex};
use crate::key::AuditKey;
use crate::read::VerifyReport;
use crate::sanitize::sanitize;
use crate::source::{AuditSource, FileAuditSource};

/// Most bytes of a checkpoint line; a longer one was not written by warden.
const MAX_CHECKPOINT_LINE: usize = 512;

/// One exported checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Checkpoint {
    /// The line to export (no newline).
    pub fn to_line(&self) -> String {
        // Plain fields only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why the checkpoints do not match the log.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The log itself does not verify.
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("checkpoint line {line}: not a checkpoint: {reason}")]
    Malformed { line: usize, reason: String },
    #[error(
        "checkpoint line {line}: its MAC does not match the audit key (a forged checkpoint, or \
         another key)"
    )]
    Mac { line: usize },
    #[error(
        "checkpoint line {line} names record {seq}, but the log ends at record {records}: \
         records were removed from the end"
    )]
    Removed { line: usize, seq: u64, records: u64 },
    #[error(
        "checkpoint line {line}: record {seq} is not the one checkpointed (hash {found}, \
         checkpoint {expected}): the log was rewritten from record {seq} or before"
    )]
    Rewritten {
        line: usize,
        seq: u64,
        expected: String,
        found: String,
    },
}

/// Verifies the log in `dir` (see [`crate::verify_with`]) and returns a checkpoint of it now.
pub fn take(dir: &Path, key: Option<&AuditKey>) -> Result<Checkpoint, ChainError> {
    take_from(&FileAuditSource::new(dir), key)
}

/// Verifies the log of `source` ([`AuditSource::verify`]) and returns a checkpoint of it now.
pub fn take_from(
    source: &dyn AuditSource,
    key: Option<&AuditKey>,
) -> Result<Checkpoint, ChainError> {
    let report = source.verify(key, &mut |_, _| {})?;
    // Clamped to 1970..=9999 as records' times are (humantime's own panics outside).
    let time = crate::format_time(std::time::SystemTime::now());
    Ok(Checkpoint {
        mac: key.map(|k| k.mac(report.records, &report.last_hash)),
        seq: report.records,
        hash: report.last_hash,
        time,
    })
}

/// What [`check`] found: the log's report, and how many checkpoints held.
#[derive(Debug)]
pub struct CheckpointReport {
    pub log: VerifyReport,
    pub checkpoints: usize,
    /// Checkpoints whose MAC was checked against the key.
    pub macs_checked: usize,
}

/// Verifies the log in `dir` and checks every checkpoint in `text` (one per line; blank lines
/// skipped) against it. Reports the first problem.
pub fn check(
    dir: &Path,
    key: Option<&AuditKey>,
    text: &str,
) -> Result<CheckpointReport, CheckpointError> {
    check_from(&FileAuditSource::new(dir), key, text)
}

/// [`check`] for the log of any `source`.
pub fn check_from(
    source: &dyn AuditSource,
    key: Option<&AuditKey>,
    text: &str,
) -> Result<CheckpointReport, CheckpointError> {
    let mut wanted: BTreeMap<u64, Vec<(usize, String)>> = BTreeMap::new();
    let mut count = 0;
    let mut macs_checked = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let bad = |reason: &str| CheckpointError::Malformed {
            line,
            reason: sanitize(reason),
        };
        if raw.len() > MAX_CHECKPOINT_LINE {
            return Err(bad("too long"));
        }
        let c: Checkpoint = serde_json::from_str(raw).map_err(|e| bad(&e.to_string()))?;
        if !is_hash_hex(&c.hash) {
            return Err(bad("`hash` is not 64 lowercase hex digits"));
        }
        if (c.seq == 0) != (c.hash == crate::GENESIS_HASH) {
            return Err(bad("`seq` and `hash` disagree about an empty log"));
        }
        if let (Some(k), Some(mac)) = (key, &c.mac) {
            if !k.check(c.seq, &c.hash, mac) {
                return Err(CheckpointError::Mac { line });
            }
            macs_checked += 1;
        }
        count += 1;
        if c.seq > 0 {
            wanted.entry(c.seq).or_default().push((line, c.hash));
        }
    }
    let mut found: BTreeMap<u64, String> = BTreeMap::new();
    let log = source.verify(key, &mut |seq, hash| {
        if wanted.contains_key(&seq) {
            found.insert(seq, hash.to_owned());
        }
    })?;
    for (&seq, checks) in &wanted {
        for (line, expected) in checks {
            match found.get(&seq) {
                None => {
                    return Err(CheckpointError::Removed {
                        line: *line,
                        seq,
                        records: log.records,
                    });
                }
                Some(h) if h != expected => {
                    return Err(CheckpointError::Rewritten {
                        line: *line,
                        seq,
                        expected: expected.clone(),
                        found: h.clone(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(CheckpointReport {
        log,
        checkpoints: count,
        macs_checked,
    })
}
