//! [`HostBuilder`]: every default of a [`Host`] written down, and the one place a host is put
//! together (trust, policy, audit sink, runtime, storage).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use warden_audit::{AuditLog, AuditSink};
use warden_bundle::BundleLimits;
use warden_datadir::private_dir;
use warden_kv::{KvBackend, Quota};
use warden_manifest::{Policy, TenantName};
use warden_runtime::isolate::Isolation;
use warden_runtime::{CodeCacheFiles, Resolver, Runtime, RuntimeConfig, SystemResolver};
use warden_trust::TrustBundle;

use crate::authorize::{Authorizer, ManifestAuthorizer};
use crate::error::HostError;
use crate::host::{Host, Inner};
use crate::ids::RequestIds;
use crate::storage::{Storage, start_failed};

/// The compile cache's folder in the data dir.
const CACHE_DIR: &str = "cache";
/// The key of the compile cache's MACs in the data dir (32 bytes, 0600, made on first start).
const COMPILE_KEY_FILE: &str = "compile.key";

/// Configures a [`Host`]. See the crate docs for the defaults.
#[derive(Default)]
pub struct HostBuilder {
    trust: Option<TrustBundle>,
    policy: Policy,
    data_dir: Option<PathBuf>,
    storage: Option<Storage>,
    audit: Option<Arc<dyn AuditSink>>,
    audit_key: Option<PathBuf>,
    bundle_limits: BundleLimits,
    resolver: Option<Arc<dyn Resolver>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    kv: Option<Arc<dyn KvBackend>>,
    kv_quota: Option<Quota>,
    compile_process: Option<(PathBuf, Vec<OsString>)>,
    guest_threads: bool,
}

impl Host {
    /// A builder with every default written down in the crate docs.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }
}

impl HostBuilder {
    /// Where the host keeps what must outlive it: registry, blobs, kv, secrets, audit (default:
    /// [`Storage::embedded`] in the data dir, or [`Storage::memory`] without one).
    /// [`HostBuilder::kv_backend`] and [`HostBuilder::audit`] still replace their part.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Where extensions' key-value data lives (default: the storage's).
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

    /// Compile components in a child process, `program args...`, bounded by the policy's
    /// `[policy.compile]` time and memory (default: in this process, bounded only by the
    /// pre-compile check). The program must run [`warden_runtime::isolate::child_main`] with
    /// the arguments that follow `args` (the `warden` binary does, as `warden __compile`).
    pub fn compile_process(mut self, program: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        self.compile_process = Some((program.into(), args));
        self
    }

    /// Run guest code on threads of its own instead of the caller's (default: the caller's).
    /// A service wants this: a request's own work (reading it, checking its key, writing its
    /// answer) is then never queued behind guests on an executor thread, and a call still
    /// running after 2 ms moves to threads for long calls. It costs each call a hop between
    /// threads (tens of microseconds on a small VM), which an embedder making one call at a
    /// time need not pay.
    pub fn guest_threads(mut self, on: bool) -> Self {
        self.guest_threads = on;
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

    /// Where the compile cache (`cache/`, its entries MACed under `compile.key`) lives, and,
    /// unless [`HostBuilder::storage`] is given, the embedded default storage.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The key file for the MAC of the audit log's head (default `DATA/audit.key`, created on
    /// first use). Keep it outside the data dir (readable by the host only) so that someone who
    /// can write the data dir cannot cut records from the log and rewrite its head to match.
    pub fn audit_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_key = Some(path.into());
        self
    }

    /// Where audit records go (default: the storage's).
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// BundleLimits for reading bundles (default: [`BundleLimits::default`]).
    pub fn bundle_limits(mut self, limits: BundleLimits) -> Self {
        self.bundle_limits = limits;
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
            // The compile cache holds native code: only the operator may write it (and what
            // does not carry the MAC under `compile.key` is compiled again, never loaded).
            private_dir(&dir.join(CACHE_DIR))?;
        }
        let storage = match (self.storage, &self.data_dir) {
            (Some(storage), _) => storage,
            (None, Some(dir)) => {
                let audit: Arc<dyn AuditSink> = match &self.audit {
                    Some(sink) => Arc::clone(sink),
                    None => Arc::new(AuditLog::open_in(dir, self.audit_key.as_deref())?),
                };
                Storage::embedded_with(dir, audit)?
            }
            (None, None) => Storage::memory()?,
        };
        // A sink given on its own replaces the storage's log, so what the storage would read
        // back is not this host's trail.
        let audit_source = match self.audit {
            Some(_) => None,
            None => storage.audit_source,
        };
        let audit = self.audit.unwrap_or(storage.audit);
        let config = RuntimeConfig {
            max_memory: self.policy.ceiling.max_memory.bytes(),
            code_cache: self.data_dir.as_ref().map(|d| CodeCacheFiles {
                dir: d.join(CACHE_DIR),
                key_file: d.join(COMPILE_KEY_FILE),
            }),
            isolation: self.compile_process.map(|(program, args)| Isolation {
                program,
                args,
                max_time: self.policy.compile.max_time,
                max_memory: self.policy.compile.max_memory.bytes(),
            }),
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(config).map_err(|e| start_failed(&audit, e.into()))?;
        let claims = Arc::new(warden_remote::claims::ClaimsKey::from_seed(
            storage.secrets.claims_seed(),
        ));
        let secrets = Arc::new(crate::secrets::HostSecrets::new(storage.secrets));
        let kv = self.kv.unwrap_or(storage.kv);
        let kv_quota = self.kv_quota.unwrap_or(Quota::from(self.policy.kv));
        let host = Host {
            inner: Arc::new(Inner {
                runtime: Arc::new(runtime),
                trust: RwLock::new(Arc::new(self.trust.unwrap_or_default())),
                policy: self.policy,
                audit: Arc::clone(&audit),
                bundle_limits: self.bundle_limits,
                resolver: self.resolver.unwrap_or_else(|| Arc::new(SystemResolver)),
                authorizer: self
                    .authorizer
                    .unwrap_or_else(|| Arc::new(ManifestAuthorizer)),
                default_tenant: TenantName::default_tenant(),
                data_dir: self.data_dir,
                registry: storage.registry,
                local_files: storage.local_files,
                audit_source,
                secrets,
                claims,
                kv,
                kv_quota,
                extensions: RwLock::default(),
                prepared: RwLock::default(),
                preparing: std::sync::Mutex::default(),
                process_code: RwLock::default(),
                warm_groups: Mutex::default(),
                secret_history: std::sync::Mutex::new(std::collections::HashMap::new()),
                closing: tokio::sync::watch::Sender::new(false),
                process_tmp: std::sync::OnceLock::new(),
                ids: RequestIds::new(),
                audit_failed: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                audit_failure: Mutex::new(None),
                unstored: Mutex::new(crate::unstored::Unstored::default()),
                turns: warden_runtime::Turns::per_core(),
                guests: if self.guest_threads {
                    crate::guests::Guests::start()
                } else {
                    crate::guests::Guests::inline()
                },
                refusals: crate::refusals::Refusals::new(audit),
                budgets: crate::budgets::Budgets::default(),
                starting: crate::budgets::TenantStarting::default(),
                usage: crate::usage::Usage::default(),
                orphans: crate::orphans::Orphans::default(),
            }),
        };
        // Summaries of repeated refusals are written while the host lives; one that cannot be
        // stored closes the host like any other record (see `Inner::audit_gate`).
        let inner = Arc::downgrade(&host.inner);
        crate::refusals::start_flusher(move || {
            let Some(inner) = inner.upgrade() else {
                return false;
            };
            if let Err(e) = inner.refusals.flush(false) {
                inner.refusals_unstored(e);
            }
            true
        });
        Ok(host)
    }
}
