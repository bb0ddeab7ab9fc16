//! Managing what a service serves: tenants and their API keys, publishing verified bundles,
//! installing them for tenants with the operator's grant, uninstalling. The same rules for the
//! CLI (`warden tenant create`, `warden install`, ...) and the admin API.
//!
//! Every publish and install verifies the bundle and its signature against the host's trust
//! bundle, checks the grant against the policy (as a load would, without compiling) and is
//! audited, refusals included. Install rules are `warden_registry::plan`'s.

use std::sync::Arc;
use std::time::SystemTime;

use warden_audit::{Event, Outcome, Record};
use warden_bundle::{Bundle, ContentHash};
use warden_manifest::{ExtensionId, Grant, Kind, Manifest, TenantName, effective};
use warden_registry::{
    ApiKey, Approval, BlobStore, InstallRecord, Plan, PlanError, Published, Registry, RegistryError,
};
use warden_trust::{Envelope, TrustBundle, Verified, verify};

use crate::error::HostError;
use crate::host::{Host, Inner};
use crate::installed::{ExtensionInfo, Retired};

/// What an install did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub record: InstallRecord,
    pub plan: Plan,
}

/// The management view of a host on its registry and blobs ([`Host::admin`]).
///
/// One view is one admin action: every audit record it writes carries its one request id
/// (drawn when the view is made, or the caller's, [`Admin::with_request_id`]), so the records
/// of a publish, an install and its upgrade are found by the id the client was answered with.
pub struct Admin<'h> {
    inner: &'h Arc<Inner>,
    registry: Arc<dyn Registry>,
    blobs: Arc<dyn BlobStore>,
    request_id: String,
}

impl Host {
    /// The management view: the registry and blobs of the host's storage. A host without a
    /// registry (no data dir, no storage given) has none.
    pub fn admin(&self) -> Result<Admin<'_>, HostError> {
        let Some((registry, blobs)) = self.inner.registry.clone() else {
            return Err(HostError::NoRegistry);
        };
        Ok(Admin {
            inner: &self.inner,
            registry,
            blobs,
            request_id: self.inner.ids.next(),
        })
    }

    /// Replaces the trust bundle, as [`Host::set_trust`], audited under `request_id` (the
    /// admin request that asked for it, so its record is found by the id it was answered
    /// with).
    pub fn set_trust_as(
        &self,
        request_id: String,
        trust: TrustBundle,
        what: &str,
    ) -> Result<(), HostError> {
        self.inner
            .change_gate(Record::new(Event::TrustReload, request_id.clone()).with_target(what))?;
        let publishers = trust.publishers().len();
        let trust = Arc::new(trust);
        {
            let mut current = self
                .inner
                .trust
                .write()
                .map_err(|_| HostError::Poisoned("trust bundle"))?;
            *current = Arc::clone(&trust);
        }
        let old = std::mem::take(
            &mut *self
                .inner
                .extensions
                .write()
                .map_err(|_| HostError::Poisoned("extension table"))?,
        );
        let mut stopped = 0;
        for loaded in old
            .into_values()
            .flat_map(std::collections::HashMap::into_values)
        {
            // One the new bundle no longer trusts stops at once, with the calls running on it;
            // the others finish theirs and are verified again on their next call.
            let how = match loaded.signed.still_trusted(&trust) {
                Ok(()) => Retired::Replaced,
                Err(e) => {
                    stopped += 1;
                    Retired::Untrusted(e.to_string().into())
                }
            };
            self.inner.retire(loaded, how);
        }
        let stopped = match stopped {
            0 => String::new(),
            n => format!("; {n} loaded install(s) no longer verify: their calls were stopped"),
        };
        self.inner.record_change(
            Record::new(Event::TrustReload, request_id)
                .with_target(what)
                .with_outcome(Outcome::Ok)
                .with_message(format!(
                    "{publishers} publishers trusted; every install is verified again on its next call{stopped}"
                )),
        )?;
        Ok(())
    }

    /// Records, under `request_id`, a trust reload that did not happen (the new bundle could
    /// not be read); the trust in force stays.
    pub fn trust_reload_failed_as(
        &self,
        request_id: String,
        what: &str,
        error: &(dyn std::error::Error + 'static),
    ) -> Result<(), HostError> {
        self.inner.audit.append(
            Record::new(Event::TrustReload, request_id)
                .with_target(what)
                .with_outcome(Outcome::Invalid)
                .with_message(format!(
                    "the trust bundle was not reloaded (the one in force stays): {}",
                    warden_call::text::chain(error)
                )),
        )?;
        Ok(())
    }
}

impl Admin<'_> {
    /// Records this view's actions under `id` (the request that asked for them) instead of
    /// the id drawn when it was made.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = id.into();
        self
    }

    /// The request id this view's audit records carry.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub(crate) fn inner(&self) -> &Inner {
        self.inner
    }

    pub fn registry(&self) -> &dyn Registry {
        &*self.registry
    }

    /// Creates a tenant; returns its API key, to be shown once (only its hash is kept).
    pub fn create_tenant(&self, name: &TenantName) -> Result<ApiKey, HostError> {
        let record = Record::new(Event::Tenant, self.request_id.clone()).with_tenant(name);
        self.inner.change_gate(record.clone())?;
        let key = ApiKey::generate();
        let created = self.registry.create_tenant(name, &key.hash());
        let record = match &created {
            Ok(()) => record.with_outcome(Outcome::Ok),
            Err(e @ RegistryError::TenantExists(_)) => {
                record.with_outcome(Outcome::Invalid).with_error(e)
            }
            Err(e) => record.with_outcome(Outcome::Error).with_error(e),
        };
        self.inner.record_change(record)?;
        created?;
        Ok(key)
    }

    /// Verifies `bundle` with its DSSE envelope `signature` (JSON) against the trust bundle,
    /// stores the bytes and records the publication. Audited (`publish`, or a
    /// `verification-failure` naming `what`).
    pub fn publish(
        &self,
        what: &str,
        bundle: Vec<u8>,
        signature: &[u8],
    ) -> Result<Verified<Bundle>, HostError> {
        self.inner
            .change_gate(Record::new(Event::Publish, self.request_id.clone()).with_target(what))?;
        let record =
            Record::new(Event::VerificationFailure, self.request_id.clone()).with_target(what);
        let verified = self.verified(bundle, signature, record)?;
        // Refused (and audited) before anything is stored: what the registry would refuse,
        // asked before the compile (red team: a publish answered 409 after compiling for 52 s,
        // and left its blob and compiled code), then a component that cannot load.
        let refused = |e: HostError| -> Result<Verified<Bundle>, HostError> {
            let ext = &verified.manifest().extension;
            let record = Record::new(Event::Publish, self.request_id.clone())
                .with_extension(&ext.id)
                .with_version(&ext.version)
                .with_content_hash(verified.content_hash())
                .with_target(what)
                .with_outcome(outcome_of(&e))
                .with_error(&e);
            self.inner.record_change(record)?;
            Err(e)
        };
        if let Some(e) = self
            .registry
            .publish_refusal(&publication(&verified, signature))?
        {
            return refused(e.into());
        }
        if let Err(e) = self.compile(&verified, false) {
            return refused(e);
        }
        self.store_publication(&verified, what, signature)?;
        Ok(verified)
    }

    /// Compiles a component (or Extism plug-in) now, at publish or install, never on a tenant's first request:
    /// on the host's compile pool (in the compile child, within `[policy.compile]`), and
    /// stored in the code cache. A component that does not compile is refused before anything
    /// is stored. `keep`: also keep it in memory, pre-linked, for the calls to come (an
    /// install; a publication alone is only cached, so publishing many versions costs disk,
    /// not memory). Process extensions have nothing to compile.
    fn compile(&self, verified: &Verified<Bundle>, keep: bool) -> Result<(), HostError> {
        use warden_manifest::Kind;
        match verified.manifest().extension.kind {
            // Extism plug-ins (core modules) go the components' way: the compile child, the
            // code cache.
            Kind::Component | Kind::Extism if keep => self.inner.prepare(verified).map(drop),
            Kind::Component | Kind::Extism => Ok(self.inner.runtime.prepare(verified).map(drop)?),
            Kind::Process | Kind::Remote => Ok(()),
        }
    }

    /// Stores a verified bundle's bytes and records its publication (refused when its id and
    /// version name other content, or its id is pinned to another publisher). Audited
    /// (`publish`).
    fn store_publication(
        &self,
        verified: &Verified<Bundle>,
        what: &str,
        signature: &[u8],
    ) -> Result<(), HostError> {
        let ext = &verified.manifest().extension;
        let hash = verified.content_hash();
        let record = Record::new(Event::Publish, self.request_id.clone())
            .with_extension(&ext.id)
            .with_version(&ext.version)
            .with_content_hash(hash)
            .with_target(what);
        let stored = (|| -> Result<(), HostError> {
            let put = self.blobs.put(verified.bytes())?;
            if put != hash {
                return Err(HostError::BlobMismatch {
                    expected: hash,
                    found: put,
                });
            }
            self.registry.publish(&publication(verified, signature))?;
            Ok(())
        })();
        let record = match &stored {
            Ok(()) => record.with_outcome(Outcome::Ok),
            Err(e) if is_refusal(e) => record.with_outcome(Outcome::Denied).with_error(e),
            Err(e) => record.with_outcome(Outcome::Error).with_error(e),
        };
        self.inner.record_change(record)?;
        stored
    }

    /// Publishes `bundle` (see [`Admin::publish`]) and installs it for `tenant`. `grant`:
    /// the operator's grant, which also approves everything the manifest requests; `None`
    /// keeps the grant and approval of the installed version (an upgrade that requests more
    /// is then refused). `force` allows a lower version. Audited (`install` or `upgrade`,
    /// refusals as `denied`).
    ///
    /// Everything that can refuse the install (tenant, install rules, policy) is decided
    /// before the bundle is published: a refused install leaves nothing in the registry.
    pub fn install(
        &self,
        tenant: &TenantName,
        what: &str,
        bundle: Vec<u8>,
        signature: &[u8],
        grant: Option<&Grant>,
        force: bool,
    ) -> Result<Installed, HostError> {
        let inner = self.inner;
        // A tenant that does not exist is refused before anything is verified or stored.
        if self.registry.tenant(tenant)?.is_none() {
            let e = HostError::from(RegistryError::NoTenant(tenant.clone()));
            inner.audit.append(
                Record::new(Event::Install, self.request_id.clone())
                    .with_tenant(tenant)
                    .with_target(what)
                    .with_outcome(Outcome::Denied)
                    .with_error(&e),
            )?;
            return Err(e);
        }
        let record = Record::new(Event::VerificationFailure, self.request_id.clone())
            .with_tenant(tenant)
            .with_target(what);
        let verified = self.verified(bundle, signature, record)?;
        self.install_verified(tenant, &verified, grant, force, Some((what, signature)))
    }

    /// Installs an already published bundle (by its content hash) for `tenant`: its bytes and
    /// signature from the registry, verified again against the trust bundle now, then as
    /// [`Admin::install`].
    pub fn install_published(
        &self,
        tenant: &TenantName,
        hash: &ContentHash,
        grant: Option<&Grant>,
        force: bool,
    ) -> Result<Installed, HostError> {
        let inner = self.inner;
        inner.change_gate(
            Record::new(Event::Install, self.request_id.clone())
                .with_tenant(tenant)
                .with_content_hash(*hash),
        )?;
        let what = format!("published {hash}");
        let record = Record::new(Event::VerificationFailure, self.request_id.clone())
            .with_tenant(tenant)
            .with_content_hash(*hash)
            .with_target(&what);
        let verified = match self.stored(hash) {
            Ok((signature, bytes)) => self.verified(bytes, &signature, record)?,
            Err(e) => {
                inner
                    .audit
                    .append(record.with_outcome(Outcome::Denied).with_error(&e))?;
                return Err(e);
            }
        };
        self.install_verified(tenant, &verified, grant, force, None)
    }

    /// Installs `verified` for `tenant`; `publish` (what it is, its signature): publish it
    /// first, once every check of the install has passed.
    fn install_verified(
        &self,
        tenant: &TenantName,
        verified: &Verified<Bundle>,
        grant: Option<&Grant>,
        force: bool,
        publish: Option<(&str, &[u8])>,
    ) -> Result<Installed, HostError> {
        let inner = self.inner;
        let manifest = verified.manifest();
        let ext = &manifest.extension;
        let hash = verified.content_hash();
        let mut record = Record::new(Event::Install, self.request_id.clone())
            .with_tenant(tenant)
            .with_extension(&ext.id)
            .with_version(&ext.version)
            .with_content_hash(hash);
        let result = (|| -> Result<Installed, HostError> {
            if self.registry.tenant(tenant)?.is_none() {
                return Err(RegistryError::NoTenant(tenant.clone()).into());
            }
            let existing = self.registry.install(tenant, &ext.id)?;
            let plan =
                warden_registry::plan(existing.as_ref(), manifest, &hash, grant.is_some(), force)?;
            if grant.is_none()
                && let Some(old) = &existing
            {
                self.refuse_new_kind(old, manifest)?;
            }
            let given = grant.is_some();
            let (grant, approved) = match (grant, &existing) {
                (Some(g), _) => (g.clone(), Approval::of(&manifest.permissions)),
                (None, Some(old)) => (old.grant.clone(), old.approved.clone()),
                (None, None) => (Grant::None, Approval::of(&manifest.permissions)),
            };
            // The grant against the policy, as a load would check it (limits within the
            // ceilings, capabilities the policy allows), without compiling.
            let eff = effective(manifest, &grant, &inner.policy)?;
            crate::load::refuse_local_files(inner, &eff)?;
            // A grant the operator wrote out item by item that names a forbidden capability
            // is a mistake to report (`all` grants what the policy allows).
            if given && matches!(grant, Grant::List(_)) && !eff.forbidden_by_policy.is_empty() {
                let names: Vec<String> = eff
                    .forbidden_by_policy
                    .iter()
                    .map(|c| c.to_string())
                    .collect();
                return Err(warden_manifest::EffectiveError::Forbidden(names.join(", ")).into());
            }
            // Compiled now (or found compiled), so the tenant's first request does not wait
            // for it, and a component that cannot be compiled is refused before it is
            // published or installed.
            // What the registry would refuse of the publication, before the compile.
            if let Some((_, signature)) = publish
                && let Some(e) = self
                    .registry
                    .publish_refusal(&publication(verified, signature))?
            {
                return Err(e.into());
            }
            self.compile(verified, true)?;
            // Only now, with nothing left to refuse the install but the registry itself.
            if let Some((what, signature)) = publish {
                self.store_publication(verified, what, signature)?;
            }
            let install = InstallRecord {
                tenant: tenant.clone(),
                extension: ext.id.clone(),
                version: ext.version.clone(),
                content_hash: hash,
                grant,
                approved,
                installed: SystemTime::now(),
            };
            let expected = existing.as_ref().map(|e| &e.content_hash);
            self.registry.put_install(&install, expected)?;
            Ok(Installed {
                record: install,
                plan,
            })
        })();
        record = match &result {
            Ok(i) => {
                let r = if i.plan.is_change_of_version() {
                    Record::new(Event::Upgrade, record.request_id())
                        .with_tenant(tenant)
                        .with_extension(&ext.id)
                        .with_version(&ext.version)
                        .with_content_hash(hash)
                } else {
                    record
                };
                r.with_outcome(Outcome::Ok)
                    .with_message(describe(&i.plan, &i.record.grant))
            }
            Err(e) => record.with_outcome(outcome_of(e)).with_error(e),
        };
        // Stamped once the install is committed (see `Inner::record_change`).
        inner.audit.append(record.stamped_now())?;
        result
    }

    /// A version that runs as another kind than the installed one (a component becoming a
    /// native process) is approved anew, like a new permission: refused without a grant.
    fn refuse_new_kind(&self, old: &InstallRecord, manifest: &Manifest) -> Result<(), HostError> {
        let (_, bytes) = self.stored(&old.content_hash)?;
        let before = Bundle::from_bytes(bytes, &self.inner.bundle_limits)?;
        let (was, now) = (before.manifest().extension.kind, manifest.extension.kind);
        if was == now {
            return Ok(());
        }
        let word = |k: Kind| format!("{k:?}").to_lowercase();
        Err(PlanError::NeedsApproval {
            id: manifest.extension.id.to_string(),
            from: old.version.to_string(),
            to: manifest.extension.version.to_string(),
            missing: vec![format!("runs as kind {} (was {})", word(now), word(was))],
        }
        .into())
    }

    /// Removes `tenant`'s install of `extension`: it is not served from now on. Audited.
    pub fn uninstall(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<bool, HostError> {
        let inner = self.inner;
        let record = Record::new(Event::Uninstall, self.request_id.clone())
            .with_tenant(tenant)
            .with_extension(extension);
        inner.change_gate(record.clone())?;
        let removed = self.registry.remove_install(tenant, extension);
        let record = match &removed {
            Ok(true) => record.with_outcome(Outcome::Ok),
            Ok(false) => record
                .with_outcome(Outcome::Invalid)
                .with_message("not installed"),
            Err(e) => record.with_outcome(Outcome::Error).with_error(e),
        };
        // Calls of it in this process, waiting or running, stop at once too, recorded or not.
        crate::tenant::Tenant::new(inner, tenant.clone()).withdraw(extension);
        inner.record_change(record)?;
        Ok(removed?)
    }

    /// The installs of `tenant`, or of every tenant.
    pub fn installs(&self, tenant: Option<&TenantName>) -> Result<Vec<InstallRecord>, HostError> {
        Ok(self.registry.installs(tenant)?)
    }

    /// Loads `tenant`'s install of `extension` for calls, from the registry: the bytes from
    /// the blob store (checked against their hash), verified again with the published
    /// signature against the host's trust bundle *now* (a revoked key or a removed publisher
    /// stops the install from being served), then loaded with the install's grant. A failed
    /// verification is audited.
    pub fn load_installed(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<ExtensionInfo, HostError> {
        let inner = self.inner;
        let install =
            self.registry
                .install(tenant, extension)?
                .ok_or_else(|| HostError::NotInstalled {
                    tenant: tenant.clone(),
                    extension: extension.clone(),
                })?;
        let hash = install.content_hash;
        let what = format!(
            "{extension} {} ({hash}) for tenant {tenant}",
            install.version
        );
        let stored = self.stored(&hash);
        let record = Record::new(Event::VerificationFailure, self.request_id.clone())
            .with_tenant(tenant)
            .with_extension(extension)
            .with_version(&install.version)
            .with_content_hash(hash)
            .with_target(&what);
        let verified = match stored {
            Ok((signature, bytes)) => self.verified(bytes, &signature, record)?,
            Err(e) => {
                inner
                    .audit
                    .append(record.with_outcome(Outcome::Denied).with_error(&e))?;
                return Err(e);
            }
        };
        let view = crate::tenant::Tenant::new(self.inner, tenant.clone());
        view.load_as(verified, &install.grant, true)
    }

    /// Compiles (or loads from the code cache) and pre-links the components installed for any
    /// tenant that this host has not prepared yet, skipping the content hashes in `tried` and
    /// adding the ones it tries: so a runner that did not make an install (another runner of
    /// the fleet did, or this one restarted) has it ready before a tenant's first request.
    /// Each is verified as a call's load would (a failure is audited once, by that load).
    /// Returns how many it prepared.
    pub fn warm(
        &self,
        tried: &mut std::collections::HashSet<ContentHash>,
    ) -> Result<usize, HostError> {
        let mut prepared = 0;
        let installs = self.registry.installs(None)?;
        self.withdraw_uninstalled(&installs);
        // What no install names any more (uninstalled, upgraded, here or by another runner)
        // and no loaded install holds is forgotten.
        let installed: std::collections::HashSet<ContentHash> =
            installs.iter().map(|i| i.content_hash).collect();
        self.inner.prune_prepared(|h| installed.contains(h));
        for install in installs {
            let hash = install.content_hash;
            if !tried.insert(hash) || self.inner.is_prepared(&hash) {
                continue;
            }
            // A failure (unverifiable, refused) is left to the call's load, which reports and
            // audits it to the caller; it is not tried again here.
            let Ok((signature, bytes)) = self.stored(&hash) else {
                continue;
            };
            let Ok(bundle) = warden_bundle::Bundle::from_bytes(bytes, &self.inner.bundle_limits)
            else {
                continue;
            };
            if matches!(
                bundle.manifest().extension.kind,
                warden_manifest::Kind::Process | warden_manifest::Kind::Remote
            ) {
                continue;
            }
            let Ok(verified) = self.verify_quietly(bundle, &signature) else {
                continue;
            };
            match self.inner.prepare(&verified) {
                Ok(_) => prepared += 1,
                // Busy compiling others (publishes): the next pass tries again.
                Err(e) if e.is_busy() => {
                    tried.remove(&hash);
                }
                Err(_) => {}
            }
        }
        Ok(prepared)
    }

    /// Takes away, with their calls, the installs loaded here that `installs` (the registry's
    /// list) no longer holds: uninstalled by another process, a runner of the same fleet, whose
    /// running calls would otherwise run on to their time limit.
    fn withdraw_uninstalled(&self, installs: &[InstallRecord]) {
        let listed: std::collections::HashSet<(&TenantName, &ExtensionId)> =
            installs.iter().map(|i| (&i.tenant, &i.extension)).collect();
        let stale: Vec<Arc<crate::installed::Loaded>> = match self.inner.extensions.read() {
            Ok(loaded) => loaded
                .iter()
                .flat_map(|(t, exts)| exts.iter().map(move |(e, l)| (t, e, l)))
                .filter(|(t, e, l)| l.installed && !listed.contains(&(*t, *e)))
                .map(|(_, _, l)| Arc::clone(l))
                .collect(),
            Err(_) => return,
        };
        for record in stale {
            // Installed again since the list was read? Asked once more, to be sure; and only
            // this record is withdrawn, not one loaded since.
            let (tenant, extension) = (&record.info.tenant, &record.info.id);
            if matches!(self.registry.install(tenant, extension), Ok(None)) {
                crate::tenant::Tenant::new(self.inner, tenant.clone()).withdraw_record(&record);
            }
        }
    }

    /// A published bundle, verified again now (its bytes against their hash, its signature
    /// against the trust bundle); a failure is audited.
    pub fn verified_published(&self, hash: &ContentHash) -> Result<Verified<Bundle>, HostError> {
        let inner = self.inner;
        let record = Record::new(Event::VerificationFailure, self.request_id.clone())
            .with_content_hash(*hash)
            .with_target(format!("published {hash}"));
        match self.stored(hash) {
            Ok((signature, bytes)) => self.verified(bytes, &signature, record),
            Err(e) => {
                inner
                    .audit
                    .append(record.with_outcome(Outcome::Denied).with_error(&e))?;
                Err(e)
            }
        }
    }

    /// The signature and bytes of a published bundle (the bytes checked against their hash).
    pub(crate) fn stored(&self, hash: &ContentHash) -> Result<(Vec<u8>, Vec<u8>), HostError> {
        let published = self
            .registry
            .published(hash)?
            .ok_or_else(|| HostError::NotPublished(*hash))?;
        let bytes = self
            .blobs
            .get(hash)?
            .ok_or_else(|| RegistryError::Damaged(format!("no blob for published {hash}")))?;
        Ok((published.signature, bytes))
    }

    /// `bundle` verified with its DSSE envelope `signature` against the host's trust bundle; a
    /// failure is audited as `record` (a `verification-failure`) and returned.
    fn verified(
        &self,
        bundle: Vec<u8>,
        signature: &[u8],
        record: Record,
    ) -> Result<Verified<Bundle>, HostError> {
        let inner = self.inner;
        let result = (|| -> Result<Verified<Bundle>, HostError> {
            let envelope = Envelope::from_json(signature)?;
            let bundle = Bundle::from_bytes(bundle, &inner.bundle_limits)?;
            Ok(verify(bundle, &envelope, &*inner.trust()?)?)
        })();
        if let Err(e) = &result {
            inner
                .audit
                .append(record.with_outcome(Outcome::Denied).with_error(e))?;
        }
        result
    }

    /// [`Admin::verified`] without a record of a failure (for [`Admin::warm`], whose
    /// failures the call's load reports).
    fn verify_quietly(
        &self,
        bundle: Bundle,
        signature: &[u8],
    ) -> Result<Verified<Bundle>, HostError> {
        let envelope = Envelope::from_json(signature)?;
        Ok(verify(bundle, &envelope, &*self.inner.trust()?)?)
    }

    /// The bytes of a published bundle, checked against their hash.
    pub fn blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.blobs.get(hash)?)
    }
}

/// The registry's row for publishing `verified` with `signature` now.
fn publication(verified: &Verified<Bundle>, signature: &[u8]) -> Published {
    let ext = &verified.manifest().extension;
    Published {
        content_hash: verified.content_hash(),
        id: ext.id.clone(),
        version: ext.version.clone(),
        publisher: ext.publisher.clone(),
        signature: signature.to_vec(),
        published: SystemTime::now(),
    }
}

/// How a refused publish or install is recorded: a refusal by the rules or the policy is
/// `denied`, a component that cannot be compiled (or is over a compile limit) `invalid`.
fn outcome_of(e: &HostError) -> Outcome {
    match e {
        e if is_refusal(e) => Outcome::Denied,
        HostError::Load(l) if l.is_about_the_component() => Outcome::Invalid,
        e if e.is_busy() => Outcome::Busy,
        _ => Outcome::Error,
    }
}

/// A decision against the install (as opposed to a failure of storage).
fn is_refusal(e: &HostError) -> bool {
    matches!(
        e,
        HostError::Plan(_)
            | HostError::Policy(_)
            | HostError::Registry(
                RegistryError::NoTenant(_)
                    | RegistryError::VersionTaken { .. }
                    | RegistryError::PublisherPinned { .. }
            )
    )
}

fn describe(plan: &Plan, grant: &Grant) -> String {
    format!("{plan}; grant {grant}")
}
