//! The host: trust, policy, audit, the runtime, and the loaded extensions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::Semaphore;
use warden_audit::{AuditLog, AuditSink, Event, MemoryAudit, Outcome, Record};
use warden_bundle::{Bundle, Caps, ContentHash};
use warden_manifest::{Effective, ExtensionId, Grant, Kind, Policy, TenantName, effective};
use warden_runtime::{
    CallCaps, CallError, CallOutcome, CallReport, LogLine, Prepared, Resolver, Runtime,
    RuntimeConfig, SystemResolver, WorldKind,
};

use crate::authorize::{Authorizer, LoadRequest, ManifestAuthorizer};
use crate::ids::RequestIds;
use crate::invoke::{HostInvoker, Via};
use warden_kv::{KvBackend, MemoryKv, Quota, SqliteKv};
use warden_runtime::KvAccess;
use warden_trust::{Envelope, TrustBundle, Verified, verify};

/// Why loading failed. Every variant is also written to the audit log.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading the bundle failed: {0}")]
    Bundle(#[from] warden_bundle::BundleError),
    #[error("reading the signature failed: {0}")]
    Signature(#[from] warden_trust::DsseError),
    #[error("verification failed: {0}")]
    Verify(#[from] warden_trust::VerifyError),
    #[error("the install is refused: {0}")]
    Policy(#[from] warden_manifest::EffectiveError),
    #[error(
        "{0} is a process extension; this host runs components only (process extensions come later)"
    )]
    ProcessUnsupported(ExtensionId),
    #[error("the component cannot be loaded: {0}")]
    Load(#[from] warden_runtime::LoadError),
    #[error("writing the audit record failed: {0}")]
    Audit(#[from] warden_audit::AuditError),
    #[error("setting up the host failed: {0}")]
    Setup(String),
    #[error("the load is refused: {0}")]
    Refused(String),
    #[error("secrets: {0}")]
    Secret(#[from] warden_secrets::SecretError),
}

/// Why a call failed, with the request id of its audit record.
#[derive(Debug, thiserror::Error)]
#[error("{error} (request {request_id})")]
pub struct CallFailure {
    pub request_id: String,
    pub error: CallError,
    /// Captured guest output, escaped; useful to show next to the error.
    pub logs: Vec<LogLine>,
}

/// A successful call's value, with its request id and the guest's captured output.
#[derive(Debug)]
pub struct Called<T> {
    pub value: T,
    pub request_id: String,
    pub logs: Vec<LogLine>,
}

/// What was loaded.
#[derive(Debug, Clone)]
pub struct ExtensionInfo {
    pub tenant: TenantName,
    pub id: ExtensionId,
    pub version: String,
    pub publisher: String,
    pub content_hash: ContentHash,
    pub kind: WorldKind,
    pub effective: Effective,
}

pub(crate) struct Loaded {
    pub(crate) info: ExtensionInfo,
    /// Extension, version and content hash, sanitized once; each record starts from it.
    record: Record,
    methods: Vec<String>,
    prepared: Arc<Prepared>,
    /// What each call may reach (the invoker is added per call).
    caps: CallCaps,
    /// Calls in flight; a call beyond `max_concurrent_calls` is refused as busy, not queued.
    permits: Arc<Semaphore>,
}

/// Configures a [`Host`]. See the crate docs for the defaults.
#[derive(Default)]
pub struct HostBuilder {
    trust: Option<TrustBundle>,
    policy: Policy,
    data_dir: Option<PathBuf>,
    audit: Option<Arc<dyn AuditSink>>,
    caps: Caps,
    resolver: Option<Arc<dyn Resolver>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    kv: Option<Arc<dyn KvBackend>>,
    kv_quota: Option<Quota>,
}

impl HostBuilder {
    /// Where extensions' key-value data lives (default: SQLite at `DATA/warden.db`, or memory
    /// without a data dir).
    pub fn kv_backend(mut self, backend: Arc<dyn KvBackend>) -> Self {
        self.kv = Some(backend);
        self
    }

    /// The key-value quota of each (tenant, extension) (default: the policy's `[policy.kv]`).
    pub fn kv_quota(mut self, quota: Quota) -> Self {
        self.kv_quota = Some(quota);
        self
    }

    /// Decides loads and calls between extensions beyond manifests and policy (default:
    /// [`ManifestAuthorizer`], which adds nothing).
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Publishers whose signatures are accepted. Without it, nothing loads.
    pub fn trust(mut self, trust: TrustBundle) -> Self {
        self.trust = Some(trust);
        self
    }

    /// The operator's policy (profile, ceilings, capabilities, private networks).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Where the compile cache (`cache/`) and, unless [`HostBuilder::audit`] is given, the
    /// audit log (`audit/`) live.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Where audit records go (default: `DATA/audit`, or memory without a data dir).
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Caps for reading bundles (default: [`Caps::default`]).
    pub fn bundle_caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }

    /// How extensions' allowed host names are resolved for outgoing HTTP (default: the
    /// operating system's resolver). Every address it returns is still checked against the
    /// policy, and the connection goes to the checked address.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    pub fn build(self) -> Result<Host, HostError> {
        if let Some(dir) = &self.data_dir {
            private_dir(dir)?;
            // The compile cache holds native code that is loaded without re-verification: only
            // the operator may write it.
            private_dir(&dir.join("cache"))?;
        }
        let audit: Arc<dyn AuditSink> = match (self.audit, &self.data_dir) {
            (Some(sink), _) => sink,
            (None, Some(dir)) => Arc::new(AuditLog::open(&dir.join("audit"))?),
            (None, None) => Arc::new(MemoryAudit::default()),
        };
        let config = RuntimeConfig {
            max_memory: self.policy.ceiling.max_memory.bytes(),
            cache_dir: self.data_dir.as_ref().map(|d| d.join("cache")),
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(config)?;
        let secrets = Arc::new(crate::secrets::HostSecrets::open(self.data_dir.as_deref())?);
        let kv: Arc<dyn KvBackend> = match (self.kv, &self.data_dir) {
            (Some(kv), _) => kv,
            (None, Some(dir)) => Arc::new(
                SqliteKv::open(&dir.join("warden.db"))
                    .map_err(|e| HostError::Setup(format!("key-value store: {e}")))?,
            ),
            (None, None) => Arc::new(MemoryKv::new()),
        };
        let kv_quota = self.kv_quota.unwrap_or(Quota::from(self.policy.kv));
        Ok(Host {
            inner: Arc::new(Inner {
                runtime: Arc::new(runtime),
                trust: self.trust.unwrap_or_default(),
                policy: self.policy,
                audit,
                caps: self.caps,
                resolver: self.resolver.unwrap_or_else(|| Arc::new(SystemResolver)),
                authorizer: self
                    .authorizer
                    .unwrap_or_else(|| Arc::new(ManifestAuthorizer)),
                default_tenant: TenantName::default_tenant(),
                data_dir: self.data_dir,
                secrets,
                kv,
                kv_quota,
                extensions: RwLock::default(),
                prepared: RwLock::default(),
                ids: RequestIds::new(),
                audit_failed: AtomicBool::new(false),
                audit_failure: Mutex::new(String::new()),
            }),
        })
    }
}

/// Creates `dir` (and missing parents) as 0700, and refuses an existing one that other users
/// can write to.
pub(crate) fn private_dir(dir: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let setup =
        |what: &str, e: std::io::Error| HostError::Setup(format!("{what} {}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| setup("creating", e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| setup("reading", e))?;
    if !meta.is_dir() {
        return Err(HostError::Setup(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(HostError::Setup(format!(
            "{} is writable by other users (mode {:o}); it holds the compile cache and audit log: chmod 700 it",
            dir.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    Ok(())
}

/// Loads verified bundles and calls them. Cheap to clone (one shared state); all methods
/// take `&self`.
///
/// Extensions are loaded per tenant ([`Host::tenant`]): each (tenant, extension) has its own
/// grant, files, key-value data and secrets. The shorthand methods on `Host` act for the
/// tenant named `default`.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    runtime: Arc<Runtime>,
    trust: TrustBundle,
    policy: Policy,
    audit: Arc<dyn AuditSink>,
    caps: Caps,
    resolver: Arc<dyn Resolver>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// `default`, made once (the shorthand methods use it on every call).
    default_tenant: TenantName,
    data_dir: Option<PathBuf>,
    pub(crate) secrets: Arc<crate::secrets::HostSecrets>,
    kv: Arc<dyn KvBackend>,
    kv_quota: Quota,
    /// Loaded extensions, by tenant then id (nested so a lookup needs no owned key).
    extensions: RwLock<HashMap<TenantName, HashMap<ExtensionId, Arc<Loaded>>>>,
    /// Compiled, pre-linked components by content hash: the same bytes are prepared once.
    prepared: RwLock<HashMap<ContentHash, Arc<Prepared>>>,
    ids: RequestIds,
    /// Set when an audit record could not be stored: calls are refused until one can (see
    /// [`Inner::audit_gate`]). An atomic so the check on every call costs one load.
    audit_failed: AtomicBool,
    /// Why the last audit record could not be stored, for the refusals.
    audit_failure: Mutex<String>,
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

    fn default_tenant(&self) -> Tenant<'_> {
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

    /// Reads, verifies and loads a bundle file (signature at `sig`, default `FILE.sig`) for
    /// this tenant, replacing any earlier load of the same extension. Compiles the component
    /// (CPU-heavy on a cache miss). A failure is audited.
    pub fn load_file(
        &self,
        bundle: &Path,
        sig: Option<&Path>,
        grant: &Grant,
    ) -> Result<ExtensionInfo, HostError> {
        let inner = self.inner;
        let sig_path = sig.map(Path::to_path_buf).unwrap_or_else(|| {
            let mut s = bundle.as_os_str().to_owned();
            s.push(".sig");
            PathBuf::from(s)
        });
        let verified = (|| -> Result<Verified<Bundle>, HostError> {
            let envelope = Envelope::read_file(&sig_path)?;
            let bundle = Bundle::read_file(bundle, &inner.caps)?;
            Ok(verify(bundle, &envelope, &inner.trust)?)
        })();
        match verified {
            Ok(v) => self.load(v, grant),
            Err(e) => {
                let r = Record::new(Event::VerificationFailure, inner.ids.next())
                    .with_tenant(&self.name)
                    .with_target(bundle.display())
                    .with_outcome(Outcome::Denied)
                    .with_message(&e);
                inner.audit.append(r)?;
                Err(e)
            }
        }
    }

    /// Loads an already verified bundle for this tenant with the operator's grant.
    pub fn load(
        &self,
        verified: Verified<Bundle>,
        grant: &Grant,
    ) -> Result<ExtensionInfo, HostError> {
        let inner = self.inner;
        let bundle = verified.get();
        let manifest = bundle.manifest();
        let ext = &manifest.extension;
        let record = Record::new(Event::Load, inner.ids.next())
            .with_tenant(&self.name)
            .with_extension(&ext.id)
            .with_version(&ext.version)
            .with_content_hash(bundle.content_hash());
        let mut refused = false;
        let result = (|| -> Result<ExtensionInfo, HostError> {
            if ext.kind == Kind::Process {
                return Err(HostError::ProcessUnsupported(ext.id.clone()));
            }
            let eff = effective(manifest, grant, &inner.policy)?;
            inner
                .authorizer
                .authorize_load(&LoadRequest {
                    tenant: &self.name,
                    manifest,
                    content_hash: bundle.content_hash(),
                    effective: &eff,
                })
                .map_err(|reason| {
                    refused = true;
                    HostError::Refused(reason)
                })?;
            let mounts = crate::mounts::prepare(
                inner.data_dir.as_deref(),
                &self.name,
                &ext.id,
                bundle,
                &eff.mounts,
            )?;
            let fs_quota = crate::mounts::quota(
                inner.data_dir.as_deref(),
                &self.name,
                &ext.id,
                &eff.mounts,
                inner.policy.files,
            );
            let prepared = inner.prepare(&verified)?;
            let info = ExtensionInfo {
                tenant: self.name.clone(),
                id: ext.id.clone(),
                version: ext.version.to_string(),
                publisher: ext.publisher.to_string(),
                content_hash: bundle.content_hash(),
                kind: prepared.kind(),
                effective: eff,
            };
            let permits = Arc::new(Semaphore::new(
                info.effective.limits.max_concurrent_calls as usize,
            ));
            let caps = CallCaps {
                network: info.effective.network.clone().map(Arc::new),
                resolver: Arc::clone(&inner.resolver),
                mounts: mounts.into(),
                fs_quota,
                invoker: None,
                redactor: None,
                secrets: inner
                    .secrets
                    .access(&self.name, &info.id, &info.effective.secrets),
                kv: info.effective.kv.then(|| {
                    KvAccess::new(
                        Arc::clone(&inner.kv),
                        self.name.clone(),
                        info.id.clone(),
                        inner.kv_quota,
                    )
                }),
            };
            let loaded = Loaded {
                record: Record::new(Event::Call, "")
                    .with_tenant(&self.name)
                    .with_extension(&info.id)
                    .with_version(&info.version)
                    .with_content_hash(info.content_hash),
                info: info.clone(),
                methods: manifest.methods.iter().map(|m| m.to_string()).collect(),
                prepared,
                caps,
                permits,
            };
            inner
                .extensions
                .write()
                .map_err(|_| HostError::Setup("extension table poisoned".into()))?
                .entry(self.name.clone())
                .or_default()
                .insert(info.id.clone(), Arc::new(loaded));
            Ok(info)
        })();
        let record = match &result {
            Ok(_) => record.with_outcome(Outcome::Ok),
            Err(e) if refused => record.with_outcome(Outcome::Denied).with_message(e),
            Err(e) => record.with_outcome(Outcome::Invalid).with_message(e),
        };
        inner.audit.append(record)?;
        result
    }

    /// Information about an extension loaded for this tenant.
    pub fn extension(&self, id: &ExtensionId) -> Option<ExtensionInfo> {
        self.inner.get(&self.name, id).map(|l| l.info.clone())
    }

    /// Calls an rpc extension's `method` with `input`, in a fresh instance, with its limits.
    pub async fn call(
        &self,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, CallFailure> {
        self.call_detailed(id, method, input).await.map(|c| c.value)
    }

    /// [`Tenant::call`], also returning the request id and the guest's output.
    pub async fn call_detailed(
        &self,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
    ) -> Result<Called<Vec<u8>>, CallFailure> {
        self.inner
            .call_rpc(&self.name, id, method, input, Via::default())
            .await
    }

    /// Sends an HTTP request to an http extension, in a fresh instance, with its limits.
    pub async fn call_http(
        &self,
        id: &ExtensionId,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, CallFailure> {
        self.call_http_detailed(id, request).await.map(|c| c.value)
    }

    /// [`Tenant::call_http`], also returning the request id and the guest's output.
    pub async fn call_http_detailed(
        &self,
        id: &ExtensionId,
        request: http::Request<Bytes>,
    ) -> Result<Called<http::Response<Bytes>>, CallFailure> {
        let inner = self.inner;
        let ext = inner.lookup(&self.name, id)?;
        inner.audit_gate(&ext)?;
        let _permit = inner.permit(&ext)?;
        let limits = ext.info.effective.limits;
        let caps = inner.caps_for(&ext, Via::default());
        let outcome = ext
            .prepared
            .call_http(&inner.runtime, &limits, &caps, request)
            .await;
        inner.finish(&ext, outcome)
    }
}

impl Inner {
    /// The prepared component for these verified bytes, compiled on first use.
    fn prepare(&self, bundle: &Verified<Bundle>) -> Result<Arc<Prepared>, HostError> {
        let hash = bundle.content_hash();
        if let Some(p) = self
            .prepared
            .read()
            .ok()
            .and_then(|m| m.get(&hash).cloned())
        {
            return Ok(p);
        }
        let p = Arc::new(self.runtime.prepare(bundle)?);
        if let Ok(mut m) = self.prepared.write() {
            m.insert(hash, Arc::clone(&p));
        }
        Ok(p)
    }

    pub(crate) fn get(&self, tenant: &TenantName, id: &ExtensionId) -> Option<Arc<Loaded>> {
        self.extensions.read().ok()?.get(tenant)?.get(id).cloned()
    }

    /// This call's capabilities: the install's, plus an invoker that knows how the call was
    /// reached when the install may call other extensions.
    fn caps_for(self: &Arc<Self>, ext: &Arc<Loaded>, via: Via) -> CallCaps {
        let mut caps = ext.caps.clone();
        caps.redactor = via.redactor.clone();
        if !ext.info.effective.calls.is_empty() {
            caps.invoker = Some(Arc::new(HostInvoker::new(
                Arc::downgrade(self),
                Arc::clone(ext),
                via,
            )));
        }
        caps
    }

    /// An rpc call; `via` says how it was reached (default: a top-level call).
    pub(crate) async fn call_rpc(
        self: &Arc<Self>,
        tenant: &TenantName,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
        via: Via,
    ) -> Result<Called<Vec<u8>>, CallFailure> {
        let ext = self.lookup(tenant, id)?;
        self.audit_gate(&ext)?;
        if !ext.methods.is_empty() && !ext.methods.iter().any(|m| m == method) {
            // The name is chosen by the caller; from another extension it may carry that
            // extension's secret values: redact before quoting (quoting escapes characters,
            // which would hide a value from the redactor).
            let shown = match &via.redactor {
                Some(r) => r.text(method),
                None => method.to_string(),
            };
            return Err(self.refuse(
                &ext,
                CallError::Invalid(format!("{id} has no method {shown:?}")),
            ));
        }
        let _permit = self.permit(&ext)?;
        let limits = ext.info.effective.limits;
        let caps = self.caps_for(&ext, via);
        let outcome = ext
            .prepared
            .call_rpc(&self.runtime, &limits, &caps, method, input)
            .await;
        self.finish(&ext, outcome)
    }

    fn lookup(&self, tenant: &TenantName, id: &ExtensionId) -> Result<Arc<Loaded>, CallFailure> {
        self.get(tenant, id).ok_or_else(|| CallFailure {
            request_id: String::new(),
            error: CallError::Invalid(format!("no extension {id} is loaded")),
            logs: Vec::new(),
        })
    }

    fn permit(&self, ext: &Arc<Loaded>) -> Result<tokio::sync::OwnedSemaphorePermit, CallFailure> {
        Arc::clone(&ext.permits).try_acquire_owned().map_err(|_| {
            let limit = ext.info.effective.limits.max_concurrent_calls;
            self.refuse(
                ext,
                CallError::Busy(format!(
                    "{} already has {limit} calls in flight",
                    ext.info.id
                )),
            )
        })
    }

    /// A call refused before it ran: one audit record.
    fn refuse(&self, ext: &Loaded, error: CallError) -> CallFailure {
        let id = self.ids.next();
        self.write(call_record(ext, &id, &CallReport::default(), Err(&error)));
        CallFailure {
            request_id: id,
            error,
            logs: Vec::new(),
        }
    }

    /// Audits a finished call (each grant and denial in it, then the call) and logs the
    /// guest's output.
    fn finish<T>(&self, ext: &Loaded, outcome: CallOutcome<T>) -> Result<Called<T>, CallFailure> {
        let id = self.ids.next();
        let report = outcome.report;
        // Whether any of this call's records could not be stored.
        let mut lost = false;
        for line in &report.logs {
            tracing::info!(target: "warden::guest", request_id = %id, tenant = %ext.info.tenant, extension = %ext.info.id, stream = line.stream.label(), context = line.context.as_deref().unwrap_or(""), "{}", line.text);
        }
        for grant in &report.grants {
            let r = base_record(ext, Event::Grant, &id)
                .with_capability(grant.capability)
                .with_target(&grant.target)
                .with_decision(warden_audit::Decision::Allow)
                .with_outcome(Outcome::Ok);
            lost |= !self.write(r);
        }
        for denial in &report.denials {
            let mut r = base_record(ext, Event::Denial, &id)
                .with_capability(denial.capability)
                .with_target(&denial.target)
                .with_decision(warden_audit::Decision::Deny)
                .with_outcome(Outcome::Denied);
            // One record per distinct refusal; repeats are counted on it.
            match (&denial.reason, denial.count) {
                (Some(reason), 1) => r = r.with_message(reason),
                (Some(reason), n) => r = r.with_message(format!("{reason} ({n} attempts)")),
                (None, 1) => {}
                (None, n) => r = r.with_message(format!("{n} attempts")),
            }
            lost |= !self.write(r);
        }
        let result = outcome.result.as_ref().map(|_| ());
        lost |= !self.write(call_record(ext, &id, &report, result));
        // A guest that coped with a refused allocation still hit its limit: audit that too.
        if report.memory_limit_hit && !matches!(result, Err(CallError::MemoryLimit(_))) {
            let r = base_record(ext, Event::Limit, &id)
                .with_outcome(Outcome::MemoryLimit)
                .with_memory_peak_bytes(report.memory_peak)
                .with_message(format!(
                    "memory limit of {} reached",
                    ext.info.effective.limits.max_memory
                ));
            lost |= !self.write(r);
        }
        if lost {
            // The call ran, but its trail is incomplete: its result is not handed out as a
            // success (the caller sees why), and the host is closed until the log works again.
            let why = self
                .audit_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Err(CallFailure {
                request_id: id,
                error: CallError::Host(format!(
                    "the call ran but its audit records could not be written: {why}"
                )),
                logs: report.logs,
            });
        }
        match outcome.result {
            Ok(value) => Ok(Called {
                value,
                request_id: id,
                logs: report.logs,
            }),
            Err(error) => Err(CallFailure {
                request_id: id,
                error,
                logs: report.logs,
            }),
        }
    }

    /// Stores one record; false if it could not be. The call already happened and cannot be
    /// undone; but no further call may run without an audit trail, so the failure closes the
    /// host (see `audit_gate`).
    fn write(&self, record: Record) -> bool {
        match self.audit.append(record) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(target: "warden::audit", "could not write an audit record: {e}");
                self.audit_broke(&e);
                false
            }
        }
    }

    fn audit_broke(&self, e: &warden_audit::AuditError) {
        // The whole source chain: the top-level message alone may not say "disk full".
        let mut why = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        *self
            .audit_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
        self.audit_failed.store(true, Ordering::Release);
    }

    /// Fail closed: after an audit record could not be stored, every new call is refused with
    /// `CallError::Host`. Each refusal tries to store its own record first; when that works the
    /// store is healthy again and later calls run (this one stays refused: it was already
    /// recorded as refused). One atomic load when healthy.
    fn audit_gate(&self, ext: &Loaded) -> Result<(), CallFailure> {
        if !self.audit_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self
            .audit_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let error = CallError::Host(format!("the audit log cannot be written: {why}"));
        let id = self.ids.next();
        match self
            .audit
            .append(call_record(ext, &id, &CallReport::default(), Err(&error)))
        {
            // A failure recorded after this load (by a concurrent call) sets the flag again
            // when its own `write` fails, so clearing it here cannot hide a later failure for
            // more than the calls already past the gate.
            Ok(()) => self.audit_failed.store(false, Ordering::Release),
            Err(e) => self.audit_broke(&e),
        }
        Err(CallFailure {
            request_id: id,
            error,
            logs: Vec::new(),
        })
    }
}

fn base_record(ext: &Loaded, event: Event, request_id: &str) -> Record {
    ext.record.renew(event, request_id)
}

fn call_record(
    ext: &Loaded,
    request_id: &str,
    report: &CallReport,
    result: Result<(), &CallError>,
) -> Record {
    let (event, outcome) = match result {
        Ok(()) => (Event::Call, Outcome::Ok),
        Err(e) => match e {
            CallError::Extension { .. } => (Event::Call, Outcome::Error),
            CallError::Timeout(_) => (Event::Limit, Outcome::Timeout),
            CallError::MemoryLimit(_) => (Event::Limit, Outcome::MemoryLimit),
            CallError::FuelExhausted(_) => (Event::Limit, Outcome::FuelExhausted),
            CallError::TooLarge { .. } => (Event::Limit, Outcome::TooLarge),
            CallError::Busy(_) => (Event::Limit, Outcome::Busy),
            CallError::Trap(_) => (Event::Call, Outcome::Trap),
            CallError::Invalid(_) => (Event::Call, Outcome::Invalid),
            CallError::Host(_) => (Event::Call, Outcome::Error),
        },
    };
    let mut r = base_record(ext, event, request_id)
        .with_outcome(outcome)
        .with_duration(report.duration)
        .with_memory_peak_bytes(report.memory_peak);
    if let Some(f) = report.fuel {
        r = r.with_fuel(f);
    }
    if report.egress_bytes > 0 {
        r = r.with_egress_bytes(report.egress_bytes);
    }
    if let Err(e) = result {
        r = r.with_message(e);
    }
    r
}
