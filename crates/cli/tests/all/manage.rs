//! `warden tenant create`, `install`, `installs`, `uninstall` on a data dir (issue 10, the
//! offline CLI of SPEC section 4): keys shown once and stored hashed, installs verified and
//! audited, rollbacks and silent permission growth refused.

use std::fs;
use std::path::{Path, PathBuf};

use crate::foundation::{fails, keygen, ok, pack, sign, stderr, stdout, trust_file, warden};

struct Setup {
    t: tempfile::TempDir,
    trust: PathBuf,
    key: PathBuf,
    data: PathBuf,
}

fn setup() -> Setup {
    let t = tempfile::TempDir::new().unwrap();
    let p = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&p.pem], &[])],
    );
    let data = t.path().join("data");
    Setup {
        trust,
        key: p.key,
        data,
        t,
    }
}

/// examples/echo at `version`, with `extra` appended to its manifest, packed and signed.
fn echo(s: &Setup, version: &str, extra: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/echo");
    let dir = s.t.path().join(format!("echo-{version}"));
    fs::create_dir_all(&dir).unwrap();
    fs::copy(src.join("extension.wasm"), dir.join("extension.wasm")).unwrap();
    let manifest = fs::read_to_string(src.join("extension.toml"))
        .unwrap()
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
    fs::write(dir.join("extension.toml"), format!("{manifest}{extra}")).unwrap();
    let bundle = s.t.path().join(format!("echo-{version}.wext"));
    pack(&dir, &bundle);
    sign(&bundle, &s.key);
    bundle
}

fn cli(s: &Setup, args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = args.to_vec();
    all.push(&"--data");
    all.push(&s.data);
    warden(&all)
}

fn install(s: &Setup, bundle: &Path, tenant: &str, more: &[&str]) -> std::process::Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"install",
        &bundle,
        &"--trust",
        &s.trust,
        &"--tenant",
        &tenant,
    ];
    for m in more {
        args.push(m);
    }
    cli(s, &args)
}

fn audit_lines(s: &Setup) -> Vec<String> {
    ok(&warden(&[&"audit", &"--data", &s.data, &"--json"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn tenants_get_a_key_once_and_only_its_hash_is_kept() {
    let s = setup();
    let out = ok(&cli(&s, &[&"tenant", &"create", &"acme"]));
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("api key (shown once, keep it secret): "))
        .unwrap()
        .to_owned();
    assert!(key.starts_with("wdn_") && key.len() == 68, "{out}");
    // Nowhere on disk in clear.
    for entry in walk(&s.data) {
        let bytes = fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "{} holds the key",
            entry.display()
        );
    }
    fails(&cli(&s, &[&"tenant", &"create", &"acme"]), "already exists");
    // A name that would be a path, or is not a label: a usage error, nothing created.
    for bad in ["../etc", "Acme", "a/b", ""] {
        let o = cli(&s, &[&"tenant", &"create", &bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn install_upgrade_rollback_and_uninstall_follow_the_rules_and_are_audited() {
    let s = setup();
    ok(&cli(&s, &[&"tenant", &"create", &"acme"]));
    ok(&cli(&s, &[&"tenant", &"create", &"globex"]));
    let v1 = echo(&s, "1.0.0", "");
    let v2 = echo(&s, "1.1.0", "\n[permissions]\nkv = true\n");
    let v3 = echo(&s, "1.2.0", "\n[permissions]\nkv = true\n");

    // First install: verified, stored by content hash, recorded.
    let out = ok(&install(&s, &v1, "acme", &[]));
    assert!(
        out.contains("warden.echo 1.0.0 installed for tenant acme"),
        "{out}"
    );
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("content hash: sha256:"))
        .unwrap()
        .to_owned();
    assert!(s.data.join("blobs/sha256").join(&hash).is_file());
    assert!(out.contains("grant: none"), "{out}");

    // Not a tenant: refused, audited, nothing installed for it.
    fails(&install(&s, &v1, "ghost", &[]), "no tenant ghost");

    // An upgrade that asks for more (kv) without a new grant: refused until approved.
    fails(
        &install(&s, &v2, "acme", &[]),
        "requests more than was approved",
    );
    let out = ok(&install(&s, &v2, "acme", &["--grant", "kv"]));
    assert!(out.contains("upgraded from 1.0.0"), "{out}");
    // The next one asks for nothing new: the approval and grant carry over.
    let out = ok(&install(&s, &v3, "acme", &[]));
    assert!(
        out.contains("upgraded from 1.1.0") && out.contains("grant: kv"),
        "{out}"
    );

    // A rollback: refused, then allowed with --force.
    fails(
        &install(&s, &v1, "acme", &[]),
        "lower than the installed 1.2.0",
    );
    let out = ok(&install(&s, &v1, "acme", &["--force", "--grant", "none"]));
    assert!(out.contains("downgraded from 1.2.0 (forced)"), "{out}");

    // A tampered bundle is refused before anything is stored.
    let tampered = s.t.path().join("tampered.wext");
    let mut bytes = fs::read(&v3).unwrap();
    let i = bytes.len() - 600;
    bytes[i] ^= 1;
    fs::write(&tampered, &bytes).unwrap();
    fs::copy(
        format!("{}.sig", v3.display()),
        format!("{}.sig", tampered.display()),
    )
    .unwrap();
    fails(&install(&s, &tampered, "globex", &[]), "tampered.wext");

    // Each tenant's installs are its own.
    ok(&install(&s, &v3, "globex", &["--grant", "kv"]));
    let all = ok(&cli(&s, &[&"installs"]));
    assert_eq!(all.lines().count(), 2, "{all}");
    let acme = ok(&cli(&s, &[&"installs", &"--tenant", &"acme"]));
    assert!(
        acme.starts_with("acme warden.echo 1.0.0 sha256:") && acme.lines().count() == 1,
        "{acme}"
    );
    // A listing reads the registry alone: a process stopped while holding the audit log's lock
    // (here, this test holding it) neither stops it nor is waited for (it failed with exit 75
    // after 5 s when it opened the whole host).
    let head = fs::File::open(s.data.join("audit/audit.head")).unwrap();
    head.lock().unwrap();
    assert_eq!(ok(&cli(&s, &[&"installs"])), all);
    head.unlock().unwrap();

    ok(&cli(
        &s,
        &[&"uninstall", &"warden.echo", &"--tenant", &"acme"],
    ));
    fails(
        &cli(&s, &[&"uninstall", &"warden.echo", &"--tenant", &"acme"]),
        "is not installed",
    );
    assert_eq!(ok(&cli(&s, &[&"installs", &"--tenant", &"acme"])), "");

    // The trail: publishes, installs, upgrades, refusals, the uninstall; and it verifies.
    let lines = audit_lines(&s);
    let count = |event: &str, outcome: &str| {
        lines
            .iter()
            .filter(|l| {
                l.contains(&format!("\"event\":\"{event}\""))
                    && l.contains(&format!("\"outcome\":\"{outcome}\""))
            })
            .count()
    };
    assert_eq!(count("install", "ok"), 2, "{lines:#?}"); // acme 1.0.0, globex 1.2.0
    assert_eq!(count("upgrade", "ok"), 3); // 1.1.0, 1.2.0, the forced 1.0.0
    assert_eq!(count("install", "denied"), 3); // ghost, more permissions, rollback
    assert_eq!(count("verification-failure", "denied"), 1);
    assert_eq!(count("uninstall", "ok"), 1);
    assert_eq!(count("uninstall", "invalid"), 1);
    assert!(count("publish", "ok") >= 4);
    assert!(stdout(&warden(&[&"audit", &"--data", &s.data, &"--verify"])).contains("audit log ok"));
}

/// An install the operator's policy or the install rules refuse publishes nothing: no blob,
/// no `publish` record, and the bundle is not in the registry to install later (red team: a
/// refused `warden install` still published its bundle).
#[test]
fn a_refused_install_publishes_nothing() {
    let s = setup();
    ok(&cli(&s, &[&"tenant", &"create", &"acme"]));
    // The policy allows no key-value store; the bundle asks for it and the grant names it.
    let policy = s.t.path().join("policy.toml");
    fs::write(&policy, "[policy]\ncapabilities = [\"network\"]\n").unwrap();
    let kv = echo(&s, "1.0.0", "\n[permissions]\nkv = true\n");
    let o = install(
        &s,
        &kv,
        "acme",
        &["--grant", "kv", "--config", policy.to_str().unwrap()],
    );
    fails(&o, "kv");
    // A lower version than the one installed, not forced: refused too.
    let v2 = echo(&s, "2.0.0", "");
    ok(&install(&s, &v2, "acme", &[]));
    let v1 = echo(&s, "1.5.0", "");
    fails(&install(&s, &v1, "acme", &[]), "lower than the installed");
    // Only 2.0.0 was stored and published.
    let blobs: Vec<_> = fs::read_dir(s.data.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let lines = audit_lines(&s);
    let published: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"publish\""))
        .collect();
    assert_eq!(published.len(), 1, "{published:#?}");
    assert!(
        published[0].contains("\"version\":\"2.0.0\""),
        "{published:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"event\":\"install\"") && l.contains("\"outcome\":\"denied\""))
            .count(),
        2,
        "{lines:#?}"
    );
}

/// Every command that keeps state reads `[storage]` from `--config`. This build has no shared
/// storage, and a command pointed at it must say so, never fall back to `--data` (the
/// operator's fleet would silently split). A bad section is refused naming the key; neither
/// touches the data dir or shows a password.
#[test]
fn every_stateful_command_refuses_storage_it_cannot_reach_and_touches_nothing() {
    let s = setup();
    let shared = s.t.path().join("shared.toml");
    fs::write(
        &shared,
        "[storage]\nurl = \"postgres://warden:hunter2@127.0.0.1:1/warden\"\n\
         blobs = \"s3://warden-blobs/prod\"\nsecret_key_file = \"/etc/warden/secret.key\"\n\
         audit_key_file = \"/etc/warden/audit.key\"\n",
    )
    .unwrap();
    let bad = s.t.path().join("bad.toml");
    fs::write(&bad, "[storage]\nblobs = \"s3://warden-blobs/prod\"\n").unwrap();
    let bundle = echo(&s, "1.0.0", "");
    let config = shared.to_str().unwrap();
    let commands: Vec<Vec<&dyn AsRef<std::ffi::OsStr>>> = vec![
        vec![&"tenant", &"create", &"acme"],
        vec![
            &"install",
            &bundle,
            &"--tenant",
            &"acme",
            &"--trust",
            &s.trust,
        ],
        vec![&"uninstall", &"warden.echo", &"--tenant", &"acme"],
        vec![&"installs"],
        vec![&"audit"],
        vec![&"audit", &"--verify"],
        vec![&"run", &bundle, &"--trust", &s.trust, &"--call", &"echo"],
        // A bundle that verifies needs no storage; the config is still read.
        vec![&"verify", &bundle, &"--trust", &s.trust],
    ];
    for (i, args) in commands.iter().enumerate() {
        let verify = i == commands.len() - 1;
        for (file, want) in [
            (
                config,
                "connecting to postgres://warden:***@127.0.0.1:1/warden",
            ),
            (bad.to_str().unwrap(), "only with `url`"),
        ] {
            if verify && file == config {
                continue;
            }
            let mut all = args.clone();
            all.extend([&"--config" as &dyn AsRef<std::ffi::OsStr>, &file]);
            let o = cli(&s, &all);
            let err = stderr(&o);
            fails(&o, want);
            assert!(!err.contains("hunter2"), "the password was shown: {err}");
            assert!(!s.data.exists(), "{:?} touched the data dir", all.len());
        }
    }
}
