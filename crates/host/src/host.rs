//! [`Host`] and its shared state: what a host holds, not what it does (see `tenant`, `load`,
//! `call` and `audit`).
//!
//! Everything an extension keeps is per (tenant, extension). `Host::tenant(&TenantName)` returns a
//! `Tenant` view whose `load_file`/`load`/`call`/`call_http` act for that tenant;
//! `Host::default_tenant()` is the tenant `default` (what `warden run` uses). Loads are keyed by
//! (tenant, extension id): two tenants may load the same extension with different grants, and a
//! call, an invoke or a capability of one tenant never resolves to another's install. Tenant names
//! are single `[a-z0-9-]` labels (they name folders). Every audit record of a call carries its tenant.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use warden_audit::AuditSink;
use warden_bundle::{BundleLimits, ContentHash};
use warden_kv::{KvBackend, Quota};
use warden_manifest::{ExtensionId, Policy, TenantName};
use warden_runtime::{Prepared, Resolver, Runtime};
use warden_trust::TrustBundle;

use crate::authorize::Authorizer;
use crate::ids::RequestIds;
use crate::installed::Loaded;

/// Loads verified bundles and calls them. Cheap to clone (one shared state); all methods
/// take `&self`.
///
/// Extensions are loaded per tenant ([`Host::tenant`]): each (tenant, extension) has its own
/// grant, files, key-value data and secrets ([`Host::default_tenant`] is the tenant named
/// `default`).
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) trust: TrustBundle,
    pub(crate) policy: Policy,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) bundle_limits: BundleLimits,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// `default`, made once (`warden run` uses it on every call).
    pub(crate) default_tenant: TenantName,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) secrets: Arc<crate::secrets::HostSecrets>,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) kv_quota: Quota,
    /// Loaded extensions, by tenant then id (nested so a lookup needs no owned key).
    pub(crate) extensions: RwLock<HashMap<TenantName, HashMap<ExtensionId, Arc<Loaded>>>>,
    /// Compiled, pre-linked components by content hash: the same bytes are prepared once.
    pub(crate) prepared: RwLock<HashMap<ContentHash, Arc<Prepared>>>,
    pub(crate) ids: RequestIds,
    /// Set when an audit record could not be stored: calls are refused until one can (see
    /// [`Inner::audit_gate`]). An atomic so the check on every call costs one load.
    pub(crate) audit_failed: AtomicBool,
    /// Why the last audit record could not be stored, for the refusals.
    pub(crate) audit_failure: Mutex<Option<Arc<warden_audit::AuditError>>>,
}

impl Host {
    pub fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit
    }
}

impl Inner {
    pub(crate) fn get(&self, tenant: &TenantName, id: &ExtensionId) -> Option<Arc<Loaded>> {
        self.extensions.read().ok()?.get(tenant)?.get(id).cloned()
    }
}
