//! The file system (`wasi:filesystem`): only the host folders the host hands over, each
//! preopened at its guest path, read-write or read-only.
//!
//! Path resolution is Wasmtime's (cap-std): every lookup is relative to the preopened folder's
//! descriptor and may not leave it by `..`, an absolute path or a symlink (including ones the
//! guest creates and ones swapped in by a race: on Linux each component is opened with
//! `openat2(RESOLVE_BENEATH)` or walked by hand with `O_NOFOLLOW`); such a lookup fails with
//! `not-permitted`, and a symlink with an absolute target cannot even be created. A read-only
//! mount is checked by Wasmtime before any system call: every open for writing (create,
//! truncate, write, append), rename or hard link into or out of it, time change, removal,
//! mkdir and symlink fails with `not-permitted` (the host's tests try each one). WASI 0.2 has
//! no chmod or chown at all. The host process may be root, so folder modes are not relied on.
//!
//! Each mount is recorded as one grant per call (`fs`, `/data (read-write)`). Refusals are
//! recorded too: the path-taking and writing methods of `descriptor` are shadowed in the linker
//! by thin wrappers ([`add_to_linker`]) that call Wasmtime's implementation unchanged and, when
//! it answers `not-permitted`, `access` or `read-only` (an escape attempt, a write to a
//! read-only mount), record a denial `fs` with the operation and the path as the guest wrote
//! it. `write-via-stream` and `append-via-stream` are wrapped too: on a read-only mount
//! `open-at` already refuses a descriptor opened for writing, but a descriptor opened for
//! reading can still ask for a write stream, and that refusal must be audited as well.
//!
//! Read-write mounts have a quota ([`FsQuota`], one per (tenant, extension), shared by all its
//! concurrent calls): see [`FsQuota`] for what is counted and charged.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, Filesize, Host as _, HostDescriptor, NewTimestamp, OpenFlags,
    PathFlags,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::state::{CallState, Denials, allow, record};

/// One folder the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountDir {
    /// Absolute guest path, e.g. `/data`.
    pub guest: String,
    /// The host folder behind it; it must exist and belong to this (tenant, extension).
    pub host: PathBuf,
    pub readonly: bool,
}

/// Preopens every mount and records it as granted. A folder that cannot be opened fails the
/// call (never a silent narrower mount).
pub(crate) fn preopen(
    b: &mut WasiCtxBuilder,
    mounts: &[MountDir],
    ledger: &Denials,
) -> Result<(), String> {
    for m in mounts {
        let (perms, how) = if m.readonly {
            (FsPerms::ReadOnly, "read-only")
        } else {
            (FsPerms::ReadWrite, "read-write")
        };
        b.preopened_dir(&m.host, &m.guest, perms)
            .map_err(|e| format!("mounting {}: {e:#}", m.guest))?;
        allow(ledger, "fs", &format!("{} ({how})", m.guest));
    }
    Ok(())
}

/// Turns Wasmtime's answer into the guest's, recording a refusal as a denial.
fn answer<T>(
    state: &mut CallState,
    op: &str,
    path: &str,
    result: FsResult<T>,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    let err = match result {
        Ok(v) => return Ok(Ok(v)),
        Err(e) => e,
    };
    // A trap stays a trap; an error code goes to the guest.
    let code = state.filesystem().convert_error_code(err)?;
    let why = match code {
        ErrorCode::NotPermitted => Some("not-permitted"),
        ErrorCode::Access => Some("access"),
        ErrorCode::ReadOnly => Some("read-only"),
        _ => None,
    };
    if let Some(why) = why {
        let target = if path.is_empty() {
            op.to_string()
        } else {
            format!("{op} {path}")
        };
        record(&state.denials, "fs", &target, Some(why.to_string()));
    }
    Ok(Err(code))
}

type Fd = Resource<Descriptor>;

/// Wraps one `descriptor` method: `$args` are lifted as Wasmtime's own bindings lift them, the
/// call goes to Wasmtime's implementation, and the answer through [`answer`]. `charge` (the
/// descriptor whose mount is written and the [`Cost`]) is taken from the quota *before* the
/// call, so a refused growth changes nothing on disk; `freed` marks an operation that may have
/// released space (the budget may be recomputed after it).
macro_rules! wrap {
    ($inst:expr, $name:literal, $op:literal, ($($arg:ident : $ty:ty),*), $path:expr, $call:ident
     $(, charge = $charge:expr)? $(, freed = $freed:expr)?) => {
        $inst.func_wrap_async(
            concat!("[method]descriptor.", $name),
            |mut store, ($($arg,)*): ($($ty,)*)| {
                Box::new(async move {
                    let state = store.data_mut();
                    let path: String = $path;
                    #[allow(unused_mut, unused_assignments)]
                    let mut charged = None;
                    $(
                        let (on, cost): (&Fd, Cost) = $charge;
                        match charge(state, on, cost).await {
                            Ok(c) => charged = c,
                            Err(code) => return Ok((Err(code),)),
                        }
                    )?
                    let r = state.filesystem().$call($($arg),*).await;
                    if let Some((quota, cost)) = charged {
                        FsQuota::settle(&quota, cost);
                    }
                    $(
                        if r.is_ok() && $freed {
                            freed(state).await;
                        }
                    )?
                    Ok((answer(state, $op, &path, r)?,))
                })
            },
        )?;
    };
}

/// Wraps `write-via-stream` / `append-via-stream`: refusals are audited like every other
/// method (F7), and a stream on a quota'd install is replaced by a [`QuotaStream`].
macro_rules! wrap_stream {
    ($inst:expr, $name:literal, $op:literal, ($($arg:ident : $ty:ty),*), $call:ident, $pos:expr) => {
        $inst.func_wrap_async(
            concat!("[method]descriptor.", $name),
            |mut store, ($($arg,)*): ($($ty,)*)| {
                Box::new(async move {
                    let state = store.data_mut();
                    let pos: Option<Filesize> = $pos;
                    let r = match state.filesystem().$call($($arg),*) {
                        Ok(stream) => Ok(quota_stream(state, stream, pos)?),
                        Err(e) => Err(e),
                    };
                    Ok((answer(state, $op, "", r)?,))
                })
            },
        )?;
    };
}

/// Shadows the refusable `descriptor` methods of Wasmtime's `wasi:filesystem/types` with the
/// recording (and quota-charging) wrappers. Must be called after Wasmtime's WASI interfaces
/// are added.
pub(crate) fn add_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    let mut inst = l.instance("wasi:filesystem/types@0.2.12")?;
    wrap!(inst, "open-at", "open", (fd: Fd, pf: PathFlags, path: String, of: OpenFlags, df: DescriptorFlags), path.clone(), open_at,
        charge = (&fd, if of.contains(OpenFlags::CREATE) { Cost::ENTRY } else { Cost::NONE }),
        freed = of.contains(OpenFlags::TRUNCATE));
    wrap!(inst, "create-directory-at", "mkdir", (fd: Fd, path: String), path.clone(), create_directory_at,
        charge = (&fd, Cost::ENTRY));
    wrap!(inst, "stat-at", "stat", (fd: Fd, pf: PathFlags, path: String), path.clone(), stat_at);
    wrap!(inst, "set-times-at", "set-times", (fd: Fd, pf: PathFlags, path: String, a: NewTimestamp, m: NewTimestamp), path.clone(), set_times_at);
    wrap!(inst, "link-at", "link", (fd: Fd, pf: PathFlags, old: String, to: Fd, new: String), format!("{old} -> {new}"), link_at,
        charge = (&to, Cost::ENTRY));
    wrap!(inst, "readlink-at", "readlink", (fd: Fd, path: String), path.clone(), readlink_at);
    wrap!(inst, "remove-directory-at", "rmdir", (fd: Fd, path: String), path.clone(), remove_directory_at,
        freed = true);
    wrap!(inst, "rename-at", "rename", (fd: Fd, old: String, to: Fd, new: String), format!("{old} -> {new}"), rename_at,
        freed = true);
    wrap!(inst, "symlink-at", "symlink", (fd: Fd, old: String, new: String), format!("{new} -> {old}"), symlink_at,
        charge = (&fd, Cost::ENTRY.plus(old.len() as u64)));
    wrap!(inst, "unlink-file-at", "unlink", (fd: Fd, path: String), path.clone(), unlink_file_at,
        freed = true);
    wrap!(inst, "set-size", "set-size", (fd: Fd, size: Filesize), String::new(), set_size,
        charge = (&fd, Cost::grow_to(size)), freed = true);
    wrap!(inst, "set-times", "set-times", (fd: Fd, a: NewTimestamp, m: NewTimestamp), String::new(), set_times);
    wrap!(inst, "write", "write", (fd: Fd, buf: Vec<u8>, off: Filesize), String::new(), write,
        charge = (&fd, Cost::bytes(blocks_touched(Some(off), buf.len() as u64))));
    wrap_stream!(inst, "write-via-stream", "write-stream", (fd: Fd, off: Filesize), write_via_stream, Some(off));
    wrap_stream!(inst, "append-via-stream", "append-stream", (fd: Fd), append_via_stream, None);
    l.allow_shadowing(false);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Quota

/// Growth charged to a quota: bytes of disk and new entries (files, folders, links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cost {
    bytes: u64,
    entries: u64,
    /// `set-size`: the new size, whose growth over the current size is charged.
    grow_to: Option<u64>,
}

impl Cost {
    const NONE: Cost = Cost {
        bytes: 0,
        entries: 0,
        grow_to: None,
    };
    /// A new entry: one inode, and up to one block in its folder (or of its own, for a folder).
    const ENTRY: Cost = Cost {
        bytes: BLOCK,
        entries: 1,
        grow_to: None,
    };

    fn bytes(bytes: u64) -> Cost {
        Cost {
            bytes,
            ..Cost::NONE
        }
    }

    fn grow_to(size: u64) -> Cost {
        Cost {
            grow_to: Some(size),
            ..Cost::NONE
        }
    }

    fn plus(self, bytes: u64) -> Cost {
        Cost {
            bytes: self.bytes.saturating_add(bytes),
            ..self
        }
    }
}

/// The allocation unit charged: a write may allocate every block it touches, whole. 4 KiB is
/// the block of ext4, xfs and tmpfs pages; on a file system with larger blocks a guest's
/// tiny scattered writes can use more disk than charged (see ARCHITECTURE.md).
const BLOCK: u64 = 4096;

/// Bytes of disk a write of `len` bytes at `off` may allocate: every block it touches. At an
/// unknown offset (append) the bytes may straddle one more block than they fill.
fn blocks_touched(off: Option<u64>, len: u64) -> u64 {
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

    /// Usage as the budget counts it now (the last walk plus charges since).
    pub fn used(&self) -> Usage {
        self.inner.state.lock().map(|b| b.used).unwrap_or(Usage {
            bytes: u64::MAX,
            entries: u64::MAX,
        })
    }

    fn reason(&self) -> String {
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
    fn room(&self) -> u64 {
        self.inner
            .state
            .lock()
            .map(|b| self.inner.max_bytes.saturating_sub(b.used.bytes))
            .unwrap_or(0)
    }

    /// Claims the next walk if one is due: none running, and the last one at least
    /// [`RECOMPUTE_INTERVAL`] ago, or any time after space may have been freed. Claimed under
    /// the lock, so concurrent refusals start one walk, not many.
    fn claim_walk(&self) -> Option<WalkGuard> {
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
    async fn remeasure(&self, guard: WalkGuard) {
        let root = self.inner.root.clone();
        let max = self.inner.max_entries;
        let measured = wasmtime_wasi::runtime::spawn_blocking(move || walk(&root, max)).await;
        guard.finish(measured);
    }

    /// Charges `cost`, measuring the real usage once first if it does not fit and a walk is
    /// due. `Err`: the reason of the refusal.
    pub(crate) async fn charge(&self, cost: Cost) -> Result<(), String> {
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
    /// already measured again if needed (see [`QuotaStream`]).
    fn charge_now(&self, cost: Cost) -> Result<(), String> {
        if self.try_charge(cost) {
            Ok(())
        } else {
            Err(self.reason())
        }
    }

    /// Marks charged changes as done (on disk, or failed): later walks see them, if made.
    fn settle(&self, cost: Cost) {
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
    async fn freed(&self) {
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
struct WalkGuard(Option<FsQuota>);

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

/// Charges `cost` to the call's quota for a change through `fd`. Nothing is charged without a
/// quota, for a descriptor on a read-only mount (Wasmtime refuses the change itself, and that
/// refusal is audited as `not-permitted`), or for an unknown descriptor (Wasmtime traps).
/// A refusal is audited and answered with `insufficient-space`.
async fn charge(
    state: &mut CallState,
    fd: &Fd,
    cost: Cost,
) -> Result<Option<(FsQuota, Cost)>, ErrorCode> {
    let Some(quota) = state.fs_quota.clone() else {
        return Ok(None);
    };
    let writable = match state.filesystem().table.get(fd) {
        Ok(Descriptor::File(f)) => !f.perms.write_not_permitted(),
        Ok(Descriptor::Dir(d)) => !d.perms.write_not_permitted(),
        Err(_) => false,
    };
    if !writable {
        return Ok(None);
    }
    let mut cost = cost;
    if let Some(size) = cost.grow_to.take() {
        cost.bytes = cost.bytes.saturating_add(growth(state, fd, size).await);
    }
    if cost == Cost::NONE {
        return Ok(None);
    }
    match quota.charge(cost).await {
        Ok(()) => Ok(Some((quota, cost))),
        Err(reason) => {
            record(&state.denials, "fs", &quota.inner.target, Some(reason));
            Err(ErrorCode::InsufficientSpace)
        }
    }
}

/// How much `set-size` to `size` grows the file behind `fd`: shrinking is free (a guest over
/// its quota must be able to cut a file down), and if the current size cannot be read the
/// whole new size is charged.
async fn growth(state: &mut CallState, fd: &Fd, size: Filesize) -> u64 {
    let file = match state.filesystem().table.get(fd) {
        Ok(Descriptor::File(f)) => Arc::clone(&f.file),
        _ => return size,
    };
    // `fstat` off the executor, like Wasmtime's own file system calls.
    let len = wasmtime_wasi::runtime::spawn_blocking(move || file.metadata().map(|m| m.len()))
        .await
        .unwrap_or(0);
    size.saturating_sub(len)
}

async fn freed(state: &mut CallState) {
    if let Some(q) = state.fs_quota.clone() {
        q.freed().await;
    }
}

/// Replaces a new output stream in the call's table by a [`QuotaStream`] around it, when the
/// install has a quota.
fn quota_stream(
    state: &mut CallState,
    stream: Resource<DynOutputStream>,
    pos: Option<Filesize>,
) -> wasmtime::Result<Resource<DynOutputStream>> {
    let Some(quota) = state.fs_quota.clone() else {
        return Ok(stream);
    };
    let denials = state.denials.clone();
    let table = state.filesystem().table;
    // Just created, so nothing borrows or descends from it yet.
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(QuotaStream {
        inner,
        quota,
        denials,
        pos,
        walk: None,
        unsettled: Cost::NONE,
    });
    Ok(table.push(wrapped)?)
}

/// An output stream on a file that charges each write to the quota before passing it on.
///
/// `check-write` never permits more than the room left in the budget. When none is left and a
/// new measure is due, it answers 0 (not ready) and the walk runs in `ready` (the guest's
/// poll, which may wait); when none is left and no walk is due, it fails with
/// `insufficient-space`. So a guest writing through std never sees a refusal that a fresh
/// measure would have avoided.
struct QuotaStream {
    inner: DynOutputStream,
    quota: FsQuota,
    denials: Denials,
    /// Where the next write lands (`write-via-stream`); `None` for an append.
    pos: Option<u64>,
    /// A walk claimed by `check-write`, run by the next `ready`.
    walk: Option<WalkGuard>,
    /// Charged for writes passed on and not yet known to be complete.
    unsettled: Cost,
}

impl QuotaStream {
    fn cost(&self, len: usize) -> Cost {
        Cost::bytes(blocks_touched(self.pos, len as u64))
    }

    /// The inner stream finished every write passed on (it is ready again, or failed).
    fn settle(&mut self) {
        let done = std::mem::replace(&mut self.unsettled, Cost::NONE);
        if done != Cost::NONE {
            self.quota.settle(done);
        }
    }

    /// Charges `cost` for a write about to be passed on, or refuses it.
    fn charge_now(&mut self, cost: Cost) -> StreamResult<()> {
        match self.quota.charge_now(cost) {
            Ok(()) => {
                self.unsettled = self.unsettled.plus(cost.bytes);
                Ok(())
            }
            Err(reason) => Err(self.refuse(reason)),
        }
    }

    fn advance(&mut self, len: usize) {
        if let Some(p) = self.pos.as_mut() {
            *p = p.saturating_add(len as u64);
        }
    }

    /// Audits the refusal; the guest sees `last-operation-failed` whose error code (through
    /// `filesystem-error-code`) is `insufficient-space`, as for a full disk.
    fn refuse(&self, reason: String) -> StreamError {
        record(&self.denials, "fs", &self.quota.inner.target, Some(reason));
        StreamError::LastOperationFailed(std::io::Error::from_raw_os_error(ENOSPC).into())
    }
}

/// Linux's `ENOSPC`, which Wasmtime maps to `insufficient-space`.
const ENOSPC: i32 = 28;

#[async_trait::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        if let Some(guard) = self.walk.take() {
            self.quota.remeasure(guard).await;
        }
        self.inner.ready().await;
    }
}

#[async_trait::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge_now(self.cost(bytes.len()))?;
        self.advance(bytes.len());
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        let cost = self.cost(bytes.len());
        if let Err(reason) = self.quota.charge(cost).await {
            return Err(self.refuse(reason));
        }
        self.unsettled = self.unsettled.plus(cost.bytes);
        self.advance(bytes.len());
        let r = self.inner.blocking_write_and_flush(bytes).await;
        self.settle();
        r
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        self.charge_now(self.cost(nelem))?;
        self.advance(nelem);
        self.inner.write_zeroes(nelem)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let permit = match self.inner.check_write() {
            Ok(p) => p,
            Err(e) => {
                self.settle();
                return Err(e);
            }
        };
        if permit > 0 {
            // Wasmtime's file stream permits again only once its last write is done.
            self.settle();
        }
        if permit == 0 || self.walk.is_some() {
            return Ok(0);
        }
        // The longest write whose charge fits: one spare block for a write that straddles
        // one more block than it fills.
        let room = self.quota.room().saturating_sub(BLOCK) / BLOCK * BLOCK;
        if room > 0 {
            return Ok(permit.min(usize::try_from(room).unwrap_or(usize::MAX)));
        }
        match self.quota.claim_walk() {
            Some(guard) => {
                self.walk = Some(guard);
                Ok(0)
            }
            None => Err(self.refuse(self.quota.reason())),
        }
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
        self.settle();
    }
}

impl Drop for QuotaStream {
    fn drop(&mut self) {
        // Dropped streams are cancelled first (any write finished or abandoned).
        self.settle();
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
