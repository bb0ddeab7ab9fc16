//! Synthetic `cargo metadata` for the unit tests, parsed by the real parser.

use crate::metadata::Metadata;
use serde_json::{Value, json};

/// (name, version, [(dependency, kind)]): a dependency is "name" (the first package so named)
/// or "name@version"; kind is "normal", "build" or "dev". Packages named `warden-*` or `xtask`
/// are workspace members in `/ws/crates/<name without warden->` (`/ws/xtask`).
pub type Spec<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

pub fn dir(name: &str) -> String {
    match name.strip_prefix("warden-") {
        Some(short) => format!("crates/{short}"),
        None => name.to_string(),
    }
}

fn is_member(name: &str) -> bool {
    name.starts_with("warden-") || name == "xtask"
}

fn id(name: &str, version: &str) -> String {
    if is_member(name) {
        format!("path+file:///ws/{}#{name}@{version}", dir(name))
    } else {
        format!("registry+https://github.com/rust-lang/crates.io-index#{name}@{version}")
    }
}

pub fn meta(specs: &[Spec]) -> Metadata {
    let find = |dep: &str| -> String {
        let (name, version) = dep.split_once('@').unwrap_or((dep, ""));
        let (n, v, _) = specs
            .iter()
            .find(|(n, v, _)| *n == name && (version.is_empty() || *v == version))
            .unwrap_or_else(|| panic!("test graph has no {dep}"));
        id(n, v)
    };
    let packages: Vec<Value> = specs
        .iter()
        .map(|(n, v, _)| {
            let manifest = if is_member(n) {
                format!("/ws/{}/Cargo.toml", dir(n))
            } else {
                format!("/registry/{n}-{v}/Cargo.toml")
            };
            json!({ "id": id(n, v), "name": n, "version": v, "manifest_path": manifest })
        })
        .collect();
    let nodes: Vec<Value> = specs
        .iter()
        .map(|(n, v, deps)| {
            let deps: Vec<Value> = deps
                .iter()
                .map(|(dep, kind)| {
                    let kind = if *kind == "normal" {
                        Value::Null
                    } else {
                        json!(kind)
                    };
                    json!({
                        "name": dep.split('@').next().unwrap_or(dep).replace('-', "_"),
                        "pkg": find(dep),
                        "dep_kinds": [{ "kind": kind, "target": null }],
                    })
                })
                .collect();
            json!({ "id": id(n, v), "deps": deps })
        })
        .collect();
    let members: Vec<String> = specs
        .iter()
        .filter(|(n, _, _)| is_member(n))
        .map(|(n, v, _)| id(n, v))
        .collect();
    let value = json!({
        "packages": packages,
        "workspace_members": members,
        "workspace_root": "/ws",
        "resolve": { "nodes": nodes, "root": null },
        "version": 1,
    });
    Metadata::parse(&value.to_string()).unwrap()
}
