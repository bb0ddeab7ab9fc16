//! The foundation commands as a user runs them: real files, real keys (ours and OpenSSL's), real
//! crafted archives. Every refusal checks the exit code, the message, and that nothing was
//! written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub(crate) const MANIFEST: &str = r#"schema = 1

[extension]
id = "acme.hello"
version = "1.0.0"
publisher = "acme"
kind = "component"
entry = "extension.wasm"
"#;

pub(crate) fn warden(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    for a in args {
        cmd.arg(a.as_ref());
    }
    cmd.env_remove("WARDEN_TRUST_BUNDLE")
        .env_remove("WARDEN_AUDIT_KEY")
        .output()
        .unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub(crate) fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts exit 1 with an `error:` message containing `needle`.
#[track_caller]
pub(crate) fn fails(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected failure; stdout:\n{}\nstderr:\n{err}",
        stdout(o)
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

pub(crate) fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(dir);
    out.sort();
    out
}
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        }
        v.push(p);
    }
    v
}

pub(crate) fn component() -> Vec<u8> {
    wat::parse_str("(component)").unwrap()
}

/// An extension folder with the given manifest and a minimal component.
pub(crate) fn ext_dir(root: &Path, name: &str, manifest: &str) -> PathBuf {
    let d = root.join(name);
    fs::create_dir_all(d.join("assets")).unwrap();
    fs::write(d.join("extension.toml"), manifest).unwrap();
    fs::write(d.join("extension.wasm"), component()).unwrap();
    fs::write(d.join("assets/readme.txt"), "hi").unwrap();
    d
}

pub(crate) struct Publisher {
    pub(crate) key: PathBuf,
    pub(crate) pem: String,
}

pub(crate) fn keygen(root: &Path, name: &str) -> Publisher {
    let out = root.join("keys");
    let o = warden(&[&"keygen", &"--publisher", &name, &"--out", &out]);
    let entry = ok(&o);
    assert!(entry.contains(&format!("name = \"{name}\"")), "{entry}");
    Publisher {
        key: out.join(format!("{name}.key")),
        pem: fs::read_to_string(out.join(format!("{name}.pub"))).unwrap(),
    }
}

pub(crate) fn toml_str(pem: &str) -> String {
    format!("\"{}\"", pem.replace('\n', "\\n"))
}

pub(crate) fn trust_file(root: &Path, name: &str, entries: &[(&str, &[&str], &[&str])]) -> PathBuf {
    let mut s = String::new();
    for (publisher, keys, revoked) in entries {
        let k: Vec<String> = keys.iter().map(|p| toml_str(p)).collect();
        let r: Vec<String> = revoked.iter().map(|p| toml_str(p)).collect();
        s += &format!(
            "[[publisher]]\nname = \"{publisher}\"\nkeys = [{}]\nrevoked = [{}]\n\n",
            k.join(", "),
            r.join(", ")
        );
    }
    let p = root.join(name);
    fs::write(&p, s).unwrap();
    p
}

pub(crate) fn pack(dir: &Path, out: &Path) -> String {
    ok(&warden(&[&"pack", &dir, &"--out", &out]))
        .trim()
        .to_string()
}

pub(crate) fn sign(bundle: &Path, key: &Path) {
    ok(&warden(&[&"sign", &bundle, &"--key", &key]));
}

pub(crate) fn verify(bundle: &Path, trust: &Path) -> Output {
    warden(&[&"verify", &bundle, &"--trust", &trust])
}

pub(crate) fn sig_of(bundle: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", bundle.display()))
}

pub(crate) fn example_hello() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    assert!(
        root.join("extension.wasm").exists(),
        "examples/hello/extension.wasm is missing: run scripts/build-examples.sh (scripts/test.sh does)"
    );
    root
}

#[test]
fn tour_round_trip_with_the_example_extension() {
    let t = TempDir::new().unwrap();
    let publisher = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&publisher.pem], &[])],
    );
    let bundle = t.path().join("hello.wext");
    let hash = pack(&example_hello(), &bundle);
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    sign(&bundle, &publisher.key);
    let out = ok(&verify(&bundle, &trust));
    assert!(out.contains("verified: warden.hello 0.1.0"), "{out}");
    assert!(out.contains("publisher: warden-examples"), "{out}");
    assert!(out.contains(&format!("content hash: {hash}")), "{out}");
    assert!(out.contains("none: computation only"), "{out}");

    let out = ok(&warden(&[&"inspect", &bundle]));
    assert!(out.contains("NOT VERIFIED"), "{out}");
    assert!(out.contains("wasi:http/incoming-handler@0.2"), "{out}");
    assert!(out.contains("assets/README.txt"), "{out}");
    assert!(out.contains(&hash), "{out}");

    // The trust entry printed by keygen is itself a working trust bundle.
    let printed = ok(&warden(&[
        &"keygen",
        &"--publisher",
        &"warden-examples",
        &"--out",
        &t.path().join("k2"),
    ]));
    let trust2 = t.path().join("trust2.toml");
    fs::write(&trust2, printed).unwrap();
    let k2 = t.path().join("k2/warden-examples.key");
    let sig2 = t.path().join("second.sig");
    ok(&warden(&[&"sign", &bundle, &"--key", &k2, &"--out", &sig2]));
    ok(&warden(&[
        &"verify", &bundle, &"--trust", &trust2, &"--sig", &sig2,
    ]));
    // WARDEN_TRUST_BUNDLE stands in for --trust.
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "verify".as_ref(),
            bundle.as_os_str(),
            "--sig".as_ref(),
            sig2.as_os_str(),
        ])
        .env("WARDEN_TRUST_BUNDLE", &trust2)
        .output()
        .unwrap();
    ok(&o);
}

#[test]
fn openssl_keys_work() {
    let t = TempDir::new().unwrap();
    let key = t.path().join("acme.key");
    let pubkey = t.path().join("acme.pub");
    let generated = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(generated.success());
    let pb = Command::new("openssl")
        .arg("pkey")
        .arg("-in")
        .arg(&key)
        .arg("-pubout")
        .arg("-out")
        .arg(&pubkey)
        .status()
        .unwrap();
    assert!(pb.success());
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("acme", &[&fs::read_to_string(&pubkey).unwrap()], &[])],
    );
    let dir = ext_dir(t.path(), "ext", MANIFEST);
    let bundle = t.path().join("x.wext");
    pack(&dir, &bundle);
    sign(&bundle, &key);
    let out = ok(&verify(&bundle, &trust));
    assert!(out.contains("verified: acme.hello 1.0.0"), "{out}");

    // And our keys are readable by openssl, giving the same public key.
    let ours = keygen(t.path(), "acme");
    let o = Command::new("openssl")
        .arg("pkey")
        .arg("-in")
        .arg(&ours.key)
        .arg("-pubout")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), ours.pem);
}

#[test]
fn keygen_protects_keys() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new().unwrap();
    let p = keygen(t.path(), "acme");
    assert_eq!(
        fs::metadata(&p.key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(&p.key).unwrap();
    let o = warden(&[
        &"keygen",
        &"--publisher",
        &"acme",
        &"--out",
        &t.path().join("keys"),
    ]);
    fails(&o, "already exists");
    assert_eq!(
        fs::read(&p.key).unwrap(),
        before,
        "an existing key was overwritten"
    );
    for bad in ["../evil", "Acme", "a/b", ""] {
        let o = warden(&[
            &"keygen",
            &"--publisher",
            &bad,
            &"--out",
            &t.path().join("bad"),
        ]);
        fails(&o, "invalid publisher name");
    }
    assert!(!t.path().join("evil.key").exists());
}

/// One signed bundle plus everything needed to attack it.
pub(crate) struct Signed {
    pub(crate) t: TempDir,
    pub(crate) acme: Publisher,
    pub(crate) bundle: PathBuf,
    pub(crate) trust: PathBuf,
}

pub(crate) fn signed() -> Signed {
    let t = TempDir::new().unwrap();
    let acme = keygen(t.path(), "acme");
    let trust = trust_file(t.path(), "trust.toml", &[("acme", &[&acme.pem], &[])]);
    let dir = ext_dir(t.path(), "ext", MANIFEST);
    let bundle = t.path().join("hello.wext");
    pack(&dir, &bundle);
    sign(&bundle, &acme.key);
    ok(&verify(&bundle, &trust));
    Signed {
        t,
        acme,
        bundle,
        trust,
    }
}

#[test]
fn any_flipped_byte_in_the_bundle_is_refused() {
    let s = signed();
    let original = fs::read(&s.bundle).unwrap();
    let tampered = s.t.path().join("tampered.wext");
    fs::copy(sig_of(&s.bundle), sig_of(&tampered)).unwrap();
    // Every header byte of the first entries, then a stride through the rest.
    let positions: Vec<usize> = (0..1024)
        .chain((1024..original.len()).step_by(97))
        .collect();
    for pos in positions {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x01;
        fs::write(&tampered, &bytes).unwrap();
        let o = verify(&tampered, &s.trust);
        assert_eq!(
            o.status.code(),
            Some(1),
            "flip at {pos} accepted:\n{}",
            stdout(&o)
        );
        assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    }
}

#[test]
fn any_flipped_byte_in_the_signature_is_refused() {
    let s = signed();
    let sig = fs::read(sig_of(&s.bundle)).unwrap();
    for pos in 0..sig.len() {
        for bit in [0x01u8, 0x20] {
            let mut bytes = sig.clone();
            bytes[pos] ^= bit;
            fs::write(sig_of(&s.bundle), &bytes).unwrap();
            let o = verify(&s.bundle, &s.trust);
            // Flipping the case of a JSON key or of a base64 char never yields a valid signature;
            // whitespace-only changes are not possible with these bit flips on this layout.
            if o.status.code() == Some(0) {
                // Only acceptable if the file is semantically identical JSON (e.g. a space flipped
                // into another whitespace character is not reachable with 0x01/0x20).
                panic!(
                    "flip 0x{bit:02x} at {pos} accepted: {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            assert_eq!(o.status.code(), Some(1));
        }
    }
}

#[test]
fn untrusted_revoked_and_foreign_keys_are_refused() {
    let s = signed();
    let other = keygen(s.t.path(), "other");
    // Unknown publisher: the trust bundle does not list acme.
    let t1 = trust_file(s.t.path(), "t1.toml", &[("other", &[&other.pem], &[])]);
    fails(&verify(&s.bundle, &t1), "acme");
    // Revoked key.
    let t2 = trust_file(s.t.path(), "t2.toml", &[("acme", &[], &[&s.acme.pem])]);
    fails(&verify(&s.bundle, &t2), "revoked");
    let t2b = trust_file(
        s.t.path(),
        "t2b.toml",
        &[("acme", &[&s.acme.pem], &[&s.acme.pem])],
    );
    fails(&verify(&s.bundle, &t2b), "revoked");
    // Other publisher's key signs acme's bundle.
    let foreign = s.t.path().join("foreign.wext");
    fs::copy(&s.bundle, &foreign).unwrap();
    sign(&foreign, &other.key);
    let t3 = trust_file(
        s.t.path(),
        "t3.toml",
        &[("acme", &[&s.acme.pem], &[]), ("other", &[&other.pem], &[])],
    );
    fails(&verify(&foreign, &t3), "other");
}

#[test]
fn mix_and_match_statements_are_refused() {
    let s = signed();
    let v2_dir = ext_dir(s.t.path(), "v2", &MANIFEST.replace("1.0.0", "2.0.0"));
    let v2 = s.t.path().join("v2.wext");
    pack(&v2_dir, &v2);
    // Version 1's valid signature presented with version 2's bytes.
    fs::copy(sig_of(&s.bundle), sig_of(&v2)).unwrap();
    fails(&verify(&v2, &s.trust), "version");
    // Another extension's statement.
    let other_dir = ext_dir(
        s.t.path(),
        "other",
        &MANIFEST.replace("acme.hello", "acme.other"),
    );
    let other = s.t.path().join("other.wext");
    pack(&other_dir, &other);
    fs::copy(sig_of(&s.bundle), sig_of(&other)).unwrap();
    fails(&verify(&other, &s.trust), "acme.other");
    // Same id and version, different bytes (an extra asset): the hash no longer matches.
    let same_dir = ext_dir(s.t.path(), "same", MANIFEST);
    fs::write(same_dir.join("assets/extra.txt"), "more").unwrap();
    let same = s.t.path().join("same.wext");
    pack(&same_dir, &same);
    fs::copy(sig_of(&s.bundle), sig_of(&same)).unwrap();
    fails(&verify(&same, &s.trust), "hash");
}

#[test]
fn sign_appends_only_for_the_same_bundle() {
    let s = signed();
    let second = keygen(s.t.path(), "acme2");
    let before = fs::read(sig_of(&s.bundle)).unwrap();
    // A signature file for a different bundle is never overwritten.
    let dir = ext_dir(s.t.path(), "v3", &MANIFEST.replace("1.0.0", "3.0.0"));
    let v3 = s.t.path().join("v3.wext");
    pack(&dir, &v3);
    let o = warden(&[
        &"sign",
        &v3,
        &"--key",
        &s.acme.key,
        &"--out",
        &sig_of(&s.bundle),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(fs::read(sig_of(&s.bundle)).unwrap(), before);
    // A second key adds a second signature to the same envelope.
    sign(&s.bundle, &second.key);
    let env: serde_json::Value =
        serde_json::from_slice(&fs::read(sig_of(&s.bundle)).unwrap()).unwrap();
    assert_eq!(env["signatures"].as_array().unwrap().len(), 2);
    ok(&verify(&s.bundle, &s.trust));
}

#[test]
fn manifest_mistakes_fail_pack_and_write_nothing() {
    let cases: &[(&str, &str)] = &[
        ("colour = 1\n", "extension.colour"),
        (
            "schema = 1\n[extension]\nid = \"acme.hello\"\nid = \"acme.x\"\n",
            "duplicate key",
        ),
        ("\n[limits]\nmax_memory = \"lots\"\n", "limits.max_memory"),
        (
            "\n[permissions.network]\nenabled = true\n",
            "permissions.network.allowed_hosts",
        ),
        (
            "\n[permissions]\nkv = true\ncolour = 1\n",
            "permissions.colour",
        ),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let t = TempDir::new().unwrap();
        let manifest = if extra.starts_with("schema") {
            extra.to_string()
        } else {
            format!("{MANIFEST}{extra}")
        };
        let dir = ext_dir(t.path(), "ext", &manifest);
        let before = listing(t.path());
        let out = t.path().join("out.wext");
        let o = warden(&[&"pack", &dir, &"--out", &out]);
        fails(&o, needle);
        assert!(stderr(&o).contains("line "), "case {i}: {}", stderr(&o));
        assert_eq!(listing(t.path()), before, "case {i} wrote something");
    }
    // An entry that points outside the bundle.
    let t = TempDir::new().unwrap();
    let dir = ext_dir(
        t.path(),
        "ext",
        &MANIFEST.replace("extension.wasm", "../outside.wasm"),
    );
    fs::write(t.path().join("outside.wasm"), component()).unwrap();
    let before = listing(t.path());
    fails(
        &warden(&[&"pack", &dir, &"--out", &t.path().join("o.wext")]),
        "extension.entry",
    );
    assert_eq!(listing(t.path()), before);
    // A missing entry.
    let t = TempDir::new().unwrap();
    let dir = ext_dir(t.path(), "ext", MANIFEST);
    fs::remove_file(dir.join("extension.wasm")).unwrap();
    fails(
        &warden(&[&"pack", &dir, &"--out", &t.path().join("o.wext")]),
        "extension.wasm",
    );
    assert!(!t.path().join("o.wext").exists());
}

#[test]
fn packing_is_deterministic() {
    use std::time::{Duration, SystemTime};
    let t = TempDir::new().unwrap();
    let a = ext_dir(t.path(), "a", MANIFEST);
    // Same content written in another order, with other mtimes and permissions.
    let b = t.path().join("b");
    fs::create_dir_all(b.join("assets")).unwrap();
    fs::write(b.join("assets/readme.txt"), "hi").unwrap();
    fs::write(b.join("extension.wasm"), component()).unwrap();
    fs::write(b.join("extension.toml"), MANIFEST).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for f in ["extension.toml", "extension.wasm", "assets/readme.txt"] {
        fs::File::options()
            .write(true)
            .open(b.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(b.join(f), fs::Permissions::from_mode(0o640)).unwrap();
    }
    let h1 = pack(&a, &t.path().join("1.wext"));
    let h2 = pack(&a, &t.path().join("2.wext"));
    let h3 = pack(&b, &t.path().join("3.wext"));
    assert_eq!(h1, h2);
    assert_eq!(h1, h3);
    assert_eq!(
        fs::read(t.path().join("1.wext")).unwrap(),
        fs::read(t.path().join("3.wext")).unwrap()
    );
}

/// Writes a tar archive with the `tar` crate, letting `edit` make each header hostile.
pub(crate) fn crafted(
    entries: &[(&str, &[u8], u8)],
    edit: impl Fn(usize, &mut tar::Header),
) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, (path, data, kind)) in entries.iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::new(*kind));
        // Raw name bytes: the tar crate's set_path refuses `..`, which is exactly what we test.
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        edit(i, &mut h);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_archives_are_refused_by_verify_and_inspect() {
    let s = signed();
    let wasm = component();
    let m = MANIFEST.as_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            crafted(
                &[
                    ("../x", b"x", b'0'),
                    ("extension.toml", m, b'0'),
                    ("extension.wasm", &wasm, b'0'),
                ],
                |_, _| {},
            ),
        ),
        (
            "absolute",
            crafted(
                &[
                    ("/etc/x", b"x", b'0'),
                    ("extension.toml", m, b'0'),
                    ("extension.wasm", &wasm, b'0'),
                ],
                |_, _| {},
            ),
        ),
        (
            "symlink",
            crafted(
                &[
                    ("assets/l", b"", b'2'),
                    ("extension.toml", m, b'0'),
                    ("extension.wasm", &wasm, b'0'),
                ],
                |_, h| {
                    let _ = h.set_link_name("/etc/passwd");
                },
            ),
        ),
        (
            "duplicate",
            crafted(
                &[
                    ("extension.toml", m, b'0'),
                    ("extension.toml", m, b'0'),
                    ("extension.wasm", &wasm, b'0'),
                ],
                |_, _| {},
            ),
        ),
        (
            "pax",
            crafted(
                &[
                    ("assets/a", b"path=../../x\n", b'x'),
                    ("extension.toml", m, b'0'),
                    ("extension.wasm", &wasm, b'0'),
                ],
                |_, _| {},
            ),
        ),
        (
            "uid",
            crafted(
                &[("extension.toml", m, b'0'), ("extension.wasm", &wasm, b'0')],
                |i, h| {
                    if i == 1 {
                        h.set_uid(1000);
                    }
                },
            ),
        ),
    ];
    for (name, bytes) in cases {
        let p = s.t.path().join(format!("{name}.wext"));
        fs::write(&p, &bytes).unwrap();
        fs::copy(sig_of(&s.bundle), sig_of(&p)).unwrap();
        let o = verify(&p, &s.trust);
        assert_eq!(o.status.code(), Some(1), "{name} accepted by verify");
        assert!(stderr(&o).starts_with("error: "), "{name}: {}", stderr(&o));
        let o = warden(&[&"inspect", &p]);
        assert_eq!(o.status.code(), Some(1), "{name} accepted by inspect");
        assert!(!stderr(&o).contains("panicked"));
    }
    // A huge signature file is refused without reading it.
    let big = s.t.path().join("big.wext");
    fs::copy(&s.bundle, &big).unwrap();
    let f = fs::File::create(sig_of(&big)).unwrap();
    f.set_len(4 << 30).unwrap();
    fails(&verify(&big, &s.trust), "signature");
    // A huge bundle likewise.
    let huge = s.t.path().join("huge.wext");
    fs::File::create(&huge).unwrap().set_len(300 << 20).unwrap();
    fs::copy(sig_of(&s.bundle), sig_of(&huge)).unwrap();
    fails(&verify(&huge, &s.trust), "huge.wext");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        vec!["frobnicate"],
        vec!["pack"],
        vec!["sign", "x.wext"],
        vec!["verify", "x.wext"],
        vec!["keygen", "--publisher", "acme"],
        vec!["inspect"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(&args)
            .env_remove("WARDEN_TRUST_BUNDLE")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    for sub in ["keygen", "pack", "sign", "verify", "inspect"] {
        let o = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{sub} --help");
        assert!(stdout(&o).contains("Usage: warden"), "{sub}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn missing_files_give_clear_errors() {
    let t = TempDir::new().unwrap();
    let nothing = t.path().join("nothing.wext");
    fails(&warden(&[&"inspect", &nothing]), "nothing.wext");
    fails(
        &warden(&[&"verify", &nothing, &"--trust", &nothing]),
        "nothing.wext",
    );
    let s = signed();
    let bad_trust = s.t.path().join("bad.toml");
    fs::write(
        &bad_trust,
        "[[publisher]]\nname = \"acme\"\nkeys = [\"not a key\"]\n",
    )
    .unwrap();
    fails(&verify(&s.bundle, &bad_trust), "publisher[0].keys[0]");
}

#[test]
fn untrusted_text_in_errors_is_escaped_on_the_terminal() {
    let t = TempDir::new().unwrap();
    // A quoted TOML key may hold any character: ESC, newlines, bidi overrides.
    let manifest = format!("{MANIFEST}\"x\\u001b[2J\\nerror: forged\\u202e\" = 1\n");
    let dir = ext_dir(t.path(), "ext", &manifest);
    let o = warden(&[&"pack", &dir, &"--out", &t.path().join("o.wext")]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown key"), "{err}");
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{202e}'),
        "raw control reached the terminal: {err:?}"
    );
    assert!(
        !err.lines().any(|l| l.starts_with("error: forged")),
        "a line was forged: {err}"
    );
}

/// examples/echo packed and signed by a new publisher key: (temp dir, bundle, trust, data dir).
pub(crate) fn signed_echo() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let t = tempfile::TempDir::new().unwrap();
    let p = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&p.pem], &[])],
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/echo");
    assert!(
        src.join("extension.wasm").exists(),
        "run scripts/build-examples.sh first"
    );
    let bundle = t.path().join("echo.wext");
    pack(&src, &bundle);
    sign(&bundle, &p.key);
    let data = t.path().join("data");
    (t, bundle, trust, data)
}

/// The cgroup folders a `warden` of process `pid` made for its sandboxes (`warden-PID-*`,
/// under its own cgroup in each hierarchy) that are still there.
pub(crate) fn cgroup_folders_of(pid: u32) -> Vec<PathBuf> {
    folders_named(Path::new("/sys/fs/cgroup"), &format!("warden-{pid}-"), 8)
}

/// Folders under `dir` (at most `depth` below it) whose names start with `prefix`.
fn folders_named(dir: &Path, prefix: &str, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if !t.is_dir() {
            continue;
        }
        if e.file_name().to_string_lossy().starts_with(prefix) {
            found.push(e.path());
        } else if depth > 0 {
            found.extend(folders_named(&e.path(), prefix, depth - 1));
        }
    }
    found
}

/// Sends `signal` (as `kill` names it: `-TERM`, `-HUP`) to process `pid`.
pub(crate) fn signal(pid: u32, signal: &str) {
    let pid = pid.to_string();
    assert!(
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// `warden run BUNDLE --trust TRUST --data DATA ARGS`, started and left running.
pub(crate) fn spawn_run(
    bundle: &Path,
    trust: &Path,
    data: &Path,
    args: &[&str],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("run")
        .arg(bundle)
        .arg("--trust")
        .arg(trust)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("WARDEN_TRUST_BUNDLE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
