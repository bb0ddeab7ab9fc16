//! The registry's change stamp: 16 random bytes in `DATA/warden.db-stamp`, rewritten by every
//! registry write (in any process) right after its commit. A reader that finds the stamp it
//! saw last may answer from memory what it read then; any other stamp, or none, means read the
//! database again. So the gateway's two lookups per request (tenant key, install) cost one
//! `pread` instead of a transaction with file locks, and a change made by another process
//! (`warden uninstall` while `warden serve` runs) is seen on the next request after it returns.

use std::collections::HashMap;
use std::fs::File;
use std::hash::Hash;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand_core::{OsRng, RngCore as _};

/// Entries kept per map; when full it starts again (a bound, not an eviction policy).
const MAX_ENTRIES: usize = 16 * 1024;

pub(crate) type Stamp = [u8; 16];

/// The stamp file, open for reading and writing. Checked against its path on every use: a
/// stamp removed or replaced by another file (a restore, `rm`) is opened again, never read
/// through a descriptor nobody else writes any more.
pub(crate) struct StampFile {
    open: Mutex<Option<(File, (u64, u64))>>,
    path: PathBuf,
}

impl StampFile {
    /// Opens (creating, 0600) the stamp next to the database at `db`.
    pub(crate) fn open(db: &Path) -> std::io::Result<StampFile> {
        let mut name = db.as_os_str().to_owned();
        name.push("-stamp");
        let stamp = StampFile {
            open: Mutex::new(None),
            path: PathBuf::from(name),
        };
        let file = stamp.reopen()?;
        *stamp.lock() = Some(file);
        Ok(stamp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(File, (u64, u64))>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reopen(&self) -> std::io::Result<(File, (u64, u64))> {
        warden_datadir::private_file(&self.path).map_err(std::io::Error::other)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)?;
        let meta = file.metadata()?;
        Ok((file, (meta.dev(), meta.ino())))
    }

    /// Runs `f` on the file now at the stamp's path (created again if it was removed).
    fn with<T>(&self, f: impl FnOnce(&File) -> std::io::Result<T>) -> std::io::Result<T> {
        let now = std::fs::symlink_metadata(&self.path).map(|m| (m.dev(), m.ino()));
        let mut open = self.lock();
        let current = matches!((&*open, &now), (Some((_, id)), Ok(n)) if id == n);
        if !current {
            *open = None;
            *open = Some(self.reopen()?);
        }
        match &*open {
            Some((file, _)) => f(file),
            None => Err(std::io::Error::other("the stamp file is not open")),
        }
    }

    /// The stamp now; `None` when it cannot be read (then nothing is answered from memory).
    pub(crate) fn read(&self) -> Option<Stamp> {
        self.with(|file| {
            let mut stamp = [0u8; 16];
            match file.read_exact_at(&mut stamp, 0) {
                Ok(()) => Ok(stamp),
                // A new file: a stamp like any other, until the first write.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(stamp),
                Err(e) => Err(e),
            }
        })
        .ok()
    }

    /// A new stamp: every reader reads the database again.
    pub(crate) fn bump(&self) -> std::io::Result<()> {
        let mut stamp = [0u8; 16];
        OsRng.fill_bytes(&mut stamp);
        self.with(|file| file.write_all_at(&stamp, 0))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Answers read under one stamp.
pub(crate) struct Remembered<K, V> {
    stamp: Option<Stamp>,
    map: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Clone> Remembered<K, V> {
    pub(crate) fn new() -> Self {
        Remembered {
            stamp: None,
            map: HashMap::new(),
        }
    }

    /// What was read under `stamp`, if anything; forgets everything read under another.
    pub(crate) fn get(&mut self, stamp: Stamp, key: &K) -> Option<V> {
        if self.stamp != Some(stamp) {
            self.map.clear();
            self.stamp = Some(stamp);
            return None;
        }
        self.map.get(key).cloned()
    }

    /// Remembers `value`, read from the database after `stamp` was read.
    pub(crate) fn put(&mut self, stamp: Stamp, key: K, value: V) {
        if self.stamp != Some(stamp) {
            self.map.clear();
            self.stamp = Some(stamp);
        }
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, value);
    }

    /// Forgets everything (this process wrote).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.stamp = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_bump_changes_the_stamp_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let a = StampFile::open(&dir.path().join("warden.db")).unwrap();
        let b = StampFile::open(&dir.path().join("warden.db")).unwrap();
        let s0 = a.read().unwrap();
        let mut m = Remembered::new();
        m.put(s0, "k", 1);
        assert_eq!(m.get(b.read().unwrap(), &"k"), Some(1));
        b.bump().unwrap(); // another handle: another process
        let s1 = a.read().unwrap();
        assert_ne!(s0, s1);
        assert_eq!(m.get(s1, &"k"), None);
        assert!(a.path().ends_with("warden.db-stamp"));
        // Removed, then written by another handle: the new file is the one read (red team:
        // a replaced stamp left readers on the old file, blind to every later change).
        std::fs::remove_file(a.path()).unwrap();
        let c = StampFile::open(&dir.path().join("warden.db")).unwrap();
        c.bump().unwrap();
        let s2 = a.read().unwrap();
        assert_eq!(Some(s2), c.read());
        assert_ne!(s2, s1);
    }
}
