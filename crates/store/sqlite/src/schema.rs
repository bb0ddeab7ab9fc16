//! Every table of `DATA/warden.db` and every migration: the key-value store's `kv_*` tables
//! and the secrets store's `secret_*` tables. Each store creates (and migrates) its own tables
//! when it connects, in a write transaction, so two hosts starting at once agree.

use rusqlite::Transaction;

const KV_TABLES: &str = "
CREATE TABLE IF NOT EXISTS kv_entries (
    tenant TEXT NOT NULL,
    extension TEXT NOT NULL,
    bucket BLOB NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, extension, bucket, key)
);
CREATE TABLE IF NOT EXISTS kv_usage (
    tenant TEXT NOT NULL,
    extension TEXT NOT NULL,
    keys INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, extension)
) WITHOUT ROWID;
";

/// Databases made before `seq` existed get it, numbered per bucket in their old rowid order
/// (so insertion order is kept); then the index that `list_keys` and new inserts use.
const KV_MIGRATE_SEQ: &str = "
ALTER TABLE kv_entries ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE kv_entries SET seq = r.n FROM (
    SELECT rowid AS id,
           row_number() OVER (PARTITION BY tenant, extension, bucket ORDER BY rowid) AS n
    FROM kv_entries
) AS r WHERE kv_entries.rowid = r.id;
";
/// The counter new keys take their `seq` from, per (tenant, extension): started above every
/// number already given.
const KV_MIGRATE_USAGE_SEQ: &str = "
ALTER TABLE kv_usage ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE kv_usage SET seq = coalesce((SELECT max(e.seq) FROM kv_entries AS e
    WHERE e.tenant = kv_usage.tenant AND e.extension = kv_usage.extension), 0);
";
const KV_SEQ_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS kv_entries_seq ON kv_entries (tenant, extension, bucket, seq);";

/// One row per (tenant, extension, name): nonce and ciphertext as `warden-secrets` sealed them.
/// `secret_meta` holds the one key-check row.
const SECRET_TABLES: &str = "
CREATE TABLE IF NOT EXISTS secret_values (
    tenant TEXT NOT NULL,
    extension TEXT NOT NULL,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (tenant, extension, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secret_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    nonce BLOB NOT NULL,
    check_ciphertext BLOB NOT NULL
);
";

/// The `kv_*` tables, migrated to per-scope cursors if they predate them.
pub(crate) fn kv(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(KV_TABLES)?;
    let has_seq = |table: &str| -> rusqlite::Result<bool> {
        tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = 'seq'",
            [table],
            |r| r.get(0),
        )
    };
    if !has_seq("kv_entries")? {
        tx.execute_batch(KV_MIGRATE_SEQ)?;
    }
    if !has_seq("kv_usage")? {
        tx.execute_batch(KV_MIGRATE_USAGE_SEQ)?;
    }
    tx.execute_batch(KV_SEQ_INDEX)
}

/// The `secret_*` tables.
pub(crate) fn secrets(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(SECRET_TABLES)
}
