//! Permissions and limits in plain words, for `verify` and `inspect`.

use warden_manifest::{HostPattern, Kind, Limits, Manifest, Permissions};

/// One line per requested capability; a single line when nothing is requested.
pub fn permissions(p: &Permissions) -> Vec<String> {
    let mut out = Vec::new();
    if p.network.enabled {
        let ports = if p.network.allowed_ports.is_empty() {
            None
        } else {
            Some(
                p.network
                    .allowed_ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        for h in &p.network.allowed_hosts {
            let who = match &h.host {
                HostPattern::Any => "any public host".to_string(),
                HostPattern::Exact(n) => n.clone(),
                HostPattern::Subdomains(s) => format!("any subdomain of {s}"),
                HostPattern::Ip(ip) => format!("the address {ip}"),
            };
            let scheme = h.scheme.map(|s| format!(" over {s}")).unwrap_or_default();
            let port = match (h.port, &ports, h.scheme) {
                (Some(p), _, _) => format!("port {p}"),
                (None, Some(list), _) => format!("ports {list}"),
                (None, None, Some(s)) => format!("port {}", s.default_port()),
                (None, None, None) => "ports 443 and 80".to_string(),
            };
            out.push(format!("network: connect to {who}{scheme} on {port}"));
        }
    }
    if p.kv {
        out.push("key-value: a store private to this extension and tenant".into());
    }
    for s in &p.secrets {
        out.push(format!("secret: read {s}"));
    }
    for path in &p.filesystem.paths {
        out.push(format!("files: read and write {path} (a private folder)"));
    }
    for path in &p.filesystem.readonly_paths {
        if path.as_str() == "/assets" {
            out.push("files: read /assets (the bundle's own assets/)".into());
        } else {
            out.push(format!("files: read {path} (a private folder)"));
        }
    }
    for c in &p.calls {
        out.push(format!("calls: invoke extension {c}"));
    }
    if out.is_empty() {
        out.push("none: computation only (clocks, random numbers, logging)".into());
    }
    out
}

pub fn limits(l: &Limits) -> String {
    let fuel = l
        .max_fuel
        .map(|f| format!(", fuel {f}"))
        .unwrap_or_default();
    format!(
        "memory {}, time {:?}, {} concurrent calls, request {}, response {}{fuel}",
        l.max_memory,
        l.max_execution_time,
        l.max_concurrent_calls,
        l.max_request_bytes,
        l.max_response_bytes
    )
}

pub fn kind(m: &Manifest) -> &'static str {
    match m.extension.kind {
        Kind::Component => "component",
        Kind::Process => "process",
        Kind::Extism => "extism",
        Kind::Remote => "remote",
    }
}

/// What a component's import `name` (as the component names it, `wasi:keyvalue/store@0.2.0-draft`)
/// gives the guest under `eff`: the same words whatever the guest's language, since a denial
/// is the interface's own error.
pub fn import_fate(name: &str, eff: &warden_manifest::Effective) -> String {
    let iface = name.split('@').next().unwrap_or(name);
    let (package, _) = iface.split_once('/').unwrap_or((iface, ""));
    let list = |items: Vec<String>| items.join(", ");
    match (package, iface) {
        (_, "wasi:http/outgoing-handler") => match &eff.network {
            Some(n) => format!(
                "granted: requests to {} (any other host: HTTP-request-denied)",
                list(n.allowed_hosts.iter().map(|h| h.to_string()).collect())
            ),
            None => "DENIED: network not granted (every request: HTTP-request-denied)".into(),
        },
        ("wasi:sockets", _) => match &eff.network {
            Some(_) => "granted: connections to the allowed hosts only".into(),
            None => {
                "DENIED: network not granted (every lookup and connection: access-denied)".into()
            }
        },
        ("wasi:keyvalue", _) => {
            if eff.kv {
                "granted: the store of this (tenant, extension)".into()
            } else {
                "DENIED: kv not granted (every store: access-denied)".into()
            }
        }
        ("wasi:config", _) => {
            if eff.secrets.is_empty() {
                "DENIED: no secret granted (every get: upstream error \"access-denied: ...\")"
                    .into()
            } else {
                format!(
                    "granted: the secrets {} (any other: access-denied)",
                    list(eff.secrets.iter().map(|s| s.to_string()).collect())
                )
            }
        }
        (_, "wasi:filesystem/preopens") => mounts(eff),
        (_, "warden:extension/invoke") => {
            if eff.calls.is_empty() {
                "DENIED: no call granted (every call: denied)".into()
            } else {
                format!(
                    "granted: calls to {}",
                    list(eff.calls.iter().map(|c| c.to_string()).collect())
                )
            }
        }
        ("wasi:http" | "wasi:filesystem" | "warden:extension", _)
        | ("wasi:cli" | "wasi:clocks" | "wasi:random" | "wasi:io" | "wasi:logging", _) => {
            "allowed".into()
        }
        _ => "NOT PROVIDED: the component will not load (the host has no such interface)".into(),
    }
}

/// The folders a guest is given under `eff`, as `inspect` shows them.
pub(crate) fn mounts(eff: &warden_manifest::Effective) -> String {
    let denied: Vec<String> = eff.withheld_mounts.iter().map(|g| g.to_string()).collect();
    let denied = if denied.is_empty() {
        String::new()
    } else {
        format!("; DENIED: {} (every operation refused)", denied.join(", "))
    };
    if eff.mounts.is_empty() {
        return format!("no folders (nothing to open){denied}");
    }
    let granted: Vec<String> = eff
        .mounts
        .iter()
        .map(|m| {
            let how = if m.readonly {
                "read-only"
            } else {
                "read-write"
            };
            format!("{} ({how})", m.guest)
        })
        .collect();
    format!("granted: {}{denied}", granted.join(", "))
}
