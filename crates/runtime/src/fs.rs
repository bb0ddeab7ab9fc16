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
//! it. The streams (`write-via-stream`, `append-via-stream`) are not wrapped: on a read-only
//! mount they cannot be obtained for writing in the first place (`open-at` refuses).

use std::path::PathBuf;

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, Filesize, Host as _, HostDescriptor, NewTimestamp, OpenFlags,
    PathFlags,
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
/// call goes to Wasmtime's implementation, and the answer through [`answer`].
macro_rules! wrap {
    ($inst:expr, $name:literal, $op:literal, ($($arg:ident : $ty:ty),*), $path:expr, $call:ident) => {
        $inst.func_wrap_async(
            concat!("[method]descriptor.", $name),
            |mut store, ($($arg,)*): ($($ty,)*)| {
                Box::new(async move {
                    let state = store.data_mut();
                    let path: String = $path;
                    let r = state.filesystem().$call($($arg),*).await;
                    Ok((answer(state, $op, &path, r)?,))
                })
            },
        )?;
    };
}

/// Shadows the refusable `descriptor` methods of Wasmtime's `wasi:filesystem/types` with the
/// recording wrappers. Must be called after Wasmtime's WASI interfaces are added.
pub(crate) fn add_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    let mut inst = l.instance("wasi:filesystem/types@0.2.12")?;
    wrap!(inst, "open-at", "open", (fd: Fd, pf: PathFlags, path: String, of: OpenFlags, df: DescriptorFlags), path.clone(), open_at);
    wrap!(inst, "create-directory-at", "mkdir", (fd: Fd, path: String), path.clone(), create_directory_at);
    wrap!(inst, "stat-at", "stat", (fd: Fd, pf: PathFlags, path: String), path.clone(), stat_at);
    wrap!(inst, "set-times-at", "set-times", (fd: Fd, pf: PathFlags, path: String, a: NewTimestamp, m: NewTimestamp), path.clone(), set_times_at);
    wrap!(inst, "link-at", "link", (fd: Fd, pf: PathFlags, old: String, to: Fd, new: String), format!("{old} -> {new}"), link_at);
    wrap!(inst, "readlink-at", "readlink", (fd: Fd, path: String), path.clone(), readlink_at);
    wrap!(inst, "remove-directory-at", "rmdir", (fd: Fd, path: String), path.clone(), remove_directory_at);
    wrap!(inst, "rename-at", "rename", (fd: Fd, old: String, to: Fd, new: String), format!("{old} -> {new}"), rename_at);
    wrap!(inst, "symlink-at", "symlink", (fd: Fd, old: String, new: String), format!("{new} -> {old}"), symlink_at);
    wrap!(inst, "unlink-file-at", "unlink", (fd: Fd, path: String), path.clone(), unlink_file_at);
    wrap!(inst, "set-size", "set-size", (fd: Fd, size: Filesize), String::new(), set_size);
    wrap!(inst, "set-times", "set-times", (fd: Fd, a: NewTimestamp, m: NewTimestamp), String::new(), set_times);
    wrap!(inst, "write", "write", (fd: Fd, buf: Vec<u8>, off: Filesize), String::new(), write);
    l.allow_shadowing(false);
    Ok(())
}
