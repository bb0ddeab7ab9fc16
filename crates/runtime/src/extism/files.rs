//! Files for plug-ins that use WASI preview 1 (`[extism] wasi = true`): the mounts of
//! components, under the same rules (`crate::fs` says them), on Wasmtime's preview 1.
//!
//! Wasmtime's preview 1 runs on its `wasi:filesystem` implementation, so path resolution
//! (cap-std: no `..`, absolute path or symlink out of a mount) and the read-only checks are the
//! components' own. What `crate::fs` adds by shadowing `descriptor` methods is added here by
//! shadowing the preview 1 functions that reach a file, each calling Wasmtime's unchanged:
//!
//! - **Mounts**: the granted ones preopened at their guest paths (each recorded as a grant),
//!   then the denied ones, read-only on an empty folder; every operation through a denied
//!   mount is refused (`perm`) and recorded with why. Which mount a descriptor is in is kept
//!   by descriptor number: the preopens in order from 3, then whatever `path_open` opens in
//!   one, moved by `fd_renumber`, forgotten by `fd_close`.
//! - **Refusals audited**: an answer of `perm`, `acces`, `rofs` or `notcapable` (an escape, a
//!   write to a read-only mount) is recorded as an `fs` denial naming the operation, the path
//!   as the plug-in wrote it and the mount.
//! - **The quota** of the install's read-write mounts, charged before each growth as
//!   `crate::fs` charges it: `fd_write` and `fd_pwrite` every block they touch or their growth
//!   of the file, whichever is more (Wasmtime writes the first non-empty buffer only; an
//!   append one block more), `fd_filestat_set_size` its growth, each created entry (`path_open`
//!   with `creat`, `path_create_directory`, `path_link`, `path_symlink`) one entry and a block.
//!   A refusal answers `nospc`. A write to a file deleted while open is refused.
//! - **Open files**: at most `crate::fs::MAX_OPEN_FILES` descriptors at once, preopens
//!   included (then `mfile`, audited).
//! - **Deleted open files**: every file a call opens carries a shared `flock`, as components'
//!   do, found in the call's resource table after each `path_open`; unlinking (or renaming
//!   over) a last link that some call holds open holds its bytes in the quota.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use wasmtime::{AsContextMut as _, Caller, Linker};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::types::{Errno, Fd, Fdflags, Filetype, Lookupflags, Oflags, Rights};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1};
use wasmtime_wasi::{WasiCtxBuilder, WasiView as _};
use wiggle::{GuestMemory, GuestPtr};

use warden_call::text::{cut, escape};
use warden_call::{Capability, HostFailure, Ledger};
use warden_fs::{Cost, FsQuota, blocks_touched};

use crate::caps::CallCaps;
use crate::fs::{MAX_OPEN_FILES, OPEN_FILES_TARGET, UNLINKED, denial_target, open_files_reason};

/// What the shadowed functions need of a call's state: its preview 1 context, its files and
/// its ledger, and a way to end the call (so that this module does not name the state).
pub(crate) trait FilesState: Send + 'static {
    fn wasi_parts(&mut self) -> (&mut WasiP1Ctx, &mut Files, &Ledger);
    fn trap(&mut self, message: String) -> wasmtime::Error;
}

const WASI_P1: &str = "wasi_snapshot_preview1";
/// The first descriptor after stdin, stdout and stderr: the first preopen.
const FIRST_PREOPEN: u32 = 3;
/// Most bytes of a path from the plug-in kept in an audit record.
const PATH_SHOWN: usize = 256;

/// Longest symlink target taken (Linux's `PATH_MAX`): it is copied to the host.
const MAX_LINK_TARGET: u32 = 4096;

const PERM: i32 = Errno::Perm as i32;
const NOSPC: i32 = Errno::Nospc as i32;

/// A mount a descriptor is in.
struct Mount {
    guest: Arc<str>,
    /// Granted read-write: changes through it are charged to the quota.
    writable: bool,
    /// Not granted: why every operation through it is refused.
    denied: Option<String>,
}

/// One call's mounts, quota and open files (see the module's text).
#[derive(Default)]
pub(crate) struct Files {
    fds: HashMap<u32, Arc<Mount>>,
    quota: Option<FsQuota>,
    /// Files of this call that carry their shared lock, by address (the weak pointer keeps
    /// the address from being reused while it is listed).
    marked: HashMap<usize, Weak<std::fs::File>>,
}

impl Files {
    /// Preopens `caps`' mounts (granted, then denied) on `b` and records each granted one.
    pub(crate) fn preopen(
        b: &mut WasiCtxBuilder,
        caps: &CallCaps,
        ledger: &Ledger,
    ) -> Result<Files, HostFailure> {
        crate::fs::preopen(b, &caps.mounts, ledger)?;
        let denied = crate::fs::preopen_denied(b, &caps.denied_mounts, caps.withheld)?;
        let granted = caps.mounts.iter().map(|m| Mount {
            guest: Arc::from(m.guest.as_str()),
            writable: !m.readonly,
            denied: None,
        });
        let denied = denied.into_iter().map(|(guest, why)| Mount {
            guest,
            writable: false,
            denied: Some(why),
        });
        let fds: HashMap<u32, Arc<Mount>> = (FIRST_PREOPEN..)
            .zip(granted.chain(denied).map(Arc::new))
            .collect();
        Ok(Files {
            fds,
            quota: caps.fs_quota.clone(),
            marked: HashMap::new(),
        })
    }

    fn mount(&self, fd: i32) -> Option<Arc<Mount>> {
        self.fds.get(&(fd as u32)).cloned()
    }

    /// Refuses (and records) an operation through a denied mount.
    fn refused(
        ledger: &Ledger,
        op: &str,
        path: &str,
        mounts: &[Option<&Arc<Mount>>],
    ) -> Option<i32> {
        let m = mounts.iter().flatten().find(|m| m.denied.is_some())?;
        let target = denial_target(op, path, Some(&m.guest));
        ledger.deny(Capability::Filesystem, &target, m.denied.clone());
        Some(PERM)
    }

    /// Wasmtime's answer, recorded as a denial when it is a refusal.
    fn answer(
        ledger: &Ledger,
        errno: i32,
        op: &str,
        path: &str,
        mount: Option<&Arc<Mount>>,
    ) -> i32 {
        let read_only = mount.is_some_and(|m| !m.writable);
        let why = match errno {
            e if e == Errno::Perm as i32 || e == Errno::Notcapable as i32 => "not-permitted",
            e if e == Errno::Acces as i32 => "access",
            e if e == Errno::Rofs as i32 => "read-only",
            // A change through a descriptor of a read-only mount (opened for reading): Wasmtime
            // answers `badf`, a refusal all the same (red team, session 16: not audited).
            e if e == Errno::Badf as i32 && read_only && CHANGES.contains(&op) => "read-only",
            _ => return errno,
        };
        let target = denial_target(op, path, mount.map(|m| &*m.guest));
        ledger.deny(Capability::Filesystem, &target, Some(why.to_string()));
        errno
    }

    /// Charges `cost` for a change in `mount`, if it is a read-write mount under a quota. A
    /// refusal is audited and answered with `nospc`.
    async fn charge(
        &self,
        ledger: &Ledger,
        mount: Option<&Arc<Mount>>,
        cost: Cost,
    ) -> Result<Charged, i32> {
        let Some(quota) = self.quota_for(mount) else {
            return Ok(Charged(None));
        };
        if cost == Cost::NONE {
            return Ok(Charged(None));
        }
        match quota.charge(cost).await {
            Ok(()) => Ok(Charged(Some((quota.clone(), cost)))),
            Err(reason) => {
                ledger.deny(Capability::Filesystem, quota.target(), Some(reason));
                Err(NOSPC)
            }
        }
    }

    fn quota_for(&self, mount: Option<&Arc<Mount>>) -> Option<&FsQuota> {
        mount.filter(|m| m.writable)?;
        self.quota.as_ref()
    }

    async fn freed(&self) {
        if let Some(q) = &self.quota {
            q.freed().await;
        }
    }

    /// Gives every file the call has open and not yet locked its shared lock (see
    /// `crate::fs::mark_open`).
    fn mark_open(&mut self, ctx: &mut WasiP1Ctx) {
        if self.quota.is_none() {
            return;
        }
        self.marked.retain(|_, w| w.strong_count() > 0);
        for entry in ctx.ctx().table.iter_mut() {
            if let Some(Descriptor::File(f)) = entry.downcast_ref::<Descriptor>() {
                let key = Arc::as_ptr(&f.file) as usize;
                if let std::collections::hash_map::Entry::Vacant(v) = self.marked.entry(key) {
                    // A file someone holds exclusively (a probe, for a moment) stays unmarked.
                    let _ = f.file.try_lock_shared();
                    v.insert(Arc::downgrade(&f.file));
                }
            }
        }
    }

    /// The open files of the call that carry no lock of this call's (after a `mark_open`,
    /// only one opened since).
    fn unmarked(&self, ctx: &mut WasiP1Ctx) -> Vec<Arc<std::fs::File>> {
        let mut found = Vec::new();
        for entry in ctx.ctx().table.iter_mut() {
            if let Some(Descriptor::File(f)) = entry.downcast_ref::<Descriptor>()
                && !self.marked.contains_key(&(Arc::as_ptr(&f.file) as usize))
            {
                found.push(Arc::clone(&f.file));
            }
        }
        found
    }

    /// What is at a name about to be made, looked at only under a quota: whether something
    /// is (`Ok(true)`: nothing may be made), or why the look failed (`Err`: answered so,
    /// nothing made). See `crate::fs::Look`, of which this is preview 1's form.
    async fn look(
        &self,
        ctx: &mut WasiP1Ctx,
        mem: &mut GuestMemory<'_>,
        dir: i32,
        follow: Lookupflags,
        path: GuestPtr<str>,
    ) -> wasmtime::Result<Result<bool, Errno>> {
        if self.quota.is_none() {
            return Ok(Ok(false));
        }
        match ctx
            .path_filestat_get(mem, Fd::from(dir as u32), follow, path)
            .await
        {
            Ok(_) => Ok(Ok(true)),
            Err(e) => match e.downcast()? {
                Errno::Noent => Ok(Ok(false)),
                errno => Ok(Err(errno)),
            },
        }
    }

    /// The size of the file at `path` in `dir` if removing it (or renaming `source` over it)
    /// frees nothing a walk can see while some call holds it open: a regular file with one
    /// link, opened by a probe whose exclusive lock fails (a call's shared lock is there). See
    /// `crate::fs::last_link_size`, of which this is preview 1's form.
    async fn last_link_size(
        &mut self,
        ctx: &mut WasiP1Ctx,
        mem: &mut GuestMemory<'_>,
        dir: i32,
        path: GuestPtr<str>,
        source: Option<(i32, GuestPtr<str>)>,
    ) -> Option<u64> {
        self.quota.as_ref()?;
        let dir = Fd::from(dir as u32);
        let stat = ctx
            .path_filestat_get(mem, dir, Lookupflags::empty(), path)
            .await
            .ok()?;
        if let Some((src_dir, src)) = source {
            let s = ctx
                .path_filestat_get(mem, Fd::from(src_dir as u32), Lookupflags::empty(), src)
                .await
                .ok();
            // A rename of a file onto itself removes nothing.
            if s.is_some_and(|s| (s.dev, s.ino) == (stat.dev, stat.ino)) {
                return None;
            }
        }
        if stat.filetype != Filetype::RegularFile || stat.nlink != 1 || stat.size == 0 {
            return None;
        }
        self.mark_open(ctx);
        let probe = ctx
            .path_open(
                mem,
                dir,
                Lookupflags::empty(),
                path,
                Oflags::empty(),
                Rights::FD_READ,
                Rights::empty(),
                Fdflags::empty(),
            )
            .await;
        let Ok(probe) = probe else {
            // Cannot tell: hold it (conservative).
            return Some(stat.size);
        };
        let held = match self.unmarked(ctx).as_slice() {
            [file] => match file.try_lock() {
                Ok(()) => {
                    let _ = file.unlock();
                    false
                }
                Err(_) => true,
            },
            _ => true,
        };
        let _ = ctx.fd_close(mem, probe).await;
        held.then_some(stat.size)
    }
}

/// A charge taken before a change, settled once it is done (or failed).
struct Charged(Option<(FsQuota, Cost)>);

impl Drop for Charged {
    fn drop(&mut self) {
        if let Some((quota, cost)) = self.0.take() {
            quota.settle(cost);
        }
    }
}

/// What a write of `len` bytes through `fd` costs (see the module's text); `at`: `fd_pwrite`'s
/// offset. `Err`: the file was deleted while open.
async fn write_cost(
    ctx: &mut WasiP1Ctx,
    mem: &mut GuestMemory<'_>,
    fd: i32,
    len: u64,
    at: Option<u64>,
) -> Result<Cost, &'static str> {
    let fd = Fd::from(fd as u32);
    let (Ok(fdstat), Ok(stat)) = (
        ctx.fd_fdstat_get(mem, fd).await,
        ctx.fd_filestat_get(mem, fd).await,
    ) else {
        // Not a descriptor: Wasmtime answers `badf`.
        return Ok(Cost::NONE);
    };
    if fdstat.fs_filetype != Filetype::RegularFile {
        return Ok(Cost::NONE);
    }
    if stat.nlink == 0 {
        return Err(UNLINKED);
    }
    // Linux's `pwrite` ignores the offset on a file opened for appending, and so does Wasmtime.
    let pos = if fdstat.fs_flags.contains(Fdflags::APPEND) {
        None
    } else {
        match at {
            Some(at) => Some(at),
            None => ctx.fd_tell(mem, fd).ok(),
        }
    };
    let growth = pos.map_or(0, |p| p.saturating_add(len).saturating_sub(stat.size));
    Ok(Cost::bytes(blocks_touched(pos, len).max(growth)))
}

/// The length of the first non-empty buffer of an iovec list (what Wasmtime writes), 0 if the
/// list cannot be read (Wasmtime then faults the call).
fn first_buffer_len(mem: &GuestMemory<'_>, iovs: i32, n: i32) -> u64 {
    for i in 0..n as u32 {
        let Some(at) = i
            .checked_mul(8)
            .and_then(|o| (iovs as u32).checked_add(o))
            .and_then(|a| a.checked_add(4))
        else {
            return 0;
        };
        match u32_at(mem, at) {
            Some(0) => continue,
            Some(len) => return u64::from(len),
            None => return 0,
        }
    }
    0
}

fn bytes_at<'m>(mem: &'m GuestMemory<'_>, at: u32, len: usize) -> Option<&'m [u8]> {
    match mem {
        GuestMemory::Unshared(data) => data.get(at as usize..)?.get(..len),
        // A plug-in's memory is never shared (no threads).
        GuestMemory::Shared(_) => None,
    }
}

fn u32_at(mem: &GuestMemory<'_>, at: u32) -> Option<u32> {
    let b = bytes_at(mem, at, 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A path from the plug-in as an audit record shows it: escaped, cut.
fn shown(mem: &GuestMemory<'_>, ptr: i32, len: i32) -> String {
    let len = (len as u32 as usize).min(PATH_SHOWN);
    let bytes = bytes_at(mem, ptr as u32, len).unwrap_or_default();
    cut(&escape(bytes), PATH_SHOWN)
}

fn guest_str(ptr: i32, len: i32) -> GuestPtr<str> {
    GuestPtr::new((ptr as u32, len as u32))
}

/// Shadows one preview 1 function: `$body` runs with Wasmtime's context, the call's [`Files`]
/// and ledger, and the plug-in's memory, as Wasmtime's own glue would run it.
macro_rules! shadow {
    ($l:expr, $name:literal, ($($arg:ident : $ty:ty),*), |$ctx:ident, $files:ident, $ledger:ident, $mem:ident| $body:block) => {
        $l.func_wrap_async(WASI_P1, $name, |mut c: Caller<'_, T>, ($($arg,)*): ($($ty,)*)| {
            Box::new(async move {
                let Some(wasmtime::Extern::Memory(memory)) = c.get_export("memory") else {
                    return Err(c
                        .data_mut()
                        .trap(concat!($name, ": the plug-in exports no memory").to_string()));
                };
                let fuel = c.as_context_mut().hostcall_fuel();
                let (data, state) = memory.data_and_store_mut(&mut c);
                let ($ctx, $files, $ledger) = state.wasi_parts();
                WasiSnapshotPreview1::set_hostcall_fuel($ctx, fuel);
                #[allow(unused_mut)]
                let mut $mem = GuestMemory::Unshared(data);
                $body
            })
        })?;
    };
}

/// Charges a write of `iovs` (`n` buffers) to `fd` in `mount`, at `at` (else where the file's
/// position or append mode puts it): nothing outside a quota; `Err(errno)` when refused
/// (audited).
async fn charge_write(
    files: &Files,
    ledger: &Ledger,
    ctx: &mut WasiP1Ctx,
    mem: &mut GuestMemory<'_>,
    mount: Option<&Arc<Mount>>,
    (fd, iovs, n): (i32, i32, i32),
    at: Option<u64>,
) -> Result<Charged, i32> {
    let Some(quota) = files.quota_for(mount) else {
        return Ok(Charged(None));
    };
    let len = first_buffer_len(mem, iovs, n);
    match write_cost(ctx, mem, fd, len, at).await {
        Ok(cost) => files.charge(ledger, mount, cost).await,
        Err(why) => {
            ledger.deny(Capability::Filesystem, quota.target(), Some(why.into()));
            Err(NOSPC)
        }
    }
}

/// The operations through a descriptor that change a file.
const CHANGES: &[&str] = &["write", "set-size", "set-times"];

/// Shadows the preview 1 functions that reach a file (see the module's text). Must be called
/// after Wasmtime's preview 1 is added, with shadowing allowed.
pub(crate) fn add_to_linker<T: FilesState>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    shadow!(l, "fd_close", (fd: i32), |ctx, files, _ledger, mem| {
        let r = p1::fd_close(ctx, &mut mem, fd).await?;
        if r == 0 {
            files.fds.remove(&(fd as u32));
        }
        Ok(r)
    });
    // A denied mount's folder is refused whole, its own attributes too.
    shadow!(l, "fd_filestat_get", (fd: i32, buf: i32), |ctx, files, ledger, mem| {
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "stat", "", &[mount.as_ref()]) {
            return Ok(e);
        }
        p1::fd_filestat_get(ctx, &mut mem, fd, buf).await
    });
    shadow!(l, "fd_renumber", (from: i32, to: i32), |ctx, files, _ledger, mem| {
        let r = p1::fd_renumber(ctx, &mut mem, from, to).await?;
        if r == 0 && from != to {
            match files.fds.remove(&(from as u32)) {
                Some(m) => files.fds.insert(to as u32, m),
                None => files.fds.remove(&(to as u32)),
            };
        }
        Ok(r)
    });
    shadow!(l, "fd_write", (fd: i32, iovs: i32, n: i32, out: i32), |ctx, files, ledger, mem| {
        let mount = files.mount(fd);
        let charged = match charge_write(files, ledger, ctx, &mut mem, mount.as_ref(), (fd, iovs, n), None).await {
            Ok(c) => c,
            Err(e) => return Ok(e),
        };
        let r = p1::fd_write(ctx, &mut mem, fd, iovs, n, out).await;
        drop(charged);
        Ok(Files::answer(ledger, r?, "write", "", mount.as_ref()))
    });
    shadow!(l, "fd_pwrite", (fd: i32, iovs: i32, n: i32, off: i64, out: i32), |ctx, files, ledger, mem| {
        let mount = files.mount(fd);
        let charged = match charge_write(files, ledger, ctx, &mut mem, mount.as_ref(), (fd, iovs, n), Some(off as u64)).await {
            Ok(c) => c,
            Err(e) => return Ok(e),
        };
        let r = p1::fd_pwrite(ctx, &mut mem, fd, iovs, n, off, out).await;
        drop(charged);
        Ok(Files::answer(ledger, r?, "write", "", mount.as_ref()))
    });
    shadow!(l, "fd_filestat_set_size", (fd: i32, size: i64), |ctx, files, ledger, mem| {
        let mount = files.mount(fd);
        let charged = match files.quota_for(mount.as_ref()) {
            None => Charged(None),
            Some(quota) => match ctx.fd_filestat_get(&mut mem, Fd::from(fd as u32)).await {
                Ok(stat) if stat.nlink == 0 && stat.filetype == Filetype::RegularFile => {
                    ledger.deny(Capability::Filesystem, quota.target(), Some(UNLINKED.into()));
                    return Ok(NOSPC);
                }
                Ok(stat) => {
                    let growth = (size as u64).saturating_sub(stat.size);
                    match files.charge(ledger, mount.as_ref(), Cost::bytes(growth)).await {
                        Ok(c) => c,
                        Err(e) => return Ok(e),
                    }
                }
                Err(_) => Charged(None),
            },
        };
        let r = p1::fd_filestat_set_size(ctx, &mut mem, fd, size).await;
        drop(charged);
        let r = r?;
        if r == 0 {
            files.freed().await;
        }
        Ok(Files::answer(ledger, r, "set-size", "", mount.as_ref()))
    });
    shadow!(l, "fd_filestat_set_times", (fd: i32, a: i64, m: i64, fl: i32), |ctx, files, ledger, mem| {
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "set-times", "", &[mount.as_ref()]) {
            return Ok(e);
        }
        let r = p1::fd_filestat_set_times(ctx, &mut mem, fd, a, m, fl).await?;
        Ok(Files::answer(ledger, r, "set-times", "", mount.as_ref()))
    });
    shadow!(l, "fd_readdir", (fd: i32, buf: i32, len: i32, cookie: i64, used: i32), |ctx, files, ledger, mem| {
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "list", "", &[mount.as_ref()]) {
            return Ok(e);
        }
        let r = p1::fd_readdir(ctx, &mut mem, fd, buf, len, cookie, used).await?;
        Ok(Files::answer(ledger, r, "list", "", mount.as_ref()))
    });
    shadow!(l, "path_open", (fd: i32, lf: i32, p: i32, n: i32, of: i32, base: i64, inh: i64, ff: i32, out: i32), |ctx, files, ledger, mem| {
        let path = shown(&mem, p, n);
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "open", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        if files.fds.len() >= MAX_OPEN_FILES {
            ledger.deny(Capability::Filesystem, OPEN_FILES_TARGET, Some(open_files_reason()));
            return Ok(Errno::Mfile as i32);
        }
        let oflags = Oflags::from_bits_truncate(of as u16);
        let mut of = of;
        // Under a quota, only a name found absent is made (see `Files::look`): `creat` with
        // `excl` (which fails on any name there, a symlink included) answers `exist` at once
        // if one is there, and an open loses its `creat`, so no entry is made uncharged.
        if oflags.contains(Oflags::CREAT) {
            let excl = oflags.contains(Oflags::EXCL);
            let follow = if excl {
                Lookupflags::empty()
            } else {
                Lookupflags::from_bits_truncate(lf as u32)
            };
            match files.look(ctx, &mut mem, fd, follow, guest_str(p, n)).await? {
                Ok(false) => {}
                Ok(true) if excl => return Ok(Errno::Exist as i32),
                Ok(true) => of &= !i32::from(Oflags::CREAT.bits()),
                Err(errno) => {
                    return Ok(Files::answer(ledger, errno as i32, "open", &path, mount.as_ref()));
                }
            }
        }
        let creates = Oflags::from_bits_truncate(of as u16).contains(Oflags::CREAT);
        let cost = if creates { Cost::ENTRY } else { Cost::NONE };
        let charged = match files.charge(ledger, mount.as_ref(), cost).await {
            Ok(c) => c,
            Err(e) => return Ok(e),
        };
        let r = p1::path_open(ctx, &mut mem, fd, lf, p, n, of, base, inh, ff, out).await;
        drop(charged);
        let r = r?;
        if r == 0 {
            if let (Some(new), Some(m)) = (u32_at(&mem, out as u32), &mount) {
                files.fds.insert(new, Arc::clone(m));
            }
            files.mark_open(ctx);
            if oflags.contains(Oflags::TRUNC) {
                files.freed().await;
            }
        }
        Ok(Files::answer(ledger, r, "open", &path, mount.as_ref()))
    });
    shadow!(l, "path_create_directory", (fd: i32, p: i32, n: i32), |ctx, files, ledger, mem| {
        let path = shown(&mem, p, n);
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "mkdir", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        // Only a name found absent is made (see `Files::look`).
        match files.look(ctx, &mut mem, fd, Lookupflags::empty(), guest_str(p, n)).await? {
            Ok(false) => {}
            Ok(true) => return Ok(Errno::Exist as i32),
            Err(errno) => {
                return Ok(Files::answer(ledger, errno as i32, "mkdir", &path, mount.as_ref()));
            }
        }
        let charged = match files.charge(ledger, mount.as_ref(), Cost::ENTRY).await {
            Ok(c) => c,
            Err(e) => return Ok(e),
        };
        let r = p1::path_create_directory(ctx, &mut mem, fd, p, n).await;
        drop(charged);
        Ok(Files::answer(ledger, r?, "mkdir", &path, mount.as_ref()))
    });
    shadow!(l, "path_filestat_get", (fd: i32, lf: i32, p: i32, n: i32, buf: i32), |ctx, files, ledger, mem| {
        let path = shown(&mem, p, n);
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "stat", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        let r = p1::path_filestat_get(ctx, &mut mem, fd, lf, p, n, buf).await?;
        Ok(Files::answer(ledger, r, "stat", &path, mount.as_ref()))
    });
    shadow!(l, "path_filestat_set_times", (fd: i32, lf: i32, p: i32, n: i32, a: i64, m: i64, fl: i32), |ctx, files, ledger, mem| {
        let path = shown(&mem, p, n);
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "set-times", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        let r = p1::path_filestat_set_times(ctx, &mut mem, fd, lf, p, n, a, m, fl).await?;
        Ok(Files::answer(ledger, r, "set-times", &path, mount.as_ref()))
    });
    shadow!(l, "path_readlink", (fd: i32, p: i32, n: i32, buf: i32, len: i32, used: i32), |ctx, files, ledger, mem| {
        let path = shown(&mem, p, n);
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "readlink", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        let r = p1::path_readlink(ctx, &mut mem, fd, p, n, buf, len, used).await?;
        Ok(Files::answer(ledger, r, "readlink", &path, mount.as_ref()))
    });
    shadow!(l, "path_remove_directory", (fd: i32, p: i32, n: i32), |ctx, files, ledger, mem| {
        let path = shown(&mem, p, n);
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "rmdir", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        let r = p1::path_remove_directory(ctx, &mut mem, fd, p, n).await?;
        if r == 0 {
            files.freed().await;
        }
        Ok(Files::answer(ledger, r, "rmdir", &path, mount.as_ref()))
    });
    shadow!(l, "path_unlink_file", (fd: i32, p: i32, n: i32), |ctx, files, ledger, mem| {
        let path = shown(&mem, p, n);
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "unlink", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        let held = match files.quota_for(mount.as_ref()) {
            Some(_) => files.last_link_size(ctx, &mut mem, fd, guest_str(p, n), None).await,
            None => None,
        };
        let r = p1::path_unlink_file(ctx, &mut mem, fd, p, n).await?;
        if r == 0 {
            if let (Some(bytes), Some(q)) = (held, &files.quota) {
                q.hold(bytes);
            }
            files.freed().await;
        }
        Ok(Files::answer(ledger, r, "unlink", &path, mount.as_ref()))
    });
    shadow!(l, "path_rename", (fd: i32, op: i32, on: i32, to: i32, np: i32, nn: i32), |ctx, files, ledger, mem| {
        let path = format!("{} -> {}", shown(&mem, op, on), shown(&mem, np, nn));
        let (from_mount, mount) = (files.mount(fd), files.mount(to));
        if let Some(e) = Files::refused(ledger, "rename", &path, &[from_mount.as_ref(), mount.as_ref()]) {
            return Ok(e);
        }
        // A rename moves things a running walk may miss: the quota knows while it runs.
        let moving = files.quota_for(mount.as_ref()).map(FsQuota::moving);
        let held = match &moving {
            Some(_) => {
                let source = Some((fd, guest_str(op, on)));
                files.last_link_size(ctx, &mut mem, to, guest_str(np, nn), source).await
            }
            None => None,
        };
        let r = p1::path_rename(ctx, &mut mem, fd, op, on, to, np, nn).await;
        drop(moving);
        let r = r?;
        if r == 0 {
            if let (Some(bytes), Some(q)) = (held, &files.quota) {
                q.hold(bytes);
            }
            files.freed().await;
        }
        Ok(Files::answer(ledger, r, "rename", &path, mount.as_ref()))
    });
    shadow!(l, "path_link", (fd: i32, lf: i32, op: i32, on: i32, to: i32, np: i32, nn: i32), |ctx, files, ledger, mem| {
        let path = format!("{} -> {}", shown(&mem, op, on), shown(&mem, np, nn));
        let (from_mount, mount) = (files.mount(fd), files.mount(to));
        if let Some(e) = Files::refused(ledger, "link", &path, &[from_mount.as_ref(), mount.as_ref()]) {
            return Ok(e);
        }
        let charged = match files.charge(ledger, mount.as_ref(), Cost::ENTRY).await {
            Ok(c) => c,
            Err(e) => return Ok(e),
        };
        let moving = files.quota_for(mount.as_ref()).map(FsQuota::moving);
        let r = p1::path_link(ctx, &mut mem, fd, lf, op, on, to, np, nn).await;
        drop(moving);
        drop(charged);
        Ok(Files::answer(ledger, r?, "link", &path, mount.as_ref()))
    });
    shadow!(l, "path_symlink", (op: i32, on: i32, fd: i32, np: i32, nn: i32), |ctx, files, ledger, mem| {
        let (target, link) = (shown(&mem, op, on), shown(&mem, np, nn));
        let path = format!("{link} -> {target}");
        let mount = files.mount(fd);
        if let Some(e) = Files::refused(ledger, "symlink", &path, &[mount.as_ref()]) {
            return Ok(e);
        }
        if on as u32 > MAX_LINK_TARGET {
            return Ok(Errno::Nametoolong as i32);
        }
        // The whole target, not the part shown: a `..` past the cut still counts.
        let whole = bytes_at(&mem, op as u32, on as u32 as usize)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        if let Some(reason) = warden_fs::symlink_refusal(&link, &whole) {
            let target = denial_target("symlink", &path, mount.as_ref().map(|m| &*m.guest));
            ledger.deny(Capability::Filesystem, &target, Some(reason.to_string()));
            return Ok(PERM);
        }
        let cost = Cost::ENTRY.plus(whole.len() as u64);
        let charged = match files.charge(ledger, mount.as_ref(), cost).await {
            Ok(c) => c,
            Err(e) => return Ok(e),
        };
        let r = p1::path_symlink(ctx, &mut mem, op, on, fd, np, nn).await;
        drop(charged);
        Ok(Files::answer(ledger, r?, "symlink", &path, mount.as_ref()))
    });
    Ok(())
}
