//! The line format and the hash chain.
//!
//! Each line of `audit.jsonl` is one JSON object, ending in `\n`:
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","record":{...},"hash":"<64 hex>"}
//! ```
//!
//! - `seq` counts records from 1, so in an intact log record N is on line N;
//! - `prev` is the `hash` of the record before it, or [`GENESIS_HASH`] for the first;
//! - `hash` is the lowercase hex SHA-256 of the exact bytes `{"seq":N,"prev":"…","record":{…}}`,
//!   which is the line itself with `,"hash":"…"` and the newline removed.
//!
//! There is exactly one encoding of a given (seq, prev, record): fields in a fixed order, no
//! whitespace, `null` for empty record fields, integers only, serde_json's string escaping.
//! A reader re-encodes what it parsed and requires the same bytes, so a line cannot be
//! rewritten into an equivalent form either.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::record::Record;
use crate::sanitize::sanitize;

/// The `prev` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most bytes one line may hold (without its newline).
///
/// A record has at most eight text fields of [`crate::MAX_FIELD_BYTES`], which JSON escaping at
/// most doubles (`"` and `\`), plus under 1 KiB of keys, numbers and hashes: about 17 KiB. A
/// longer line was not written by warden, and a reader stops there instead of buffering it.
pub const MAX_LINE_BYTES: usize = 32 * 1024;

/// The first problem found in an audit log. Every problem in `audit.jsonl` names its line
/// (1-based); every string shown comes from a validated value or has been sanitized.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("no audit log at {}", path.display())]
    Missing { path: PathBuf },
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: longer than {max} bytes", max = MAX_LINE_BYTES)]
    TooLong { line: u64 },
    #[error("line {line}: not a valid audit record: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("line {line}: not in canonical form (the line was edited)")]
    NotCanonical { line: u64 },
    #[error(
        "line {line}: sequence number {found} where {expected} was expected \
         (a record was removed, inserted or reordered)"
    )]
    Seq {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "line {line}: does not follow the record before it (prev {found}, expected {expected})"
    )]
    Prev {
        line: u64,
        expected: String,
        found: String,
    },
    #[error(
        "line {line}: hash mismatch, the record was edited (stored {stored}, computed {computed})"
    )]
    Hash {
        line: u64,
        stored: String,
        computed: String,
    },
    #[error("line {line}: incomplete, the file does not end with a newline")]
    Torn { line: u64 },
    #[error("{} is missing or empty", path.display())]
    HeadMissing { path: PathBuf },
    #[error("{} is not a valid head file: {reason}", path.display())]
    HeadMalformed { path: PathBuf, reason: String },
    #[error(
        "line {line}: missing; the log ends after record {log_seq} but the head file records \
         {head_seq} (records were removed from the end)"
    )]
    Truncated {
        line: u64,
        log_seq: u64,
        head_seq: u64,
    },
    #[error(
        "line {line}: not recorded in the head file, which ends at record {head_seq} \
         (records were appended outside warden)"
    )]
    Unrecorded { line: u64, head_seq: u64 },
    #[error(
        "line {line}: the last record's hash {log_hash} is not the head file's {head_hash} \
         (the last record was replaced)"
    )]
    HeadHash {
        line: u64,
        log_hash: String,
        head_hash: String,
    },
    #[error("the last line of the log is not a valid record: {reason}")]
    LastLine { reason: String },
    #[error(
        "{}: the MAC does not match the audit key (the head was rewritten, for instance after \
         records were cut from the end, or the key is not the one this log was written with)",
        path.display()
    )]
    HeadMac { path: PathBuf },
    #[error(
        "{} has no MAC although an audit key is in use (the head was replaced by one written \
         without the key)",
        path.display()
    )]
    HeadUnkeyed { path: PathBuf },
}

impl ChainError {
    /// The line of `audit.jsonl` the problem is on, if it is on one.
    pub fn line(&self) -> Option<u64> {
        match self {
            ChainError::TooLong { line }
            | ChainError::Malformed { line, .. }
            | ChainError::NotCanonical { line }
            | ChainError::Seq { line, .. }
            | ChainError::Prev { line, .. }
            | ChainError::Hash { line, .. }
            | ChainError::Torn { line }
            | ChainError::Truncated { line, .. }
            | ChainError::Unrecorded { line, .. }
            | ChainError::HeadHash { line, .. } => Some(*line),
            ChainError::Missing { .. }
            | ChainError::Io { .. }
            | ChainError::HeadMissing { .. }
            | ChainError::HeadMalformed { .. }
            | ChainError::HeadMac { .. }
            | ChainError::HeadUnkeyed { .. }
            | ChainError::LastLine { .. } => None,
        }
    }

    /// An equal error for another caller (see `AuditError::duplicate`).
    pub(crate) fn duplicate(&self) -> ChainError {
        match self {
            ChainError::Missing { path } => ChainError::Missing { path: path.clone() },
            ChainError::Io { path, source } => ChainError::Io {
                path: path.clone(),
                source: copy_io(source),
            },
            ChainError::TooLong { line } => ChainError::TooLong { line: *line },
            ChainError::Malformed { line, reason } => ChainError::Malformed {
                line: *line,
                reason: reason.clone(),
            },
            ChainError::NotCanonical { line } => ChainError::NotCanonical { line: *line },
            ChainError::Seq {
                line,
                expected,
                found,
            } => ChainError::Seq {
                line: *line,
                expected: *expected,
                found: *found,
            },
            ChainError::Prev {
                line,
                expected,
                found,
            } => ChainError::Prev {
                line: *line,
                expected: expected.clone(),
                found: found.clone(),
            },
            ChainError::Hash {
                line,
                stored,
                computed,
            } => ChainError::Hash {
                line: *line,
                stored: stored.clone(),
                computed: computed.clone(),
            },
            ChainError::Torn { line } => ChainError::Torn { line: *line },
            ChainError::HeadMissing { path } => ChainError::HeadMissing { path: path.clone() },
            ChainError::HeadMalformed { path, reason } => ChainError::HeadMalformed {
                path: path.clone(),
                reason: reason.clone(),
            },
            ChainError::Truncated {
                line,
                log_seq,
                head_seq,
            } => ChainError::Truncated {
                line: *line,
                log_seq: *log_seq,
                head_seq: *head_seq,
            },
            ChainError::Unrecorded { line, head_seq } => ChainError::Unrecorded {
                line: *line,
                head_seq: *head_seq,
            },
            ChainError::HeadHash {
                line,
                log_hash,
                head_hash,
            } => ChainError::HeadHash {
                line: *line,
                log_hash: log_hash.clone(),
                head_hash: head_hash.clone(),
            },
            ChainError::LastLine { reason } => ChainError::LastLine {
                reason: reason.clone(),
            },
            ChainError::HeadMac { path } => ChainError::HeadMac { path: path.clone() },
            ChainError::HeadUnkeyed { path } => ChainError::HeadUnkeyed { path: path.clone() },
        }
    }
}

/// What is hashed: the line without its hash.
#[derive(Serialize)]
struct Unsigned<'a> {
    seq: u64,
    prev: &'a str,
    record: &'a Record,
}

/// A stored line as parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    seq: u64,
    prev: String,
    record: Record,
    hash: String,
}

/// One encoded record: its place in the chain, its line and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Its sequence number.
    pub seq: u64,
    /// The line as `audit.jsonl` holds it, ending with `\n`.
    pub line: Vec<u8>,
    /// Its hash, the `prev` of the next record.
    pub hash: String,
}

impl Encoded {
    /// The line without its newline: what a store that keeps lines apart (rows) holds, and
    /// what [`crate::verify_lines`] and [`crate::Reader::from_lines`] take.
    pub fn text(&self) -> &[u8] {
        self.line.strip_suffix(b"\n").unwrap_or(&self.line)
    }
}

/// Encodes (seq, prev, record) as one line and hashes it.
pub(crate) fn encode(seq: u64, prev: &str, record: &Record) -> Result<Encoded, serde_json::Error> {
    let mut line = serde_json::to_vec(&Unsigned { seq, prev, record })?;
    let hash = hex::encode(Sha256::digest(&line));
    // `line` ends with the object's closing brace: put the hash before it.
    line.pop();
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok(Encoded { seq, line, hash })
}

pub(crate) fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A line that passed every check.
pub(crate) struct Checked {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    pub record: Record,
}

/// Parses one line (without its newline) and checks that it is canonical and hashes to its
/// `hash`. Links to the previous line are the caller's business.
pub(crate) fn check_line(line_no: u64, bytes: &[u8]) -> Result<Checked, ChainError> {
    if bytes.len() > MAX_LINE_BYTES {
        return Err(ChainError::TooLong { line: line_no });
    }
    let malformed = |reason: String| ChainError::Malformed {
        line: line_no,
        // serde_json quotes parts of its input in its messages.
        reason: sanitize(&reason),
    };
    let entry: Entry = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if !is_hash_hex(&entry.prev) {
        return Err(malformed("`prev` is not 64 lowercase hex digits".into()));
    }
    if !is_hash_hex(&entry.hash) {
        return Err(malformed("`hash` is not 64 lowercase hex digits".into()));
    }
    let encoded =
        encode(entry.seq, &entry.prev, &entry.record).map_err(|e| malformed(e.to_string()))?;
    if encoded.hash != entry.hash {
        return Err(ChainError::Hash {
            line: line_no,
            stored: entry.hash,
            computed: encoded.hash,
        });
    }
    if encoded.line.strip_suffix(b"\n") != Some(bytes) {
        return Err(ChainError::NotCanonical { line: line_no });
    }
    Ok(Checked {
        seq: entry.seq,
        prev: entry.prev,
        hash: entry.hash,
        record: entry.record,
    })
}

/// Walks lines from the start of the log, checking each against the one before it.
pub(crate) struct Walker {
    /// Lines checked so far.
    pub lines: u64,
    /// The hash of the last record, or [`GENESIS_HASH`].
    pub last_hash: String,
}

impl Walker {
    pub fn new() -> Walker {
        Walker {
            lines: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }

    /// [`Walker::next`] for a line its store keeps under `seq`, which must be its place.
    pub fn next_at(&mut self, seq: u64, bytes: &[u8]) -> Result<Checked, ChainError> {
        let line = self.lines + 1;
        if seq != line {
            return Err(ChainError::Seq {
                line,
                expected: line,
                found: seq,
            });
        }
        self.next(bytes)
    }

    pub fn next(&mut self, bytes: &[u8]) -> Result<Checked, ChainError> {
        let line = self.lines + 1;
        let checked = check_line(line, bytes)?;
        if checked.seq != line {
            return Err(ChainError::Seq {
                line,
                expected: line,
                found: checked.seq,
            });
        }
        if checked.prev != self.last_hash {
            return Err(ChainError::Prev {
                line,
                expected: self.last_hash.clone(),
                found: checked.prev,
            });
        }
        self.lines = line;
        self.last_hash.clone_from(&checked.hash);
        Ok(checked)
    }
}

/// The same error: the OS error number if there is one (so `raw_os_error` still works), else
/// the kind and the message.
pub(crate) fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
