//! One memory budget for everything an instance allocates: all its linear memories and tables
//! together (a component has several core instances, each with their own), with the peak kept
//! for the audit record.

use warden_call::Ledger;
use wasmtime::{ResourceLimiter, Result};

/// Bytes charged per table element (a reference is at most 8 bytes on 64-bit hosts, plus
/// bookkeeping; 16 keeps a table-only attack from hiding below the memory budget).
const TABLE_ELEMENT_BYTES: usize = 16;
/// BundleLimits on how many instances, memories and tables one call may create. Real components built
/// by standard toolchains use a handful of each; these stop "many memories" attacks early.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 32;
const MAX_TABLES: usize = 128;

#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: usize,
    peak: usize,
    /// The last growth granted, undone if the grow then fails.
    pending: usize,
    /// Set when a growth was refused because of the budget.
    hit: bool,
    /// Where each new peak is noted as it happens, for a call stopped before its report.
    noted_in: Option<Ledger>,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            peak: 0,
            pending: 0,
            hit: false,
            noted_in: None,
        }
    }

    /// Notes each new peak in `ledger` too.
    pub(crate) fn noted_in(self, ledger: Ledger) -> Self {
        MemoryBudget {
            noted_in: Some(ledger),
            ..self
        }
    }

    pub fn peak(&self) -> u64 {
        self.peak as u64
    }

    pub fn limit_hit(&self) -> bool {
        self.hit
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let delta = desired.saturating_sub(current);
        match self.used.checked_add(delta) {
            Some(next) if next <= self.limit => {
                self.used = next;
                self.pending = delta;
                if next > self.peak {
                    self.peak = next;
                    if let Some(ledger) = &self.noted_in {
                        ledger.note_memory(next as u64);
                    }
                }
                true
            }
            _ => {
                self.hit = true;
                self.pending = 0;
                false
            }
        }
    }

    /// Charges `bytes` the host holds for the instance (an Extism plug-in's arena and vars:
    /// `crate::extism`) to the same budget as its linear memory: `false` (and the limit marked
    /// hit) when they do not fit.
    pub(crate) fn charge(&mut self, bytes: usize) -> bool {
        self.grow(0, bytes)
    }

    /// Marks the limit hit for a request that could never fit (a size past what the host can
    /// even count), so it is reported as over max_memory like any other.
    pub(crate) fn refuse(&mut self) {
        self.hit = true;
    }

    /// Gives back bytes charged with [`MemoryBudget::charge`].
    pub(crate) fn release(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }

    fn undo(&mut self) {
        self.used = self.used.saturating_sub(self.pending);
        self.pending = 0;
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> Result<()> {
        self.undo();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        let bytes = |n: usize| n.saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(bytes(current), bytes(desired)))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> Result<()> {
        self.undo();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_and_tracks_peak() {
        let mut b = MemoryBudget::new(100);
        assert!(b.memory_growing(0, 60, None).unwrap());
        assert!(
            !b.memory_growing(0, 50, None).unwrap(),
            "second memory must share the budget"
        );
        assert!(b.limit_hit());
        assert!(b.memory_growing(0, 40, None).unwrap());
        assert_eq!(b.peak(), 100);
        let mut b = MemoryBudget::new(100);
        assert!(b.memory_growing(0, 80, None).unwrap());
        b.memory_grow_failed(wasmtime::Error::msg("os")).unwrap();
        assert!(b.memory_growing(0, 90, None).unwrap());
        assert!(!b.table_growing(0, 10, None).unwrap(), "tables count too");
    }
}
