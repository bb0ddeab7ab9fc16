//! Key-value storage for extensions (`wasi:keyvalue`): the [`KvBackend`] trait, its SQLite
//! ([`SqliteKv`]) and in-memory ([`MemoryKv`]) implementations, and per-(tenant, extension)
//! [`Quota`]s.
//!
//! Every operation takes a [`Scope`] (tenant, extension, bucket) as a typed value. Backends keep
//! the three parts in separate columns or map keys and compare keys byte for byte, so no key or
//! bucket name (separators, `..`, NUL, `/`, `%`, unicode look-alikes) can reach another scope:
//! there is no string that is ever parsed back into a scope.
//!
//! Quotas are checked inside the same transaction (or under the same lock) as the write, so
//! concurrent writers cannot together exceed them. This crate knows nothing of Wasmtime.

mod memory;
mod quota;
mod sqlite;

use std::fmt;

pub use memory::MemoryKv;
pub use quota::Quota;
pub use sqlite::SqliteKv;
pub use warden_manifest::{ExtensionId, TenantName};

/// Longest bucket name, in bytes. Buckets are named by the guest at `open`.
pub const MAX_BUCKET_BYTES: usize = 256;
/// Most keys one `list-keys` page returns (at most 1 MiB of keys with the default key limit).
pub const LIST_PAGE_KEYS: usize = 1000;
/// Most keys (or pairs) in one batch call; a bound on the host work and memory of one request.
pub const MAX_BATCH_KEYS: usize = 1000;

/// A bucket name as the guest gave it: 1 to [`MAX_BUCKET_BYTES`] bytes, any characters (it is
/// stored in its own column and compared byte for byte, never joined with anything).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    pub fn new(name: &str) -> Result<BucketName, KvError> {
        if name.is_empty() || name.len() > MAX_BUCKET_BYTES {
            return Err(KvError::BadBucket);
        }
        Ok(BucketName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Where an operation acts: one bucket of one extension of one tenant. Quotas apply to
/// (tenant, extension), across its buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    tenant: TenantName,
    extension: ExtensionId,
    bucket: BucketName,
}

impl Scope {
    pub fn new(tenant: TenantName, extension: ExtensionId, bucket: BucketName) -> Scope {
        Scope {
            tenant,
            extension,
            bucket,
        }
    }

    pub fn tenant(&self) -> &TenantName {
        &self.tenant
    }

    pub fn extension(&self) -> &ExtensionId {
        &self.extension
    }

    pub fn bucket(&self) -> &BucketName {
        &self.bucket
    }
}

/// One page of keys; `cursor` is `Some` when more may follow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<u64>,
}

/// Why an operation failed. Messages never contain values, and never name another scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("the key is {len} bytes; the limit is {max}")]
    KeyTooLong { len: usize, max: u64 },
    #[error("the value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: u64 },
    #[error("the store is full: at most {max} keys")]
    TooManyKeys { max: u64 },
    #[error("the store is full: at most {max} bytes of keys and values")]
    TooManyBytes { max: u64 },
    #[error("a batch may hold at most {max} keys")]
    BatchTooLarge { max: usize },
    #[error("the bucket name must be 1 to {MAX_BUCKET_BYTES} bytes")]
    BadBucket,
    #[error("the value is not a counter (a decimal u64)")]
    NotACounter,
    #[error("the counter would overflow")]
    Overflow,
    /// The backend failed (I/O, a busy database, corruption). The text is for the operator.
    #[error("storage error: {0}")]
    Storage(String),
}

impl KvError {
    /// A refusal because of a limit (as opposed to a failure of the store).
    pub fn is_quota(&self) -> bool {
        matches!(
            self,
            KvError::KeyTooLong { .. }
                | KvError::ValueTooLarge { .. }
                | KvError::TooManyKeys { .. }
                | KvError::TooManyBytes { .. }
                | KvError::BatchTooLarge { .. }
        )
    }
}

/// A key-value store holding the data of every (tenant, extension, bucket). Implementations
/// are synchronous (they may block on disk): call them off an async executor.
///
/// Writes take the quota of the scope's (tenant, extension) and must enforce it atomically with
/// the write. A write that fails changes nothing.
pub trait KvBackend: Send + Sync {
    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, scope: &Scope, key: &str, value: &[u8], quota: &Quota) -> Result<(), KvError>;
    /// Deleting a missing key is not an error.
    fn delete(&self, scope: &Scope, key: &str) -> Result<(), KvError>;
    fn exists(&self, scope: &Scope, key: &str) -> Result<bool, KvError>;
    /// Up to `limit` keys after `cursor` (`None`: from the start), in insertion order.
    fn list_keys(
        &self,
        scope: &Scope,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<KeyPage, KvError>;
    /// Adds `delta` to the decimal counter at `key` (missing = 0) and returns the new value.
    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: u64,
        quota: &Quota,
    ) -> Result<u64, KvError>;
    /// The values of `keys`, in order (`None` for a missing key).
    fn get_many(&self, scope: &Scope, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError>;
    /// Sets every pair, all or nothing (stronger than the WIT requires).
    fn set_many(
        &self,
        scope: &Scope,
        pairs: &[(String, Vec<u8>)],
        quota: &Quota,
    ) -> Result<(), KvError>;
    /// Deletes every key (missing ones are skipped), all or nothing.
    fn delete_many(&self, scope: &Scope, keys: &[String]) -> Result<(), KvError>;
}

/// The text form of a counter: decimal ASCII, as Wasmtime's own `wasi:keyvalue` host does, so a
/// guest reading it with `get` sees a number.
pub(crate) fn parse_counter(value: Option<&[u8]>) -> Result<u64, KvError> {
    match value {
        None => Ok(0),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(KvError::NotACounter),
    }
}

#[cfg(test)]
mod tests;
