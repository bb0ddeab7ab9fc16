//! A verified-in-memory bundle: the archive bytes, their content hash and the parsed manifest.

use bytes::Bytes;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use warden_manifest::{BundlePath, Entry, Kind, Manifest, TomlError};

use crate::digest::ContentHash;
use crate::limits::BundleLimits;
use crate::read;
use crate::ustar::{self, ArchiveEntry, ArchiveError, EntryKind, Mode};

/// The manifest's path inside every bundle.
pub const MANIFEST_FILE: &str = "extension.toml";
/// The optional folder of static files, mounted read-only at `/assets` in the guest.
pub const ASSETS_DIR: &str = "assets";
/// The first 8 bytes of every WebAssembly component: `\0asm`, then version 0x0d and layer 1.
/// (A core module has `01 00 00 00` here instead.)
pub const COMPONENT_PREAMBLE: [u8; 8] = *b"\0asm\x0d\x00\x01\x00";
const CORE_MODULE_PREAMBLE: [u8; 8] = *b"\0asm\x01\x00\x00\x00";

/// Why bytes are not a valid bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("reading {path:?}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path:?} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path:?} changed while it was being read")]
    Changed { path: PathBuf },
    #[error("the bundle has no {MANIFEST_FILE} at its root")]
    MissingManifest,
    #[error("{MANIFEST_FILE} is not valid UTF-8")]
    ManifestNotUtf8,
    #[error("{MANIFEST_FILE}: {0}")]
    Manifest(#[source] TomlError),
    #[error("the entry file `{path}` named by {MANIFEST_FILE} is not in the bundle")]
    MissingEntry { path: BundlePath },
    #[error("the entry `{path}` is {MANIFEST_FILE} itself; the entry must be its own file")]
    EntryIsManifest { path: BundlePath },
    #[error("the entry `{path}` is not a WebAssembly component: {detail}")]
    NotAComponent {
        path: BundlePath,
        detail: &'static str,
    },
    #[error("the entry `{path}` of an Extism plug-in is not a core WebAssembly module: {detail}")]
    NotACoreModule {
        path: BundlePath,
        detail: &'static str,
    },
    #[error("the CA file `{path}` of a remote extension is not a PEM certificate")]
    NotACertificate { path: BundlePath },
    #[error("the entry `{path}` of a process extension must be executable (mode 0755)")]
    NotExecutable { path: BundlePath },
    #[error("the ui folder `{path}` named by {MANIFEST_FILE} has no files in the bundle")]
    EmptyUi { path: BundlePath },
    #[error(
        "`{path}` does not belong in a bundle, which holds only {MANIFEST_FILE}, the entry file, \
         {ASSETS_DIR}/ and the ui folder"
    )]
    UnexpectedFile { path: BundlePath },
}

/// One regular file of a bundle, borrowed from the bundle's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleFile<'a> {
    pub path: &'a BundlePath,
    pub mode: Mode,
    pub data: &'a [u8],
}

/// A bundle whose archive, manifest and contents have been checked.
///
/// It owns the exact bytes that were validated and hashed and hands out slices of them: nothing
/// is ever re-read by name, so the bytes loaded are the bytes hashed. Validity here says nothing
/// about who published it; signatures are checked elsewhere against [`Bundle::content_hash`].
#[derive(Clone)]
pub struct Bundle {
    bytes: Bytes,
    hash: ContentHash,
    entries: Vec<ArchiveEntry>,
    manifest: Manifest,
    manifest_range: Range<usize>,
    entry_range: Range<usize>,
}

/// Everything [`Bundle`] holds besides the bytes and their hash.
pub(crate) struct Checked {
    entries: Vec<ArchiveEntry>,
    pub(crate) manifest: Manifest,
    manifest_range: Range<usize>,
    entry_range: Range<usize>,
}

impl Bundle {
    /// Validates `bytes` as a bundle (archive, caps, manifest, entry, layout) and hashes them.
    pub fn from_bytes(bytes: impl Into<Bytes>, caps: &BundleLimits) -> Result<Bundle, BundleError> {
        let bytes: Bytes = bytes.into();
        let hash = ContentHash::of(&bytes);
        Bundle::checked(bytes, hash, caps)
    }

    /// Validates `bytes` whose hash the caller computed over exactly these bytes.
    fn checked(
        bytes: Bytes,
        hash: ContentHash,
        caps: &BundleLimits,
    ) -> Result<Bundle, BundleError> {
        let checked = check(&bytes, caps)?;
        Ok(Bundle {
            bytes,
            hash,
            entries: checked.entries,
            manifest: checked.manifest,
            manifest_range: checked.manifest_range,
            entry_range: checked.entry_range,
        })
    }

    /// Reads a `.wext` file and validates it. The size cap is checked from the file's metadata
    /// before anything is read, and the read itself is bounded.
    pub fn read_file(path: &Path, caps: &BundleLimits) -> Result<Bundle, BundleError> {
        let io_err = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let too_large = |size| {
            BundleError::Archive(ArchiveError::TooLarge {
                size,
                cap: caps.max_total_bytes,
            })
        };
        // Checked before opening, so a FIFO or device is not opened (which could block).
        let meta = fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(BundleError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() > caps.max_total_bytes {
            return Err(too_large(meta.len()));
        }
        let mut file = File::open(path).map_err(io_err)?;
        // The file we opened may not be the one we looked at: check it again.
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(BundleError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let size = meta.len();
        if size > caps.max_total_bytes {
            return Err(too_large(size));
        }
        let len = usize::try_from(size).map_err(|_| too_large(size))?;
        let changed = || BundleError::Changed {
            path: path.to_path_buf(),
        };
        // One pass: each chunk is hashed right after it is read (see `crate::read`).
        let (bytes, hash) = read::read_hashed(&mut file, len).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => changed(),
            _ => io_err(e),
        })?;
        let mut probe = [0u8; 1];
        if file.read(&mut probe).map_err(io_err)? != 0 {
            return Err(changed());
        }
        // The hash covers exactly `bytes`, which are frozen.
        Bundle::checked(bytes, hash, caps)
    }

    /// The exact bytes that were validated and hashed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A shared handle to [`Bundle::bytes`], for writing or caching without a copy.
    pub fn shared_bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// `sha256` of [`Bundle::bytes`].
    pub fn content_hash(&self) -> ContentHash {
        self.hash
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The text of `extension.toml`, as stored in the bundle.
    pub fn manifest_source(&self) -> &str {
        // Checked to be UTF-8 when the bundle was built.
        std::str::from_utf8(self.slice(&self.manifest_range)).unwrap_or("")
    }

    /// The contents of the regular file at `path`, if there is one.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        let entry = find(&self.entries, path)?;
        match entry.kind {
            EntryKind::File(_) => Some(self.slice(&entry.data)),
            EntryKind::Dir => None,
        }
    }

    /// The manifest's entry file (a component, a process extension's executable, a plug-in's
    /// module; a remote extension's CA file, or nothing).
    pub fn entry(&self) -> &[u8] {
        self.slice(&self.entry_range)
    }

    /// The regular files, in archive (bytewise path) order.
    pub fn files(&self) -> impl Iterator<Item = BundleFile<'_>> {
        self.entries.iter().filter_map(|e| match e.kind {
            EntryKind::File(mode) => Some(BundleFile {
                path: &e.path,
                mode,
                data: self.slice(&e.data),
            }),
            EntryKind::Dir => None,
        })
    }

    fn slice(&self, range: &Range<usize>) -> &[u8] {
        self.bytes.get(range.clone()).unwrap_or(&[])
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("id", &self.manifest.extension.id)
            .field("version", &self.manifest.extension.version)
            .field("content_hash", &self.hash)
            .field("len", &self.bytes.len())
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Binary search by stored name (a directory entry sorts as its path plus `/`).
fn find<'e>(entries: &'e [ArchiveEntry], path: &str) -> Option<&'e ArchiveEntry> {
    let index = entries
        .binary_search_by(|e| {
            let slash = matches!(e.kind, EntryKind::Dir).then_some(b'/');
            e.path.as_str().bytes().chain(slash).cmp(path.bytes())
        })
        .ok()?;
    entries.get(index)
}

fn find_file<'e>(entries: &'e [ArchiveEntry], path: &str) -> Option<(&'e ArchiveEntry, Mode)> {
    let entry = find(entries, path)?;
    match entry.kind {
        EntryKind::File(mode) => Some((entry, mode)),
        EntryKind::Dir => None,
    }
}

/// Validates a whole bundle without taking ownership of the bytes (used by `pack_dir` too).
pub(crate) fn check(bytes: &[u8], caps: &BundleLimits) -> Result<Checked, BundleError> {
    let entries = ustar::read(bytes, caps)?;

    let (manifest_entry, _) =
        find_file(&entries, MANIFEST_FILE).ok_or(BundleError::MissingManifest)?;
    let source = bytes
        .get(manifest_entry.data.clone())
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or(BundleError::ManifestNotUtf8)?;
    let manifest = Manifest::parse(source).map_err(BundleError::Manifest)?;
    let manifest_range = manifest_entry.data.clone();

    let ext = &manifest.extension;
    // The bundle's own file besides the manifest: the entry, or a remote extension's CA file
    // (a remote extension may have none).
    let own = match (&ext.entry, &manifest.remote) {
        (Entry::File(p), _) => Some(p),
        (Entry::Remote(_), Some(remote)) => remote.ca.as_ref(),
        (Entry::Remote(_), None) => None,
    };
    let entry_range = match own {
        Some(entry_path) => entry_file(bytes, &entries, ext.kind, entry_path)?,
        None => 0..0,
    };
    layout(&entries, ext, own)?;
    Ok(Checked {
        entries,
        manifest,
        manifest_range,
        entry_range,
    })
}

/// The entry file's checks for its kind; its bytes' range.
fn entry_file(
    bytes: &[u8],
    entries: &[ArchiveEntry],
    kind: Kind,
    entry_path: &BundlePath,
) -> Result<Range<usize>, BundleError> {
    if entry_path.as_str() == MANIFEST_FILE {
        return Err(BundleError::EntryIsManifest {
            path: entry_path.clone(),
        });
    }
    let (entry, entry_mode) =
        find_file(entries, entry_path.as_str()).ok_or_else(|| BundleError::MissingEntry {
            path: entry_path.clone(),
        })?;
    let entry_data = bytes.get(entry.data.clone()).unwrap_or(&[]);
    match kind {
        Kind::Component => {
            if !entry_data.starts_with(&COMPONENT_PREAMBLE) {
                let detail = if entry_data.starts_with(&CORE_MODULE_PREAMBLE) {
                    "it is a core WebAssembly module; build it as a component \
                     (e.g. for wasm32-wasip2, or with `wasm-tools component new`)"
                } else if entry_data.starts_with(b"\0asm") {
                    "it has an unsupported WebAssembly version or layer"
                } else {
                    "it does not start with the WebAssembly magic bytes"
                };
                return Err(BundleError::NotAComponent {
                    path: entry_path.clone(),
                    detail,
                });
            }
        }
        Kind::Extism => {
            if !entry_data.starts_with(&CORE_MODULE_PREAMBLE) {
                let detail = if entry_data.starts_with(&COMPONENT_PREAMBLE) {
                    "it is a WebAssembly component; an Extism plug-in is a core module \
                     (built with an Extism PDK, e.g. for wasm32-unknown-unknown); a component \
                     is kind = \"component\""
                } else if entry_data.starts_with(b"\0asm") {
                    "it has an unsupported WebAssembly version or layer"
                } else {
                    "it does not start with the WebAssembly magic bytes"
                };
                return Err(BundleError::NotACoreModule {
                    path: entry_path.clone(),
                    detail,
                });
            }
        }
        Kind::Process => {
            if entry_mode != Mode::Executable {
                return Err(BundleError::NotExecutable {
                    path: entry_path.clone(),
                });
            }
        }
        Kind::Remote => {
            if !entry_data.starts_with(b"-----BEGIN CERTIFICATE-----") {
                return Err(BundleError::NotACertificate {
                    path: entry_path.clone(),
                });
            }
        }
    }
    Ok(entry.data.clone())
}

/// Only the manifest, the entry file (`own`), `assets/` and the ui folder (with at least one
/// file) are in the bundle.
fn layout(
    entries: &[ArchiveEntry],
    ext: &warden_manifest::Extension,
    own: Option<&BundlePath>,
) -> Result<(), BundleError> {
    let assets: Option<BundlePath> = ASSETS_DIR.parse().ok();
    let below = |path: &BundlePath, dir: &BundlePath| path != dir && path.is_within(dir);
    let ui = ext.ui.as_ref();
    if let Some(ui) = ui {
        let has_file = entries
            .iter()
            .any(|e| matches!(e.kind, EntryKind::File(_)) && below(&e.path, ui));
        if !has_file {
            return Err(BundleError::EmptyUi { path: ui.clone() });
        }
    }
    for e in entries {
        let p = &e.path;
        let in_folder = |dir: &BundlePath| below(p, dir);
        let allowed = match e.kind {
            EntryKind::File(_) => {
                p.as_str() == MANIFEST_FILE
                    || own == Some(p)
                    || assets.as_ref().is_some_and(in_folder)
                    || ui.is_some_and(in_folder)
            }
            // A directory entry is allowed for the folders above anything allowed.
            EntryKind::Dir => {
                assets.as_ref().is_some_and(|a| p.is_within(a))
                    || ui.is_some_and(|u| p.is_within(u) || below(u, p))
                    || own.is_some_and(|own| below(own, p))
            }
        };
        if !allowed {
            return Err(BundleError::UnexpectedFile { path: p.clone() });
        }
    }
    Ok(())
}
