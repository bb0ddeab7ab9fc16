//! Creating and checking `DATA/warden.db` so that only the host's user can read it: it holds
//! every tenant's key-value data in clear and the secrets' metadata and ciphertexts.
//! The secrets store (`warden-secrets`) opens the same file through this function too.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the database file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct DbFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// Creates `path` with mode 0600 if it does not exist, whatever the umask or the folder's
/// mode; refuses an existing file (or its `-wal`/`-shm`) that group or others may access,
/// as `secret.key` is refused, instead of silently fixing it: its contents may already have
/// been read, and the operator should know (`chmod 600 warden.db*`).
///
/// SQLite creates `-wal` and `-shm` with the mode of the database file, so a 0600 database
/// gives 0600 companions.
pub fn prepare_db_file(path: &Path) -> Result<(), DbFileError> {
    let err = |p: &Path, reason: String| DbFileError {
        path: p.to_path_buf(),
        reason,
    };
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // The umask can only have removed bits; set exactly 0600 (a umask of 0277 would
        // otherwise leave a file the host cannot write).
        Ok(f) => f
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| err(path, format!("setting mode 600: {e}")))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(path, format!("creating: {e}"))),
    }
    for p in [
        path.to_path_buf(),
        suffixed(path, "-wal"),
        suffixed(path, "-shm"),
    ] {
        let meta = match fs::metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound && p != path => continue,
            Err(e) => return Err(err(&p, format!("reading: {e}"))),
        };
        if !meta.is_file() {
            return Err(err(&p, "is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(
                &p,
                format!(
                    "is accessible by other users (mode {mode:o}); chmod 600 it (and its -wal and -shm)"
                ),
            ));
        }
    }
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
