//! How a failure of the files that the processes on one data dir lock together (the rate
//! buckets, the seats) is reported; they are opened with [`warden_datadir::open_shared`].

use std::path::Path;

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
