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
    if e.kind == Kind::Process {
        let p = policy.process;
        let mut root = vec!["/bundle (read-only)".to_owned()];
        let fs = &m.permissions.filesystem;
        root.extend(
            fs.paths
                .iter()
                .map(|g| format!("{g} (read-write, if granted)")),
        );
        root.extend(
            fs.readonly_paths
                .iter()
                .map(|g| format!("{g} (read-only, if granted)")),
        );
        root.extend([
            "/dev/null".to_owned(),
            "/dev/urandom".to_owned(),
            format!("/tmp ({})", p.tmp_size),
        ]);
        let limits = m.limits.resolve(policy.profile);
        outln!("sandbox profile:");
        outln!(
            "  runs: /bundle/{}{}",
            e.entry,
            e.args
                .iter()
                .map(|a| format!(" {}", a.escape_debug()))
                .collect::<String>()
        );
        outln!(
            "  namespaces: user, mount, pid, ipc, uts, cgroup, net (no interface: network only through http.fetch)"
        );
        outln!("  root: {}", root.join(", "));
        outln!(
            "  Landlock on the same paths; seccomp allowlist (x32 and foreign architectures refused)"
        );
        outln!(
            "  rlimits: address space {} (max_memory), processes {}, open files {}, file size {}, core 0",
            limits.max_memory,
            p.processes,
            p.open_files,
            p.max_file_bytes
        );
        outln!("  environment: empty; descriptors: 0-2 only; no_new_privs");
        outln!("this host's kernel:");
        for line in warden_host::process_support() {
            outln!("  {line}");
        }
    }
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
