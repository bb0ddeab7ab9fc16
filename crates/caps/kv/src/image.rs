//! Rows of a key-value store as every storage keeps them, for copying a store whole to
//! another storage (`warden migrate`) and comparing the copy with its source. Raw on purpose:
//! a copy keeps every byte and sequence number, whatever it means.

/// The usage row of one (tenant, extension): its keys and bytes counted against the quota, and
/// the next insertion sequence number of its scopes (the `list_keys` cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub tenant: String,
    pub extension: String,
    pub keys: i64,
    pub bytes: i64,
    pub seq: i64,
}

/// One entry: its scope, key, value and insertion sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub tenant: String,
    pub extension: String,
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub seq: i64,
}

/// What an export yields: every usage row by (tenant, extension), then every entry by
/// (tenant, extension, bucket, key), all compared byte for byte, from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRow {
    Usage(UsageRow),
    Entry(EntryRow),
}
