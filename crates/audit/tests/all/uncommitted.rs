//! An uncommitted tail: a crash (kill -9, power loss) after a round of the group commit wrote
//! its lines but before it rewrote the head leaves complete lines (and maybe a partial one)
//! after the record the head names. Nobody was told they were stored, so `open` (or the next
//! round) sets them aside in `audit.torn` and records that, as it does a torn last line; they
//! are not adopted. More than one round can write, or lines that do not chain, are refused.

use std::fs;
use std::path::Path;

use warden_audit::{
    AuditError, AuditKey, AuditLog, ChainError, HEAD_FILE, HeadMac, LOG_FILE, TORN_FILE, verify,
    verify_with,
};

use crate::common::{audit_dir, forge, hash_of, lines, log_with, rec};
use crate::torn::{append_raw, refused};

/// Lines `n+1..=n+k` as warden writes them after records `1..=n`, taken from a log that went
/// on further (`rec(i)` is the same record in every log), and the start of line `n+k+1`.
fn continued(n: u64, k: u64) -> (Vec<String>, String) {
    let (_tmp, other) = log_with(n + k + 1);
    let l = lines(&other);
    let next = &l[(n + k) as usize];
    (
        l[n as usize..(n + k) as usize].to_vec(),
        next[..next.len() / 2].to_owned(),
    )
}

/// The bytes a round that stopped after writing `complete` and `partial` left.
fn tail_bytes(complete: &[String], partial: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for l in complete {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(partial.as_bytes());
    bytes
}

fn open(dir: &Path, key: Option<&Path>) -> Result<AuditLog, AuditError> {
    match key {
        Some(k) => AuditLog::open_keyed(dir, AuditKey::load(k).unwrap(), false),
        None => AuditLog::open(dir),
    }
}

fn verify_as(dir: &Path, key: Option<&Path>) -> Result<warden_audit::VerifyReport, ChainError> {
    match key {
        Some(k) => verify_with(dir, Some(&AuditKey::load(k).unwrap()), &mut |_, _| {}),
        None => verify(dir),
    }
}

/// `dir` holds records `1..=n` and a head naming record n. Appends `complete` lines and
/// `partial` bytes without touching the head (the crash), opens the log again and checks that
/// they were set aside and recorded at seq n+1, not adopted, and that the log goes on.
fn recovers(dir: &Path, key: Option<&Path>, n: u64, complete: &[String], partial: &str) {
    let before = fs::read(dir.join(LOG_FILE)).unwrap();
    let head_before = fs::read(dir.join(HEAD_FILE)).unwrap();
    let tail = tail_bytes(complete, partial);
    append_raw(dir, &tail);
    // Until a log is opened, the extra lines look like any others appended outside warden.
    let err = verify_as(dir, key).unwrap_err();
    if partial.is_empty() {
        assert!(
            matches!(err, ChainError::Unrecorded { head_seq, .. } if head_seq == n),
            "{err}"
        );
    } else {
        assert!(matches!(err, ChainError::Torn { .. }), "{err}");
    }
    assert_eq!(fs::read(dir.join(HEAD_FILE)).unwrap(), head_before);

    let log = open(dir, key).unwrap();
    let report = verify_as(dir, key).unwrap();
    assert_eq!(report.records, n + 1, "the recovery record is in the chain");
    if key.is_some() {
        assert_eq!(report.head_mac, HeadMac::Checked);
    }
    // The records before the tail are untouched, byte for byte; the tail is gone.
    let after = fs::read(dir.join(LOG_FILE)).unwrap();
    assert!(after.starts_with(&before));
    let l = lines(dir);
    assert_eq!(l.len() as u64, n + 1);
    let recovery: serde_json::Value = serde_json::from_str(&l[n as usize]).unwrap();
    assert_eq!(recovery["seq"], n + 1);
    assert_eq!(recovery["record"]["event"], "recovery");
    assert_eq!(recovery["record"]["outcome"], "error");
    if let Some(first) = complete.first() {
        assert_ne!(&l[n as usize], first, "the uncommitted line is not adopted");
    }
    let message = recovery["record"]["message"].as_str().unwrap();
    let k = complete.len();
    let expected = format!(
        "an uncommitted tail of {} bytes ({k} complete line{}{} after seq {n},",
        tail.len(),
        if k == 1 { "" } else { "s" },
        if partial.is_empty() {
            ""
        } else {
            " and an incomplete one"
        }
    );
    assert!(message.contains(&expected), "{message}\n{expected}");
    assert!(
        message.ends_with(&format!("was set aside at seq {} in {TORN_FILE}", n + 1)),
        "{message}"
    );
    // The bytes are kept, exactly, with where they were.
    let kept = fs::read_to_string(dir.join(TORN_FILE)).unwrap();
    let note: serde_json::Value = serde_json::from_str(kept.lines().last().unwrap()).unwrap();
    assert_eq!(note["after_seq"], n);
    assert_eq!(note["bytes"], tail.len());
    assert_eq!(note["lines"], k);
    assert_eq!(note["offset"], before.len());
    assert_eq!(note["hex"], hex::encode(&tail));

    // Appending continues the chain after the recovery record.
    let a = log.append(rec(100)).unwrap();
    assert_eq!(a.seq, n + 2);
    drop(log);
    let report = verify_as(dir, key).unwrap();
    assert_eq!((report.records, report.last_hash), (n + 2, a.hash));
    // Reopening finds nothing more to repair.
    drop(open(dir, key).unwrap());
    assert_eq!(verify_as(dir, key).unwrap().records, n + 2);
    assert_eq!(fs::read_to_string(dir.join(TORN_FILE)).unwrap(), kept);
}

#[test]
fn complete_lines_after_the_head_are_set_aside() {
    for k in [1, 3] {
        let (_tmp, dir) = log_with(3);
        let (complete, _) = continued(3, k);
        recovers(&dir, None, 3, &complete, "");
    }
}

#[test]
fn complete_lines_and_a_partial_one_after_the_head_are_set_aside() {
    let (_tmp, dir) = log_with(3);
    let (complete, partial) = continued(3, 2);
    recovers(&dir, None, 3, &complete, &partial);
    // A partial line that is only the start of the next one, then zeros (a file extended but
    // not written).
    let (_tmp, dir) = log_with(2);
    let (complete, _) = continued(2, 1);
    let partial = format!("{{\"seq\":4,\"prev\":\"{}\"\0\0\0", hash_of(&complete[0]));
    recovers(&dir, None, 2, &complete, &partial);
}

#[test]
fn an_uncommitted_first_round_is_set_aside() {
    let (_tmp, dir) = audit_dir();
    drop(AuditLog::open(&dir).unwrap());
    let (complete, partial) = continued(0, 2);
    recovers(&dir, None, 0, &complete, &partial);
}

#[test]
fn a_keyed_log_sets_aside_complete_lines_after_its_head() {
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("audit.key");
    let (k, created) = AuditKey::load_or_create(&key_path).unwrap();
    let (_tmp, dir) = audit_dir();
    {
        let log = AuditLog::open_keyed(&dir, k, created).unwrap();
        for i in 1..=3 {
            log.append(rec(i)).unwrap();
        }
    }
    // The lines do not depend on the key (it MACs the head only).
    let (complete, _) = continued(3, 2);
    recovers(&dir, Some(&key_path), 3, &complete, "");
    // Again, with a partial line: records 1-3, the recovery, one append, then the tail.
    let more = chained(&dir, 2, rec);
    let partial = format!("{{\"seq\":8,\"prev\":\"{}\",\"rec", hash_of(&more[1]));
    recovers(&dir, Some(&key_path), 5, &more, &partial);
    assert_eq!(
        fs::read_to_string(dir.join(TORN_FILE))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[test]
fn a_keyed_log_with_a_head_rewritten_to_name_the_tail_is_refused() {
    // Someone without the key who appends lines and rewrites the head to name them is caught by
    // the MAC, as before: the lines are neither adopted nor set aside.
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("audit.key");
    let (k, created) = AuditKey::load_or_create(&key_path).unwrap();
    let (_tmp, dir) = audit_dir();
    {
        let log = AuditLog::open_keyed(&dir, k, created).unwrap();
        for i in 1..=3 {
            log.append(rec(i)).unwrap();
        }
    }
    let (complete, _) = continued(3, 2);
    append_raw(&dir, &tail_bytes(&complete, ""));
    let json = format!("{{\"seq\":5,\"hash\":\"{}\"}}", hash_of(&complete[1]));
    let mut head = vec![b' '; 256];
    head[..json.len()].copy_from_slice(json.as_bytes());
    head[255] = b'\n';
    fs::write(dir.join(HEAD_FILE), head).unwrap();
    let log_before = fs::read(dir.join(LOG_FILE)).unwrap();
    let err = open(&dir, Some(&key_path)).unwrap_err();
    assert!(
        matches!(
            &err,
            AuditError::Chain {
                source: ChainError::HeadUnkeyed { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::read(dir.join(LOG_FILE)).unwrap(), log_before);
    assert!(!dir.join(TORN_FILE).exists());
}

#[test]
fn an_append_sets_aside_lines_left_by_another_writer() {
    // Another process wrote a round's lines and died before its head: the next append here
    // sets them aside instead of writing after them.
    let (_tmp, dir) = log_with(2);
    let log = AuditLog::open(&dir).unwrap();
    log.append(rec(3)).unwrap();
    let (complete, partial) = continued(3, 2);
    let tail = tail_bytes(&complete, &partial);
    append_raw(&dir, &tail);
    let a = log.append(rec(100)).unwrap();
    assert_eq!(a.seq, 5);
    let l = lines(&dir);
    assert_eq!(l.len(), 5);
    assert!(l[3].contains("\"event\":\"recovery\""), "{}", l[3]);
    assert!(l[3].contains("2 complete lines and an incomplete one after seq 3"));
    assert_eq!(verify(&dir).unwrap().records, 5);
    let note: serde_json::Value =
        serde_json::from_str(fs::read_to_string(dir.join(TORN_FILE)).unwrap().trim_end()).unwrap();
    assert_eq!(note["hex"], hex::encode(&tail));

    // Lines that do not chain from the head are refused, and nothing is written after them.
    append_raw(
        &dir,
        format!("{}\n", forge(6, &"a".repeat(64), &rec(6))).as_bytes(),
    );
    let before = fs::read(dir.join(LOG_FILE)).unwrap();
    let err = log.append(rec(101)).unwrap_err();
    assert!(
        matches!(
            &err,
            AuditError::Chain {
                source: ChainError::Prev { line: 6, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read(dir.join(LOG_FILE)).unwrap(), before);
}

/// `count` correctly chained lines after the last line of the log in `dir`, of `record(seq)`.
fn chained(dir: &Path, count: u64, record: impl Fn(u64) -> warden_audit::Record) -> Vec<String> {
    let l = lines(dir);
    let mut prev = hash_of(l.last().unwrap());
    let mut out = Vec::new();
    for seq in l.len() as u64 + 1..=l.len() as u64 + count {
        let line = forge(seq, &prev, &record(seq));
        prev = hash_of(&line);
        out.push(line);
    }
    out
}

#[test]
fn a_tail_longer_than_a_round_is_refused() {
    // More lines than a round takes (MAX_ROUND_RECORDS, 4096; their bytes are over the cap too:
    // no line is short enough for a round to reach 4096 lines before 1 MiB).
    let (_tmp, dir) = log_with(2);
    let tail = chained(&dir, 5000, rec);
    append_raw(&dir, &tail_bytes(&tail, ""));
    assert!(matches!(
        refused(&dir),
        ChainError::Unrecorded {
            line: 3,
            head_seq: 2
        }
    ));
    // Fewer lines, but more bytes than a round writes (MAX_ROUND_BYTES, 1 MiB, plus a line),
    // with or without a partial line after them.
    let big = |seq: u64| {
        let text = "x".repeat(1000);
        rec(seq)
            .with_extension(&text)
            .with_capability(&text)
            .with_target(&text)
            .with_message(&text)
    };
    for partial in [false, true] {
        let (_tmp, dir) = log_with(2);
        let mut tail = chained(&dir, 300, big);
        let bytes: usize = tail.iter().map(|l| l.len() + 1).sum();
        assert!(bytes > (1 << 20) + 32 * 1024, "{bytes}");
        let last = if partial { tail.pop() } else { None };
        let last = last.map(|l| l[..100].to_owned()).unwrap_or_default();
        append_raw(&dir, &tail_bytes(&tail, &last));
        // Named as `verify` names it: the partial line, or the first line after the head.
        let err = refused(&dir);
        if partial {
            assert!(matches!(err, ChainError::Torn { line: 302 }), "{err}");
        } else {
            assert!(
                matches!(
                    err,
                    ChainError::Unrecorded {
                        line: 3,
                        head_seq: 2
                    }
                ),
                "{err}"
            );
        }
    }
}

#[test]
fn lines_after_the_head_that_do_not_chain_are_refused() {
    let (_tmp, src) = log_with(3);
    let h3 = hash_of(&lines(&src)[2]);
    let (good, _) = continued(3, 2);
    let h4 = hash_of(&good[0]);
    let edited = good[1].replace("message 5", "message X");
    let cases: Vec<(Vec<String>, String, ChainError)> = vec![
        // The first line after the head does not follow the head's record.
        (
            vec![forge(4, &"a".repeat(64), &rec(4))],
            String::new(),
            ChainError::Prev {
                line: 4,
                expected: h3.clone(),
                found: "a".repeat(64),
            },
        ),
        // The second one does not follow the first.
        (
            vec![good[0].clone(), forge(5, &h3, &rec(5))],
            String::new(),
            ChainError::Prev {
                line: 5,
                expected: h4.clone(),
                found: h3.clone(),
            },
        ),
        // A number skipped.
        (
            vec![forge(5, &h3, &rec(5))],
            String::new(),
            ChainError::Seq {
                line: 4,
                expected: 4,
                found: 5,
            },
        ),
        // An edited line, a garbled one.
        (
            vec![good[0].clone(), edited],
            String::new(),
            ChainError::Hash {
                line: 5,
                stored: String::new(),
                computed: String::new(),
            },
        ),
        (
            vec![good[0].clone(), "junk".to_owned()],
            String::new(),
            ChainError::Malformed {
                line: 5,
                reason: String::new(),
            },
        ),
        // Complete lines, then a partial one that is not the start of the next record: it
        // repeats the head's link instead of the last line's, or is garbage.
        (
            vec![good[0].clone()],
            format!("{{\"seq\":5,\"prev\":\"{h3}\""),
            ChainError::Torn { line: 5 },
        ),
        (
            good.clone(),
            "hello".to_owned(),
            ChainError::Torn { line: 6 },
        ),
    ];
    for (complete, partial, expected) in cases {
        let (_tmp, dir) = log_with(3);
        append_raw(&dir, &tail_bytes(&complete, &partial));
        let err = refused(&dir);
        assert_eq!(
            std::mem::discriminant(&err),
            std::mem::discriminant(&expected),
            "{err}"
        );
        assert_eq!(err.line(), expected.line(), "{err}");
        if matches!(expected, ChainError::Prev { .. }) {
            assert_eq!(err.to_string(), expected.to_string());
        }
    }
}

#[test]
fn a_valid_tail_after_damage_before_it_is_refused() {
    // An edited record before the head's: the tail does not make the log repairable.
    let (_tmp, dir) = log_with(3);
    let (complete, partial) = continued(3, 1);
    let mut text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    text = text.replace("message 2", "message X");
    fs::write(dir.join(LOG_FILE), text).unwrap();
    append_raw(&dir, &tail_bytes(&complete, &partial));
    assert!(matches!(refused(&dir), ChainError::Hash { line: 2, .. }));

    // The head names a record that is not in the log: record 3 was replaced by another, and
    // lines chained from that one follow.
    let (_tmp, dir) = log_with(3);
    let l = lines(&dir);
    let other = forge(3, &hash_of(&l[1]), &rec(30));
    let next = forge(4, &hash_of(&other), &rec(4));
    fs::write(
        dir.join(LOG_FILE),
        format!("{}\n{}\n{other}\n{next}\n", l[0], l[1]),
    )
    .unwrap();
    assert!(matches!(refused(&dir), ChainError::Unrecorded { .. }));

    // The head is ahead of the log, which holds fewer records than it names.
    let (_tmp, dir) = log_with(3);
    let l = lines(&dir);
    fs::write(dir.join(LOG_FILE), format!("{}\n", l[0])).unwrap();
    assert!(matches!(refused(&dir), ChainError::Truncated { .. }));
}
