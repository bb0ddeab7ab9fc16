//! How a failure of the files that the processes on one data dir lock together (the rate
//! buckets, the seats) is reported; they are opened with [`warden_datadir::open_shared`].

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use warden_registry::RegistryError;

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

/// How often a kept bucket or seat file is checked to still be the one its path names (a
/// folder deleted or replaced under a runner: the others lock the new files); two system
/// calls per check.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

/// The shared file `path` in folder `dir`, both in the data dir `data`, reached through no
/// link below `data` ([`warden_datadir::open_shared_beneath`]), the folder made again (0700)
/// if it is gone: an operator's `rm -rf DATA/rate` made every tenant's requests 503 until the
/// folder was made by hand (outside attack, session 41).
pub(crate) fn open_in(data: &Path, dir: &Path, path: &Path) -> Result<File, RegistryError> {
    let rel = path.strip_prefix(data).unwrap_or(path);
    match warden_datadir::open_shared_beneath(data, rel) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warden_datadir::private_dir(dir).map_err(|e| failed(dir, e))?;
            warden_datadir::open_shared_beneath(data, rel)
        }
        opened => opened,
    }
    .map_err(|e| failed(path, e))
}
