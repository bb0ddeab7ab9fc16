//! Audit records and a hash-chained, append-only audit log.
//!
//! - [`Record`]: one call, denial, limit hit, install, upgrade, uninstall, publish, load or
//!   verification failure (SPEC section 8). All text in it has been through [`sanitize`], so a
//!   record is always one line and cannot carry a newline, a terminal escape or a megabyte.
//! - [`AuditLog`]: `audit.jsonl` (one JSON record per line, each holding the hash of the one
//!   before) and `audit.head` (the last sequence number and hash). Appends are durable when
//!   they return and safe from many threads and processes; one writer thread per open log
//!   commits all the appends waiting at a time with one write and one sync (group commit). See
//!   [`chain`] for the line format.
//! - [`verify`] walks a log and names the first edited, removed, reordered, forged or garbled
//!   line; [`read`] lists (and follows) records.
//! - [`AuditSink`] is what the runtime writes to; [`MemoryAudit`] keeps records in memory.
//! - Other stores (a database) plug in on both sides, with the same chain and checks:
//!   [`RoundStore`] is one durable round of the group commit (the files are the first one) and
//!   [`StoreLog`] the sink over any of them; [`encode_after`] is the chaining step every
//!   store uses. [`AuditSource`] is the read side (listing, verifying, and so
//!   [`checkpoint::take_from`] and [`checkpoint::check_from`]), [`FileAuditSource`] the files';
//!   a store implements it with [`verify_lines`] and [`Reader::from_lines`].
//!
//! This crate knows nothing about Wasmtime, HTTP or terminals, and never prints: each stored
//! record is also emitted as a `tracing` event (target `warden::audit`).

pub mod chain;
pub mod checkpoint;
mod commit;
mod error;
mod files;
mod head;
mod key;
mod log;
mod read;
mod record;
mod round;
mod sanitize;
mod sink;
mod source;
mod store;

pub use chain::{ChainError, GENESIS_HASH, MAX_LINE_BYTES};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointReport};
pub use commit::StoreLog;
pub use key::{AUDIT_KEY_FILE, AuditKey};
pub use log::{AUDIT_DIR, Appended, AuditError, AuditLog, HEAD_FILE, LOG_FILE, TORN_FILE};
pub use read::{
    Filter, HeadMac, HeadView, Reader, StoredLine, StoredRecord, VerifyReport, read, verify,
    verify_lines, verify_with, verify_with_lines,
};
pub use record::{
    Decision, Event, FOLDED_PREFIX, MAX_FOLDED_BYTES, Outcome, Record, Stamp, format_time,
};
pub use sanitize::{MAX_FIELD_BYTES, is_clean, needs_escape, sanitize, sanitize_display};
pub use sink::{AuditSink, MemoryAudit, Pending};
pub use source::{AuditSource, FileAuditSource};
pub use store::{Round, RoundStore, encode_after};
