use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::TempDir;
use warden_kv::{BucketName, Quota, Scope};

/// A store opened in a new temporary data dir, which lives as long as the store: what the
/// suites' macros take from their `fresh` function.
pub struct Fresh<T> {
    store: T,
    dir: TempDir,
}

impl<T> Fresh<T> {
    /// `open(data_dir)` on a new temporary folder.
    pub fn new(open: impl FnOnce(&Path) -> T) -> Fresh<T> {
        let dir = TempDir::new().unwrap();
        Fresh {
            store: open(dir.path()),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl<T> Deref for Fresh<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.store
    }
}

pub fn scope(tenant: &str, ext: &str, bucket: &str) -> Scope {
    Scope::new(
        tenant.parse().unwrap(),
        ext.parse().unwrap(),
        BucketName::new(bucket).unwrap(),
    )
}

pub fn q() -> Quota {
    Quota::default()
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}
