//! The file system (`wasi:filesystem`): only the host folders the host hands over, each
//! preopened at its guest path, read-write or read-only.
//!
//! Path resolution is Wasmtime's (cap-std): every lookup is relative to the preopened folder's
//! descriptor and may not leave it by `..`, an absolute path or a symlink (including ones the
//! guest creates and ones swapped in by a race: on Linux each component is opened with
//! `openat2(RESOLVE_BENEATH)` or walked by hand with `O_NOFOLLOW`); such a lookup fails with
//! `not-permitted`; a symlink with an absolute target cannot even be created, and warden refuses
//! (and records) one whose target climbs with `..` (`warden_fs::symlink_refusal`), so no link
//! that leads outside is ever left on the host's disk, however it is later moved. A read-only
//! mount is checked by Wasmtime before any system call: every open for writing (create,
//! truncate, write, append), rename or hard link into or out of it, time change, removal,
//! mkdir and symlink fails with `not-permitted` (the host's tests try each one). WASI 0.2 has
//! no chmod or chown at all. The host process may be root, so folder modes are not relied on.
//!
//! A mount the manifest requests but the operator did not grant is preopened read-only on an
//! empty folder ([`FdMounts::denying`]): every wrapped operation through it is refused with
//! `not-permitted` and recorded with the reason (not granted, or forbidden by the policy), so
//! the guest sees a denial, not a missing file.
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
//! Read-write mounts have a quota (`warden_fs::FsQuota`, one per (tenant, extension), shared
//! by all its concurrent calls): see there for what is counted and charged.

use std::sync::Arc;
use warden_call::HostFailure;

use bytes::Bytes;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as PreopensHost;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, DescriptorType, ErrorCode, Filesize, Host as _, HostDescriptor, NewTimestamp,
    OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, WasiView};

use warden_call::{Capability, Ledger, Withheld};
use warden_fs::{BLOCK, Cost, FsQuota, MountDir, WalkGuard, blocks_touched};

/// What the file-system wrappers need of a call's state: Wasmtime's file system view (via
/// `WasiView`), the install's quota and the call's ledger. `CallState` implements it.
pub(crate) trait FsCall: WasiView + Send + 'static {
    fn fs_quota(&self) -> Option<&FsQuota>;
    fn ledger(&self) -> &Ledger;
    fn fd_mounts(&mut self) -> &mut FdMounts;
}

/// The mount (its guest path) each descriptor was opened in: learnt from `get-directories`
/// and passed on by `open-at`, so that a denial names the mount, not only a path relative to
/// some descriptor. Keyed by the resource's table index; an index reused by a later
/// descriptor is overwritten when that descriptor is made.
#[derive(Default)]
pub(crate) struct FdMounts {
    by_fd: std::collections::HashMap<u32, Arc<str>>,
    /// Guest paths of the denied mounts, with why they are refused.
    denied: Vec<(Arc<str>, String)>,
    /// Descriptors open at the last count, and opens since (see [`FdMounts::may_open`]).
    counted: usize,
    opened_since: usize,
    /// Table indexes of the streams made on files (`read-via-stream`, `write-via-stream`,
    /// `append-via-stream`): each keeps its file open after its descriptor is dropped, so
    /// each counts as an open file (see [`open_files`]).
    streams: std::collections::HashSet<u32>,
    /// Table indexes of the descriptors made by `open-at` (files and folders, as opposed to
    /// the preopens), and of the directory listings made by `read-directory` (each holds its
    /// whole listing in the host's memory): an instance holding either is not kept between
    /// calls, and listings are bounded per call ([`MAX_LISTINGS`]).
    opened: std::collections::HashSet<u32>,
    listings: std::collections::HashSet<u32>,
}

impl FdMounts {
    /// Preopens each denied mount (read-only, on its empty folder) and remembers it, so that
    /// every wrapped operation through it is refused and recorded.
    pub(crate) fn denying(
        b: &mut WasiCtxBuilder,
        denied: &[MountDir],
        withheld: Withheld,
    ) -> Result<FdMounts, HostFailure> {
        Ok(FdMounts {
            denied: preopen_denied(b, denied, withheld)?,
            ..FdMounts::default()
        })
    }

    /// One more descriptor is about to be opened: whether the open ones must be counted
    /// first ([`FdMounts::counted`]). They are counted in the table only when the count may
    /// have reached [`MAX_OPEN_FILES`] (and every [`RECOUNT_EVERY`] opens at most), since
    /// Wasmtime drops them without telling.
    fn opening(&mut self) -> bool {
        self.opened_since += 1;
        self.opened_since >= RECOUNT_EVERY || self.counted + self.opened_since > MAX_OPEN_FILES
    }

    /// `n` descriptors are open before the one about to be.
    fn counted(&mut self, n: usize) {
        self.counted = n;
        self.opened_since = 1;
    }

    fn may_open(&self) -> bool {
        self.counted + self.opened_since <= MAX_OPEN_FILES
    }

    fn of(&self, fd: &Fd) -> Option<Arc<str>> {
        self.by_fd.get(&fd.rep()).cloned()
    }

    /// Why operations in `mount` are refused, if it is a denied one.
    fn denial(&self, mount: Option<&str>) -> Option<&str> {
        let mount = mount?;
        self.denied
            .iter()
            .find(|(g, _)| &**g == mount)
            .map(|(_, why)| why.as_str())
    }
    fn set(&mut self, fd: &Fd, mount: Option<Arc<str>>) {
        match mount {
            Some(m) => self.by_fd.insert(fd.rep(), m),
            None => self.by_fd.remove(&fd.rep()),
        };
    }
}

/// Descriptors (files and folders) one call may hold open at once. Each is a descriptor of
/// the host process, whose limit (`RLIMIT_NOFILE`) every call and tenant shares: without a cap
/// one call could take them all, and every other call's opens, and the server's accepts,
/// would fail. An open past it fails (`insufficient-memory` for a component, `mfile` for a
/// plug-in) and is recorded as an `fs` denial. A component's streams on files count too (each
/// keeps its file open once its descriptor is dropped).
pub(crate) const MAX_OPEN_FILES: usize = 256;
/// Opens between two counts of a component's open descriptors.
const RECOUNT_EVERY: usize = 32;
/// The target and reason of the denial of an open past [`MAX_OPEN_FILES`].
pub(crate) const OPEN_FILES_TARGET: &str = "open files";
pub(crate) fn open_files_reason() -> String {
    format!("more than {MAX_OPEN_FILES} files and folders open at once in one call")
}

/// Descriptors (files and folders) in a call's resource table.
pub(crate) fn open_descriptors(table: &mut wasmtime::component::ResourceTable) -> usize {
    table
        .iter_mut()
        .filter(|e| e.downcast_ref::<Descriptor>().is_some())
        .count()
}

/// Directory listings one call may hold at once: `read-directory` reads a whole folder into
/// the host's memory (up to the file quota's entries, about 2.5 MB of names each), outside the
/// guest's budget (outside attack: 2.9 GB held by 1,000 of them).
pub(crate) const MAX_LISTINGS: usize = 16;
/// The target of the denial of a listing past [`MAX_LISTINGS`].
pub(crate) const LISTINGS_TARGET: &str = "directory listings";

/// Whether any of `reps` is still in the table as a `T` (forgetting those gone since). An
/// index reused by another `T` still counts: over, never under.
fn still_held<T: 'static>(
    table: &mut wasmtime::component::ResourceTable,
    reps: &mut std::collections::HashSet<u32>,
) -> usize {
    reps.retain(|rep| {
        table
            .get_any_mut(*rep)
            .is_ok_and(|e| e.downcast_ref::<T>().is_some())
    });
    reps.len()
}

/// Whether the call holds a file or folder it opened (descriptors come only from `open-at` or
/// the preopens), a stream on a file, or a directory listing: what an instance kept between
/// calls must not hold while idle.
pub(crate) fn holds_opened(
    table: &mut wasmtime::component::ResourceTable,
    mounts: &mut FdMounts,
) -> bool {
    still_held::<Descriptor>(table, &mut mounts.opened) > 0
        || still_held::<wasmtime_wasi::p2::ReaddirIterator>(table, &mut mounts.listings) > 0
        || open_file_streams(table, mounts) > 0
}

/// Streams on files still in the table (forgetting those dropped since). An index reused by
/// another stream after its file's stream was dropped still counts: over, never under.
pub(crate) fn open_file_streams(
    table: &mut wasmtime::component::ResourceTable,
    mounts: &mut FdMounts,
) -> usize {
    mounts.streams.retain(|rep| {
        table.get_any_mut(*rep).is_ok_and(|e| {
            e.downcast_ref::<DynOutputStream>().is_some()
                || e.downcast_ref::<wasmtime_wasi::p2::DynInputStream>()
                    .is_some()
        })
    });
    mounts.streams.len()
}

/// Host files a call holds open: its descriptors, and the streams made on files (which outlive
/// their descriptors).
fn open_files(state: &mut impl FsCall) -> usize {
    let mut mounts = std::mem::take(state.fd_mounts());
    let table = state.filesystem().table;
    let n = open_descriptors(table) + open_file_streams(table, &mut mounts);
    *state.fd_mounts() = mounts;
    n
}

/// Preopens each denied mount read-only on its empty folder: (its guest path, why every
/// operation through it is refused).
pub(crate) fn preopen_denied(
    b: &mut WasiCtxBuilder,
    denied: &[MountDir],
    withheld: Withheld,
) -> Result<Vec<(Arc<str>, String)>, HostFailure> {
    let mut out = Vec::with_capacity(denied.len());
    for d in denied {
        b.preopened_dir(&d.host, &d.guest, FsPerms::ReadOnly)
            .map_err(|e| {
                HostFailure::caused(
                    format!("preparing denied mount {}", d.guest),
                    e.into_boxed_dyn_error(),
                )
            })?;
        let why = format!("{} ({})", withheld.reason(Capability::Filesystem), d.guest);
        out.push((Arc::from(d.guest.as_str()), why));
    }
    Ok(out)
}

/// Preopens every mount and records it as granted. A folder that cannot be opened fails the
/// call (never a silent narrower mount).
pub(crate) fn preopen(
    b: &mut WasiCtxBuilder,
    mounts: &[MountDir],
    ledger: &Ledger,
) -> Result<(), HostFailure> {
    for m in mounts {
        let perms = if m.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&m.host, &m.guest, perms).map_err(|e| {
            HostFailure::caused(format!("mounting {}", m.guest), e.into_boxed_dyn_error())
        })?;
    }
    record_mounts(mounts, ledger);
    Ok(())
}

/// Records each mount as a use of the file system (once per call).
pub(crate) fn record_mounts(mounts: &[MountDir], ledger: &Ledger) {
    for m in mounts {
        let how = if m.readonly {
            "read-only"
        } else {
            "read-write"
        };
        ledger.allow(Capability::Filesystem, &format!("{} ({how})", m.guest));
    }
}

/// Turns Wasmtime's answer into the guest's, recording a refusal as a denial.
fn answer<T>(
    state: &mut impl FsCall,
    op: &str,
    path: &str,
    mount: Option<&str>,
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
        let target = denial_target(op, path, mount);
        state
            .ledger()
            .deny(Capability::Filesystem, &target, Some(why.to_string()));
    }
    Ok(Err(code))
}

type Fd = Resource<Descriptor>;

/// `open ../x in /data`: the operation, the path as the guest wrote it (relative to a
/// descriptor), and the mount that descriptor is in.
pub(crate) fn denial_target(op: &str, path: &str, mount: Option<&str>) -> String {
    let mut t = op.to_string();
    if !path.is_empty() {
        t.push(' ');
        t.push_str(path);
    }
    if let Some(m) = mount {
        t.push_str(" in ");
        t.push_str(m);
    }
    t
}

/// Wraps one `descriptor` method: `$args` are lifted as Wasmtime's own bindings lift them, the
/// call goes to Wasmtime's implementation, and the answer through [`answer`]. `charge` (the
/// descriptor whose mount is written and the [`Cost`]) is taken from the quota *before* the
/// call, so a refused growth changes nothing on disk; `freed` marks an operation that may have
/// released space (the budget may be recomputed after it).
macro_rules! wrap {
    ($inst:expr, $name:literal, $op:literal, ($fd:ident : $fdty:ty $(, $arg:ident : $ty:ty)*), $path:expr, $call:ident
     $(, refuse = $refuse:expr)?
     $(, creates = ($cmaking:expr, $cfollow:expr, $cpath:expr, $cexcl:expr $(, $cflags:ident)?))?
     $(, charge = $charge:expr)?
     $(, freed = $freed:expr)?
     $(, opened = $opened:tt)? $(, moving = $moving:tt)? $(, holds = ($hdir:expr, $hpath:expr, $hsrc:expr))?
     $(, listing = $listing:tt)?) => {
        $inst.func_wrap_async(
            concat!("[method]descriptor.", $name),
            |mut store, ($fd, $($arg,)*): ($fdty, $($ty,)*)| {
                Box::new(async move {
                    let state = store.data_mut();
                    let path: String = $path;
                    let mount = state.fd_mounts().of(&$fd);
                    if let Some(why) = state.fd_mounts().denial(mount.as_deref()).map(str::to_owned) {
                        state.ledger().deny(
                            Capability::Filesystem,
                            &denial_target($op, &path, mount.as_deref()),
                            Some(why),
                        );
                        return Ok((Err(ErrorCode::NotPermitted),));
                    }
                    $(
                        let refusal: Option<&str> = $refuse;
                        if let Some(reason) = refusal {
                            state.ledger().deny(
                                Capability::Filesystem,
                                &denial_target($op, &path, mount.as_deref()),
                                Some(reason.to_string()),
                            );
                            return Ok((Err(ErrorCode::NotPermitted),));
                        }
                    )?
                    $(
                        let _: bool = $opened;
                        if state.fd_mounts().opening() {
                            let n = open_files(state);
                            state.fd_mounts().counted(n);
                        }
                        if !state.fd_mounts().may_open() {
                            state.ledger().deny(
                                Capability::Filesystem,
                                OPEN_FILES_TARGET,
                                Some(open_files_reason()),
                            );
                            return Ok((Err(ErrorCode::InsufficientMemory),));
                        }
                    )?
                    $(
                        let _: bool = $listing;
                        let mut listings = std::mem::take(&mut state.fd_mounts().listings);
                        let held = still_held::<wasmtime_wasi::p2::ReaddirIterator>(
                            state.filesystem().table,
                            &mut listings,
                        );
                        state.fd_mounts().listings = listings;
                        if held >= MAX_LISTINGS {
                            state.ledger().deny(
                                Capability::Filesystem,
                                LISTINGS_TARGET,
                                Some(format!(
                                    "more than {MAX_LISTINGS} directory listings held at once in one call"
                                )),
                            );
                            return Ok((Err(ErrorCode::InsufficientMemory),));
                        }
                    )?
                    // Under a quota, only a name found absent is made (see `Look`): an
                    // exclusive make of one there answers `exist` at once, and an open loses its
                    // `create`, so no entry is made that was not charged.
                    $(
                        let looked = if $cmaking {
                            look(state, &$fd, $cfollow, $cpath).await?
                        } else {
                            Look::Absent
                        };
                        if let Look::Fails(code) = looked {
                            return Ok((answer(state, $op, &path, mount.as_deref(), Err(code.into()))?,));
                        }
                        let there = matches!(looked, Look::There);
                        if there && $cexcl {
                            return Ok((Err(ErrorCode::Exist),));
                        }
                        $(
                            let mut $cflags = $cflags;
                            if there {
                                $cflags &= !OpenFlags::CREATE;
                            }
                        )?
                    )?
                    #[allow(unused_mut, unused_assignments)]
                    let mut charged = None;
                    $(
                        let (on, cost): (&Fd, Cost) = $charge;
                        match charge(state, on, cost).await {
                            Ok(c) => charged = c,
                            Err(code) => return Ok((Err(code),)),
                        }
                    )?
                    // A rename or hard link moves things a running walk may miss: the quota
                    // knows while it runs.
                    #[allow(unused_variables)]
                    let moving: Option<warden_fs::MoveGuard> = None;
                    $(
                        let _: bool = $moving;
                        let moving = state.fs_quota().map(FsQuota::moving);
                    )?
                    #[allow(unused_mut, unused_assignments)]
                    let mut held: Option<u64> = None;
                    $(
                        held = last_link_size(state, $hdir, $hpath, $hsrc).await;
                    )?
                    let r = state.filesystem().$call($fd, $($arg),*).await;
                    drop(moving);
                    if r.is_ok()
                        && let (Some(bytes), Some(q)) = (held, state.fs_quota())
                    {
                        q.hold(bytes);
                    }
                    if let Some((quota, cost)) = charged {
                        FsQuota::settle(&quota, cost);
                    }
                    $(
                        if r.is_ok() && $freed {
                            freed(state).await;
                        }
                    )?
                    $(
                        let _: bool = $opened;
                        if let Ok(new) = &r {
                            state.fd_mounts().set(new, mount.clone());
                            state.fd_mounts().opened.insert(new.rep());
                            mark_open(state, new);
                        }
                    )?
                    $(
                        let _: bool = $listing;
                        if let Ok(new) = &r {
                            state.fd_mounts().listings.insert(new.rep());
                        }
                    )?
                    Ok((answer(state, $op, &path, mount.as_deref(), r)?,))
                })
            },
        )?;
    };
}

/// Wraps `write-via-stream` / `append-via-stream`: refusals are audited like every other
/// method (F7), and a stream on a quota'd install is replaced by a [`QuotaStream`].
macro_rules! wrap_stream {
    ($inst:expr, $name:literal, $op:literal, ($fd:ident : $fdty:ty $(, $arg:ident : $ty:ty)*), $call:ident, $pos:expr) => {
        $inst.func_wrap_async(
            concat!("[method]descriptor.", $name),
            |mut store, ($fd, $($arg,)*): ($fdty, $($ty,)*)| {
                Box::new(async move {
                    let state = store.data_mut();
                    let mount = state.fd_mounts().of(&$fd);
                    let pos: Option<Filesize> = $pos;
                    let file = open_file(state, &$fd);
                    let r = match state.filesystem().$call($fd, $($arg),*) {
                        Ok(stream) => Ok(quota_stream(state, file, stream, pos)?),
                        Err(e) => Err(e),
                    };
                    if let Ok(stream) = &r {
                        state.fd_mounts().streams.insert(stream.rep());
                    }
                    Ok((answer(state, $op, "", mount.as_deref(), r)?,))
                })
            },
        )?;
    };
}

/// Shadows the refusable `descriptor` methods of Wasmtime's `wasi:filesystem/types` with the
/// recording (and quota-charging) wrappers. Must be called after Wasmtime's WASI interfaces
/// are added.
pub(crate) fn add_to_linker<T: FsCall>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    let mut inst = l.instance("wasi:filesystem/types@0.2.12")?;
    wrap!(inst, "open-at", "open", (fd: Fd, pf: PathFlags, path: String, of: OpenFlags, df: DescriptorFlags), path.clone(), open_at,
        // `create` with `exclusive` fails on any name there, a symlink included (not followed).
        creates = (
            of.contains(OpenFlags::CREATE),
            if of.contains(OpenFlags::EXCLUSIVE) { PathFlags::empty() } else { pf },
            &path,
            of.contains(OpenFlags::CREATE | OpenFlags::EXCLUSIVE),
            of
        ),
        charge = (&fd, if of.contains(OpenFlags::CREATE) { Cost::ENTRY } else { Cost::NONE }),
        freed = of.contains(OpenFlags::TRUNCATE), opened = true);
    wrap!(inst, "create-directory-at", "mkdir", (fd: Fd, path: String), path.clone(), create_directory_at,
        creates = (true, PathFlags::empty(), &path, true), charge = (&fd, Cost::ENTRY));
    wrap!(inst, "stat-at", "stat", (fd: Fd, pf: PathFlags, path: String), path.clone(), stat_at);
    wrap!(inst, "set-times-at", "set-times", (fd: Fd, pf: PathFlags, path: String, a: NewTimestamp, m: NewTimestamp), path.clone(), set_times_at);
    wrap!(inst, "link-at", "link", (fd: Fd, pf: PathFlags, old: String, to: Fd, new: String), format!("{old} -> {new}"), link_at,
        charge = (&to, Cost::ENTRY), moving = true);
    wrap!(inst, "readlink-at", "readlink", (fd: Fd, path: String), path.clone(), readlink_at);
    wrap!(inst, "read-directory", "list", (fd: Fd), String::new(), read_directory,
        listing = true);
    wrap!(inst, "remove-directory-at", "rmdir", (fd: Fd, path: String), path.clone(), remove_directory_at,
        freed = true);
    wrap!(inst, "rename-at", "rename", (fd: Fd, old: String, to: Fd, new: String), format!("{old} -> {new}"), rename_at,
        freed = true, moving = true, holds = (&to, &new, Some((&fd, &old))));
    wrap!(inst, "symlink-at", "symlink", (fd: Fd, old: String, new: String), format!("{new} -> {old}"), symlink_at,
        refuse = warden_fs::symlink_refusal(&new, &old),
        charge = (&fd, Cost::ENTRY.plus(old.len() as u64)));
    wrap!(inst, "unlink-file-at", "unlink", (fd: Fd, path: String), path.clone(), unlink_file_at,
        freed = true, holds = (&fd, &path, None));
    wrap!(inst, "set-size", "set-size", (fd: Fd, size: Filesize), String::new(), set_size,
        charge = (&fd, Cost::grow_to(size)), freed = true);
    wrap!(inst, "set-times", "set-times", (fd: Fd, a: NewTimestamp, m: NewTimestamp), String::new(), set_times);
    wrap!(inst, "write", "write", (fd: Fd, buf: Vec<u8>, off: Filesize), String::new(), write,
        charge = (&fd, Cost::write(off, buf.len() as u64)));
    wrap_stream!(inst, "write-via-stream", "write-stream", (fd: Fd, off: Filesize), write_via_stream, Some(off));
    wrap_stream!(inst, "append-via-stream", "append-stream", (fd: Fd), append_via_stream, None);
    // Read streams are counted as open files too: a stream keeps its file open after its
    // descriptor is dropped (outside attack: 10,000 files held by one call under a 256 cap).
    inst.func_wrap_async(
        "[method]descriptor.read-via-stream",
        |mut store, (fd, off): (Fd, Filesize)| {
            Box::new(async move {
                let state = store.data_mut();
                let mount = state.fd_mounts().of(&fd);
                let r = state.filesystem().read_via_stream(fd, off);
                if let Ok(stream) = &r {
                    state.fd_mounts().streams.insert(stream.rep());
                }
                Ok((answer(state, "read-stream", "", mount.as_deref(), r)?,))
            })
        },
    )?;
    // The preopens: learn which descriptor is which mount.
    let mut pre = l.instance("wasi:filesystem/preopens@0.2.12")?;
    pre.func_wrap("get-directories", |mut store, (): ()| {
        let state = store.data_mut();
        let dirs = PreopensHost::get_directories(&mut state.filesystem())?;
        for (fd, guest) in &dirs {
            state.fd_mounts().set(fd, Some(Arc::from(guest.as_str())));
        }
        Ok((dirs,))
    })?;
    l.allow_shadowing(false);
    Ok(())
}

/// Charges `cost` to the call's quota for a change through `fd`. Nothing is charged without a
/// quota, for a descriptor on a read-only mount (Wasmtime refuses the change itself, and that
/// refusal is audited as `not-permitted`), or for an unknown descriptor (Wasmtime traps).
/// A refusal is audited and answered with `insufficient-space`.
async fn charge(
    state: &mut impl FsCall,
    fd: &Fd,
    cost: Cost,
) -> Result<Option<(FsQuota, Cost)>, ErrorCode> {
    let Some(quota) = state.fs_quota().cloned() else {
        return Ok(None);
    };
    let (writable, file) = match state.filesystem().table.get(fd) {
        Ok(Descriptor::File(f)) => (!f.perms.write_not_permitted(), Some(Arc::clone(&f.file))),
        Ok(Descriptor::Dir(d)) => (!d.perms.write_not_permitted(), None),
        Err(_) => (false, None),
    };
    if !writable {
        return Ok(None);
    }
    let mut cost = cost;
    if let Some(file) = file {
        let (len, unlinked) = file_state(file).await;
        if unlinked {
            state.ledger().deny(
                Capability::Filesystem,
                quota.target(),
                Some(UNLINKED.into()),
            );
            return Err(ErrorCode::InsufficientSpace);
        }
        if let Some(size) = cost.grow_to.take() {
            cost.bytes = cost.bytes.max(size.saturating_sub(len));
        }
    } else if let Some(size) = cost.grow_to.take() {
        cost.bytes = cost.bytes.max(size);
    }
    if cost == Cost::NONE {
        return Ok(None);
    }
    match quota.charge(cost).await {
        Ok(()) => Ok(Some((quota, cost))),
        Err(reason) => {
            state
                .ledger()
                .deny(Capability::Filesystem, quota.target(), Some(reason));
            Err(ErrorCode::InsufficientSpace)
        }
    }
}

/// What is at a name about to be made, looked at only under a quota (without one nothing is
/// charged, and Wasmtime answers).
enum Look {
    /// Nothing: making it costs an entry.
    Absent,
    /// Something: it costs nothing to make again, so nothing may be made. `mkdir` of an existing
    /// folder answers `exist` even with the quota full, and an existing file opens without
    /// `create` (outside attack, session 30, F6); made anyway, a name renamed away between the
    /// look and the make let uncharged entries in (outside attack, session 32: 30 to 188
    /// against a quota of 30).
    There,
    /// The look itself failed (a loop, a path through a file, an escape): answered so, and
    /// nothing made. Made anyway, a path component swapped in between could let the make
    /// succeed uncharged.
    Fails(ErrorCode),
}

async fn look(
    state: &mut impl FsCall,
    fd: &Fd,
    follow: PathFlags,
    path: &str,
) -> wasmtime::Result<Look> {
    if state.fs_quota().is_none() {
        return Ok(Look::Absent);
    }
    let stat = state
        .filesystem()
        .stat_at(
            Resource::<Descriptor>::new_borrow(fd.rep()),
            follow,
            path.to_owned(),
        )
        .await;
    Ok(match stat {
        Ok(_) => Look::There,
        Err(e) => match state.filesystem().convert_error_code(e)? {
            ErrorCode::NoEntry => Look::Absent,
            code => Look::Fails(code),
        },
    })
}

/// Why a write to a file deleted while open is refused under a quota: its blocks stay used
/// until it is closed, but no walk can see them, so they could grow without bound.
pub(crate) const UNLINKED: &str = "the file was deleted while open: writing to it is refused under a file quota (its size could not be counted)";

/// The file's length and whether it has been deleted (no link left), by `fstat` off the
/// executor like Wasmtime's own file system calls. If it cannot be read: length 0 (the whole
/// growth is charged) and not deleted.
async fn file_state(file: Arc<std::fs::File>) -> (u64, bool) {
    use std::os::unix::fs::MetadataExt as _;
    wasmtime_wasi::runtime::spawn_blocking(move || {
        file.metadata().map(|m| (m.len(), m.nlink() == 0))
    })
    .await
    .unwrap_or((0, false))
}

async fn freed(state: &mut impl FsCall) {
    if let Some(q) = state.fs_quota().cloned() {
        q.freed().await;
    }
}

/// The identity hash of the file at `path` (not following a last symlink), if it can be read.
async fn metadata_hash(
    state: &mut impl FsCall,
    dir: Resource<Descriptor>,
    path: String,
) -> Option<(u64, u64)> {
    state
        .filesystem()
        .metadata_hash_at(dir, PathFlags::empty(), path)
        .await
        .ok()
        .map(|h| (h.lower, h.upper))
}

/// Every file a guest opens carries a shared `flock` for as long as its descriptor lives, so
/// that deleting it can tell whether a call (in any process) still holds it open.
fn mark_open(state: &mut impl FsCall, fd: &Fd) {
    if state.fs_quota().is_none() {
        return;
    }
    if let Ok(Descriptor::File(f)) = state.filesystem().table.get(fd) {
        // A file someone else holds exclusively (a probe below, for a moment) stays unmarked:
        // at worst its deletion is not held, as before.
        let _ = f.file.try_lock_shared();
    }
}

/// The size of the file at `path` (relative to `dir`, not following a last symlink) if it is
/// a regular file with one link that a call still holds open (its shared lock is there):
/// deleting it (or renaming over it) frees its blocks only when that call closes it, which the
/// walk cannot tell, so its size is held (see `FsQuota::hold`). Nothing without a quota, for a
/// file no one holds open, or if it cannot be read.
async fn last_link_size(
    state: &mut impl FsCall,
    dir: &Fd,
    path: &str,
    source: Option<(&Fd, &String)>,
) -> Option<u64> {
    state.fs_quota()?;
    // A rename of a file onto itself removes nothing (round 4: each one added a hold).
    if let Some((src_dir, src)) = source {
        let a = metadata_hash(
            state,
            Resource::<Descriptor>::new_borrow(src_dir.rep()),
            src.clone(),
        )
        .await;
        let b = metadata_hash(
            state,
            Resource::<Descriptor>::new_borrow(dir.rep()),
            path.to_string(),
        )
        .await;
        if a.is_some() && a == b {
            return None;
        }
    }
    let stat = state
        .filesystem()
        .stat_at(
            Resource::<Descriptor>::new_borrow(dir.rep()),
            PathFlags::empty(),
            path.to_string(),
        )
        .await
        .ok()?;
    if stat.type_ != DescriptorType::RegularFile || stat.link_count != 1 || stat.size == 0 {
        return None;
    }
    // Probe: open it (through Wasmtime, so inside the mount) and try an exclusive lock. Any
    // shared lock left by an open descriptor makes it fail.
    let probe = state
        .filesystem()
        .open_at(
            Resource::<Descriptor>::new_borrow(dir.rep()),
            PathFlags::empty(),
            path.to_string(),
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .await;
    let Ok(probe) = probe else {
        // Cannot tell: hold it (conservative).
        return Some(stat.size);
    };
    let file = match state.filesystem().table.delete(probe) {
        Ok(Descriptor::File(f)) => Arc::clone(&f.file),
        _ => return Some(stat.size),
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => Some(stat.size),
    }
}

/// The open file behind `fd`, if it is one.
fn open_file(state: &mut impl FsCall, fd: &Fd) -> Option<Arc<std::fs::File>> {
    match state.filesystem().table.get(fd) {
        Ok(Descriptor::File(f)) => Some(Arc::clone(&f.file)),
        _ => None,
    }
}

/// Replaces a new output stream in the call's table by a [`QuotaStream`] around it, when the
/// install has a quota.
fn quota_stream(
    state: &mut impl FsCall,
    file: Option<Arc<std::fs::File>>,
    stream: Resource<DynOutputStream>,
    pos: Option<Filesize>,
) -> wasmtime::Result<Resource<DynOutputStream>> {
    let Some(quota) = state.fs_quota().cloned() else {
        return Ok(stream);
    };
    let ledger = state.ledger().clone();
    let table = state.filesystem().table;
    // Just created, so nothing borrows or descends from it yet.
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(QuotaStream {
        inner,
        quota,
        ledger,
        file,
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
    ledger: Ledger,
    /// The file written, to see its length and whether it was deleted while open.
    file: Option<Arc<std::fs::File>>,
    /// Where the next write lands (`write-via-stream`); `None` for an append.
    pos: Option<u64>,
    /// A walk claimed by `check-write`, run by the next `ready`.
    walk: Option<WalkGuard>,
    /// Charged for writes passed on and not yet known to be complete.
    unsettled: Cost,
}

impl QuotaStream {
    /// What a write of `len` bytes costs: every block it touches, or, at a position past the
    /// end, its growth of the file if that is more (a sparse file counts whole). A write to a
    /// file deleted while open is refused (see [`UNLINKED`]). `fstat` runs inline: stream
    /// writes are already synchronous on the host's side of the call.
    fn cost(&self, len: usize) -> StreamResult<Cost> {
        use std::os::unix::fs::MetadataExt as _;
        let blocks = blocks_touched(self.pos, len as u64);
        let Some(file) = &self.file else {
            return Ok(Cost::bytes(blocks));
        };
        let (file_len, unlinked) = file
            .metadata()
            .map(|m| (m.len(), m.nlink() == 0))
            .unwrap_or((0, false));
        if unlinked {
            return Err(self.refuse(UNLINKED.into()));
        }
        let growth = match self.pos {
            Some(p) => p.saturating_add(len as u64).saturating_sub(file_len),
            None => 0,
        };
        Ok(Cost::bytes(blocks.max(growth)))
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
        self.ledger
            .deny(Capability::Filesystem, self.quota.target(), Some(reason));
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
        let cost = self.cost(bytes.len())?;
        self.charge_now(cost)?;
        self.advance(bytes.len());
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        let cost = self.cost(bytes.len())?;
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
        let cost = self.cost(nelem)?;
        self.charge_now(cost)?;
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
