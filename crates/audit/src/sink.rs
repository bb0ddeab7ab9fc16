//! [`AuditSink`]: where the runtime and the service send records.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use crate::error::AuditError;
use crate::record::Record;

/// Something that stores audit records. An error means the record was not stored; a caller
/// that cannot audit an action should refuse the action.
pub trait AuditSink: Send + Sync {
    fn append(&self, record: Record) -> Result<(), AuditError>;

    /// Stores `records` in order and resolves once all are stored (or one could not be: the
    /// first error). Async callers use this so that no executor thread waits for a sync while
    /// the records commit. By default they are stored one by one, now.
    fn append_all(&self, records: Vec<Record>) -> Pending {
        Pending::ready(records.into_iter().try_for_each(|r| self.append(r)))
    }

    /// Waits, at most `within`, until every record given so far is stored or refused; then
    /// fails ([`AuditError::Unstored`]) if some whose callers had stopped waiting (a call
    /// dropped while its record committed) could not be stored, or some still wait. For an
    /// owner about to exit: those records are lost with the process, and it can say so. A
    /// sink that stores at once has nothing to wait for.
    fn settle(&self, within: std::time::Duration) -> Result<(), AuditError> {
        let _ = within;
        Ok(())
    }
}

/// Records on their way to storage: resolves once all are stored, or with the first error.
#[must_use = "the records are stored only once this resolves"]
pub struct Pending(Waiting);

enum Waiting {
    /// Stored (or refused) already: nothing to box.
    Ready(Option<Result<(), AuditError>>),
    Later(Pin<Box<dyn Future<Output = Result<(), AuditError>> + Send>>),
}

impl Pending {
    /// Resolves once `stored` does.
    pub fn new(stored: impl Future<Output = Result<(), AuditError>> + Send + 'static) -> Pending {
        Pending(Waiting::Later(Box::pin(stored)))
    }

    /// Already known: resolves to `result` at once.
    pub fn ready(result: Result<(), AuditError>) -> Pending {
        Pending(Waiting::Ready(Some(result)))
    }
}

impl Future for Pending {
    type Output = Result<(), AuditError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            // Polled again after it resolved: as a fused future would, it stays pending.
            Waiting::Ready(result) => result.take().map_or(Poll::Pending, Poll::Ready),
            Waiting::Later(stored) => stored.as_mut().poll(cx),
        }
    }
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
        capability_target = r.target(),
        decision = r.decision().map(|d| d.as_str()),
        duration_ms = r.duration_ms(),
        message = r.message(),
        "audit"
    );
}
