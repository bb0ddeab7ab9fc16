//! Tenants' calls in flight, counted by every process on one data dir: seat `i` of a tenant
//! is the file `DATA/seats/<tenant>/<i>`, held by the `flock` of the one open file that took
//! it. Several runners on one data dir then hold `tenant_concurrency` between them, not each;
//! a runner that ends gives its seats back with its files (the kernel drops the locks), so
//! nothing stays held by a process that is gone.

use std::collections::{HashMap, HashSet};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use warden_manifest::TenantName;
use warden_registry::{RegistryError, Seat, SharedSeats};

use crate::shared::{self, failed};

/// The folder of the seats, under the data dir.
pub const SEATS_DIR: &str = "seats";

/// Seat files kept open, unlocked, for the next take: a take that opens its file costs about
/// 2.9 µs, one that finds it kept 1 µs (a gateway request's whole work is 60-110 µs). At most
/// this many file descriptors, every tenant together.
const MAX_KEPT_OPEN: usize = 128;

pub struct FileSeats {
    dir: PathBuf,
    /// Where the next search starts, so that the first seats are not always tried first.
    next: AtomicU32,
    files: Arc<Mutex<Files>>,
}

/// This process's seat files: those it holds (not tried again: no system call for them) and
/// those kept open for a next take.
#[derive(Default)]
struct Files {
    held: HashSet<PathBuf>,
    kept: HashMap<PathBuf, File>,
}

impl Files {
    fn keep(&mut self, path: PathBuf, file: File) {
        if self.kept.len() < MAX_KEPT_OPEN {
            self.kept.insert(path, file);
        }
    }
}

/// A seat held: its file, open and locked; unlocked and kept open (or closed) when dropped.
struct Held {
    file: Option<File>,
    path: PathBuf,
    files: Arc<Mutex<Files>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else { return };
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.held.remove(&self.path);
        // Not unlocked: closed, which unlocks it.
        if file.unlock().is_ok() {
            files.keep(std::mem::take(&mut self.path), file);
        }
    }
}

impl FileSeats {
    /// The seats of data dir `data` (the folder is made, 0700, if need be).
    pub fn open(data: &Path) -> Result<FileSeats, RegistryError> {
        let dir = data.join(SEATS_DIR);
        warden_datadir::private_dir(&dir).map_err(|e| failed(&dir, e))?;
        Ok(FileSeats {
            dir,
            next: AtomicU32::new(0),
            files: Arc::default(),
        })
    }

    /// The seat at `path`, whose `file` this process has just locked.
    fn held(&self, path: PathBuf, file: File) -> Seat {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.held.insert(path.clone());
        drop(files);
        Box::new(Held {
            file: Some(file),
            path,
            files: Arc::clone(&self.files),
        })
    }
}

impl SharedSeats for FileSeats {
    fn try_take(&self, tenant: &TenantName, of: u32) -> Result<Option<Seat>, RegistryError> {
        // A tenant name is a label (letters, digits, '-'): a file name as it is.
        let dir = self.dir.join(tenant.as_str());
        let start = self.next.fetch_add(1, Ordering::Relaxed) % of.max(1);
        // A seat whose file cannot be used counts as held (the safe side): the others are
        // tried, and the failure is the answer only if none is free.
        let mut failure = None;
        for k in 0..of {
            let path = dir.join(((start + k) % of).to_string());
            match self.try_seat(&dir, path) {
                Ok(Some(seat)) => return Ok(Some(seat)),
                Ok(None) => {}
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        failure.map_or(Ok(None), Err)
    }
}

impl FileSeats {
    /// The seat at `path` (in the tenant's `dir`) if no process holds it.
    fn try_seat(&self, dir: &Path, path: PathBuf) -> Result<Option<Seat>, RegistryError> {
        // A lock is its open file's: a file is in one take at a time (kept, then taken out),
        // so two takes in this process never share one either.
        let kept = {
            let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
            if files.held.contains(&path) {
                return Ok(None);
            }
            files.kept.remove(&path)
        };
        let file = match kept {
            Some(file) => file,
            None => open_seat(dir, &path)?,
        };
        match file.try_lock() {
            // Deleted or replaced since it was opened: the others lock the file there now.
            Ok(()) if !shared::still_at(&file, &path) => {
                let _ = file.unlock();
                drop(file);
                let fresh = open_seat(dir, &path)?;
                match fresh.try_lock() {
                    Ok(()) if shared::still_at(&fresh, &path) => Ok(Some(self.held(path, fresh))),
                    Ok(()) | Err(TryLockError::WouldBlock) => Ok(None),
                    Err(TryLockError::Error(e)) => Err(failed(&path, e)),
                }
            }
            Ok(()) => Ok(Some(self.held(path, file))),
            Err(TryLockError::WouldBlock) => {
                self.files
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keep(path, file);
                Ok(None)
            }
            Err(TryLockError::Error(e)) => Err(failed(&path, e)),
        }
    }
}

/// The seat file at `path`, its folder `dir` made first if it is missing (the tenant's first
/// seat on this data dir, or a folder someone removed).
fn open_seat(dir: &Path, path: &Path) -> Result<File, RegistryError> {
    match shared::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warden_datadir::private_dir(dir).map_err(|e| failed(dir, e))?;
            shared::open(path)
        }
        opened => opened,
    }
    .map_err(|e| failed(path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn two_openers_of_one_data_dir_hold_each_tenants_seats_between_them() {
        let d = tempfile::tempdir().unwrap();
        // Two processes' worth: each its own open file descriptions, so each its own locks.
        let (a, b) = (
            FileSeats::open(d.path()).unwrap(),
            FileSeats::open(d.path()).unwrap(),
        );
        let t: TenantName = "acme".parse().unwrap();
        let mut seats = Vec::new();
        for _ in 0..2 {
            seats.push(a.try_take(&t, 3).unwrap().unwrap());
        }
        seats.push(b.try_take(&t, 3).unwrap().unwrap());
        assert!(a.try_take(&t, 3).unwrap().is_none());
        assert!(b.try_take(&t, 3).unwrap().is_none());
        // Given back by whoever held it, taken by either.
        seats.remove(0);
        let again = b.try_take(&t, 3).unwrap().unwrap();
        assert!(a.try_take(&t, 3).unwrap().is_none());
        drop(again);
        seats.push(a.try_take(&t, 3).unwrap().unwrap());
        // Tenants do not share.
        let other: TenantName = "other".parse().unwrap();
        assert!(a.try_take(&other, 1).unwrap().is_some());
    }

    #[test]
    fn a_process_that_closes_its_files_gives_its_seats_back() {
        let d = tempfile::tempdir().unwrap();
        let t: TenantName = "acme".parse().unwrap();
        let a = FileSeats::open(d.path()).unwrap();
        let b = FileSeats::open(d.path()).unwrap();
        let held = b.try_take(&t, 1).unwrap().unwrap();
        assert!(a.try_take(&t, 1).unwrap().is_none());
        // As a runner that dies: its files closed, the seat never given back by it.
        drop(held);
        assert!(a.try_take(&t, 1).unwrap().is_some());
    }
    #[test]
    fn a_seat_file_deleted_under_an_opener_is_opened_again() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (
            FileSeats::open(d.path()).unwrap(),
            FileSeats::open(d.path()).unwrap(),
        );
        let t: TenantName = "acme".parse().unwrap();
        // Taken and given back: a keeps the file open.
        drop(a.try_take(&t, 1).unwrap().unwrap());
        std::fs::remove_dir_all(d.path().join(SEATS_DIR)).unwrap();
        let theirs = b.try_take(&t, 1).unwrap().unwrap();
        assert!(a.try_take(&t, 1).unwrap().is_none());
        drop(theirs);
        assert!(a.try_take(&t, 1).unwrap().is_some());
    }
    #[test]
    fn a_seat_that_cannot_be_used_counts_as_held() {
        let d = tempfile::tempdir().unwrap();
        let a = FileSeats::open(d.path()).unwrap();
        let t: TenantName = "acme".parse().unwrap();
        // Seat 0 a folder where its file should be.
        std::fs::create_dir_all(d.path().join(SEATS_DIR).join("acme").join("0")).unwrap();
        let one = a.try_take(&t, 2).unwrap().unwrap();
        // The other is held: the failure is the answer.
        assert!(a.try_take(&t, 2).is_err());
        drop(one);
        assert!(a.try_take(&t, 2).unwrap().is_some());
    }
}
