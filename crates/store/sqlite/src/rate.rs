//! Tenants' rate buckets shared by the processes on one data dir: `DATA/rate/<tenant>`, 16
//! bytes (tokens as an `f64`, the monotonic clock's nanoseconds when they were counted), read
//! and rewritten under the file's `flock`. Several runners on one data dir then admit a
//! tenant's `tenant_rate` between them, not each (the class of a file quota kept per process,
//! which parallel runs multiplied). The clock is this machine's, as the
//! data dir is: runners on other machines share PostgreSQL instead.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use warden_manifest::TenantName;
use warden_registry::{Rate, RateLeases, RegistryError};

use crate::shared::{RECHECK, failed};

/// The folder of the buckets, under the data dir.
pub const RATE_DIR: &str = "rate";

/// How long a bucket another process holds locked is waited for: they hold it for
/// microseconds; one stopped while it holds it (Ctrl-Z) makes requests 503, not hang.
const LOCK_WAIT: Duration = Duration::from_millis(100);

/// Buckets kept open (a file descriptor each, every tenant together) before they are all
/// closed: the process's descriptors are shared with its sockets and sandboxes.
const MAX_OPEN: usize = 128;

/// A leased token is taken when this close to whole (float error: a runner alone, whose own
/// limiter admitted a request on the same refill, must never be refused by its bucket).
const WHOLE: f64 = 1.0 - 1e-9;

pub struct FileRateLeases {
    /// The data dir, beneath which no link is followed, and the buckets' folder in it.
    data: PathBuf,
    dir: PathBuf,
    /// One open file per tenant, and its turn: the file's `flock` is its open file's, held by
    /// every thread of this process alike, so this process's threads take turns first.
    open: Mutex<HashMap<TenantName, Arc<Mutex<Bucket>>>>,
}

/// An open bucket file, and when it was last found to be the one its path names.
struct Bucket {
    file: File,
    checked: Instant,
}

impl FileRateLeases {
    /// The buckets of data dir `data` (the folder is made, 0700, if need be).
    pub fn open(data: &Path) -> Result<FileRateLeases, RegistryError> {
        let dir = data.join(RATE_DIR);
        warden_datadir::private_dir(&dir).map_err(|e| failed(&dir, e))?;
        Ok(FileRateLeases {
            data: data.to_owned(),
            dir,
            open: Mutex::default(),
        })
    }

    fn file(&self, tenant: &TenantName) -> Result<(Arc<Mutex<Bucket>>, PathBuf), RegistryError> {
        // A tenant name is a label (letters, digits, '-'): a file name as it is.
        let path = self.dir.join(tenant.as_str());
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = open.get(tenant) {
            return Ok((Arc::clone(f), path));
        }
        let f = crate::shared::open_in(&self.data, &self.dir, &path)?;
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        let f = Arc::new(Mutex::new(Bucket {
            file: f,
            checked: Instant::now(),
        }));
        open.insert(tenant.clone(), Arc::clone(&f));
        Ok((f, path))
    }

    /// Runs `f` on `tenant`'s tokens, refilled up to now, under the bucket's lock (waited for
    /// `wait` at most: `None` when another holder kept it).
    fn with<T>(
        &self,
        tenant: &TenantName,
        rate: Rate,
        wait: Duration,
        f: impl FnOnce(&mut f64) -> T,
    ) -> Result<Option<T>, RegistryError> {
        let until = Instant::now() + wait;
        // Twice at most: a bucket found deleted or replaced is opened again, once.
        for _ in 0..2 {
            let (bucket, path) = self.file(tenant)?;
            // Held for microseconds by this process's other threads.
            let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let file = &bucket.file;
            let locked = warden_datadir::poll_until(until, || match file.try_lock() {
                Ok(()) => Ok(Some(())),
                Err(TryLockError::WouldBlock) => Ok(None),
                Err(TryLockError::Error(e)) => Err(e),
            })
            .map_err(|e| failed(&path, e))?;
            if locked.is_none() {
                return Ok(None);
            }
            // Checked at most once a second, as the seats are: two system calls.
            if bucket.checked.elapsed() >= RECHECK {
                if !warden_datadir::still_at(file, &path) {
                    let _ = file.unlock();
                    self.open
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(tenant);
                    continue;
                }
                bucket.checked = Instant::now();
            }
            let file = &bucket.file;
            let done = self.update(file, rate, f);
            let _ = file.unlock();
            return done.map(Some);
        }
        Err(failed(
            &self.dir.join(tenant.as_str()),
            std::io::Error::other("the bucket's file keeps being replaced"),
        ))
    }

    fn update<T>(
        &self,
        file: &File,
        rate: Rate,
        f: impl FnOnce(&mut f64) -> T,
    ) -> Result<T, RegistryError> {
        let burst = f64::from(rate.burst.get());
        let now = now_ns();
        let mut buf = [0u8; 16];
        // New (or damaged): full, as a bucket starts.
        let (mut tokens, at) = match file.read_exact_at(&mut buf, 0) {
            Ok(()) => {
                let (t, a) = buf.split_at(8);
                let t = f64::from_le_bytes(t.try_into().unwrap_or([0; 8]));
                let a = u64::from_le_bytes(a.try_into().unwrap_or([0; 8]));
                if t.is_finite() && (0.0..=burst).contains(&t) {
                    (t, a)
                } else {
                    (burst, now)
                }
            }
            Err(_) => (burst, now),
        };
        // A stamp ahead of the clock (written before this machine's last boot) counts as now.
        let elapsed = now.saturating_sub(at) as f64 / 1e9;
        tokens = (tokens + f64::from(rate.per_second.get()) * elapsed).min(burst);
        let out = f(&mut tokens);
        buf[..8].copy_from_slice(&tokens.to_le_bytes());
        buf[8..].copy_from_slice(&now.to_le_bytes());
        file.write_all_at(&buf, 0)
            .map_err(|e| failed(&self.dir, e))?;
        Ok(out)
    }

    fn take(
        &self,
        tenant: &TenantName,
        want: u32,
        rate: Rate,
        wait: Duration,
    ) -> Result<Option<u32>, RegistryError> {
        self.with(tenant, rate, wait, |tokens| {
            let whole = (*tokens + (1.0 - WHOLE)).floor().min(f64::from(want));
            *tokens = (*tokens - whole).max(0.0);
            whole as u32
        })
    }
}

impl RateLeases for FileRateLeases {
    fn lease(&self, tenant: &TenantName, want: u32, rate: Rate) -> Result<u32, RegistryError> {
        self.take(tenant, want, rate, LOCK_WAIT)?.ok_or_else(|| {
            failed(
                &self.dir.join(tenant.as_str()),
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "another process held the bucket's lock (a stopped or stuck `warden` process)",
                ),
            )
        })
    }

    fn lease_now(
        &self,
        tenant: &TenantName,
        want: u32,
        rate: Rate,
    ) -> Option<Result<u32, RegistryError>> {
        self.take(tenant, want, rate, Duration::ZERO).transpose()
    }

    fn give_back(&self, tenant: &TenantName, n: u32, rate: Rate) -> Result<(), RegistryError> {
        let burst = f64::from(rate.burst.get());
        self.with(tenant, rate, LOCK_WAIT, |tokens| {
            *tokens = (*tokens + f64::from(n)).min(burst);
        })?;
        Ok(())
    }
}

/// The monotonic clock, in nanoseconds: one for every process on this machine.
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::num::NonZeroU32;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn two_openers_of_one_data_dir_share_each_tenants_bucket() {
        let d = tempfile::tempdir().unwrap();
        // Two processes' worth: each its own open files, so each its own locks.
        let (a, b) = (
            FileRateLeases::open(d.path()).unwrap(),
            FileRateLeases::open(d.path()).unwrap(),
        );
        let t: TenantName = "acme".parse().unwrap();
        let r = rate(1, 10);
        assert_eq!(a.lease(&t, 6, r).unwrap(), 6);
        assert_eq!(b.lease(&t, 6, r).unwrap(), 4);
        assert_eq!(a.lease(&t, 1, r).unwrap(), 0);
        b.give_back(&t, 3, r).unwrap();
        assert_eq!(a.lease(&t, 5, r).unwrap(), 3);
        // Tenants do not share.
        let other: TenantName = "other".parse().unwrap();
        assert_eq!(b.lease(&other, 20, r).unwrap(), 10);
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let d = tempfile::tempdir().unwrap();
        let a = FileRateLeases::open(d.path()).unwrap();
        let t: TenantName = "acme".parse().unwrap();
        let r = rate(50, 10);
        assert_eq!(a.lease(&t, 10, r).unwrap(), 10);
        std::thread::sleep(Duration::from_millis(100));
        // 100 ms of 50/s is 5 tokens (a little more on a slow machine, never past the burst).
        let got = a.lease(&t, 10, r).unwrap();
        assert!((4..=10).contains(&got), "{got}");
        a.give_back(&t, 100, r).unwrap();
        assert_eq!(a.lease(&t, 100, r).unwrap(), 10);
    }

    #[test]
    fn a_bucket_held_locked_elsewhere_is_not_waited_for_long() {
        let d = tempfile::tempdir().unwrap();
        let a = FileRateLeases::open(d.path()).unwrap();
        let t: TenantName = "acme".parse().unwrap();
        let r = rate(1, 10);
        assert_eq!(a.lease(&t, 1, r).unwrap(), 1);
        let held = File::open(d.path().join(RATE_DIR).join("acme")).unwrap();
        held.lock().unwrap();
        assert!(a.lease_now(&t, 1, r).is_none());
        let started = Instant::now();
        let e = a.lease(&t, 1, r).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(e.to_string().contains("registry storage"), "{e}");
        held.unlock().unwrap();
        assert_eq!(a.lease_now(&t, 1, r).unwrap().unwrap(), 1);
    }

    #[test]
    fn a_damaged_bucket_starts_full_again() {
        let d = tempfile::tempdir().unwrap();
        let a = FileRateLeases::open(d.path()).unwrap();
        let t: TenantName = "acme".parse().unwrap();
        let r = rate(1, 10);
        assert_eq!(a.lease(&t, 10, r).unwrap(), 10);
        std::fs::write(d.path().join(RATE_DIR).join("acme"), f64::NAN.to_le_bytes()).unwrap();
        assert_eq!(a.lease(&t, 10, r).unwrap(), 10);
    }

    #[test]
    fn a_bucket_deleted_under_an_opener_is_opened_again() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (
            FileRateLeases::open(d.path()).unwrap(),
            FileRateLeases::open(d.path()).unwrap(),
        );
        let t: TenantName = "acme".parse().unwrap();
        let r = rate(1, 10);
        assert_eq!(a.lease(&t, 10, r).unwrap(), 10);
        std::fs::remove_file(d.path().join(RATE_DIR).join("acme")).unwrap();
        assert_eq!(b.lease(&t, 3, r).unwrap(), 3);
        // Found within the second: the new file's 7 (and a second's refill), not what is
        // left in the deleted one (0, and as much).
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        let got = a.lease(&t, 10, r).unwrap();
        assert!((8..=9).contains(&got), "{got}");
    }

    /// `rm -rf DATA/rate` under a runner: its folder is made again (it was not: every
    /// tenant's requests were 503 until an operator made it by hand).
    #[test]
    fn a_deleted_bucket_folder_is_made_again() {
        let d = tempfile::tempdir().unwrap();
        let a = FileRateLeases::open(d.path()).unwrap();
        let (t, other): (TenantName, TenantName) =
            ("acme".parse().unwrap(), "beta".parse().unwrap());
        let r = rate(1, 10);
        assert_eq!(a.lease(&t, 4, r).unwrap(), 4);
        std::fs::remove_dir_all(d.path().join(RATE_DIR)).unwrap();
        assert_eq!(a.lease(&other, 10, r).unwrap(), 10);
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        // A new bucket: full again.
        assert_eq!(a.lease(&t, 10, r).unwrap(), 10);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.path().join(RATE_DIR))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }

    /// `DATA/rate` swapped for a link to a folder elsewhere under a runner: refused, and
    /// nothing written there (its first 16 bytes were overwritten with a bucket: outside
    /// attack, session 41).
    #[test]
    fn a_bucket_folder_swapped_for_a_link_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = FileRateLeases::open(d.path()).unwrap();
        let (t, other): (TenantName, TenantName) =
            ("acme".parse().unwrap(), "beta".parse().unwrap());
        let r = rate(1, 10);
        assert_eq!(a.lease(&t, 4, r).unwrap(), 4);
        let outside = tempfile::tempdir().unwrap();
        let theirs = b"the first 16 bytes are someone else's".to_vec();
        for name in ["acme", "beta"] {
            std::fs::write(outside.path().join(name), &theirs).unwrap();
        }
        let rate_dir = d.path().join(RATE_DIR);
        std::fs::rename(&rate_dir, d.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &rate_dir).unwrap();
        assert!(a.lease(&other, 1, r).is_err());
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert!(a.lease(&t, 1, r).is_err());
        for name in ["acme", "beta"] {
            assert_eq!(std::fs::read(outside.path().join(name)).unwrap(), theirs);
        }
    }

    #[test]
    fn at_most_128_buckets_stay_open() {
        let d = tempfile::tempdir().unwrap();
        let a = FileRateLeases::open(d.path()).unwrap();
        let r = rate(1, 10);
        for n in 0..300 {
            let t: TenantName = format!("t{n}").parse().unwrap();
            assert_eq!(a.lease(&t, 1, r).unwrap(), 1);
        }
        let dir = d.path().join(RATE_DIR).canonicalize().unwrap();
        let open = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(&dir))
            .count();
        assert!((1..=MAX_OPEN).contains(&open), "{open}");
    }
    #[test]
    fn threads_of_one_opener_take_turns() {
        let d = tempfile::tempdir().unwrap();
        let a = Arc::new(FileRateLeases::open(d.path()).unwrap());
        let t: TenantName = "acme".parse().unwrap();
        let r = rate(1, 1000);
        let granted: u32 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let (a, t) = (Arc::clone(&a), t.clone());
                    scope.spawn(move || (0..500).map(|_| a.lease(&t, 1, r).unwrap()).sum::<u32>())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        // The burst, and what a second or two of 1/s adds: never a token counted twice.
        assert!((1000..=1003).contains(&granted), "{granted}");
    }
}
