//! Per-(tenant, extension) limits and the accounting every backend applies inside its write:
//! a backend keeps a [`Usage`] per (tenant, extension), and for each write computes the new one
//! with [`Quota::apply`] (sizes from [`entry_bytes`]) under the same lock or transaction as the
//! write itself, storing it only if the write goes ahead.

use crate::BucketName;
use warden_manifest::KvLimits;

use crate::{KvError, MIN_READ_BYTES};

/// Limits of one (tenant, extension)'s store, across all its buckets. An entry counts as the
/// bytes of its key plus the bytes of its value.
///
/// Defaults (the same as [`KvLimits`]'s, which the operator sets in `[policy.kv]`): keys up to
/// 1 KiB, values up to 1 MiB, 10 000 keys, 64 MiB in all: enough for state and caches, small
/// enough that one extension cannot fill the host's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_key_bytes: u64,
    pub max_value_bytes: u64,
    pub max_keys: u64,
    pub max_total_bytes: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota::from(KvLimits::default())
    }
}

/// Keys and bytes used by one (tenant, extension), across its buckets, as a backend stores it
/// next to the entries (`Usage::default()` for a (tenant, extension) that never wrote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Entries stored.
    pub keys: u64,
    /// Sum of [`entry_bytes`] over the entries stored.
    pub bytes: u64,
    /// The last `list-keys` sequence number given to a new key of this (tenant, extension), for
    /// backends that keep the counter with the usage (as `warden-store-sqlite` does). It must
    /// never decrease, so a deleted key's number is never given again; [`Quota::apply`] carries
    /// it over unchanged.
    pub seq: u64,
}

impl From<KvLimits> for Quota {
    /// The operator's `[policy.kv]`.
    fn from(l: KvLimits) -> Quota {
        Quota {
            max_key_bytes: l.max_key_bytes.bytes(),
            max_value_bytes: l.max_value_bytes.bytes(),
            max_keys: l.max_keys,
            max_total_bytes: l.max_total_bytes.bytes(),
        }
    }
}

impl Quota {
    pub fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.len() as u64 > self.max_key_bytes {
            return Err(KvError::KeyTooLong {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    pub fn check_value(&self, len: usize) -> Result<(), KvError> {
        if len as u64 > self.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                len,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// The most one `get-many` may return (keys + values): [`MIN_READ_BYTES`], or one
    /// largest entry if that is more, so any stored entry can be read in a batch. A bound
    /// on host memory per call that does not grow with the number of (duplicate) keys.
    pub fn max_read_bytes(&self) -> u64 {
        self.max_key_bytes
            .saturating_add(self.max_value_bytes)
            .max(MIN_READ_BYTES)
    }

    /// The usage after replacing an entry of `old` bytes (`None`: absent) by one of `new`
    /// bytes (`None`: deleted), sizes from [`entry_bytes`]. Only growth is refused
    /// ([`KvError::TooManyKeys`], [`KvError::TooManyBytes`]), so a store above a lowered quota
    /// can still shrink. Key and value lengths are checked separately ([`Quota::check_key`],
    /// [`Quota::check_value`]).
    pub fn apply(
        &self,
        usage: Usage,
        old: Option<u64>,
        new: Option<u64>,
    ) -> Result<Usage, KvError> {
        let keys = usage.keys - u64::from(old.is_some()).min(usage.keys) + u64::from(new.is_some());
        let bytes = usage
            .bytes
            .saturating_sub(old.unwrap_or(0))
            .saturating_add(new.unwrap_or(0));
        if keys > usage.keys && keys > self.max_keys {
            return Err(KvError::TooManyKeys { max: self.max_keys });
        }
        if bytes > usage.bytes && bytes > self.max_total_bytes {
            return Err(KvError::TooManyBytes {
                max: self.max_total_bytes,
            });
        }
        Ok(Usage {
            keys,
            bytes,
            seq: usage.seq,
        })
    }
}

/// What an entry counts against the quota: its bucket name's bytes (stored with every entry),
/// its key's and its value's.
pub fn entry_bytes(bucket: &BucketName, key: &str, value_len: usize) -> u64 {
    (bucket.as_str().len() as u64)
        .saturating_add(key.len() as u64)
        .saturating_add(value_len as u64)
}
