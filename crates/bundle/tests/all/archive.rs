//! Hostile and malformed archives: every one is refused with a typed error naming the problem.

use tar::{EntryType, Header};
use warden_bundle::ustar::{self, ArchiveWriter, Mode};
use warden_bundle::{ArchiveError, Bundle, BundleError, BundleLimits};

use crate::common::*;

/// Reads `bytes` as a bundle with default caps and returns the archive error it must cause.
fn archive_error(bytes: Vec<u8>) -> ArchiveError {
    archive_error_with(bytes, &BundleLimits::default())
}

fn archive_error_with(bytes: Vec<u8>, caps: &BundleLimits) -> ArchiveError {
    match Bundle::from_bytes(bytes, caps) {
        Err(BundleError::Archive(e)) => e,
        Err(other) => panic!("expected an archive error, got: {other}"),
        Ok(b) => panic!("accepted a hostile archive: {b:?}"),
    }
}

#[test]
fn the_baseline_fixtures_are_valid() {
    // Every hostile archive below is this plus one defect.
    Bundle::from_bytes(raw_bundle(vec![]), &BundleLimits::default()).unwrap();
    Bundle::from_bytes(
        raw_bundle(vec![file_member("assets/ok.txt", b"ok")]),
        &BundleLimits::default(),
    )
    .unwrap();
}

#[test]
fn our_writer_matches_the_tar_crate_byte_for_byte() {
    let long = format!(
        "assets/{}/{}/{}.txt",
        "a".repeat(70),
        "b".repeat(60),
        "c".repeat(40)
    );
    assert!(long.len() > 100);
    let files: Vec<(String, u32, Vec<u8>)> = vec![
        (long.clone(), 0o644, vec![9; 700]),
        ("assets/x".into(), 0o755, vec![1, 2, 3]),
        ("extension.toml".into(), 0o644, MANIFEST.as_bytes().to_vec()),
    ];
    let mut ours = ArchiveWriter::new();
    let mut theirs = tar::Builder::new(Vec::new());
    for (path, mode, data) in &files {
        let m = if *mode == 0o755 {
            Mode::Executable
        } else {
            Mode::Regular
        };
        ours.add_file(&path.parse().unwrap(), m, data).unwrap();
        let mut h = Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        theirs.append(&h, &data[..]).unwrap();
    }
    let ours = ours.finish();
    let theirs = theirs.into_inner().unwrap();
    assert_eq!(ours, theirs);

    // And the tar crate reads ours back.
    let mut read = tar::Archive::new(&ours[..]);
    let paths: Vec<String> = read
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        paths,
        vec![long, "assets/x".to_string(), "extension.toml".into()]
    );
}

#[test]
fn escaping_paths() {
    for (name, says) in [
        ("../x", "'..'"),
        ("/etc/x", "relative"),
        ("a/../../x", "'..'"),
        ("assets/../../x", "'..'"),
        ("./extension.wasm", "'.'"),
        ("assets//x", "empty segment"),
        ("assets\\..\\..\\x", "\\\\"),
        ("assets/a\\b", "\\\\"),
        ("C:x", "':'"),
    ] {
        let e = archive_error(raw_bundle(vec![file_member(name, b"evil")]));
        let msg = e.to_string();
        assert!(matches!(e, ArchiveError::BadPath { .. }), "{name}: {msg}");
        assert!(msg.contains(says), "{name}: {msg}");
        assert!(msg.contains(&format!("{name:?}")), "names the entry: {msg}");
    }
}

/// The ustar `prefix` field is part of the path too.
#[test]
fn escaping_through_the_prefix_field() {
    for (prefix, name) in [
        ("..", "x"),
        ("/etc", "passwd"),
        ("assets/..", "../x"),
        ("assets", ""),
    ] {
        let m = member(name.as_bytes(), EntryType::Regular, 0o644, b"", |h| {
            h.as_ustar_mut().unwrap().prefix[..prefix.len()].copy_from_slice(prefix.as_bytes());
        });
        let e = archive_error(raw_bundle(vec![m]));
        assert!(
            matches!(e, ArchiveError::BadPath { .. }),
            "{prefix}/{name}: {e}"
        );
    }
}

#[test]
fn non_utf8_and_control_character_paths() {
    let e = archive_error(raw_bundle(vec![member(
        b"assets/\xff\xfe",
        EntryType::Regular,
        0o644,
        b"",
        |_| {},
    )]));
    assert!(matches!(e, ArchiveError::NonUtf8Path { .. }), "{e}");
    let e = archive_error(raw_bundle(vec![file_member("assets/a\nb\x1b[31m", b"")]));
    assert!(matches!(e, ArchiveError::BadPath { .. }), "{e}");
    // The message escapes the control characters.
    assert!(
        !e.to_string().contains('\n') && !e.to_string().contains('\x1b'),
        "{e}"
    );
}

#[test]
fn links_devices_and_extension_headers() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            member(b"assets/link", EntryType::Symlink, 0o777, b"", |h| {
                h.set_link_name("/etc/passwd").unwrap();
            }),
            "symbolic link (to \"/etc/passwd\")",
        ),
        (
            member(b"assets/hard", EntryType::Link, 0o644, b"", |h| {
                h.set_link_name("extension.toml").unwrap();
            }),
            "hard link (to \"extension.toml\")",
        ),
        (
            member(b"assets/tty", EntryType::Char, 0o644, b"", |_| {}),
            "character device",
        ),
        (
            member(b"assets/sda", EntryType::Block, 0o644, b"", |_| {}),
            "block device",
        ),
        (
            member(b"assets/fifo", EntryType::Fifo, 0o644, b"", |_| {}),
            "FIFO",
        ),
        (
            member(b"assets/c", EntryType::Continuous, 0o644, b"", |_| {}),
            "contiguous",
        ),
        (
            member(b"assets/sparse", EntryType::GNUSparse, 0o644, b"", |_| {}),
            "sparse",
        ),
        (
            member(b"assets/odd", EntryType::new(b'Z'), 0o644, b"", |_| {}),
            "unknown type 'Z'",
        ),
        (
            member(b"assets/old", EntryType::Regular, 0o644, b"x", |h| {
                h.as_ustar_mut().unwrap().typeflag = [0];
            }),
            "old-style",
        ),
    ];
    for (m, says) in cases {
        let e = archive_error(raw_bundle(vec![m]));
        assert!(matches!(e, ArchiveError::UnsupportedEntry { .. }), "{e}");
        assert!(e.to_string().contains(says), "{says}: {e}");
        assert!(e.to_string().contains("assets/"), "names the entry: {e}");
    }
}

/// A file written "through a link": a symlink `assets/l -> /tmp` followed by `assets/l/x`.
#[test]
fn file_through_a_link() {
    let link = member(b"assets/l", EntryType::Symlink, 0o777, b"", |h| {
        h.set_link_name("/tmp").unwrap();
    });
    let e = archive_error(raw_bundle(vec![link, file_member("assets/l/x", b"x")]));
    assert!(e.to_string().contains("symbolic link"), "{e}");
}

/// A PAX extended header whose `path` record would rename the next entry to `../../evil`.
#[test]
fn pax_header_that_renames_an_entry() {
    let record = "path=../../evil\n";
    let len = record.len() + 3; // "NN " prefix; total length is 2 digits here
    let pax = format!("{len} {record}");
    assert_eq!(pax.len(), len);
    let x = member(
        b"assets/PaxHeaders/x",
        EntryType::XHeader,
        0o644,
        pax.as_bytes(),
        |_| {},
    );
    let victim = file_member("assets/x", b"data");
    let e = archive_error(raw_archive(vec![
        file_member("extension.toml", MANIFEST.as_bytes()),
        file_member("extension.wasm", &component()),
        x,
        victim,
    ]));
    assert!(matches!(e, ArchiveError::UnsupportedEntry { .. }), "{e}");
    assert!(e.to_string().contains("PAX extended header"), "{e}");

    let g = member(
        b"assets/global",
        EntryType::XGlobalHeader,
        0o644,
        pax.as_bytes(),
        |_| {},
    );
    let e = archive_error(raw_bundle(vec![g]));
    assert!(e.to_string().contains("PAX global header"), "{e}");
}

/// The tar crate itself emits a GNU `L` long-name entry for a long path in a GNU header.
#[test]
fn gnu_long_name_and_gnu_format() {
    let long = format!("assets/{}", "n".repeat(120));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"x"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    assert_eq!(
        bytes[156], b'L',
        "the tar crate wrote a GNU long-name header"
    );
    // It carries the GNU magic, so it is refused as not ustar.
    let e = archive_error(bytes);
    assert!(matches!(e, ArchiveError::NotUstar { offset: 0, .. }), "{e}");

    // The same long-name header with ustar magic: refused for what it is.
    let long_name = format!("{long}\0");
    let l = member(
        b"././@LongLink",
        EntryType::GNULongName,
        0o644,
        long_name.as_bytes(),
        |_| {},
    );
    let e = archive_error(raw_archive(vec![l, file_member("assets/short", b"x")]));
    assert!(
        matches!(&e, ArchiveError::UnsupportedEntry { what, .. } if what.contains("GNU long-name")),
        "{e}"
    );
    let k = member(
        b"assets/k",
        EntryType::GNULongLink,
        0o644,
        b"target\0",
        |_| {},
    );
    let e = archive_error(raw_bundle(vec![k]));
    assert!(e.to_string().contains("GNU long-link-name"), "{e}");

    // A plain GNU-format header (magic "ustar  \0") is not ustar.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, "assets/x", &b""[..]).unwrap();
    let e = archive_error(b.into_inner().unwrap());
    assert!(matches!(e, ArchiveError::NotUstar { offset: 0, .. }), "{e}");

    // So is an old (v7) header.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_old();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, "assets/x", &b""[..]).unwrap();
    let e = archive_error(b.into_inner().unwrap());
    assert!(matches!(e, ArchiveError::NotUstar { .. }), "{e}");
}

#[test]
fn duplicates_and_order() {
    let e = archive_error(raw_archive(vec![
        file_member("assets/a", b"1"),
        file_member("assets/a", b"2"),
    ]));
    assert!(matches!(e, ArchiveError::Duplicate { .. }), "{e}");
    assert!(e.to_string().contains("assets/a"), "{e}");

    let e = archive_error(raw_archive(vec![
        file_member("extension.wasm", &component()),
        file_member("extension.toml", MANIFEST.as_bytes()),
    ]));
    assert!(matches!(e, ArchiveError::Unsorted { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("`extension.toml` comes after `extension.wasm`"),
        "{e}"
    );

    // A duplicate that is not adjacent is caught as disorder.
    let e = archive_error(raw_archive(vec![
        file_member("assets/a", b"1"),
        file_member("assets/b", b"2"),
        file_member("assets/a", b"3"),
    ]));
    assert!(matches!(e, ArchiveError::Unsorted { .. }), "{e}");
}

#[test]
fn case_insensitive_duplicates_and_file_folder_conflicts() {
    let e = archive_error(raw_bundle(vec![
        file_member("assets/A.txt", b"1"),
        file_member("assets/a.txt", b"2"),
    ]));
    assert!(matches!(e, ArchiveError::CaseConflict { .. }), "{e}");
    assert!(e.to_string().contains("assets/A.txt") && e.to_string().contains("assets/a.txt"));

    let e = archive_error(raw_bundle(vec![
        file_member("assets/a", b"1"),
        file_member("assets/a/b", b"2"),
    ]));
    assert!(matches!(e, ArchiveError::FileDirConflict { .. }), "{e}");
    assert!(e.to_string().contains("`assets/a` is a file"), "{e}");

    // Deeper, with unrelated names sorting in between ('-' < '/').
    let e = archive_error(raw_bundle(vec![
        file_member("assets/a", b"1"),
        file_member("assets/a-b", b"2"),
        file_member("assets/a/b/c", b"3"),
    ]));
    assert!(matches!(e, ArchiveError::FileDirConflict { .. }), "{e}");

    // Ignoring case too: file `assets/A` and `assets/a/b`.
    let e = archive_error(raw_bundle(vec![
        file_member("assets/A", b"1"),
        file_member("assets/a/b", b"2"),
    ]));
    assert!(matches!(e, ArchiveError::FileDirConflict { .. }), "{e}");

    // A directory entry and a file of the same name.
    let dir = member(b"assets/d/", EntryType::Directory, 0o755, b"", |_| {});
    let e = archive_error(raw_bundle(vec![file_member("assets/D", b"1"), dir]));
    assert!(matches!(e, ArchiveError::FileDirConflict { .. }), "{e}");
}

#[test]
fn owners_times_and_names_must_be_canonical() {
    let e = archive_error(raw_bundle(vec![member(
        b"assets/x",
        EntryType::Regular,
        0o644,
        b"",
        |h| h.set_uid(1000),
    )]));
    assert!(
        matches!(
            e,
            ArchiveError::BadOwner {
                field: "uid",
                value: 1000,
                ..
            }
        ),
        "{e}"
    );
    let e = archive_error(raw_bundle(vec![member(
        b"assets/x",
        EntryType::Regular,
        0o644,
        b"",
        |h| h.set_gid(50),
    )]));
    assert!(
        matches!(
            e,
            ArchiveError::BadOwner {
                field: "gid",
                value: 50,
                ..
            }
        ),
        "{e}"
    );
    let e = archive_error(raw_bundle(vec![member(
        b"assets/x",
        EntryType::Regular,
        0o644,
        b"",
        |h| h.set_mtime(1_700_000_000),
    )]));
    assert!(matches!(e, ArchiveError::BadMtime { .. }), "{e}");

    type Tweak = Box<dyn Fn(&mut Header)>;
    let fields: Vec<(&str, Tweak)> = vec![
        ("uname", Box::new(|h| h.set_username("root").unwrap())),
        ("gname", Box::new(|h| h.set_groupname("wheel").unwrap())),
        ("devmajor", Box::new(|h| h.set_device_major(8).unwrap())),
        ("devminor", Box::new(|h| h.set_device_minor(1).unwrap())),
        ("linkname", Box::new(|h| h.set_link_name("x").unwrap())),
        // Old tars pad numbers with spaces; the value is right but the form is not.
        (
            "mode",
            Box::new(|h| h.as_ustar_mut().unwrap().mode = *b"   644 \0"),
        ),
        (
            "uid",
            Box::new(|h| h.as_ustar_mut().unwrap().uid = *b"0000000 "),
        ),
        (
            "size",
            Box::new(|h| h.as_ustar_mut().unwrap().size = *b"2           "),
        ),
        (
            "mtime",
            Box::new(|h| h.as_ustar_mut().unwrap().mtime = *b"0          \0"),
        ),
        (
            "header padding",
            Box::new(|h| h.as_ustar_mut().unwrap().pad[3] = 1),
        ),
        // Bytes after the name's NUL: `assets/x\0evil`.
        (
            "name",
            Box::new(|h| h.as_ustar_mut().unwrap().name[9..13].copy_from_slice(b"evil")),
        ),
    ];
    for (field, tweak) in fields {
        let e = archive_error(raw_bundle(vec![member(
            b"assets/x",
            EntryType::Regular,
            0o644,
            b"ab",
            |h| tweak(h),
        )]));
        assert!(
            matches!(&e, ArchiveError::NonCanonical { field: f, .. } if *f == field),
            "{field}: {e}"
        );
        assert!(e.to_string().contains("assets/x"), "{e}");
    }

    // An empty (all-NUL) number field is not a number.
    let e = archive_error(raw_bundle(vec![member(
        b"assets/x",
        EntryType::Regular,
        0o644,
        b"",
        |h| h.as_ustar_mut().unwrap().gid = [0; 8],
    )]));
    assert!(
        matches!(e, ArchiveError::BadNumber { field: "gid", .. }),
        "{e}"
    );

    // GNU tar writes the checksum as 6 digits, NUL, space: the value is right, the form is not.
    let mut m = member(b"assets/x", EntryType::Regular, 0o644, b"", |_| {});
    let sum: u32 = m[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    m[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let e = archive_error(raw_bundle(vec![m]));
    assert!(
        matches!(
            e,
            ArchiveError::NonCanonical {
                field: "chksum",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_long_path_must_use_the_canonical_split() {
    let dir1 = "d".repeat(50);
    let dir2 = "e".repeat(50);
    let file = "f".repeat(40);
    let path = format!("assets/{dir1}/{dir2}/{file}");
    // Canonical: the rightmost '/' (prefix "assets/ddd.../eee...", name "fff...").
    let ok = raw_bundle(vec![member(b"", EntryType::Regular, 0o644, b"x", |h| {
        h.set_path(&path).unwrap();
    })]);
    let b = Bundle::from_bytes(ok, &BundleLimits::default()).unwrap();
    assert_eq!(b.file(&path), Some(&b"x"[..]));

    // The same path split at the other '/': a reader would see the same path, but the
    // encoding is not the canonical one.
    let other = member(b"", EntryType::Regular, 0o644, b"x", |h| {
        let u = h.as_ustar_mut().unwrap();
        let prefix = format!("assets/{dir1}");
        let name = format!("{dir2}/{file}");
        u.prefix[..prefix.len()].copy_from_slice(prefix.as_bytes());
        u.name[..name.len()].copy_from_slice(name.as_bytes());
    });
    let e = archive_error(raw_bundle(vec![other]));
    assert!(matches!(e, ArchiveError::NonCanonical { .. }), "{e}");
}

#[test]
fn modes() {
    for mode in [0o777, 0o4755, 0o2755, 0o1644, 0o600, 0o666, 0o744, 0o000] {
        let e = archive_error(raw_bundle(vec![member(
            b"assets/x",
            EntryType::Regular,
            mode,
            b"",
            |_| {},
        )]));
        assert!(matches!(e, ArchiveError::BadMode { .. }), "{mode:o}: {e}");
        assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
    }
    let e = archive_error(raw_bundle(vec![member(
        b"assets/x",
        EntryType::Regular,
        0o644,
        b"",
        |h| h.as_ustar_mut().unwrap().mode = *b"0000u44\0",
    )]));
    assert!(
        matches!(e, ArchiveError::BadNumber { field: "mode", .. }),
        "{e}"
    );
}

#[test]
fn directory_entries() {
    // Canonical directory entries are accepted (and are not files).
    let dir = member(b"assets/", EntryType::Directory, 0o755, b"", |_| {});
    let b = Bundle::from_bytes(
        raw_bundle(vec![dir, file_member("assets/x", b"x")]),
        &BundleLimits::default(),
    )
    .unwrap();
    assert_eq!(b.file("assets"), None);
    assert_eq!(b.file("assets/"), None);
    assert_eq!(b.file("assets/x"), Some(&b"x"[..]));
    assert_eq!(b.files().count(), 3);

    let e = archive_error(raw_bundle(vec![member(
        b"assets/",
        EntryType::Directory,
        0o700,
        b"",
        |_| {},
    )]));
    assert!(matches!(e, ArchiveError::BadMode { .. }), "{e}");
    let e = archive_error(raw_bundle(vec![member(
        b"assets/",
        EntryType::Directory,
        0o755,
        b"hidden",
        |_| {},
    )]));
    assert!(matches!(e, ArchiveError::DirectoryWithData { .. }), "{e}");
    let e = archive_error(raw_bundle(vec![member(
        b"assets",
        EntryType::Directory,
        0o755,
        b"",
        |_| {},
    )]));
    assert!(matches!(e, ArchiveError::BadPath { .. }), "{e}");
    let e = archive_error(raw_bundle(vec![member(
        b"../",
        EntryType::Directory,
        0o755,
        b"",
        |_| {},
    )]));
    assert!(matches!(e, ArchiveError::BadPath { .. }), "{e}");
}

#[test]
fn checksums() {
    let mut bytes = raw_bundle(vec![]);
    bytes[148] ^= 1; // in the first checksum field
    assert!(matches!(
        archive_error(bytes),
        ArchiveError::BadChecksum { offset: 0, .. }
    ));

    let mut bytes = raw_bundle(vec![]);
    bytes[0] = b'E'; // "Extension.toml": the name changed but the checksum did not
    let e = archive_error(bytes);
    assert!(
        matches!(e, ArchiveError::BadChecksum { offset: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("Extension.toml"), "{e}");

    // A checksum field that is not a number at all.
    let mut m = member(b"assets/x", EntryType::Regular, 0o644, b"", |_| {});
    m[148..156].copy_from_slice(b"zzzzzzz\0");
    let e = archive_error(raw_bundle(vec![m]));
    assert!(matches!(e, ArchiveError::BadChecksum { .. }), "{e}");
}

#[test]
fn end_of_archive() {
    let good = bundle_with(&[]);

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage after the end");
    trailing.resize(trailing.len().next_multiple_of(512), 0);
    assert!(matches!(
        archive_error(trailing),
        ArchiveError::TrailingData { .. }
    ));

    // GNU tar pads to a 10 KiB record with more zero blocks: also refused.
    let mut record = good.clone();
    record.resize(10240, 0);
    let e = archive_error(record);
    assert!(matches!(e, ArchiveError::TrailingData { .. }), "{e}");

    // A second archive appended after the first.
    let mut two = good.clone();
    two.extend_from_slice(&good);
    assert!(matches!(
        archive_error(two),
        ArchiveError::TrailingData { .. }
    ));

    let missing = good[..good.len() - 1024].to_vec();
    assert!(matches!(archive_error(missing), ArchiveError::MissingEnd));
    let half = good[..good.len() - 512].to_vec();
    assert!(matches!(archive_error(half), ArchiveError::MissingEnd));

    // A zero block in the middle, then more entries.
    let mut members = vec![file_member("extension.toml", MANIFEST.as_bytes())];
    members.push(vec![0u8; 512]);
    members.push(file_member("extension.wasm", &component()));
    assert!(matches!(
        archive_error(raw_archive(members)),
        ArchiveError::MissingEnd
    ));

    let odd = good[..good.len() - 1].to_vec();
    assert!(matches!(
        archive_error(odd),
        ArchiveError::NotBlockAligned { .. }
    ));
    assert!(matches!(archive_error(vec![]), ArchiveError::MissingEnd));
}

#[test]
fn truncated_data_and_padding() {
    // Cut inside the component's data (at a block boundary, so only the size gives it away).
    let full = bundle_with(&[("assets/big", Mode::Regular, &[7u8; 4096])]);
    let cut = full[..512 + 1024].to_vec();
    let e = archive_error(cut);
    assert!(matches!(e, ArchiveError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("assets/big"), "{e}");

    // A declared size larger than what follows.
    let mut m = member(b"assets/x", EntryType::Regular, 0o644, b"abc", |h| {
        h.set_size(5000)
    });
    m.truncate(1024);
    let e = archive_error(raw_archive(vec![m]));
    assert!(
        matches!(e, ArchiveError::Truncated { size: 5000, .. }),
        "{e}"
    );

    // Non-zero bytes in the padding after a file's data.
    let mut m = file_member("assets/x", b"abc");
    m[512 + 3] = b'!';
    let e = archive_error(raw_bundle(vec![m]));
    assert!(matches!(e, ArchiveError::NonZeroPadding { .. }), "{e}");
    let mut m = file_member("assets/x", b"abc");
    m[1023] = 1;
    let e = archive_error(raw_bundle(vec![m]));
    assert!(matches!(e, ArchiveError::NonZeroPadding { .. }), "{e}");
}

#[test]
fn huge_declared_sizes() {
    let huge = member(b"assets/bomb", EntryType::Regular, 0o644, b"", |h| {
        h.set_size(0o77777777777)
    });
    let e = archive_error(raw_bundle(vec![huge.clone()]));
    assert!(
        matches!(e, ArchiveError::FileTooLarge { size: 0o77777777777, cap, .. } if cap == 64 << 20),
        "{e}"
    );
    assert!(e.to_string().contains("max_file_bytes"), "{e}");

    // Even with no per-file cap, it must not allocate or overflow: it is simply truncated.
    let caps = BundleLimits {
        max_file_bytes: u64::MAX,
        ..BundleLimits::default()
    };
    let e = archive_error_with(raw_bundle(vec![huge]), &caps);
    assert!(matches!(e, ArchiveError::Truncated { .. }), "{e}");

    // Base-256 (binary) sizes, which the tar crate writes for >= 8 GiB, are not octal.
    let binary = member(b"assets/bomb", EntryType::Regular, 0o644, b"", |h| {
        h.set_size(u64::MAX)
    });
    let e = archive_error_with(raw_bundle(vec![binary]), &caps);
    assert!(
        matches!(e, ArchiveError::BadNumber { field: "size", .. }),
        "{e}"
    );
}

#[test]
fn entry_count_cap() {
    let caps = BundleLimits {
        max_entries: 3,
        ..BundleLimits::default()
    };
    let three = bundle_with(&[("assets/a", Mode::Regular, b"")]);
    Bundle::from_bytes(three, &caps).unwrap();
    let four = bundle_with(&[
        ("assets/a", Mode::Regular, b""),
        ("assets/b", Mode::Regular, b""),
    ]);
    let e = archive_error_with(four, &caps);
    assert!(matches!(e, ArchiveError::TooManyEntries { cap: 3 }), "{e}");
    assert!(e.to_string().contains("max_entries"), "{e}");

    // Reading stops at the first entry over the cap: what follows is never parsed.
    let mut garbage_after = bundle_with(&[("assets/a", Mode::Regular, b"")]);
    garbage_after.truncate(garbage_after.len() - 1024);
    garbage_after.extend_from_slice(&[0xEE; 512 * 8]);
    let e = archive_error_with(garbage_after, &caps);
    assert!(matches!(e, ArchiveError::TooManyEntries { cap: 3 }), "{e}");
}

/// The default cap, with real archives: exactly 10,000 entries load, 10,001 do not.
#[test]
fn entry_count_cap_default() {
    let names: Vec<String> = (0..10_000).map(|i| format!("assets/f{i:05}")).collect();
    let build = |n: usize| {
        let extra: Vec<(&str, Mode, &[u8])> = names[..n]
            .iter()
            .map(|s| (s.as_str(), Mode::Regular, &b""[..]))
            .collect();
        bundle_with(&extra)
    };
    let at_cap = build(9_998);
    let b = Bundle::from_bytes(at_cap, &BundleLimits::default()).unwrap();
    assert_eq!(b.files().count(), 10_000);
    let over = build(9_999);
    let e = archive_error(over);
    assert!(
        matches!(e, ArchiveError::TooManyEntries { cap: 10_000 }),
        "{e}"
    );
}

#[test]
fn per_file_cap() {
    let caps = BundleLimits {
        max_file_bytes: 1000,
        ..BundleLimits::default()
    };
    let at = bundle_with(&[("assets/a", Mode::Regular, &[1u8; 1000])]);
    Bundle::from_bytes(at, &caps).unwrap();
    let over = bundle_with(&[("assets/a", Mode::Regular, &[1u8; 1001])]);
    let e = archive_error_with(over, &caps);
    assert!(
        matches!(
            e,
            ArchiveError::FileTooLarge {
                size: 1001,
                cap: 1000,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn total_cap_is_checked_first() {
    let bytes = bundle_with(&[("assets/a", Mode::Regular, &[1u8; 5000])]);
    let caps = BundleLimits {
        max_total_bytes: bytes.len() as u64 - 1,
        ..BundleLimits::default()
    };
    let e = archive_error_with(bytes.clone(), &caps);
    assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e}");
    // Checked before anything else: even garbage of that size gets this error.
    let e = archive_error_with(vec![0xAA; bytes.len()], &caps);
    assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("max_total_bytes"), "{e}");
}

/// Flip bits at every position of a real bundle: a flip in a header, in padding or in the end
/// marker is refused; a flip in file data is refused or changes the content hash (so no
/// signature over the original hash could match).
#[test]
fn every_flipped_byte_is_caught() {
    let original = bundle_with(&[
        ("assets/a.txt", Mode::Regular, b"hello world"),
        ("assets/run", Mode::Executable, &[0x42; 700]),
    ]);
    let caps = BundleLimits::default();
    let good = Bundle::from_bytes(original.clone(), &caps).unwrap();
    let entries = ustar::read(&original, &caps).unwrap();
    let in_data = |pos: usize| entries.iter().any(|e| e.data.contains(&pos));
    let mut rejected = 0;
    for pos in 0..original.len() {
        for mask in [0x01u8, 0x80, 0xff, 0x20] {
            let mut bytes = original.clone();
            bytes[pos] ^= mask;
            match Bundle::from_bytes(bytes, &caps) {
                Err(_) => rejected += 1,
                Ok(b) => {
                    assert!(
                        in_data(pos),
                        "flip {mask:#x} at {pos} (not file data) accepted"
                    );
                    assert_ne!(b.content_hash(), good.content_hash(), "flip at {pos}");
                }
            }
        }
    }
    assert!(rejected > 4 * (original.len() / 2), "{rejected}");
}
