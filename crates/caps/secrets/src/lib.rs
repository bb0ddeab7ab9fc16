//! Secrets for extensions: [`SecretValue`] (zeroized on drop, never printed, not serializable)
//! and [`SecretStore`], the values of each (tenant, extension, name) encrypted at rest with
//! XChaCha20-Poly1305 under a [`SecretKey`] (a key file created on first start).
//!
//! The store seals and opens values; where the sealed rows live is a [`SecretRows`]
//! implementation that only ever sees ciphertext: [`MemoryRows`] here, SQLite in
//! `warden-store-sqlite` (which also opens a store on `DATA/`). Every implementation must
//! behave alike, and pass the suite in `warden_secrets::testing` (feature `testing`).
//!
//! [`SecretAccess`] is what one install may read (its grant and a [`SecretSource`] bound to it).
//!
//! This crate knows nothing about Wasmtime, guests, databases or terminals; it never prints.
//! Errors name the secret (tenant, extension, name), never its value.

mod access;
mod key;
mod rows;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod value;

pub use access::{SecretAccess, SecretSource};
pub use key::{KEY_BYTES, KEY_FILE, SecretKey};
pub use rows::{MemoryRows, SealedRow, SecretId, SecretRows, parse_secret_id};
pub use store::SecretStore;
pub use value::{MAX_SECRET_BYTES, SecretValue};

/// Why a secret could not be stored or read. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key file: {0}")]
    KeyFile(#[from] warden_datadir::DataDirError),
    #[error(
        "the secret key does not match the secrets in {location}: wrong or replaced key file (the secrets cannot be decrypted)"
    )]
    WrongKey { location: String },
    #[error(
        "secret {name} of {extension} (tenant {tenant}) cannot be decrypted: wrong key or tampered row"
    )]
    Decrypt {
        tenant: String,
        extension: String,
        name: String,
    },
    #[error("secret {name} is {size} bytes, over the limit of {MAX_SECRET_BYTES} bytes")]
    TooLarge { name: String, size: usize },
    #[error("secret {name} is not valid UTF-8")]
    NotUtf8 { name: String },
    /// The storage failed (I/O, a busy or corrupt database, a file others may read).
    /// `location` is where the rows live ([`SecretRows::location`], or the file at fault).
    #[error("secret storage {location}")]
    Storage {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}
