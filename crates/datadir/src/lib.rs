//! The operator's private files, created and checked one way: folders (0700, never writable by
//! others), files (0600, regular, never readable by others) and 32-byte key files.
//!
//! Every crate that keeps something under the data dir (the audit log, the database, the
//! secrets and audit keys, the mount folders, the compile cache) goes through here, so the rule
//! "nobody but the operator can read or change it" is written once.

mod key;
mod lock;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use key::{KEY_BYTES, Key};
pub use lock::{
    LOCK_WAIT, LockKind, lock_within, open_shared, open_shared_beneath, poll_until, still_at,
};

/// Why a private folder, file or key could not be used. Names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{what} {path}: {source}", path = .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory; give a folder (or a path that does not exist yet)", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "{path} is writable by other users (mode {mode:o}); it holds data of the host and its extensions: chmod 700 it",
        path = .path.display()
    )]
    SharedDir { path: PathBuf, mode: u32 },
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{path} is accessible by other users (mode {mode:o}); chmod 600 it", path = .path.display())]
    SharedFile { path: PathBuf, mode: u32 },
    #[error("{} changed while being opened", .0.display())]
    Changed(PathBuf),
    #[error(
        "{path} must hold exactly {KEY_BYTES} bytes, found {found}{more}",
        path = .path.display(),
        more = if *.more { " or more" } else { "" }
    )]
    KeyLength {
        path: PathBuf,
        found: usize,
        more: bool,
    },
}

impl DataDirError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { what, path, source }
    }
}

/// Creates `dir` (and missing parents) as 0700, and refuses an existing one that is not a
/// folder (a link to one included) or that other users can write to.
pub fn private_dir(dir: &Path) -> Result<(), DataDirError> {
    // Checked first so that a file in the way is named as such, not as "File exists".
    match fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(DataDirError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(DataDirError::io("creating", dir))?;
        }
        Err(e) => return Err(DataDirError::io("reading", dir)(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(DataDirError::io("reading", dir))?;
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory(dir.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::SharedDir {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Creates `path` as an empty 0600 file if it does not exist (exactly 0600, whatever the
/// umask), then checks it with [`check_private_file`].
pub fn private_file(path: &Path) -> Result<(), DataDirError> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // The umask can only have removed bits; a umask of 0277 would otherwise leave a file
        // the host cannot write.
        Ok(f) => f
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(DataDirError::io("setting mode 600 on", path))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(DataDirError::io("creating", path)(e)),
    }
    check_private_file(path)
}

/// Refuses `path` unless it is a regular file (not a link) that no other user can access.
pub fn check_private_file(path: &Path) -> Result<(), DataDirError> {
    let meta = fs::symlink_metadata(path).map_err(DataDirError::io("reading", path))?;
    check_private_meta(path, &meta)
}

/// [`check_private_file`] on metadata already read (for instance from an open file).
pub fn check_private_meta(path: &Path, meta: &fs::Metadata) -> Result<(), DataDirError> {
    if !meta.file_type().is_file() {
        return Err(DataDirError::NotAFile(path.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::SharedFile {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_the_way_is_named_and_a_shared_folder_refused() {
        let t = tempfile::TempDir::new().unwrap();
        let file = t.path().join("f");
        fs::write(&file, b"x").unwrap();
        let e = private_dir(&file).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let shared = t.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&shared).unwrap_err().to_string();
        assert!(e.contains("writable by other users (mode 777)"), "{e}");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path().join("a"), &link).unwrap();
        fs::create_dir(t.path().join("a")).unwrap();
        let e = private_dir(&link).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let made = t.path().join("b/c");
        private_dir(&made).unwrap();
        let mode = fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn private_files_are_0600_and_shared_or_odd_ones_refused() {
        let t = tempfile::TempDir::new().unwrap();
        let p = t.path().join("db");
        private_file(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        private_file(&p).unwrap(); // an existing private file is fine
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = private_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("accessible by other users (mode 640); chmod 600"),
            "{e}"
        );
        let link = t.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let e = check_private_file(&link).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = private_file(t.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
