//! The part of `cargo metadata --format-version 1` the checks need.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The folder of its Cargo.toml.
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct Metadata {
    pub root: PathBuf,
    /// Ids of the workspace members, in cargo's order.
    pub members: Vec<String>,
    /// Every resolved package, by id.
    pub packages: BTreeMap<String, Package>,
    /// Normal and build dependency edges of the resolved graph (dev edges dropped: nothing
    /// checked here may depend on what only tests use), by id, sorted.
    pub deps: BTreeMap<String, Vec<String>>,
}

impl Metadata {
    pub fn parse(json: &str) -> Result<Metadata, String> {
        let raw: Raw =
            serde_json::from_str(json).map_err(|e| format!("cargo metadata output: {e}"))?;
        let resolve = raw
            .resolve
            .ok_or("cargo metadata has no `resolve` graph (was --no-deps used?)")?;
        let mut packages = BTreeMap::new();
        for p in raw.packages {
            let dir = p
                .manifest_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            packages.insert(
                p.id,
                Package {
                    name: p.name,
                    version: p.version,
                    dir,
                },
            );
        }
        let mut deps = BTreeMap::new();
        for node in resolve.nodes {
            let mut out: Vec<String> = node
                .deps
                .into_iter()
                // No kinds at all would be an old cargo: count the edge (fail closed).
                .filter(|d| {
                    d.dep_kinds.is_empty()
                        || d.dep_kinds
                            .iter()
                            .any(|k| matches!(k.kind.as_deref(), None | Some("normal" | "build")))
                })
                .map(|d| d.pkg)
                .collect();
            out.sort();
            out.dedup();
            deps.insert(node.id, out);
        }
        Ok(Metadata {
            root: raw.workspace_root,
            members: raw.workspace_members,
            packages,
            deps,
        })
    }

    pub fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.packages.get(id).map_or(id, |p| p.name.as_str())
    }

    /// Workspace members: (id, package).
    pub fn members(&self) -> impl Iterator<Item = (&str, &Package)> {
        self.members
            .iter()
            .filter_map(|id| self.packages.get(id).map(|p| (id.as_str(), p)))
    }

    pub fn member_id(&self, name: &str) -> Option<&str> {
        self.members()
            .find(|(_, p)| p.name == name)
            .map(|(id, _)| id)
    }

    pub fn deps_of(&self, id: &str) -> &[String] {
        self.deps.get(id).map_or(&[], Vec::as_slice)
    }

    /// A member's folder relative to the workspace root, with `/` separators.
    pub fn rel_dir(&self, p: &Package) -> String {
        let rel = p.dir.strip_prefix(&self.root).unwrap_or(&p.dir);
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        parts.join("/")
    }
}

#[derive(Deserialize)]
struct Raw {
    packages: Vec<RawPackage>,
    workspace_members: Vec<String>,
    workspace_root: PathBuf,
    resolve: Option<RawResolve>,
}

#[derive(Deserialize)]
struct RawPackage {
    id: String,
    name: String,
    version: String,
    manifest_path: PathBuf,
}

#[derive(Deserialize)]
struct RawResolve {
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
struct RawNode {
    id: String,
    #[serde(default)]
    deps: Vec<RawDep>,
}

#[derive(Deserialize)]
struct RawDep {
    pkg: String,
    #[serde(default)]
    dep_kinds: Vec<RawKind>,
}

#[derive(Deserialize)]
struct RawKind {
    kind: Option<String>,
}
