//! What grew in a process extension's read-write folders since they were last measured, as
//! the kernel reports it (inotify), so that a measure runs as soon as the folders may be over
//! their quota instead of at the next turn of a clock (outside attack: a program writing
//! about 1 GB/s left 23-46 MiB past a 4 MiB quota measured every 20 ms).
//!
//! Only a trigger, never a measure: what it says is an upper bound where it can see, and it
//! says when it cannot see. Every folder under the roots is watched (folders made later as
//! their creation is reported, then listed, so that what was made in them before the watch is
//! counted). A file's growth is its size now (the larger of its length and its blocks, as
//! [`crate::quota::walk`] counts) past its size at the last [`Growth::rebase`]; a file first
//! seen since then counts whole (it may be new). Every entry created or moved in counts one
//! entry. It cannot tell what is written through a name that was deleted or renamed over
//! while the file stays open (the write is reported under that name, whatever it names now):
//! a deletion, a rename onto a name, and every later change under such a name or under a name
//! that is gone are reported as [`Since::removed`], and the caller measures then (the measure
//! counts what deleted files hold, and finds files kept under another link; the files the tree
//! holds open under names that are gone are then watched by themselves). A queue
//! overflow, a folder that cannot be watched, more files than it keeps, or more names changed
//! at once than a read looks up make it [`Since::blind`].

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// What grew since the last [`Growth::rebase`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Since {
    /// Bytes the files seen changing grew by, at most (see the module).
    pub bytes: u64,
    /// Entries created or moved in.
    pub entries: u64,
    /// Something was deleted, or a file was changed under a name that is gone.
    pub removed: bool,
    /// Events were lost, or part of the tree is not watched: nothing can be told.
    pub blind: bool,
}

/// One watch over a set of folder trees. Not thread-safe by itself; reads never block.
pub struct Growth {
    inotify: OwnedFd,
    /// Each watched folder, open, by its watch descriptor.
    dirs: HashMap<i32, OwnedFd>,
    /// Per file seen (device, inode): its size at the last rebase (0 if first seen since) and now.
    files: HashMap<(u64, u64), (u64, u64)>,
    /// How many folders and files it keeps before it is blind.
    keep: usize,
    /// A folder could not be watched: blind until the end.
    partial: bool,
    /// Files watched by themselves (see [`Growth::watch_file`]), open (`O_PATH`), by watch.
    held: HashMap<i32, OwnedFd>,
    /// Names (folder's watch, name) deleted or renamed onto since the watch began.
    stale: std::collections::HashSet<(i32, std::ffi::CString)>,
    since: Since,
}

impl std::fmt::Debug for Growth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Growth")
            .field("dirs", &self.dirs.len())
            .field("files", &self.files.len())
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::ONLYDIR);

/// Names a read looks up at most (see [`Growth::read`]).
const NAMES_PER_READ: usize = 64;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Growth {
    /// Watches every folder under `roots` (missing roots are skipped). `max_entries` is the
    /// quota's: more folders or files than a few times that make it blind rather than keep
    /// growing. Fails if the kernel gives no inotify instance (the caller then measures on
    /// its clock only).
    pub fn watch(roots: &[PathBuf], max_entries: u64) -> std::io::Result<Growth> {
        let inotify =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        let keep = usize::try_from(max_entries.saturating_mul(2).saturating_add(1024))
            .unwrap_or(usize::MAX)
            .min(1 << 20);
        let mut g = Growth {
            inotify,
            dirs: HashMap::new(),
            files: HashMap::new(),
            keep,
            partial: false,
            held: HashMap::new(),
            stale: std::collections::HashSet::new(),
            since: Since::default(),
        };
        for root in roots {
            match rustix::fs::openat(rustix::fs::CWD, root, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => g.add_tree(fd, false),
                Err(Errno::NOENT) => {}
                Err(_) => g.partial = true,
            }
        }
        // What the setup saw is the state the caller measures next, not growth.
        g.rebase();
        Ok(g)
    }

    /// The inotify descriptor, readable when events are queued.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Reads every event queued (never waits) and says what grew since the last rebase.
    pub fn read(&mut self) -> Since {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
        // One lookup per name and read, whatever the number of its events: a program writing
        // a byte at a time across files must not have the host look each write up (outside
        // attack: a whole core per call). So events are gathered per (folder, name) first;
        // handling them reads the folders, which needs `self`.
        let mut names: HashMap<i32, HashMap<std::ffi::CString, ReadFlags>> = HashMap::new();
        let mut other: Vec<(i32, ReadFlags)> = Vec::new();
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        loop {
            match reader.next() {
                Ok(e) => match e.file_name() {
                    Some(name) => {
                        let folder = names.entry(e.wd()).or_default();
                        match folder.get_mut(name) {
                            Some(all) => *all |= e.events(),
                            None => {
                                folder.insert(name.to_owned(), e.events());
                            }
                        }
                    }
                    None => other.push((e.wd(), e.events())),
                },
                Err(Errno::WOULDBLOCK) => break,
                Err(Errno::INTR) => continue,
                Err(_) => {
                    self.since.blind = true;
                    break;
                }
            }
        }
        for (wd, flags) in other {
            self.event(wd, flags, None);
        }
        // Past `NAMES_PER_READ` names, only new folders are looked up (to watch them) and the
        // rest is left to a measure.
        let mut looked_up = 0;
        for (wd, folder) in names {
            for (name, flags) in folder {
                let new_folder = flags.contains(ReadFlags::ISDIR)
                    && flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO);
                if looked_up < NAMES_PER_READ || new_folder {
                    looked_up += 1;
                    self.event(wd, flags, Some(&name));
                } else {
                    self.since.blind = true;
                }
            }
        }
        self.since
    }

    /// Watches the file `path` names by itself, as it is now (its size counts as measured):
    /// for a file the tree keeps open under a name that is gone (deleted, or its folder
    /// removed), whose writes reach no folder's watch. `path` is a `/proc/PID/fd/N` link.
    pub fn watch_file(&mut self, path: &str) {
        if self.held.len() >= self.keep {
            self.since.blind = true;
            return;
        }
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        let Ok(file) = rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty()) else {
            return;
        };
        let Ok(stat) = rustix::fs::fstat(&file) else {
            return;
        };
        let watched = WatchFlags::MODIFY | WatchFlags::CLOSE_WRITE;
        let Ok(wd) = inotify::add_watch(&self.inotify, path, watched) else {
            self.since.blind = true;
            return;
        };
        if self.held.contains_key(&wd) || self.dirs.contains_key(&wd) {
            return;
        }
        let size = (stat.st_size as u64).max((stat.st_blocks as u64).saturating_mul(512));
        self.files
            .entry((stat.st_dev, stat.st_ino))
            .or_insert((size, size));
        self.held.insert(wd, file);
    }

    /// Takes what was read as measured: growth counts from here.
    pub fn rebase(&mut self) {
        if self.files.len() > self.keep {
            self.files.clear();
        }
        for (base, now) in self.files.values_mut() {
            *base = *now;
        }
        self.since = Since {
            blind: self.partial,
            ..Since::default()
        };
    }

    fn event(&mut self, wd: i32, flags: ReadFlags, name: Option<&std::ffi::CStr>) {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.since.blind = true;
            return;
        }
        if flags.contains(ReadFlags::IGNORED) {
            self.dirs.remove(&wd);
            self.held.remove(&wd);
            return;
        }
        if let Some(file) = self.held.get(&wd) {
            match rustix::fs::fstat(file) {
                Ok(stat) => self.seen(&stat),
                Err(_) => self.since.blind = true,
            }
            return;
        }
        let (Some(name), Some(dir)) = (name, self.dirs.get(&wd)) else {
            return;
        };
        // A name deleted, or renamed onto (which unlinks what it named), may be open: what is
        // written through it is reported under that name, whatever it names now (outside
        // attack: a file kept under a second link while its first name was renamed over, its
        // writes looked up as the empty file that took the name, 5-69 MB unseen).
        if flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_TO) {
            self.since.removed = true;
            if self.stale.len() < self.keep {
                self.stale.insert((wd, name.to_owned()));
            } else {
                self.partial = true;
                self.since.blind = true;
            }
        } else if self.stale.contains(&(wd, name.to_owned())) {
            self.since.removed = true;
        }
        if flags.contains(ReadFlags::DELETE)
            && !flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO)
        {
            return;
        }
        let created = flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO);
        if created {
            self.since.entries = self.since.entries.saturating_add(1);
        }
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::NOENT) => {
                // Moved on already (its new name is reported too), or deleted while open.
                self.since.removed = true;
                return;
            }
            Err(_) => {
                self.since.blind = true;
                return;
            }
        };
        if created && FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => self.add_tree(fd, true),
                Err(Errno::NOENT) => self.since.removed = true,
                Err(_) => {
                    self.partial = true;
                    self.since.blind = true;
                }
            }
        }
        self.seen(&stat);
    }

    /// Records a file's size now.
    fn seen(&mut self, stat: &rustix::fs::Stat) {
        let size = (stat.st_size as u64).max((stat.st_blocks as u64).saturating_mul(512));
        let key = (stat.st_dev, stat.st_ino);
        if !self.files.contains_key(&key) && self.files.len() >= self.keep {
            self.since.blind = true;
            return;
        }
        let (base, now) = self.files.entry(key).or_insert((0, 0));
        let before = now.saturating_sub(*base);
        *now = size;
        let after = now.saturating_sub(*base);
        self.since.bytes = self
            .since
            .bytes
            .saturating_sub(before)
            .saturating_add(after);
    }

    /// Watches the folder `fd` and every folder under it; with `count`, what it holds counts
    /// as grown (it was made, or moved in, since the last measure).
    fn add_tree(&mut self, fd: OwnedFd, count: bool) {
        let mut stack = vec![fd];
        while let Some(dir) = stack.pop() {
            if self.dirs.len() >= self.keep {
                self.partial = true;
                self.since.blind = true;
                return;
            }
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
            let wd = match inotify::add_watch(&self.inotify, path.as_str(), EVENTS) {
                Ok(wd) => wd,
                Err(_) => {
                    self.partial = true;
                    self.since.blind = true;
                    continue;
                }
            };
            // Already watched (moved within the tree): its content is known.
            if self.dirs.contains_key(&wd) {
                continue;
            }
            let Ok(listing) = rustix::fs::Dir::read_from(&dir) else {
                self.partial = true;
                self.since.blind = true;
                continue;
            };
            for entry in listing {
                let Ok(entry) = entry else {
                    self.partial = true;
                    self.since.blind = true;
                    break;
                };
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                if entry.file_type() == FileType::Directory {
                    match rustix::fs::openat(&dir, name, DIR_FLAGS, Mode::empty()) {
                        Ok(sub) => stack.push(sub),
                        Err(Errno::NOENT) => {}
                        Err(_) => {
                            self.partial = true;
                            self.since.blind = true;
                        }
                    }
                }
                if count {
                    self.since.entries = self.since.entries.saturating_add(1);
                    if let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                        self.seen(&stat);
                    }
                }
            }
            self.dirs.insert(wd, dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("warden-growth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn a_file_growing_counts_its_growth_since_the_last_rebase() {
        let root = scratch("grow");
        std::fs::write(root.join("old"), vec![1u8; 100_000]).unwrap();
        let mut g = Growth::watch(std::slice::from_ref(&root), 100).unwrap();
        assert_eq!(g.read(), Since::default());
        let mut f = std::fs::File::create(root.join("new")).unwrap();
        f.write_all(&[2u8; 300_000]).unwrap();
        let s = g.read();
        assert_eq!(s.entries, 1);
        assert!(s.bytes >= 300_000 && s.bytes < 310_000, "{s:?}");
        g.rebase();
        f.write_all(&[2u8; 50_000]).unwrap();
        let s = g.read();
        // Counted as the walk counts: the larger of length and blocks, before and after.
        assert!(s.bytes >= 45_000 && s.bytes < 60_000, "{s:?}");
        assert_eq!(s.entries, 0);
        // A file first seen counts whole: it may be new to the measure.
        std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("old"))
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert!(g.read().bytes >= 150_000);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn folders_made_later_are_watched_with_what_was_put_in_them_first() {
        let root = scratch("tree");
        let mut g = Growth::watch(std::slice::from_ref(&root), 100).unwrap();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/early"), vec![0u8; 70_000]).unwrap();
        let s = g.read();
        assert!(s.bytes >= 70_000, "{s:?}");
        assert!(s.entries >= 2, "{s:?}");
        g.rebase();
        std::fs::write(root.join("a/b/c/late"), vec![0u8; 40_000]).unwrap();
        let s = g.read();
        assert!(s.bytes >= 40_000 && s.bytes < 50_000, "{s:?}");
        assert!(!s.removed && !s.blind, "{s:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_write_to_a_deleted_file_is_reported_as_a_removal() {
        let root = scratch("deleted");
        let mut g = Growth::watch(std::slice::from_ref(&root), 100).unwrap();
        let mut f = std::fs::File::create(root.join("gone")).unwrap();
        std::fs::remove_file(root.join("gone")).unwrap();
        g.read();
        g.rebase();
        assert!(!g.read().removed);
        f.write_all(&[0u8; 100_000]).unwrap();
        let s = g.read();
        assert!(s.removed, "{s:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_write_under_a_name_renamed_over_is_reported_as_a_removal() {
        let root = scratch("renamed");
        let mut f = std::fs::File::create(root.join("x")).unwrap();
        std::fs::hard_link(root.join("x"), root.join("k")).unwrap();
        let mut g = Growth::watch(std::slice::from_ref(&root), 100).unwrap();
        std::fs::write(root.join("t"), b"").unwrap();
        std::fs::rename(root.join("t"), root.join("x")).unwrap();
        assert!(g.read().removed);
        g.rebase();
        // Reported under "x", which names the empty file now: not growth it can see.
        f.write_all(&[0u8; 100_000]).unwrap();
        let s = g.read();
        assert!(s.removed, "{s:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn more_files_than_it_keeps_make_it_blind() {
        let root = scratch("blind");
        let mut g = Growth::watch(std::slice::from_ref(&root), 0).unwrap();
        for i in 0..1100 {
            std::fs::write(root.join(format!("f{i}")), b"x").unwrap();
        }
        assert!(g.read().blind);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
