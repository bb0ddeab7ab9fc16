//! The operator config (`--config FILE`) of every command that keeps state: its `[policy]`,
//! and the storage its `[storage]` names (absent: the embedded default in `--data`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use warden_manifest::{Config, Storage};

use crate::files::read_bounded;

/// The config in `path`, or the default one. Shared storage is refused here, by name, until
/// this build can reach it: a command must never quietly fall back to `--data` when the
/// operator pointed it at a fleet's storage.
pub fn read_config(path: Option<&Path>) -> Result<Config> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let bytes = read_bounded(path, warden_manifest::strict::MAX_DOCUMENT_BYTES as u64)?;
    let text =
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let config = Config::parse(&text).with_context(|| format!("in {}", path.display()))?;
    if let Storage::Shared(s) = &config.storage {
        bail!(
            "in {}: [storage] url = {}: shared storage (PostgreSQL, with blobs in {}) is not \
             built into this warden; remove [storage] to keep everything in --data",
            path.display(),
            s.database,
            s.blobs
        );
    }
    Ok(config)
}
