//! F6: a disk that filled (or a crash) in the middle of an append leaves a torn last line in
//! `audit.jsonl`. The next `warden run` sets it aside and records that, instead of refusing to
//! start forever; `warden audit --verify` passes again. Any other damage still stops the run.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use crate::foundation::{fails, ok, signed_echo, stderr, warden};

fn run(bundle: &Path, trust: &Path, data: &Path) -> std::process::Output {
    warden(&[
        &"run", &bundle, &"--trust", &trust, &"--data", &data, &"--call", &"echo", &"--input",
        &"{}",
    ])
}

fn audit(data: &Path, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"audit", &"--data", &data];
    for a in args {
        all.push(a);
    }
    warden(&all)
}

/// The start of the record that would come next, cut after `keep` bytes.
fn torn_next(data: &Path, keep: usize) -> String {
    let head = fs::read_to_string(data.join("audit/audit.head")).unwrap();
    let head: serde_json::Value = serde_json::from_str(head.trim_end()).unwrap();
    let next = format!(
        "{{\"seq\":{},\"prev\":\"{}\",\"record\":{{\"time\":",
        head["seq"].as_u64().unwrap() + 1,
        head["hash"].as_str().unwrap()
    );
    next[..keep.min(next.len())].to_owned()
}

fn append(path: &Path, bytes: &str) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes.as_bytes()).unwrap();
}

#[test]
fn a_torn_tail_is_set_aside_by_the_next_run_and_recorded() {
    let (_t, bundle, trust, data) = signed_echo();
    ok(&run(&bundle, &trust, &data));
    let log = data.join("audit/audit.jsonl");
    let torn = torn_next(&data, 60);
    append(&log, &torn);
    // Before a host opens it, the log is reported torn, as before.
    fails(&audit(&data, &["--verify"]), "line 3: incomplete");

    // The next run starts, and everything verifies.
    ok(&run(&bundle, &trust, &data));
    let out = ok(&audit(&data, &["--verify"]));
    assert!(out.starts_with("audit log ok: 5 records"), "{out}");
    let listing = ok(&audit(&data, &[]));
    let recovery = listing.lines().nth(2).unwrap();
    assert!(recovery.contains("#3 recovery error"), "{listing}");
    assert!(
        recovery.contains(&format!("a torn tail of {} bytes", torn.len())),
        "{recovery}"
    );
    let kept = fs::read_to_string(data.join("audit/audit.torn")).unwrap();
    let hex: String = torn.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(kept.contains(&hex), "{kept}");
}

#[test]
fn a_torn_tail_after_an_edit_still_stops_the_run() {
    let (_t, bundle, trust, data) = signed_echo();
    ok(&run(&bundle, &trust, &data));
    let log = data.join("audit/audit.jsonl");
    let text = fs::read_to_string(&log).unwrap();
    let edited = text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"no\"", 1);
    assert_ne!(edited, text);
    fs::write(&log, edited).unwrap();
    append(&log, &torn_next(&data, 1));
    let o = run(&bundle, &trust, &data);
    fails(&o, "");
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    assert!(!data.join("audit/audit.torn").exists());
    fails(&audit(&data, &["--verify"]), "line 1");
}
