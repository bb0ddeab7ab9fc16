//! The embedded default storage: `DATA/warden.db`, one SQLite file with the key-value entries
//! ([`SqliteKv`], implementing `warden_kv::KvBackend`), the sealed secret rows
//! ([`SqliteSecretRows`], implementing `warden_secrets::SecretRows`; the secrets crate encrypts,
//! this crate only stores ciphertext) and the service's registry ([`SqliteRegistry`],
//! implementing `warden_registry::Registry`); and the content-addressed blobs in
//! `DATA/blobs/sha256/` ([`FileBlobs`], implementing `warden_registry::BlobStore`); and the
//! tenants' rate buckets that the runners on one data dir share, in `DATA/rate/`
//! ([`FileRateLeases`], implementing `warden_registry::RateLeases`), and their calls in flight,
//! in `DATA/seats/` ([`FileSeats`], implementing `warden_registry::SharedSeats`).
//!
//! This is the only crate that opens `DATA/warden.db` and it owns everything about the file:
//! its tables and their migrations (`schema.rs`), its connection settings (WAL,
//! `synchronous=FULL`, a busy timeout) and its file modes (0600, [`prepare_db_file`]). Each
//! store opens its own connection; both run the same checks and settings before any statement.
//!
//! The host opens both with [`open_kv`] and [`open_secrets`] on its data folder.

mod blobs;
mod export;
mod file;
mod kv;
mod rate;
mod registry;
mod schema;
mod seats;
mod secrets;
mod shared;
mod stamp;

use std::path::Path;
use std::sync::Arc;

use warden_kv::KvError;
use warden_secrets::{KEY_FILE, SecretError, SecretKey, SecretStore};

pub use blobs::{BLOBS_DIR, FileBlobs, MAX_BLOB_BYTES};
pub use export::{Export, SealedSecrets};
pub use file::{DbFileError, prepare_db_file};
pub use kv::SqliteKv;
pub use rate::{FileRateLeases, RATE_DIR};
pub use registry::SqliteRegistry;
pub use seats::{FileSeats, SEATS_DIR};
pub use secrets::SqliteSecretRows;

/// The database file inside the data folder, shared by the key-value and secrets stores.
pub const DB_FILE: &str = "warden.db";

/// The registry of data folder `data_dir` (tenants, publications, installs) in
/// `data_dir/warden.db`.
pub fn open_registry(data_dir: &Path) -> Result<SqliteRegistry, warden_registry::RegistryError> {
    SqliteRegistry::open(&data_dir.join(DB_FILE))
}

/// The key-value store of data folder `data_dir`: `data_dir/warden.db` (created 0600 if
/// missing).
pub fn open_kv(data_dir: &Path) -> Result<SqliteKv, KvError> {
    SqliteKv::open(&data_dir.join(DB_FILE))
}

/// The secrets store of data folder `data_dir`: the key `data_dir/secret.key` (created on first
/// start, see [`SecretKey::load_or_create`]) and the rows in `data_dir/warden.db`. A key that
/// does not match the one the database was written with is [`SecretError::WrongKey`].
pub fn open_secrets(data_dir: &Path) -> Result<SecretStore, SecretError> {
    let key = SecretKey::load_or_create(&data_dir.join(KEY_FILE))?;
    open_secrets_with_key(&data_dir.join(DB_FILE), &key)
}

/// The secrets store with its rows in database `db` under an explicit key (tests, key
/// rotation tools).
pub fn open_secrets_with_key(db: &Path, key: &SecretKey) -> Result<SecretStore, SecretError> {
    SecretStore::new(Arc::new(SqliteSecretRows::open(db)?), key)
}
