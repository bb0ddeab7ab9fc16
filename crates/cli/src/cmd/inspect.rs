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
    outln!("NOT VERIFIED: run `warden verify` to check who signed this bundle.");
    outln!("id: {}", e.id);
    outln!("version: {}", e.version);
    outln!("publisher (claimed): {}", e.publisher);
    if !e.description.is_empty() {
        outln!("description: {}", e.description.escape_debug());
    }
    outln!("content hash: {}", bundle.content_hash());
    outln!("kind: {} (entry {})", describe::kind(m), e.entry);
    if let Some(ui) = &e.ui {
        outln!("ui: {ui}/");
    }
    outln!("files:");
    for f in bundle.files() {
        outln!("  {:o} {:>10} {}", f.mode.bits(), f.data.len(), f.path);
    }
    if !m.endpoints.is_empty() {
        outln!("endpoints:");
        for ep in &m.endpoints {
            outln!("  {} {}", ep.method, ep.path.as_str());
        }
    }
    if !m.methods.is_empty() {
        let names: Vec<&str> = m.methods.iter().map(|n| n.as_str()).collect();
        outln!("methods: {}", names.join(", "));
    }
    outln!("permissions requested:");
    for line in describe::permissions(&m.permissions) {
        outln!("  - {line}");
    }
    let policy = Policy::default();
    outln!(
        "limits (profile {}): {}",
        m.limits.profile.unwrap_or(policy.profile),
        describe::limits(&m.limits.resolve(policy.profile))
    );
    if e.kind == Kind::Component {
        let ifaces = component::interfaces(bundle.entry())
            .with_context(|| format!("inspecting {}", e.entry))?;
        outln!("imports:");
        for i in &ifaces.imports {
            outln!("  {i}");
        }
        outln!("exports:");
        for x in &ifaces.exports {
            outln!("  {x}");
        }
    }
    Ok(())
}
