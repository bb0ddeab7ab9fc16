//! The file system (`wasi:filesystem`): only the host folders the host hands over, each
//! preopened at its guest path, read-write or read-only.
//!
//! Path resolution is Wasmtime's (cap-std): every lookup is relative to the preopened folder's
//! descriptor and may not leave it by `..`, an absolute path or a symlink (including ones the
//! guest creates and ones swapped in by a race: on Linux each component is opened with
//! `openat2(RESOLVE_BENEATH)` or walked by hand with `O_NOFOLLOW`). A read-only mount has only
//! the read permissions, so every write, create, truncate, rename, link and time change is
//! refused with `not-permitted`/`read-only`.

use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// One folder the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountDir {
    /// Absolute guest path, e.g. `/data`.
    pub guest: String,
    /// The host folder behind it; it must exist and belong to this (tenant, extension).
    pub host: PathBuf,
    pub readonly: bool,
}

/// Preopens every mount. A folder that cannot be opened fails the call (never a silent
/// narrower mount).
pub(crate) fn preopen(b: &mut WasiCtxBuilder, mounts: &[MountDir]) -> Result<(), String> {
    for m in mounts {
        let perms = if m.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&m.host, &m.guest, perms)
            .map_err(|e| format!("mounting {}: {e:#}", m.guest))?;
    }
    Ok(())
}
