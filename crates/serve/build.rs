//! Embeds the operator console's files (`console/`, plain ES modules, HTML and CSS: no build
//! step, no Node at run time) as a table of (path, bytes), so the binary serves them alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("console");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The console's files: (path under `/console/`, bytes).\npub(crate) static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        let _ = writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("console_assets.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=writing {}: {e}", dest.display());
        std::process::exit(1);
    }
}

/// Every regular file under `dir` (no hidden ones), with its path relative to `root`.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if hidden {
            continue;
        }
        if kind.is_dir() {
            collect(root, &path, files);
        } else if kind.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            let name = rel.to_string_lossy().replace('\\', "/");
            files.push((name, path));
        }
    }
}
