use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use warden_bundle::{Bundle, BundleLimits};
use warden_trust::{Envelope, SigningKey, sign};

use crate::files::write_atomic;

/// Private keys are small; a cap keeps a wrong path (a disk image, /dev/zero) from hanging.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

pub fn run(bundle_path: &Path, key_path: &Path, out: Option<PathBuf>) -> Result<()> {
    let out = out.unwrap_or_else(|| super::default_sig(bundle_path));
    let bundle = Bundle::read_file(bundle_path, &BundleLimits::default())
        .with_context(|| format!("reading bundle {}", bundle_path.display()))?;
    let pem = read_small(key_path)?;
    let key = SigningKey::from_pkcs8_pem(&pem)
        .with_context(|| format!("reading private key {}", key_path.display()))?;
    let existing = match fs::symlink_metadata(&out) {
        Ok(_) => Some(Envelope::read_file(&out).with_context(|| {
            format!(
                "{} exists but is not a warden signature file",
                out.display()
            )
        })?),
        Err(_) => None,
    };
    let envelope = sign(&bundle, &key, existing)
        .with_context(|| format!("signing {}", bundle_path.display()))?;
    write_atomic(&out, envelope.to_json_pretty().as_bytes())?;
    let m = &bundle.manifest().extension;
    eprintln!(
        "signed {} {} ({}) with key {}",
        m.id,
        m.version,
        bundle.content_hash(),
        key.public_key().key_id()
    );
    outln!("{}", out.display());
    Ok(())
}

fn read_small(path: &Path) -> Result<String> {
    let bytes = crate::files::read_bounded(path, MAX_KEY_FILE_BYTES)?;
    String::from_utf8(bytes).with_context(|| format!("{} is not a PEM text file", path.display()))
}
