//! [`PgImport`]: a whole storage copied into an empty database in one transaction (`warden
//! migrate`). Either every row is there after [`PgImport::commit`], or none is: a copy that
//! fails half way leaves the database as it was, and can simply be run again.
//!
//! The transaction locks every table it writes (`EXCLUSIVE`: others may read, nobody else may
//! write) and the registry and audit head rows, then checks that nothing is stored yet: a copy
//! never merges into a fleet's data. A fleet that was only started (its genesis audit head,
//! its secret key-check row) counts as empty.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;
use warden_kv::KvRow;
use warden_registry::RegistryImage;
use warden_secrets::{SealedRow, SecretId};

use crate::feed::{CHANNEL, Change, ChangeKind};
use crate::rows::{INSTALL_COLUMNS, PUBLISHED_COLUMNS};
use crate::{PgError, PgStore};

/// The tables a copy writes, which must be empty before it.
pub const IMPORTED_TABLES: [&str; 9] = [
    "registry_tenants",
    "registry_keys",
    "registry_publishers",
    "registry_published",
    "registry_installs",
    "kv_usage",
    "kv_entries",
    "secret_values",
    "audit_records",
];

/// One audit record as [`crate::PgRoundStore`] stores it: its line (without the newline, as
/// the file log holds it), its hash, and the columns listings filter on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub line: String,
    pub hash: String,
    pub tenant: Option<String>,
    pub extension: Option<String>,
    pub event: String,
}

/// Why a copy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The target already holds data: a copy never merges.
    #[error(
        "{location} is not empty (table {table} has rows): `warden migrate` copies into an empty \
         database only; nothing was written"
    )]
    NotEmpty {
        location: String,
        table: &'static str,
    },
}

/// An open copy: rows go in with the methods, in any order, and become visible together at
/// [`PgImport::commit`]. Dropped without it, nothing was written.
pub struct PgImport {
    store: PgStore,
    client: Arc<Client>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl PgStore {
    /// Starts a copy into this (empty) database: see [`PgImport`].
    pub fn import(&self) -> Result<PgImport, ImportError> {
        let store = self.clone();
        let client = self
            .run(async move {
                let c = store.dedicated().await?;
                // A copy of a big store is one long transaction on a connection of its own.
                c.batch_execute(&format!(
                    "SET statement_timeout = '10min';
                     SET idle_in_transaction_session_timeout = '30min';
                     BEGIN;
                     SELECT 1 FROM warden_meta WHERE id = 1 FOR UPDATE;
                     LOCK TABLE {} IN EXCLUSIVE MODE;",
                    IMPORTED_TABLES.join(", ")
                ))
                .await?;
                Ok::<_, tokio_postgres::Error>(c)
            })?
            .map_err(self.failed("starting the copy"))?;
        let import = PgImport {
            store: self.clone(),
            client: Arc::new(client),
        };
        import.check_empty()?;
        Ok(import)
    }

    fn failed(&self, action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let url = self.url().clone();
        move |e| PgError::Database {
            url,
            action,
            source: Box::new(e),
        }
    }
}

impl PgImport {
    /// Runs `f` on the copy's connection.
    fn with<T, F, Fut>(&self, action: &'static str, f: F) -> Result<T, PgError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let fut = f(Arc::clone(&self.client));
        self.store.run(fut)?.map_err(self.store.failed(action))
    }

    fn check_empty(&self) -> Result<(), ImportError> {
        let tables: Vec<bool> = self.with("checking the target is empty", |c| async move {
            let mut out = Vec::new();
            for t in IMPORTED_TABLES {
                let row = c
                    .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {t})"), &[])
                    .await?;
                out.push(row.try_get(0)?);
            }
            let head: Option<i64> = c
                .query_opt("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE", &[])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            out.push(head.is_some_and(|s| s > 0));
            Ok(out)
        })?;
        let names = IMPORTED_TABLES.iter().copied().chain(["audit_head"]);
        match names.zip(tables).find(|(_, full)| *full) {
            Some((table, _)) => Err(ImportError::NotEmpty {
                location: self.store.location(),
                table,
            }),
            None => Ok(()),
        }
    }

    /// Every row of a registry.
    pub fn registry(&self, image: &RegistryImage) -> Result<(), PgError> {
        let image = image.clone();
        self.with("copying the registry", |c| async move {
            let (names, created): (Vec<&str>, Vec<i64>) = image
                .tenants
                .iter()
                .map(|t| (t.name.as_str(), millis(t.created)))
                .unzip();
            c.execute(
                "INSERT INTO registry_tenants (name, created_ms)
                 SELECT * FROM unnest($1::text[], $2::bigint[])",
                &[&names, &created],
            )
            .await?;
            let (hashes, tenants): (Vec<String>, Vec<&str>) = image
                .keys
                .iter()
                .map(|(k, t)| (k.to_hex(), t.as_str()))
                .unzip();
            c.execute(
                "INSERT INTO registry_keys (hash, tenant)
                 SELECT * FROM unnest($1::text[], $2::text[])",
                &[&hashes, &tenants],
            )
            .await?;
            for p in &image.pins {
                c.execute(
                    "INSERT INTO registry_publishers (id, publisher, pinned_ms)
                     VALUES ($1, $2, $3)",
                    &[&p.id.as_str(), &p.publisher.to_string(), &millis(p.pinned)],
                )
                .await?;
            }
            for p in &image.published {
                c.execute(
                    &format!(
                        "INSERT INTO registry_published ({PUBLISHED_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6)"
                    ),
                    &[
                        &p.content_hash.to_string(),
                        &p.id.as_str(),
                        &p.version.to_string(),
                        &p.publisher.to_string(),
                        &p.signature,
                        &millis(p.published),
                    ],
                )
                .await?;
            }
            for i in &image.installs {
                c.execute(
                    &format!(
                        "INSERT INTO registry_installs ({INSTALL_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ),
                    &[
                        &i.tenant.as_str(),
                        &i.extension.as_str(),
                        &i.version.to_string(),
                        &i.content_hash.to_string(),
                        &i.grant.to_string(),
                        &i.approved.to_text(),
                        &millis(i.installed),
                    ],
                )
                .await?;
            }
            Ok(())
        })
    }

    /// Key-value rows (any number of calls, each a batch).
    pub fn kv(&self, rows: Vec<KvRow>) -> Result<(), PgError> {
        self.with("copying key-value rows", |c| async move {
            let (mut u_t, mut u_e, mut u_k, mut u_b, mut u_s) =
                (vec![], vec![], vec![], vec![], vec![]);
            let (mut t, mut e, mut b, mut k, mut v, mut s) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for row in rows {
                match row {
                    KvRow::Usage(u) => {
                        u_t.push(u.tenant);
                        u_e.push(u.extension);
                        u_k.push(u.keys);
                        u_b.push(u.bytes);
                        u_s.push(u.seq);
                    }
                    KvRow::Entry(x) => {
                        t.push(x.tenant);
                        e.push(x.extension);
                        b.push(x.bucket);
                        k.push(x.key);
                        v.push(x.value);
                        s.push(x.seq);
                    }
                }
            }
            c.execute(
                "INSERT INTO kv_usage (tenant, extension, keys, bytes, seq)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                                      $5::bigint[])",
                &[&u_t, &u_e, &u_k, &u_b, &u_s],
            )
            .await?;
            c.execute(
                "INSERT INTO kv_entries (tenant, extension, bucket, key, value, seq)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[],
                                      $5::bytea[], $6::bigint[])",
                &[&t, &e, &b, &k, &v, &s],
            )
            .await?;
            Ok(())
        })
    }

    /// Sealed secret rows, and the key-check row of the key they are sealed under (kept if
    /// the database has one already: a runner started on it wrote it with the fleet's key,
    /// which later opens the copy or refuses it).
    pub fn secrets(
        &self,
        rows: Vec<(SecretId, SealedRow)>,
        check: SealedRow,
    ) -> Result<(), PgError> {
        self.with("copying secret rows", |c| async move {
            for ((tenant, extension, name), row) in &rows {
                c.execute(
                    "INSERT INTO secret_values (tenant, extension, name, nonce, ciphertext)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &tenant.as_str(),
                        &extension.as_str(),
                        &name.as_str(),
                        &row.nonce,
                        &row.ciphertext,
                    ],
                )
                .await?;
            }
            c.execute(
                "INSERT INTO secret_meta (id, nonce, check_ciphertext) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&check.nonce, &check.ciphertext],
            )
            .await?;
            Ok(())
        })
    }

    /// Audit records (any number of calls, each a batch, in seq order from 1).
    pub fn audit(&self, rows: Vec<AuditRow>) -> Result<(), PgError> {
        self.with("copying audit records", |c| async move {
            let (mut seq, mut line, mut hash, mut tenant, mut extension, mut event) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for r in rows {
                seq.push(i64_of(r.seq));
                line.push(r.line);
                hash.push(r.hash);
                tenant.push(r.tenant);
                extension.push(r.extension);
                event.push(r.event);
            }
            c.execute(
                "INSERT INTO audit_records (seq, line, hash, tenant, extension, event)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[],
                                      $5::text[], $6::text[])",
                &[&seq, &line, &hash, &tenant, &extension, &event],
            )
            .await?;
            Ok(())
        })
    }

    /// The database's secret key-check row, if a runner started on it already wrote one: the
    /// copy's secrets must be sealed under the key it checks.
    pub fn secret_check(&self) -> Result<Option<SealedRow>, PgError> {
        self.with("reading the secret key check", |c| async move {
            match c
                .query_opt(
                    "SELECT nonce, check_ciphertext FROM secret_meta WHERE id = 1",
                    &[],
                )
                .await?
            {
                Some(r) => Ok(Some(SealedRow {
                    nonce: r.try_get(0)?,
                    ciphertext: r.try_get(1)?,
                })),
                None => Ok(None),
            }
        })
    }

    /// The audit head: the last record's seq and hash, and the fleet key's MAC of them.
    pub fn audit_head(&self, seq: u64, hash: &str, mac: Option<String>) -> Result<(), PgError> {
        let hash = hash.to_owned();
        self.with("writing the audit head", |c| async move {
            c.execute(
                "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                                                mac = excluded.mac",
                &[&i64_of(seq), &hash, &mac],
            )
            .await?;
            Ok(())
        })
    }

    /// Makes the copy visible, and tells runners already listening to reload their registry.
    pub fn commit(self) -> Result<(), PgError> {
        self.with("committing the copy", |c| async move {
            let version: i64 = c
                .query_one(
                    "UPDATE warden_meta SET registry_version = registry_version + 1 WHERE id = 1
                     RETURNING registry_version",
                    &[],
                )
                .await?
                .try_get(0)?;
            // A tenant change naming no tenant: every listener reloads the whole registry.
            let change = Change {
                version,
                kind: ChangeKind::Tenant,
                tenant: None,
                extension: None,
            };
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.payload()])
                .await?;
            c.batch_execute("COMMIT").await?;
            Ok(())
        })
    }

    /// Rows per table as this transaction sees them (the copy's own, before its commit).
    pub fn counts(&self) -> Result<Vec<(&'static str, u64)>, PgError> {
        self.with("counting rows", |c| async move { counts(&c).await })
    }
}

/// Rows in each of [`IMPORTED_TABLES`].
pub(crate) async fn counts(c: &Client) -> Result<Vec<(&'static str, u64)>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for t in IMPORTED_TABLES {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await?
            .try_get(0)?;
        out.push((t, u64::try_from(n).unwrap_or(0)));
    }
    Ok(out)
}

impl PgStore {
    /// Rows in each table a copy writes ([`IMPORTED_TABLES`]).
    pub fn counts(&self) -> Result<Vec<(&'static str, u64)>, PgError> {
        let store = self.clone();
        self.run(async move {
            let c = store.dedicated().await?;
            counts(&c).await
        })?
        .map_err(self.failed("counting rows"))
    }
}
