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

use crate::error::HostError;

use crate::authorize::Authorizer;
use crate::ids::RequestIds;
use crate::installed::{Loaded, Retired};

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

/// How many secret values a (tenant, extension) is remembered to have been granted.
pub(crate) const SECRET_HISTORY: usize = 64;

pub(crate) struct Inner {
    pub(crate) runtime: Arc<Runtime>,
    /// Swapped whole by [`Host::set_trust`]; a load verifies against the bundle of its time.
    pub(crate) trust: RwLock<Arc<TrustBundle>>,
    pub(crate) policy: Policy,
    pub(crate) audit: Arc<dyn AuditSink>,
    /// Where `audit`'s records are read back.
    pub(crate) audit_source: Option<Arc<dyn warden_audit::AuditSource>>,
    pub(crate) bundle_limits: BundleLimits,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// `default`, made once (`warden run` uses it on every call).
    pub(crate) default_tenant: TenantName,
    pub(crate) data_dir: Option<PathBuf>,
    /// Whether installs may keep folders in the data dir (see [`crate::LocalFiles`]).
    pub(crate) local_files: crate::LocalFiles,
    pub(crate) secrets: Arc<crate::secrets::HostSecrets>,
    /// Signs the claims a remote extension's calls carry (from the secrets' key: the same on
    /// every runner of a fleet).
    pub(crate) claims: Arc<warden_remote::claims::ClaimsKey>,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) kv_quota: Quota,
    /// Loaded extensions, by tenant then id (nested so a lookup needs no owned key).
    pub(crate) extensions: RwLock<HashMap<TenantName, HashMap<ExtensionId, Arc<Loaded>>>>,
    /// Compiled, pre-linked components by content hash: the same bytes are prepared once.
    pub(crate) prepared: RwLock<HashMap<ContentHash, Arc<Prepared>>>,
    /// One lock per component being prepared: a call and the runner's warm-up (or two calls)
    /// that both miss wait for one compile instead of running two.
    pub(crate) preparing: std::sync::Mutex<HashMap<ContentHash, Arc<std::sync::Mutex<()>>>>,
    /// Each tenant's share of the kept instances (`[policy.component] warm_calls`).
    pub(crate) warm_groups: Mutex<HashMap<TenantName, warden_runtime::WarmGroup>>,
    /// Process extensions' verified files, unpacked, by content hash.
    /// (Weak: the files are removed once no install of them is left.)
    pub(crate) process_code:
        RwLock<HashMap<ContentHash, std::sync::Weak<warden_runtime::ProcessCode>>>,
    /// Where they are unpacked without a data dir (removed with the host).
    pub(crate) process_tmp: std::sync::OnceLock<tempfile::TempDir>,
    pub(crate) ids: RequestIds,
    /// Secret values each (tenant, extension) has been granted since this host started (at
    /// most [`SECRET_HISTORY`] each): every call's redactor knows them, so a value rotated or
    /// removed after an extension kept it is still redacted.
    pub(crate) secret_history:
        std::sync::Mutex<HashMap<(TenantName, ExtensionId), Vec<warden_secrets::SecretValue>>>,
    /// Set once the host's owner stops taking calls ([`Host::stop_waiting`]): calls waiting
    /// for a slot are refused then, not started during a shutdown.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// The registry and blobs ([`Host::admin`]); none for a host that only loads files.
    pub(crate) registry: Option<(
        Arc<dyn warden_registry::Registry>,
        Arc<dyn warden_registry::BlobStore>,
    )>,
    /// Set when an audit record could not be stored: calls are refused until one can (see
    /// [`Inner::audit_gate`]). An atomic so the check on every call costs one load.
    pub(crate) audit_failed: AtomicBool,
    /// Held by the one request (or change) finding out whether records can be stored again
    /// while `audit_failed` is set (see `Inner::probe`).
    pub(crate) probing: AtomicBool,
    /// Why the last audit record could not be stored, for the refusals.
    pub(crate) audit_failure: Mutex<Option<Arc<warden_audit::AuditError>>>,
    /// The records of calls that ran, changes made and requests refused while they could not
    /// be stored: stored first, late, once records can be stored again (see `audit.rs`).
    pub(crate) unstored: Mutex<crate::unstored::Unstored>,
    /// The cores' turns, shared by the tenants' calls in round (see `warden_runtime::Turns`).
    pub(crate) turns: Arc<warden_runtime::Turns>,
    /// The threads guest code runs on.
    pub(crate) guests: crate::guests::Guests,
    /// Repeated refusals, counted into one record per kind and window.
    pub(crate) refusals: crate::refusals::Refusals,
    /// Each install's host requests, kept across its reloads.
    pub(crate) budgets: crate::budgets::Budgets,
    /// Each tenant's starting slots for process sandboxes (see `budgets.rs`).
    pub(crate) starting: crate::budgets::TenantStarting,
    /// What calls used, per install, for the metrics.
    pub(crate) usage: crate::usage::Usage,
    /// The records of calls dropped part-way, written after the drop.
    pub(crate) orphans: crate::orphans::Orphans,
}

impl Host {
    pub fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit
    }

    /// Records a refusal made outside the host (the service's own: sizes, rates, routes) whose
    /// kind is `code`. The first of a kind (tenant, extension, event, outcome, code) in a
    /// window is stored and awaited; repeats are counted into one summary record per window,
    /// so that a flood of refused requests cannot buy one synced record each. False if the
    /// record could not be stored (the host is then closed until one can).
    pub async fn record_refusal(&self, code: &str, record: warden_audit::Record) -> bool {
        self.inner.refusal(code, record).await
    }

    /// What calls used so far, per install (tenant, extension): denials and limits by
    /// capability, outgoing bytes, fuel.
    pub fn usage(&self) -> Vec<(TenantName, ExtensionId, crate::InstallUsage)> {
        self.inner.usage.snapshot()
    }

    /// Components compiled and pre-linked in memory now (by content hash).
    pub fn prepared_components(&self) -> usize {
        self.inner.prepared.read().map_or(0, |m| m.len())
    }

    /// How full the instance pool is now.
    pub fn pool_usage(&self) -> warden_runtime::PoolUsage {
        self.inner.runtime.pool_usage()
    }

    /// What loads did with compiled code so far: compiles, code cache hits and rejections.
    pub fn code_stats(&self) -> warden_runtime::CodeStats {
        self.inner.runtime.code_stats()
    }

    /// The public key (PEM) that checks the claims remote extensions' calls carry, and its
    /// `kid`: what the operator gives the vendors of remote extensions.
    pub fn claims_public_key(&self) -> (String, String) {
        (
            self.inner.claims.public_pem(),
            self.inner.claims.kid().to_string(),
        )
    }

    /// For an owner that stops: ends every warm process, recording what each was refused
    /// after its last answer, stores the records kept while the audit log could not be written
    /// (if it can be now; [`warden_audit::AuditError::Unstored`] counts those that could not,
    /// which are lost when the process exits), and the summaries of repeated refusals counted
    /// so far.
    /// Calls still work after it, each in a process of its own.
    pub fn close(&self) -> Result<(), warden_audit::AuditError> {
        let loaded: Vec<Arc<Loaded>> = self
            .inner
            .extensions
            .read()
            .map(|m| m.values().flat_map(|t| t.values().cloned()).collect())
            .unwrap_or_default();
        for l in &loaded {
            self.inner.retire_processes(l);
        }
        let lost = self.inner.store_kept_before_closing();
        let flushed = self.inner.refusals.flush(true).map_err(|u| u.error);
        match lost {
            0 => flushed,
            lost => Err(warden_audit::AuditError::Unstored { lost, waiting: 0 }),
        }
    }

    /// Waits, at most `within`, until the audit records given so far are stored or refused;
    /// fails when some whose calls were dropped meanwhile could not be stored (nobody else
    /// will store them), or some still wait for the log
    /// ([`warden_audit::AuditSink::settle`]). For an owner about to exit, after
    /// [`Host::close`]: those records are lost with the process, and it can say so.
    pub fn settle_audit(
        &self,
        within: std::time::Duration,
    ) -> Result<(), warden_audit::AuditError> {
        self.inner.audit.settle(within)
    }

    /// Whether the last audit record could be stored: when not, calls are refused until one
    /// can (a readiness probe should say so).
    pub fn audit_healthy(&self) -> bool {
        !self
            .inner
            .audit_failed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Refuses (busy) every call waiting for a slot of its extension (`[policy] busy_wait`),
    /// or holding one while its input is read ([`crate::Slot`]), now and from now on; calls
    /// already running go on. For a service that starts to shut
    /// down: what has not started by then must not start during the drain.
    pub fn stop_waiting(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Says that the calls dropped from now on are stopped by their service's shutdown (its
    /// grace is over), not left by their callers: their records say so.
    pub fn cut_off(&self) {
        self.inner.orphans.cut_off();
    }

    /// Writes `record` (the audit record of a request dropped part-way, made by the service)
    /// on the current runtime, counted as the host's own such records are: see
    /// [`Host::settle_records`].
    pub fn record_later(&self, record: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.orphans.spawn(record);
    }

    /// Waits, for at most `within`, until the records of every call or request dropped
    /// part-way so far are written; how many are not yet. A service that stops calls at the end
    /// of its grace waits for them before it exits, so that the trail has them.
    pub async fn settle_records(&self, within: std::time::Duration) -> usize {
        self.inner.orphans.settle(within).await
    }

    /// The operator's policy this host enforces.
    pub fn policy(&self) -> &warden_manifest::Policy {
        &self.inner.policy
    }

    /// Where this host's audit records are read back, if they are kept (not in memory).
    pub fn audit_source(&self) -> Option<Arc<dyn warden_audit::AuditSource>> {
        self.inner.audit_source.clone()
    }

    /// Replaces the trust bundle. Every loaded extension is unloaded, so the next call of
    /// each loads (and verifies) it again under the new bundle: a revoked key or a removed
    /// publisher stops it from being served at once.
    /// Audited (`trust-reload`, with `what` says where the bundle came from).
    pub fn set_trust(&self, trust: TrustBundle, what: &str) -> Result<(), HostError> {
        self.set_trust_as(self.inner.ids.next(), trust, what)
    }

    /// Records a trust reload that did not happen (the new bundle could not be read); the
    /// trust in force stays.
    pub fn trust_reload_failed(
        &self,
        what: &str,
        error: &(dyn std::error::Error + 'static),
    ) -> Result<(), HostError> {
        self.trust_reload_failed_as(self.inner.ids.next(), what, error)
    }
}

impl Inner {
    /// The trust bundle now.
    pub(crate) fn trust(&self) -> Result<Arc<TrustBundle>, HostError> {
        self.trust
            .read()
            .map(|t| Arc::clone(&t))
            .map_err(|_| HostError::Poisoned("trust bundle"))
    }

    pub(crate) fn get(&self, tenant: &TenantName, id: &ExtensionId) -> Option<Arc<Loaded>> {
        self.extensions.read().ok()?.get(tenant)?.get(id).cloned()
    }

    /// Takes `loaded` out of use (`how`: replaced, or removed with its calls) and forgets its
    /// prepared component when nothing else holds it: an old version's compiled code (tens
    /// of MB for a JavaScript or Python component) is not kept for ever. (Calls still running
    /// on it keep it alive; the runner's warm-up pass forgets it later, `prune_prepared`.)
    pub(crate) fn retire(self: &Arc<Self>, loaded: Arc<Loaded>, how: Retired) {
        loaded.retired.send_replace(how);
        self.retire_processes(&loaded);
        let hash = loaded.info.content_hash;
        drop(loaded);
        self.prune_prepared(|h| *h != hash);
    }

    /// Ends `loaded`'s parked processes, if it is a process extension, recording what they
    /// were refused since their last answer.
    fn retire_processes(self: &Arc<Self>, loaded: &Loaded) {
        if let crate::installed::Code::Process(p) = &loaded.code {
            p.retire(self.leftovers(loaded));
        }
    }

    /// Forgets every prepared component that nothing holds (no loaded install, no call) and
    /// that `keep` does not name.
    pub(crate) fn prune_prepared(&self, keep: impl Fn(&ContentHash) -> bool) {
        // Dropped outside the lock: freeing a large component's code takes a while.
        let mut gone = Vec::new();
        if let Ok(mut m) = self.prepared.write() {
            m.retain(|h, p| {
                let used = keep(h) || Arc::strong_count(p) > 1;
                if !used {
                    gone.push(Arc::clone(p));
                }
                used
            });
        }
        drop(gone);
    }
}
