//! Tenants' calls in flight, counted by every process on one data dir: seat `i` of a tenant
//! is the file `DATA/seats/<tenant>/<i>`, held by the `flock` of the one open file that took
//! it. Several runners on one data dir then hold `tenant_concurrency` between them, not each;
//! a runner that ends gives its seats back with its files (the kernel drops the locks), so
//! nothing stays held by a process that is gone.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use warden_manifest::TenantName;
use warden_registry::{RegistryError, Seat, SharedSeats};

use crate::shared::{RECHECK, failed};

/// The folder of the seats, under the data dir.
pub const SEATS_DIR: &str = "seats";

/// Seat files kept open, unlocked, for the next take: a take that opens its file costs about
/// 2.9 µs, one that finds it kept 1.3 µs (with 64 seats held here too). At most this many file
/// descriptors, every tenant together.
const MAX_KEPT_OPEN: usize = 128;

pub struct FileSeats {
    /// The data dir, beneath which no link is followed, and the seats' folder in it.
    data: PathBuf,
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

/// What this process knows of the seats: per tenant, which it holds (never tried again: no
/// system call for them) and the files kept open for a next take.
#[derive(Default)]
struct State {
    tenants: HashMap<TenantName, Vec<Place>>,
    kept: usize,
}

#[derive(Default)]
struct Place {
    held: bool,
    /// Open and unlocked, and when it was last found to be the file its path names.
    kept: Option<(File, Instant)>,
}

impl State {
    fn place(&mut self, tenant: &TenantName, at: usize) -> Option<&mut Place> {
        self.tenants.get_mut(tenant)?.get_mut(at)
    }
}

/// A seat held: its file, open and locked; unlocked and kept open (or closed) when dropped.
struct Held {
    file: Option<(File, Instant)>,
    tenant: TenantName,
    at: usize,
    state: Arc<Mutex<State>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some((file, checked)) = self.file.take() else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let room = state.kept < MAX_KEPT_OPEN;
        let Some(place) = state.place(&self.tenant, self.at) else {
            return;
        };
        place.held = false;
        // Not unlocked: closed, which unlocks it.
        if file.unlock().is_ok() && room {
            place.kept = Some((file, checked));
            state.kept += 1;
        }
    }
}

impl FileSeats {
    /// The seats of data dir `data` (the folder is made, 0700, if need be).
    pub fn open(data: &Path) -> Result<FileSeats, RegistryError> {
        let dir = data.join(SEATS_DIR);
        warden_datadir::private_dir(&dir).map_err(|e| failed(&dir, e))?;
        Ok(FileSeats {
            data: data.to_owned(),
            dir,
            state: Arc::default(),
        })
    }

    /// The first of `tenant`'s first `of` seats from `from` on that this process does not hold.
    fn next_unheld(&self, tenant: &TenantName, from: usize, of: usize) -> Option<usize> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let places = state.tenants.get(tenant)?;
        (from..of.min(places.len())).find(|&at| !places[at].held)
    }

    /// Seat `at` of `tenant` (whose folder is `dir`) if no process holds it.
    fn try_seat(
        &self,
        tenant: &TenantName,
        dir: &Path,
        at: usize,
    ) -> Result<Option<Seat>, RegistryError> {
        // A lock is its open file's: a file is in one take at a time (kept, then taken out),
        // so two takes in this process never share one either.
        let kept = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(place) = state.place(tenant, at) else {
                return Ok(None);
            };
            if place.held {
                return Ok(None);
            }
            let kept = place.kept.take();
            if kept.is_some() {
                state.kept -= 1;
            }
            kept
        };
        let path = dir.join(at.to_string());
        let (file, checked) = match kept {
            Some(kept) => kept,
            None => (
                crate::shared::open_in(&self.data, dir, &path)?,
                Instant::now() - RECHECK,
            ),
        };
        match file.try_lock() {
            Ok(()) if checked.elapsed() < RECHECK => Ok(Some(self.held(tenant, at, file, checked))),
            // Deleted or replaced since it was opened: the others lock the file there now.
            Ok(()) if !warden_datadir::still_at(&file, &path) => {
                let _ = file.unlock();
                drop(file);
                let fresh = crate::shared::open_in(&self.data, dir, &path)?;
                match fresh.try_lock() {
                    Ok(()) if warden_datadir::still_at(&fresh, &path) => {
                        Ok(Some(self.held(tenant, at, fresh, Instant::now())))
                    }
                    Ok(()) | Err(TryLockError::WouldBlock) => Ok(None),
                    Err(TryLockError::Error(e)) => Err(failed(&path, e)),
                }
            }
            Ok(()) => Ok(Some(self.held(tenant, at, file, Instant::now()))),
            Err(TryLockError::WouldBlock) => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let room = state.kept < MAX_KEPT_OPEN;
                if let Some(place) = state.place(tenant, at)
                    && room
                {
                    place.kept = Some((file, checked));
                    state.kept += 1;
                }
                Ok(None)
            }
            Err(TryLockError::Error(e)) => Err(failed(&path, e)),
        }
    }

    /// Seat `at` of `tenant`, whose `file` this process has just locked.
    fn held(&self, tenant: &TenantName, at: usize, file: File, checked: Instant) -> Seat {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(place) = state.place(tenant, at) {
            place.held = true;
        }
        drop(state);
        Box::new(Held {
            file: Some((file, checked)),
            tenant: tenant.clone(),
            at,
            state: Arc::clone(&self.state),
        })
    }
}

impl SharedSeats for FileSeats {
    fn try_take(&self, tenant: &TenantName, of: u32) -> Result<Option<Seat>, RegistryError> {
        let of = of as usize;
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !state.tenants.contains_key(tenant) {
                if state.tenants.len() >= MAX_KEPT_OPEN {
                    // Tenants with no seat held or kept here are forgotten.
                    state
                        .tenants
                        .retain(|_, places| places.iter().any(|p| p.held || p.kept.is_some()));
                }
                state.tenants.insert(tenant.clone(), Vec::new());
            }
            if let Some(places) = state.tenants.get_mut(tenant)
                && places.len() < of
            {
                places.resize_with(of, Place::default);
            }
        }
        // A tenant name is a label (letters, digits, '-'): a file name as it is.
        let dir = self.dir.join(tenant.as_str());
        // The lowest seats first, so that the same few files serve a tenant's calls. A seat
        // whose file cannot be used counts as held (the safe side): the others are tried, and
        // the failure is the answer only if no other seat is held either, by this process or
        // another (then waiting would not help). Else the call waits for a seat as for a busy
        // tenant (one broken seat of two made nearly every request 503 at once while the
        // other was in use: outside attack, session 41).
        let mut failure = None;
        let (mut from, mut tried, mut held) = (0, 0, false);
        while let Some(at) = self.next_unheld(tenant, from, of) {
            tried += 1;
            match self.try_seat(tenant, &dir, at) {
                Ok(Some(seat)) => return Ok(Some(seat)),
                Ok(None) => held = true,
                Err(e) => failure = failure.or(Some(e)),
            }
            from = at + 1;
        }
        // Seats skipped by `next_unheld` are held by this process.
        match failure {
            Some(e) if !held && tried == of => Err(e),
            _ => Ok(None),
        }
    }
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
        // A kept file is checked at most once a second.
        std::thread::sleep(RECHECK + std::time::Duration::from_millis(100));
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
        // The other is held: busy (waited for), not a failure, as by another process.
        assert!(a.try_take(&t, 2).unwrap().is_none());
        let b = FileSeats::open(d.path()).unwrap();
        assert!(b.try_take(&t, 2).unwrap().is_none());
        drop(one);
        assert!(a.try_take(&t, 2).unwrap().is_some());
        // Every seat unusable: waiting would not help, the failure is the answer.
        std::fs::create_dir_all(d.path().join(SEATS_DIR).join("beta").join("0")).unwrap();
        let beta: TenantName = "beta".parse().unwrap();
        assert!(b.try_take(&beta, 1).is_err());
    }
}
