//! Compiled code on disk, authenticated: the one place native code is read back. Components,
//! and core modules (Extism plug-ins): the two kinds ([`Code`]) are MACed under different
//! domain tags and named apart, so an entry of one is never loaded as the other.
//!
//! Loading compiled code is loading native code: Wasmtime's `Component::deserialize` (and
//! `Module::deserialize`) trusts its
//! input entirely, so anything that could write a cache folder read by it could run code in the
//! host. Here every entry carries an HMAC-SHA256 under a 32-byte key that only the operator can
//! read (`DATA/compile.key`, 0600, made by `warden-datadir`), over
//!
//! ```text
//! "warden-codecache/v1/mac\0" || content hash (32) || engine fingerprint (32) || len (u64 LE) || code
//! ```
//!
//! and a file is loaded only after it was read whole into memory (at most
//! [`MAX_ENTRY_BYTES`]), and its MAC checked, in constant time, over those very bytes. Anything
//! else (missing, unreadable, not a private regular file, too large, malformed, a MAC that does
//! not match, an entry Wasmtime refuses) is never loaded: [`Lookup::Miss`] or
//! [`Lookup::Rejected`], and the caller compiles again and [`CodeCache::store`]s a fresh entry
//! over it. A rejection says why, so that the caller can log or audit it: a MAC that does not
//! match means someone changed the folder.
//!
//! (a module's tag is `"warden-codecache/v1/module-mac\0"`).
//!
//! Layout: one file per (content hash, engine fingerprint) in the cache folder (0700), named
//! `HASH-FINGERPRINT` (64 + 64 hex digits, no dot; a module's `module-HASH-FINGERPRINT`), holding `MAGIC (8) || MAC (32) || code`,
//! mode 0600. It is written to a temporary file in the same folder (`.NAME.RANDOM.tmp`),
//! synced, and renamed into place, so a reader sees a whole entry or none.
//!
//! The engine fingerprint ([`fingerprint`]) is a sha256 over Wasmtime's version and
//! `Engine::precompile_compatibility_hash()` (target, compiler flags, tunables, features):
//! code compiled by an engine with other settings has another name, and its MAC would not
//! match under this one's.
//!
//! This crate holds the workspace's one `unsafe` block (`deserialize_verified`).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};
use warden_datadir::{check_private_meta, private_dir};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

pub use warden_datadir::{DataDirError, KEY_BYTES, Key};

/// The largest entry file read (header included), and so the largest compiled component
/// stored. The largest real components measured (componentize-py and -js hellos, 12-18 MB of
/// WebAssembly) compile to well under this; a bigger file is refused without being read.
pub const MAX_ENTRY_BYTES: u64 = 512 << 20;

/// The Wasmtime this crate is built against (`Cargo.lock`; a test keeps the two equal). Also
/// in the compatibility hash by default; written here so that the fingerprint says it
/// whatever the engine's settings.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The sha256 of a component's bytes (the bundle's entry, not the whole bundle: bundles that
/// differ only in their manifest share compiled code).
pub type ContentHash = [u8; 32];
/// What an engine's compiled code is compatible with ([`fingerprint`]).
pub type Fingerprint = [u8; 32];

const MAGIC: &[u8; 8] = b"wdncode1";
const MAC_BYTES: usize = 32;
const HEADER_BYTES: usize = MAGIC.len() + MAC_BYTES;
/// Domain separation: this key MACs nothing else, but a tag costs nothing; and a module's
/// entry must never pass for a component's, or the reverse.
const MAC_TAG: &[u8] = b"warden-codecache/v1/mac\0";
const MODULE_MAC_TAG: &[u8] = b"warden-codecache/v1/module-mac\0";
const FINGERPRINT_TAG: &[u8] = b"warden-codecache/v1/engine\0";

type HmacSha256 = Hmac<Sha256>;

/// What compiled code is of: a [`Component`] or a core [`Module`]. Sealed: the cache knows how
/// to load each.
pub trait Code: sealed::Sealed {}
impl Code for Component {}
impl Code for Module {}

mod sealed {
    use super::{Component, MAC_TAG, MODULE_MAC_TAG, Module};

    /// Which kind, for the one `unsafe` load (`CodeCache::deserialize_verified`).
    pub enum Kind {
        Component,
        Module,
    }

    /// What that load made.
    pub enum Loaded {
        Component(Component),
        Module(Module),
    }

    pub trait Sealed: Sized {
        const KIND: Kind;
        const MAC_TAG: &'static [u8];
        const NAME_PREFIX: &'static str;
        fn take(loaded: Loaded) -> Option<Self>;
    }

    impl Sealed for Component {
        const KIND: Kind = Kind::Component;
        const MAC_TAG: &'static [u8] = MAC_TAG;
        const NAME_PREFIX: &'static str = "";
        fn take(loaded: Loaded) -> Option<Self> {
            match loaded {
                Loaded::Component(c) => Some(c),
                Loaded::Module(_) => None,
            }
        }
    }

    impl Sealed for Module {
        const KIND: Kind = Kind::Module;
        const MAC_TAG: &'static [u8] = MODULE_MAC_TAG;
        const NAME_PREFIX: &'static str = "module-";
        fn take(loaded: Loaded) -> Option<Self> {
            match loaded {
                Loaded::Module(m) => Some(m),
                Loaded::Component(_) => None,
            }
        }
    }
}

/// What [`CodeCache::load`] found.
pub enum Lookup<T = Component> {
    /// An entry whose MAC matched, deserialized.
    Hit(T),
    /// No entry (or no folder: an in-memory cache).
    Miss,
    /// An entry that was not loaded, and why. Compile again and store over it.
    Rejected(Rejected),
}

impl<T> std::fmt::Debug for Lookup<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Hit(_) => f.write_str("Hit"),
            Lookup::Miss => f.write_str("Miss"),
            Lookup::Rejected(r) => f.debug_tuple("Rejected").field(r).finish(),
        }
    }
}

/// An entry that was found but not loaded.
#[derive(Debug, thiserror::Error)]
#[error("compiled code in {} was not loaded: {reason}", .path.display())]
pub struct Rejected {
    pub path: PathBuf,
    pub reason: Reason,
}

/// Why compiled code was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// The MAC does not match: the entry was changed, copied from another entry's name, or
    /// written under another key.
    #[error(
        "its MAC does not match (it was changed, copied from another entry, or written under another key)"
    )]
    Mac,
    /// Too short, or not an entry of this format.
    #[error("it is not a code cache entry: {0}")]
    Format(&'static str),
    #[error("it holds {0} bytes, more than the {MAX_ENTRY_BYTES} an entry may")]
    TooLarge(u64),
    /// A link, a folder, a device, or a file other users may read or write.
    #[error(transparent)]
    NotPrivate(DataDirError),
    #[error("reading it failed: {0}")]
    Unreadable(std::io::Error),
    /// The MAC matched but Wasmtime refused the code (for this engine).
    #[error("Wasmtime refused it: {0}")]
    Wasmtime(String),
}

impl Reason {
    /// The entry's MAC did not match: someone who is not this host wrote it.
    pub fn is_tampering(&self) -> bool {
        matches!(self, Reason::Mac)
    }
}

/// Why an entry could not be stored (the component was compiled all the same).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Dir(#[from] DataDirError),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the compiled component is {0} bytes, more than the {MAX_ENTRY_BYTES} an entry may hold"
    )]
    TooLarge(u64),
}

/// What [`CodeCache::admit`] did with freshly compiled code.
pub struct Admitted<T = Component> {
    /// The component (or module), deserialized from the in-memory bytes just sealed; or why
    /// Wasmtime refused them.
    pub component: Result<T, Reason>,
    /// Where the entry was written (`None`: an in-memory cache), or why it was not.
    pub stored: Result<Option<PathBuf>, CacheError>,
}

/// Compiled components in a private folder, under a key. See the crate docs.
pub struct CodeCache {
    dir: Option<PathBuf>,
    key: Key,
}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CodeCache {
    /// The cache in `dir` (created 0700 if missing; refused if others may write it), whose
    /// entries are MACed under `key`.
    pub fn open(dir: &Path, key: Key) -> Result<CodeCache, CacheError> {
        private_dir(dir)?;
        Ok(CodeCache {
            dir: Some(dir.to_path_buf()),
            key,
        })
    }

    /// A cache with no folder: nothing is stored or found; [`CodeCache::admit`] still seals
    /// code (under a random key) before loading it.
    pub fn in_memory() -> CodeCache {
        CodeCache {
            dir: None,
            key: Key::random(),
        }
    }

    /// The folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Where the entry for `hash` compiled by `engine` lives (`None`: an in-memory cache).
    pub fn entry_path(&self, engine: &Engine, hash: &ContentHash) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(entry_name::<Component>(hash, &fingerprint(engine))))
    }

    /// Where the entry for the module `hash` compiled by `engine` lives.
    pub fn module_entry_path(&self, engine: &Engine, hash: &ContentHash) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(entry_name::<Module>(hash, &fingerprint(engine))))
    }

    /// The component compiled from the bytes whose sha256 is `hash`, if a valid entry for this
    /// engine is stored. Never panics on what it reads.
    pub fn load(&self, engine: &Engine, hash: &ContentHash) -> Lookup {
        self.load_as(engine, hash)
    }

    /// The core module compiled from the bytes whose sha256 is `hash`, as [`CodeCache::load`].
    pub fn load_module(&self, engine: &Engine, hash: &ContentHash) -> Lookup<Module> {
        self.load_as(engine, hash)
    }

    fn load_as<T: Code>(&self, engine: &Engine, hash: &ContentHash) -> Lookup<T> {
        let Some(dir) = &self.dir else {
            return Lookup::Miss;
        };
        let fp = fingerprint(engine);
        let path = dir.join(entry_name::<T>(hash, &fp));
        let rejected = |reason| {
            Lookup::Rejected(Rejected {
                path: path.clone(),
                reason,
            })
        };
        let file = match read_entry(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Lookup::Miss,
            Err(reason) => return rejected(reason),
        };
        if file.len() < HEADER_BYTES {
            return rejected(Reason::Format("shorter than its header"));
        }
        let (header, code) = file.split_at(HEADER_BYTES);
        let (magic, mac) = header.split_at(MAGIC.len());
        if magic != MAGIC {
            return rejected(Reason::Format("wrong magic number"));
        }
        match self.deserialize_verified(engine, hash, &fp, mac, code) {
            Ok(component) => Lookup::Hit(component),
            Err(reason) => rejected(reason),
        }
    }

    /// Stores `code`, what `engine.precompile_component` (or `Component::serialize`) made of
    /// the bytes whose sha256 is `hash`, replacing any entry there. Returns the entry's path
    /// (`None` for an in-memory cache).
    pub fn store(
        &self,
        engine: &Engine,
        hash: &ContentHash,
        code: &[u8],
    ) -> Result<Option<PathBuf>, CacheError> {
        self.store_as::<Component>(engine, hash, code)
    }

    /// Stores `code`, what `Module::serialize` (or `engine.precompile_module`) made of the
    /// module whose sha256 is `hash`, as [`CodeCache::store`].
    pub fn store_module(
        &self,
        engine: &Engine,
        hash: &ContentHash,
        code: &[u8],
    ) -> Result<Option<PathBuf>, CacheError> {
        self.store_as::<Module>(engine, hash, code)
    }

    fn store_as<T: Code>(
        &self,
        engine: &Engine,
        hash: &ContentHash,
        code: &[u8],
    ) -> Result<Option<PathBuf>, CacheError> {
        let fp = fingerprint(engine);
        let mac = self.mac::<T>(hash, &fp, code);
        self.write::<T>(hash, &fp, &mac, code)
    }

    /// Code this host just compiled (in a compile child process of its own): sealed with the
    /// MAC and loaded from the in-memory copy, the same check-then-load path as
    /// [`CodeCache::load`], then stored if Wasmtime accepted it (code it refuses is not
    /// stored: [`Admitted::stored`] is `Ok(None)`). A failure to store is reported in
    /// [`Admitted::stored`]; the component is still returned.
    pub fn admit(&self, engine: &Engine, hash: &ContentHash, code: Vec<u8>) -> Admitted {
        self.admit_as(engine, hash, code)
    }

    /// A core module this host just compiled (in its compile child), as [`CodeCache::admit`].
    pub fn admit_module(
        &self,
        engine: &Engine,
        hash: &ContentHash,
        code: Vec<u8>,
    ) -> Admitted<Module> {
        self.admit_as(engine, hash, code)
    }

    fn admit_as<T: Code>(&self, engine: &Engine, hash: &ContentHash, code: Vec<u8>) -> Admitted<T> {
        let fp = fingerprint(engine);
        let mac = self.mac::<T>(hash, &fp, &code);
        let component = self.deserialize_verified::<T>(engine, hash, &fp, &mac, &code);
        let stored = match &component {
            Ok(_) => self.write::<T>(hash, &fp, &mac, &code),
            Err(_) => Ok(None),
        };
        Admitted { component, stored }
    }

    fn mac<T: Code>(&self, hash: &ContentHash, fp: &Fingerprint, code: &[u8]) -> [u8; MAC_BYTES] {
        self.hmac::<T>(hash, fp, code)
            .finalize()
            .into_bytes()
            .into()
    }

    fn hmac<T: Code>(&self, hash: &ContentHash, fp: &Fingerprint, code: &[u8]) -> HmacSha256 {
        // HMAC pads a key shorter than the block (64 bytes) with zeros, so this is HMAC under
        // the 32-byte key, through the constructor that cannot fail.
        let mut block = zeroize::Zeroizing::new([0u8; 64]);
        block[..KEY_BYTES].copy_from_slice(self.key.bytes());
        let mut m = <HmacSha256 as hmac::digest::KeyInit>::new(&(*block).into());
        m.update(T::MAC_TAG);
        m.update(hash);
        m.update(fp);
        m.update(&(code.len() as u64).to_le_bytes());
        m.update(code);
        m
    }

    /// The one place compiled code becomes a `Component` (or a `Module`): after its MAC is
    /// checked, in constant time, over the very bytes handed to Wasmtime.
    #[allow(unsafe_code)]
    fn deserialize_verified<T: Code>(
        &self,
        engine: &Engine,
        hash: &ContentHash,
        fp: &Fingerprint,
        mac: &[u8],
        code: &[u8],
    ) -> Result<T, Reason> {
        self.hmac::<T>(hash, fp, code)
            .verify_slice(mac)
            .map_err(|_| Reason::Mac)?;
        // SAFETY: `Component::deserialize` (`Module::deserialize`) requires bytes that Wasmtime
        // itself produced (`Engine::precompile_component` / `Component::serialize`; for a
        // module `Engine::precompile_module` / `Module::serialize`) for a compatible engine.
        // `code` carries a valid HMAC-SHA256, just checked above, under the 32-byte key that
        // only this host's operator can read (0600 in the 0700 data dir), over the domain tag
        // of its kind (a module's entry never passes for a component's, nor the reverse),
        // this code's content hash, this engine's fingerprint and these exact bytes.
        // Only `store`/`admit` compute that MAC, and only over what this host's own compile
        // (in process, or its compile child) returned for this content hash: so these bytes
        // are such output, for this component and an engine of this fingerprint (Wasmtime
        // checks the engine's compatibility again while deserializing). `code` is a borrow
        // of memory this process owns (read whole from the file, never mapped), so nothing
        // can change it between the check and this use; Wasmtime copies it into its own
        // mapping before it makes anything executable.
        let loaded = unsafe {
            match T::KIND {
                sealed::Kind::Component => {
                    Component::deserialize(engine, code).map(sealed::Loaded::Component)
                }
                sealed::Kind::Module => {
                    Module::deserialize(engine, code).map(sealed::Loaded::Module)
                }
            }
        };
        let loaded = loaded.map_err(|e| Reason::Wasmtime(format!("{e:#}")))?;
        T::take(loaded).ok_or(Reason::Format("code of the other kind"))
    }

    fn write<T: Code>(
        &self,
        hash: &ContentHash,
        fp: &Fingerprint,
        mac: &[u8; MAC_BYTES],
        code: &[u8],
    ) -> Result<Option<PathBuf>, CacheError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let total = (HEADER_BYTES as u64).saturating_add(code.len() as u64);
        if total > MAX_ENTRY_BYTES {
            return Err(CacheError::TooLarge(total));
        }
        let name = entry_name::<T>(hash, fp);
        let path = dir.join(&name);
        let mut suffix = [0u8; 8];
        OsRng.fill_bytes(&mut suffix);
        let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { what, path, source }
        };
        let written = (|| {
            // `create_new` (O_EXCL) never follows a link planted at the name.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("creating", &tmp))?;
            // The umask can only have removed bits.
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io("setting mode 600 on", &tmp))?;
            f.write_all(MAGIC)
                .and_then(|()| f.write_all(mac))
                .and_then(|()| f.write_all(code))
                .and_then(|()| f.sync_all())
                .map_err(io("writing", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("renaming into place", &path))?;
            // The rename itself survives a crash once the folder is synced.
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing", dir))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map(|()| Some(path))
    }
}

/// `HASH-FINGERPRINT` in lowercase hex (`module-` before a module's): no dot, so temporary
/// files (which have dots) are never taken for entries.
fn entry_name<T: Code>(hash: &ContentHash, fp: &Fingerprint) -> String {
    format!(
        "{}{}-{}",
        T::NAME_PREFIX,
        hex::encode(hash),
        hex::encode(fp)
    )
}

/// Reads an entry whole: `None` if there is none; refused if it is not a private regular file
/// or is over [`MAX_ENTRY_BYTES`] (checked before reading, and again while reading).
fn read_entry(path: &Path) -> Result<Option<Vec<u8>>, Reason> {
    // No link is followed, and opening a FIFO planted at the name does not block.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(None),
        Err(e) if e == rustix::io::Errno::LOOP => {
            return Err(Reason::NotPrivate(DataDirError::NotAFile(
                path.to_path_buf(),
            )));
        }
        Err(e) => return Err(Reason::Unreadable(e.into())),
    };
    let file = fs::File::from(fd);
    let meta = file.metadata().map_err(Reason::Unreadable)?;
    check_private_meta(path, &meta).map_err(Reason::NotPrivate)?;
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(Reason::TooLarge(meta.len()));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(meta.len()).unwrap_or(0))
        .map_err(|e| Reason::Unreadable(std::io::Error::other(e)))?;
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Reason::Unreadable)?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(Reason::TooLarge(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// What `engine`'s compiled code is compatible with: sha256 over a tag, [`WASMTIME_VERSION`]
/// and `Engine::precompile_compatibility_hash()`. That hash is an `impl Hash`, fed here to a
/// `Hasher` that is sha256 itself (no random keys: the same engine settings give the same
/// fingerprint in every process of this build).
pub fn fingerprint(engine: &Engine) -> Fingerprint {
    let mut h = Sha256Hasher(Sha256::new());
    h.0.update(FINGERPRINT_TAG);
    h.0.update(WASMTIME_VERSION.as_bytes());
    h.0.update([0]);
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.finalize().into()
}

/// A `Hasher` that feeds everything written to it into sha256: deterministic, keyless.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}
