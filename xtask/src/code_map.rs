//! The code map in ARCHITECTURE.md says what cargo metadata says: one row per workspace crate,
//! its folder, and the workspace crates it depends on (normal and build dependencies).

use crate::metadata::Metadata;
use crate::rules::{CODE_MAP_FILE, CODE_MAP_HEADER, CODE_MAP_HEADING};
use std::collections::BTreeSet;

pub fn code_map(meta: &Metadata, markdown: &str) -> Vec<String> {
    let rows = match table(markdown) {
        Ok(rows) => rows,
        Err(e) => return vec![format!("{CODE_MAP_FILE}: {e}")],
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (line, cells) in rows {
        let at = format!("{CODE_MAP_FILE}:{line}");
        // Rows for things that are not crates (wit, examples, fuzz, ...) are free text.
        let Some(name) = cells.first().and_then(|c| backticked(c)) else {
            continue;
        };
        let Some(id) = meta.member_id(name) else {
            if name.starts_with("warden-") || name == "xtask" {
                out.push(format!(
                    "{at}: the code map names {name}, which is not a workspace member"
                ));
            }
            continue;
        };
        if !seen.insert(name.to_string()) {
            out.push(format!("{at}: a second row for {name}"));
            continue;
        }
        let [_, path, _, .., depends] = cells.as_slice() else {
            out.push(format!(
                "{at}: the row for {name} has {} cells, not 4",
                cells.len()
            ));
            continue;
        };
        let actual_dir = meta
            .packages
            .get(id)
            .map(|p| meta.rel_dir(p))
            .unwrap_or_default();
        let said_dir = backticked(path).unwrap_or(path).trim_end_matches('/');
        if said_dir != actual_dir {
            out.push(format!(
                "{at}: ARCHITECTURE.md puts {name} in {path} but cargo metadata says `{actual_dir}`"
            ));
        }
        let said = depends_on(depends);
        let actual = workspace_deps(meta, id);
        if said != actual {
            let add: Vec<&String> = actual.difference(&said).collect();
            let remove: Vec<&String> = said.difference(&actual).collect();
            let mut fix = Vec::new();
            if !add.is_empty() {
                fix.push(format!("missing {}", list(add)));
            }
            if !remove.is_empty() {
                fix.push(format!("not a dependency: {}", list(remove)));
            }
            out.push(format!(
                "{at}: ARCHITECTURE.md says {name} depends on {} but cargo metadata says {} ({})",
                list(&said),
                list(&actual),
                fix.join("; ")
            ));
        }
    }
    for (_, p) in meta.members() {
        if !seen.contains(&p.name) {
            out.push(format!(
                "{CODE_MAP_FILE}: the code map has no row for {} (`{}`)",
                p.name,
                meta.rel_dir(p)
            ));
        }
    }
    out
}

/// The names of the workspace crates `id` depends on (normal and build, not dev).
pub fn workspace_deps(meta: &Metadata, id: &str) -> BTreeSet<String> {
    meta.deps_of(id)
        .iter()
        .filter(|d| meta.members.contains(d))
        .map(|d| meta.name(d).to_string())
        .collect()
}

/// The rows (line number, cells) of the table under the heading.
fn table(markdown: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut lines = markdown
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .skip_while(|(_, l)| *l != CODE_MAP_HEADING);
    if lines.next().is_none() {
        return Err(format!("no `{CODE_MAP_HEADING}` heading"));
    }
    let mut lines = lines.skip_while(|(_, l)| !l.starts_with('|') && !l.starts_with("## "));
    let header = match lines.next() {
        Some((_, l)) if l.starts_with('|') => cells(l),
        _ => return Err(format!("no table under `{CODE_MAP_HEADING}`")),
    };
    if header != cells(CODE_MAP_HEADER) {
        return Err(format!(
            "the table under `{CODE_MAP_HEADING}` has the header `| {} |`, not `{CODE_MAP_HEADER}`",
            header.join(" | ")
        ));
    }
    Ok(lines
        .take_while(|(_, l)| l.starts_with('|'))
        .map(|(n, l)| (n, cells(l)))
        .collect())
}

/// The cells of a table row, trimmed (`\|` does not split).
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cell.push('|');
            }
            '|' => out.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    out.push(cell);
    out.iter().map(|s| s.trim().to_string()).collect()
}

/// `` `name` `` -> name.
fn backticked(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then_some(inner)
}

/// `` `a`, `b` `` or `—` -> {a, b}. An entry without backticks is kept as written, so it shows
/// up as a mismatch rather than being silently dropped.
fn depends_on(cell: &str) -> BTreeSet<String> {
    if matches!(cell, "—" | "–" | "-" | "") {
        return BTreeSet::new();
    }
    cell.split(',')
        .map(str::trim)
        .map(|e| backticked(e).unwrap_or(e).to_string())
        .collect()
}

fn list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "—".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::meta;

    fn tree() -> Metadata {
        meta(&[
            ("warden-manifest", "0.1.0", vec![("toml", "normal")]),
            (
                "warden-call",
                "0.1.0",
                vec![("warden-manifest", "normal"), ("toml", "normal")],
            ),
            (
                "warden-net",
                "0.1.0",
                vec![
                    ("warden-manifest", "normal"),
                    ("warden-call", "build"),
                    // Dev-dependencies are not part of the map.
                    ("warden-bundle", "dev"),
                ],
            ),
            (
                "warden-bundle",
                "0.1.0",
                vec![("warden-manifest", "normal")],
            ),
            ("toml", "0.9.0", vec![]),
        ])
    }

    const CLEAN: &str = "\
# Architecture

## Code map

| crate | path | what it does | depends on |
|---|---|---|---|
| `warden-manifest` | `crates/manifest` | strict TOML (toml, semver) | — |
| `warden-call` | `crates/call` | what calls share \\| no Wasmtime | `warden-manifest` |
| `warden-net` | `crates/net/` | network policy | `warden-call`, `warden-manifest` |
| `warden-bundle` | `crates/bundle` | ustar bundles | `warden-manifest` |
| wit | `wit/` | interfaces | |
| `fuzz` | `fuzz/` | fuzz targets | `warden-manifest` |

## Next section
";

    #[test]
    fn a_matching_map_passes() {
        assert_eq!(code_map(&tree(), CLEAN), Vec::<String>::new());
    }

    #[test]
    fn a_wrong_dependency_fails() {
        let md = CLEAN.replace(
            "| network policy | `warden-call`, `warden-manifest` |",
            "| network policy | `warden-manifest`, `warden-bundle` |",
        );
        assert_eq!(
            code_map(&tree(), &md),
            [
                "ARCHITECTURE.md:9: ARCHITECTURE.md says warden-net depends on `warden-bundle`, `warden-manifest` but cargo metadata says `warden-call`, `warden-manifest` (missing `warden-call`; not a dependency: `warden-bundle`)"
            ]
        );
    }

    #[test]
    fn a_wrong_path_a_missing_row_and_an_unknown_crate_fail() {
        let md = CLEAN
            .replace("`crates/bundle`", "`crates/bundles`")
            .replace("| `warden-call` |", "| `warden-kall` |");
        assert_eq!(
            code_map(&tree(), &md),
            [
                "ARCHITECTURE.md:8: the code map names warden-kall, which is not a workspace member",
                "ARCHITECTURE.md:10: ARCHITECTURE.md puts warden-bundle in `crates/bundles` but cargo metadata says `crates/bundle`",
                "ARCHITECTURE.md: the code map has no row for warden-call (`crates/call`)",
            ]
        );
    }

    #[test]
    fn the_old_format_fails() {
        let md = CLEAN.replace("| — |", "| toml, semver |");
        assert_eq!(
            code_map(&tree(), &md),
            [
                "ARCHITECTURE.md:7: ARCHITECTURE.md says warden-manifest depends on `semver`, `toml` but cargo metadata says — (not a dependency: `semver`, `toml`)"
            ]
        );
        let md = CLEAN.replace("| what it does |", "| role |");
        assert_eq!(
            code_map(&tree(), &md),
            [
                "ARCHITECTURE.md: the table under `## Code map` has the header `| crate | path | role | depends on |`, not `| crate | path | what it does | depends on |`"
            ]
        );
        assert_eq!(
            code_map(&tree(), "# Architecture\n"),
            ["ARCHITECTURE.md: no `## Code map` heading"]
        );
    }
}
