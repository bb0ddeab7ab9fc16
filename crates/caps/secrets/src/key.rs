//! The key that encrypts secrets at rest: 32 random bytes in `DATA/secret.key`, created on
//! first start, readable by the operator only (made and checked by `warden-datadir`).

use std::path::Path;

use warden_datadir::Key;

use crate::SecretError;

pub use warden_datadir::KEY_BYTES;

/// The key file's name inside the data folder.
pub const KEY_FILE: &str = "secret.key";

/// A secret-store key; wiped on drop, never printed.
#[derive(Debug)]
pub struct SecretKey(Key);

impl SecretKey {
    /// A fresh random key (for stores that live in memory only).
    pub fn random() -> Self {
        SecretKey(Key::random())
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_BYTES] {
        self.0.bytes()
    }

    /// Reads `path`, which must exist (a key shared by several runners is the operator's, made
    /// once: a runner that made its own would seal secrets the others cannot open).
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        Ok(SecretKey(Key::load(path)?))
    }

    /// Reads `path`, creating it first if it does not exist ([`Key::load_or_create`]).
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        Ok(SecretKey(Key::load_or_create(path)?))
    }
}
