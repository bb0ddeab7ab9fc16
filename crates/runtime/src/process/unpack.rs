//! A process extension's verified files on disk: written from the bytes that were hashed and
//! verified (never re-read from the bundle file), read-only, in a folder of their own that the
//! sandbox mounts read-only at `/bundle`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use warden_bundle::{Bundle, Mode};

/// The unpacked files; the folder is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct Unpacked {
    dir: PathBuf,
    /// `<dir>.lock`, locked (`flock`) while this copy is in use: how another host, in any pid
    /// namespace, tells a live copy from a dead host's leftover.
    lock: Option<(PathBuf, fs::File)>,
}

impl Unpacked {
    /// Writes `bundle`'s files under a new folder of `root` (created 0700 if missing) named
    /// for its content hash and this process, so processes sharing a data dir never share
    /// (or race on) one another's copy. Files are 0444 (0555 for executables), folders 0555.
    pub(crate) fn write(bundle: &Bundle, root: &Path) -> std::io::Result<Unpacked> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        // The pid alone is not unique (hosts in other pid namespaces share the data dir).
        let name = format!(
            "{}-{}-{:x}",
            bundle.content_hash().to_string().replace(':', "-"),
            host_tag(),
            next_serial()
        );
        collect_leftovers(root);
        let dir = root.join(&name);
        // Locked before the folder exists, so no other host ever sees it unlocked.
        let lock_path = root.join(format!("{name}.lock"));
        let lock = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock_path)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        let unpacked = Unpacked {
            dir: dir.clone(),
            lock: Some((lock_path, lock)),
        };
        // A leftover of the same name is not trusted.
        if dir.exists() {
            remove(&dir)?;
        }
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let mut dirs = Vec::new();
        for f in bundle.files() {
            let path = unpacked.dir.join(f.path.as_str());
            if let Some(parent) = path.parent()
                && parent != unpacked.dir
            {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
                dirs.push(parent.to_path_buf());
            }
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(f.data)?;
            let mode = match f.mode {
                Mode::Executable => 0o555,
                Mode::Regular => 0o444,
            };
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        // Deepest first, so a parent is made read-only after its children were written.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.dedup();
        for d in dirs {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o555))?;
        }
        fs::set_permissions(&unpacked.dir, fs::Permissions::from_mode(0o555))?;
        Ok(unpacked)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

/// Removes the copies of hosts that are gone (killed before they could clean up): a copy
/// whose lock file is missing or not locked by anyone.
fn collect_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("sha256-") || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let lock_path = root.join(format!("{name}.lock"));
        // A host locks its copy's file before it makes the folder: a folder without one
        // was left by a host that died in between (or by an older version).
        let held = match fs::OpenOptions::new().write(true).open(&lock_path) {
            Ok(f) => {
                match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => Some(Some(f)),
                    Err(_) => None, // its host lives
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(None),
            // Out of descriptors or memory, say: no reason to think its host is gone.
            Err(_) => None,
        };
        if let Some(_held) = held {
            let _ = remove(&e.path());
            let _ = fs::remove_file(&lock_path);
        }
    }
}

/// This process's part of a copy's name: pid and start time, unique across pid namespaces.
fn host_tag() -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}x{nanos:x}", std::process::id())
    })
    .clone()
}

fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// Removes a read-only tree (folders must be writable again to empty them).
fn remove(dir: &Path) -> std::io::Result<()> {
    for entry in walk(dir) {
        let _ = fs::set_permissions(&entry, fs::Permissions::from_mode(0o700));
    }
    fs::remove_dir_all(dir)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = remove(&self.dir);
        if let Some((path, _lock)) = self.lock.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod leftover_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A copy whose lock is held (a live host, in any pid namespace) is kept; one whose lock
    /// is free or missing (a dead host's) is removed.
    #[test]
    fn only_copies_of_dead_hosts_are_collected() {
        let root = tempfile::tempdir().unwrap();
        let live = root.path().join("sha256-aa-1x1-0");
        let dead = root.path().join("sha256-aa-1x2-0");
        let bare = root.path().join("sha256-aa-1x3-0");
        for d in [&live, &dead, &bare] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("f"), b"x").unwrap();
        }
        let held = fs::File::create(root.path().join("sha256-aa-1x1-0.lock")).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        fs::File::create(root.path().join("sha256-aa-1x2-0.lock")).unwrap();
        collect_leftovers(root.path());
        assert!(live.exists());
        assert!(!dead.exists() && !root.path().join("sha256-aa-1x2-0.lock").exists());
        assert!(!bare.exists());
    }
}
