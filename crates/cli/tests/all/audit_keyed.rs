//! Issue 9, F6: records cut from the end of the audit log with `audit.head` rewritten to match
//! passed `warden audit --verify`. The head now carries a MAC under the audit key, and
//! checkpoints exported out of the data dir catch even a rollback to a genuine older head.

use std::fs;
use std::path::Path;

use crate::foundation::{fails, ok, signed_echo, warden};

fn lines(data: &Path) -> Vec<String> {
    fs::read_to_string(data.join("audit/audit.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Keeps the first `n` records and writes a head naming the last one, without a MAC (what the
/// head's documented format lets anyone write).
fn cut_to(data: &Path, n: usize) {
    let mut ls = lines(data);
    ls.truncate(n);
    let v: serde_json::Value = serde_json::from_str(ls.last().unwrap()).unwrap();
    fs::write(data.join("audit/audit.jsonl"), ls.join("\n") + "\n").unwrap();
    let json = format!(
        "{{\"seq\":{n},\"hash\":\"{}\"}}",
        v["hash"].as_str().unwrap()
    );
    fs::write(
        data.join("audit/audit.head"),
        format!("{json}{}\n", " ".repeat(255 - json.len())),
    )
    .unwrap();
}

#[test]
fn a_cut_log_with_a_rewritten_head_fails_verification_and_stops_the_host() {
    let (t, bundle, trust, data) = signed_echo();
    let run = || {
        warden(&[
            &"run", &bundle, &"--trust", &trust, &"--data", &data, &"--call", &"echo", &"--input",
            &"{}",
        ])
    };
    for _ in 0..3 {
        ok(&run());
    }
    // The key was made on first use, private, outside DATA/audit.
    let key = data.join("audit.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = ok(&warden(&[&"audit", &"--data", &data, &"--verify"]));
    assert!(out.contains("head: MAC checked"), "{out}");

    // A checkpoint exported out of the data dir.
    let cps = t.path().join("elsewhere/checkpoints.jsonl");
    fs::create_dir_all(cps.parent().unwrap()).unwrap();
    let n = lines(&data).len();
    let out = ok(&warden(&[
        &"audit",
        &"--data",
        &data,
        &"--checkpoint",
        &cps,
    ]));
    assert!(out.contains(&format!("checkpoint: record {n} ")), "{out}");
    let out = ok(&warden(&[
        &"audit",
        &"--data",
        &data,
        &"--verify",
        &"--checkpoints",
        &cps,
    ]));
    assert!(
        out.contains("checkpoints: 1 hold (1 with their MAC checked)"),
        "{out}"
    );

    // The attack: the last two records dropped, the head rewritten to match.
    cut_to(&data, n - 2);
    fails(
        &warden(&[&"audit", &"--data", &data, &"--verify"]),
        "failed verification",
    );
    let o = warden(&[&"audit", &"--data", &data, &"--verify"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no MAC"));
    // The host refuses to append to (and so launder) the cut log: nothing is written.
    let before = fs::read(data.join("audit/audit.jsonl")).unwrap();
    let o = run();
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no MAC"));
    assert_eq!(fs::read(data.join("audit/audit.jsonl")).unwrap(), before);
    // Without the key file the MAC cannot be checked, and verify says so...
    fs::rename(&key, t.path().join("audit.key.away")).unwrap();
    let out = ok(&warden(&[&"audit", &"--data", &data, &"--verify"]));
    assert!(out.contains("head: no MAC"), "{out}");
    // ...but the checkpoint still catches the cut.
    fails(
        &warden(&[
            &"audit",
            &"--data",
            &data,
            &"--verify",
            &"--checkpoints",
            &cps,
        ]),
        "records were removed from the end",
    );
}

#[test]
fn the_audit_key_can_live_outside_the_data_dir() {
    let (t, bundle, trust, data) = signed_echo();
    let key = t.path().join("keys/audit.key");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    ok(&warden(&[
        &"run",
        &bundle,
        &"--trust",
        &trust,
        &"--data",
        &data,
        &"--audit-key",
        &key,
        &"--call",
        &"echo",
        &"--input",
        &"{}",
    ]));
    assert!(key.exists() && !data.join("audit.key").exists());
    let out = ok(&warden(&[
        &"audit",
        &"--data",
        &data,
        &"--verify",
        &"--audit-key",
        &key,
    ]));
    assert!(out.contains("head: MAC checked"), "{out}");
    // Without it, verify cannot check the MAC and says so.
    let out = ok(&warden(&[&"audit", &"--data", &data, &"--verify"]));
    assert!(out.contains("NOT checked"), "{out}");
    // A run with another key refuses the log rather than re-keying it.
    let other = t.path().join("keys/other.key");
    let o = warden(&[
        &"run",
        &bundle,
        &"--trust",
        &trust,
        &"--data",
        &data,
        &"--audit-key",
        &other,
        &"--call",
        &"echo",
        &"--input",
        &"{}",
    ]);
    assert_ne!(o.status.code(), Some(0));
}
