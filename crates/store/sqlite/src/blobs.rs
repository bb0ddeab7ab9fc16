//! `warden_registry::BlobStore` on the data dir: `DATA/blobs/sha256/<hex>`, each written to a
//! temporary file (0600, `create_new`) in `DATA/blobs/tmp`, fsynced, renamed into place, and
//! the folder fsynced; read back only if the bytes still hash to the name.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore as _};
use warden_bundle::ContentHash;
use warden_datadir::{check_private_file, private_dir};
use warden_registry::{BlobError, BlobStore};

/// The blob folder inside the data dir.
pub const BLOBS_DIR: &str = "blobs";
/// Most bytes a blob may hold (the bundle reader's default total cap).
pub const MAX_BLOB_BYTES: u64 = 256 << 20;

/// Blobs in a folder of the data dir.
pub struct FileBlobs {
    root: PathBuf,
}

impl FileBlobs {
    /// The blob store of data dir `data` (folders created 0700 if missing).
    pub fn open(data: &Path) -> Result<FileBlobs, BlobError> {
        let root = data.join(BLOBS_DIR);
        let store = FileBlobs { root };
        for dir in [store.root.clone(), store.sha_dir(), store.tmp_dir()] {
            private_dir(&dir).map_err(|e| store.err(&dir, e))?;
        }
        Ok(store)
    }

    /// The blobs of data dir `data`, to be read only: nothing is created or changed (a data
    /// dir being copied elsewhere, maybe on a read-only mount). Every read still checks the
    /// hash.
    pub fn reader(data: &Path) -> FileBlobs {
        FileBlobs {
            root: data.join(BLOBS_DIR),
        }
    }

    fn sha_dir(&self) -> PathBuf {
        self.root.join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn path(&self, hash: &ContentHash) -> PathBuf {
        self.sha_dir().join(hex::encode(hash.as_bytes()))
    }

    fn err(
        &self,
        at: &Path,
        e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> BlobError {
        BlobError::Storage {
            location: at.display().to_string(),
            source: e.into(),
        }
    }

    /// Reads and checks the blob at `path`, if there is one.
    fn read(&self, path: &Path, hash: &ContentHash) -> Result<Option<Vec<u8>>, BlobError> {
        match check_private_file(path) {
            Err(warden_datadir::DataDirError::Io { source, .. })
                if source.kind() == ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            other => other.map_err(|e| self.err(path, e))?,
        }
        let f = File::open(path).map_err(|e| self.err(path, e))?;
        let mut bytes = Vec::new();
        f.take(MAX_BLOB_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.err(path, e))?;
        if bytes.len() as u64 > MAX_BLOB_BYTES {
            return Err(self.err(path, format!("larger than {MAX_BLOB_BYTES} bytes")));
        }
        let found = ContentHash::of(&bytes);
        if found != *hash {
            return Err(BlobError::Corrupt {
                expected: *hash,
                found,
            });
        }
        Ok(Some(bytes))
    }
}

impl BlobStore for FileBlobs {
    fn put(&self, bytes: &[u8]) -> Result<ContentHash, BlobError> {
        if bytes.len() as u64 > MAX_BLOB_BYTES {
            return Err(self.err(
                &self.root,
                format!(
                    "a blob of {} bytes is over the cap of {MAX_BLOB_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let hash = ContentHash::of(bytes);
        let path = self.path(&hash);
        // Already there and intact: nothing to do. Damaged: replaced below.
        match self.read(&path, &hash) {
            Ok(Some(_)) => return Ok(hash),
            Ok(None) | Err(BlobError::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut suffix = [0u8; 8];
        OsRng.fill_bytes(&mut suffix);
        let tmp = self.tmp_dir().join(format!(
            "{}.{}",
            hex::encode(hash.as_bytes()),
            hex::encode(suffix)
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(self.sha_dir())?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(|e| self.err(&path, e))?;
        Ok(hash)
    }

    fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, BlobError> {
        self.read(&self.path(hash), hash)
    }
}
