//! Extism memory, kept by the host for one call: the blocks a plug-in allocates (`alloc`),
//! addressed by handles that are byte offsets into the arena (0 = none), read and written a
//! byte or a word at a time (`load_*`, `store_*`), freed (`free`).
//!
//! Extism keeps this memory in a kernel module of its own; here it is a `Vec<u8>` on the host
//! side, one per call (the call's instance and arena die together). Its bytes are charged to the
//! call's [`MemoryBudget`] together with the plug-in's linear memory (`max_memory`), with
//! [`BLOCK_OVERHEAD`] per block for the host's bookkeeping, so a plug-in allocating past its
//! limit is stopped with the memory-limit error, never by the host running out. The `Vec`
//! grows by doubling at most, so the host holds at most twice the bytes charged.
//!
//! Out of bounds, loads read 0 and stores do nothing, as Extism's kernel does (see
//! `docs/design/extism/abi.md` §3.4): the arena is only ever indexed through checked
//! arithmetic. Host functions given a handle that is no live block refuse it (a trap).

use std::collections::{BTreeMap, BTreeSet};

use crate::limiter::MemoryBudget;

/// Offsets below this are never handed out: no handle is 0, and no block starts at a small
/// number a confused plug-in might use as a length.
const BASE: usize = 64;
/// Bytes charged per block for the host's bookkeeping (its entry in two maps), so a million
/// one-byte blocks cost what they cost the host.
pub(crate) const BLOCK_OVERHEAD: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Block {
    /// Bytes asked for (`length`).
    len: u64,
    /// Bytes the block spans (a reused block keeps its first size).
    cap: u64,
    free: bool,
}

/// Why an allocation did not happen: the call's memory budget is spent.
#[derive(Debug)]
pub(crate) struct Full;

#[derive(Debug)]
pub(crate) struct Arena {
    data: Vec<u8>,
    blocks: BTreeMap<u64, Block>,
    /// Freed blocks by (span, handle): the smallest that fits is reused first.
    free: BTreeSet<(u64, u64)>,
    /// Bytes charged to the budget so far (given back by `reset`).
    charged: usize,
}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            data: vec![0; BASE],
            blocks: BTreeMap::new(),
            free: BTreeSet::new(),
            charged: 0,
        }
    }
}

impl Arena {
    /// A new block of `n` zeroed bytes: its handle (0 for `n == 0`, as in Extism), or [`Full`].
    pub(crate) fn alloc(&mut self, n: u64, budget: &mut MemoryBudget) -> Result<u64, Full> {
        if n == 0 {
            return Ok(0);
        }
        if let Some(&(cap, h)) = self.free.range((n, 0)..).next() {
            self.free.remove(&(cap, h));
            let start = usize::try_from(h).map_err(|_| Full)?;
            let end = start.checked_add(usize::try_from(n).map_err(|_| Full)?);
            if let Some(bytes) = end.and_then(|end| self.data.get_mut(start..end)) {
                bytes.fill(0);
            }
            self.blocks.insert(
                h,
                Block {
                    len: n,
                    cap,
                    free: false,
                },
            );
            return Ok(h);
        }
        let size = usize::try_from(n).map_err(|_| Full)?;
        let cost = size.checked_add(BLOCK_OVERHEAD).ok_or(Full)?;
        if !budget.charge(cost) {
            return Err(Full);
        }
        self.charged = self.charged.saturating_add(cost);
        let h = self.data.len();
        let end = h.checked_add(size).ok_or(Full)?;
        // Never an abort on a failed allocation: the budget said yes, the host may still say no.
        self.data.try_reserve(size).map_err(|_| Full)?;
        self.data.resize(end, 0);
        let h = h as u64;
        self.blocks.insert(
            h,
            Block {
                len: n,
                cap: n,
                free: false,
            },
        );
        Ok(h)
    }

    /// A new block holding `bytes` (handle 0 for no bytes).
    pub(crate) fn put(&mut self, bytes: &[u8], budget: &mut MemoryBudget) -> Result<u64, Full> {
        let h = self.alloc(bytes.len() as u64, budget)?;
        if h != 0
            && let Some(dst) = self.block_mut(h)
        {
            dst.copy_from_slice(bytes);
        }
        Ok(h)
    }

    /// Frees the live block at `h`; anything else (0, a freed block, not a block) is ignored.
    pub(crate) fn free(&mut self, h: u64) {
        if let Some(b) = self.blocks.get_mut(&h)
            && !b.free
        {
            b.free = true;
            self.free.insert((b.cap, h));
        }
    }

    /// The length of the live block starting at `h`, else 0.
    pub(crate) fn length(&self, h: u64) -> u64 {
        match self.blocks.get(&h) {
            Some(b) if !b.free => b.len,
            _ => 0,
        }
    }

    /// The bytes of the live block starting at `h`.
    pub(crate) fn block(&self, h: u64) -> Option<&[u8]> {
        let len = self.length(h);
        if len == 0 {
            return None;
        }
        self.span(h, len)
    }

    fn block_mut(&mut self, h: u64) -> Option<&mut [u8]> {
        let len = self.length(h);
        if len == 0 {
            return None;
        }
        let start = usize::try_from(h).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get_mut(start..end)
    }

    /// `len` bytes from `h`, when they lie inside one live block (`output_set` may name a
    /// part of a block).
    pub(crate) fn within_block(&self, h: u64, len: u64) -> Option<&[u8]> {
        let (&start, b) = self.blocks.range(..=h).next_back()?;
        let end = h.checked_add(len)?;
        if b.free || end > start.checked_add(b.len)? {
            return None;
        }
        self.span(h, len)
    }

    fn span(&self, h: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(h).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(start..end)
    }

    pub(crate) fn load_u8(&self, p: u64) -> u8 {
        self.span(p, 1).map_or(0, |b| b[0])
    }

    pub(crate) fn load_u64(&self, p: u64) -> u64 {
        self.span(p, 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }

    pub(crate) fn store_u8(&mut self, p: u64, v: u8) {
        if let Some(b) = self.span_mut(p, 1) {
            b[0] = v;
        }
    }

    pub(crate) fn store_u64(&mut self, p: u64, v: u64) {
        if let Some(b) = self.span_mut(p, 8) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn span_mut(&mut self, p: u64, len: u64) -> Option<&mut [u8]> {
        let start = usize::try_from(p).ok()?;
        if start < BASE {
            return None;
        }
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get_mut(start..end)
    }

    /// Bytes the arena spans.
    pub(crate) fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Drops every block (Extism's `reset`), giving their bytes back to the budget.
    pub(crate) fn reset(&mut self, budget: &mut MemoryBudget) {
        budget.release(self.charged);
        *self = Arena::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_offsets_never_zero_and_checked() {
        let mut budget = MemoryBudget::new(1 << 20);
        let mut a = Arena::default();
        assert_eq!(a.alloc(0, &mut budget).unwrap(), 0);
        let h = a.alloc(10, &mut budget).unwrap();
        assert!(h >= BASE as u64);
        assert_eq!(a.length(h), 10);
        assert_eq!(a.length(h + 1), 0, "an interior pointer is no handle");
        assert_eq!(a.length(0), 0);
        a.store_u64(h, 0x0102_0304_0506_0708);
        assert_eq!(a.load_u64(h), 0x0102_0304_0506_0708);
        assert_eq!(a.load_u8(h), 8, "little-endian");
        // Out of bounds: 0 and no-ops, never a panic.
        assert_eq!(a.load_u64(u64::MAX - 3), 0);
        assert_eq!(a.load_u8(1 << 40), 0);
        a.store_u64(u64::MAX - 3, 1);
        a.store_u8(1 << 40, 1);
        a.store_u8(0, 1);
        assert_eq!(a.load_u8(0), 0, "the reserved prefix is not writable");
        assert_eq!(
            a.within_block(h + 2, 8),
            Some(&[6, 5, 4, 3, 2, 1, 0, 0][..])
        );
        assert_eq!(a.within_block(h + 2, 9), None, "past the block");
        assert_eq!(a.within_block(h, u64::MAX), None);
        a.free(h);
        a.free(h);
        a.free(12345);
        assert_eq!(a.length(h), 0);
        assert!(a.block(h).is_none());
        // A freed block is reused, zeroed.
        let again = a.alloc(3, &mut budget).unwrap();
        assert_eq!(again, h);
        assert_eq!(a.block(again), Some(&[0, 0, 0][..]));
        let p = a.put(b"hello", &mut budget).unwrap();
        assert_eq!(a.block(p), Some(&b"hello"[..]));
    }

    #[test]
    fn blocks_are_charged_to_the_call_budget() {
        let mut budget = MemoryBudget::new(4096);
        let mut a = Arena::default();
        assert!(a.alloc(2048, &mut budget).is_ok());
        assert!(a.alloc(4096, &mut budget).is_err());
        assert!(budget.limit_hit());
        assert!(a.alloc(u64::MAX, &mut budget).is_err());
        a.reset(&mut budget);
        let mut fresh = MemoryBudget::new(4096);
        let mut b = Arena::default();
        // One-byte blocks cost their bookkeeping too.
        let n = (0..10_000)
            .take_while(|_| b.alloc(1, &mut fresh).is_ok())
            .count();
        assert!(n < 4096 / BLOCK_OVERHEAD, "{n} blocks");
    }
}
