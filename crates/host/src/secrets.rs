//! Secrets per (tenant, extension): stored encrypted by the host's storage (see
//! `warden-secrets`), plus transient values that live only as
//! long as the host (`warden run --secret`). Each install gets a [`SecretSource`] bound to its
//! own (tenant, extension) and its effective grant; the runtime enforces the grant.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use warden_manifest::{ExtensionId, SecretName, TenantName};
use warden_runtime::{SecretAccess, SecretSource};
use warden_secrets::{SecretStore, SecretValue};

type Key = (TenantName, ExtensionId, SecretName);

pub(crate) struct HostSecrets {
    pub(crate) store: SecretStore,
    /// Shadow stored values; never written anywhere.
    pub(crate) transient: RwLock<HashMap<Key, SecretValue>>,
}

impl HostSecrets {
    pub(crate) fn new(store: SecretStore) -> Self {
        HostSecrets {
            store,
            transient: RwLock::default(),
        }
    }

    /// What an install may read: `None` (every `get` denied) when nothing is granted.
    pub(crate) fn access(
        self: &Arc<Self>,
        tenant: &TenantName,
        extension: &ExtensionId,
        granted: &[SecretName],
    ) -> Option<SecretAccess> {
        if granted.is_empty() {
            return None;
        }
        Some(SecretAccess {
            granted: granted.into(),
            source: Arc::new(InstallSecrets {
                secrets: Arc::clone(self),
                tenant: tenant.clone(),
                extension: extension.clone(),
            }),
        })
    }
}

/// One install's secrets: it can only name secrets of its own (tenant, extension).
struct InstallSecrets {
    secrets: Arc<HostSecrets>,
    tenant: TenantName,
    extension: ExtensionId,
}

impl SecretSource for InstallSecrets {
    fn get(&self, name: &SecretName) -> Result<Option<SecretValue>, String> {
        let key = (self.tenant.clone(), self.extension.clone(), name.clone());
        if let Some(v) = self
            .secrets
            .transient
            .read()
            .map_err(|_| "secret table poisoned".to_string())?
            .get(&key)
        {
            return Ok(Some(v.clone()));
        }
        // SecretError names the secret, never its value.
        self.secrets
            .store
            .get(&self.tenant, &self.extension, name)
            .map_err(|e| e.to_string())
    }
}
