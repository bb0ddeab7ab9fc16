//! Key-value storage for extensions (`wasi:keyvalue`): the [`KvBackend`] trait, an in-memory
//! implementation ([`MemoryKv`]), and per-(tenant, extension) [`Quota`]s.
//!
//! Every operation takes a [`Scope`] (tenant, extension, bucket) as a typed value. Backends keep
//! the three parts in separate columns or map keys and compare keys byte for byte, so no key or
//! bucket name (separators, `..`, NUL, `/`, `%`, unicode look-alikes) can reach another scope:
//! there is no string that is ever parsed back into a scope.
//!
//! Quotas are checked inside the same transaction (or under the same lock) as the write, so
//! concurrent writers cannot together exceed them. Backends that persist live in their own
//! crates (the embedded default is `warden-store-sqlite`); they build on [`Quota::apply`],
//! [`Usage`], [`entry_bytes`], [`batch_read`] and [`parse_counter`] so that every backend
//! counts and answers alike, and pass the suite in `warden_kv::testing` (feature `testing`).
//! This crate knows nothing of Wasmtime or of any database.

mod access;
mod image;
mod memory;
mod quota;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use access::KvAccess;
pub use image::{EntryRow, KvRow, UsageRow};
pub use memory::MemoryKv;
pub use quota::{Quota, Usage, entry_bytes};
pub use warden_manifest::{ExtensionId, TenantName};

/// Longest bucket name, in bytes. Buckets are named by the guest at `open`.
pub const MAX_BUCKET_BYTES: usize = 256;
/// Most keys one `list-keys` page returns (at most 1 MiB of keys with the default key limit).
pub const LIST_PAGE_KEYS: usize = 1000;
/// Most keys (or pairs) in one batch call; a bound on the host work and memory of one request.
pub const MAX_BATCH_KEYS: usize = 1000;
/// The least a `get-many` may return (keys + values, duplicates counted each time), whatever
/// the quota: 1000 keys of 8 KiB values fit. See [`Quota::max_read_bytes`].
pub const MIN_READ_BYTES: u64 = 8 << 20;

/// Set when the call that asked for a backend operation has gone (timed out, cancelled):
/// long operations check it between rows and stop with [`KvError::Cancelled`], so host work
/// does not outlive the call. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once cancelled: `cancel.check()?` between rows.
    pub fn check(&self) -> Result<(), KvError> {
        if self.is_cancelled() {
            return Err(KvError::Cancelled);
        }
        Ok(())
    }
}

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
    /// Checked from the stored lengths before any value is read (duplicates count each time,
    /// since each is copied into the answer).
    #[error("the get-many would return {len} bytes of keys and values; the limit is {max}")]
    ReadTooLarge { len: u64, max: u64 },
    /// The call went away (time-out, cancellation) before the operation finished; nothing
    /// was written.
    #[error("the operation was cancelled")]
    Cancelled,
    #[error("the bucket name must be 1 to {MAX_BUCKET_BYTES} bytes")]
    BadBucket,
    #[error("the value is not a counter (a decimal u64)")]
    NotACounter,
    #[error("the counter would overflow")]
    Overflow,
    /// The backend failed (I/O, a busy database, corruption). For the operator, not the guest.
    #[error("storage error")]
    Storage(#[source] StorageFailure),
}

/// A backend's own error, kept (with its chain) for the operator. Shared so that [`KvError`]
/// stays `Clone`; two failures are equal only if they are the same one.
#[derive(Clone)]
pub struct StorageFailure(std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>);

impl StorageFailure {
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        StorageFailure(std::sync::Arc::from(e.into()))
    }
}

impl KvError {
    /// A backend failure from its error (or a message).
    pub fn storage(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        KvError::Storage(StorageFailure::new(e))
    }
}

impl std::fmt::Debug for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}
impl std::fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}
impl std::error::Error for StorageFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
impl PartialEq for StorageFailure {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for StorageFailure {}

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
                | KvError::ReadTooLarge { .. }
        )
    }
}

/// What an operation does to the store, for [`KvBackend::may_block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// `exists` and `list_keys`: a read of keys only (a page of them at most).
    ReadKeys,
    /// Everything else: writes, batches, and a `get` that [`KvBackend::get_now`] did not answer.
    Other,
}

/// The largest value a `get` is answered with where it is asked ([`KvBackend::get_now`]):
/// a bigger one is read on the blocking pool, so a guest reading large values cannot hold a
/// thread other calls share.
pub const GET_NOW_BYTES: usize = 64 * 1024;

/// A key-value store holding the data of every (tenant, extension, bucket). Implementations
/// are synchronous (they may block on disk): call them off an async executor, except what
/// [`KvBackend::may_block`] and [`KvBackend::get_now`] say is quick.
///
/// Writes take the quota of the scope's (tenant, extension) and must enforce it atomically with
/// the write. A write that fails changes nothing.
pub trait KvBackend: Send + Sync {
    /// Whether an operation of this kind may block its thread for long (on an fsync, a lock
    /// held across one, the network): then callers on an async executor run it on the
    /// blocking pool. One that does not (in memory; a read from a local database's cache) is
    /// run where it is called, without that pool's two thread hops (tens of microseconds on
    /// a small VM, more than the operation itself).
    fn may_block(&self, op: KvOp) -> bool {
        let _ = op;
        true
    }
    /// [`KvBackend::get`] answered at once, without blocking, if the value (when present) is
    /// at most `max` bytes; `None` when it cannot be (then `get` is called on the blocking
    /// pool). The default never answers.
    fn get_now(
        &self,
        scope: &Scope,
        key: &str,
        max: usize,
    ) -> Option<Result<Option<Vec<u8>>, KvError>> {
        let _ = (scope, key, max);
        None
    }
    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, scope: &Scope, key: &str, value: &[u8], quota: &Quota) -> Result<(), KvError>;
    /// Deleting a missing key is not an error.
    fn delete(&self, scope: &Scope, key: &str) -> Result<(), KvError>;
    fn exists(&self, scope: &Scope, key: &str) -> Result<bool, KvError>;
    /// Up to `limit` keys after `cursor` (`None`: from the start), in insertion order. The
    /// cursor is a sequence number private to the scope's (tenant, extension): it says nothing
    /// of other scopes' writes, and keys inserted while paging come after the ones listed.
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
    /// The values of `keys`, in order (`None` for a missing key), from one snapshot. Each
    /// distinct key is read once. If the answer (key + value bytes of every present key, a
    /// duplicate counted each time) would exceed `max_bytes`, fails with
    /// [`KvError::ReadTooLarge`] before reading any value (see [`batch_read`]).
    fn get_many(
        &self,
        scope: &Scope,
        keys: &[String],
        max_bytes: u64,
        cancel: &Cancel,
    ) -> Result<Vec<Option<Vec<u8>>>, KvError>;
    /// Sets every pair, all or nothing (stronger than the WIT requires). Cancelled: nothing.
    fn set_many(
        &self,
        scope: &Scope,
        pairs: &[(String, Vec<u8>)],
        quota: &Quota,
        cancel: &Cancel,
    ) -> Result<(), KvError>;
    /// Deletes every key (missing ones are skipped), all or nothing. Cancelled: nothing.
    fn delete_many(&self, scope: &Scope, keys: &[String], cancel: &Cancel) -> Result<(), KvError>;
}

/// The body of every backend's `get_many`, given the snapshot's `len` (the stored value's
/// length) and `read` of one key: sizes first, from lengths only, so an over-large answer is
/// refused without a byte of it in host memory (a guest asking for one 1 MiB key 1000 times
/// would otherwise make the host hold 1 GiB); then each distinct key is read once and copied
/// for its duplicates. `cancel` is checked between keys.
pub fn batch_read(
    keys: &[String],
    max_bytes: u64,
    cancel: &Cancel,
    mut len: impl FnMut(&str) -> Result<Option<u64>, KvError>,
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>, KvError>,
) -> Result<Vec<Option<Vec<u8>>>, KvError> {
    let mut lens: HashMap<&str, Option<u64>> = HashMap::new();
    let mut total: u64 = 0;
    for k in keys {
        let l = match lens.get(k.as_str()) {
            Some(l) => *l,
            None => {
                cancel.check()?;
                let l = len(k)?;
                lens.insert(k, l);
                l
            }
        };
        if let Some(l) = l {
            total = total.saturating_add(k.len() as u64).saturating_add(l);
        }
    }
    if total > max_bytes {
        return Err(KvError::ReadTooLarge {
            len: total,
            max: max_bytes,
        });
    }
    // Index of each key's first answer: duplicates are copied from it, so the host holds
    // the answer once (bounded by `max_bytes`), not an extra copy of every value.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut copied: u64 = 0;
    let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(keys.len());
    for k in keys {
        let v = match first.get(k.as_str()) {
            Some(&i) => out[i].clone(),
            None => {
                cancel.check()?;
                first.insert(k, out.len());
                read(k)?
            }
        };
        // The lengths came from the same snapshot; this guards a backend whose `len` and
        // `read` disagree, so the bound holds on what is really copied.
        copied = copied.saturating_add(v.as_ref().map_or(0, |v| (k.len() + v.len()) as u64));
        if copied > max_bytes {
            return Err(KvError::ReadTooLarge {
                len: copied,
                max: max_bytes,
            });
        }
        out.push(v);
    }
    Ok(out)
}

/// The text form of a counter: decimal ASCII, as Wasmtime's own `wasi:keyvalue` host does, so a
/// guest reading it with `get` sees a number. `None` (a missing key) is 0; anything but a
/// non-empty run of ASCII digits that fits a `u64` is [`KvError::NotACounter`]. Every backend's
/// `increment` parses the stored value with this, so all accept and refuse the same values.
pub fn parse_counter(value: Option<&[u8]>) -> Result<u64, KvError> {
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
