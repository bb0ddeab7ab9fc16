//! The effective permission set of an install: requested ∩ granted ∩ policy.
//!
//! A pure function of the three inputs. Limits are resolved here too, and a limit above the
//! operator's ceiling fails the install instead of being clamped.

use ipnet::IpNet;

use crate::capability::Capability;
use crate::grant::{Grant, GrantItem};
use crate::host::AllowedHost;
use crate::ids::{ExtensionId, SecretName};
use crate::limits::Limits;
use crate::manifest::{ASSETS_GUEST_PATH, Manifest};
use crate::path::GuestPath;
use crate::policy::{CeilingError, Policy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveNetwork {
    pub allowed_hosts: Vec<AllowedHost>,
    /// The manifest's `allowed_ports` (empty = 443 and 80 for entries without a port).
    pub allowed_ports: Vec<u16>,
    /// Non-public ranges the policy lets allowed hosts resolve to.
    pub allow_networks: Vec<IpNet>,
}

/// Where a mount's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountSource {
    /// A folder private to (tenant, extension) under the data dir.
    Data,
    /// The bundle's own `assets/` folder (always read-only).
    Assets,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub guest: GuestPath,
    pub readonly: bool,
    pub source: MountSource,
}

/// What an install may actually do. Absent means denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub kv: bool,
    pub secrets: Vec<SecretName>,
    pub calls: Vec<ExtensionId>,
    /// `None`: no network at all.
    pub network: Option<EffectiveNetwork>,
    pub mounts: Vec<Mount>,
    pub limits: Limits,
    /// Capabilities the manifest requests and the grant covers, but the operator's policy
    /// forbids (so a refusal can say which of the two withheld it).
    pub forbidden_by_policy: Vec<Capability>,
    /// Mounts the manifest requests that are not granted (or that the policy forbids): the
    /// guest sees them as denied, not as missing.
    pub withheld_mounts: Vec<GuestPath>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectiveError {
    #[error(transparent)]
    Ceiling(#[from] CeilingError),
    #[error("the grant names {0}, which the manifest does not request")]
    NotRequested(String),
    /// At install: an explicit grant of what the operator's policy forbids is refused, not
    /// quietly withheld.
    #[error("the grant names {0}, which the operator's policy forbids")]
    Forbidden(String),
}

impl Effective {
    /// Whether nothing at all is granted beyond computing (clocks, random, logging).
    pub fn is_empty(&self) -> bool {
        !self.kv
            && self.secrets.is_empty()
            && self.calls.is_empty()
            && self.network.is_none()
            && self.mounts.is_empty()
    }
}

/// Computes requested ∩ granted ∩ policy.
pub fn effective(
    manifest: &Manifest,
    grant: &Grant,
    policy: &Policy,
) -> Result<Effective, EffectiveError> {
    let limits = manifest.limits.resolve(policy.profile);
    policy.ceiling.check(&limits)?;

    let req = &manifest.permissions;
    if let Grant::List(items) = grant {
        for item in items {
            let requested = match item {
                GrantItem::All(Capability::Kv) => req.kv,
                GrantItem::All(Capability::Network) => req.network.enabled,
                GrantItem::All(Capability::Filesystem) => {
                    !req.filesystem.paths.is_empty() || !req.filesystem.readonly_paths.is_empty()
                }
                GrantItem::All(Capability::Secrets) => !req.secrets.is_empty(),
                GrantItem::All(Capability::Calls) => !req.calls.is_empty(),
                // Never parsed from a grant: nothing to request.
                GrantItem::All(Capability::System) => false,
                GrantItem::Host(h) => req.network.allowed_hosts.contains(h),
                GrantItem::Path(p) => {
                    req.filesystem.paths.contains(p) || req.filesystem.readonly_paths.contains(p)
                }
                GrantItem::Secret(s) => req.secrets.contains(s),
                GrantItem::Call(c) => req.calls.contains(c),
            };
            if !requested {
                return Err(EffectiveError::NotRequested(describe(item)));
            }
        }
    }
    let allowed = |c: Capability| policy.capabilities.contains(&c);
    let whole = |c: Capability| match grant {
        Grant::All => true,
        Grant::None => false,
        Grant::List(items) => items.contains(&GrantItem::All(c)),
    };
    let item = |i: GrantItem| matches!(grant, Grant::List(items) if items.contains(&i));

    let kv = req.kv && allowed(Capability::Kv) && whole(Capability::Kv);
    let secrets = if allowed(Capability::Secrets) {
        req.secrets
            .iter()
            .filter(|s| whole(Capability::Secrets) || item(GrantItem::Secret((*s).clone())))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let calls = if allowed(Capability::Calls) {
        req.calls
            .iter()
            .filter(|c| whole(Capability::Calls) || item(GrantItem::Call((*c).clone())))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let network = if req.network.enabled && allowed(Capability::Network) {
        let hosts: Vec<AllowedHost> = req
            .network
            .allowed_hosts
            .iter()
            .filter(|h| whole(Capability::Network) || item(GrantItem::Host((*h).clone())))
            .cloned()
            .collect();
        (!hosts.is_empty()).then(|| EffectiveNetwork {
            allowed_hosts: hosts,
            allowed_ports: req.network.allowed_ports.clone(),
            allow_networks: policy.allow_networks.clone(),
        })
    } else {
        None
    };
    let mut mounts = Vec::new();
    if allowed(Capability::Filesystem) {
        let fs = &req.filesystem;
        let rw = fs.paths.iter().map(|p| (p, false));
        let ro = fs.readonly_paths.iter().map(|p| (p, true));
        for (p, readonly) in rw.chain(ro) {
            if whole(Capability::Filesystem) || item(GrantItem::Path(p.clone())) {
                let source = if p.as_str() == ASSETS_GUEST_PATH {
                    MountSource::Assets
                } else {
                    MountSource::Data
                };
                mounts.push(Mount {
                    guest: p.clone(),
                    readonly,
                    source,
                });
            }
        }
    }
    let requests = |c: Capability| match c {
        Capability::Kv => req.kv,
        Capability::Network => req.network.enabled,
        Capability::Filesystem => {
            !req.filesystem.paths.is_empty() || !req.filesystem.readonly_paths.is_empty()
        }
        Capability::Secrets => !req.secrets.is_empty(),
        Capability::Calls => !req.calls.is_empty(),
        Capability::System => false,
    };
    let grants_some = |c: Capability| match grant {
        Grant::All => true,
        Grant::None => false,
        Grant::List(items) => items.iter().any(|i| item_capability(i) == c),
    };
    let forbidden_by_policy = Capability::ALL
        .into_iter()
        .filter(|c| requests(*c) && grants_some(*c) && !allowed(*c))
        .collect();
    let withheld_mounts = req
        .filesystem
        .paths
        .iter()
        .chain(&req.filesystem.readonly_paths)
        .filter(|p| !mounts.iter().any(|m| m.guest == **p))
        .cloned()
        .collect();
    Ok(Effective {
        kv,
        secrets,
        calls,
        network,
        mounts,
        limits,
        forbidden_by_policy,
        withheld_mounts,
    })
}

fn item_capability(item: &GrantItem) -> Capability {
    match item {
        GrantItem::All(c) => *c,
        GrantItem::Host(_) => Capability::Network,
        GrantItem::Path(_) => Capability::Filesystem,
        GrantItem::Secret(_) => Capability::Secrets,
        GrantItem::Call(_) => Capability::Calls,
    }
}

fn describe(item: &GrantItem) -> String {
    match item {
        GrantItem::All(c) => format!("the {} capability", c.name()),
        GrantItem::Host(h) => format!("network host {h}"),
        GrantItem::Path(p) => format!("file system path {p}"),
        GrantItem::Secret(s) => format!("secret {s}"),
        GrantItem::Call(c) => format!("calls to {c}"),
    }
}
