//! The registry's two hot lookups (`tenant_by_key`, `install`) answered from memory (plan
//! 3.2), so that a request never waits on PostgreSQL for them.
//!
//! A [`Cache`] holds a [`Snapshot`] of every key and install, loaded whole at start. A listener
//! on the store's runtime keeps it current: on its own connection it LISTENs on
//! `warden_changes` and polls `warden_meta.registry_version` every [`POLL`]. A notice one
//! version past the snapshot re-reads the rows it names; a jump, a poll that disagrees (notices
//! lost), or a reconnect reloads everything. Writes through the cached registry update the
//! snapshot before they return (read-your-writes on one runner).
//!
//! Fail closed: each notice and each poll that agrees confirms the snapshot; one not confirmed
//! for more than [`FRESH`] is not answered from (a storage error, 503), so with PostgreSQL or
//! its connection gone no runner serves a removed install or key for more than about a second.
//! The listener reconnects with backoff and recovers by itself.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::{Client, IsolationLevel, Notification};
use warden_manifest::{ExtensionId, TenantName};
use warden_registry::{InstallRecord, KeyHash, RegistryError};

use crate::feed::{Change, ChangeKind, listen};
use crate::rows::{Fail, INSTALL_COLUMNS, install_row};
use crate::tls::Connector;
use crate::{BoxError, PgError, PgStore};

/// How often the listener asks for the registry version.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// How long a snapshot is answered from after it was last confirmed.
pub(crate) const FRESH: Duration = Duration::from_secs(1);
/// Longest wait for a poll or the rows of one notice: past it the connection is taken as lost.
const QUERY_TIMEOUT: Duration = Duration::from_millis(750);
/// Longest wait for a whole reload (the server's statement timeout is 5 s).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: doubled after each failure, from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(800));

/// A key hash compared in constant time once found (the map finds it by a keyed hash).
#[derive(Clone)]
struct Key(KeyHash);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.matches(&other.0)
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Every key and install as of `version` of the registry.
#[derive(Clone, Default)]
pub(crate) struct Snapshot {
    version: i64,
    keys: HashMap<Key, TenantName>,
    installs: HashMap<(TenantName, ExtensionId), InstallRecord>,
}

impl Snapshot {
    pub(crate) fn add_key(&mut self, key: &KeyHash, tenant: &TenantName) {
        self.keys.insert(Key(key.clone()), tenant.clone());
    }

    pub(crate) fn put_install(&mut self, i: &InstallRecord) {
        self.installs
            .insert((i.tenant.clone(), i.extension.clone()), i.clone());
    }

    pub(crate) fn remove_install(&mut self, tenant: &TenantName, extension: &ExtensionId) {
        self.installs.remove(&(tenant.clone(), extension.clone()));
    }
}

/// The snapshot, when it was last confirmed, and the lock that orders its updates.
pub(crate) struct Cache {
    snapshot: RwLock<Arc<Snapshot>>,
    base: Instant,
    /// Nanoseconds from `base` to the last confirmation.
    confirmed: AtomicU64,
    /// Held by the listener from before it reads rows until they are in the snapshot, and by
    /// a write through this registry from before its commit until its change is in: so rows
    /// read before a local write never land after it (read-your-writes).
    pub(crate) update: tokio::sync::Mutex<()>,
    location: String,
}

impl Cache {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The snapshot is known current as of `at`.
    fn confirm(&self, at: Instant) {
        self.confirmed.fetch_max(self.nanos(at), Ordering::Relaxed);
    }

    fn version(&self) -> i64 {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    fn replace(&self, s: Snapshot) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(s);
    }

    /// The snapshot to answer from, or the storage error when it is not confirmed fresh.
    fn fresh<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> Result<T, RegistryError> {
        let age = Duration::from_nanos(
            self.nanos(Instant::now())
                .saturating_sub(self.confirmed.load(Ordering::Relaxed)),
        );
        if age > FRESH {
            return Err(RegistryError::Storage {
                location: self.location.clone(),
                source: format!(
                    "the registry was not confirmed current for {} ms (more than {} ms): the \
                     database or its change feed cannot be reached",
                    age.as_millis(),
                    FRESH.as_millis()
                )
                .into(),
            });
        }
        let s = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        Ok(f(&s))
    }

    pub(crate) fn tenant_by_key(&self, key: &KeyHash) -> Result<Option<TenantName>, RegistryError> {
        self.fresh(|s| s.keys.get(&Key(key.clone())).cloned())
    }

    pub(crate) fn install(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Option<InstallRecord>, RegistryError> {
        self.fresh(|s| {
            s.installs
                .get(&(tenant.clone(), extension.clone()))
                .cloned()
        })
    }

    /// A write through this registry committed `version` (the caller holds `update`): its
    /// change goes in unless the snapshot already has it or something newer. The version is
    /// taken only when it is the next one (one missed is the listener's to find).
    pub(crate) fn applied(&self, version: i64, change: impl FnOnce(&mut Snapshot)) {
        let mut guard = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if guard.version >= version {
            return;
        }
        let s = Arc::make_mut(&mut guard);
        change(s);
        if s.version + 1 == version {
            s.version = version;
        }
    }
}

/// What stopped the listener's work on one connection.
enum Stop {
    /// Every registry holding the cache is gone.
    Gone,
    /// The connection or a query failed: reconnect.
    Lost(BoxError),
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Stop {
        Stop::Lost(Box::new(e))
    }
}

impl From<tokio::time::error::Elapsed> for Stop {
    fn from(_: tokio::time::error::Elapsed) -> Stop {
        Stop::Lost("the database did not answer in time".into())
    }
}

/// Every key and install, with the version they are at, read in one snapshot of the database.
async fn load(client: &mut Client) -> Result<Snapshot, Stop> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let version: i64 = tx
        .query_one("SELECT registry_version FROM warden_meta WHERE id = 1", &[])
        .await?
        .try_get(0)?;
    let mut s = Snapshot {
        version,
        ..Snapshot::default()
    };
    for r in tx
        .query("SELECT hash, tenant FROM registry_keys", &[])
        .await?
    {
        let (hash, tenant): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        add_key_row(&mut s, &hash, &tenant);
    }
    for r in tx
        .query(
            &format!("SELECT {INSTALL_COLUMNS} FROM registry_installs"),
            &[],
        )
        .await?
    {
        if let Some(i) = install_or_skip(install_row(&r))? {
            s.put_install(&i);
        }
    }
    tx.commit().await?;
    Ok(s)
}

/// A damaged row is left out (a key that authenticates no one, an extension not installed)
/// rather than keeping every other tenant from being served; the uncached registry reports it.
fn add_key_row(s: &mut Snapshot, hash: &str, tenant: &str) {
    match (KeyHash::from_hex(hash), tenant.parse::<TenantName>()) {
        (Some(k), Ok(t)) => s.add_key(&k, &t),
        _ => tracing::warn!(target: "warden::pg", tenant, "a damaged key row is left out"),
    }
}

fn install_or_skip(r: Result<InstallRecord, Fail>) -> Result<Option<InstallRecord>, Stop> {
    match r {
        Ok(i) => Ok(Some(i)),
        Err(Fail::Registry(e)) => {
            tracing::warn!(target: "warden::pg", error = %e, "a damaged install row is left out");
            Ok(None)
        }
        Err(Fail::Db(e)) => Err(e.into()),
        Err(Fail::Pool(e)) => Err(Stop::Lost(Box::new(e))),
    }
}

/// Applies one notice (the caller holds `update`). `Ok(false)`: everything must be reloaded.
async fn notice(client: &Client, cache: &Cache, n: &Notification) -> Result<bool, Stop> {
    let Some(change) = Change::parse(n.payload()) else {
        // A newer runner's notice: what it changed is unknown.
        return Ok(false);
    };
    let have = cache.version();
    if change.version <= have {
        return Ok(true);
    }
    if change.version != have + 1 {
        return Ok(false);
    }
    let (tenant, extension) = (change.tenant.as_deref(), change.extension.as_deref());
    let update: Box<dyn FnOnce(&mut Snapshot) + Send> = match change.kind {
        ChangeKind::Tenant => {
            let Some(t) = tenant else { return Ok(false) };
            let Ok(name) = t.parse::<TenantName>() else {
                return Ok(false);
            };
            let rows = tokio::time::timeout(
                QUERY_TIMEOUT,
                client.query("SELECT hash FROM registry_keys WHERE tenant = $1", &[&t]),
            )
            .await??;
            let mut hashes = Vec::with_capacity(rows.len());
            for r in rows {
                hashes.push(r.try_get::<_, String>(0)?);
            }
            Box::new(move |s: &mut Snapshot| {
                s.keys.retain(|_, owner| *owner != name);
                for h in &hashes {
                    add_key_row(s, h, name.as_str());
                }
            })
        }
        ChangeKind::Install | ChangeKind::Uninstall => {
            let (Some(t), Some(e)) = (tenant, extension) else {
                return Ok(false);
            };
            let (Ok(tn), Ok(en)) = (t.parse::<TenantName>(), e.parse::<ExtensionId>()) else {
                return Ok(false);
            };
            let row = tokio::time::timeout(
                QUERY_TIMEOUT,
                client.query_opt(
                    &format!(
                        "SELECT {INSTALL_COLUMNS} FROM registry_installs
                         WHERE tenant = $1 AND extension = $2"
                    ),
                    &[&t, &e],
                ),
            )
            .await??;
            let record = match row {
                Some(r) => install_or_skip(install_row(&r))?,
                None => None,
            };
            Box::new(move |s: &mut Snapshot| match record {
                Some(i) => s.put_install(&i),
                None => s.remove_install(&tn, &en),
            })
        }
        // Nothing the snapshot holds.
        ChangeKind::Publish | ChangeKind::Secret | ChangeKind::Trust => Box::new(|_| {}),
    };
    let mut guard = cache
        .snapshot
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let s = Arc::make_mut(&mut guard);
    update(s);
    // The rows read may be newer still; the notices after this one re-read theirs.
    s.version = change.version;
    Ok(true)
}

/// Reloads everything (the caller holds `update`) and confirms the snapshot as of the start.
async fn reload(client: &mut Client, cache: &Cache) -> Result<(), Stop> {
    let started = Instant::now();
    let s = tokio::time::timeout(RELOAD_TIMEOUT, load(client)).await??;
    tracing::debug!(target: "warden::pg", version = s.version, keys = s.keys.len(),
        installs = s.installs.len(), "registry snapshot reloaded");
    cache.replace(s);
    cache.confirm(started);
    Ok(())
}

/// Serves one connection until it is lost or the cache is gone.
async fn serve(
    weak: &Weak<Cache>,
    client: &mut Client,
    notices: &mut UnboundedReceiver<Notification>,
) -> Stop {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let r = tokio::select! {
            n = notices.recv() => match n {
                None => Err(Stop::Lost("the change feed's connection closed".into())),
                Some(n) => match weak.upgrade() {
                    None => Err(Stop::Gone),
                    Some(cache) => on_notice(client, &cache, &n).await,
                },
            },
            _ = tick.tick() => match weak.upgrade() {
                None => Err(Stop::Gone),
                Some(cache) => poll(client, &cache, notices).await,
            },
        };
        if let Err(stop) = r {
            return stop;
        }
    }
}

async fn on_notice(client: &mut Client, cache: &Cache, n: &Notification) -> Result<(), Stop> {
    let received = Instant::now();
    let _update = cache.update.lock().await;
    if notice(client, cache, n).await? {
        // A live feed delivering in order: nothing before this notice is missing.
        cache.confirm(received);
        Ok(())
    } else {
        reload(client, cache).await
    }
}

/// Asks the registry version: the same, the snapshot is confirmed; otherwise, once the notices
/// already here are applied, still not the same, everything is reloaded.
async fn poll(
    client: &mut Client,
    cache: &Cache,
    notices: &mut UnboundedReceiver<Notification>,
) -> Result<(), Stop> {
    let sent = Instant::now();
    let version: i64 = tokio::time::timeout(
        QUERY_TIMEOUT,
        client.query_one("SELECT registry_version FROM warden_meta WHERE id = 1", &[]),
    )
    .await??
    .try_get(0)?;
    if cache.version() == version {
        cache.confirm(sent);
        return Ok(());
    }
    // Notices committed before the poll may have arrived with (or just before) its answer.
    while let Ok(n) = notices.try_recv() {
        on_notice(client, cache, &n).await?;
    }
    let _update = cache.update.lock().await;
    if cache.version() == version {
        cache.confirm(sent);
        Ok(())
    } else {
        tracing::debug!(target: "warden::pg", have = cache.version(), version, "registry snapshot behind the database");
        reload(client, cache).await
    }
}

/// The listener: serves its connection, and after losing it reconnects with backoff and
/// reloads everything (notices sent meanwhile are lost). Ends when the cache is dropped.
async fn listener(
    weak: Weak<Cache>,
    config: tokio_postgres::Config,
    tls: Connector,
    mut conn: Option<(Client, UnboundedReceiver<Notification>)>,
) {
    let mut backoff = BACKOFF.0;
    loop {
        let (mut client, mut notices) = match conn.take() {
            Some(c) => c,
            None => {
                let Some(cache) = weak.upgrade() else { return };
                let connected =
                    match tokio::time::timeout(CONNECT_TIMEOUT, listen(&config, &tls)).await {
                        Ok(Ok((mut client, notices))) => {
                            let _update = cache.update.lock().await;
                            reload(&mut client, &cache)
                                .await
                                .map(|()| (client, notices))
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(e) => Err(e.into()),
                    };
                drop(cache);
                match connected {
                    Ok(c) => {
                        tracing::info!(target: "warden::pg", "registry change listener reconnected");
                        backoff = BACKOFF.0;
                        c
                    }
                    Err(Stop::Gone) => return,
                    Err(Stop::Lost(e)) => {
                        tracing::debug!(target: "warden::pg", error = %e, ?backoff, "registry change listener cannot reconnect");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF.1);
                        continue;
                    }
                }
            }
        };
        match serve(&weak, &mut client, &mut notices).await {
            Stop::Gone => return,
            Stop::Lost(e) => {
                tracing::warn!(target: "warden::pg", error = %e, "registry change listener lost its connection; reconnecting");
            }
        }
    }
}

impl PgStore {
    /// Listens, loads the whole snapshot, and starts the listener that keeps it current.
    pub(crate) fn start_cache(&self) -> Result<Arc<Cache>, PgError> {
        let (config, location) = (self.inner.config.clone(), self.location());
        let (url, tls) = (self.url().clone(), self.tls().clone());
        self.run(async move {
            let failed = |source: BoxError| PgError::Database {
                url: url.clone(),
                action: "loading the registry snapshot",
                source,
            };
            let (mut client, notices) =
                tokio::time::timeout(CONNECT_TIMEOUT, listen(&config, &tls))
                    .await
                    .map_err(|e| failed(Box::new(e)))?
                    .map_err(|e| failed(Box::new(e)))?;
            let started = Instant::now();
            let snapshot = match tokio::time::timeout(RELOAD_TIMEOUT, load(&mut client)).await {
                Ok(Ok(s)) => s,
                Ok(Err(Stop::Lost(e))) => return Err(failed(e)),
                Ok(Err(Stop::Gone)) => return Err(failed("stopped".into())),
                Err(e) => return Err(failed(Box::new(e))),
            };
            let cache = Arc::new(Cache {
                snapshot: RwLock::new(Arc::new(snapshot)),
                base: started,
                confirmed: AtomicU64::new(0),
                update: tokio::sync::Mutex::new(()),
                location,
            });
            tokio::spawn(listener(
                Arc::downgrade(&cache),
                config,
                tls,
                Some((client, notices)),
            ));
            Ok(cache)
        })?
    }
}
