//! Fixtures: manifests, a real component, folders and archives.

use std::fs;
use std::path::Path;

use tar::{EntryType, Header};
use warden_bundle::ustar::{ArchiveWriter, Mode};

pub const MANIFEST: &str = r#"schema = 1
[extension]
id = "acme.hello"
version = "1.0.0"
publisher = "acme"
kind = "component"
entry = "extension.wasm"
"#;

pub const MANIFEST_WITH_UI: &str = r#"schema = 1
[extension]
id = "acme.hello"
version = "1.0.0"
publisher = "acme"
kind = "component"
entry = "extension.wasm"
ui = "ui"
"#;

pub const PROCESS_MANIFEST: &str = r#"schema = 1
[extension]
id = "acme.tool"
version = "2.0.0"
publisher = "acme"
kind = "process"
entry = "bin/tool"
"#;

/// A real, minimal WebAssembly component.
pub fn component() -> Vec<u8> {
    wat::parse_str("(component)").unwrap()
}

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// A bundle folder with a manifest (ui declared), a component, assets and a ui.
pub fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "extension.toml", MANIFEST_WITH_UI.as_bytes());
    write(root, "extension.wasm", &component());
    write(root, "assets/logo.txt", b"ACME\n");
    write(
        root,
        "assets/data/table.bin",
        &(0..=255u8).cycle().take(3000).collect::<Vec<_>>(),
    );
    write(root, "assets/empty", b"");
    write(root, "ui/index.html", b"<!doctype html><p>hello</p>\n");
    write(root, "ui/js/app.js", b"console.log('hi')\n");
    dir
}

/// A canonical archive of `files` (sorted here) written by the crate's own writer.
pub fn archive(files: &[(&str, Mode, &[u8])]) -> Vec<u8> {
    let mut files = files.to_vec();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut w = ArchiveWriter::new();
    for (path, mode, data) in files {
        w.add_file(&path.parse().unwrap(), mode, data).unwrap();
    }
    w.finish()
}

/// A valid bundle (manifest and component) plus `extra` files.
pub fn bundle_with(extra: &[(&str, Mode, &[u8])]) -> Vec<u8> {
    let wasm = component();
    let mut files: Vec<(&str, Mode, &[u8])> = vec![
        ("extension.toml", Mode::Regular, MANIFEST.as_bytes()),
        ("extension.wasm", Mode::Regular, &wasm),
    ];
    files.extend_from_slice(extra);
    archive(&files)
}

/// One raw archive member (header + data + zero padding), crafted with the `tar` crate.
/// `name` is written byte for byte into the name field (no validation, so `../x` is possible);
/// `tweak` may change anything before the checksum is computed.
pub fn member(
    name: &[u8],
    kind: EntryType,
    mode: u32,
    data: &[u8],
    tweak: impl FnOnce(&mut Header),
) -> Vec<u8> {
    let mut h = Header::new_ustar();
    {
        let ustar = h.as_ustar_mut().unwrap();
        ustar.name[..name.len()].copy_from_slice(name);
    }
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    tweak(&mut h);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// A regular file member with canonical fields.
pub fn file_member(name: &str, data: &[u8]) -> Vec<u8> {
    member(name.as_bytes(), EntryType::Regular, 0o644, data, |_| {})
}

/// Members sorted by their name field, then the end marker.
pub fn raw_archive(members: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out: Vec<u8> = members.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The canonical manifest + component members, plus `extra`, in the order given by `sort`
/// (the name field, bytewise) so the only defect is the one under test.
pub fn raw_bundle(extra: Vec<Vec<u8>>) -> Vec<u8> {
    let mut members = vec![
        file_member("extension.toml", MANIFEST.as_bytes()),
        file_member("extension.wasm", &component()),
    ];
    members.extend(extra);
    members.sort_by_key(|m| stored_name(m));
    raw_archive(members)
}

/// The path a member's header stores (`prefix/name`), for sorting fixtures.
pub fn stored_name(member: &[u8]) -> Vec<u8> {
    let field = |r: std::ops::Range<usize>| {
        let f = &member[r];
        f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec()
    };
    let (name, prefix) = (field(0..100), field(345..500));
    if prefix.is_empty() {
        name
    } else {
        [prefix, b"/".to_vec(), name].concat()
    }
}
