//! [`Host`], its shared state, and the [`Tenant`] view: what a host holds, not what it does
//! (see `load`, `call` and `audit`).
//!
//! Everything an extension keeps is per (tenant, extension). `Host::tenant(&TenantName)` returns a
//! `Tenant` view whose `load_file`/`load`/`call`/`call_http` act for that tenant; the shorthand
//! methods on `Host` act for the tenant `default` (what `warden run` uses). Loads are keyed by
//! (tenant, extension id): two tenants may load the same extension with different grants, and a
//! call, an invoke or a capability of one tenant never resolves to another's install. Tenant names
//! are single `[a-z0-9-]` labels (they name folders). Every audit record of a call carries its tenant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use warden_audit::AuditSink;
use warden_bundle::{Bundle, Caps, ContentHash};
use warden_kv::{KvBackend, Quota};
use warden_manifest::{ExtensionId, Grant, Policy, TenantName};
use warden_runtime::{Prepared, Resolver, Runtime};
use warden_trust::{TrustBundle, Verified};

use crate::authorize::Authorizer;
use crate::builder::HostBuilder;
use crate::error::{CallFailure, Called, HostError};
use crate::ids::RequestIds;
use crate::load::{ExtensionInfo, Loaded};

/// Loads verified bundles and calls them. Cheap to clone (one shared state); all methods
/// take `&self`.
///
/// Extensions are loaded per tenant ([`Host::tenant`]): each (tenant, extension) has its own
/// grant, files, key-value data and secrets. The shorthand methods on `Host` act for the
/// tenant named `default`.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) trust: TrustBundle,
    pub(crate) policy: Policy,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) caps: Caps,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// `default`, made once (the shorthand methods use it on every call).
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
    pub(crate) audit_failure: Mutex<String>,
}

/// One tenant's view of a [`Host`]: what it loads and calls is its own.
pub struct Tenant<'h> {
    pub(crate) inner: &'h Arc<Inner>,
    pub(crate) name: TenantName,
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    pub fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit
    }

    /// The view of one tenant: loads and calls through it are that tenant's.
    pub fn tenant(&self, name: &TenantName) -> Tenant<'_> {
        Tenant {
            inner: &self.inner,
            name: name.clone(),
        }
    }

    pub(crate) fn default_tenant(&self) -> Tenant<'_> {
        Tenant {
            inner: &self.inner,
            name: self.inner.default_tenant.clone(),
        }
    }

    /// [`Tenant::load_file`] for the `default` tenant.
    pub fn load_file(
        &self,
        bundle: &Path,
        sig: Option<&Path>,
        grant: &Grant,
    ) -> Result<ExtensionInfo, HostError> {
        self.default_tenant().load_file(bundle, sig, grant)
    }

    /// [`Tenant::load`] for the `default` tenant.
    pub fn load(
        &self,
        verified: Verified<Bundle>,
        grant: &Grant,
    ) -> Result<ExtensionInfo, HostError> {
        self.default_tenant().load(verified, grant)
    }

    /// [`Tenant::extension`] for the `default` tenant.
    pub fn extension(&self, id: &ExtensionId) -> Option<ExtensionInfo> {
        self.default_tenant().extension(id)
    }

    /// [`Tenant::call`] for the `default` tenant.
    pub async fn call(
        &self,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, CallFailure> {
        self.default_tenant().call(id, method, input).await
    }

    /// [`Tenant::call_detailed`] for the `default` tenant.
    pub async fn call_detailed(
        &self,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
    ) -> Result<Called<Vec<u8>>, CallFailure> {
        self.default_tenant().call_detailed(id, method, input).await
    }

    /// [`Tenant::call_http`] for the `default` tenant.
    pub async fn call_http(
        &self,
        id: &ExtensionId,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, CallFailure> {
        self.default_tenant().call_http(id, request).await
    }

    /// [`Tenant::call_http_detailed`] for the `default` tenant.
    pub async fn call_http_detailed(
        &self,
        id: &ExtensionId,
        request: http::Request<Bytes>,
    ) -> Result<Called<http::Response<Bytes>>, CallFailure> {
        self.default_tenant().call_http_detailed(id, request).await
    }
}

impl Tenant<'_> {
    pub fn name(&self) -> &TenantName {
        &self.name
    }

    /// Information about an extension loaded for this tenant.
    pub fn extension(&self, id: &ExtensionId) -> Option<ExtensionInfo> {
        self.inner.get(&self.name, id).map(|l| l.info.clone())
    }
}

impl Inner {
    pub(crate) fn get(&self, tenant: &TenantName, id: &ExtensionId) -> Option<Arc<Loaded>> {
        self.extensions.read().ok()?.get(tenant)?.get(id).cloned()
    }
}
