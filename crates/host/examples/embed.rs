//! Embedding warden in an application, end to end:
//! `cargo run -p warden-host --example embed` (after `scripts/build-examples.sh`).
//!
//! A publisher signs the echo extension; the application trusts that publisher, loads the
//! bundle (verified), and calls it. The call runs in a fresh, limited instance and is audited.

use std::path::Path;
use std::sync::Arc;

use warden_bundle::{Bundle, Caps, pack_dir};
use warden_host::{Grant, Host, MemoryAudit, TrustBundle};
use warden_trust::{SigningKey, publisher_entry, sign};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let work = tempfile::tempdir()?;

    // The publisher's side: pack and sign (what `warden pack` and `warden sign` do).
    let key = SigningKey::generate();
    let packed = pack_dir(&examples.join("echo"), &Caps::default())?;
    let bundle_path = work.path().join("echo.wext");
    std::fs::write(&bundle_path, &packed.bytes)?;
    let envelope = sign(
        &Bundle::read_file(&bundle_path, &Caps::default())?,
        &key,
        None,
    )?;
    std::fs::write(work.path().join("echo.wext.sig"), envelope.to_json_pretty())?;

    // The application's side: trust the publisher, load, call.
    let trust = TrustBundle::parse(&publisher_entry(
        &"warden-examples".parse()?,
        &key.public_key(),
    ))?;
    let audit = Arc::new(MemoryAudit::default());
    let host = Host::builder()
        .trust(trust)
        .data_dir(work.path().join("data"))
        .audit(audit.clone())
        .build()?;
    let ext = host.load_file(&bundle_path, None, &Grant::None)?;
    println!("loaded {} {} ({})", ext.id, ext.version, ext.content_hash);

    let out = host
        .call(&ext.id, "greet", br#"{"name":"embedder"}"#)
        .await?;
    println!("greet -> {}", String::from_utf8_lossy(&out));
    match host.call(&ext.id, "unknown", b"{}").await {
        Ok(_) => return Err("an undeclared method was called".into()),
        Err(e) => println!("unknown -> refused: {}", e.error),
    }
    for r in audit.records() {
        println!(
            "audit: {} {} {}",
            r.event(),
            r.outcome(),
            r.extension().unwrap_or("-")
        );
    }
    Ok(())
}
