//! Packing a folder into a canonical bundle.
//!
//! What is packed is decided by the manifest, not by what happens to be in the folder:
//! `extension.toml`, the entry file, everything under `assets/` (if that folder exists) and
//! everything under the ui folder (if one is declared). Nothing else is read.
//!
//! Links are never followed: every path is examined with `symlink_metadata`, a symbolic link or
//! special file anywhere in what would be packed is an error, and each file that is opened must
//! be the same file (device and inode) that was examined. Modification times, owners, the
//! order of directory listings and permission bits other than "executable" do not reach the
//! archive, so packing the same files always gives the same bytes.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use warden_manifest::{BundlePath, Entry, Manifest, PathError, TomlError};

use crate::bundle::{self, ASSETS_DIR, BundleError, MANIFEST_FILE};
use crate::digest::ContentHash;
use crate::limits::BundleLimits;
use crate::ustar::{ArchiveError, ArchiveWriter, Mode};

/// A packed bundle: its bytes (write them as `NAME.wext`), their hash and the manifest.
#[derive(Clone)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub hash: ContentHash,
    pub manifest: Manifest,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("len", &self.bytes.len())
            .field("hash", &self.hash)
            .field("id", &self.manifest.extension.id)
            .field("version", &self.manifest.extension.version)
            .finish_non_exhaustive()
    }
}

/// Why a folder could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path:?}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path:?} not found: a bundle folder needs an {MANIFEST_FILE} at its root")]
    MissingManifest { path: PathBuf },
    #[error("{path:?} is not valid UTF-8")]
    ManifestNotUtf8 { path: PathBuf },
    #[error("{path:?}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: TomlError,
    },
    #[error("the entry file `{entry}` named by {MANIFEST_FILE} does not exist ({path:?})")]
    MissingEntry { entry: BundlePath, path: PathBuf },
    #[error("the ui folder `{ui}` named by {MANIFEST_FILE} does not exist ({path:?})")]
    MissingUi { ui: BundlePath, path: PathBuf },
    #[error(
        "{path:?} is a symbolic link; pack never follows links, and a bundle holds regular files only"
    )]
    Symlink { path: PathBuf },
    #[error("{path:?} is not a regular file or folder (a device, socket or FIFO)")]
    SpecialFile { path: PathBuf },
    #[error("{path:?} must be a folder")]
    NotAFolder { path: PathBuf },
    #[error("{path:?} must be a regular file, not a folder")]
    NotAFile { path: PathBuf },
    #[error("{path:?} has a name that is not UTF-8")]
    NonUtf8Name { path: PathBuf },
    #[error("{path:?}: `{rel}` cannot be a path in a bundle: {source}")]
    BadPath {
        path: PathBuf,
        rel: String,
        source: PathError,
    },
    #[error("the bundle would have more than {cap} files (max_entries)")]
    TooManyFiles { cap: usize },
    #[error("{path:?} is {size} bytes, more than the per-file cap of {cap} bytes (max_file_bytes)")]
    FileTooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("the bundle would be {size} bytes, more than the cap of {cap} bytes (max_total_bytes)")]
    TooLarge { size: u64, cap: u64 },
    #[error("{path:?} changed while it was being packed; pack again")]
    Changed { path: PathBuf },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("the packed bundle fails its own check: {0}")]
    Invalid(#[source] BundleError),
}

/// One file to pack.
struct Source {
    disk: PathBuf,
    meta: Metadata,
}

/// Packs `dir` into a bundle. See [`pack_dir_with_progress`].
pub fn pack_dir(dir: &Path, caps: &BundleLimits) -> Result<Packed, PackError> {
    pack_dir_with_progress(dir, caps, &mut |_, _| {})
}

/// Packs `dir` into a bundle, calling `progress(done, total)` (in archive bytes) before the
/// first file is read and after each file. The result has passed [`crate::Bundle`]'s own checks.
pub fn pack_dir_with_progress(
    dir: &Path,
    caps: &BundleLimits,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Packed, PackError> {
    // The manifest decides what is packed, so it is read and parsed first. These same bytes
    // are the ones packed.
    let manifest_disk = dir.join(MANIFEST_FILE);
    let manifest_meta = match lstat(&manifest_disk) {
        Err(PackError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(PackError::MissingManifest {
                path: manifest_disk,
            });
        }
        other => regular_file(other?, &manifest_disk)?,
    };
    check_file_size(&manifest_disk, &manifest_meta, caps)?;
    let manifest_bytes = read_same_file(&manifest_disk, &manifest_meta)?;
    let manifest_text =
        std::str::from_utf8(&manifest_bytes).map_err(|_| PackError::ManifestNotUtf8 {
            path: manifest_disk.clone(),
        })?;
    let manifest = Manifest::parse(manifest_text).map_err(|source| PackError::Manifest {
        path: manifest_disk.clone(),
        source,
    })?;

    let mut files: BTreeMap<BundlePath, Source> = BTreeMap::new();
    let ext = &manifest.extension;

    // The entry file (a remote extension's: its CA file, if it names one).
    let own = match &ext.entry {
        Entry::File(p) => Some(p),
        Entry::Remote(_) => manifest.remote.as_ref().and_then(|r| r.ca.as_ref()),
    };
    if let Some(entry) = own {
        let entry_disk = dir.join(entry.as_str());
        let entry_meta = match lstat_below(dir, entry)? {
            Some(meta) => regular_file(meta, &entry_disk)?,
            None => {
                return Err(PackError::MissingEntry {
                    entry: entry.clone(),
                    path: entry_disk,
                });
            }
        };
        files.insert(
            entry.clone(),
            Source {
                disk: entry_disk,
                meta: entry_meta,
            },
        );
    }

    // assets/, if present.
    let assets = parse_rel(ASSETS_DIR, dir)?;
    if let Some(meta) = lstat_below(dir, &assets)? {
        let disk = dir.join(ASSETS_DIR);
        folder(&meta, &disk)?;
        walk(&disk, assets.as_str(), caps, &mut files)?;
    }

    // The ui folder, if declared.
    if let Some(ui) = &ext.ui {
        let disk = dir.join(ui.as_str());
        let meta = lstat_below(dir, ui)?.ok_or_else(|| PackError::MissingUi {
            ui: ui.clone(),
            path: disk.clone(),
        })?;
        folder(&meta, &disk)?;
        walk(&disk, ui.as_str(), caps, &mut files)?;
    }

    let manifest_path = parse_rel(MANIFEST_FILE, dir)?;
    // The manifest was read above and is added from those bytes. (It is in `files` only if
    // the manifest names itself as the entry, which the self-check below refuses.)
    files.remove(&manifest_path);
    let count = files.len().saturating_add(1);
    if count > caps.max_entries {
        return Err(PackError::TooManyFiles {
            cap: caps.max_entries,
        });
    }

    // Every cap is checked from metadata before any file besides the manifest is read.
    let mut total = ArchiveWriter::END_LEN;
    let sizes = std::iter::once((&manifest_disk, &manifest_meta))
        .chain(files.values().map(|s| (&s.disk, &s.meta)));
    for (disk, meta) in sizes {
        check_file_size(disk, meta, caps)?;
        total = ArchiveWriter::entry_len(meta.len())
            .and_then(|len| total.checked_add(len))
            .unwrap_or(u64::MAX);
    }
    if total > caps.max_total_bytes {
        return Err(PackError::TooLarge {
            size: total,
            cap: caps.max_total_bytes,
        });
    }

    progress(0, total);
    let mut done = 0u64;
    let mut writer = ArchiveWriter::with_capacity(usize::try_from(total).unwrap_or(0));
    // `extension.toml` takes its place in bytewise order among the others.
    let mut manifest_pending = Some(manifest_bytes);
    let mut add = |writer: &mut ArchiveWriter,
                   path: &BundlePath,
                   mode: Mode,
                   data: &[u8]|
     -> Result<(), PackError> {
        writer.add_file(path, mode, data)?;
        done = ArchiveWriter::entry_len(u64::try_from(data.len()).unwrap_or(u64::MAX))
            .and_then(|len| done.checked_add(len))
            .unwrap_or(u64::MAX);
        progress(done.min(total), total);
        Ok(())
    };
    for (path, source) in &files {
        if *path > manifest_path
            && let Some(bytes) = manifest_pending.take()
        {
            add(&mut writer, &manifest_path, mode_of(&manifest_meta), &bytes)?;
        }
        let data = read_same_file(&source.disk, &source.meta)?;
        add(&mut writer, path, mode_of(&source.meta), &data)?;
    }
    if let Some(bytes) = manifest_pending.take() {
        add(&mut writer, &manifest_path, mode_of(&manifest_meta), &bytes)?;
    }
    let bytes = writer.finish();
    progress(total, total);

    let checked = bundle::check(&bytes, caps).map_err(PackError::Invalid)?;
    let hash = ContentHash::of(&bytes);
    Ok(Packed {
        bytes,
        hash,
        manifest: checked.manifest,
    })
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lstat(path: &Path) -> Result<Metadata, PackError> {
    fs::symlink_metadata(path).map_err(io_error(path))
}

fn parse_rel(rel: &str, dir: &Path) -> Result<BundlePath, PackError> {
    rel.parse().map_err(|source| PackError::BadPath {
        path: dir.join(rel),
        rel: rel.to_string(),
        source,
    })
}

/// `symlink_metadata` of `dir/rel`, requiring every folder on the way to be a real folder
/// (not a link). `None` if some part of the path does not exist.
fn lstat_below(dir: &Path, rel: &BundlePath) -> Result<Option<Metadata>, PackError> {
    let mut disk = dir.to_path_buf();
    let mut segments = rel.segments().peekable();
    while let Some(segment) = segments.next() {
        disk.push(segment);
        let meta = match fs::symlink_metadata(&disk) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&disk)(e)),
        };
        if segments.peek().is_none() {
            return Ok(Some(meta));
        }
        folder(&meta, &disk)?;
    }
    Ok(None)
}

fn regular_file(meta: Metadata, path: &Path) -> Result<Metadata, PackError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        Err(PackError::Symlink {
            path: path.to_path_buf(),
        })
    } else if kind.is_dir() {
        Err(PackError::NotAFile {
            path: path.to_path_buf(),
        })
    } else if kind.is_file() {
        Ok(meta)
    } else {
        Err(PackError::SpecialFile {
            path: path.to_path_buf(),
        })
    }
}

fn folder(meta: &Metadata, path: &Path) -> Result<(), PackError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        Err(PackError::Symlink {
            path: path.to_path_buf(),
        })
    } else if kind.is_dir() {
        Ok(())
    } else {
        Err(PackError::NotAFolder {
            path: path.to_path_buf(),
        })
    }
}

/// Collects every regular file below `disk` (whose bundle path is `rel`).
fn walk(
    disk: &Path,
    rel: &str,
    caps: &BundleLimits,
    files: &mut BTreeMap<BundlePath, Source>,
) -> Result<(), PackError> {
    for item in fs::read_dir(disk).map_err(io_error(disk))? {
        let item = item.map_err(io_error(disk))?;
        let child_disk = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_owned) else {
            return Err(PackError::NonUtf8Name { path: child_disk });
        };
        let child_rel = format!("{rel}/{name}");
        // Parsing every path (folders too) also bounds the depth of the walk.
        let path: BundlePath = child_rel.parse().map_err(|source| PackError::BadPath {
            path: child_disk.clone(),
            rel: child_rel.clone(),
            source,
        })?;
        let meta = lstat(&child_disk)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            walk(&child_disk, &child_rel, caps, files)?;
        } else {
            let meta = regular_file(meta, &child_disk)?;
            files.insert(
                path,
                Source {
                    disk: child_disk,
                    meta,
                },
            );
            // +1 for extension.toml, which is not in `files`.
            if files.len() >= caps.max_entries {
                return Err(PackError::TooManyFiles {
                    cap: caps.max_entries,
                });
            }
        }
    }
    Ok(())
}

fn check_file_size(path: &Path, meta: &Metadata, caps: &BundleLimits) -> Result<(), PackError> {
    if meta.len() > caps.max_file_bytes {
        return Err(PackError::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            cap: caps.max_file_bytes,
        });
    }
    Ok(())
}

/// Reads the file examined as `expected`: the opened file must be that same file, and it must
/// still have the size that was checked against the caps. The read is bounded by that size.
fn read_same_file(path: &Path, expected: &Metadata) -> Result<Vec<u8>, PackError> {
    let changed = || PackError::Changed {
        path: path.to_path_buf(),
    };
    let file = File::open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.is_file() || !same_file(&meta, expected) || meta.len() != expected.len() {
        return Err(changed());
    }
    let size = expected.len();
    let mut data = Vec::with_capacity(usize::try_from(size).map_err(|_| changed())?);
    file.take(size.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io_error(path))?;
    if u64::try_from(data.len()).ok() != Some(size) {
        return Err(changed());
    }
    Ok(data)
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &Metadata, _: &Metadata) -> bool {
    true
}

/// 0755 if any execute bit is set on disk, else 0644.
#[cfg(unix)]
fn mode_of(meta: &Metadata) -> Mode {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 != 0 {
        Mode::Executable
    } else {
        Mode::Regular
    }
}

#[cfg(not(unix))]
fn mode_of(_: &Metadata) -> Mode {
    Mode::Regular
}
