//! Loading: verify (a failure is audited), decide the effective permissions and limits
//! (requested ∩ granted ∩ policy), prepare the capabilities (mounts, quota, key-value, secrets)
//! and the compiled component, and record the install for its tenant.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use warden_audit::{Event, Outcome, Record};
use warden_bundle::Bundle;
use warden_call::Withheld;
use warden_manifest::{Effective, Grant, Kind, effective};
use warden_runtime::{
    CallCaps, InstallCaps, KvAccess, Prepared, ProcessCode, ProcessInstall, Share, WarmInstances,
    WorldKind,
};
use warden_trust::{Envelope, Verified, verify};

use crate::authorize::LoadRequest;
use crate::error::HostError;
use crate::host::Inner;
use crate::installed::{Code, ExtensionInfo, Loaded, Retired};
use crate::tenant::Tenant;

impl Tenant<'_> {
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
            let bundle = Bundle::read_file(bundle, &inner.bundle_limits)?;
            Ok(verify(bundle, &envelope, &*inner.trust()?)?)
        })();
        match verified {
            Ok(v) => self.load(v, grant),
            Err(e) => {
                let r = Record::new(Event::VerificationFailure, inner.ids.next())
                    .with_tenant(&self.name)
                    .with_target(bundle.display())
                    .with_outcome(Outcome::Denied)
                    .with_error(&e);
                inner.audit.append(r)?;
                Err(e)
            }
        }
    }

    /// What an install of `verified` with `grant` would be allowed, decided without compiling,
    /// creating folders or touching storage (a `validate` or `doctor` command can use it):
    /// requested ∩ granted ∩ policy, limits within the ceiling, and the [`Authorizer`]'s say.
    ///
    /// [`Authorizer`]: crate::Authorizer
    pub fn configure(
        &self,
        verified: &Verified<Bundle>,
        grant: &Grant,
    ) -> Result<Effective, HostError> {
        let bundle = verified.get();
        let manifest = bundle.manifest();
        let eff = effective(manifest, grant, &self.inner.policy)?;
        refuse_local_files(self.inner, &eff)?;
        self.inner
            .authorizer
            .authorize_load(&LoadRequest {
                tenant: &self.name,
                manifest,
                content_hash: bundle.content_hash(),
                effective: &eff,
            })
            .map_err(HostError::Refused)?;
        Ok(eff)
    }

    /// Loads an already verified bundle for this tenant with the operator's grant.
    pub fn load(
        &self,
        verified: Verified<Bundle>,
        grant: &Grant,
    ) -> Result<ExtensionInfo, HostError> {
        self.load_as(verified, grant, false)
    }

    /// [`Tenant::load`]; `installed` marks a load of the registry's install, which calls
    /// between extensions check against the registry again (see `invoke.rs`).
    pub(crate) fn load_as(
        &self,
        verified: Verified<Bundle>,
        grant: &Grant,
        installed: bool,
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
        let result = (|| -> Result<ExtensionInfo, HostError> {
            let eff = self.configure(&verified, grant)?;
            let mounts = warden_fs::mounts::prepare(
                inner.data_dir.as_deref(),
                &self.name,
                &ext.id,
                bundle,
                &eff.mounts,
            )?;
            let denied_mounts =
                warden_fs::mounts::denied(inner.data_dir.as_deref(), &eff.withheld_mounts)?;
            let fs_quota = warden_fs::mounts::quota(
                inner.data_dir.as_deref(),
                &self.name,
                &ext.id,
                &eff.mounts,
                inner.policy.files,
            );
            if let Some(q) = &fs_quota {
                // A deleted file may stay open until the call holding it ends; a ledger held
                // elsewhere is waited for within the call's limit.
                q.set_call_limit(eff.limits.max_execution_time);
            }
            // Its host requests: the budget a live load of it holds (see `budgets.rs`).
            let budget = |per_second| {
                inner
                    .budgets
                    .of(&self.name, &ext.id, per_second)
                    .map_err(|e| HostError::Refused(format!("host_requests_per_second: {e}")))
            };
            let code = match ext.kind {
                Kind::Component => Code::Component(inner.prepare(&verified)?),
                Kind::Process => Code::Process(Arc::new(ProcessInstall::new(
                    inner.process_code(&verified)?,
                    &mounts,
                    &eff.limits,
                    &inner.policy.process,
                    inner.policy.files,
                    budget(inner.policy.process.host_requests_per_second)?,
                    inner.starting.of(&self.name),
                )?)),
                Kind::Extism => Code::Extism(inner.prepare(&verified)?),
                Kind::Remote => Code::Remote(Arc::new(crate::remote::RemoteInstall::new(
                    bundle,
                    crate::remote::IdentitySource {
                        secrets: Arc::clone(&inner.secrets),
                        tenant: self.name.clone(),
                        extension: ext.id.clone(),
                    },
                    &inner.policy,
                    Arc::clone(&inner.resolver),
                    Arc::clone(&inner.claims),
                    budget(inner.policy.remote.host_requests_per_second)?,
                )?)),
            };
            let (kind, sandbox) = match &code {
                Code::Component(p) => (p.kind(), None),
                Code::Process(p) => (WorldKind::Rpc, Some(p.summary().to_owned())),
                Code::Extism(_) | Code::Remote(_) => (WorldKind::Rpc, None),
            };
            let info = ExtensionInfo {
                tenant: self.name.clone(),
                id: ext.id.clone(),
                version: ext.version.to_string(),
                publisher: ext.publisher.to_string(),
                content_hash: bundle.content_hash(),
                kind,
                answers_http: kind == WorldKind::Http || matches!(code, Code::Remote(_)),
                effective: eff,
                endpoints: bundle.manifest().endpoints.clone(),
                grant: grant.clone(),
                sandbox,
            };
            let permits = Arc::new(Semaphore::new(
                info.effective.limits.max_concurrent_calls as usize,
            ));
            // Each call gets its own ledger (`Inner::caps_for`) and generation (`Inner::run`).
            let caps = CallCaps::of(Arc::new(InstallCaps {
                network: info.effective.network.clone().map(Arc::new),
                resolver: Arc::clone(&inner.resolver),
                mounts: mounts.into(),
                denied_mounts: denied_mounts.into(),
                fs_quota,
                withheld: Withheld::by_policy(&info.effective.forbidden_by_policy),
                // One place in the round per tenant, whatever it calls.
                share: Some(Share {
                    turns: Arc::clone(&inner.turns),
                    key: Arc::from(self.name.as_str()),
                }),
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
            }));
            let warm = match code {
                Code::Component(_) => {
                    let group = inner
                        .warm_groups
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(self.name.clone())
                        .or_default()
                        .clone();
                    WarmInstances::new(inner.policy.component.warm_calls_for(&info.id), &group)
                }
                _ => None,
            };
            let loaded = Loaded {
                record: Record::new(Event::Call, "")
                    .with_tenant(&self.name)
                    .with_extension(&info.id)
                    .with_version(&info.version)
                    .with_content_hash(info.content_hash),
                info: info.clone(),
                methods: manifest.methods.iter().map(|m| m.to_string()).collect(),
                code,
                caps,
                permits,
                installed,
                warm,
                retired: tokio::sync::watch::Sender::new(Retired::No),
                signed: verified.signed(),
                asked: crate::installed::Asked::new(),
            };
            let replaced = inner
                .extensions
                .write()
                .map_err(|_| HostError::Poisoned("extension table"))?
                .entry(self.name.clone())
                .or_default()
                .insert(info.id.clone(), Arc::new(loaded));
            if let Some(old) = replaced {
                inner.retire(old, Retired::Replaced);
            }
            Ok(info)
        })();
        let record = match &result {
            Ok(_) => record.with_outcome(Outcome::Ok),
            Err(e @ HostError::Refused(_)) => record.with_outcome(Outcome::Denied).with_error(e),
            Err(e) => record.with_outcome(Outcome::Invalid).with_error(e),
        };
        inner.audit.append(record)?;
        result
    }
}

impl Inner {
    /// A process extension's verified files, unpacked once per content hash (under
    /// `DATA/process`, or a temporary folder without a data dir).
    fn process_code(&self, bundle: &Verified<Bundle>) -> Result<Arc<ProcessCode>, HostError> {
        let hash = bundle.content_hash();
        if let Some(c) = self
            .process_code
            .read()
            .ok()
            .and_then(|m| m.get(&hash).and_then(std::sync::Weak::upgrade))
        {
            return Ok(c);
        }
        let root = match &self.data_dir {
            Some(d) => d.join("process"),
            None => match self.process_tmp.get() {
                Some(t) => t.path().to_path_buf(),
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("warden-process-")
                        .tempdir()
                        .map_err(|e| {
                            HostError::Refused(format!(
                                "a folder to unpack process extensions in: {e}"
                            ))
                        })?;
                    let path = t.path().to_path_buf();
                    let _ = self.process_tmp.set(t);
                    self.process_tmp
                        .get()
                        .map_or(path, |t| t.path().to_path_buf())
                }
            },
        };
        let code = Arc::new(ProcessCode::unpack(bundle, &root, &self.policy.process)?);
        if let Ok(mut m) = self.process_code.write() {
            m.retain(|_, c| c.strong_count() > 0);
            m.insert(hash, Arc::downgrade(&code));
        }
        Ok(code)
    }

    /// Whether the component of this bundle is prepared (compiled, pre-linked) in memory.
    pub(crate) fn is_prepared(&self, hash: &warden_bundle::ContentHash) -> bool {
        self.prepared_of(hash).is_some()
    }

    fn prepared_of(&self, hash: &warden_bundle::ContentHash) -> Option<Arc<Prepared>> {
        self.prepared.read().ok().and_then(|m| m.get(hash).cloned())
    }

    /// The prepared component for these verified bytes, compiled on first use.
    pub(crate) fn prepare(&self, bundle: &Verified<Bundle>) -> Result<Arc<Prepared>, HostError> {
        let hash = bundle.content_hash();
        if let Some(p) = self.prepared_of(&hash) {
            return Ok(p);
        }
        // One compile per component at a time: whoever comes second waits and finds it.
        let gate = {
            let mut m = self
                .preparing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(m.entry(hash).or_default())
        };
        let _one = gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = self.prepared_of(&hash) {
            return Ok(p);
        }
        let done = || {
            self.preparing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&hash);
        };
        let p = match self.runtime.prepare(bundle) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                done();
                return Err(e.into());
            }
        };
        if let warden_runtime::CodeSource::Compiled {
            rejected: Some(rejected),
        } = p.code_source()
        {
            // Compiled again, so the load goes on; but an entry that failed its MAC was
            // written by someone other than this host, and the operator must hear of it.
            let outcome = if rejected.tampering {
                Outcome::Invalid
            } else {
                Outcome::Error
            };
            self.audit.append(
                Record::new(Event::Load, self.ids.next())
                    .with_content_hash(hash)
                    .with_outcome(outcome)
                    .with_message(format!(
                        "compiled code in the cache was not loaded (compiled again): {}",
                        rejected.message
                    )),
            )?;
        }
        if let Ok(mut m) = self.prepared.write() {
            m.insert(hash, Arc::clone(&p));
        }
        // Removed once the prepared component is in the map: whoever comes next finds it.
        done();
        Ok(p)
    }
}

/// On storage several runners share, an install with folder mounts is refused unless the
/// operator accepted per-runner folders ([`crate::LocalFiles`]): its files would be kept by
/// each runner in its own data dir, and differ from runner to runner.
pub(crate) fn refuse_local_files(
    inner: &crate::host::Inner,
    eff: &warden_manifest::Effective,
) -> Result<(), HostError> {
    let folders = eff
        .mounts
        .iter()
        .any(|m| m.source == warden_manifest::MountSource::Data);
    if folders && inner.local_files == crate::LocalFiles::Refused {
        return Err(HostError::Refused(
            "its folder mounts would be kept by each runner in its own data dir, not in the \
             storage the runners share (a tenant's files would differ from runner to runner); \
             the operator may accept that with [storage] local_files = true"
                .into(),
        ));
    }
    Ok(())
}
