//! The install rules, as a pure decision: what installing a manifest for a tenant that may
//! already have that extension would be, or why it is refused.

use std::cmp::Ordering;

use warden_bundle::ContentHash;
use warden_manifest::Manifest;

use crate::approval::Approval;
use crate::store::InstallRecord;

/// What an install does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not installed for this tenant yet.
    Install,
    /// A higher version.
    Upgrade { from: semver::Version },
    /// A lower version, allowed by `--force` (and audited as such).
    Downgrade { from: semver::Version },
    /// The same version and content (the grant may change).
    Reinstall,
}

/// What the install did, in words: `installed`, `upgraded from 1.0.0`, ...
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Plan::Install => f.write_str("installed"),
            Plan::Upgrade { from } => write!(f, "upgraded from {from}"),
            Plan::Downgrade { from } => write!(f, "downgraded from {from} (forced)"),
            Plan::Reinstall => f.write_str("reinstalled"),
        }
    }
}

impl Plan {
    /// Whether the audit record should say `upgrade` rather than `install`.
    pub fn is_change_of_version(&self) -> bool {
        matches!(self, Plan::Upgrade { .. } | Plan::Downgrade { .. })
    }
}

/// Why an install is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{id} {to} is lower than the installed {from}: refused (a rollback); give --force to install it anyway"
    )]
    Lower {
        id: String,
        from: String,
        to: String,
    },
    #[error(
        "{id} {version} is installed with other content ({installed}); a version is published once: publish a new version"
    )]
    SameVersionOtherContent {
        id: String,
        version: String,
        installed: ContentHash,
    },
    #[error(
        "{id} {to} requests more than was approved for {from}: {}; give --grant again to approve it",
        .missing.join("; ")
    )]
    NeedsApproval {
        id: String,
        from: String,
        to: String,
        missing: Vec<String>,
    },
}

/// Decides an install of `manifest` (content `hash`) over `existing`. `reapproved`: the
/// operator gave a grant with this install, approving whatever the manifest requests.
pub fn plan(
    existing: Option<&InstallRecord>,
    manifest: &Manifest,
    hash: &ContentHash,
    reapproved: bool,
    force: bool,
) -> Result<Plan, PlanError> {
    let Some(old) = existing else {
        return Ok(Plan::Install);
    };
    let ext = &manifest.extension;
    let id = ext.id.to_string();
    let plan = match ext.version.cmp(&old.version) {
        Ordering::Less if !force => {
            return Err(PlanError::Lower {
                id,
                from: old.version.to_string(),
                to: ext.version.to_string(),
            });
        }
        Ordering::Less => Plan::Downgrade {
            from: old.version.clone(),
        },
        Ordering::Equal if *hash != old.content_hash => {
            return Err(PlanError::SameVersionOtherContent {
                id,
                version: ext.version.to_string(),
                installed: old.content_hash,
            });
        }
        Ordering::Equal => Plan::Reinstall,
        Ordering::Greater => Plan::Upgrade {
            from: old.version.clone(),
        },
    };
    if !reapproved {
        let requested = Approval::of(&manifest.permissions);
        let missing = old.approved.missing(&requested);
        if !missing.is_empty() {
            return Err(PlanError::NeedsApproval {
                id,
                from: old.version.to_string(),
                to: ext.version.to_string(),
                missing: missing.into_iter().map(str::to_owned).collect(),
            });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn manifest(version: &str, permissions: &str) -> Manifest {
        Manifest::parse(&format!(
            "schema = 1\n[extension]\nid = \"acme.x\"\nversion = \"{version}\"\npublisher = \"acme\"\n\
             kind = \"component\"\nentry = \"x.wasm\"\n[[methods]]\nname = \"m\"\n{permissions}"
        ))
        .unwrap()
    }

    fn installed(m: &Manifest, hash: ContentHash) -> InstallRecord {
        InstallRecord {
            tenant: "acme".parse().unwrap(),
            extension: m.extension.id.clone(),
            version: m.extension.version.clone(),
            content_hash: hash,
            grant: warden_manifest::Grant::All,
            approved: Approval::of(&m.permissions),
            installed: SystemTime::now(),
        }
    }

    #[test]
    fn the_install_rules() {
        let h1 = ContentHash::of(b"1");
        let h2 = ContentHash::of(b"2");
        let v1 = manifest("1.0.0", "[permissions]\nkv = true\nsecrets = [\"A\"]\n");
        let old = installed(&v1, h1);
        assert_eq!(plan(None, &v1, &h1, false, false), Ok(Plan::Install));
        assert_eq!(
            plan(Some(&old), &v1, &h1, false, false),
            Ok(Plan::Reinstall)
        );
        // The same version with other bytes: never.
        assert!(matches!(
            plan(Some(&old), &v1, &h2, true, true),
            Err(PlanError::SameVersionOtherContent { .. })
        ));
        // Fewer permissions: fine without approval.
        let v2 = manifest("1.1.0", "[permissions]\nkv = true\n");
        assert!(matches!(
            plan(Some(&old), &v2, &h2, false, false),
            Ok(Plan::Upgrade { .. })
        ));
        // More (a new secret, network): refused, naming what, until approved.
        let v3 = manifest(
            "1.2.0",
            "[permissions]\nkv = true\nsecrets = [\"A\", \"B\"]\n[permissions.network]\nenabled = true\nallowed_hosts = [\"api.example.com\"]\n",
        );
        let e = plan(Some(&old), &v3, &h2, false, false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("secret B") && text.contains("network api.example.com"),
            "{text}"
        );
        assert!(!text.contains("secret A"), "{text}");
        assert!(matches!(
            plan(Some(&old), &v3, &h2, true, false),
            Ok(Plan::Upgrade { .. })
        ));
        // Lower: only forced.
        let v0 = manifest("0.9.0", "");
        assert!(matches!(
            plan(Some(&old), &v0, &h2, true, false),
            Err(PlanError::Lower { .. })
        ));
        assert!(matches!(
            plan(Some(&old), &v0, &h2, false, true),
            Ok(Plan::Downgrade { .. })
        ));
    }
}
