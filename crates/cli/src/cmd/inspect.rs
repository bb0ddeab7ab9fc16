use std::path::Path;

use anyhow::{Context, Result};
use warden_bundle::{Bundle, BundleLimits};
use warden_manifest::{Kind, Policy};

use crate::{component, describe};

pub fn run(bundle_path: &Path) -> Result<()> {
    let bundle = Bundle::read_file(bundle_path, &BundleLimits::default())
        .with_context(|| format!("reading bundle {}", bundle_path.display()))?;
    let m = bundle.manifest();
    let e = &m.extension;
    println!("NOT VERIFIED: run `warden verify` to check who signed this bundle.");
    println!("id: {}", e.id);
    println!("version: {}", e.version);
    println!("publisher (claimed): {}", e.publisher);
    if !e.description.is_empty() {
        println!("description: {}", e.description.escape_debug());
    }
    println!("content hash: {}", bundle.content_hash());
    println!("kind: {} (entry {})", describe::kind(m), e.entry);
    if let Some(ui) = &e.ui {
        println!("ui: {ui}/");
    }
    println!("files:");
    for f in bundle.files() {
        println!("  {:o} {:>10} {}", f.mode.bits(), f.data.len(), f.path);
    }
    if !m.endpoints.is_empty() {
        println!("endpoints:");
        for ep in &m.endpoints {
            println!("  {} {}", ep.method, ep.path.as_str());
        }
    }
    if !m.methods.is_empty() {
        let names: Vec<&str> = m.methods.iter().map(|n| n.as_str()).collect();
        println!("methods: {}", names.join(", "));
    }
    println!("permissions requested:");
    for line in describe::permissions(&m.permissions) {
        println!("  - {line}");
    }
    let policy = Policy::default();
    println!(
        "limits (profile {}): {}",
        m.limits.profile.unwrap_or(policy.profile),
        describe::limits(&m.limits.resolve(policy.profile))
    );
    if e.kind == Kind::Component {
        let ifaces = component::interfaces(bundle.entry())
            .with_context(|| format!("inspecting {}", e.entry))?;
        println!("imports:");
        for i in &ifaces.imports {
            println!("  {i}");
        }
        println!("exports:");
        for x in &ifaces.exports {
            println!("  {x}");
        }
    }
    Ok(())
}
