//! The file-system capability's policy and folders, with no Wasmtime:
//!
//! - [`mounts`]: which host folder backs each granted mount (a private folder per (tenant,
//!   extension, guest path); `/assets` extracted from the verified bundle, read-only).
//! - [`quota`]: the per-install [`FsQuota`] on read-write mounts (what is charged, when the
//!   folder is measured again, when a growth is refused). The runtime's `wasi:filesystem`
//!   bindings charge it before every growth.
//! - [`growth`]: what grew in a process extension's read-write folders since their last
//!   measure (inotify), so the runtime measures as soon as they may be over the quota.
//! - [`symlink_refusal`]: which symlinks a guest may create (none whose target leaves the mount).
//! - [`private_dir`]: how every folder the host keeps is created (0700, never shared).

pub mod growth;
mod links;
pub mod mounts;
pub mod quota;

use std::path::PathBuf;

pub use links::symlink_refusal;
pub use quota::{
    BLOCK, Cost, FsQuota, MoveGuard, RECOMPUTE_INTERVAL, Usage, WalkGuard, blocks_touched, walk,
};
pub use warden_datadir::private_dir;

/// A host folder preopened for the guest at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountDir {
    /// Absolute guest path, e.g. `/data`.
    pub guest: String,
    /// The host folder behind it; it must exist and belong to this (tenant, extension).
    pub host: PathBuf,
    pub readonly: bool,
}

/// Why a folder could not be prepared. Names the path, keeps the cause.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{what} {path}: {source}", path = .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DataDir(#[from] warden_datadir::DataDirError),
    #[error("file system mounts are granted but the host has no data dir for them")]
    NoDataDir,
    #[error("bundle asset {0:?} is not a plain relative path")]
    BadAsset(String),
}
