//! Packing real folders: round trips, determinism, and refusals.

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use warden_bundle::ustar::Mode;
use warden_bundle::{
    Bundle, BundleError, BundleLimits, PackError, pack_dir, pack_dir_with_progress,
};

use crate::common::*;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn pack_error(dir: &Path) -> PackError {
    match pack_dir(dir, &BundleLimits::default()) {
        Err(e) => e,
        Ok(p) => panic!("packed: {:?}", p.hash),
    }
}

#[test]
fn round_trip() {
    let dir = folder();
    let root = dir.path();
    // Things that are not part of a bundle stay out.
    write(root, "README.md", b"not packed");
    write(root, "target/debug/junk", b"not packed");
    symlink("/etc/passwd", root.join("stray-link")).unwrap();

    let packed = pack_dir(root, &BundleLimits::default()).unwrap();
    let expected: [u8; 32] = Sha256::digest(&packed.bytes).into();
    assert_eq!(packed.hash.as_bytes(), &expected);
    assert_eq!(packed.manifest.extension.id.as_str(), "acme.hello");

    let b = Bundle::from_bytes(packed.bytes.clone(), &BundleLimits::default()).unwrap();
    assert_eq!(b.content_hash(), packed.hash);
    assert_eq!(b.manifest(), &packed.manifest);
    let paths: Vec<&str> = b.files().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "assets/data/table.bin",
            "assets/empty",
            "assets/logo.txt",
            "extension.toml",
            "extension.wasm",
            "ui/index.html",
            "ui/js/app.js",
        ]
    );
    for f in b.files() {
        assert_eq!(
            f.data,
            &fs::read(root.join(f.path.as_str())).unwrap()[..],
            "{}",
            f.path
        );
        assert_eq!(f.mode, Mode::Regular);
    }
    assert_eq!(b.entry(), &component()[..]);
    assert_eq!(b.manifest_source(), MANIFEST_WITH_UI);

    // And written to disk and read back.
    let out = tempfile::tempdir().unwrap();
    let wext = out.path().join("hello.wext");
    fs::write(&wext, &packed.bytes).unwrap();
    let again = Bundle::read_file(&wext, &BundleLimits::default()).unwrap();
    assert_eq!(again.content_hash(), packed.hash);
}

/// Same files, different mtimes, creation order and non-execute permission bits: same bytes.
#[test]
fn packing_is_deterministic() {
    let a = folder();
    let b = tempfile::tempdir().unwrap();
    // Created in the opposite order, with other contents first overwritten.
    let files = [
        "ui/js/app.js",
        "ui/index.html",
        "assets/logo.txt",
        "assets/empty",
        "assets/data/table.bin",
        "extension.wasm",
        "extension.toml",
    ];
    for rel in files {
        write(b.path(), rel, b"placeholder");
        write(b.path(), rel, &fs::read(a.path().join(rel)).unwrap());
    }
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for (i, rel) in files.iter().enumerate() {
        let f = File::options()
            .write(true)
            .open(b.path().join(rel))
            .unwrap();
        f.set_times(FileTimes::new().set_modified(old + Duration::from_secs(i as u64 * 7919)))
            .unwrap();
        // Permissions differ, but never in the execute bits.
        chmod(&b.path().join(rel), if i % 2 == 0 { 0o600 } else { 0o664 });
    }
    chmod(&b.path().join("assets/data"), 0o700);

    let first = pack_dir(a.path(), &BundleLimits::default()).unwrap();
    let second = pack_dir(b.path(), &BundleLimits::default()).unwrap();
    let again = pack_dir(a.path(), &BundleLimits::default()).unwrap();
    assert_eq!(first.bytes, again.bytes);
    assert_eq!(first.bytes, second.bytes);
    assert_eq!(first.hash, second.hash);
}

#[test]
fn any_execute_bit_makes_a_file_executable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "extension.toml", PROCESS_MANIFEST.as_bytes());
    write(root, "bin/tool", b"\x7fELF");
    write(root, "assets/script.sh", b"#!/bin/sh\n");
    write(root, "assets/data", b"d");
    chmod(&root.join("bin/tool"), 0o700);
    chmod(&root.join("assets/script.sh"), 0o744);
    chmod(&root.join("assets/data"), 0o666);
    let packed = pack_dir(root, &BundleLimits::default()).unwrap();
    let b = Bundle::from_bytes(packed.bytes, &BundleLimits::default()).unwrap();
    let modes: Vec<(&str, Mode)> = b.files().map(|f| (f.path.as_str(), f.mode)).collect();
    assert_eq!(
        modes,
        [
            ("assets/data", Mode::Regular),
            ("assets/script.sh", Mode::Executable),
            ("bin/tool", Mode::Executable),
            ("extension.toml", Mode::Regular),
        ]
    );

    // Not executable on disk: the self-check refuses a process entry without 0755.
    chmod(&root.join("bin/tool"), 0o644);
    let e = pack_error(root);
    assert!(
        matches!(e, PackError::Invalid(BundleError::NotExecutable { .. })),
        "{e}"
    );
}

#[test]
fn progress_is_reported_in_archive_bytes() {
    let dir = folder();
    let mut calls = Vec::new();
    let packed =
        pack_dir_with_progress(dir.path(), &BundleLimits::default(), &mut |done, total| {
            calls.push((done, total))
        })
        .unwrap();
    let total = packed.bytes.len() as u64;
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(
        calls
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[1].1 == total)
    );
}

#[test]
fn symlinks_are_never_followed() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"secret");
    write(outside.path(), "assets/secret", b"secret");

    // A symlink inside assets/ pointing outside.
    let dir = folder();
    let link = dir.path().join("assets/data/leak");
    symlink(outside.path().join("secret"), &link).unwrap();
    let e = pack_error(dir.path());
    assert!(
        matches!(&e, PackError::Symlink { path } if *path == link),
        "{e}"
    );
    assert!(e.to_string().contains("leak"), "{e}");

    // A relative one, and one to a folder.
    let dir = folder();
    symlink("../../etc", dir.path().join("ui/etc")).unwrap();
    assert!(matches!(pack_error(dir.path()), PackError::Symlink { .. }));

    // assets/ itself a link.
    let dir = folder();
    fs::remove_dir_all(dir.path().join("assets")).unwrap();
    symlink(outside.path().join("assets"), dir.path().join("assets")).unwrap();
    assert!(matches!(pack_error(dir.path()), PackError::Symlink { .. }));

    // The entry a link.
    let dir = folder();
    fs::remove_file(dir.path().join("extension.wasm")).unwrap();
    write(outside.path(), "x.wasm", &component());
    symlink(
        outside.path().join("x.wasm"),
        dir.path().join("extension.wasm"),
    )
    .unwrap();
    assert!(matches!(pack_error(dir.path()), PackError::Symlink { .. }));

    // A folder on the way to the entry a link.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "extension.toml", PROCESS_MANIFEST.as_bytes());
    write(outside.path(), "bin/tool", b"\x7fELF");
    chmod(&outside.path().join("bin/tool"), 0o755);
    symlink(outside.path().join("bin"), dir.path().join("bin")).unwrap();
    let e = pack_error(dir.path());
    assert!(
        matches!(&e, PackError::Symlink { path } if path.ends_with("bin")),
        "{e}"
    );

    // The manifest a link.
    let dir = folder();
    fs::remove_file(dir.path().join("extension.toml")).unwrap();
    write(outside.path(), "extension.toml", MANIFEST.as_bytes());
    symlink(
        outside.path().join("extension.toml"),
        dir.path().join("extension.toml"),
    )
    .unwrap();
    assert!(matches!(pack_error(dir.path()), PackError::Symlink { .. }));
}

#[test]
fn special_files_are_refused() {
    let dir = folder();
    let sock = dir.path().join("assets/app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = pack_error(dir.path());
    assert!(
        matches!(&e, PackError::SpecialFile { path } if *path == sock),
        "{e}"
    );
}

#[test]
fn manifest_errors_propagate() {
    let dir = folder();
    write(
        dir.path(),
        "extension.toml",
        MANIFEST.replace("acme.hello", "x").as_bytes(),
    );
    let e = pack_error(dir.path());
    assert!(matches!(e, PackError::Manifest { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("extension.toml") && msg.contains("line 3: `extension.id`"),
        "{msg}"
    );

    let dir = folder();
    write(
        dir.path(),
        "extension.toml",
        b"schema = 1\n[extension]\nid = \"a.b\"\nid = \"a.c\"\n",
    );
    let e = pack_error(dir.path());
    assert!(matches!(e, PackError::Manifest { .. }), "{e}");

    // An entry outside the folder is a manifest error; nothing outside is read.
    let dir = folder();
    write(
        dir.path(),
        "extension.toml",
        MANIFEST
            .replace("extension.wasm", "../extension.wasm")
            .as_bytes(),
    );
    let e = pack_error(dir.path());
    assert!(matches!(e, PackError::Manifest { .. }), "{e}");
    assert!(e.to_string().contains("`extension.entry`"), "{e}");

    let dir = folder();
    fs::remove_file(dir.path().join("extension.toml")).unwrap();
    assert!(matches!(
        pack_error(dir.path()),
        PackError::MissingManifest { .. }
    ));

    let dir = folder();
    write(dir.path(), "extension.toml", b"\xff\xfe");
    assert!(matches!(
        pack_error(dir.path()),
        PackError::ManifestNotUtf8 { .. }
    ));
}

#[test]
fn missing_or_wrong_entry_and_ui() {
    let dir = folder();
    fs::remove_file(dir.path().join("extension.wasm")).unwrap();
    let e = pack_error(dir.path());
    assert!(matches!(e, PackError::MissingEntry { .. }), "{e}");
    assert!(e.to_string().contains("`extension.wasm`"), "{e}");

    let dir = folder();
    fs::remove_file(dir.path().join("extension.wasm")).unwrap();
    fs::create_dir(dir.path().join("extension.wasm")).unwrap();
    assert!(matches!(pack_error(dir.path()), PackError::NotAFile { .. }));

    let dir = folder();
    write(
        dir.path(),
        "extension.wasm",
        &wat::parse_str("(module)").unwrap(),
    );
    let e = pack_error(dir.path());
    assert!(
        matches!(e, PackError::Invalid(BundleError::NotAComponent { .. })),
        "{e}"
    );

    let dir = folder();
    fs::remove_dir_all(dir.path().join("ui")).unwrap();
    let e = pack_error(dir.path());
    assert!(matches!(e, PackError::MissingUi { .. }), "{e}");

    let dir = folder();
    fs::remove_dir_all(dir.path().join("ui")).unwrap();
    fs::create_dir(dir.path().join("ui")).unwrap();
    let e = pack_error(dir.path());
    assert!(
        matches!(e, PackError::Invalid(BundleError::EmptyUi { .. })),
        "{e}"
    );

    let dir = folder();
    fs::remove_dir_all(dir.path().join("assets")).unwrap();
    write(dir.path(), "assets", b"not a folder");
    assert!(matches!(
        pack_error(dir.path()),
        PackError::NotAFolder { .. }
    ));
}

#[test]
fn names_that_cannot_be_bundle_paths() {
    let dir = folder();
    write(dir.path(), "assets/with space.txt", b"x");
    let e = pack_error(dir.path());
    assert!(
        matches!(&e, PackError::BadPath { rel, .. } if rel == "assets/with space.txt"),
        "{e}"
    );

    let dir = folder();
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"assets/\xff");
    fs::write(dir.path().join(name), b"x").unwrap();
    assert!(matches!(
        pack_error(dir.path()),
        PackError::NonUtf8Name { .. }
    ));

    // Too deep to be a bundle path (more than 255 bytes).
    let dir = folder();
    let deep = format!("assets/{}/x", ["abcdefghij"; 30].join("/"));
    write(dir.path(), &deep, b"x");
    assert!(matches!(pack_error(dir.path()), PackError::BadPath { .. }));
}

#[test]
fn caps_apply_while_packing() {
    let dir = folder();
    write(dir.path(), "assets/big", &vec![0u8; 10_000]);
    let caps = BundleLimits {
        max_file_bytes: 9_999,
        ..BundleLimits::default()
    };
    let e = pack_dir(dir.path(), &caps).unwrap_err();
    assert!(
        matches!(
            e,
            PackError::FileTooLarge {
                size: 10_000,
                cap: 9_999,
                ..
            }
        ),
        "{e}"
    );

    let caps = BundleLimits {
        max_total_bytes: 12_000,
        ..BundleLimits::default()
    };
    let e = pack_dir(dir.path(), &caps).unwrap_err();
    assert!(matches!(e, PackError::TooLarge { .. }), "{e}");

    let caps = BundleLimits {
        max_entries: 7,
        ..BundleLimits::default()
    };
    let e = pack_dir(dir.path(), &caps).unwrap_err();
    assert!(matches!(e, PackError::TooManyFiles { cap: 7 }), "{e}");
    let caps = BundleLimits {
        max_entries: 8,
        ..BundleLimits::default()
    };
    pack_dir(dir.path(), &caps).unwrap();

    // A sparse 100 MiB file is refused from its size, not read.
    let dir = folder();
    let f = File::create(dir.path().join("assets/sparse")).unwrap();
    f.set_len(100 << 20).unwrap();
    let e = pack_error(dir.path());
    assert!(matches!(e, PackError::FileTooLarge { .. }), "{e}");
}
