//! `warden_registry::Registry` on `DATA/warden.db`: the `registry_*` tables (see `schema.rs`).
//! Every method is one transaction (writes `BEGIN IMMEDIATE`), so several processes on one
//! data dir see whole changes only.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension as _, Row, Transaction, TransactionBehavior, params};
use warden_bundle::ContentHash;
use warden_manifest::{ExtensionId, TenantName};
use warden_registry::{
    Approval, InstallRecord, KeyHash, Pin, Published, Registry, RegistryError, RegistryImage,
    TenantRecord,
};

use crate::stamp::{Remembered, StampFile};
use crate::{file, schema};

/// The SQLite registry. One connection, used by one operation at a time; the two lookups of
/// every gateway request answered from memory while the change stamp says nothing changed
/// (see `stamp`).
pub struct SqliteRegistry {
    conn: Mutex<Connection>,
    path: PathBuf,
    stamp: StampFile,
    keys: Mutex<Remembered<KeyHash, TenantName>>,
    installs: Mutex<Remembered<(TenantName, ExtensionId), Option<InstallRecord>>>,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn damaged(what: &str) -> impl FnOnce(String) -> RegistryError + '_ {
    move |value| RegistryError::Damaged(format!("{what} {value:?}"))
}

impl SqliteRegistry {
    /// Opens (creating if needed) the database at `path` and migrates the `registry_*` tables.
    pub fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        let conn = file::connect(path, schema::registry).map_err(|e| RegistryError::Storage {
            location: path.display().to_string(),
            source: Box::new(e),
        })?;
        let stamp = StampFile::open(path).map_err(|e| RegistryError::Storage {
            location: format!("{}-stamp", path.display()),
            source: Box::new(e),
        })?;
        Ok(SqliteRegistry {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            stamp,
            keys: Mutex::new(Remembered::new()),
            installs: Mutex::new(Remembered::new()),
        })
    }

    fn err(
        &self,
        e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> RegistryError {
        RegistryError::Storage {
            location: self.path.display().to_string(),
            source: e.into(),
        }
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, RegistryError> {
        self.conn
            .lock()
            .map_err(|_| self.err("connection lock poisoned"))
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let stamp_err = |e: std::io::Error| RegistryError::Storage {
            location: self.stamp.path().display().to_string(),
            source: Box::new(e),
        };
        // Held to the new stamp below: this handle's other writers and other processes' (the
        // stamp's turn and lock) neither change the database nor write a stamp between this
        // write's mark and its new stamp. The connection is taken last, once the wait for
        // other writers is over: a writer waiting for another process's write never holds
        // `conn`, which every lookup needs (outside attack, session 29: a stopped CLI writer
        // stalled the gateway and `/healthz` 5 s per queued admin write).
        let writing = self.stamp.writing().map_err(stamp_err)?;
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        // Marked before the change: readers answer nothing from memory until the stamp is new
        // again after the commit (or if that never happens).
        writing.mark_pending().map_err(stamp_err)?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.err(e))?;
        // After the commit: a reader that saw the old stamp read the database before this
        // write, and reads it again once it sees the new one. The change is made whether or
        // not this bump is written: if not, the pending mark stays, and readers read the
        // database until the next write (outside attack, session 29: the change was made,
        // but reported as failed).
        lock(&self.keys).clear();
        lock(&self.installs).clear();
        let _ = writing.bump();
        drop(conn);
        drop(writing);
        Ok(out)
    }

    fn install_row(&self, r: &Row<'_>) -> Result<InstallRecord, RegistryError> {
        install_row(r, &|e| self.err(e))
    }

    fn tenant_by_key_now(&self, key: &KeyHash) -> Result<Option<TenantName>, RegistryError> {
        let conn = self.conn()?;
        // On every gateway request: the statement is parsed once per connection.
        let row: Option<(String, String)> = conn
            .prepare_cached("SELECT hash, tenant FROM registry_keys WHERE hash = ?1")
            .and_then(|mut st| st.query_row([key.to_hex()], |r| Ok((r.get(0)?, r.get(1)?))))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((hash, tenant)) = row else {
            return Ok(None);
        };
        // The index found it; compare the whole hash again without an early exit.
        let stored = KeyHash::from_hex(&hash).ok_or_else(|| damaged("key hash")(hash))?;
        if !stored.matches(key) {
            return Ok(None);
        }
        Ok(Some(tenant.parse().map_err(|_| damaged("tenant")(tenant))?))
    }

    fn install_now(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Option<InstallRecord>, RegistryError> {
        let conn = self.conn()?;
        // On every gateway request not answered from memory: parsed once per connection.
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {INSTALL_COLUMNS} FROM registry_installs WHERE tenant = ?1 AND extension = ?2"
            ))
            .map_err(|e| self.err(e))?;
        let mut rows = st
            .query(params![tenant.as_str(), extension.as_str()])
            .map_err(|e| self.err(e))?;
        match rows.next().map_err(|e| self.err(e))? {
            Some(r) => Ok(Some(self.install_row(r)?)),
            None => Ok(None),
        }
    }
}

/// The maps hold plain data, whole between statements: a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn install_row(
    r: &Row<'_>,
    err: &dyn Fn(rusqlite::Error) -> RegistryError,
) -> Result<InstallRecord, RegistryError> {
    let text = |i| r.get::<_, String>(i).map_err(err);
    let (tenant, extension, version, hash, grant) =
        (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?);
    Ok(InstallRecord {
        tenant: tenant.parse().map_err(|_| damaged("tenant")(tenant))?,
        extension: extension
            .parse()
            .map_err(|_| damaged("extension")(extension))?,
        version: version.parse().map_err(|_| damaged("version")(version))?,
        content_hash: hash.parse().map_err(|_| damaged("content hash")(hash))?,
        grant: grant.parse().map_err(|_| damaged("grant")(grant))?,
        approved: Approval::from_text(&text(5)?),
        installed: time(r.get(6).map_err(err)?),
    })
}

const INSTALL_COLUMNS: &str =
    "tenant, extension, version, content_hash, grant_text, approved, installed_ms";

impl Registry for SqliteRegistry {
    fn create_tenant(&self, name: &TenantName, key: &KeyHash) -> Result<(), RegistryError> {
        self.write(|tx| {
            let exists: bool = tx
                .query_row(
                    "SELECT count(*) > 0 FROM registry_tenants WHERE name = ?1",
                    [name.as_str()],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            if exists {
                return Err(RegistryError::TenantExists(name.clone()));
            }
            tx.execute(
                "INSERT INTO registry_tenants (name, created_ms) VALUES (?1, ?2)",
                params![name.as_str(), millis(SystemTime::now())],
            )
            .map_err(|e| self.err(e))?;
            tx.execute(
                "INSERT INTO registry_keys (hash, tenant) VALUES (?1, ?2)",
                params![key.to_hex(), name.as_str()],
            )
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn tenant(&self, name: &TenantName) -> Result<Option<TenantRecord>, RegistryError> {
        let conn = self.conn()?;
        let ms: Option<i64> = conn
            .query_row(
                "SELECT created_ms FROM registry_tenants WHERE name = ?1",
                [name.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(ms.map(|ms| TenantRecord {
            name: name.clone(),
            created: time(ms),
        }))
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare("SELECT name, created_ms FROM registry_tenants ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, ms) = row.map_err(|e| self.err(e))?;
            out.push(TenantRecord {
                name: name.parse().map_err(|_| damaged("tenant")(name))?,
                created: time(ms),
            });
        }
        Ok(out)
    }

    fn tenant_by_key(&self, key: &KeyHash) -> Result<Option<TenantName>, RegistryError> {
        // Read before the database: an answer is never newer than the stamp it is kept under.
        let stamp = self.stamp.read();
        if let Some(stamp) = stamp
            && let Some(tenant) = lock(&self.keys).get(stamp, key)
        {
            return Ok(Some(tenant));
        }
        let found = self.tenant_by_key_now(key)?;
        // Unknown keys are not remembered: a flood of made-up keys must not fill memory.
        if let (Some(stamp), Some(tenant)) = (stamp, &found) {
            lock(&self.keys).put(stamp, key.clone(), tenant.clone());
        }
        Ok(found)
    }

    fn publish(&self, p: &Published) -> Result<(), RegistryError> {
        self.write(|tx| {
            // The id's first publisher keeps it; the first publication pins it.
            let pinned: Option<String> = tx
                .query_row(
                    "SELECT publisher FROM registry_publishers WHERE id = ?1",
                    [p.id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            match pinned {
                Some(pinned) if pinned != p.publisher.to_string() => {
                    return Err(RegistryError::PublisherPinned {
                        id: p.id.clone(),
                        pinned,
                        publisher: p.publisher.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO registry_publishers (id, publisher, pinned_ms)
                         VALUES (?1, ?2, ?3)",
                        params![p.id.as_str(), p.publisher.to_string(), millis(p.published)],
                    )
                    .map_err(|e| self.err(e))?;
                }
            }
            let other: Option<String> = tx
                .query_row(
                    "SELECT content_hash FROM registry_published
                     WHERE id = ?1 AND version = ?2 AND content_hash != ?3 LIMIT 1",
                    params![
                        p.id.as_str(),
                        p.version.to_string(),
                        p.content_hash.to_string()
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(other) = other {
                return Err(RegistryError::VersionTaken {
                    id: p.id.clone(),
                    version: p.version.to_string(),
                    existing: other.parse().map_err(|_| damaged("content hash")(other))?,
                });
            }
            tx.execute(
                "INSERT INTO registry_published
                 (content_hash, id, version, publisher, signature, published_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (content_hash) DO UPDATE SET signature = excluded.signature",
                params![
                    p.content_hash.to_string(),
                    p.id.as_str(),
                    p.version.to_string(),
                    p.publisher.to_string(),
                    p.signature,
                    millis(p.published),
                ],
            )
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn published(&self, hash: &ContentHash) -> Result<Option<Published>, RegistryError> {
        let conn = self.conn()?;
        let row: Option<(String, String, String, Vec<u8>, i64)> = conn
            .query_row(
                "SELECT id, version, publisher, signature, published_ms
                 FROM registry_published WHERE content_hash = ?1",
                [hash.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((id, version, publisher, signature, ms)) = row else {
            return Ok(None);
        };
        Ok(Some(Published {
            content_hash: *hash,
            id: id.parse().map_err(|_| damaged("extension")(id))?,
            version: version.parse().map_err(|_| damaged("version")(version))?,
            publisher: publisher
                .parse()
                .map_err(|_| damaged("publisher")(publisher))?,
            signature,
            published: time(ms),
        }))
    }

    fn put_install(
        &self,
        i: &InstallRecord,
        expected: Option<&ContentHash>,
    ) -> Result<(), RegistryError> {
        self.write(|tx| {
            let exists: bool = tx
                .query_row(
                    "SELECT count(*) > 0 FROM registry_tenants WHERE name = ?1",
                    [i.tenant.as_str()],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            if !exists {
                return Err(RegistryError::NoTenant(i.tenant.clone()));
            }
            let current: Option<String> = tx
                .query_row(
                    "SELECT content_hash FROM registry_installs WHERE tenant = ?1 AND extension = ?2",
                    params![i.tenant.as_str(), i.extension.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if current != expected.map(ContentHash::to_string) {
                return Err(RegistryError::Changed {
                    tenant: i.tenant.clone(),
                    extension: i.extension.clone(),
                });
            }
            tx.execute(
                &format!(
                    "INSERT INTO registry_installs ({INSTALL_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (tenant, extension) DO UPDATE SET
                       version = excluded.version, content_hash = excluded.content_hash,
                       grant_text = excluded.grant_text, approved = excluded.approved,
                       installed_ms = excluded.installed_ms"
                ),
                params![
                    i.tenant.as_str(),
                    i.extension.as_str(),
                    i.version.to_string(),
                    i.content_hash.to_string(),
                    i.grant.to_string(),
                    i.approved.to_text(),
                    millis(i.installed),
                ],
            )
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn install(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Option<InstallRecord>, RegistryError> {
        // Read before the database: an answer is never newer than the stamp it is kept under.
        let stamp = self.stamp.read();
        let key = (tenant.clone(), extension.clone());
        if let Some(stamp) = stamp
            && let Some(install) = lock(&self.installs).get(stamp, &key)
        {
            return Ok(install);
        }
        let found = self.install_now(tenant, extension)?;
        if let Some(stamp) = stamp {
            lock(&self.installs).put(stamp, key, found.clone());
        }
        Ok(found)
    }

    fn installs(&self, tenant: Option<&TenantName>) -> Result<Vec<InstallRecord>, RegistryError> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare(&format!(
                "SELECT {INSTALL_COLUMNS} FROM registry_installs
                 WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, extension"
            ))
            .map_err(|e| self.err(e))?;
        let mut rows = st
            .query([tenant.map(TenantName::as_str)])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            out.push(self.install_row(r)?);
        }
        Ok(out)
    }

    fn remove_install(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<bool, RegistryError> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM registry_installs WHERE tenant = ?1 AND extension = ?2",
                    params![tenant.as_str(), extension.as_str()],
                )
                .map_err(|e| self.err(e))?;
            Ok(n > 0)
        })
    }

    fn image(&self) -> Result<RegistryImage, RegistryError> {
        let mut conn = self.conn()?;
        // One read transaction: a snapshot of every table.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.err(e))?;
        let image = read_image(&tx, &|e| self.err(e))?;
        drop(tx);
        Ok(image)
    }
}

/// Every registry row `conn` sees (in a read transaction, for a snapshot), in the order
/// [`RegistryImage`] documents; `err` locates a database error.
pub(crate) fn read_image(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> RegistryError,
) -> Result<RegistryImage, RegistryError> {
    let mut image = RegistryImage::default();
    let mut st = conn
        .prepare("SELECT name, created_ms FROM registry_tenants")
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let name: String = r.get(0).map_err(err)?;
        image.tenants.push(TenantRecord {
            name: name.parse().map_err(|_| damaged("tenant")(name))?,
            created: time(r.get(1).map_err(err)?),
        });
    }
    let mut st = conn
        .prepare("SELECT hash, tenant FROM registry_keys")
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let (hash, tenant): (String, String) = (r.get(0).map_err(err)?, r.get(1).map_err(err)?);
        image.keys.push((
            KeyHash::from_hex(&hash).ok_or_else(|| damaged("key hash")(hash))?,
            tenant.parse().map_err(|_| damaged("tenant")(tenant))?,
        ));
    }
    let mut st = conn
        .prepare("SELECT id, publisher, pinned_ms FROM registry_publishers")
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let (id, publisher): (String, String) = (r.get(0).map_err(err)?, r.get(1).map_err(err)?);
        image.pins.push(Pin {
            id: id.parse().map_err(|_| damaged("extension")(id))?,
            publisher: publisher
                .parse()
                .map_err(|_| damaged("publisher")(publisher))?,
            pinned: time(r.get(2).map_err(err)?),
        });
    }
    let mut st = conn
        .prepare(
            "SELECT content_hash, id, version, publisher, signature, published_ms
             FROM registry_published",
        )
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let text = |i| r.get::<_, String>(i).map_err(err);
        let (hash, id, version, publisher) = (text(0)?, text(1)?, text(2)?, text(3)?);
        image.published.push(Published {
            content_hash: hash.parse().map_err(|_| damaged("content hash")(hash))?,
            id: id.parse().map_err(|_| damaged("extension")(id))?,
            version: version.parse().map_err(|_| damaged("version")(version))?,
            publisher: publisher
                .parse()
                .map_err(|_| damaged("publisher")(publisher))?,
            signature: r.get(4).map_err(err)?,
            published: time(r.get(5).map_err(err)?),
        });
    }
    let mut st = conn
        .prepare(&format!("SELECT {INSTALL_COLUMNS} FROM registry_installs"))
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        image.installs.push(install_row(r, err)?);
    }
    image.sort();
    Ok(image)
}
