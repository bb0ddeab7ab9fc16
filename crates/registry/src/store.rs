//! The storage traits of the service's registry and blobs, and the records they hold.

use std::time::SystemTime;

use warden_bundle::ContentHash;
use warden_manifest::{ExtensionId, Grant, PublisherName, TenantName};

use crate::approval::Approval;
use crate::key::KeyHash;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub name: TenantName,
    pub created: SystemTime,
}

/// A published bundle: its bytes are in the [`BlobStore`] under `content_hash`; `signature`
/// is its DSSE envelope as published (verified again at every install and load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub content_hash: ContentHash,
    pub id: ExtensionId,
    pub version: semver::Version,
    pub publisher: PublisherName,
    pub signature: Vec<u8>,
    pub published: SystemTime,
}

/// One tenant's install of one extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRecord {
    pub tenant: TenantName,
    pub extension: ExtensionId,
    pub version: semver::Version,
    pub content_hash: ContentHash,
    /// The operator's grant.
    pub grant: Grant,
    /// What the installed manifest requested when the operator approved it.
    pub approved: Approval,
    pub installed: SystemTime,
}

/// The first publisher of an extension id, which keeps it (see
/// [`crate::RegistryError::PublisherPinned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub id: ExtensionId,
    pub publisher: PublisherName,
    pub pinned: SystemTime,
}

/// A registry's whole content, every list in a fixed order so that two images of the same
/// content are equal: tenants by name, keys by hash, pins by id, publications by content
/// hash, installs by tenant then extension. Times are kept to the millisecond (what every
/// storage keeps).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryImage {
    pub tenants: Vec<TenantRecord>,
    /// Each API key's hash and its tenant.
    pub keys: Vec<(KeyHash, TenantName)>,
    pub pins: Vec<Pin>,
    pub published: Vec<Published>,
    pub installs: Vec<InstallRecord>,
}

impl RegistryImage {
    /// Puts every list in the order [`RegistryImage`] documents.
    pub fn sort(&mut self) {
        self.tenants.sort_by(|a, b| a.name.cmp(&b.name));
        self.keys.sort_by_key(|(k, _)| k.to_hex());
        self.pins.sort_by(|a, b| a.id.cmp(&b.id));
        self.published.sort_by_key(|p| p.content_hash.to_string());
        self.installs
            .sort_by(|a, b| (&a.tenant, &a.extension).cmp(&(&b.tenant, &b.extension)));
    }

    /// Rows per table, named as both storages name them.
    pub fn counts(&self) -> [(&'static str, usize); 5] {
        [
            ("registry_tenants", self.tenants.len()),
            ("registry_keys", self.keys.len()),
            ("registry_publishers", self.pins.len()),
            ("registry_published", self.published.len()),
            ("registry_installs", self.installs.len()),
        ]
    }
}

/// Why the registry could not answer. Keeps the backend's cause.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("tenant {0} already exists")]
    TenantExists(TenantName),
    #[error("no tenant {0}")]
    NoTenant(TenantName),
    /// The install changed since it was read (another install of it ran at the same time):
    /// nothing was written.
    #[error("the install of {extension} for tenant {tenant} changed at the same time; try again")]
    Changed {
        tenant: TenantName,
        extension: ExtensionId,
    },
    /// Another bundle is published under the same extension id and version: a version names
    /// one content for ever (installs and upgrades compare versions).
    #[error(
        "{id} {version} is already published with other content ({existing}); publish it under a new version"
    )]
    VersionTaken {
        id: ExtensionId,
        version: String,
        existing: ContentHash,
    },
    /// The extension id was first published by another publisher, and stays theirs: a
    /// publisher the operator trusts for its own extensions cannot take over another's id.
    #[error(
        "{id} was first published by {pinned} and stays pinned to it; {publisher} cannot publish it. \
         Publish under an id of {publisher}'s own; to hand {id} over, the operator uninstalls it \
         from every tenant and removes its pin (the row of {id} in table registry_publishers of \
         DATA/warden.db)"
    )]
    PublisherPinned {
        id: ExtensionId,
        pinned: String,
        publisher: PublisherName,
    },
    /// Stored data that does not parse: written by something else, or damaged.
    #[error("the registry holds a damaged row: {0}")]
    Damaged(String),
    #[error("registry storage {location}")]
    Storage {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Tenants, publications and installs. Every method is one transaction: two processes on the
/// same storage never see half a change.
pub trait Registry: Send + Sync {
    /// Creates a tenant with the hash of its first API key.
    fn create_tenant(&self, name: &TenantName, key: &KeyHash) -> Result<(), RegistryError>;
    fn tenant(&self, name: &TenantName) -> Result<Option<TenantRecord>, RegistryError>;
    fn tenants(&self) -> Result<Vec<TenantRecord>, RegistryError>;
    /// The tenant whose key hashes to `key`, if any.
    fn tenant_by_key(&self, key: &KeyHash) -> Result<Option<TenantName>, RegistryError>;

    /// Records a publication (idempotent for the same content hash); fails with
    /// [`RegistryError::VersionTaken`] when another content has the same id and version, and
    /// with [`RegistryError::PublisherPinned`] when the id was first published by another
    /// publisher (the first publication of an id pins it to its publisher, in the same
    /// transaction).
    fn publish(&self, p: &Published) -> Result<(), RegistryError>;
    fn published(&self, hash: &ContentHash) -> Result<Option<Published>, RegistryError>;

    /// Writes `install` if the tenant's install of that extension is still `expected` (its
    /// content hash, `None`: not installed), in one transaction; otherwise writes nothing and
    /// fails with [`RegistryError::Changed`]. So an install decided on what it read (no
    /// rollback, no permission growth) cannot be overtaken by another running at once. Fails
    /// with [`RegistryError::NoTenant`] for a tenant that does not exist.
    fn put_install(
        &self,
        install: &InstallRecord,
        expected: Option<&ContentHash>,
    ) -> Result<(), RegistryError>;
    fn install(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Option<InstallRecord>, RegistryError>;
    /// Installs of `tenant`, or of every tenant; by tenant, then extension.
    fn installs(&self, tenant: Option<&TenantName>) -> Result<Vec<InstallRecord>, RegistryError>;
    /// Removes the install; `false` if there was none.
    fn remove_install(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<bool, RegistryError>;

    /// Everything the registry holds, read in one transaction, in the order
    /// [`RegistryImage`] documents.
    fn image(&self) -> Result<RegistryImage, RegistryError>;

    /// The refusal [`Registry::publish`] would give `p` now (its id and version name other
    /// content, or its id is pinned to another publisher), without writing anything: a
    /// publish asks first, before its costly work (a compile of 10-20 s for a big component).
    /// `publish` still decides, in its transaction. The default reads [`Registry::image`].
    fn publish_refusal(&self, p: &Published) -> Result<Option<RegistryError>, RegistryError> {
        let image = self.image()?;
        if let Some(pin) = image.pins.iter().find(|pin| pin.id == p.id)
            && pin.publisher != p.publisher
        {
            return Ok(Some(RegistryError::PublisherPinned {
                id: p.id.clone(),
                pinned: pin.publisher.to_string(),
                publisher: p.publisher.clone(),
            }));
        }
        Ok(image
            .published
            .iter()
            .find(|o| o.id == p.id && o.version == p.version && o.content_hash != p.content_hash)
            .map(|o| RegistryError::VersionTaken {
                id: p.id.clone(),
                version: p.version.to_string(),
                existing: o.content_hash,
            }))
    }
}

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The stored bytes do not hash to their name: damaged or replaced. Never served.
    #[error("blob {expected} is damaged: its bytes hash to {found}")]
    Corrupt {
        expected: ContentHash,
        found: ContentHash,
    },
    #[error("blob storage {location}")]
    Storage {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Content-addressed bytes: stored under their SHA-256, checked against it when read.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` (durably, before returning) and returns their hash.
    fn put(&self, bytes: &[u8]) -> Result<ContentHash, BlobError>;
    /// The bytes stored under `hash`, after checking they still hash to it.
    fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, BlobError>;
}
