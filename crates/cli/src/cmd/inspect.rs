use std::path::Path;

use anyhow::{Context, Result};
use warden_bundle::{Bundle, BundleLimits};
use warden_manifest::{Grant, Kind, effective};

use crate::{component, describe, plugin};

/// `grant`: show what the component's imports give under this grant (`none` if not given),
/// with `config`'s policy (the default policy if none).
pub fn run(bundle_path: &Path, grant: Option<&str>, config: Option<&Path>) -> Result<()> {
    let grant_given = grant.is_some();
    let grant: Grant = grant
        .unwrap_or("none")
        .parse()
        .map_err(|e| anyhow::anyhow!("--grant: {e}"))?;
    let policy = crate::storage::read_config(config)?.policy;
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
    outln!(
        "limits (profile {}): {}",
        m.limits.profile.unwrap_or(policy.profile),
        describe::limits(&m.limits.resolve(policy.profile))
    );
    if e.kind == Kind::Process {
        let p = &policy.process;
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
    if e.kind == Kind::Extism {
        let ifaces = plugin::interfaces(bundle.entry())
            .with_context(|| format!("inspecting {}", e.entry))?;
        let eff = effective(m, &grant, &policy).with_context(|| format!("--grant {grant}"))?;
        outln!(
            "WASI preview 1: {}",
            if m.extism.wasi {
                "asked for ([extism] wasi = true): clocks, random, stdout/stderr into the log, the folders of [permissions.filesystem]; no arguments, environment or sockets"
            } else {
                "not asked for (a WASI import is refused at load)"
            }
        );
        outln!(
            "host functions imported, under grant {grant}{} and {}:",
            if grant_given {
                ""
            } else {
                " (--grant to try another)"
            },
            if config.is_some() {
                "the config's policy"
            } else {
                "the default policy"
            }
        );
        for (module, name, sig) in &ifaces.imports {
            outln!(
                "  {}::{} {sig}: {}",
                module.escape_debug(),
                name.escape_debug(),
                plugin::import_fate(module, name, sig, &eff, m.extism.wasi)
            );
        }
        outln!("exports (functions):");
        for (name, sig) in &ifaces.exports {
            let listed = m.methods.iter().any(|x| x.as_str() == name);
            outln!(
                "  {} {sig}{}",
                name.escape_debug(),
                if listed { " (a method)" } else { "" }
            );
        }
    }
    if let (Some(endpoint), Some(remote)) = (e.entry.remote(), &m.remote) {
        outln!("remote:");
        outln!(
            "  endpoint: {endpoint} ({})",
            match endpoint.protocol {
                warden_manifest::RemoteProtocol::JsonRpc => "JSON-RPC 2.0 over HTTPS",
                warden_manifest::RemoteProtocol::Grpc => {
                    "gRPC over TLS: warden.extension.v1.Extension/Call"
                }
            }
        );
        for pin in &remote.pins {
            outln!("  pinned key: {pin}");
        }
        match &remote.ca {
            Some(ca) => outln!("  CA: {ca} (the server's chain must also lead to it)"),
            None => outln!("  CA: none (the pins alone; expiry and name still checked)"),
        }
        let allowed = policy.remote.allowed_hosts.iter().any(|h| {
            h.matches(
                warden_manifest::Scheme::Https,
                &endpoint.host,
                endpoint.port,
                &[443],
            )
        });
        outln!(
            "  {}",
            if allowed {
                "allowed by the policy's [policy.remote] allowed_hosts"
            } else {
                "REFUSED at load: not in the policy's [policy.remote] allowed_hosts"
            }
        );
    }
    if e.kind == Kind::Component {
        let ifaces = component::interfaces(bundle.entry())
            .with_context(|| format!("inspecting {}", e.entry))?;
        let f = component::footprint(bundle.entry())
            .with_context(|| format!("inspecting {}", e.entry))?;
        let limits = m.limits.resolve(policy.profile);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let secs = f.code_bytes as f64 / (component::CODE_BYTES_PER_CORE_SECOND * cores) as f64;
        outln!(
            "size: component {:.1} MB; code {:.1} MB in {} functions",
            bundle.entry().len() as f64 / 1e6,
            f.code_bytes as f64 / 1e6,
            f.functions
        );
        outln!(
            "compile: about {} on this machine's {cores} cores (at publish or install, once; then from the code cache)",
            if secs < 1.0 {
                "a second or less".to_owned()
            } else {
                format!("{secs:.0} s")
            }
        );
        let limit = limits.max_memory;
        if f.oversized {
            outln!(
                "memory at start: a memory over 4 GiB is declared, the component cannot be instantiated; max_memory {limit}"
            );
        } else {
            outln!(
                "memory at start: {:.1} MiB of linear memory, for every instance it makes ({:.1} MiB of it from data segments); max_memory {limit}{}",
                f.memory_bytes as f64 / f64::from(1 << 20),
                f.data_bytes as f64 / f64::from(1 << 20),
                if f.memory_bytes > limit.bytes() {
                    ": TOO SMALL, every call would fail at instantiation"
                } else {
                    ""
                }
            );
        }
        let eff = effective(m, &grant, &policy).with_context(|| format!("--grant {grant}"))?;
        outln!(
            "imports, under grant {grant}{} and {}:",
            if grant_given {
                ""
            } else {
                " (--grant to try another)"
            },
            if config.is_some() {
                "the config's policy"
            } else {
                "the default policy"
            }
        );
        for (name, kind) in &ifaces.imports {
            outln!("  {name} ({kind}): {}", describe::import_fate(name, &eff));
        }
        outln!("exports:");
        for (name, kind) in &ifaces.exports {
            outln!("  {name} ({kind})");
        }
    }
    Ok(())
}
