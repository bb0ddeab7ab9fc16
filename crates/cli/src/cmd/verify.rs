use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use warden_bundle::{Bundle, Caps};
use warden_trust::{Envelope, TrustBundle, verify};

use crate::describe;

pub fn run(bundle_path: &Path, trust_path: &Path, sig: Option<PathBuf>) -> Result<()> {
    let sig = sig.unwrap_or_else(|| super::default_sig(bundle_path));
    let trust = TrustBundle::read_file(trust_path)
        .with_context(|| format!("reading trust bundle {}", trust_path.display()))?;
    let envelope = Envelope::read_file(&sig)
        .with_context(|| format!("reading signature {}", sig.display()))?;
    let bundle = Bundle::read_file(bundle_path, &Caps::default())
        .with_context(|| format!("reading bundle {}", bundle_path.display()))?;
    let verified = verify(bundle, &envelope, &trust)
        .with_context(|| format!("verification of {} failed", bundle_path.display()))?;
    let m = verified.manifest();
    let e = &m.extension;
    println!("verified: {} {}", e.id, e.version);
    println!("publisher: {}", e.publisher);
    println!("content hash: {}", verified.content_hash());
    for s in verified.signers() {
        println!("signed by: {s}");
    }
    println!("signed at: {}", verified.statement().signed_at());
    println!("kind: {} (entry {})", describe::kind(m), e.entry);
    println!("permissions requested:");
    for line in describe::permissions(&m.permissions) {
        println!("  - {line}");
    }
    Ok(())
}
