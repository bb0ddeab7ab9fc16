//! Checks of the project's architectural invariants. Each check is a pure function over parsed
//! data (see its module's tests); this file only runs `cargo metadata` and reads the files.
//! The rules themselves are in `rules.rs`.

pub mod code_map;
pub mod deps;
pub mod fixtures;
pub mod metadata;
pub mod rules;
#[cfg(test)]
mod test_util;
pub mod unsafe_code;

pub use metadata::Metadata;

use rules::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo metadata` (with the resolved graph) of the workspace this crate belongs to.
pub fn cargo_metadata() -> Result<Metadata, String> {
    // Set by cargo for `cargo run` and `cargo test`: the same cargo that built us.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Metadata::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Every check on the workspace `meta` describes: one line per violation.
pub fn check(meta: &Metadata) -> Result<Vec<String>, String> {
    let root = &meta.root;
    let mut out = deps::forbidden(meta, FORBIDDEN);
    out.extend(deps::single_version(meta, SINGLE_VERSION));

    for (_, p) in meta.members() {
        let mut files = sources(root, &p.dir, SOURCE_DIRS)?;
        let build = p.dir.join("build.rs");
        if build.is_file() {
            files.push((rel(root, &build), read(&build)?));
        }
        out.extend(unsafe_code::unsafe_code(&p.name, &files, UNSAFE_ALLOWED));
        let manifest = p.dir.join("Cargo.toml");
        out.extend(unsafe_code::lints_table(
            &p.name,
            &rel(root, &manifest),
            &read(&manifest)?,
        ));
    }

    let mut tests = Vec::new();
    for (_, p) in meta.members() {
        if !FIXTURE_TEST_SKIP.contains(&p.name.as_str()) {
            tests.extend(sources(root, &p.dir, FIXTURE_TEST_DIRS)?);
        }
    }
    out.extend(fixtures::fixtures(&hostile_fixtures(root)?, &tests));

    match fs::read_to_string(root.join(CODE_MAP_FILE)) {
        Ok(md) => out.extend(code_map::code_map(meta, &md)),
        Err(e) => out.push(format!("{CODE_MAP_FILE}: cannot read it: {e}")),
    }
    Ok(out)
}

/// The hostile fixture folders (relative to the root), from the first fixture folder that
/// exists.
fn hostile_fixtures(root: &Path) -> Result<Vec<String>, String> {
    let Some(dir) = FIXTURE_DIRS
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries(&dir)? {
        let hostile = entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(FIXTURE_PREFIX));
        if hostile && entry.is_dir() {
            out.push(rel(root, &entry));
        }
    }
    Ok(out)
}

/// (path relative to the root, text) of every `.rs` file under `dirs` of a crate.
fn sources(root: &Path, krate: &Path, dirs: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = dirs.iter().map(|d| krate.join(d)).collect();
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            todo.extend(entries(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((rel(root, &path), read(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

/// A folder's entries, sorted (a missing folder has none).
fn entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let Ok(list) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in list {
        out.push(entry.map_err(|e| format!("{}: {e}", dir.display()))?.path());
    }
    out.sort();
    Ok(out)
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The few lines that touch the disk: fixture folders (with the fallback) and sources.
    #[test]
    fn reading_the_tree() {
        let root = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        let mk = |p: &str, text: &str| {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        mk("examples/hostile-old/extension.toml", "");
        mk("examples/hello/extension.toml", "");
        assert_eq!(hostile_fixtures(&root).unwrap(), ["examples/hostile-old"]);
        mk("tests/guests/hostile-a/extension.toml", "");
        mk("tests/guests/hostile_b/extension.toml", "");
        mk("tests/guests/hostile-file", "not a folder");
        mk("tests/guests/other/extension.toml", "");
        assert_eq!(
            hostile_fixtures(&root).unwrap(),
            ["tests/guests/hostile-a", "tests/guests/hostile_b"]
        );

        mk("crates/a/src/lib.rs", "fn a() {}");
        mk("crates/a/tests/all/deep.rs", "#[test] fn t() {}");
        mk("crates/a/src/notes.txt", "not rust");
        let found = sources(&root, &root.join("crates/a"), SOURCE_DIRS).unwrap();
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["crates/a/src/lib.rs", "crates/a/tests/all/deep.rs"]);
        fs::remove_dir_all(&root).unwrap();
    }
}
