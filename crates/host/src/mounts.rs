//! Host folders behind an install's file system mounts.
//!
//! Layout: `DATA/tenants/<tenant>/extensions/<extension>/files/<guest path, encoded>`, every
//! level 0700 and created on first use. Tenant names and extension ids are single labels or
//! dotted labels (no separators, no `..`), and the guest path is percent-encoded into one
//! segment, so two (tenant, extension, guest path) triples never share a folder.

use std::path::{Path, PathBuf};

use warden_manifest::{ExtensionId, GuestPath, Mount, MountSource, TenantName};
use warden_runtime::MountDir;

use crate::host::{HostError, private_dir};

/// The folder of one (tenant, extension) under the data dir.
pub(crate) fn install_dir(data: &Path, tenant: &TenantName, ext: &ExtensionId) -> PathBuf {
    data.join("tenants")
        .join(tenant.as_str())
        .join("extensions")
        .join(ext.as_str())
}

/// `/data/x` → `data%2Fx`: one path segment, injective.
pub(crate) fn encode(guest: &GuestPath) -> String {
    let mut out = String::new();
    for b in guest.as_str().trim_start_matches('/').bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Creates (on first use) and lists the folders for `mounts`.
pub(crate) fn prepare(
    data: Option<&Path>,
    tenant: &TenantName,
    ext: &ExtensionId,
    mounts: &[Mount],
) -> Result<Vec<MountDir>, HostError> {
    if mounts.is_empty() {
        return Ok(Vec::new());
    }
    let Some(data) = data else {
        return Err(HostError::Setup(
            "file system mounts are granted but the host has no data dir for them".into(),
        ));
    };
    let files = install_dir(data, tenant, ext).join("files");
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        match m.source {
            MountSource::Data => {
                let host = files.join(encode(&m.guest));
                private_dir(&host)?;
                out.push(MountDir {
                    guest: m.guest.to_string(),
                    host,
                    readonly: m.readonly,
                });
            }
            MountSource::Assets => {
                return Err(HostError::Setup(
                    "mounting the bundle's assets is not supported yet".into(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_one_segment_and_injective() {
        let cases = ["/data", "/data/x", "/data_x", "/data.x", "/.x", "/a..b"];
        let mut seen = std::collections::HashSet::new();
        for c in cases {
            let g: GuestPath = c.parse().unwrap();
            let e = encode(&g);
            assert!(
                !e.contains('/') && e != "." && e != ".." && !e.is_empty(),
                "{c} → {e}"
            );
            assert!(seen.insert(e), "{c}");
        }
    }
}
