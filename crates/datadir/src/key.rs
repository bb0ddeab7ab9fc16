//! 32-byte key files (the secrets key, the audit key): created once, atomically, readable by
//! the operator only.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::{DataDirError, check_private_meta};

/// Every key is 256 bits.
pub const KEY_BYTES: usize = 32;

/// A key; wiped on drop, never printed.
pub struct Key(Zeroizing<[u8; KEY_BYTES]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

impl Key {
    /// A fresh random key (for stores that live in memory only).
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; KEY_BYTES]);
        OsRng.fill_bytes(k.as_mut());
        Key(k)
    }

    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// Reads `path`, creating it first if it does not exist. Creation writes a temporary file
    /// (0600, `create_new`) and hard-links it into place: two hosts starting at once never see
    /// a half-written key, and the loser reads the winner's key. An existing key file must be
    /// a regular file (not a link) of exactly [`KEY_BYTES`] bytes that no other user can read.
    pub fn load_or_create(path: &Path) -> Result<Self, DataDirError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::create(path)?;
                Self::load(path)
            }
            Err(e) => Err(DataDirError::io("reading", path)(e)),
        }
    }

    fn create(path: &Path) -> Result<(), DataDirError> {
        let key = Self::random();
        let mut suffix = [0u8; 8];
        OsRng.fill_bytes(&mut suffix);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = path.with_file_name(format!(".{name}.{hex}"));
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(key.bytes())?;
            f.sync_all()?;
            match fs::hard_link(&tmp, path) {
                // Another host created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        })();
        let _ = fs::remove_file(&tmp);
        written.map_err(DataDirError::io("creating", path))
    }

    /// Reads an existing key file.
    pub fn load(path: &Path) -> Result<Self, DataDirError> {
        let before = fs::symlink_metadata(path).map_err(DataDirError::io("reading", path))?;
        check_private_meta(path, &before)?;
        let f = fs::File::open(path).map_err(DataDirError::io("opening", path))?;
        // Checked on the open file: a link or another file swapped in after the first look
        // is refused rather than read.
        let meta = f.metadata().map_err(DataDirError::io("reading", path))?;
        if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
            return Err(DataDirError::Changed(path.to_path_buf()));
        }
        check_private_meta(path, &meta)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(KEY_BYTES + 1));
        f.take(KEY_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(DataDirError::io("reading", path))?;
        if buf.len() != KEY_BYTES {
            return Err(DataDirError::KeyLength {
                path: path.to_path_buf(),
                found: buf.len().min(KEY_BYTES),
                more: buf.len() > KEY_BYTES,
            });
        }
        let mut k = Zeroizing::new([0u8; KEY_BYTES]);
        k.copy_from_slice(&buf);
        Ok(Key(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("some.key");
        let a = Key::load_or_create(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_BYTES as u64);
        let b = Key::load_or_create(&p).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(format!("{a:?}"), "Key([REDACTED])");
    }

    #[test]
    fn concurrent_first_starts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("some.key");
        let keys: Vec<[u8; KEY_BYTES]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| *Key::load_or_create(&p).unwrap().bytes()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("some.key");
        fs::write(&p, [7u8; 16]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let e = Key::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("exactly 32 bytes, found 16"), "{e}");
        fs::write(&p, [7u8; 40]).unwrap();
        let e = Key::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("exactly 32 bytes, found 32 or more"), "{e}");

        fs::write(&p, [7u8; KEY_BYTES]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Key::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("accessible by other users"), "{e}");

        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        let e = Key::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
