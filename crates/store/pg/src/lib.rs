//! Shared storage on PostgreSQL, for a fleet of stateless runners (issue 12): the only crate
//! that talks to PostgreSQL and owns its schema ([`schema`]).
//!
//! [`PgStore::connect`] opens a pool on a small runtime of its own, refuses a server that could
//! lose acknowledged writes, and applies the migrations. From it come the storage traits'
//! implementations: [`PgKv`] (`KvBackend`), [`PgSecretRows`] (`SecretRows`), [`PgRegistry`]
//! (`Registry`; [`PgStore::registry_cached`] answers the two lookups of every request from a
//! snapshot in memory), [`PgRateLeases`] (`RateLeases`), [`PgRoundStore`] (`RoundStore`, under
//! a `StoreLog`) and [`PgAuditSource`] (`AuditSource`). [`PgStore::changes`] listens for the changes every registry write (and
//! [`PgStore::notify`]) announces to all runners.
//!
//! The traits are synchronous and the driver is async: every call is spawned on the store's
//! runtime (2 worker threads named `warden-pg`) and its answer awaited on a std channel, so a
//! call works from any plain thread, from `spawn_blocking`, and from the audit writer thread,
//! and never nests a runtime. Calling from an async worker thread works but blocks that worker
//! for the round trip: keep such calls off the executor (the kv and secrets paths already run
//! on `spawn_blocking`).
//!
//! Every connection (the pool's, the change listeners', the ones of its own a long read or a
//! session lock takes) is made with the same TLS settings, from the URL (`tls.rs` has the
//! details): `require`, `verify-ca` and `verify-full` all mean TLS with the certificate chain
//! *and* the host name verified (stricter than libpq's first two); `prefer` (the default, as in
//! libpq) means the same when the server offers TLS, and the clear only when it has none;
//! `disable`, the clear. Warden never makes an unverified TLS connection. `sslrootcert=PATH`
//! names the CA file to trust instead of the Mozilla root bundle; `sslcert`/`sslkey` a client
//! certificate. [`PgStore::tls_version`] says what the first connection negotiated.
//!
//! The URL may hold a password: it is shown only through `warden_manifest::DatabaseUrl`, which
//! replaces it, in errors, `Debug` and logs.

mod audit;
mod feed;
mod import;
mod kv;
mod rate;
mod registry;
mod rows;
mod schema;
mod secrets;
mod snapshot;
mod tls;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use warden_manifest::DatabaseUrl;

pub use audit::{PgAuditSource, PgRoundStore};
pub use feed::{CHANNEL, Change, ChangeKind};
pub use import::{AuditRow, IMPORTED_TABLES, ImportError, PgImport};
pub use kv::PgKv;
pub use rate::{PgRateLeases, PgSharedTrust};
pub use registry::PgRegistry;
pub use schema::SCHEMA_VERSION;
pub use secrets::PgSecretRows;

/// Most connections one store (one runner) opens.
pub const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection, or for a new one to be made.
const POOL_TIMEOUT: Duration = Duration::from_secs(2);
/// Set on every connection: a statement that runs longer is cancelled by the server, so a
/// stuck query cannot hold a connection (and its locks) for ever.
const STATEMENT_TIMEOUT_MS: u32 = 5_000;
/// Set on every connection: a transaction left idle (its runner stalled or gone) is ended by
/// the server, which releases its row locks (the kv write lock, the audit head).
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u32 = 10_000;

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse. The reason never quotes the URL (it may hold a password).
    #[error("database URL: {0}")]
    Url(String),
    /// A file the URL names for TLS (`sslrootcert`, `sslcert`, `sslkey`) cannot be used.
    #[error("database URL: {param}={}: {reason}", path.display())]
    TlsFile {
        param: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The TLS handshake failed (the reason says why: "certificate not trusted", "name
    /// mismatch", ...), or the server offers no TLS where the URL requires it.
    #[error("{url}: TLS to {host}: {reason}")]
    Tls {
        url: DatabaseUrl,
        host: String,
        reason: String,
    },
    /// The server would acknowledge writes it has not made durable.
    #[error(
        "{url}: the server runs with {setting} = {value}, so an acknowledged write could be \
         lost in a crash; warden needs fsync = on and synchronous_commit on (or local, \
         remote_write, remote_apply)"
    )]
    NotDurable {
        url: DatabaseUrl,
        setting: &'static str,
        value: String,
    },
    /// The database was migrated by a newer warden.
    #[error(
        "{url}: the {component} tables are at version {found}, newer than this warden knows \
         ({known}): a newer warden wrote this database"
    )]
    TooNew {
        url: DatabaseUrl,
        component: &'static str,
        found: i32,
        known: i32,
    },
    /// The server could not be reached or refused a statement.
    #[error("{url}: {action}")]
    Database {
        url: DatabaseUrl,
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The store's own runtime could not be started or has stopped.
    #[error("the PostgreSQL client runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A connection pool to one PostgreSQL database, with the runtime that drives it. Cheap to
/// clone (shared); the runtime stops when the last clone (and every store made from it) is
/// dropped.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Some` until dropped; shut down in the background so that dropping the last handle on an
    /// async thread does not panic.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    config: tokio_postgres::Config,
    /// What every connection is made with (the pool's too).
    tls: tls::Connector,
    /// What the connection made at connect negotiated: the TLS version, `None` in the clear.
    session: OnceLock<Option<String>>,
    /// Whether TLS was asked for (not `sslmode=disable`): in the clear, it was refused.
    wants_tls: bool,
    url: DatabaseUrl,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

/// The parts of a URL: the redacted form for messages, the driver's config (its `sslmode`
/// set from ours) and the TLS settings.
fn parse_url(
    url: &str,
) -> Result<(DatabaseUrl, tokio_postgres::Config, tls::TlsSettings), PgError> {
    let shown = DatabaseUrl::parse(url).map_err(PgError::Url)?;
    // tokio-postgres knows no verify-* and no file parameters: they are taken out first.
    let (driver_url, mut tls) = tls::split_url(url)?;
    let mut config = tokio_postgres::Config::from_str(&driver_url)
        // Its messages name the option, never the value.
        .map_err(|e| PgError::Url(e.to_string()))?;
    tls.default_for(&config);
    config.ssl_mode(tls.mode);
    let options = format!(
        "{} -c statement_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim_start());
    if config.get_application_name().is_none() {
        config.application_name("warden");
    }
    config.connect_timeout(POOL_TIMEOUT);
    Ok((shown, config, tls))
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`): starts the runtime
    /// and the pool (at most [`POOL_SIZE`] connections, 2 s to get or make one), checks that the
    /// server makes acknowledged writes durable, and applies the missing migrations (under an
    /// advisory lock, so runners starting together are safe). A database migrated by a newer
    /// warden is refused.
    ///
    /// The URL's TLS files are read here, once; a failed TLS handshake is [`PgError::Tls`].
    pub fn connect(url: &str) -> Result<PgStore, PgError> {
        let (shown, config, settings) = parse_url(url)?;
        let connector = settings.connector()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("warden-pg")
            .enable_all()
            .build()
            .map_err(PgError::Runtime)?;
        let manager = Manager::from_config(
            config.clone(),
            connector.clone(),
            ManagerConfig {
                // A closed connection is dropped when it comes back; a live one is reused
                // without a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Database {
                url: shown.clone(),
                action: "creating the connection pool",
                source: Box::new(e),
            })?;
        let store = PgStore {
            inner: Arc::new(Inner {
                runtime: Some(runtime),
                pool,
                config,
                tls: connector,
                session: OnceLock::new(),
                wants_tls: settings.mode != tokio_postgres::config::SslMode::Disable,
                url: shown,
            }),
        };
        let s = store.clone();
        store
            .run(async move { schema::prepare(&s).await })?
            .map_err(|e| store.explain_tls(e, &settings))?;
        tls::log_session(&store.inner.url, &settings, store.tls_version());
        Ok(store)
    }

    /// A connection error that is a TLS failure, as [`PgError::Tls`].
    fn explain_tls(&self, e: PgError, settings: &tls::TlsSettings) -> PgError {
        let PgError::Database { source, .. } = &e else {
            return e;
        };
        match tls::failure(source.as_ref(), settings, &tls::hosts(&self.inner.config)) {
            Some((host, reason)) => PgError::Tls {
                url: self.inner.url.clone(),
                host,
                reason,
            },
            None => e,
        }
    }

    /// The TLS version the connection made at [`PgStore::connect`] negotiated (`TLSv1.3`), its
    /// certificate and host name verified; `None` when it is in the clear (`sslmode=disable`,
    /// or `prefer` with a server that offers no TLS). Every later connection is made with the
    /// same settings.
    pub fn tls_version(&self) -> Option<&str> {
        self.inner.session.get().and_then(|v| v.as_deref())
    }

    /// A warning for whoever started this store, if it is in the clear although the URL did
    /// not say `sslmode=disable` (`prefer` with a server that offers no TLS, or an attacker
    /// on the path answering for it). Commands print it; the service logs it at start.
    pub fn clear_text_warning(&self) -> Option<String> {
        (self.inner.wants_tls && self.tls_version().is_none()).then(|| {
            format!(
                "{}: connected in the clear: the server offered no TLS (sslmode=prefer); \
                 sslmode=verify-full refuses that",
                self.inner.url
            )
        })
    }

    pub(crate) fn set_session(&self, version: Option<String>) {
        let _ = self.inner.session.set(version);
    }

    pub(crate) fn tls(&self) -> &tls::Connector {
        &self.inner.tls
    }

    /// The URL with its password replaced: names the store in messages.
    pub fn location(&self) -> String {
        self.inner.url.to_string()
    }

    pub(crate) fn url(&self) -> &DatabaseUrl {
        &self.inner.url
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A connection of its own, outside the pool (a session-level lock, a long read): it closes
    /// when the client is dropped, which ends whatever it held.
    pub(crate) async fn dedicated(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.inner.config.connect(self.inner.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target: "warden::pg", error = %e, "dedicated connection ended");
            }
        });
        Ok(client)
    }

    /// Runs `fut` on the store's runtime and waits for its answer on a std channel (see the
    /// crate docs). `Err` only if the runtime is gone.
    pub(crate) fn run<T, F>(&self, fut: F) -> Result<T, PgError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        // On one of the store's own threads this would wait for itself.
        debug_assert!(
            !std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("warden-pg")),
            "PgStore::run called on its own runtime"
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .inner
            .runtime
            .as_ref()
            .ok_or_else(|| PgError::Runtime(std::io::Error::other("stopped")))?;
        rt.spawn(async move {
            // The caller may have gone (it cannot, it waits; but never panic here).
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| PgError::Runtime(std::io::Error::other("the task was dropped")))
    }

    /// The key-value backend.
    pub fn kv(&self) -> PgKv {
        PgKv::new(self.clone())
    }

    /// The registry, every call a query: for the CLI and tools, which call it rarely.
    pub fn registry(&self) -> PgRegistry {
        PgRegistry::new(self.clone())
    }

    /// The registry for the service: `tenant_by_key` and `install` (called on every request)
    /// answer from a snapshot in memory, kept current by a listener on this store's runtime
    /// from the changes every runner announces, and refuse (`RegistryError::Storage`, 503) when
    /// it has not been confirmed current for 1 s; every other call queries. Loads the snapshot
    /// before returning. Clones share the snapshot and its listener, which stops when the last
    /// clone is dropped.
    pub fn registry_cached(&self) -> Result<PgRegistry, PgError> {
        let cache = self.start_cache()?;
        Ok(PgRegistry::cached(self.clone(), cache))
    }

    /// The shared request-rate buckets (`RateLeases`), one per tenant for the whole fleet.
    pub fn rate_leases(&self) -> PgRateLeases {
        PgRateLeases::new(self.clone())
    }

    /// The fleet's trust bundle (`SharedTrust`).
    pub fn shared_trust(&self) -> PgSharedTrust {
        PgSharedTrust::new(self.clone())
    }

    /// The read side of the audit log.
    pub fn audit_source(&self) -> PgAuditSource {
        PgAuditSource::new(self.clone())
    }

    /// A round store for a `warden_audit::StoreLog`, under `key` (the same key on every runner):
    /// creates the genesis head if the log is new, and refuses a head whose MAC `key` does not
    /// check.
    pub fn round_store(
        &self,
        key: Option<Arc<warden_audit::AuditKey>>,
    ) -> Result<PgRoundStore, warden_audit::AuditError> {
        PgRoundStore::open(self.clone(), key)
    }

    /// The sealed secret rows (give them to `warden_secrets::SecretStore`).
    pub fn secret_rows(&self) -> PgSecretRows {
        PgSecretRows::new(self.clone())
    }
}

/// Storage errors are boxed with the driver's chain; pool errors too.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_gets_our_sslmode_and_none_of_our_parameters() {
        use tokio_postgres::config::SslMode;
        for (mode, want) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let url = format!("postgres://u:s3cret@db.example/w?sslmode={mode}&application_name=x");
            let (shown, c, _) = parse_url(&url).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.get_ssl_mode(), want, "{mode}");
            assert_eq!(c.get_application_name(), Some("x"));
            assert!(!shown.to_string().contains("s3cret"));
        }
        // No sslmode: prefer on this machine, verify-full for any other host.
        for (url, want) in [
            ("postgres://u@127.0.0.1/w", SslMode::Prefer),
            ("postgres://u@localhost/w", SslMode::Prefer),
            ("postgres://u@[::1]/w", SslMode::Prefer),
            ("postgres://u@%2Frun%2Fpostgresql/w", SslMode::Prefer),
            ("postgres://u@db.example/w", SslMode::Require),
            ("postgres://u@10.0.0.5/w", SslMode::Require),
            ("postgres://u@127.0.0.1,db.example/w", SslMode::Require),
            (
                "postgres://u@127.0.0.1/w?sslrootcert=system",
                SslMode::Require,
            ),
            ("postgres://u@db.example/w?sslmode=prefer", SslMode::Prefer),
        ] {
            let (_, c, _) = parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(c.get_ssl_mode(), want, "{url}");
        }
        let (_, c, s) = parse_url(
            "postgres://u@127.0.0.1/w?sslmode=verify-full&sslrootcert=/ca.pem&user=other",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.get_user(), Some("other"));
        assert_eq!(s.roots, tls::Roots::File("/ca.pem".into()));
    }

    #[test]
    fn bad_urls_never_quote_the_password() {
        for url in [
            "postgres://u:s3cret@127.0.0.1/w?port=notaport",
            "mysql://u:s3cret@127.0.0.1/w",
            "postgres://u:s3cret@127.0.0.1/w?nosuch=1",
            "postgres://u:s3cret@127.0.0.1/w?sslmode=verify-full&sslcompression=1",
            "postgres://u:s3cret@127.0.0.1/w?sslrootcert=/x&sslmode",
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn timeouts_are_set_on_every_connection() {
        let (shown, c, _) = parse_url("postgres://u:pw@127.0.0.1/w?options=-c%20work_mem=4MB")
            .unwrap_or_else(|e| panic!("{e}"));
        let o = c.get_options().unwrap_or_default();
        assert!(o.contains("statement_timeout=5000"), "{o}");
        assert!(
            o.contains("idle_in_transaction_session_timeout=10000"),
            "{o}"
        );
        assert!(o.contains("work_mem=4MB"), "{o}");
        assert!(!format!("{shown:?}").contains("pw"));
    }
}
