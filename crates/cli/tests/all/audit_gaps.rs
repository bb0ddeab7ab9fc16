//! Issue 9, finding 5: verification failures of `warden verify` and failed host starts left no
//! audit record, although every verification failure is meant to be recorded.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::foundation::{fails, ok, sig_of, signed, stdout, warden};

/// The stored records of `data`'s audit log, as JSON lines.
fn records(data: &Path) -> Vec<String> {
    let out = ok(&warden(&[&"audit", &"--data", &data, &"--json"]));
    out.lines().map(str::to_string).collect()
}

#[test]
fn a_failed_verify_is_recorded_in_the_data_dirs_audit_log() {
    let s = signed();
    let data = s.t.path().join("data");
    // Tampered: one byte of the bundle flipped.
    let tampered = s.t.path().join("tampered.wext");
    let mut bytes = fs::read(&s.bundle).unwrap();
    let last = bytes.len() - 600;
    bytes[last] ^= 1;
    fs::write(&tampered, &bytes).unwrap();
    fs::copy(sig_of(&s.bundle), sig_of(&tampered)).unwrap();
    let o = warden(&[&"verify", &tampered, &"--trust", &s.trust, &"--data", &data]);
    fails(&o, "tampered.wext");
    let recs = records(&data);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert!(
        recs[0].contains(r#""event":"verification-failure""#)
            && recs[0].contains("tampered.wext")
            && recs[0].contains(r#""outcome":"denied""#),
        "{}",
        recs[0]
    );
    ok(&warden(&[&"audit", &"--data", &data, &"--verify"]));
    // A verify that succeeds records nothing.
    ok(&warden(&[
        &"verify", &s.bundle, &"--trust", &s.trust, &"--data", &data,
    ]));
    assert_eq!(records(&data).len(), 1);
}

#[test]
fn verify_uses_the_default_data_dir_only_if_it_exists() {
    let s = signed();
    let tampered = s.t.path().join("tampered.wext");
    fs::write(&tampered, b"not a bundle").unwrap();
    fs::copy(sig_of(&s.bundle), sig_of(&tampered)).unwrap();
    let verify_in = |cwd: &Path| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .current_dir(cwd)
            .args(["verify".as_ref(), tampered.as_os_str(), "--trust".as_ref()])
            .arg(&s.trust)
            .env_remove("WARDEN_TRUST_BUNDLE")
            .output()
            .unwrap()
    };
    // No ./warden-data: nothing is created.
    let empty = s.t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(verify_in(&empty).status.code(), Some(1));
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    // An existing ./warden-data: the failure is recorded there.
    let used = s.t.path().join("used");
    fs::create_dir(&used).unwrap();
    let audit_dir = used.join("warden-data/audit");
    fs::create_dir_all(&audit_dir).unwrap();
    fs::set_permissions(&audit_dir, fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(verify_in(&used).status.code(), Some(1));
    let recs = records(&used.join("warden-data"));
    assert!(
        recs.iter().any(|r| r.contains("verification-failure")),
        "{recs:?}"
    );
}

#[test]
fn a_host_that_cannot_start_records_why() {
    let s = signed();
    let data = s.t.path().join("data");
    // A first run creates the data dir (and its secret key) ...
    let o = warden(&[
        &"run", &s.bundle, &"--trust", &s.trust, &"--data", &data, &"--call", &"x",
    ]);
    let _ = stdout(&o);
    let key = data.join("secret.key");
    assert!(key.exists());
    // ... then someone makes the key readable by everybody: the next start must refuse.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let o = warden(&[
        &"run", &s.bundle, &"--trust", &s.trust, &"--data", &data, &"--call", &"x",
    ]);
    fails(&o, "secret");
    let recs = records(&data);
    let start = recs
        .iter()
        .find(|r| r.contains(r#""event":"start""#))
        .unwrap_or_else(|| panic!("no start record: {recs:?}"));
    assert!(
        start.contains(r#""outcome":"error""#) && start.contains("secret.key"),
        "{start}"
    );
}
