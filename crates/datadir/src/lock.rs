//! `flock`s on files that several processes share (the audit head, the registry's stamp, the
//! file quotas' ledgers, the tenants' rate buckets and seats), waited for within a bound. A process stopped while it holds one (an
//! operator's Ctrl-Z on a CLI, a debugger, a same-uid process holding it on purpose) must not
//! stall every call and request for ever: after the wait, the caller is told `TimedOut` and
//! refuses what it was doing, with nothing half done (outside attack, session 29: a stopped
//! CLI holding the audit lock hung every gateway request).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a lock another process holds is waited for.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// `path` opened to read and write, made 0600 if missing (the umask can only remove bits),
/// never through a symbolic link: a file the processes on one data dir lock together.
pub fn open_shared(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// [`open_shared`] for `rel` under the folder `base`, through no symbolic link at all below
/// `base` (`openat2`, `RESOLVE_NO_SYMLINKS`): a folder of the data dir swapped for a link
/// while a runner runs must not make it write outside (outside attack, session 41: a linked
/// `DATA/rate` had 16 bytes of a file elsewhere overwritten). On a kernel without `openat2`
/// (before 5.6), only the file's own name is kept from being a link.
pub fn open_shared_beneath(base: &Path, rel: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
    ) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::NOSYS) => open_shared(&base.join(rel)),
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` still names `file` (the same inode): a file deleted or replaced under a
/// process that keeps it open must not be the one it locks while the others lock the new one.
/// Checked with the lock taken.
pub fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Which `flock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// Takes `kind` of lock on `file`, waiting up to `wait` for other holders. Other holders hold
/// it briefly in normal use, so the wait polls (see [`poll_until`]). `what` names the file in
/// the error.
pub fn lock_within(file: &File, kind: LockKind, wait: Duration, what: &str) -> io::Result<()> {
    let taken = poll_until(Instant::now() + wait, || {
        let tried = match kind {
            LockKind::Shared => file.try_lock_shared(),
            LockKind::Exclusive => file.try_lock(),
        };
        match tried {
            Ok(()) => Ok(Some(())),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    })?;
    taken.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "another process held the lock on {what} for {} s (a stopped or stuck `warden` command, or a stalled disk)",
                wait.as_secs_f32()
            ),
        )
    })
}

/// Tries `attempt` until it gives something or `until` passes (`None` then): at once, then
/// from 50 µs between tries, doubling, to 2 ms. For what others hold briefly in normal use,
/// and may hold for ever when stopped.
pub fn poll_until<T>(
    until: Instant,
    mut attempt: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let mut pause = Duration::from_micros(50);
    loop {
        if let Some(got) = attempt()? {
            return Ok(Some(got));
        }
        let now = Instant::now();
        if now >= until {
            return Ok(None);
        }
        std::thread::sleep(pause.min(until - now));
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_file_is_made_private_and_never_opened_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bucket");
        let f = open_shared(&path).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(still_at(&f, &path));
        // Replaced under its opener: no longer the file the path names.
        std::fs::remove_file(&path).unwrap();
        assert!(!still_at(&f, &path));
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"x").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let e = open_shared(&path).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"x");
    }

    #[test]
    fn a_shared_file_beneath_a_folder_is_reached_through_no_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rate")).unwrap();
        let rel = Path::new("rate/acme");
        let f = open_shared_beneath(dir.path(), rel).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        // The folder swapped for a link to one holding a file of that name: refused, and
        // nothing written there.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("acme"), b"keep").unwrap();
        std::fs::rename(dir.path().join("rate"), dir.path().join("old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("rate")).unwrap();
        let e = open_shared_beneath(dir.path(), rel).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        assert_eq!(std::fs::read(outside.path().join("acme")).unwrap(), b"keep");
        // Nor a way out with `..`.
        assert!(open_shared_beneath(dir.path(), Path::new("../x")).is_err());
    }

    #[test]
    fn a_lock_held_elsewhere_is_waited_for_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let held = File::create(&path).unwrap();
        held.lock().unwrap();
        // Another open file description: as another process would.
        let mine = File::open(&path).unwrap();
        for kind in [LockKind::Shared, LockKind::Exclusive] {
            let e = lock_within(&mine, kind, Duration::from_millis(30), "the f file").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert!(e.to_string().contains("the f file"), "{e}");
        }
        // Let go while waited for: taken.
        let letgo = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            held.unlock().unwrap();
            held
        });
        lock_within(&mine, LockKind::Exclusive, Duration::from_secs(5), "f").unwrap();
        let held = letgo.join().unwrap();
        assert!(matches!(
            held.try_lock_shared(),
            Err(TryLockError::WouldBlock)
        ));
    }

    #[test]
    fn shared_locks_share() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        lock_within(&a, LockKind::Shared, Duration::ZERO, "f").unwrap();
        lock_within(&b, LockKind::Shared, Duration::ZERO, "f").unwrap();
        let c = File::open(&path).unwrap();
        let e = lock_within(&c, LockKind::Exclusive, Duration::ZERO, "f").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
