//! Bundle-level rules: the manifest, the entry, the layout, and reading `.wext` files.

use std::fs;
use std::io::Write;

use sha2::{Digest, Sha256};
use warden_bundle::ustar::Mode;
use warden_bundle::{ArchiveError, Bundle, BundleError, BundleLimits, ContentHash};
use warden_manifest::Kind;

use crate::common::*;

fn bundle_error(bytes: Vec<u8>) -> BundleError {
    match Bundle::from_bytes(bytes, &BundleLimits::default()) {
        Err(e) => e,
        Ok(b) => panic!("accepted an invalid bundle: {b:?}"),
    }
}

#[test]
fn a_valid_bundle_exposes_its_bytes_files_and_manifest() {
    let wasm = component();
    let bytes = archive(&[
        ("extension.toml", Mode::Regular, MANIFEST_WITH_UI.as_bytes()),
        ("extension.wasm", Mode::Regular, &wasm),
        ("assets/a.txt", Mode::Regular, b"a"),
        ("ui/index.html", Mode::Regular, b"<p>"),
    ]);
    let b = Bundle::from_bytes(bytes.clone(), &BundleLimits::default()).unwrap();
    assert_eq!(b.bytes(), &bytes[..]);
    let expected: [u8; 32] = Sha256::digest(&bytes).into();
    assert_eq!(b.content_hash().as_bytes(), &expected);
    assert_eq!(b.content_hash(), ContentHash::of(&bytes));
    assert_eq!(
        b.content_hash().to_string(),
        format!("sha256:{}", hex::encode(expected))
    );
    assert_eq!(b.manifest_source(), MANIFEST_WITH_UI);
    assert_eq!(b.manifest().extension.id.as_str(), "acme.hello");
    assert_eq!(b.manifest().extension.kind, Kind::Component);
    assert_eq!(b.entry(), &wasm[..]);
    assert_eq!(b.file("ui/index.html"), Some(&b"<p>"[..]));
    assert_eq!(b.file("ui"), None);
    assert_eq!(b.file("missing"), None);
    assert_eq!(b.file("../extension.toml"), None);
    let paths: Vec<&str> = b.files().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "assets/a.txt",
            "extension.toml",
            "extension.wasm",
            "ui/index.html"
        ]
    );
    // Every slice handed out points into the hashed bytes themselves.
    let range = b.bytes().as_ptr_range();
    for f in b.files() {
        assert!(range.contains(&f.data.as_ptr()) || f.data.is_empty());
    }
    assert!(range.contains(&b.entry().as_ptr()));
    assert_eq!(b.shared_bytes().as_ptr(), b.bytes().as_ptr());
}

#[test]
fn missing_manifest() {
    let e = bundle_error(archive(&[("extension.wasm", Mode::Regular, &component())]));
    assert!(matches!(e, BundleError::MissingManifest), "{e}");
    assert!(e.to_string().contains("extension.toml"));
    // An empty archive.
    let e = bundle_error(vec![0; 1024]);
    assert!(matches!(e, BundleError::MissingManifest), "{e}");
}

#[test]
fn manifest_errors_name_the_file_key_and_line() {
    let bad = MANIFEST.replace("acme.hello", "Acme Hello");
    let e = bundle_error(archive(&[
        ("extension.toml", Mode::Regular, bad.as_bytes()),
        ("extension.wasm", Mode::Regular, &component()),
    ]));
    assert!(matches!(e, BundleError::Manifest(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("extension.toml: line 3: `extension.id`"),
        "{msg}"
    );

    let unknown = format!("{MANIFEST}surprise = true\n");
    let e = bundle_error(archive(&[
        ("extension.toml", Mode::Regular, unknown.as_bytes()),
        ("extension.wasm", Mode::Regular, &component()),
    ]));
    assert!(e.to_string().contains("surprise"), "{e}");

    let e = bundle_error(archive(&[
        ("extension.toml", Mode::Regular, b"schema = 1\n\xff\xfe"),
        ("extension.wasm", Mode::Regular, &component()),
    ]));
    assert!(matches!(e, BundleError::ManifestNotUtf8), "{e}");
}

#[test]
fn manifest_paths_outside_the_bundle_and_duplicate_keys() {
    for (from, to) in [
        (
            "entry = \"extension.wasm\"",
            "entry = \"../extension.wasm\"",
        ),
        ("entry = \"extension.wasm\"", "entry = \"/etc/passwd\""),
        (
            "entry = \"extension.wasm\"",
            "entry = \"extension.wasm\"\nui = \"../ui\"",
        ),
        ("kind =", "id = \"acme.other\"\nkind ="),
    ] {
        let m = MANIFEST.replace(from, to);
        assert_ne!(m, MANIFEST);
        let e = bundle_error(archive(&[
            ("extension.toml", Mode::Regular, m.as_bytes()),
            ("extension.wasm", Mode::Regular, &component()),
        ]));
        assert!(matches!(e, BundleError::Manifest(_)), "{to}: {e}");
        assert!(e.to_string().starts_with("extension.toml: line "), "{e}");
    }
}

#[test]
fn missing_entry() {
    let e = bundle_error(archive(&[
        ("extension.toml", Mode::Regular, MANIFEST.as_bytes()),
        ("extension.wat", Mode::Regular, &component()),
    ]));
    assert!(matches!(e, BundleError::MissingEntry { .. }), "{e}");
    assert!(e.to_string().contains("`extension.wasm`"), "{e}");
}

#[test]
fn the_entry_must_be_a_component() {
    let core = wat::parse_str("(module)").unwrap();
    for (data, says) in [
        (core, "core WebAssembly module"),
        (b"#!/bin/sh\necho hi\n".to_vec(), "magic bytes"),
        (Vec::new(), "magic bytes"),
        (
            b"\0asm\x0e\x00\x01\x00".to_vec(),
            "unsupported WebAssembly version",
        ),
    ] {
        let e = bundle_error(archive(&[
            ("extension.toml", Mode::Regular, MANIFEST.as_bytes()),
            ("extension.wasm", Mode::Regular, &data),
        ]));
        assert!(matches!(e, BundleError::NotAComponent { .. }), "{e}");
        assert!(e.to_string().contains(says), "{says}: {e}");
        assert!(e.to_string().contains("`extension.wasm`"), "{e}");
    }
}

#[test]
fn a_process_entry_must_be_executable() {
    let elf = b"\x7fELF....";
    let ok = archive(&[
        ("bin/tool", Mode::Executable, elf),
        ("extension.toml", Mode::Regular, PROCESS_MANIFEST.as_bytes()),
    ]);
    let b = Bundle::from_bytes(ok, &BundleLimits::default()).unwrap();
    assert_eq!(b.manifest().extension.kind, Kind::Process);
    assert_eq!(b.entry(), elf);

    let e = bundle_error(archive(&[
        ("bin/tool", Mode::Regular, elf),
        ("extension.toml", Mode::Regular, PROCESS_MANIFEST.as_bytes()),
    ]));
    assert!(matches!(e, BundleError::NotExecutable { .. }), "{e}");
    assert!(e.to_string().contains("`bin/tool`"), "{e}");

    // A directory entry for the entry's folder is allowed.
    let dir = member(b"bin/", tar::EntryType::Directory, 0o755, b"", |_| {});
    let tool = member(b"bin/tool", tar::EntryType::Regular, 0o755, elf, |_| {});
    let manifest = file_member("extension.toml", PROCESS_MANIFEST.as_bytes());
    Bundle::from_bytes(
        raw_archive(vec![dir, tool, manifest]),
        &BundleLimits::default(),
    )
    .unwrap();
}

#[test]
fn only_the_manifest_entry_assets_and_ui_belong() {
    for extra in [
        "README.md",
        "assets",
        "ui/index.html",
        "extension.wasm.bak",
        "lib/x.so",
    ] {
        let e = bundle_error(bundle_with(&[(extra, Mode::Regular, b"x")]));
        assert!(
            matches!(&e, BundleError::UnexpectedFile { path } if path.as_str() == extra),
            "{extra}: {e}"
        );
    }
    // Directory entries too: only folders above something allowed.
    let dir = member(b"other/", tar::EntryType::Directory, 0o755, b"", |_| {});
    let e = bundle_error(raw_bundle(vec![dir]));
    assert!(matches!(e, BundleError::UnexpectedFile { .. }), "{e}");
}

#[test]
fn a_declared_ui_must_have_files() {
    let e = bundle_error(archive(&[
        ("extension.toml", Mode::Regular, MANIFEST_WITH_UI.as_bytes()),
        ("extension.wasm", Mode::Regular, &component()),
        ("assets/x", Mode::Regular, b"x"),
    ]));
    assert!(matches!(e, BundleError::EmptyUi { .. }), "{e}");
    assert!(e.to_string().contains("`ui`"), "{e}");
    // A file named like the folder is not the folder.
    let e = bundle_error(archive(&[
        ("extension.toml", Mode::Regular, MANIFEST_WITH_UI.as_bytes()),
        ("extension.wasm", Mode::Regular, &component()),
        ("ui", Mode::Regular, b"x"),
    ]));
    assert!(matches!(e, BundleError::EmptyUi { .. }), "{e}");
}

#[test]
fn the_manifest_cannot_be_the_entry() {
    let m = MANIFEST.replace("extension.wasm", "extension.toml");
    let e = bundle_error(archive(&[("extension.toml", Mode::Regular, m.as_bytes())]));
    assert!(
        matches!(
            e,
            BundleError::EntryIsManifest { .. } | BundleError::Manifest(_)
        ),
        "{e}"
    );
}

#[test]
fn read_file_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = bundle_with(&[("assets/a", Mode::Regular, b"a")]);
    let path = dir.path().join("hello.wext");
    fs::write(&path, &bytes).unwrap();
    let b = Bundle::read_file(&path, &BundleLimits::default()).unwrap();
    assert_eq!(b.bytes(), &bytes[..]);
    assert_eq!(b.content_hash(), ContentHash::of(&bytes));

    // I/O errors carry the path.
    let missing = dir.path().join("missing.wext");
    let e = Bundle::read_file(&missing, &BundleLimits::default()).unwrap_err();
    assert!(matches!(e, BundleError::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing.wext"), "{e}");

    let e = Bundle::read_file(dir.path(), &BundleLimits::default()).unwrap_err();
    assert!(matches!(e, BundleError::NotAFile { .. }), "{e}");

    // A corrupt file is refused like corrupt bytes.
    let mut corrupt = bytes.clone();
    corrupt[100] ^= 1;
    fs::write(&path, &corrupt).unwrap();
    let e = Bundle::read_file(&path, &BundleLimits::default()).unwrap_err();
    assert!(
        matches!(e, BundleError::Archive(ArchiveError::BadChecksum { .. })),
        "{e}"
    );
}

/// A bundle large enough to be read into huge pages and hashed on a second thread: what was
/// read is what is hashed and handed out, to the last byte.
#[test]
fn read_file_large_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let asset: Vec<u8> = (0..(9 << 20) + 123)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect();
    let mut bytes = bundle_with(&[("assets/big.bin", Mode::Regular, &asset)]);
    let path = dir.path().join("big.wext");
    fs::write(&path, &bytes).unwrap();
    let b = Bundle::read_file(&path, &BundleLimits::default()).unwrap();
    assert!(b.bytes() == &bytes[..]);
    assert_eq!(b.content_hash(), ContentHash::of(&bytes));
    assert_eq!(
        b.content_hash().as_bytes()[..],
        Sha256::digest(&bytes)[..],
        "the content hash is sha256 of the file"
    );
    assert!(b.file("assets/big.bin").unwrap() == &asset[..]);
    // The bytes outlive the bundle they came from.
    let shared = b.shared_bytes();
    drop(b);
    assert_eq!(ContentHash::of(&shared), ContentHash::of(&bytes));

    // One byte changed in the middle of the data changes the hash.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let b = Bundle::read_file(&path, &BundleLimits::default()).unwrap();
    assert_eq!(b.content_hash(), ContentHash::of(&bytes));
    assert_ne!(b.content_hash(), ContentHash::of(&shared));
}

/// A 300 MiB sparse file is refused from its metadata, before a byte is read: the error reports
/// the file's real size (a bounded read would have stopped at cap + 1).
#[test]
fn read_file_checks_the_size_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.wext");
    let f = fs::File::create(&path).unwrap();
    f.set_len(300 << 20).unwrap();
    let e = Bundle::read_file(&path, &BundleLimits::default()).unwrap_err();
    assert!(
        matches!(
            e,
            BundleError::Archive(ArchiveError::TooLarge { size, cap })
                if size == 300 << 20 && cap == 256 << 20
        ),
        "{e}"
    );

    // Also with a small cap and a real (non-sparse) file.
    let path = dir.path().join("small.wext");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&bundle_with(&[])).unwrap();
    let caps = BundleLimits {
        max_total_bytes: 1024,
        ..BundleLimits::default()
    };
    let e = Bundle::read_file(&path, &caps).unwrap_err();
    assert!(
        matches!(e, BundleError::Archive(ArchiveError::TooLarge { .. })),
        "{e}"
    );
}
