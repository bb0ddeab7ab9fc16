//! Extension bundles (`NAME.wext`): a canonical, uncompressed ustar archive holding
//! `extension.toml`, the entry file, and optional `assets/` and ui folders.
//!
//! - [`ustar`]: the one canonical encoding, its writer and its strict reader. Anything that is
//!   not exactly canonical is refused on read, never fixed.
//! - [`Bundle`]: validated bytes held in memory, with their [`ContentHash`] and the parsed
//!   [`warden_manifest::Manifest`]. Files are handed out as slices of the hashed bytes, so what
//!   is loaded is what was hashed (and, elsewhere, what was signed).
//! - [`pack_dir`]: packs a folder into a bundle, following no links.
//! - [`BundleLimits`]: limits on entries, file size and total size, checked before the work they bound.
//!
//! This crate knows nothing about signatures, trust, Wasmtime or terminals, and never prints.

pub mod bundle;
pub mod digest;
pub mod limits;
pub mod pack;
mod read;
pub mod ustar;

pub use bundle::{ASSETS_DIR, Bundle, BundleError, BundleFile, COMPONENT_PREAMBLE, MANIFEST_FILE};
pub use digest::{ContentHash, HashParseError};
pub use limits::{
    BundleLimits, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_TOTAL_BYTES,
};
pub use pack::{PackError, Packed, pack_dir, pack_dir_with_progress};
pub use ustar::{ArchiveError, Mode};
