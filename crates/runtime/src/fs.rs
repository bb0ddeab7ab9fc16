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
//! Each mount is recorded as one grant per call (`fs`, `/data (read-write)`). Individual
//! refusals inside `wasi:filesystem` (an escape attempt, a write to a read-only mount) are
//! errors returned by Wasmtime's implementation to the guest; they are not recorded, because
//! hooking them would mean re-implementing the interface.

use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::state::{Denials, allow};

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
