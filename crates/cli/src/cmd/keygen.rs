use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use warden_manifest::PublisherName;
use warden_trust::{SigningKey, publisher_entry};

use crate::files::create_new;

pub fn run(publisher: &str, out: &Path) -> Result<()> {
    let name: PublisherName = publisher
        .parse()
        .with_context(|| format!("invalid publisher name {publisher:?}"))?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let key_path = out.join(format!("{name}.key"));
    let pub_path = out.join(format!("{name}.pub"));
    for p in [&key_path, &pub_path] {
        if fs::symlink_metadata(p).is_ok() {
            anyhow::bail!("{} already exists; keys are never overwritten", p.display());
        }
    }
    let key = SigningKey::generate();
    let public = key.public_key();
    let pub_pem = public.to_spki_pem();
    create_new(&key_path, key.to_pkcs8_pem().as_bytes(), 0o600)?;
    create_new(&pub_path, pub_pem.as_bytes(), 0o644)?;
    eprintln!("wrote {} (private, keep it secret)", key_path.display());
    eprintln!("wrote {}", pub_path.display());
    eprintln!("key id {}", public.key_id());
    eprintln!("add this to your trust bundle:");
    out!("{}", publisher_entry(&name, &public));
    Ok(())
}
