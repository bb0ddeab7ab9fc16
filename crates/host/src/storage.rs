//! [`Storage`]: everything a host keeps that must outlive it, behind the storage traits, so
//! that the host never names a backend. The embedded default ([`Storage::embedded`]: SQLite and
//! files in the data dir) is built here; other backends (shared storage for a fleet of runners)
//! are built by whoever embeds the host and handed to [`crate::HostBuilder::storage`].
//!
//! What stays local to each host, whatever the storage: the compile cache (`DATA/cache`), the
//! unpacked code of process extensions, the folders of file-system mounts.

use std::path::Path;
use std::sync::Arc;

use warden_audit::{
    AuditLog, AuditSink, AuditSource, Event, FileAuditSource, MemoryAudit, Outcome, Record,
};
use warden_kv::{KvBackend, MemoryKv};
use warden_registry::{BlobStore, Registry};
use warden_secrets::SecretStore;

use crate::error::HostError;

/// The stores of one host.
pub struct Storage {
    /// Tenants, publications and installs, with the bundles' bytes: `None` for a host that
    /// only loads files (no admin, no installs).
    pub registry: Option<(Arc<dyn Registry>, Arc<dyn BlobStore>)>,
    pub kv: Arc<dyn KvBackend>,
    /// Secrets, sealed before they reach their rows.
    pub secrets: SecretStore,
    /// Where audit records go; calls wait until theirs is stored.
    pub audit: Arc<dyn AuditSink>,
    /// Where they are read back (listing, verifying): none for records kept in memory.
    pub audit_source: Option<Arc<dyn AuditSource>>,
    /// What this host keeps only in its own data dir: for storage shared by several runners,
    /// [`LocalFiles::Refused`] refuses installs with folder mounts (their files would differ
    /// from runner to runner).
    pub local_files: LocalFiles,
}

/// Whether installs may keep folders in this host's data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFiles {
    /// One host per storage (the embedded default): its data dir is the storage.
    Allowed,
    /// Several runners share the storage, and the operator accepts per-runner folders.
    PerRunner,
    /// Several runners share the storage: installs with folder mounts are refused.
    Refused,
}

impl Storage {
    /// The embedded default in data dir `dir`: the audit log in `DATA/audit` (its head's MAC
    /// under `audit_key`, default `DATA/audit.key`, created on first use), the registry, kv
    /// and secrets in `DATA/warden.db` (secrets under `DATA/secret.key`), blobs in
    /// `DATA/blobs`. The log opens first: a store that then fails to open leaves a record of
    /// why.
    pub fn embedded(dir: &Path, audit_key: Option<&Path>) -> Result<Storage, HostError> {
        Storage::embedded_with(dir, Arc::new(AuditLog::open_in(dir, audit_key)?))
    }

    /// The embedded default with records going to `audit`.
    pub(crate) fn embedded_with(
        dir: &Path,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Storage, HostError> {
        let rest = (|| -> Result<_, HostError> {
            let registry: Arc<dyn Registry> = Arc::new(warden_store_sqlite::open_registry(dir)?);
            let blobs: Arc<dyn BlobStore> = Arc::new(warden_store_sqlite::FileBlobs::open(dir)?);
            let kv: Arc<dyn KvBackend> = Arc::new(warden_store_sqlite::open_kv(dir)?);
            let secrets = warden_store_sqlite::open_secrets(dir)?;
            Ok((registry, blobs, kv, secrets))
        })();
        match rest {
            Ok((registry, blobs, kv, secrets)) => Ok(Storage {
                registry: Some((registry, blobs)),
                kv,
                secrets,
                audit,
                audit_source: Some(Arc::new(FileAuditSource::in_data_dir(dir))),
                local_files: LocalFiles::Allowed,
            }),
            Err(e) => Err(start_failed(&audit, e)),
        }
    }

    /// Nothing kept: records, kv and secrets in memory (secrets under a random key), no
    /// registry.
    pub fn memory() -> Result<Storage, HostError> {
        Ok(Storage {
            registry: None,
            kv: Arc::new(MemoryKv::new()),
            secrets: SecretStore::in_memory()?,
            audit: Arc::new(MemoryAudit::default()),
            audit_source: None,
            local_files: LocalFiles::Allowed,
        })
    }
}

/// Records why a host could not start in its (open) log and returns the error. If even that
/// record cannot be stored, the start error is still what is returned.
pub(crate) fn start_failed(audit: &Arc<dyn AuditSink>, e: HostError) -> HostError {
    let _ = audit.append(
        Record::new(Event::Start, "")
            .with_outcome(Outcome::Error)
            .with_error(&e),
    );
    e
}
