//! The files of an audit folder, and the advisory lock that serializes appends (and readers)
//! between processes.

use std::fs::File;
use std::io;

use warden_datadir::{LOCK_WAIT, LockKind, lock_within};

/// The audit folder's name inside a data dir.
pub const AUDIT_DIR: &str = "audit";
/// The log file inside the audit folder: one record per line.
pub const LOG_FILE: &str = "audit.jsonl";
/// The head file inside the audit folder: sequence number and hash of the last record.
pub const HEAD_FILE: &str = "audit.head";
/// Where uncommitted tails (torn lines, lines the head never named) cut from the log are kept
/// (one JSON line each), for the operator to read.
pub const TORN_FILE: &str = "audit.torn";

/// Unlocks a file lock when dropped.
pub(crate) struct FileLock<'a>(&'a File);

/// What a lock error names.
const LOCKED: &str = "the audit log (audit.head)";

impl<'a> FileLock<'a> {
    /// Waits up to [`LOCK_WAIT`] for other processes' appends: one stopped while it holds the
    /// lock gets calls refused (the host closes, records kept), not hung.
    pub(crate) fn exclusive(file: &'a File) -> io::Result<FileLock<'a>> {
        exclusive(file)?;
        Ok(FileLock(file))
    }
    /// A lock taken earlier on `file` (see `Files::begin`), released when this is dropped.
    pub(crate) fn held(file: &'a File) -> FileLock<'a> {
        FileLock(file)
    }
    pub(crate) fn shared(file: &'a File) -> io::Result<FileLock<'a>> {
        lock_within(file, LockKind::Shared, LOCK_WAIT, LOCKED)?;
        Ok(FileLock(file))
    }
}

/// The exclusive lock, to be released by a [`FileLock::held`] later.
pub(crate) fn exclusive(file: &File) -> io::Result<()> {
    lock_within(file, LockKind::Exclusive, LOCK_WAIT, LOCKED)
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an error here leaves nothing to do.
        let _ = self.0.unlock();
    }
}
