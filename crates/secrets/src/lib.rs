//! Secrets for extensions: [`SecretValue`] (zeroized on drop, never printed, not serializable)
//! and [`SecretStore`], the values of each (tenant, extension, name) encrypted at rest in
//! SQLite with XChaCha20-Poly1305 under a key file created on first start.
//!
//! This crate knows nothing about Wasmtime, guests or terminals; it never prints. Errors name
//! the secret (tenant, extension, name), never its value.

mod key;
mod store;
mod value;

pub use key::{KEY_BYTES, KEY_FILE, SecretKey};
pub use store::{DB_FILE, SecretStore};
pub use value::{MAX_SECRET_BYTES, SecretValue};

use std::path::PathBuf;

/// Why a secret could not be stored or read. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "the secret key does not match the secrets in {path}: wrong or replaced key file (the secrets cannot be decrypted)"
    )]
    WrongKey { path: PathBuf },
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
    #[error("secret database {path}: {reason}")]
    Db { path: PathBuf, reason: String },
}
