//! Embedding warden in an application, end to end:
//! `cargo run -p warden-host --example embed` (after `scripts/build-examples.sh`).
//!
//! A publisher signs the echo and caller extensions; the application trusts that publisher,
//! loads the bundles (verified) for a tenant, and calls them: caller calls echo through
//! `warden:extension/invoke`, as its manifest declares and the grant allows. Each call runs in a
//! fresh, limited instance and is audited.

use std::path::Path;
use std::sync::Arc;

use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_host::{Grant, Host, MemoryAudit, TrustBundle};
use warden_trust::{SigningKey, publisher_entry, sign};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let work = tempfile::tempdir()?;

    // The publisher's side: pack and sign (what `warden pack` and `warden sign` do).
    let key = SigningKey::generate();
    let publish = |name: &str| -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
        let packed = pack_dir(&examples.join(name), &BundleLimits::default())?;
        let path = work.path().join(format!("{name}.wext"));
        std::fs::write(&path, &packed.bytes)?;
        let envelope = sign(
            &Bundle::read_file(&path, &BundleLimits::default())?,
            &key,
            None,
        )?;
        std::fs::write(
            work.path().join(format!("{name}.wext.sig")),
            envelope.to_json_pretty(),
        )?;
        Ok(path)
    };
    let bundle_path = publish("echo")?;
    let caller_path = publish("caller")?;

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
    // Everything a tenant loads and calls is its own (files, key-value data, secrets).
    let tenant = host.tenant(&"acme".parse()?);
    let ext = tenant.load_file(&bundle_path, None, &Grant::None)?;
    println!("loaded {} {} ({})", ext.id, ext.version, ext.content_hash);
    let caller = tenant.load_file(&caller_path, None, &"call:warden.echo".parse::<Grant>()?)?;
    let out = tenant
        .call(
            &caller.id,
            "call",
            b"warden.echo echo\nhello through invoke",
        )
        .await?
        .value;
    println!("caller -> {}", String::from_utf8_lossy(&out));
    if out != b"ok:hello through invoke" {
        return Err("caller did not reach echo".into());
    }

    let out = tenant
        .call(&ext.id, "greet", br#"{"name":"embedder"}"#)
        .await?
        .value;
    println!("greet -> {}", String::from_utf8_lossy(&out));
    match tenant.call(&ext.id, "unknown", b"{}").await {
        Ok(_) => return Err("an undeclared method was called".into()),
        Err(e) => println!("unknown -> refused: {}", e.error),
    }
    for r in audit.records() {
        println!(
            "audit: {} {} {} {} {}",
            r.event(),
            r.outcome(),
            r.tenant().unwrap_or("-"),
            r.extension().unwrap_or("-"),
            r.target().unwrap_or("")
        );
    }
    Ok(())
}
