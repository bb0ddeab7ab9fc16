//! What one install may use: its key-value store (tenant, extension) on the host's backend,
//! and its quota. The tenant and extension are fixed by the host at load; a bucket name from
//! the guest only ever completes a [`Scope`] made here.

use std::fmt;
use std::sync::Arc;

use crate::{BucketName, ExtensionId, KvBackend, Quota, Scope, TenantName};

/// The key-value grant of one install: which store (tenant, extension) and its quota.
#[derive(Clone)]
pub struct KvAccess {
    backend: Arc<dyn KvBackend>,
    tenant: TenantName,
    extension: ExtensionId,
    quota: Quota,
}

impl KvAccess {
    pub fn new(
        backend: Arc<dyn KvBackend>,
        tenant: TenantName,
        extension: ExtensionId,
        quota: Quota,
    ) -> KvAccess {
        KvAccess {
            backend,
            tenant,
            extension,
            quota,
        }
    }

    pub fn backend(&self) -> &dyn KvBackend {
        self.backend.as_ref()
    }

    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The scope of `bucket` in this install's store.
    pub fn scope(&self, bucket: BucketName) -> Scope {
        Scope::new(self.tenant.clone(), self.extension.clone(), bucket)
    }
}

impl fmt::Debug for KvAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvAccess")
            .field("tenant", &self.tenant)
            .field("extension", &self.extension)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}
