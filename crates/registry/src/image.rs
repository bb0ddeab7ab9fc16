//! [`RegistryImage`]: everything a registry holds, as plain records, for copying it whole from
//! one storage to another (`warden migrate`) and comparing the copy with its source.

use std::time::SystemTime;

use warden_manifest::{ExtensionId, PublisherName, TenantName};

use crate::key::KeyHash;
use crate::store::{InstallRecord, Published, TenantRecord};

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
