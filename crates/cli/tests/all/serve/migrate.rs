//! `warden migrate`: a data dir made by the embedded default, copied to PostgreSQL + S3, serves
//! the same answers from a runner on the copy; a copy never merges into a database with data,
//! and a damaged source is refused with nothing written. Needs the shared storage of
//! `scripts/shared-storage.sh` (`WARDEN_TEST_PG_URL`, `WARDEN_TEST_S3`); it fails without it
//! under CI and says it was skipped elsewhere.

use std::path::PathBuf;
use std::process::Command;

use super::*;
use crate::shared::SharedStorage;

/// The embedded setup and an empty shared storage to copy it to, with its config file; `None`
/// (skipped) on the shared-backend run, whose source would not be embedded, or without a
/// PostgreSQL to copy to outside CI.
fn source_and_target() -> Option<(Setup, SharedStorage, PathBuf)> {
    if crate::shared::on() {
        println!(
            "skipped: the source of a migration is the embedded default (run without WARDEN_TEST_BACKEND=shared)"
        );
        return None;
    }
    if std::env::var_os("WARDEN_TEST_PG_URL").is_none() && std::env::var_os("CI").is_none() {
        println!("skipped: no PostgreSQL (eval \"$(bash scripts/shared-storage.sh start)\")");
        return None;
    }
    let st = setup();
    let target = SharedStorage::new(st.t.path());
    let fleet = st.t.path().join("fleet.toml");
    std::fs::write(&fleet, &target.section).unwrap();
    Some((st, target, fleet))
}

fn migrate(st: &Setup, fleet: &Path) -> std::process::Output {
    migrate_with(st, fleet, &[])
}

fn migrate_with(
    st: &Setup,
    fleet: &Path,
    more: &[&dyn AsRef<std::ffi::OsStr>],
) -> std::process::Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"migrate", &"--data", &st.data, &"--config", &fleet];
    args.extend_from_slice(more);
    warden(&args)
}

/// `warden ARGS --data DIR --config FLEET` on the copy.
fn on_copy(st: &Setup, fleet: &Path, args: &[&str]) -> String {
    let dir = st.t.path().join("cli-on-copy");
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = Vec::new();
    for a in args {
        all.push(a);
    }
    all.push(&"--data");
    all.push(&dir);
    all.push(&"--config");
    all.push(&fleet);
    ok(&warden(&all))
}

/// What the test's extensions answer: hello for alpha and beta, alpha's counter `hits`
/// (read, then incremented once more), and the secrets hostile-secrets reads for alpha.
fn answers(s: &Server, alpha: &str, beta: &str) -> Vec<String> {
    let hello = |key| {
        let r = get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(key));
        format!("{} {}", r.status, r.body)
    };
    let kv = |m: &str| {
        let r = send(
            "POST",
            &format!("{}/api/ext/warden-examples.kv-counter/{m}", s.base),
            Some(alpha),
            b"hits",
        );
        format!("{} {}", r.status, r.body)
    };
    let r = send(
        "POST",
        &format!("{}/v1/execute", s.base),
        Some(RUNNER),
        br#"{"tenant":"alpha","extension":"warden.hostile-secrets","method":"get-all","input":null}"#,
    );
    let text = unbase64(r.json()["output_base64"].as_str().unwrap_or_default());
    let secrets = format!("{} {}", r.status, String::from_utf8_lossy(&text));
    vec![
        hello(alpha),
        hello(beta),
        kv("get"),
        kv("increment"),
        secrets,
    ]
}

fn unbase64(text: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ABC.iter().position(|x| *x == c).unwrap() as u32;
        (acc, bits) = ((acc << 6) | v, bits + 6);
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// `warden migrate` failed (exit 1) with `needle` in its error.
fn refused(o: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: ") && err.contains(needle),
        "{needle:?} not in:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_migrated_data_dir_serves_the_same_answers_from_postgresql_and_s3() {
    let Some((st, _target, fleet)) = source_and_target() else {
        return;
    };
    // The embedded default, as a user would have filled it.
    let s = st.serve("");
    let mut hashes = Vec::new();
    for (dir, name) in [
        (example("hello"), "hello"),
        (example("kv-counter"), "kv"),
        (example("hostile-secrets"), "secrets"),
    ] {
        let (b, sig) = st.bundle(&dir, name);
        hashes.push(publish(&s, &b, &sig));
    }
    let (alpha, beta) = (tenant(&s, "alpha"), tenant(&s, "beta"));
    for (t, id, hash, grant) in [
        ("alpha", "warden.hello", &hashes[0], "none"),
        ("beta", "warden.hello", &hashes[0], "none"),
        ("alpha", "warden-examples.kv-counter", &hashes[1], "kv"),
        (
            "alpha",
            "warden.hostile-secrets",
            &hashes[2],
            "secret:API_TOKEN",
        ),
    ] {
        let r = install(&s, t, id, hash, grant);
        assert_eq!(r.status, 200, "{id} for {t}: {}", r.body);
    }
    let r = send(
        "PUT",
        &format!(
            "{}/v1/admin/tenants/alpha/installs/warden.hostile-secrets/secrets/API_TOKEN",
            s.base
        ),
        Some(ADMIN),
        br#"{"value":"tok-migrated-0123456789"}"#,
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    for _ in 0..3 {
        let r = send(
            "POST",
            &format!("{}/api/ext/warden-examples.kv-counter/increment", s.base),
            Some(&alpha),
            b"hits",
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let before = answers(&s, &alpha, &beta);
    assert!(
        before[0].starts_with("200 ") && before[0].contains("Hello"),
        "{before:?}"
    );
    assert_eq!(before[2], "200 3");
    assert_eq!(before[3], "200 4");
    // The extension's own answer holds the value it was granted (the host redacts what it
    // reports, not what the extension returns): the copy must open it under the fleet's key.
    assert_eq!(before[4], "200 API_TOKEN=tok-migrated-0123456789");
    drop(s);
    let source_lines = ok(&st.cli(&[&"audit", &"--json"]));
    let checkpoints = st.t.path().join("checkpoints.jsonl");
    ok(&st.cli(&[&"audit", &"--checkpoint", &checkpoints]));

    // The copy, its audit head MACed under the data dir's own key (the fleet took it over).
    std::fs::copy(
        st.data.join("audit.key"),
        st.t.path().join("fleet-audit.key"),
    )
    .unwrap();
    let out = ok(&migrate(&st, &fleet));
    assert!(
        out.contains("checkpoints taken on the data dir hold"),
        "{out}"
    );
    for line in [
        "registry_tenants: 2 rows in the source, 2 in the copy",
        "registry_installs: 4 rows in the source, 4 in the copy",
        "registry_published: 3 rows in the source, 3 in the copy",
        "secret_values: 1 rows in the source, 1 in the copy",
        "kv_entries: 1 rows in the source, 1 in the copy",
        "blobs: 3 (",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    let records = source_lines.lines().count();
    assert!(out.contains(&format!("audit: {records} records")), "{out}");

    // The check alone finds the copy whole.
    let checked = ok(&migrate_with(&st, &fleet, &[&"--check"]));
    assert!(checked.contains("holds what"), "{checked}");

    // A runner on the copy (a new data dir: nothing local) answers the same, with the same
    // API keys; the counter goes on from where it was.
    std::fs::write(st.config_file(), std::fs::read(&fleet).unwrap()).unwrap();
    let r = st.runner(&st.t.path().join("runner-on-copy"), None);
    let after = answers(&r, &alpha, &beta);
    assert_eq!(after[0..2], before[0..2]);
    assert_eq!(after[2], "200 4");
    assert_eq!(after[3], "200 5");
    assert_eq!(after[4], before[4]);
    drop(r);

    // The audit chain goes on from the source's: its records verbatim first.
    on_copy(&st, &fleet, &["audit", "--verify"]);
    // A checkpoint taken on the source holds on the copy.
    let cp = checkpoints.to_str().unwrap();
    on_copy(&st, &fleet, &["audit", "--verify", "--checkpoints", cp]);
    let copied = on_copy(&st, &fleet, &["audit", "--json"]);
    assert!(
        copied.starts_with(&source_lines),
        "the copy's log does not start with the source's"
    );
    assert!(copied.lines().count() > records);

    // The copy has moved on: the check says where it differs.
    refused(
        &migrate_with(&st, &fleet, &[&"--check"]),
        "key-value data differs",
    );
    // A second copy into the same database is refused, and nothing changes.
    refused(&migrate(&st, &fleet), "is not empty");
    assert_eq!(on_copy(&st, &fleet, &["audit", "--json"]), copied);
}

#[test]
fn a_damaged_source_is_refused_and_nothing_is_written() {
    let Some((st, _target, fleet)) = source_and_target() else {
        return;
    };
    let s = st.serve("");
    let (b, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(&s, &b, &sig);
    tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    drop(s);

    // A bundle whose bytes were changed on disk.
    let hex = hash.trim_start_matches("sha256:");
    let blob = st.data.join("blobs/sha256").join(hex);
    let genuine = std::fs::read(&blob).unwrap();
    let mut bad = genuine.clone();
    bad[genuine.len() / 2] ^= 1;
    std::fs::write(&blob, &bad).unwrap();
    refused(&migrate(&st, &fleet), "damaged");
    std::fs::write(&blob, &genuine).unwrap();

    // A record of the audit log edited (its chain breaks there).
    let log = st.data.join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"alpha\"", "\"alphb\"", 1)).unwrap();
    refused(&migrate(&st, &fleet), "audit log");
    assert_eq!(
        on_copy(&st, &fleet, &["installs"]).trim(),
        "",
        "installs were written"
    );
    std::fs::write(&log, &text).unwrap();

    // Nothing was written by the refused copies: the genuine source copies whole (under a new
    // audit key, which checkpoints taken before do not know).
    let out = ok(&migrate(&st, &fleet));
    assert!(out.contains("take a new one"), "{out}");
    assert!(
        out.contains("registry_installs: 1 rows in the source, 1 in the copy"),
        "{out}"
    );
}

/// What a red team found copied as genuine: a source without its audit key or without its
/// audit log, a source a runner still serves, a log cut back to an older genuine state that a
/// checkpoint knows of. Each is refused, and the target stays empty (the last copy succeeds).
#[test]
fn a_source_that_cannot_be_trusted_whole_is_refused() {
    let Some((st, _target, fleet)) = source_and_target() else {
        return;
    };
    let s = st.serve("");
    let (b, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(&s, &b, &sig);
    let key = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    // An older genuine state of the whole data dir, then more history and a checkpoint of it.
    let older = st.t.path().join("older");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&st.data)
        .arg(&older)
        .status()
        .unwrap();
    assert!(cp.success());
    for _ in 0..3 {
        assert_eq!(
            get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(&key)).status,
            200
        );
    }

    // A runner still serving the data dir.
    refused(&migrate(&st, &fleet), "is in use by process");
    drop(s);
    let checkpoints = st.t.path().join("checkpoints.jsonl");
    ok(&st.cli(&[&"audit", &"--checkpoint", &checkpoints]));

    // The older state, with the checkpoint of the newer one: cut back, refused.
    let out = warden(&[
        &"migrate",
        &"--data",
        &older,
        &"--config",
        &fleet,
        &"--audit-key",
        &st.data.join("audit.key"),
        &"--checkpoints",
        &checkpoints,
    ]);
    refused(&out, "does not hold the checkpoints");

    // Without the audit key (kept elsewhere, not given): refused, not copied unchecked.
    let key_file = st.data.join("audit.key");
    let moved = st.t.path().join("audit.key.elsewhere");
    std::fs::rename(&key_file, &moved).unwrap();
    refused(&migrate(&st, &fleet), "reading the audit key");
    std::fs::rename(&moved, &key_file).unwrap();

    // Without its audit log: its history would be lost.
    let audit = st.data.join("audit");
    let aside = st.t.path().join("audit-aside");
    std::fs::rename(&audit, &aside).unwrap();
    refused(&migrate(&st, &fleet), "has no audit log");
    std::fs::rename(&aside, &audit).unwrap();

    // The genuine, unused source with its checkpoints: copied whole.
    let out = ok(&migrate_with(
        &st,
        &fleet,
        &[&"--checkpoints", &checkpoints],
    ));
    assert!(out.contains("held its 1 checkpoints"), "{out}");
}
