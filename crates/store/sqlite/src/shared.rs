//! What the files that the processes on one data dir lock together (the rate buckets, the
//! seats) are opened and reported with.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use warden_registry::RegistryError;

/// `path` opened to read and write, made 0600 if missing, never through a symbolic link.
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// `e`, met on `path`, as the registry's storage failure.
pub(crate) fn failed(
    path: &Path,
    e: impl std::error::Error + Send + Sync + 'static,
) -> RegistryError {
    RegistryError::Storage {
        location: path.display().to_string(),
        source: Box::new(e),
    }
}

/// Whether `path` still names `file` (the same inode): a file deleted or replaced under a
/// process that keeps it open must not be the one it locks while the others lock the new one.
/// Checked with the lock taken.
pub(crate) fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
