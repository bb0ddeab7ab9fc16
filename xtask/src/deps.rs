//! Checks on the resolved dependency graph.

use crate::metadata::Metadata;
use crate::rules::{Forbidden, matches};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Each rule's crates must not reach a forbidden crate through normal or build dependencies.
/// A rule's crate that is not in the workspace (yet) is skipped: the tree is being moved.
pub fn forbidden(meta: &Metadata, rules: &[Forbidden]) -> Vec<String> {
    let mut out = Vec::new();
    for rule in rules {
        for krate in rule.crates {
            let Some(start) = meta.member_id(krate) else {
                continue;
            };
            // Breadth first, so the path shown is a shortest one. A forbidden crate's own
            // dependencies are not walked: the crate is the violation, not what it pulls in.
            let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = VecDeque::from([start]);
            let mut reported = BTreeSet::new();
            while let Some(id) = queue.pop_front() {
                for dep in meta.deps_of(id) {
                    if dep == start || parent.contains_key(dep.as_str()) {
                        continue;
                    }
                    parent.insert(dep, id);
                    let name = meta.name(dep);
                    if !rule.deps.iter().any(|p| matches(p, name)) {
                        queue.push_back(dep);
                    } else if reported.insert(name) {
                        let via = path(meta, &parent, start, dep);
                        out.push(format!("{krate} depends on {name} ({via})"));
                    }
                }
            }
        }
    }
    out
}

/// "via a -> b -> dep" (the crate itself left out), or "directly".
fn path(meta: &Metadata, parent: &BTreeMap<&str, &str>, start: &str, dep: &str) -> String {
    let mut names = vec![meta.name(dep)];
    let mut at = dep;
    while let Some(&up) = parent.get(at) {
        if up == start {
            break;
        }
        names.push(meta.name(up));
        at = up;
    }
    if names.len() == 1 {
        return "directly".to_string();
    }
    names.reverse();
    format!("via {}", names.join(" -> "))
}

/// At most one version of each named crate among the resolved packages (dev-dependencies
/// included: a second version would be compiled for the tests all the same).
pub fn single_version(meta: &Metadata, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        let found: Vec<(&str, &str)> = meta
            .packages
            .iter()
            .filter(|(_, p)| p.name == *name)
            .map(|(id, p)| (p.version.as_str(), id.as_str()))
            .collect();
        if found.len() > 1 {
            let versions: BTreeSet<&str> = found.iter().map(|(v, _)| *v).collect();
            // Same version from two sources (registry and git): show the ids instead.
            let list: Vec<&str> = if versions.len() == found.len() {
                versions.into_iter().collect()
            } else {
                found.iter().map(|(_, id)| *id).collect()
            };
            out.push(format!(
                "{} versions of {name} in the dependency graph, one allowed: {}",
                found.len(),
                list.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::FORBIDDEN;
    use crate::test_util::{Spec, meta};

    /// A tree that keeps the rules: runtime on wasmtime, the store crate on rusqlite.
    fn clean() -> Vec<Spec<'static>> {
        vec![
            ("warden-manifest", "0.1.0", vec![("toml", "normal")]),
            ("warden-call", "0.1.0", vec![("warden-manifest", "normal")]),
            ("warden-kv", "0.1.0", vec![("warden-call", "normal")]),
            (
                "warden-store-sqlite",
                "0.1.0",
                vec![("warden-kv", "normal"), ("rusqlite", "normal")],
            ),
            (
                "warden-runtime",
                "0.1.0",
                vec![("warden-kv", "normal"), ("wasmtime", "normal")],
            ),
            ("rusqlite", "0.37.0", vec![("libsqlite3-sys", "normal")]),
            ("libsqlite3-sys", "0.35.0", vec![]),
            ("wasmtime", "48.0.8", vec![("cranelift-codegen", "normal")]),
            ("cranelift-codegen", "0.135.8", vec![]),
            ("toml", "0.9.0", vec![]),
        ]
    }

    #[test]
    fn a_clean_graph_passes() {
        let m = meta(&clean());
        assert_eq!(forbidden(&m, FORBIDDEN), Vec::<String>::new());
        assert_eq!(
            single_version(&m, crate::rules::SINGLE_VERSION),
            Vec::<String>::new()
        );
    }

    #[test]
    fn runtime_reaching_sqlite_through_kv_fails_with_the_path() {
        let mut g = clean();
        // The violation: warden-kv grows a SQLite backend again.
        g[2].2.push(("rusqlite", "normal"));
        let m = meta(&g);
        assert_eq!(
            forbidden(&m, FORBIDDEN),
            [
                "warden-kv depends on rusqlite (directly)",
                "warden-runtime depends on rusqlite (via warden-kv -> rusqlite)",
            ]
        );
    }

    #[test]
    fn a_parsing_crate_on_wasmtime_fails() {
        let mut g = clean();
        g[0].2.push(("wasmtime", "build"));
        let m = meta(&g);
        // Reported once, at wasmtime: cranelift behind it is not listed again.
        assert_eq!(
            forbidden(&m, FORBIDDEN),
            [
                "warden-manifest depends on wasmtime (directly)",
                "warden-call depends on wasmtime (via warden-manifest -> wasmtime)",
                "warden-kv depends on wasmtime (via warden-call -> warden-manifest -> wasmtime)",
            ]
        );
    }

    #[test]
    fn runtime_on_the_audit_log_or_a_store_fails() {
        let mut g = clean();
        g.push(("warden-audit", "0.1.0", vec![("warden-call", "normal")]));
        g[4].2.push(("warden-audit", "normal"));
        g[4].2.push(("warden-store-sqlite", "normal"));
        let m = meta(&g);
        assert_eq!(
            forbidden(&m, FORBIDDEN),
            [
                "warden-runtime depends on warden-audit (directly)",
                "warden-runtime depends on warden-store-sqlite (directly)",
            ]
        );
    }

    /// The PostgreSQL store may use its driver; the host reaching it (so every embedder would
    /// build a PostgreSQL client) fails.
    #[test]
    fn only_the_pg_store_reaches_postgres() {
        let mut g = clean();
        g.push((
            "warden-store-pg",
            "0.1.0",
            vec![("warden-kv", "normal"), ("tokio-postgres", "normal")],
        ));
        g.push(("tokio-postgres", "0.7.18", vec![]));
        assert_eq!(forbidden(&meta(&g), FORBIDDEN), Vec::<String>::new());
        g.push(("warden-host", "0.1.0", vec![("warden-store-pg", "normal")]));
        // Reported once, at the store: the driver behind it is not listed again.
        assert_eq!(
            forbidden(&meta(&g), FORBIDDEN),
            ["warden-host depends on warden-store-pg (directly)"]
        );
    }

    #[test]
    fn dev_dependencies_are_free() {
        let mut g = clean();
        g[0].2.push(("wasmtime", "dev"));
        g[4].2.push(("rusqlite", "dev"));
        assert_eq!(forbidden(&meta(&g), FORBIDDEN), Vec::<String>::new());
    }

    #[test]
    fn two_wasmtimes_fail() {
        let mut g = clean();
        // Even as a dev-dependency: it would be compiled for the tests.
        g.push(("wasmtime", "47.0.1", vec![]));
        g[0].2.push(("wasmtime@47.0.1", "dev"));
        let m = meta(&g);
        assert_eq!(
            single_version(&m, crate::rules::SINGLE_VERSION),
            ["2 versions of wasmtime in the dependency graph, one allowed: 47.0.1, 48.0.8"]
        );
    }
}
