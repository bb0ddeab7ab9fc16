//! The registry's change stamp: 16 random bytes in `DATA/warden.db-stamp`, rewritten by every
//! registry write (in any process) right after its commit. A reader that finds the stamp it
//! saw last may answer from memory what it read then; any other stamp, or none, means read the
//! database again. So the gateway's two lookups per request (tenant key, install) need no
//! transaction with file locks, and a change made by another process (`warden uninstall`
//! while `warden serve` runs) is seen on the next request after it returns.
//!
//! Reading the stamp file on every lookup cost two system calls with a path walk (about 5% of
//! `warden serve`'s CPU under load). So the file is watched (inotify): the kernel queues an
//! event on the watch during every write to it, its removal or its replacement, before the
//! writer's call returns; a lookup that finds no event queued (one `ioctl`) answers with the
//! stamp it read last. Where inotify is not available, every lookup reads the file. The file
//! is read at least once a second all the same: a change the watch could not see (a mount
//! over the file's path) is read within that second. Any change the watch reports forgets
//! what was read before it, even if the bytes come back as they were.
//!
//! A write marks the stamp pending (its first bit) before its change, under the database's
//! write lock, and writes a new stamp after its commit; while the stamp is pending, lookups
//! read the database. So a writer that dies between its commit and its new stamp leaves no
//! reader answering from before the change.

use std::collections::HashMap;
use std::fs::File;
use std::hash::Hash;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};
use rustix::fs::inotify;

/// Entries kept per map; when full it starts again (a bound, not an eviction policy).
const MAX_ENTRIES: usize = 16 * 1024;

/// How long a stamp read last is answered from the watch before the file is read again.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// How long a registry write waits for another to be done with the stamp (as SQLite's busy
/// timeout waits for its lock).
const WRITERS_WAIT: Duration = Duration::from_secs(5);

/// What a reader saw of the stamp: its 16 bytes, and how many changes its watch reported
/// since it was opened. A change the bytes alone would not show (a stamp emptied, or an old
/// copy put back, between two reads: outside attack, session 29) still forgets what was read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Stamp {
    bytes: [u8; 16],
    changes: u64,
}

/// The first byte's top bit: set while a write is under way (see [`StampFile::mark_pending`]).
const PENDING: u8 = 0x80;

/// What the watch reports: a write or a truncation, a change of the link count (removed, or
/// replaced by a rename over it), the file moved or deleted.
fn watched_events() -> inotify::WatchFlags {
    inotify::WatchFlags::MODIFY
        | inotify::WatchFlags::ATTRIB
        | inotify::WatchFlags::MOVE_SELF
        | inotify::WatchFlags::DELETE_SELF
}

/// The stamp file, open for reading and writing. Checked against its path whenever the
/// watch reports anything (or, unwatched, on every use): a stamp removed or replaced by
/// another file (a restore, `rm`) is opened again, never read through a descriptor nobody
/// else writes any more.
pub(crate) struct StampFile {
    open: Mutex<Open>,
    /// This handle's writers take turns here, before the file's lock, within the same bound:
    /// one holder at a time keeps two threads off the one shared `flock`, and writers queued
    /// behind another process's write all give up when the first does (outside attack, session
    /// 30: three admin writes behind a stopped CLI were refused at 5, 10 and 15 s).
    turns: Mutex<()>,
    path: PathBuf,
    /// An inotify instance watching the stamp file; `None` where inotify is not available.
    watch: Option<OwnedFd>,
}

#[derive(Default)]
struct Open {
    file: Option<(File, (u64, u64))>,
    /// The watch on the file open now.
    wd: Option<i32>,
    /// The stamp read last and when, valid while the watch reports nothing (for
    /// [`TRUSTED_FOR`]).
    known: Option<(Stamp, Instant)>,
    /// Changes the watch reported, and files opened again, since the first open.
    changes: u64,
}

impl StampFile {
    /// Opens (creating, 0600) the stamp next to the database at `db`.
    pub(crate) fn open(db: &Path) -> std::io::Result<StampFile> {
        let mut name = db.as_os_str().to_owned();
        name.push("-stamp");
        let watch =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok();
        let stamp = StampFile {
            open: Mutex::new(Open::default()),
            turns: Mutex::new(()),
            path: PathBuf::from(name),
            watch,
        };
        let mut open = stamp.lock();
        stamp.reopen(&mut open)?;
        drop(open);
        Ok(stamp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the file at the stamp's path (created again if it was removed), and watches it.
    fn reopen(&self, open: &mut Open) -> std::io::Result<()> {
        open.file = None;
        if let (Some(watch), Some(wd)) = (&self.watch, open.wd.take()) {
            // Gone already when the file was removed: nothing to do then.
            let _ = inotify::remove_watch(watch, wd);
        }
        warden_datadir::private_file(&self.path).map_err(std::io::Error::other)?;
        // Not through a link, and checked as opened: a link or a file others may read put
        // there after the check above is refused.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.path)?;
        let meta = file.metadata()?;
        warden_datadir::check_private_meta(&self.path, &meta).map_err(std::io::Error::other)?;
        let id = (meta.dev(), meta.ino());
        open.changes = open.changes.wrapping_add(1);
        // The file just opened is the one watched, through its descriptor: watched by its
        // path, another file put there between the two would be (outside attack, session
        // 29: the watch then sat on a file replaced since, and no change was read again).
        // The watch is made before the file is read, so a write after it is reported; a file
        // replaced before the watch was made is seen below, and not trusted.
        if let Some(watch) = &self.watch {
            let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
            open.wd = inotify::add_watch(watch, fd.as_str(), watched_events()).ok();
            let still = std::fs::symlink_metadata(&self.path).map(|m| (m.dev(), m.ino()));
            if !matches!(still, Ok(now) if now == id)
                && let Some(wd) = open.wd.take()
            {
                let _ = inotify::remove_watch(watch, wd);
            }
        }
        open.file = Some((file, id));
        Ok(())
    }

    /// Runs `f` on the file now at the stamp's path (created again if it was removed).
    fn with<T>(
        &self,
        open: &mut Open,
        f: impl FnOnce(&File) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let now = std::fs::symlink_metadata(&self.path).map(|m| (m.dev(), m.ino()));
        let current = matches!((&open.file, &now), (Some((_, id)), Ok(n)) if id == n);
        if !current {
            self.reopen(open)?;
        }
        match &open.file {
            Some((file, _)) => f(file),
            None => Err(std::io::Error::other("the stamp file is not open")),
        }
    }

    /// Whether the watch has reported nothing since it was last emptied (one `ioctl`).
    fn quiet(&self) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|w| rustix::io::ioctl_fionread(w).is_ok_and(|queued| queued == 0))
    }

    /// Empties the watch's queue; whether it is empty now and the watch still there (and so
    /// may be trusted again). A watch the kernel took away (`IN_IGNORED`) is forgotten, and
    /// the file opened (and watched) again.
    fn drain(&self, open: &mut Open) -> bool {
        let Some(watch) = &self.watch else {
            return false;
        };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut events = inotify::Reader::new(watch, &mut buf);
        loop {
            match events.next() {
                Ok(e) => {
                    open.changes = open.changes.wrapping_add(1);
                    if e.events().contains(inotify::ReadFlags::IGNORED) && Some(e.wd()) == open.wd {
                        open.wd = None;
                        open.file = None;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
    }

    /// The stamp now; `None` when it cannot be read, or a write is under way (then nothing
    /// is answered from memory).
    pub(crate) fn read(&self) -> Option<Stamp> {
        // Checked before the lock: an event taken off the queue by another reader is one whose
        // reader holds the lock until it has read the file, so this one then waits for it.
        let quiet = self.quiet();
        let mut open = self.lock();
        if quiet
            && let Some((known, read)) = open.known
            && read.elapsed() < TRUSTED_FOR
        {
            return Some(known);
        }
        open.known = None;
        // Emptied before the file is read: a write that lands after this is queued again.
        let drained = self.drain(&mut open);
        let read = self.with(&mut open, |file| {
            let mut stamp = [0u8; 16];
            match file.read_exact_at(&mut stamp, 0) {
                Ok(()) => Ok(stamp),
                // A new file: a stamp like any other, until the first write.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(stamp),
                Err(e) => Err(e),
            }
        });
        let bytes = read.ok()?;
        if bytes[0] & PENDING != 0 {
            return None;
        }
        let stamp = Stamp {
            bytes,
            changes: open.changes,
        };
        if drained && open.wd.is_some() {
            open.known = Some((stamp, Instant::now()));
        }
        Some(stamp)
    }

    /// Holds the stamp for one registry write, from its pending mark to its new stamp after
    /// the commit (an exclusive `flock` on the file), so that no other writer's new stamp
    /// lands in between and clears this one's mark: a reader would then keep what it read
    /// before this write's commit, for good if this writer died before its own new stamp
    /// (outside attack, session 29). Released when dropped, or when the process dies. Waits
    /// up to [`WRITERS_WAIT`] for another writer. The lock taken is on the file at the path
    /// once it is held: a lock on a file replaced meanwhile (renamed over, removed) would
    /// hold nobody off, and is taken again on the new one.
    pub(crate) fn writing(&self) -> std::io::Result<Writing<'_>> {
        self.writing_within(WRITERS_WAIT)
    }

    /// [`StampFile::writing`], waiting up to `wait` in all (for this handle's other writers,
    /// then for the file's lock).
    fn writing_within(&self, wait: Duration) -> std::io::Result<Writing<'_>> {
        let until = Instant::now() + wait;
        let turn = self.turn(until)?;
        loop {
            let (file, id) = {
                let mut open = self.lock();
                self.with(&mut open, |_| Ok(()))?;
                match &open.file {
                    Some((file, id)) => (file.try_clone()?, *id),
                    None => return Err(std::io::Error::other("the stamp file is not open")),
                }
            };
            warden_datadir::lock_within(
                &file,
                warden_datadir::LockKind::Exclusive,
                until.saturating_duration_since(Instant::now()),
                "the registry's change stamp (another registry write)",
            )?;
            if self.names(id) {
                return Ok(Writing {
                    stamp: self,
                    file,
                    id,
                    _turn: turn,
                });
            }
            let _ = file.unlock();
            if Instant::now() >= until {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the registry's change stamp was replaced again and again for 5 s",
                ));
            }
        }
    }

    /// This handle's turn to write, waited for until `until` (polled as a `flock` is).
    fn turn(&self, until: Instant) -> std::io::Result<std::sync::MutexGuard<'_, ()>> {
        let turn = warden_datadir::poll_until(until, || match self.turns.try_lock() {
            Ok(turn) => Ok(Some(turn)),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(Some(p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => Ok(None),
        })?;
        turn.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "another registry write of this process held the registry's change stamp past \
                 the wait (it waits for another process's write: a stopped or stuck `warden` \
                 command, or a stalled disk)",
            )
        })
    }

    /// Whether the file at the stamp's path is `id` (device, inode).
    fn names(&self, id: (u64, u64)) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == id)
    }

    /// A stamp (pending or clean) in whatever file is at the path now, not the one a write
    /// locked. (A registry write goes through [`Writing`].)
    fn write_at_path(&self, pending: bool) -> std::io::Result<()> {
        let mut open = self.lock();
        open.known = None;
        self.with(&mut open, |file| file.write_all_at(&new_stamp(pending), 0))
    }

    /// A new stamp at the path: every reader reads the database again.
    #[cfg(test)]
    pub(crate) fn bump(&self) -> std::io::Result<()> {
        self.write_at_path(false)
    }

    /// A pending mark at the path (see [`Writing::mark_pending`]).
    #[cfg(test)]
    pub(crate) fn mark_pending(&self) -> std::io::Result<()> {
        self.write_at_path(true)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// 16 random bytes, the first one's top bit set if `pending`, clear if not.
fn new_stamp(pending: bool) -> [u8; 16] {
    let mut stamp = [0u8; 16];
    OsRng.fill_bytes(&mut stamp);
    if pending {
        stamp[0] |= PENDING;
    } else {
        stamp[0] &= !PENDING;
    }
    stamp
}

/// A registry write's hold on the stamp ([`StampFile::writing`]): its marks go to the file
/// it locked.
pub(crate) struct Writing<'a> {
    stamp: &'a StampFile,
    file: File,
    id: (u64, u64),
    /// This handle's turn ([`StampFile::turns`]): dropped last, after the file's lock.
    _turn: std::sync::MutexGuard<'a, ()>,
}

impl Writing<'_> {
    /// Marks a write under way, before its commit: until [`Writing::bump`] after the commit,
    /// readers answer nothing from memory. So a writer that dies between its commit and its
    /// bump (killed, or its bump failed) leaves readers reading the database, not answering
    /// from before the commit for ever (outside attack, session 29). A file put at the path
    /// since the lock was taken is marked too: readers read that one.
    pub(crate) fn mark_pending(&self) -> std::io::Result<()> {
        self.stamp.lock().known = None;
        self.file.write_all_at(&new_stamp(true), 0)?;
        if !self.stamp.names(self.id) {
            self.stamp.write_at_path(true)?;
        }
        Ok(())
    }

    /// A new stamp after the commit: every reader reads the database again. Only in the file
    /// this write locked: a file put at the path meanwhile (renamed over it while this write
    /// held the lock: outside attack, session 29) gets a pending mark instead, which the next
    /// write clears, so its readers read the database until then.
    pub(crate) fn bump(&self) -> std::io::Result<()> {
        self.stamp.lock().known = None;
        if self.stamp.names(self.id) {
            self.file.write_all_at(&new_stamp(false), 0)?;
            if self.stamp.names(self.id) {
                return Ok(());
            }
        }
        self.stamp.write_at_path(true)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would not release it: the lock is on the file description
        // the reader's own descriptor shares.
        let _ = self.file.unlock();
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

    /// The bytes of a stamp read (handles count their changes apart).
    fn bytes(stamp: Option<Stamp>) -> Option<[u8; 16]> {
        stamp.map(|s| s.bytes)
    }

    #[test]
    fn a_bump_changes_the_stamp_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let a = StampFile::open(&dir.path().join("warden.db")).unwrap();
        let b = StampFile::open(&dir.path().join("warden.db")).unwrap();
        let s0 = a.read().unwrap();
        let mut m = Remembered::new();
        m.put(s0, "k", 1);
        assert_eq!(bytes(b.read()), Some(s0.bytes));
        assert_eq!(m.get(a.read().unwrap(), &"k"), Some(1));
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
        assert_eq!(Some(s2.bytes), bytes(c.read()));
        assert_ne!(s2.bytes, s1.bytes);
    }

    /// Unchanged, the stamp is answered from the watch; every kind of change to the file,
    /// by any writer, is read at the next lookup.
    #[test]
    fn the_watched_stamp_sees_every_change_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        let a = StampFile::open(&db).unwrap();
        let b = StampFile::open(&db).unwrap();
        b.bump().unwrap();
        let s0 = a.read().unwrap();
        assert_eq!(a.read(), Some(s0));
        // This kernel has inotify: the second read came from memory.
        assert!(a.watch.is_some() && a.lock().known.is_some_and(|(k, _)| k == s0));
        let path = a.path().to_path_buf();
        let expect = |b: [u8; 16], how: &str| {
            assert_eq!(bytes(a.read()), Some(b), "{how}");
            assert_eq!(bytes(a.read()), Some(b), "{how}, read again");
        };
        // Written in place, not through a stamp handle.
        std::fs::write(&path, [7u8; 16]).unwrap();
        expect([7; 16], "written over");
        // Truncated.
        std::fs::write(&path, b"").unwrap();
        expect([0; 16], "truncated");
        // Replaced by a rename over it, then written through the new file only.
        let private = |path: &Path, bytes: &[u8]| {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .unwrap();
            f.write_all(bytes).unwrap();
        };
        let other = dir.path().join("other");
        private(&other, &[8u8; 16]);
        std::fs::rename(&other, &path).unwrap();
        expect([8; 16], "renamed over");
        b.bump().unwrap();
        let s1 = b.read().unwrap();
        expect(s1.bytes, "bumped after the rename");
        // Moved away, and a new file made at its path.
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        private(&path, &[9u8; 16]);
        expect([9; 16], "moved away and made again");
        // Removed, and made again by another handle.
        std::fs::remove_file(&path).unwrap();
        b.bump().unwrap();
        let s2 = b.read().unwrap();
        expect(s2.bytes, "removed and bumped");
        assert_ne!(s1.bytes, s2.bytes);
    }

    /// A watch the kernel takes away (its file gone) is not trusted: the stamp is opened and
    /// watched again, and later changes are read (outside attack, session 29: a file replaced
    /// between the watch and the open left the watch on a file removed since, and the reader
    /// blind for good).
    #[test]
    fn a_watch_the_kernel_took_away_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        let a = StampFile::open(&db).unwrap();
        let b = StampFile::open(&db).unwrap();
        b.bump().unwrap();
        assert_eq!(bytes(a.read()), bytes(b.read()));
        // The state that race left: the watch on another file, which is then removed.
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        {
            let mut open = a.lock();
            let watch = a.watch.as_ref().unwrap();
            inotify::remove_watch(watch, open.wd.unwrap()).unwrap();
            open.wd = Some(inotify::add_watch(watch, &other, watched_events()).unwrap());
        }
        std::fs::remove_file(&other).unwrap();
        assert_eq!(bytes(a.read()), bytes(b.read()));
        assert_eq!(bytes(a.read()), bytes(b.read()));
        // Written through the stamp's own file: seen, so watched again.
        b.bump().unwrap();
        assert_eq!(bytes(a.read()), bytes(b.read()));
        std::fs::write(a.path(), [5u8; 16]).unwrap();
        assert_eq!(bytes(a.read()), Some([5; 16]));
    }

    /// A stamp put back as it was (emptied twice, an old copy restored) between two reads is
    /// still a change: what was read under it is forgotten (outside attack, session 29).
    #[test]
    fn a_stamp_put_back_as_it_was_is_still_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = StampFile::open(&dir.path().join("warden.db")).unwrap();
        std::fs::write(a.path(), b"").unwrap();
        let before = a.read().unwrap();
        let mut m = Remembered::new();
        m.put(before, "k", 1);
        assert_eq!(m.get(a.read().unwrap(), &"k"), Some(1));
        // A write, then the same bytes as before.
        a.bump().unwrap();
        std::fs::write(a.path(), b"").unwrap();
        let after = a.read().unwrap();
        assert_eq!(after.bytes, before.bytes);
        assert_eq!(m.get(after, &"k"), None);
    }

    /// A write under way, or one whose writer died after its commit but before its bump:
    /// nothing is answered from memory until the next bump.
    #[test]
    fn a_pending_write_is_never_answered_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        let a = StampFile::open(&db).unwrap();
        let writer = StampFile::open(&db).unwrap();
        assert!(a.read().is_some());
        writer.mark_pending().unwrap();
        assert_eq!(a.read(), None);
        assert_eq!(a.read(), None);
        drop(writer);
        assert_eq!(a.read(), None);
        StampFile::open(&db).unwrap().bump().unwrap();
        let s = a.read().unwrap();
        assert_eq!(a.read(), Some(s));
        // A clean stamp never has the pending bit, whatever the random bytes were.
        for _ in 0..64 {
            a.bump().unwrap();
            assert!(a.read().is_some());
        }
    }

    /// One registry write at a time holds the stamp from its mark to its new stamp; another
    /// (another process: another handle here) waits for it.
    #[test]
    fn writers_take_turns_on_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        let a = StampFile::open(&db).unwrap();
        let b = std::sync::Arc::new(StampFile::open(&db).unwrap());
        let held = a.writing().unwrap();
        a.mark_pending().unwrap();
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let _w = b.writing().unwrap();
                b.mark_pending().unwrap();
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        // b waits: it has not marked the stamp, so a's new stamp cannot clear b's mark.
        assert!(!waiter.is_finished());
        a.bump().unwrap();
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert_eq!(a.read(), None, "b's mark, after a's stamp");
    }

    /// Writers of one handle queued behind another process's write (a stopped CLI holding the
    /// stamp's lock) all give up within the one bound, not one bound each in turn.
    #[test]
    fn writers_queued_behind_a_stopped_process_give_up_together() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        let a = std::sync::Arc::new(StampFile::open(&db).unwrap());
        // Another process's write: another open file description holding the lock.
        let held = File::open(a.path()).unwrap();
        held.lock().unwrap();
        let started = Instant::now();
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let e = a.writing_within(Duration::from_millis(400)).err().unwrap();
                    (e.kind(), e.to_string(), started.elapsed())
                })
            })
            .collect();
        for w in writers {
            let (kind, message, at) = w.join().unwrap();
            assert_eq!(kind, std::io::ErrorKind::TimedOut, "{message}");
            // Each within its own 0.4 s (before: 0.4, 0.8 and 1.2 s, one after another).
            assert!(at < Duration::from_millis(750), "{at:?}: {message}");
        }
        held.unlock().unwrap();
        let w = a.writing().unwrap();
        w.mark_pending().unwrap();
        w.bump().unwrap();
        assert!(a.read().is_some());
    }

    /// A stamp renamed over while a write holds it: the next writer holds the new file, and
    /// the first one's new stamp does not clear the second one's mark, even once the second
    /// died before its own new stamp (outside attack, session 29).
    #[test]
    fn a_stamp_replaced_under_a_write_does_not_clear_the_next_writers_mark() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        let reader = StampFile::open(&db).unwrap();
        let (a, b, c) = (
            StampFile::open(&db).unwrap(),
            StampFile::open(&db).unwrap(),
            StampFile::open(&db).unwrap(),
        );
        let wa = a.writing().unwrap();
        wa.mark_pending().unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, [1u8; 16]).unwrap();
        std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::rename(&other, a.path()).unwrap();
        let wb = b.writing().unwrap();
        wb.mark_pending().unwrap();
        wa.bump().unwrap();
        drop(wa);
        assert_eq!(reader.read(), None, "b's mark stands");
        drop(wb);
        assert_eq!(reader.read(), None, "b died before its new stamp");
        let wc = c.writing().unwrap();
        wc.mark_pending().unwrap();
        wc.bump().unwrap();
        drop(wc);
        let s = reader.read().unwrap();
        assert_eq!(reader.read(), Some(s));
    }
}
