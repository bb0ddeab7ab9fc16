//! The operator config (`--config FILE`) of every command that keeps state: its `[policy]`,
//! and the storage its `[storage]` names: absent, the embedded default in `--data` (which the
//! host builder makes itself); with `url`, PostgreSQL and S3-compatible blobs shared by a
//! fleet of runners. `--data` then holds only what each runner keeps for itself: the compile
//! cache, a verified copy of the blobs, unpacked process code.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use warden_audit::{AuditKey, AuditSink, AuditSource, FileAuditSource, StoreLog};
use warden_host::Storage as HostStorage;
use warden_manifest::{Config, SharedStorage, Storage};
use warden_registry::RateLeases;
use warden_store_pg::PgStore;

use crate::files::read_bounded;

/// The config in `path`, or the default one.
pub fn read_config(path: Option<&Path>) -> Result<Config> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let bytes = read_bounded(path, warden_manifest::strict::MAX_DOCUMENT_BYTES as u64)?;
    let text =
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    Config::parse(&text).with_context(|| format!("in {}", path.display()))
}

/// What a command's host works on.
pub struct Opened {
    /// For [`warden_host::HostBuilder::storage`]; `None` for the embedded default.
    pub storage: Option<HostStorage>,
    /// The tenants' shared rate buckets (`warden serve`); `None`: kept in the process.
    pub rate: Option<Arc<dyn RateLeases>>,
    /// The fleet's trust bundle (`warden serve`); `None`: the runner's `--trust` file alone.
    pub trust: Option<Arc<dyn warden_registry::SharedTrust>>,
}

impl Opened {
    /// `builder` on this storage and the data dir.
    pub fn apply(
        self,
        builder: warden_host::HostBuilder,
        data: &Path,
        audit_key: Option<&Path>,
    ) -> warden_host::HostBuilder {
        let mut b = builder.data_dir(data);
        match self.storage {
            Some(s) => b = b.storage(s),
            None => {
                if let Some(key) = audit_key {
                    b = b.audit_key_file(key);
                }
            }
        }
        b
    }
}

/// Who opens the storage: a command that makes one change, or a runner of the service (whose
/// gateway looks up a key and an install on every request: answered from a copy in memory that
/// the database's notices keep current, and whose tenants' rates are buckets every runner
/// shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Command,
    Service,
}

/// Opens the storage `config` names for a command on data dir `data`.
pub fn open(config: &Config, data: &Path, audit_key: Option<&Path>, use_: Use) -> Result<Opened> {
    let Storage::Shared(shared) = &config.storage else {
        return Ok(Opened {
            storage: None,
            rate: None,
            trust: None,
        });
    };
    no_second_key(shared, audit_key)?;
    let pg = connect(shared)?;
    // The service's log says it (JSON on stderr); a command says it here.
    if use_ == Use::Command {
        warn_if_clear(&pg);
    }
    let audit = shared_log(&pg, shared)?;
    let secret_key =
        warden_secrets::SecretKey::load(&shared.secret_key_file).with_context(|| {
            format!(
                "reading the secret key {} ([storage] secret_key_file)",
                shared.secret_key_file.display()
            )
        })?;
    warden_datadir::private_dir(data)
        .with_context(|| format!("preparing the data dir {}", data.display()))?;
    let blobs = warden_store_s3::S3Blobs::open(&shared.blobs, data)
        .with_context(|| format!("opening the blobs in {}", shared.blobs))?;
    let secrets = warden_secrets::SecretStore::new(Arc::new(pg.secret_rows()), &secret_key)
        .with_context(|| format!("opening the secrets in {}", pg.location()))?;
    let registry: Arc<dyn warden_registry::Registry> = match use_ {
        Use::Command => Arc::new(pg.registry()),
        Use::Service => Arc::new(
            pg.registry_cached()
                .with_context(|| format!("loading the registry from {}", pg.location()))?,
        ),
    };
    let rate: Option<Arc<dyn RateLeases>> =
        (use_ == Use::Service).then(|| Arc::new(pg.rate_leases()) as Arc<dyn RateLeases>);
    let trust: Option<Arc<dyn warden_registry::SharedTrust>> = (use_ == Use::Service)
        .then(|| Arc::new(pg.shared_trust()) as Arc<dyn warden_registry::SharedTrust>);
    Ok(Opened {
        storage: Some(HostStorage {
            registry: Some((registry, Arc::new(blobs))),
            kv: Arc::new(pg.kv()),
            secrets,
            audit: Arc::new(audit),
            audit_source: Some(Arc::new(pg.audit_source())),
            local_files: if shared.local_files {
                warden_host::LocalFiles::PerRunner
            } else {
                warden_host::LocalFiles::Refused
            },
        }),
        rate,
        trust,
    })
}

/// The shared audit log, for a command that only writes a record (`warden verify`); `None`
/// for the embedded default.
pub fn shared_audit_sink(config: &Config) -> Result<Option<Arc<dyn AuditSink>>> {
    match &config.storage {
        Storage::Embedded => Ok(None),
        Storage::Shared(shared) => {
            let pg = connect(shared)?;
            warn_if_clear(&pg);
            Ok(Some(Arc::new(shared_log(&pg, shared)?)))
        }
    }
}

/// The one audit chain of the fleet, under the fleet's key.
fn shared_log(pg: &PgStore, shared: &SharedStorage) -> Result<StoreLog> {
    let key = AuditKey::load(&shared.audit_key_file).with_context(|| {
        format!(
            "reading the audit key {} ([storage] audit_key_file)",
            shared.audit_key_file.display()
        )
    })?;
    let rounds = pg
        .round_store(Some(Arc::new(key)))
        .with_context(|| format!("opening the audit log in {}", pg.location()))?;
    StoreLog::new(Box::new(rounds))
        .with_context(|| format!("opening the audit log in {}", pg.location()))
}

/// The registry alone, for a command that only reads it (`warden installs`): no audit log is
/// opened, so no lock of the log's is taken or waited for (a listing must not wait on a
/// stopped writer of the log, nor hold up one).
pub fn registry(config: &Config, data: &Path) -> Result<Arc<dyn warden_registry::Registry>> {
    match &config.storage {
        Storage::Embedded => {
            warden_datadir::private_dir(data)
                .with_context(|| format!("preparing the data dir {}", data.display()))?;
            let registry = warden_store_sqlite::open_registry(data)
                .with_context(|| format!("opening the registry in {}", data.display()))?;
            Ok(Arc::new(registry))
        }
        Storage::Shared(shared) => {
            let pg = connect(shared)?;
            warn_if_clear(&pg);
            Ok(Arc::new(pg.registry()))
        }
    }
}

/// Where `warden audit` reads the log: the files in `--data`, or the shared database.
pub fn audit_source(config: &Config, data: &Path) -> Result<Arc<dyn AuditSource>> {
    match &config.storage {
        Storage::Embedded => Ok(Arc::new(FileAuditSource::in_data_dir(data))),
        Storage::Shared(shared) => {
            let pg = connect(shared)?;
            warn_if_clear(&pg);
            Ok(Arc::new(pg.audit_source()))
        }
    }
}

/// The audit key file of shared storage, if it is shared.
pub fn shared_audit_key(config: &Config) -> Option<&Path> {
    match &config.storage {
        Storage::Shared(s) => Some(&s.audit_key_file),
        Storage::Embedded => None,
    }
}

fn connect(shared: &SharedStorage) -> Result<PgStore> {
    PgStore::connect(shared.database.expose())
        .with_context(|| format!("connecting to {}", shared.database))
}

/// A connection that fell back to the clear is said on stderr by every command (the service's
/// log says it at start).
pub fn warn_if_clear(pg: &PgStore) {
    if let Some(w) = pg.clear_text_warning() {
        eprintln!("warning: {w}");
    }
}

/// One audit key per fleet, in the config: a second one on the command line could only
/// disagree with it.
fn no_second_key(shared: &SharedStorage, audit_key: Option<&Path>) -> Result<()> {
    match audit_key {
        Some(k) if k != shared.audit_key_file => bail!(
            "--audit-key {} and [storage] audit_key_file {} disagree; shared storage takes its key from [storage]",
            k.display(),
            shared.audit_key_file.display()
        ),
        _ => Ok(()),
    }
}
