//! `warden_registry::Registry` on PostgreSQL: the `registry_*` tables.
//!
//! Every method is one transaction. Every write first bumps `warden_meta.registry_version`:
//! that row lock is the registry's write lock on every runner (as SQLite's `BEGIN IMMEDIATE`),
//! and each READ COMMITTED statement after it sees every write committed before it was
//! granted. So `put_install`'s compare-and-set, the publisher pin and `VersionTaken` hold under
//! concurrent writers on any number of runners, with no serialization failures to retry in the
//! common case. Registry writes are rare (admin operations), so one lock costs nothing.
//! The same transaction sends `pg_notify('warden_changes', "v1 <version> <kind> <tenant>
//! <extension>")`, delivered only on commit, for the change feed and every runner's snapshot
//! (`snapshot`, plan 3.2), which [`PgStore::registry_cached`] answers `tenant_by_key` and
//! `install` from.
//!
//! Constraints back the rules up should anything write without the lock: a unique violation
//! (23505), a serialization failure (40001) or a deadlock (40P01) retries the whole
//! transaction, which then decides on what the other writer left, at most [`ATTEMPTS`] times
//! (after that, `put_install` answers [`RegistryError::Changed`]). Any other failure is
//! [`RegistryError::Storage`] (the service answers 503).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Pool, Transaction};
use warden_bundle::ContentHash;
use warden_manifest::{ExtensionId, TenantName};
use warden_registry::{
    InstallRecord, KeyHash, Pin, Published, Registry, RegistryError, RegistryImage, TenantRecord,
};

use crate::PgStore;
use crate::feed::{ChangeKind, announce};
use crate::rows::{
    Fail, INSTALL_COLUMNS, PUBLISHED_COLUMNS, damaged, install_row, published_row, time,
};
use crate::snapshot::{Cache, Snapshot};

/// Tries of one write transaction that failed on a conflict another writer caused.
const ATTEMPTS: usize = 3;

/// The registry of a [`PgStore`]: every call a query ([`PgStore::registry`]), or the two hot
/// lookups answered from a snapshot in memory ([`PgStore::registry_cached`], see `snapshot`).
#[derive(Clone)]
pub struct PgRegistry {
    store: PgStore,
    cache: Option<Arc<Cache>>,
}

impl std::fmt::Debug for PgRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRegistry")
            .field("store", &self.store)
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

fn code(f: &Fail) -> Option<&str> {
    match f {
        Fail::Db(e) => e.code().map(tokio_postgres::error::SqlState::code),
        _ => None,
    }
}

/// Another writer's transaction got in the way: trying again decides on what it wrote.
fn conflict(f: &Fail) -> bool {
    matches!(code(f), Some("40001" | "40P01" | "23505"))
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Takes the registry's write lock and announces the change (on commit): see the module docs.
/// Returns the registry version the change will have.
async fn begin_write(
    tx: &Transaction<'_>,
    kind: ChangeKind,
    tenant: Option<&str>,
    extension: Option<&str>,
) -> Result<i64, Fail> {
    Ok(announce(tx, kind, tenant, extension).await?)
}

impl PgRegistry {
    pub(crate) fn new(store: PgStore) -> PgRegistry {
        PgRegistry { store, cache: None }
    }

    pub(crate) fn cached(store: PgStore, cache: Arc<Cache>) -> PgRegistry {
        PgRegistry {
            store,
            cache: Some(cache),
        }
    }

    fn storage(&self, source: crate::BoxError) -> RegistryError {
        RegistryError::Storage {
            location: self.store.location(),
            source,
        }
    }

    fn finish<T>(&self, r: Result<T, Fail>) -> Result<T, RegistryError> {
        r.map_err(|f| match f {
            Fail::Registry(e) => e,
            Fail::Db(e) => self.storage(Box::new(e)),
            Fail::Pool(e) => self.storage(Box::new(e)),
        })
    }

    /// Runs `attempt` (one whole transaction, on a pooled connection) on the runtime, again
    /// after a conflict, at most [`ATTEMPTS`] times. An attempt answers the registry version it
    /// committed, if it committed; then `change` goes into the snapshot (if cached) before this
    /// returns.
    fn write<T, F, Fut>(
        &self,
        attempt: F,
        change: impl FnOnce(&mut Snapshot) + Send + 'static,
    ) -> Result<T, RegistryError>
    where
        F: Fn(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, Option<i64>), Fail>> + Send,
        T: Send + 'static,
    {
        let pool = self.store.pool().clone();
        let cache = self.cache.clone();
        let r = self
            .store
            .run(async move {
                // Held from before the commit until the change is in (see `Cache::update`).
                let _update = match &cache {
                    Some(c) => Some(c.update.lock().await),
                    None => None,
                };
                let mut tries = 0;
                let r = loop {
                    tries += 1;
                    match attempt(pool.clone()).await {
                        Err(f) if conflict(&f) && tries < ATTEMPTS => {
                            tracing::debug!(target: "warden::pg", tries, "registry write retried");
                        }
                        other => break other,
                    }
                };
                if let (Some(cache), Ok((_, Some(version)))) = (&cache, &r) {
                    cache.applied(*version, change);
                }
                r.map(|(t, _)| t)
            })
            .map_err(|e| self.storage(Box::new(e)))?;
        self.finish(r)
    }

    /// Runs one read on a pooled connection.
    fn read<T, F, Fut>(&self, f: F) -> Result<T, RegistryError>
    where
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Fail>> + Send,
        T: Send + 'static,
    {
        let pool = self.store.pool().clone();
        let r = self
            .store
            .run(async move { f(pool).await })
            .map_err(|e| self.storage(Box::new(e)))?;
        self.finish(r)
    }
}

impl Registry for PgRegistry {
    fn create_tenant(&self, name: &TenantName, key: &KeyHash) -> Result<(), RegistryError> {
        let (name, hash) = (name.clone(), key.to_hex());
        let (tenant, key) = (name.clone(), key.clone());
        let change = move |s: &mut Snapshot| s.add_key(&key, &tenant);
        self.write(
            move |pool| {
                let (name, hash) = (name.clone(), hash.clone());
                async move {
                    let mut c = pool.get().await?;
                    let tx = c.transaction().await?;
                    let version =
                        begin_write(&tx, ChangeKind::Tenant, Some(name.as_str()), None).await?;
                    let n = tx
                        .execute(
                            "INSERT INTO registry_tenants (name, created_ms) VALUES ($1, $2)
                         ON CONFLICT (name) DO NOTHING",
                            &[&name.as_str(), &millis(SystemTime::now())],
                        )
                        .await?;
                    if n == 0 {
                        return Err(RegistryError::TenantExists(name).into());
                    }
                    tx.execute(
                        "INSERT INTO registry_keys (hash, tenant) VALUES ($1, $2)",
                        &[&hash, &name.as_str()],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(((), Some(version)))
                }
            },
            change,
        )
    }

    fn tenant(&self, name: &TenantName) -> Result<Option<TenantRecord>, RegistryError> {
        let name = name.clone();
        self.read(move |pool| async move {
            let c = pool.get().await?;
            let st = c
                .prepare_cached("SELECT created_ms FROM registry_tenants WHERE name = $1")
                .await?;
            match c.query_opt(&st, &[&name.as_str()]).await? {
                Some(r) => Ok(Some(TenantRecord {
                    name,
                    created: time(r.try_get(0)?),
                })),
                None => Ok(None),
            }
        })
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        self.read(move |pool| async move {
            let c = pool.get().await?;
            let mut out = Vec::new();
            for r in c
                .query(
                    "SELECT name, created_ms FROM registry_tenants ORDER BY name",
                    &[],
                )
                .await?
            {
                let name: String = r.try_get(0)?;
                out.push(TenantRecord {
                    name: name.parse().map_err(|_| damaged("tenant", &name))?,
                    created: time(r.try_get(1)?),
                });
            }
            Ok(out)
        })
    }

    fn tenant_by_key(&self, key: &KeyHash) -> Result<Option<TenantName>, RegistryError> {
        if let Some(cache) = &self.cache {
            return cache.tenant_by_key(key);
        }
        let key = key.clone();
        self.read(move |pool| async move {
            let c = pool.get().await?;
            let st = c
                .prepare_cached("SELECT hash, tenant FROM registry_keys WHERE hash = $1")
                .await?;
            let Some(r) = c.query_opt(&st, &[&key.to_hex()]).await? else {
                return Ok(None);
            };
            let (hash, tenant): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            // The index found it; compare the whole hash again without an early exit.
            let stored = KeyHash::from_hex(&hash).ok_or_else(|| damaged("key hash", &hash))?;
            if !stored.matches(&key) {
                return Ok(None);
            }
            Ok(Some(
                tenant.parse().map_err(|_| damaged("tenant", &tenant))?,
            ))
        })
    }

    fn publish(&self, p: &Published) -> Result<(), RegistryError> {
        let p = p.clone();
        self.write(
            move |pool| {
                let p = p.clone();
                async move {
                    let mut c = pool.get().await?;
                    let tx = c.transaction().await?;
                    let committed =
                        begin_write(&tx, ChangeKind::Publish, None, Some(p.id.as_str())).await?;
                    // The id's first publisher keeps it; the first publication pins it.
                    let publisher = p.publisher.to_string();
                    tx.execute(
                    "INSERT INTO registry_publishers (id, publisher, pinned_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO NOTHING",
                    &[&p.id.as_str(), &publisher, &millis(p.published)],
                )
                .await?;
                    let pinned: String = tx
                        .query_one(
                            "SELECT publisher FROM registry_publishers WHERE id = $1",
                            &[&p.id.as_str()],
                        )
                        .await?
                        .try_get(0)?;
                    if pinned != publisher {
                        return Err(RegistryError::PublisherPinned {
                            id: p.id.clone(),
                            pinned,
                            publisher: p.publisher.clone(),
                        }
                        .into());
                    }
                    let (version, hash) = (p.version.to_string(), p.content_hash.to_string());
                    let other = tx
                        .query_opt(
                            "SELECT content_hash FROM registry_published
                         WHERE id = $1 AND version = $2 AND content_hash <> $3 LIMIT 1",
                            &[&p.id.as_str(), &version, &hash],
                        )
                        .await?;
                    if let Some(r) = other {
                        let other: String = r.try_get(0)?;
                        return Err(RegistryError::VersionTaken {
                            id: p.id.clone(),
                            version,
                            existing: other.parse().map_err(|_| damaged("content hash", &other))?,
                        }
                        .into());
                    }
                    tx.execute(
                        "INSERT INTO registry_published
                     (content_hash, id, version, publisher, signature, published_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (content_hash) DO UPDATE SET signature = excluded.signature",
                        &[
                            &hash,
                            &p.id.as_str(),
                            &version,
                            &publisher,
                            &p.signature,
                            &millis(p.published),
                        ],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(((), Some(committed)))
                }
            },
            |_| {},
        )
    }

    fn published(&self, hash: &ContentHash) -> Result<Option<Published>, RegistryError> {
        let hash = *hash;
        self.read(move |pool| async move {
            let c = pool.get().await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {PUBLISHED_COLUMNS} FROM registry_published WHERE content_hash = $1"
                ))
                .await?;
            match c.query_opt(&st, &[&hash.to_string()]).await? {
                Some(r) => Ok(Some(published_row(&r)?)),
                None => Ok(None),
            }
        })
    }

    fn put_install(
        &self,
        i: &InstallRecord,
        expected: Option<&ContentHash>,
    ) -> Result<(), RegistryError> {
        let (i, expected) = (i.clone(), expected.map(ContentHash::to_string));
        let (tenant, extension) = (i.tenant.clone(), i.extension.clone());
        let record = i.clone();
        let change = move |s: &mut Snapshot| s.put_install(&record);
        let r = self.write(
            move |pool| {
                let (i, expected) = (i.clone(), expected.clone());
                async move {
                    let mut c = pool.get().await?;
                    let tx = c.transaction().await?;
                    let version = begin_write(
                        &tx,
                        ChangeKind::Install,
                        Some(i.tenant.as_str()),
                        Some(i.extension.as_str()),
                    )
                    .await?;
                    let exists = tx
                        .query_opt(
                            "SELECT 1 FROM registry_tenants WHERE name = $1",
                            &[&i.tenant.as_str()],
                        )
                        .await?
                        .is_some();
                    if !exists {
                        return Err(RegistryError::NoTenant(i.tenant.clone()).into());
                    }
                    let current: Option<String> = tx
                        .query_opt(
                            "SELECT content_hash FROM registry_installs
                         WHERE tenant = $1 AND extension = $2",
                            &[&i.tenant.as_str(), &i.extension.as_str()],
                        )
                        .await?
                        .map(|r| r.try_get(0))
                        .transpose()?;
                    if current != expected {
                        return Err(RegistryError::Changed {
                            tenant: i.tenant.clone(),
                            extension: i.extension.clone(),
                        }
                        .into());
                    }
                    tx.execute(
                        &format!(
                            "INSERT INTO registry_installs ({INSTALL_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (tenant, extension) DO UPDATE SET
                           version = excluded.version, content_hash = excluded.content_hash,
                           grant_text = excluded.grant_text, approved = excluded.approved,
                           installed_ms = excluded.installed_ms"
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
                    tx.commit().await?;
                    Ok(((), Some(version)))
                }
            },
            change,
        );
        // A conflict that outlived the retries (only a writer that skipped the lock can cause
        // one): the state this install was decided on moved under it.
        match r {
            Err(RegistryError::Storage { source, .. })
                if source
                    .downcast_ref::<tokio_postgres::Error>()
                    .and_then(tokio_postgres::Error::code)
                    .is_some_and(|c| matches!(c.code(), "23505" | "40001" | "40P01")) =>
            {
                Err(RegistryError::Changed { tenant, extension })
            }
            r => r,
        }
    }

    fn install(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Option<InstallRecord>, RegistryError> {
        if let Some(cache) = &self.cache {
            return cache.install(tenant, extension);
        }
        let (t, e) = (tenant.clone(), extension.clone());
        self.read(move |pool| async move {
            let c = pool.get().await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {INSTALL_COLUMNS} FROM registry_installs
                     WHERE tenant = $1 AND extension = $2"
                ))
                .await?;
            c.query_opt(&st, &[&t.as_str(), &e.as_str()])
                .await?
                .map(|r| install_row(&r))
                .transpose()
        })
    }

    fn installs(&self, tenant: Option<&TenantName>) -> Result<Vec<InstallRecord>, RegistryError> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        self.read(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {INSTALL_COLUMNS} FROM registry_installs
                         WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, extension"
                    ),
                    &[&tenant],
                )
                .await?;
            rows.iter().map(install_row).collect()
        })
    }

    fn remove_install(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<bool, RegistryError> {
        let (t, e) = (tenant.clone(), extension.clone());
        let (tenant, extension) = (tenant.clone(), extension.clone());
        let change = move |s: &mut Snapshot| s.remove_install(&tenant, &extension);
        self.write(
            move |pool| {
                let (t, e) = (t.clone(), e.clone());
                async move {
                    let mut c = pool.get().await?;
                    let tx = c.transaction().await?;
                    let version = begin_write(
                        &tx,
                        ChangeKind::Uninstall,
                        Some(t.as_str()),
                        Some(e.as_str()),
                    )
                    .await?;
                    let n = tx
                        .execute(
                            "DELETE FROM registry_installs WHERE tenant = $1 AND extension = $2",
                            &[&t.as_str(), &e.as_str()],
                        )
                        .await?;
                    // Nothing removed: nothing to announce, the transaction rolls back.
                    if n == 0 {
                        return Ok((false, None));
                    }
                    tx.commit().await?;
                    Ok((true, Some(version)))
                }
            },
            change,
        )
    }

    fn image(&self) -> Result<RegistryImage, RegistryError> {
        self.read(move |pool| async move {
            let mut c = pool.get().await?;
            // One snapshot of every table.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut image = RegistryImage::default();
            for r in tx
                .query("SELECT name, created_ms FROM registry_tenants", &[])
                .await?
            {
                let name: String = r.try_get(0)?;
                image.tenants.push(TenantRecord {
                    name: name.parse().map_err(|_| damaged("tenant", &name))?,
                    created: time(r.try_get(1)?),
                });
            }
            for r in tx
                .query("SELECT hash, tenant FROM registry_keys", &[])
                .await?
            {
                let (hash, tenant): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                image.keys.push((
                    KeyHash::from_hex(&hash).ok_or_else(|| damaged("key hash", &hash))?,
                    tenant.parse().map_err(|_| damaged("tenant", &tenant))?,
                ));
            }
            for r in tx
                .query(
                    "SELECT id, publisher, pinned_ms FROM registry_publishers",
                    &[],
                )
                .await?
            {
                let (id, publisher): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                image.pins.push(Pin {
                    id: id.parse().map_err(|_| damaged("extension", &id))?,
                    publisher: publisher
                        .parse()
                        .map_err(|_| damaged("publisher", &publisher))?,
                    pinned: time(r.try_get(2)?),
                });
            }
            for r in tx
                .query(
                    &format!("SELECT {PUBLISHED_COLUMNS} FROM registry_published"),
                    &[],
                )
                .await?
            {
                image.published.push(published_row(&r)?);
            }
            for r in tx
                .query(
                    &format!("SELECT {INSTALL_COLUMNS} FROM registry_installs"),
                    &[],
                )
                .await?
            {
                image.installs.push(install_row(&r)?);
            }
            tx.commit().await?;
            image.sort();
            Ok(image)
        })
    }
}
