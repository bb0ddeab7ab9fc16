//! What an operator reviews before deciding: the facts of a published bundle (who published
//! and signed it, what it requests, its limits), of an install (plus what it may actually do),
//! and of a proposed install or upgrade (the permission diff against what was approved).
//! Read-only: nothing here changes the registry or writes an audit record.

use std::sync::Arc;

use warden_bundle::{Bundle, ContentHash};
use warden_manifest::{Effective, ExtensionId, Limits, Manifest, TenantName, effective};
use warden_registry::{Approval, InstallRecord, Plan, PlanError, Published, requested_items};
use warden_trust::{Envelope, TrustBundle};

use crate::admin::Admin;
use crate::error::HostError;

/// A published bundle, as an operator needs to see it.
#[derive(Debug, Clone)]
pub struct BundleFacts {
    pub published: Published,
    /// The ids of the keys whose signatures its envelope carries.
    pub signers: Vec<String>,
    pub manifest: Arc<Manifest>,
    /// Its limits under the operator's policy (the manifest's, or its profile's).
    pub limits: Limits,
}

impl BundleFacts {
    /// The permission atoms it requests, each with the grant item that grants it alone
    /// (`kv`, `secret:NAME`, `network:HOST`, `call:ID`, `fs:PATH`).
    pub fn requested(&self) -> Vec<(String, String)> {
        requested_items(&self.manifest.permissions)
            .into_iter()
            .map(|(atom, item)| {
                let grant = warden_manifest::Grant::List(vec![item]).to_string();
                (atom, grant)
            })
            .collect()
    }
}

/// One install, with its bundle and what it may do now.
#[derive(Debug, Clone)]
pub struct InstallFacts {
    pub record: InstallRecord,
    pub bundle: Arc<BundleFacts>,
    /// Requested ∩ granted ∩ policy; the error when the policy no longer admits it.
    pub effective: Result<Effective, String>,
}

/// One limit higher in the proposed bundle than in the installed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRaised {
    pub limit: &'static str,
    /// `None`: no limit (fuel not metered).
    pub from: Option<u64>,
    pub to: Option<u64>,
}

/// What installing a published bundle for a tenant would do, before anyone decides.
#[derive(Debug, Clone)]
pub struct Review {
    pub installed: Option<(InstallRecord, Arc<BundleFacts>)>,
    pub proposed: Arc<BundleFacts>,
    /// As the install rules decide it without a new grant and without force: a refusal that
    /// a grant (approval) or force would lift is in `needs_approval` / `needs_force`.
    pub plan: Result<Plan, PlanError>,
    /// A lower version: installing it is a rollback that needs force.
    pub needs_force: bool,
    /// Atoms requested that the installed version's approval does not cover.
    pub added: Vec<String>,
    /// Atoms the installed version requested that the proposed one does not.
    pub removed: Vec<String>,
    pub limits_raised: Vec<LimitRaised>,
    /// What else the proposed manifest changes, in words: how it runs (kind, entry,
    /// arguments), a UI it serves, endpoints and methods it adds.
    pub changes: Vec<String>,
}

impl Review {
    /// Whether the install needs a new grant (approval) to go ahead.
    pub fn needs_approval(&self) -> bool {
        self.installed.is_some() && (!self.added.is_empty() || self.kind_changes())
    }

    /// Whether the proposed version runs as another kind (a component becoming a native
    /// process): approved anew, like a new permission.
    pub fn kind_changes(&self) -> bool {
        self.installed.as_ref().is_some_and(|(_, b)| {
            b.manifest.extension.kind != self.proposed.manifest.extension.kind
        })
    }
}

impl Admin<'_> {
    /// The facts of the published bundle `hash` (its bytes read and parsed, not verified
    /// again: for showing, not for running).
    pub fn bundle_facts(&self, hash: &ContentHash) -> Result<BundleFacts, HostError> {
        let published = self
            .registry()
            .published(hash)?
            .ok_or(HostError::NotPublished(*hash))?;
        let (_, bytes) = self.stored(hash)?;
        let bundle = Bundle::from_bytes(bytes, &self.inner().bundle_limits)?;
        let signers = Envelope::from_json(&published.signature)
            .map(|e| {
                e.signatures()
                    .iter()
                    .map(|s| s.keyid().as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let manifest = Arc::new(bundle.manifest().clone());
        let limits = manifest.limits.resolve(self.inner().policy.profile);
        Ok(BundleFacts {
            published,
            signers,
            manifest,
            limits,
        })
    }

    /// Every published bundle, newest first.
    pub fn published_bundles(&self) -> Result<Vec<Published>, HostError> {
        let mut all = self.registry().image()?.published;
        all.sort_by_key(|b| std::cmp::Reverse(b.published));
        Ok(all)
    }

    /// The installs of `tenant` (or all), each with its facts; `facts` gives a bundle's facts
    /// (a caller's cache in front of [`Admin::bundle_facts`]).
    pub fn install_facts(
        &self,
        tenant: Option<&TenantName>,
        facts: &dyn Fn(&ContentHash) -> Result<Arc<BundleFacts>, HostError>,
    ) -> Result<Vec<InstallFacts>, HostError> {
        self.installs(tenant)?
            .into_iter()
            .map(|record| {
                let bundle = facts(&record.content_hash)?;
                let effective = effective(&bundle.manifest, &record.grant, &self.inner().policy)
                    .map_err(|e| e.to_string());
                Ok(InstallFacts {
                    record,
                    bundle,
                    effective,
                })
            })
            .collect()
    }

    /// What installing the published bundle `hash` for `tenant` would do: the plan, and what
    /// it asks for beyond the installed version's approval.
    pub fn review(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        hash: &ContentHash,
        facts: &dyn Fn(&ContentHash) -> Result<Arc<BundleFacts>, HostError>,
    ) -> Result<Review, HostError> {
        if self.registry().tenant(tenant)?.is_none() {
            return Err(warden_registry::RegistryError::NoTenant(tenant.clone()).into());
        }
        let proposed = facts(hash)?;
        if proposed.manifest.extension.id != *extension {
            return Err(HostError::Refused(format!(
                "bundle {hash} is {}, not {extension}",
                proposed.manifest.extension.id
            )));
        }
        let installed = match self.registry().install(tenant, extension)? {
            Some(r) => {
                let b = facts(&r.content_hash)?;
                Some((r, b))
            }
            None => None,
        };
        let old = installed.as_ref().map(|(r, _)| r);
        let plan = warden_registry::plan(old, &proposed.manifest, hash, false, false);
        let needs_force = matches!(plan, Err(PlanError::Lower { .. }));
        let requested = Approval::of(&proposed.manifest.permissions);
        let changes = installed
            .as_ref()
            .map(|(_, b)| other_changes(&b.manifest, &proposed.manifest))
            .unwrap_or_default();
        let (added, removed, limits_raised) = match &installed {
            Some((r, b)) => {
                let before = Approval::of(&b.manifest.permissions);
                (
                    r.approved
                        .missing(&requested)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    requested
                        .missing(&before)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    raised(&b.limits, &proposed.limits),
                )
            }
            None => (
                requested.atoms().map(str::to_owned).collect(),
                Vec::new(),
                Vec::new(),
            ),
        };
        Ok(Review {
            installed,
            proposed,
            plan,
            needs_force,
            added,
            removed,
            limits_raised,
            changes,
        })
    }

    /// The trust bundle in force.
    pub fn trust_bundle(&self) -> Result<Arc<TrustBundle>, HostError> {
        self.inner().trust()
    }
}

/// A kind in words.
pub fn kind_word(k: warden_manifest::Kind) -> String {
    format!("{k:?}").to_lowercase()
}

/// What `to` changes of `from` besides its permissions and limits, in words.
fn other_changes(from: &Manifest, to: &Manifest) -> Vec<String> {
    let (f, t) = (&from.extension, &to.extension);
    let mut out = Vec::new();
    if f.kind != t.kind {
        out.push(format!(
            "runs as kind {} (was {})",
            kind_word(t.kind),
            kind_word(f.kind)
        ));
    }
    if f.entry != t.entry {
        out.push(format!("entry {} (was {})", t.entry, f.entry));
    }
    if f.args != t.args {
        out.push(format!("arguments {:?} (was {:?})", t.args, f.args));
    }
    match (&f.ui, &t.ui) {
        (None, Some(ui)) => out.push(format!("serves a UI from {ui} (none before)")),
        (Some(a), Some(b)) if a != b => out.push(format!("serves its UI from {b} (was {a})")),
        (Some(_), None) => out.push("no longer serves a UI".to_owned()),
        _ => {}
    }
    let endpoint = |e: &warden_manifest::Endpoint| format!("{} {}", e.method, e.path.as_str());
    let before: Vec<String> = from.endpoints.iter().map(endpoint).collect();
    for e in to.endpoints.iter().map(endpoint) {
        if !before.contains(&e) {
            out.push(format!("new endpoint {e}"));
        }
    }
    for m in &to.methods {
        if !from.methods.contains(m) {
            out.push(format!("new method {}", m.as_str()));
        }
    }
    out
}

/// The limits of `to` above those of `from`.
fn raised(from: &Limits, to: &Limits) -> Vec<LimitRaised> {
    let pairs: [(&'static str, Option<u64>, Option<u64>); 6] = [
        (
            "max_memory_bytes",
            Some(from.max_memory.bytes()),
            Some(to.max_memory.bytes()),
        ),
        (
            "max_execution_time_ms",
            Some(millis(from.max_execution_time)),
            Some(millis(to.max_execution_time)),
        ),
        (
            "max_concurrent_calls",
            Some(u64::from(from.max_concurrent_calls)),
            Some(u64::from(to.max_concurrent_calls)),
        ),
        (
            "max_fuel",
            from.max_fuel.map(std::num::NonZeroU64::get),
            to.max_fuel.map(std::num::NonZeroU64::get),
        ),
        (
            "max_request_bytes",
            Some(from.max_request_bytes.bytes()),
            Some(to.max_request_bytes.bytes()),
        ),
        (
            "max_response_bytes",
            Some(from.max_response_bytes.bytes()),
            Some(to.max_response_bytes.bytes()),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, f, t)| match (f, t) {
            (Some(f), Some(t)) => t > f,
            // Metered before, unmetered now: more.
            (Some(_), None) => true,
            _ => false,
        })
        .map(|(limit, from, to)| LimitRaised { limit, from, to })
        .collect()
}

/// Milliseconds of `d`, saturating.
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use warden_manifest::ByteSize;

    use super::*;

    #[test]
    fn only_higher_limits_are_raised() {
        let from = warden_manifest::Profile::Strict.preset();
        let mut to = from;
        assert!(raised(&from, &to).is_empty());
        to.max_memory = ByteSize::mib(64);
        to.max_execution_time = Duration::from_millis(500);
        let r = raised(&from, &to);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].limit, "max_memory_bytes");
        assert_eq!(r[0].to, Some(64 << 20));
        // Fuel: metered to unmetered is more.
        let mut metered = from;
        metered.max_fuel = std::num::NonZeroU64::new(1000);
        let r = raised(&metered, &from);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].limit, r[0].to), ("max_fuel", None));
    }
}
