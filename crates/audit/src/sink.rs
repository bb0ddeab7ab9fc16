//! [`AuditSink`]: where the runtime and the service send records.

use std::sync::{Mutex, PoisonError};

use crate::error::AuditError;
use crate::record::Record;

/// Something that stores audit records. An error means the record was not stored; a caller
/// that cannot audit an action should refuse the action.
pub trait AuditSink: Send + Sync {
    fn append(&self, record: Record) -> Result<(), AuditError>;
}

/// Records kept in memory, for tests and for embedders that ship records elsewhere.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<Vec<Record>>,
}

impl MemoryAudit {
    pub fn new() -> MemoryAudit {
        MemoryAudit::default()
    }

    /// A copy of the records appended so far, oldest first.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Removes and returns the records appended so far.
    pub fn take(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn len(&self) -> usize {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AuditSink for MemoryAudit {
    fn append(&self, record: Record) -> Result<(), AuditError> {
        emit(&record, None);
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
        Ok(())
    }
}

/// The `tracing` event for one stored record (target `warden::audit`, level INFO).
pub(crate) fn emit(r: &Record, seq: Option<u64>) {
    tracing::info!(
        target: "warden::audit",
        seq,
        event = r.event().as_str(),
        outcome = r.outcome().as_str(),
        request_id = r.request_id(),
        tenant = r.tenant(),
        extension = r.extension(),
        version = r.version(),
        capability = r.capability(),
        target = r.target(),
        decision = r.decision().map(|d| d.as_str()),
        duration_ms = r.duration_ms(),
        message = r.message(),
        "audit"
    );
}
