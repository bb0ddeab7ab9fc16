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
        let name = format!(
            "{}-{}-{:x}",
            bundle.content_hash().to_string().replace(':', "-"),
            std::process::id(),
            next_serial()
        );
        collect_leftovers(root);
        let dir = root.join(name);
        // A leftover of the same name (a pid reused after a crash) is not trusted.
        if dir.exists() {
            remove(&dir)?;
        }
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let unpacked = Unpacked { dir };
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

/// Removes the copies of host processes that are gone (killed before they could clean up):
/// a name ends in `-PID-SERIAL`, and `/proc/PID` no longer exists.
fn collect_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.rsplitn(3, '-');
        let (Some(serial), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let ours = u64::from_str_radix(serial, 16).is_ok() && name.starts_with("sha256-");
        if let (true, Ok(pid)) = (ours, pid.parse::<u32>())
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = remove(&e.path());
        }
    }
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
    }
}
