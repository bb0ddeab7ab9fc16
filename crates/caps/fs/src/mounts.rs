//! Host folders behind an install's file system mounts.
//!
//! Layout: `DATA/tenants/<tenant>/extensions/<extension>/files/<guest path, encoded>`, every
//! level 0700 and created on first use. Tenant names and extension ids are single labels or
//! dotted labels (no separators, no `..`), and the guest path is percent-encoded into one
//! segment, so two (tenant, extension, guest path) triples never share a folder.
//!
//! The read-only `/assets` mount is the bundle's own `assets/` folder, extracted from the
//! verified in-memory bundle (never from the file it was read from) into
//! `DATA/bundles/<sha256 hex>/assets`: content-addressed, so every install of the same bytes
//! shares it, and nothing a guest writes can reach it (it is only ever mounted read-only).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use warden_bundle::{ASSETS_DIR, Bundle};
use warden_manifest::{ExtensionId, FileLimits, GuestPath, Mount, MountSource, TenantName};

use crate::quota::FsQuota;
use crate::{FsError, MountDir, private_dir};

/// The folder of one (tenant, extension) under the data dir.
pub fn install_dir(data: &Path, tenant: &TenantName, ext: &ExtensionId) -> PathBuf {
    data.join("tenants")
        .join(tenant.as_str())
        .join("extensions")
        .join(ext.as_str())
}

/// `/data/x` → `data%2Fx`: one path segment, injective.
pub fn encode(guest: &GuestPath) -> String {
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

/// Creates (on first use) and lists the folders for `mounts`; `bundle` is the verified bundle
/// whose `assets/` back an `/assets` mount.
pub fn prepare(
    data: Option<&Path>,
    tenant: &TenantName,
    ext: &ExtensionId,
    bundle: &Bundle,
    mounts: &[Mount],
) -> Result<Vec<MountDir>, FsError> {
    if mounts.is_empty() {
        return Ok(Vec::new());
    }
    let Some(data) = data else {
        return Err(FsError::NoDataDir);
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
            MountSource::Assets => out.push(MountDir {
                guest: m.guest.to_string(),
                host: assets(data, bundle)?,
                // Whatever the manifest says, the bundle's own files are never writable.
                readonly: true,
            }),
        }
    }
    Ok(out)
}

/// The folders behind mounts the manifest requests but the operator did not grant: one empty
/// folder of the data dir (`DATA/denied-mount`, 0700), preopened read-only at each such guest
/// path so that the guest's attempts reach the host, which refuses and records them (a
/// missing mount would only look like a missing file). Empty without a data dir.
pub fn denied(data: Option<&Path>, withheld: &[GuestPath]) -> Result<Vec<MountDir>, FsError> {
    let Some(data) = data else {
        return Ok(Vec::new());
    };
    if withheld.is_empty() {
        return Ok(Vec::new());
    }
    let stub = data.join(DENIED_DIR);
    private_dir(&stub)?;
    Ok(withheld
        .iter()
        .map(|g| MountDir {
            guest: g.to_string(),
            host: stub.clone(),
            readonly: true,
        })
        .collect())
}

/// The empty folder behind every denied mount.
pub const DENIED_DIR: &str = "denied-mount";

/// The quota of the install's read-write mounts (`None` if it has none): all of them live
/// under its `files/` folder, which is measured now (blocking, like the rest of a load) and
/// charged by every later call of this install (see [`FsQuota`]). Read-only data mounts
/// in the same folder count toward it too: they hold what earlier read-write loads wrote.
///
/// The budget is kept beside that folder, in `files.quota/` (outside every mount), and shared
/// with every other load of the same (tenant, extension) on this data dir, in this process or
/// another: together they never hold more than the limits (see [`crate::quota`]). Each process
/// holds one lease in `DATA/quota-leases/`. A budget that cannot be opened does not fail the
/// load; every growth is refused until it can be.
pub fn quota(
    data: Option<&Path>,
    tenant: &TenantName,
    ext: &ExtensionId,
    mounts: &[Mount],
    limits: FileLimits,
) -> Option<FsQuota> {
    let data = data?;
    let rw: Vec<&str> = mounts
        .iter()
        .filter(|m| m.source == MountSource::Data && !m.readonly)
        .map(|m| m.guest.as_str())
        .collect();
    if rw.is_empty() {
        return None;
    }
    Some(FsQuota::new(
        install_dir(data, tenant, ext).join("files"),
        data.join(crate::quota::LEASES_DIR),
        &rw.join(","),
        limits.max_bytes.bytes(),
        limits.max_entries,
    ))
}

/// Mode of every extracted asset file: readable, never writable or executable.
const ASSET_FILE_MODE: u32 = 0o444;
/// Mode of every extracted asset folder: listable, never writable.
const ASSET_DIR_MODE: u32 = 0o555;

/// The files of `bundle`'s `assets/` folder, by path relative to it, and the folders that hold
/// them. Empty folders are not kept (the guest could not tell them from absent ones anyway).
struct Assets<'b> {
    files: BTreeMap<PathBuf, &'b [u8]>,
    dirs: BTreeSet<PathBuf>,
}

impl<'b> Assets<'b> {
    fn of(bundle: &'b Bundle) -> Result<Assets<'b>, FsError> {
        let prefix = format!("{ASSETS_DIR}/");
        let mut files = BTreeMap::new();
        let mut dirs = BTreeSet::new();
        for f in bundle.files() {
            let Some(rel) = f.path.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let rel = PathBuf::from(rel);
            // `BundlePath` already refuses `..`, `.`, empty and absolute segments; checked
            // again here because this path is about to be joined to a host folder.
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(FsError::BadAsset(f.path.as_str().to_string()));
            }
            let mut parent = rel.parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_path_buf());
                parent = p.parent();
            }
            files.insert(rel, f.data);
        }
        Ok(Assets { files, dirs })
    }
}

/// `DATA/bundles/<hex>/assets`, holding exactly `bundle`'s assets: reused if what is there
/// matches them file for file and byte for byte, otherwise (missing, partial after a crash,
/// tampered with) extracted again.
fn assets(data: &Path, bundle: &Bundle) -> Result<PathBuf, FsError> {
    let wanted = Assets::of(bundle)?;
    let parent = data
        .join("bundles")
        .join(hex::encode(bundle.content_hash().as_bytes()));
    private_dir(&parent)?;
    let dest = parent.join("assets");
    if matches(&dest, &wanted) {
        return Ok(dest);
    }
    if fs::symlink_metadata(&dest).is_ok() {
        // Moved aside first so the rename below never lands inside a stale folder.
        let trash = scratch(&parent, "stale");
        match fs::rename(&dest, &trash) {
            Ok(()) => remove_tree(&trash).map_err(|e| setup("removing", &trash, e))?,
            // A concurrent load moved it already.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(setup("moving aside", &dest, e)),
        }
    }
    let tmp = scratch(&parent, "new");
    if let Err(e) = extract(&tmp, &wanted) {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &dest) {
        let _ = remove_tree(&tmp);
        // A concurrent load of the same bundle may have renamed its copy first.
        if matches(&dest, &wanted) {
            return Ok(dest);
        }
        return Err(setup("renaming into place", &dest, e));
    }
    Ok(dest)
}

/// Writes `wanted` into the new folder `tmp`, then makes it read-only. No fsync: a copy cut
/// short by a crash fails [`matches`] at the next load and is extracted again.
fn extract(tmp: &Path, wanted: &Assets<'_>) -> Result<(), FsError> {
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o700);
    builder.create(tmp).map_err(|e| setup("creating", tmp, e))?;
    // `BTreeSet` order puts every folder after its parent.
    for d in &wanted.dirs {
        let p = tmp.join(d);
        builder.create(&p).map_err(|e| setup("creating", &p, e))?;
    }
    for (rel, bytes) in &wanted.files {
        let p = tmp.join(rel);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| setup("writing", &p, e))?;
        chmod(&p, ASSET_FILE_MODE)?;
    }
    // Deepest first, so each folder is still writable while its children are finished.
    for d in wanted.dirs.iter().rev() {
        chmod(&tmp.join(d), ASSET_DIR_MODE)?;
    }
    chmod(tmp, ASSET_DIR_MODE)
}

/// True if `dest` is a real folder holding exactly `wanted`: the same folders and regular
/// files (no symlinks, no other kinds, no hard links shared with anything else), the modes
/// extraction sets, and the same bytes.
fn matches(dest: &Path, wanted: &Assets<'_>) -> bool {
    let mut seen_files = 0;
    let mut seen_dirs = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = dest.join(&rel);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() && m.mode() & 0o7777 == ASSET_DIR_MODE => {}
            _ => return false,
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            return false;
        };
        for entry in entries {
            let Ok(entry) = entry else {
                return false;
            };
            let child = rel.join(entry.file_name());
            let Ok(meta) = fs::symlink_metadata(dest.join(&child)) else {
                return false;
            };
            if meta.is_dir() {
                if !wanted.dirs.contains(&child) {
                    return false;
                }
                seen_dirs += 1;
                stack.push(child);
            } else if meta.is_file() {
                let Some(bytes) = wanted.files.get(&child) else {
                    return false;
                };
                if meta.mode() & 0o7777 != ASSET_FILE_MODE
                    || meta.nlink() != 1
                    || meta.len() != bytes.len() as u64
                    || fs::read(dest.join(&child)).ok().as_deref() != Some(*bytes)
                {
                    return false;
                }
                seen_files += 1;
            } else {
                return false;
            }
        }
    }
    seen_files == wanted.files.len() && seen_dirs == wanted.dirs.len()
}

/// A fresh name beside the assets folder for a copy being built or removed.
fn scratch(parent: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    parent.join(format!(".assets-{what}-{}-{n}", std::process::id()))
}

fn chmod(p: &Path, mode: u32) -> Result<(), FsError> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| setup("chmod", p, e))
}

/// Removes a folder whose subfolders may be read-only (without following symlinks).
fn remove_tree(root: &Path) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if !fs::symlink_metadata(&dir)?.is_dir() {
            continue;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    fs::remove_dir_all(root)
}

fn setup(what: &'static str, p: &Path, e: std::io::Error) -> FsError {
    FsError::Io {
        what,
        path: p.to_path_buf(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle with `assets` (path, contents) and a stub component entry.
    fn bundle(assets: &[(&str, &str)]) -> (tempfile::TempDir, Bundle) {
        let dir = tempfile::TempDir::new().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(
            src.join("extension.toml"),
            "schema = 1\n[extension]\nid = \"t.assets\"\nversion = \"0.1.0\"\n\
             publisher = \"t\"\nkind = \"component\"\nentry = \"extension.wasm\"\n",
        )
        .unwrap();
        fs::write(
            src.join("extension.wasm"),
            warden_bundle::COMPONENT_PREAMBLE,
        )
        .unwrap();
        for (path, body) in assets {
            let p = src.join("assets").join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        let packed =
            warden_bundle::pack_dir(&src, &warden_bundle::BundleLimits::default()).unwrap();
        let b = Bundle::from_bytes(packed.bytes, &warden_bundle::BundleLimits::default()).unwrap();
        (dir, b)
    }

    #[test]
    fn concurrent_extractions_of_one_bundle_agree() {
        let (dir, b) = bundle(&[("a.txt", "a"), ("x/y/z.txt", "z")]);
        let data = dir.path().join("data");
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(|| assets(&data, &b))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = results[0].as_ref().unwrap().clone();
        for r in &results {
            assert_eq!(r.as_ref().unwrap(), &first);
        }
        assert!(matches(&first, &Assets::of(&b).unwrap()));
        assert_eq!(fs::read_to_string(first.join("x/y/z.txt")).unwrap(), "z");
        // No temporary copies are left beside it.
        let left: Vec<_> = fs::read_dir(first.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn a_partial_or_foreign_copy_is_replaced() {
        let (dir, b) = bundle(&[("a.txt", "a"), ("d/b.txt", "b")]);
        let data = dir.path().join("data");
        let dest = assets(&data, &b).unwrap();
        let wanted = Assets::of(&b).unwrap();
        // A file missing (a crash mid-copy), a hard link shared with a file elsewhere, a mode
        // changed: each is noticed and repaired.
        let breakers: [&dyn Fn(&Path); 3] = [
            &|d| {
                fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
                fs::remove_file(d.join("a.txt")).unwrap();
            },
            &|d| {
                fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
                fs::hard_link(d.join("a.txt"), d.parent().unwrap().join("elsewhere")).unwrap();
                fs::set_permissions(d, fs::Permissions::from_mode(ASSET_DIR_MODE)).unwrap();
            },
            &|d| fs::set_permissions(d.join("d"), fs::Permissions::from_mode(0o755)).unwrap(),
        ];
        for brk in breakers {
            brk(&dest);
            assert!(!matches(&dest, &wanted));
            assert_eq!(assets(&data, &b).unwrap(), dest);
            assert!(matches(&dest, &wanted));
            let _ = fs::remove_file(dest.parent().unwrap().join("elsewhere"));
        }
    }

    #[test]
    fn a_bundle_without_assets_mounts_an_empty_folder() {
        let (dir, b) = bundle(&[]);
        let dest = assets(&dir.path().join("data"), &b).unwrap();
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
        let mode = fs::symlink_metadata(&dest).unwrap().mode() & 0o777;
        assert_eq!(mode, ASSET_DIR_MODE);
    }

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
