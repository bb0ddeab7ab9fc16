//! Where sealed secret rows are kept: the [`SecretRows`] trait that storage crates implement
//! (`warden-store-sqlite` for `DATA/warden.db`), and [`MemoryRows`] for hosts without a data
//! folder and for tests. Implementations store and return bytes; they never see a key or a
//! plaintext, so a storage backend cannot leak a value it never had.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use warden_manifest::{ExtensionId, SecretName, TenantName};

use crate::SecretError;

/// One encrypted value as stored: the nonce it was sealed under and the ciphertext (with its
/// tag). Neither is secret; [`crate::SecretStore`] checks both on the way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Where sealed (encrypted) secret rows are kept, one per (tenant, extension, name), plus one
/// key-check row per store. Implementations never see plaintext; they must keep the three
/// parts of a row's identity apart (no joined string) and may be shared between threads.
///
/// Errors are [`SecretError::Storage`], naming [`SecretRows::location`], never a value.
pub trait SecretRows: Send + Sync {
    /// The row of (tenant, extension, name), `None` if it was never set or was deleted.
    fn get(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<Option<SealedRow>, SecretError>;

    /// Stores the row of (tenant, extension, name), replacing any earlier one.
    fn put(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
        row: &SealedRow,
    ) -> Result<(), SecretError>;

    /// Removes the row; `true` if there was one.
    fn delete(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<bool, SecretError>;

    /// The names with a row for (tenant, extension), in any order.
    fn names(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Vec<SecretName>, SecretError>;

    /// Every (tenant, extension, name) with a row, in that order: what copying every row to
    /// another storage (`warden migrate`) walks. Unlike [`SecretRows::names`], a row whose
    /// identity does not parse is an error, not skipped: a copy must not lose one quietly.
    fn identities(&self) -> Result<Vec<SecretId>, SecretError>;

    /// The key-check row: `proposed` is stored if there is none yet (first writer wins, also
    /// across processes sharing the storage), then the stored row is returned.
    fn key_check(&self, proposed: &SealedRow) -> Result<SealedRow, SecretError>;

    /// Where the rows live, for error messages (a database path, `:memory:`).
    fn location(&self) -> String;
}

/// Whose secret a row is: (tenant, extension, name).
pub type SecretId = (TenantName, ExtensionId, SecretName);

/// A row's identity as a storage keeps it (three texts), parsed; the error says which row
/// (its texts are names, never secret), for the storage to wrap with its location.
pub fn parse_secret_id(tenant: &str, extension: &str, name: &str) -> Result<SecretId, String> {
    let parsed = (|| {
        Some((
            tenant.parse().ok()?,
            extension.parse().ok()?,
            name.parse().ok()?,
        ))
    })();
    parsed.ok_or_else(|| {
        format!("a secret row of unreadable identity ({tenant:?}, {extension:?}, {name:?})")
    })
}

type RowKey = SecretId;

#[derive(Default)]
struct Rows {
    values: BTreeMap<RowKey, SealedRow>,
    check: Option<SealedRow>,
}

/// [`SecretRows`] in memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryRows {
    rows: Mutex<Rows>,
}

impl MemoryRows {
    pub fn new() -> MemoryRows {
        MemoryRows::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Rows>, SecretError> {
        self.rows.lock().map_err(|_| SecretError::Storage {
            location: self.location(),
            source: "lock poisoned".into(),
        })
    }
}

fn row_key(tenant: &TenantName, extension: &ExtensionId, name: &SecretName) -> RowKey {
    (tenant.clone(), extension.clone(), name.clone())
}

impl SecretRows for MemoryRows {
    fn get(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<Option<SealedRow>, SecretError> {
        Ok(self
            .lock()?
            .values
            .get(&row_key(tenant, extension, name))
            .cloned())
    }

    fn put(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
        row: &SealedRow,
    ) -> Result<(), SecretError> {
        self.lock()?
            .values
            .insert(row_key(tenant, extension, name), row.clone());
        Ok(())
    }

    fn delete(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<bool, SecretError> {
        Ok(self
            .lock()?
            .values
            .remove(&row_key(tenant, extension, name))
            .is_some())
    }

    fn names(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Vec<SecretName>, SecretError> {
        Ok(self
            .lock()?
            .values
            .keys()
            .filter(|(t, e, _)| t == tenant && e == extension)
            .map(|(_, _, n)| n.clone())
            .collect())
    }

    fn identities(&self) -> Result<Vec<SecretId>, SecretError> {
        Ok(self.lock()?.values.keys().cloned().collect())
    }

    fn key_check(&self, proposed: &SealedRow) -> Result<SealedRow, SecretError> {
        Ok(self
            .lock()?
            .check
            .get_or_insert_with(|| proposed.clone())
            .clone())
    }

    fn location(&self) -> String {
        ":memory:".into()
    }
}

/// Every check of the storage suite, on new [`MemoryRows`] each.
#[cfg(test)]
mod memory_rows_suite {
    crate::secret_rows_tests!(|| (std::sync::Arc::new(crate::MemoryRows::new()), ()));
}
