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
/// Usage counts the bucket name of every entry too (red team, round 2: 256-byte bucket names
/// on every row were free). Counted again once from the entries (bytes, not characters).
const KV_USAGE_MIGRATIONS: &[&str] = &["
UPDATE kv_usage SET bytes = coalesce((
    SELECT sum(length(CAST(e.bucket AS BLOB)) + length(CAST(e.key AS BLOB))
               + length(CAST(e.value AS BLOB)))
    FROM kv_entries AS e
    WHERE e.tenant = kv_usage.tenant AND e.extension = kv_usage.extension), 0);
"];
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
    tx.execute_batch(KV_SEQ_INDEX)?;
    migrate(tx, "kv-usage", KV_USAGE_MIGRATIONS)
}

/// The `secret_*` tables.
pub(crate) fn secrets(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(SECRET_TABLES)
}

/// Which version of each component's tables the database holds. Components whose tables are
/// migrated by number (the registry) record it here; a database from a newer warden is refused
/// rather than written with older rules.
const VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The registry's migrations, in order: migration `i` brings the tables to version `i + 1`.
const REGISTRY_MIGRATIONS: &[&str] = &[
    "
CREATE TABLE registry_tenants (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE registry_keys (
    hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES registry_tenants (name)
) WITHOUT ROWID;
CREATE TABLE registry_published (
    content_hash TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    publisher TEXT NOT NULL,
    signature BLOB NOT NULL,
    published_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE registry_installs (
    tenant TEXT NOT NULL REFERENCES registry_tenants (name),
    extension TEXT NOT NULL,
    version TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    grant_text TEXT NOT NULL,
    approved TEXT NOT NULL,
    installed_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, extension)
) WITHOUT ROWID;
",
    // Version 2: each extension id is pinned to the publisher that first published it (red team:
    // any trusted publisher could publish over another's id). Ids already published are pinned
    // to the publisher of their earliest publication.
    "
CREATE TABLE registry_publishers (
    id TEXT PRIMARY KEY,
    publisher TEXT NOT NULL,
    pinned_ms INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO registry_publishers (id, publisher, pinned_ms)
    SELECT id, publisher, published_ms FROM registry_published
    ORDER BY published_ms, content_hash;
",
];

/// The version of `component`'s tables (0: none yet).
fn version(tx: &Transaction<'_>, component: &str) -> rusqlite::Result<u32> {
    tx.execute_batch(VERSION_TABLE)?;
    let v: Option<u32> = tx
        .query_row(
            "SELECT version FROM schema_versions WHERE component = ?1",
            [component],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(v.unwrap_or(0))
}

/// Applies the migrations `component`'s tables lack and records the new version.
fn migrate(tx: &Transaction<'_>, component: &str, migrations: &[&str]) -> rusqlite::Result<()> {
    let have = version(tx, component)? as usize;
    if have > migrations.len() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "the {component} tables are at version {have}, newer than this warden knows ({}): \
                 a newer warden wrote this database",
                migrations.len()
            )),
        ));
    }
    if have == migrations.len() {
        // Nothing written: opening a current database takes no write lock (`file::setup`).
        return Ok(());
    }
    for m in &migrations[have..] {
        tx.execute_batch(m)?;
    }
    tx.execute(
        "INSERT INTO schema_versions (component, version) VALUES (?1, ?2)
         ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        rusqlite::params![component, migrations.len() as u32],
    )?;
    Ok(())
}

/// The `registry_*` tables, migrated to the newest version.
pub(crate) fn registry(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    migrate(tx, "registry", REGISTRY_MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, TransactionBehavior};

    use super::*;

    fn run(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        migrate(&tx, "demo", migrations)?;
        tx.commit()
    }

    #[test]
    fn migrations_run_once_in_order_and_a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        let m1 = "CREATE TABLE demo_a (x INTEGER);";
        let m2 = "ALTER TABLE demo_a ADD COLUMN y INTEGER;";
        run(&mut conn, &[m1]).unwrap();
        run(&mut conn, &[m1]).unwrap(); // again: nothing to do (a second CREATE would fail)
        run(&mut conn, &[m1, m2]).unwrap();
        let v: u32 = conn
            .query_row(
                "SELECT version FROM schema_versions WHERE component = 'demo'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, 2);
        conn.execute("INSERT INTO demo_a (x, y) VALUES (1, 2)", [])
            .unwrap();
        // An older warden on this database: refused, nothing changed.
        let e = run(&mut conn, &[m1]).unwrap_err().to_string();
        assert!(e.contains("newer than this warden knows"), "{e}");
        let v: u32 = conn
            .query_row(
                "SELECT version FROM schema_versions WHERE component = 'demo'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, 2);
        // A migration that fails leaves the version where it was.
        let e = run(&mut conn, &[m1, m2, "CREATE TABLE demo_a (z INTEGER);"]);
        assert!(e.is_err());
        let v: u32 = conn
            .query_row(
                "SELECT version FROM schema_versions WHERE component = 'demo'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, 2);
    }
}
