//! The tables, as versioned migrations, and the checks made when a store connects.
//!
//! `schema_versions` holds one row per component (only `core` so far). Every runner applies the
//! migrations its database lacks while holding a session advisory lock on a connection of its
//! own, each migration in its own transaction (PostgreSQL DDL is transactional), so runners
//! starting together apply each once and never see half a schema. A database whose version is
//! newer than [`SCHEMA_VERSION`] was written by a newer warden and is refused.
//!
//! Identifiers (tenants, extensions, names, hashes) are `text COLLATE "C"`: compared and ordered
//! byte for byte, as `Ord` on the names is. Keys, buckets and values are `bytea`: `text` could
//! not hold a NUL.

use tokio_postgres::Client;

use crate::{PgError, PgStore};

/// The key of the advisory lock held while migrating ("warden" in ASCII, as in the plan).
const MIGRATION_LOCK: i64 = 7_461_726_465;

/// The migrations of the `core` component, oldest first; never edit one that has shipped,
/// add a new one.
const CORE: &[&str] = &[
    // v1
    r#"
CREATE TABLE warden_meta (id smallint PRIMARY KEY CHECK (id = 1),
  registry_version bigint NOT NULL);
INSERT INTO warden_meta VALUES (1, 0);
CREATE TABLE registry_tenants (name text COLLATE "C" PRIMARY KEY, created_ms bigint NOT NULL);
CREATE TABLE registry_keys (hash text COLLATE "C" PRIMARY KEY,
  tenant text COLLATE "C" NOT NULL REFERENCES registry_tenants (name));
CREATE TABLE registry_publishers (id text COLLATE "C" PRIMARY KEY, publisher text NOT NULL,
  pinned_ms bigint NOT NULL);
CREATE TABLE registry_published (content_hash text COLLATE "C" PRIMARY KEY,
  id text COLLATE "C" NOT NULL, version text COLLATE "C" NOT NULL, publisher text NOT NULL,
  signature bytea NOT NULL, published_ms bigint NOT NULL,
  UNIQUE (id, version));
CREATE TABLE registry_installs (tenant text COLLATE "C" NOT NULL REFERENCES registry_tenants (name),
  extension text COLLATE "C" NOT NULL, version text NOT NULL, content_hash text NOT NULL,
  grant_text text NOT NULL, approved text NOT NULL, installed_ms bigint NOT NULL,
  PRIMARY KEY (tenant, extension));
CREATE TABLE trust_bundle (id smallint PRIMARY KEY CHECK (id = 1), sha256 text NOT NULL,
  text text NOT NULL);
CREATE TABLE kv_usage (tenant text COLLATE "C", extension text COLLATE "C",
  keys bigint NOT NULL, bytes bigint NOT NULL, seq bigint NOT NULL,
  PRIMARY KEY (tenant, extension));
CREATE TABLE kv_entries (tenant text COLLATE "C", extension text COLLATE "C", bucket bytea,
  key bytea, value bytea NOT NULL, seq bigint NOT NULL,
  PRIMARY KEY (tenant, extension, bucket, key));
CREATE INDEX kv_entries_seq ON kv_entries (tenant, extension, bucket, seq);
CREATE TABLE secret_values (tenant text COLLATE "C", extension text COLLATE "C",
  name text COLLATE "C", nonce bytea NOT NULL, ciphertext bytea NOT NULL,
  PRIMARY KEY (tenant, extension, name));
CREATE TABLE secret_meta (id smallint PRIMARY KEY CHECK (id = 1), nonce bytea NOT NULL,
  check_ciphertext bytea NOT NULL);
CREATE TABLE audit_head (id smallint PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL,
  hash text NOT NULL, mac text);
CREATE TABLE audit_records (seq bigint PRIMARY KEY CHECK (seq > 0), line text NOT NULL,
  hash text NOT NULL, tenant text COLLATE "C", extension text COLLATE "C", event text NOT NULL);
CREATE INDEX audit_records_tenant ON audit_records (tenant, seq);
CREATE TABLE rate_buckets (tenant text COLLATE "C" PRIMARY KEY, tokens float8 NOT NULL,
  at timestamptz NOT NULL, granted int NOT NULL);
"#,
    // v2: the rate buckets write no WAL, so a lease's commit does not wait for a disk flush
    // (measured here: 4-12 ms a lease logged, 0.3-0.8 ms unlogged). A server crash (not a clean
    // restart) or a failover empties the table: every bucket restarts full, which admits at
    // most one more burst per tenant, once. Nothing else is unlogged.
    r#"
ALTER TABLE rate_buckets SET UNLOGGED;
"#,
];

/// The newest `core` version this warden knows.
pub const SCHEMA_VERSION: i32 = CORE.len() as i32;

fn db(store: &PgStore, action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let url = store.url().clone();
    move |e| PgError::Database {
        url,
        action,
        source: Box::new(e),
    }
}

/// What [`PgStore::connect`] checks and does once, on a connection of its own (closed after,
/// which also releases the advisory lock whatever happened).
pub(crate) async fn prepare(store: &PgStore) -> Result<(), PgError> {
    let client = store.dedicated().await.map_err(db(store, "connecting"))?;
    let session = crate::tls::session(&client)
        .await
        .map_err(db(store, "reading the connection's TLS state"))?;
    store.set_session(session);
    durable(store, &client).await?;
    migrate(store, &client).await
}

/// Refuses a server that acknowledges commits before they are on disk.
async fn durable(store: &PgStore, client: &Client) -> Result<(), PgError> {
    for (setting, ok) in [
        ("fsync", &["on"][..]),
        // Every level but `off` waits for the local WAL flush before answering a commit.
        (
            "synchronous_commit",
            &["on", "local", "remote_write", "remote_apply"][..],
        ),
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .map_err(db(store, "reading the server's settings"))?;
        let value: String = row
            .try_get(0)
            .map_err(db(store, "reading the server's settings"))?;
        if !ok.contains(&value.as_str()) {
            return Err(PgError::NotDurable {
                url: store.url().clone(),
                setting,
                value,
            });
        }
    }
    Ok(())
}

async fn migrate(store: &PgStore, client: &Client) -> Result<(), PgError> {
    let err = |action| db(store, action);
    // Waiting for another runner's migrations, and a migration itself, may take longer than
    // the 5 s every pooled statement gets (this session is closed after).
    client
        .batch_execute("SET statement_timeout = '120s'")
        .await
        .map_err(err("setting the migration timeout"))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err("waiting for the migration lock"))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (
               component text COLLATE \"C\" PRIMARY KEY, version integer NOT NULL)",
        )
        .await
        .map_err(err("creating schema_versions"))?;
    let have: i32 = client
        .query_opt(
            "SELECT version FROM schema_versions WHERE component = 'core'",
            &[],
        )
        .await
        .map_err(err("reading the schema version"))?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(err("reading the schema version"))?
        .unwrap_or(0);
    if have > SCHEMA_VERSION {
        return Err(PgError::TooNew {
            url: store.url().clone(),
            component: "core",
            found: have,
            known: SCHEMA_VERSION,
        });
    }
    for (i, m) in CORE
        .iter()
        .enumerate()
        .skip(usize::try_from(have).unwrap_or(0))
    {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let sql = format!(
            "BEGIN;
             {m};
             INSERT INTO schema_versions (component, version) VALUES ('core', {version})
             ON CONFLICT (component) DO UPDATE SET version = excluded.version;
             COMMIT;"
        );
        if let Err(e) = client.batch_execute(&sql).await {
            // The connection is closed right after; the rollback only makes the end clean.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(err("applying a migration")(e));
        }
        tracing::info!(target: "warden::pg", version, "schema migrated");
    }
    Ok(())
}
