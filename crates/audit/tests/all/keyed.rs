//! The keyed head and exported checkpoints (issue 9, F6): cutting records from the end and
//! rewriting `audit.head` to match passed `verify` before; with the key it fails, and with a
//! checkpoint kept elsewhere it fails even for someone holding the key.

use std::fs;
use std::path::Path;

use warden_audit::checkpoint::{self, CheckpointError};
use warden_audit::{
    AuditError, AuditKey, AuditLog, ChainError, HEAD_FILE, HeadMac, verify, verify_with,
};

use crate::common::{audit_dir, forge, hash_of, lines, rec, write_lines};

fn keyed_log(n: u64, key: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, dir) = audit_dir();
    let (k, created) = AuditKey::load_or_create(key).unwrap();
    assert!(created);
    let log = AuditLog::open_keyed(&dir, k, created).unwrap();
    for i in 1..=n {
        log.append(rec(i)).unwrap();
    }
    (tmp, dir)
}

/// Writes `json` as the head file, padded to its 256 bytes as warden writes it.
fn write_head(dir: &Path, json: &str) {
    let mut head = vec![b' '; 256];
    head[..json.len()].copy_from_slice(json.as_bytes());
    head[255] = b'\n';
    fs::write(dir.join(HEAD_FILE), head).unwrap();
}

/// What the attacker of F6 does: drop the last `cut` records and write a head naming the new
/// last one, in the head's documented (unkeyed) format.
fn cut_and_rewrite_head(dir: &Path, cut: usize) {
    let mut ls = lines(dir);
    ls.truncate(ls.len() - cut);
    let last = hash_of(ls.last().unwrap());
    write_lines(dir, &ls);
    let json = format!("{{\"seq\":{},\"hash\":\"{last}\"}}", ls.len());
    write_head(dir, &json);
}

#[test]
fn a_cut_with_a_rewritten_head_passes_unkeyed_but_fails_under_the_key() {
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("audit.key");
    let (_tmp, dir) = keyed_log(6, &key_path);
    let key = AuditKey::load(&key_path).unwrap();
    assert_eq!(
        verify_with(&dir, Some(&key), &mut |_, _| {})
            .unwrap()
            .head_mac,
        HeadMac::Checked
    );

    cut_and_rewrite_head(&dir, 2);
    // The old check (no key) cannot see it: this is the finding.
    assert_eq!(verify(&dir).unwrap().records, 4);
    let e = verify_with(&dir, Some(&key), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, ChainError::HeadUnkeyed { .. }), "{e}");
    // Nor will a writer holding the key append to it (and so launder the cut).
    let e = AuditLog::open_keyed(&dir, AuditKey::load(&key_path).unwrap(), false).unwrap_err();
    assert!(
        matches!(
            &e,
            AuditError::Chain {
                source: ChainError::HeadUnkeyed { .. },
                ..
            }
        ),
        "{e}"
    );

    // A head with a MAC made up by the attacker fails too.
    let head = fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
    let forged = head
        .trim_end()
        .replace('}', &format!(",\"mac\":\"{}\"}}", "ab".repeat(32)));
    write_head(&dir, &forged);
    let e = verify_with(&dir, Some(&key), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, ChainError::HeadMac { .. }), "{e}");
    assert!(e.to_string().contains("MAC does not match"), "{e}");
}

#[test]
fn an_old_keyed_head_put_back_after_a_cut_is_caught_by_a_checkpoint() {
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("audit.key");
    let (_tmp, dir) = keyed_log(3, &key_path);
    let key = AuditKey::load(&key_path).unwrap();
    // The attacker keeps a copy of the head and log at 3 records...
    let old_head = fs::read(dir.join(HEAD_FILE)).unwrap();
    let old_lines = lines(&dir);
    // ...the host goes on, and an operator exports a checkpoint elsewhere.
    {
        let log = AuditLog::open_keyed(&dir, AuditKey::load(&key_path).unwrap(), false).unwrap();
        for i in 4..=5 {
            log.append(rec(i)).unwrap();
        }
    }
    let cp = checkpoint::take(&dir, Some(&key)).unwrap();
    assert_eq!(cp.seq, 5);
    let exported = format!("{}\n", cp.to_line());
    let report = checkpoint::check(&dir, Some(&key), &exported).unwrap();
    assert_eq!((report.checkpoints, report.macs_checked), (1, 1));

    // The rollback: the old log and its genuine keyed head. The MAC alone cannot see it...
    write_lines(&dir, &old_lines);
    fs::write(dir.join(HEAD_FILE), &old_head).unwrap();
    assert_eq!(
        verify_with(&dir, Some(&key), &mut |_, _| {})
            .unwrap()
            .records,
        3
    );
    // ...the checkpoint does.
    let e = checkpoint::check(&dir, Some(&key), &exported).unwrap_err();
    assert!(
        matches!(
            e,
            CheckpointError::Removed {
                seq: 5,
                records: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("records were removed from the end"),
        "{e}"
    );
}

#[test]
fn history_rewritten_by_a_key_holder_is_caught_by_a_checkpoint() {
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("audit.key");
    let (_tmp, dir) = keyed_log(4, &key_path);
    let key = AuditKey::load(&key_path).unwrap();
    let exported = checkpoint::take(&dir, Some(&key)).unwrap().to_line();

    // Record 2 onward replaced by forged records, the chain and the keyed head recomputed.
    let mut ls = lines(&dir);
    let mut prev = hash_of(&ls[0]);
    for (i, line) in ls.iter_mut().enumerate().skip(1) {
        let seq = i as u64 + 1;
        *line = forge(seq, &prev, &rec(seq + 100));
        prev = hash_of(line);
    }
    write_lines(&dir, &ls);
    let json = format!(
        "{{\"seq\":4,\"hash\":\"{prev}\",\"mac\":\"{}\"}}",
        key.mac(4, &prev)
    );
    write_head(&dir, &json);
    verify_with(&dir, Some(&key), &mut |_, _| {}).unwrap();

    let e = checkpoint::check(&dir, Some(&key), &exported).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Rewritten { seq: 4, .. }),
        "{e}"
    );
}

#[test]
fn forged_or_garbled_checkpoints_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("audit.key");
    let (_tmp, dir) = keyed_log(2, &key_path);
    let key = AuditKey::load(&key_path).unwrap();
    let mut cp = checkpoint::take(&dir, Some(&key)).unwrap();
    cp.seq = 1; // a checkpoint edited to claim less history
    let e = checkpoint::check(&dir, Some(&key), &cp.to_line()).unwrap_err();
    assert!(matches!(e, CheckpointError::Mac { line: 1 }), "{e}");
    for bad in [
        "{",
        "{\"seq\":1}",
        &"x".repeat(10_000),
        "{\"seq\":1,\"hash\":\"ZZ\",\"time\":\"t\"}",
    ] {
        let e = checkpoint::check(&dir, Some(&key), bad).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Malformed { line: 1, .. }),
            "{e}"
        );
    }
    // Blank lines are skipped; an empty file checks nothing but the log.
    let r = checkpoint::check(&dir, Some(&key), "\n\n").unwrap();
    assert_eq!(r.checkpoints, 0);
}

#[test]
fn an_unkeyed_log_is_adopted_only_by_a_key_made_now() {
    let (_tmp, dir) = audit_dir();
    {
        let log = AuditLog::open(&dir).unwrap();
        log.append(rec(1)).unwrap();
    }
    assert_eq!(verify(&dir).unwrap().head_mac, HeadMac::None);
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("audit.key");
    let (k, created) = AuditKey::load_or_create(&key_path).unwrap();
    assert!(created);
    {
        let log = AuditLog::open_keyed(&dir, k, created).unwrap();
        log.append(rec(2)).unwrap();
    }
    let key = AuditKey::load(&key_path).unwrap();
    let r = verify_with(&dir, Some(&key), &mut |_, _| {}).unwrap();
    assert_eq!((r.records, r.head_mac), (2, HeadMac::Checked));
    assert_eq!(verify(&dir).unwrap().head_mac, HeadMac::Unchecked);

    // The same key, no longer new, does not adopt an unkeyed head.
    let (_tmp2, dir2) = audit_dir();
    drop(AuditLog::open(&dir2).unwrap());
    let (k, created) = AuditKey::load_or_create(&key_path).unwrap();
    assert!(!created);
    let e = AuditLog::open_keyed(&dir2, k, created).unwrap_err();
    assert!(
        matches!(
            &e,
            AuditError::Chain {
                source: ChainError::HeadUnkeyed { .. },
                ..
            }
        ),
        "{e}"
    );
}
