//! The file-system quota of one (tenant, extension), with no Wasmtime: what is charged, when
//! the folder is measured again, and when a growth is refused. The runtime's `wasi:filesystem`
//! bindings (and later process extensions) charge it before every growth.
//!
//! The read-write mounts of one (tenant, extension) share one quota ([`FsQuota`]; `[policy.files]` `max_bytes`, default 256MiB, and `max_entries`, default 10000; an
//! embedder sets them through the `Policy` it builds the host with). [`crate::mounts::quota`] creates it
//! at load, measuring the install's `files/` folder (no symlink followed, no other device
//! entered; a file counts at the larger of its length and its allocated blocks, so a sparse
//! file counts whole), and every call of the install charges the same budget (an
//! `Arc<Mutex<..>>` in its `CallCaps`). Every growth is charged *before* it happens and at
//! least as much as it can allocate: `write` every 4 KiB block it touches, `set-size` the growth
//! over the current size (shrinking is free), each created entry (`open-at` with create,
//! `create-directory-at`, `symlink-at`, `link-at`) one entry and one block, and each write on a
//! stream from `write-via-stream`/`append-via-stream` (the boxed stream is replaced in the
//! resource table by a `QuotaStream` that charges it) its blocks, plus one at an unknown append
//! offset; `check-write` never permits more than the room left. Overwrites and removals are not
//! credited as they happen: when a charge does not fit, the folder is measured again by one walk
//! on the blocking pool (for a stream, `check-write` answers "not ready" and the walk runs in the
//! guest's poll), at most once a second, or at once after an unlink, rmdir, rename, set-size or
//! truncating open; what is charged but not yet on disk (a write in flight) is added to what a
//! walk measures. If it still does not fit, the operation fails with `insufficient-space` and an
//! `fs` denial `quota /data` (reason naming `max_bytes`/`max_entries`) is recorded. Through std,
//! a guest sees `StorageFull` from descriptor methods and `Uncategorized` (wasi-libc turns every
//! failed stream write into `EIO`) from `std::fs::write`. Limits: charges assume blocks of at
//! most 4 KiB and ignore file system metadata (extent trees, large directories); a file the guest
//! deleted while still holding it open keeps its blocks until the call ends, but a later walk no
//! longer counts them; the quota's denial may mask a `not-permitted` of an escaping `open-at`
//! with create (still a recorded `fs` denial). Mounts on a separate, size-limited file system
//! remain the stronger isolation for the host's own files (audit log, database).
//!
//! Refusals the guest's own libc makes before asking the host (it resolves some symlinks itself
//! and stops at a mount's edge) never reach the host and leave no record. `crates/host/tests/all/fs.rs` attacks all of this with the `hostile-fs` fixture;
//! `examples/notes` is the example to copy.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Growth charged to a quota: bytes of disk and new entries (files, folders, links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub bytes: u64,
    pub entries: u64,
    /// `set-size`: the new size, whose growth over the current size is charged.
    pub grow_to: Option<u64>,
}

impl Cost {
    pub const NONE: Cost = Cost {
        bytes: 0,
        entries: 0,
        grow_to: None,
    };
    /// A new entry: one inode, and up to one block in its folder (or of its own, for a folder).
    pub const ENTRY: Cost = Cost {
        bytes: BLOCK,
        entries: 1,
        grow_to: None,
    };

    pub fn bytes(bytes: u64) -> Cost {
        Cost {
            bytes,
            ..Cost::NONE
        }
    }

    pub fn grow_to(size: u64) -> Cost {
        Cost {
            grow_to: Some(size),
            ..Cost::NONE
        }
    }

    pub fn plus(self, bytes: u64) -> Cost {
        Cost {
            bytes: self.bytes.saturating_add(bytes),
            ..self
        }
    }
}

/// The allocation unit charged: a write may allocate every block it touches, whole. 4 KiB is
/// the block of ext4, xfs and tmpfs pages; on a file system with larger blocks a guest's
/// tiny scattered writes can use more disk than charged (see ARCHITECTURE.md).
pub const BLOCK: u64 = 4096;

/// Bytes of disk a write of `len` bytes at `off` may allocate: every block it touches. At an
/// unknown offset (append) the bytes may straddle one more block than they fill.
pub fn blocks_touched(off: Option<u64>, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let blocks = match off {
        Some(off) => {
            let first = off / BLOCK;
            let last = off.saturating_add(len - 1) / BLOCK;
            last - first + 1
        }
        None => len.div_ceil(BLOCK).saturating_add(1),
    };
    blocks.saturating_mul(BLOCK)
}

/// What a folder tree holds, as [`walk`] measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Per entry, the larger of its length and the disk it occupies (`st_blocks`): a sparse
    /// file counts at its full length, a folder at its blocks.
    pub bytes: u64,
    /// Files, folders, symlinks and anything else below the root (the root not counted).
    pub entries: u64,
}

/// Measures `root` without following symlinks. Entries that vanish while it runs (a
/// concurrent call removing them) are skipped; an unreadable folder is counted by its own
/// size only. Stops once more than `max_entries` are seen: the quota is exceeded then
/// whatever the rest holds, and a guest that swaps a folder for a symlink between the check
/// and the listing (which would lead the walk elsewhere) cannot make it walk far. Folders on
/// another device than `root` are not entered. Blocking: run it off the async executor.
pub fn walk(root: &Path, max_entries: u64) -> Usage {
    let mut u = Usage::default();
    let dev = std::fs::symlink_metadata(root).map(|m| m.dev()).ok();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if u.entries > max_entries {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            u.entries = u.entries.saturating_add(1);
            let on_disk = meta.blocks().saturating_mul(512);
            u.bytes = u.bytes.saturating_add(meta.len().max(on_disk));
            if meta.is_dir() && Some(meta.dev()) == dev {
                stack.push(path);
            }
        }
    }
    u
}

/// The file system quota of one (tenant, extension): how many bytes and entries its folder of
/// mounts may hold. Created by the host at load, measured then by [`walk`], and shared (it is
/// an `Arc`) by every call of the install, so concurrent calls draw from one budget.
///
/// Every growth is charged *before* it happens, conservatively: `write` the blocks it touches,
/// a stream write its bytes rounded up to whole blocks (plus one, at an unknown offset),
/// `set-size` the whole new size, each created entry one entry and one block. Overwrites and
/// removals are not credited as they happen: when a charge does not fit, the real usage is
/// measured again by one [`walk`] (on the blocking pool) and the charge retried. Walks are
/// rate-limited: at most one per [`RECOMPUTE_INTERVAL`], except right after an operation that
/// may have freed space (unlink, rmdir, rename, set-size, open with truncate).
#[derive(Clone)]
pub struct FsQuota {
    inner: Arc<QuotaInner>,
}

struct QuotaInner {
    /// The install's folder holding all its data mounts.
    root: PathBuf,
    max_bytes: u64,
    max_entries: u64,
    /// The denial target, e.g. `quota /data`.
    target: String,
    state: Mutex<Budget>,
}

struct Budget {
    /// Measured at the last walk plus everything charged since.
    used: Usage,
    /// Charged while a walk runs, added to its result (the walk may or may not have seen it).
    during_walk: Option<Usage>,
    last_walk: Instant,
    /// An operation that may free space succeeded since the last walk.
    freed: bool,
    /// A charge was refused since the last walk.
    exhausted: bool,
    /// Charged for changes not known to be on disk yet (a write issued, not completed): a walk
    /// may miss them, so it counts them on top of what it measures.
    in_flight: Usage,
}

/// Least time between two walks when nothing was freed: a guest hammering a full quota costs
/// one walk per interval, not one per write.
pub const RECOMPUTE_INTERVAL: Duration = Duration::from_secs(1);

impl fmt::Debug for FsQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsQuota")
            .field("root", &self.inner.root)
            .field("max_bytes", &self.inner.max_bytes)
            .field("max_entries", &self.inner.max_entries)
            .field("used", &self.used())
            .finish()
    }
}

impl FsQuota {
    /// Measures `root` now (blocking: called at load) and starts the budget from it. `mounts`
    /// names the read-write mounts, for the denial target.
    pub fn new(root: PathBuf, mounts: &str, max_bytes: u64, max_entries: u64) -> FsQuota {
        let used = walk(&root, max_entries);
        FsQuota {
            inner: Arc::new(QuotaInner {
                root,
                max_bytes,
                max_entries,
                target: format!("quota {mounts}"),
                state: Mutex::new(Budget {
                    used,
                    during_walk: None,
                    last_walk: Instant::now(),
                    freed: false,
                    exhausted: false,
                    in_flight: Usage::default(),
                }),
            }),
        }
    }

    /// The denial target, e.g. `quota /data`.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Usage as the budget counts it now (the last walk plus charges since).
    pub fn used(&self) -> Usage {
        self.inner.state.lock().map(|b| b.used).unwrap_or(Usage {
            bytes: u64::MAX,
            entries: u64::MAX,
        })
    }

    pub fn reason(&self) -> String {
        format!(
            "file quota of this extension reached: max_bytes = {}, max_entries = {}",
            self.inner.max_bytes, self.inner.max_entries
        )
    }

    /// Charges `cost` if it fits; otherwise notes that the guest is being refused. A poisoned
    /// lock refuses (fails closed).
    fn try_charge(&self, cost: Cost) -> bool {
        let Ok(mut b) = self.inner.state.lock() else {
            return false;
        };
        let bytes = b.used.bytes.saturating_add(cost.bytes);
        let entries = b.used.entries.saturating_add(cost.entries);
        if bytes <= self.inner.max_bytes && entries <= self.inner.max_entries {
            b.used = Usage { bytes, entries };
            b.in_flight.bytes = b.in_flight.bytes.saturating_add(cost.bytes);
            b.in_flight.entries = b.in_flight.entries.saturating_add(cost.entries);
            if let Some(d) = b.during_walk.as_mut() {
                d.bytes = d.bytes.saturating_add(cost.bytes);
                d.entries = d.entries.saturating_add(cost.entries);
            }
            return true;
        }
        b.exhausted = true;
        false
    }

    /// Bytes that may still be charged.
    pub fn room(&self) -> u64 {
        self.inner
            .state
            .lock()
            .map(|b| self.inner.max_bytes.saturating_sub(b.used.bytes))
            .unwrap_or(0)
    }

    /// Claims the next walk if one is due: none running, and the last one at least
    /// [`RECOMPUTE_INTERVAL`] ago, or any time after space may have been freed. Claimed under
    /// the lock, so concurrent refusals start one walk, not many.
    pub fn claim_walk(&self) -> Option<WalkGuard> {
        let mut b = self.inner.state.lock().ok()?;
        let due = if b.freed {
            Duration::ZERO
        } else {
            RECOMPUTE_INTERVAL
        };
        if b.during_walk.is_some() || b.last_walk.elapsed() < due {
            return None;
        }
        // What is in flight now may land before or after the walk passes it: counted.
        b.during_walk = Some(b.in_flight);
        Some(WalkGuard(Some(self.clone())))
    }

    /// Takes a walk's result: the budget becomes what is on disk plus what was charged while
    /// the walk ran (which it may or may not have seen: counted, to stay conservative).
    fn finish_walk(&self, measured: Usage) {
        if let Ok(mut b) = self.inner.state.lock() {
            let during = b.during_walk.take().unwrap_or_default();
            b.used = Usage {
                bytes: measured.bytes.saturating_add(during.bytes),
                entries: measured.entries.saturating_add(during.entries),
            };
            b.last_walk = Instant::now();
            b.freed = false;
            b.exhausted = false;
        }
    }

    /// Runs a claimed walk on the blocking pool and takes its result. If this future is
    /// dropped first (the call ends), the guard releases the claim.
    pub async fn remeasure(&self, guard: WalkGuard) {
        let root = self.inner.root.clone();
        let max = self.inner.max_entries;
        let measured = tokio::task::spawn_blocking(move || walk(&root, max))
            .await
            // A walk that panicked measured nothing: count the budget as full until the next.
            .unwrap_or(Usage {
                bytes: u64::MAX,
                entries: u64::MAX,
            });
        guard.finish(measured);
    }

    /// Charges `cost`, measuring the real usage once first if it does not fit and a walk is
    /// due. `Err`: the reason of the refusal.
    pub async fn charge(&self, cost: Cost) -> Result<(), String> {
        if self.try_charge(cost) {
            return Ok(());
        }
        if let Some(guard) = self.claim_walk() {
            self.remeasure(guard).await;
            if self.try_charge(cost) {
                return Ok(());
            }
        }
        Err(self.reason())
    }

    /// [`charge`](Self::charge) without waiting, for a stream's `write`: its `check-write`
    /// already measured again if needed (see a quota stream in the runtime).
    pub fn charge_now(&self, cost: Cost) -> Result<(), String> {
        if self.try_charge(cost) {
            Ok(())
        } else {
            Err(self.reason())
        }
    }

    /// Marks charged changes as done (on disk, or failed): later walks see them, if made.
    pub fn settle(&self, cost: Cost) {
        if let Ok(mut b) = self.inner.state.lock() {
            b.in_flight.bytes = b.in_flight.bytes.saturating_sub(cost.bytes);
            b.in_flight.entries = b.in_flight.entries.saturating_sub(cost.entries);
        }
    }

    /// Gives back a claimed walk that did not finish.
    fn release_claim(&self) {
        if let Ok(mut b) = self.inner.state.lock() {
            b.during_walk = None;
        }
    }

    /// After an operation that may have freed space: the next refusal may walk at once, and
    /// if the guest is already being refused, the walk happens now.
    pub async fn freed(&self) {
        let exhausted = match self.inner.state.lock() {
            Ok(mut b) => {
                b.freed = true;
                b.exhausted
            }
            Err(_) => false,
        };
        if exhausted && let Some(guard) = self.claim_walk() {
            self.remeasure(guard).await;
        }
    }
}

/// A claimed walk: applies its measure, or, if dropped without one (its task cancelled, or
/// the call that awaited it ended), releases the claim, so the budget is never left refusing
/// without ever measuring again.
pub struct WalkGuard(Option<FsQuota>);

impl WalkGuard {
    fn finish(mut self, measured: Usage) {
        if let Some(q) = self.0.take() {
            q.finish_walk(measured);
        }
    }
}

impl Drop for WalkGuard {
    fn drop(&mut self) {
        if let Some(q) = self.0.take() {
            q.release_claim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temporary folder, removed on drop (this crate has no
    /// `tempfile`).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!(
                "warden-fs-{name}-{}-{:?}",
                std::process::id(),
                Instant::now()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_write_is_charged_every_block_it_may_allocate() {
        assert_eq!(blocks_touched(Some(0), 0), 0);
        assert_eq!(blocks_touched(Some(0), 1), BLOCK);
        assert_eq!(blocks_touched(Some(0), BLOCK), BLOCK);
        // Straddling a block boundary touches two.
        assert_eq!(blocks_touched(Some(BLOCK - 1), 2), 2 * BLOCK);
        // Far out (a sparse file): only the blocks written.
        assert_eq!(blocks_touched(Some(1 << 40), 10), BLOCK);
        assert_eq!(blocks_touched(Some(u64::MAX), 10), BLOCK);
        // Unknown offset: one more block than filled.
        assert_eq!(blocks_touched(None, 1), 2 * BLOCK);
        assert_eq!(blocks_touched(None, 3 * BLOCK), 4 * BLOCK);
    }

    #[test]
    fn the_walk_counts_without_following_symlinks_and_stops_early() {
        let dir = Scratch::new("walk");
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![0u8; 10_000]).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![0u8; 100_000]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let u = walk(&root, 100);
        assert_eq!(u.entries, 4);
        assert!(u.bytes >= 10_000 && u.bytes < 100_000, "{u:?}");
        assert!(walk(&root, 1).entries > 1);
        // A sparse file counts at its length.
        let f = std::fs::File::create(root.join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        assert!(walk(&root, 100).bytes >= 1 << 30);
    }

    #[tokio::test]
    async fn the_budget_is_shared_refuses_when_spent_and_recovers_after_a_removal() {
        let dir = Scratch::new("budget");
        let root = dir.path().to_path_buf();
        let q = FsQuota::new(root.clone(), "/data", 10 * BLOCK, 5);
        let other = q.clone();
        assert!(q.charge(Cost::bytes(6 * BLOCK)).await.is_ok());
        assert_eq!(other.used().bytes, 6 * BLOCK);
        // The walk right after load is recent: no new measure, refused.
        let reason = other.charge(Cost::bytes(6 * BLOCK)).await.unwrap_err();
        assert!(reason.contains("max_bytes = 40960"), "{reason}");
        // Charged but not on disk (nothing was written): once settled, a removal lets the
        // next refusal measure at once, and the folder is empty.
        q.settle(Cost::bytes(6 * BLOCK));
        q.freed().await;
        assert!(other.charge(Cost::bytes(6 * BLOCK)).await.is_ok());
        assert_eq!(q.used().bytes, 6 * BLOCK);

        // Entries: five fit, the sixth does not.
        let e = FsQuota::new(root, "/data", u64::MAX, 5);
        for _ in 0..5 {
            assert!(e.charge(Cost::ENTRY).await.is_ok());
        }
        assert!(e.charge(Cost::ENTRY).await.is_err());
    }
}
