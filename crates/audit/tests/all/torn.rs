//! A torn tail (a crash or a full disk in the middle of an append) is set aside by `open` and
//! recorded in the chain; every other kind of damage at the end of the log is still refused.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use warden_audit::{
    AuditError, AuditLog, ChainError, Event, GENESIS_HASH, HEAD_FILE, LOG_FILE, Outcome, TORN_FILE,
    verify,
};

use crate::common::{audit_dir, forge, hash_of, lines, log_with, rec};

/// Appends raw bytes to the log, as a write cut short by a full disk would leave them.
pub fn append_raw(dir: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// The line warden would write as record `seq` after `prev`.
fn next_line(seq: u64, prev: &str) -> String {
    forge(seq, prev, &rec(seq))
}

/// Opens a log with a torn tail of `torn` bytes after record `n`, then checks that the tail was
/// set aside and recorded at seq n+1, that appends continue the chain and that it verifies.
fn recovers(n: u64, torn: &[u8]) {
    let (_tmp, dir) = if n == 0 {
        let (tmp, dir) = audit_dir();
        drop(AuditLog::open(&dir).unwrap());
        (tmp, dir)
    } else {
        log_with(n)
    };
    let before = fs::read(dir.join(LOG_FILE)).unwrap();
    append_raw(&dir, torn);
    // Like the red-team report: the log is damaged until it is opened again.
    assert!(matches!(verify(&dir).unwrap_err(), ChainError::Torn { .. }));

    let log = AuditLog::open(&dir).unwrap();
    let report = verify(&dir).unwrap();
    assert_eq!(report.records, n + 1, "the recovery record is in the chain");
    let l = lines(&dir);
    // The records before the tear are untouched, byte for byte.
    assert!(fs::read(dir.join(LOG_FILE)).unwrap().starts_with(&before));
    let recovery: serde_json::Value = serde_json::from_str(&l[n as usize]).unwrap();
    assert_eq!(recovery["seq"], n + 1);
    assert_eq!(recovery["record"]["event"], "recovery");
    assert_eq!(recovery["record"]["outcome"], "error");
    let message = recovery["record"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("torn tail of {} bytes", torn.len()))
            && message.contains(&format!("at seq {}", n + 1)),
        "{message}"
    );
    // The torn bytes are kept, exactly, with where they were.
    let kept = fs::read_to_string(dir.join(TORN_FILE)).unwrap();
    let note: serde_json::Value = serde_json::from_str(kept.trim_end()).unwrap();
    assert_eq!(note["after_seq"], n);
    assert_eq!(note["bytes"], torn.len());
    assert_eq!(note["offset"], before.len());
    assert_eq!(note["hex"], hex::encode(torn));

    // Appending continues the chain after the recovery record.
    let a = log.append(rec(n + 2)).unwrap();
    assert_eq!(a.seq, n + 2);
    drop(log);
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.last_hash), (n + 2, a.hash));
    // Reopening finds nothing more to repair.
    drop(AuditLog::open(&dir).unwrap());
    assert_eq!(verify(&dir).unwrap().records, n + 2);
    assert_eq!(fs::read_to_string(dir.join(TORN_FILE)).unwrap(), kept);
}

#[test]
fn partial_json_without_newline_is_set_aside() {
    let (_tmp, src) = log_with(3);
    let full = next_line(4, &hash_of(&lines(&src)[2]));
    // Half of the record that would have been number 4.
    recovers(3, &full.as_bytes()[..full.len() / 2]);
}

#[test]
fn the_whole_line_but_its_newline_is_set_aside() {
    // The line is complete but, without its newline, not committed: the head still says 3.
    let (_tmp, src) = log_with(3);
    let full = next_line(4, &hash_of(&lines(&src)[2]));
    recovers(3, full.as_bytes());
}

#[test]
fn a_partial_line_of_one_byte_is_set_aside() {
    recovers(3, b"{");
}

#[test]
fn a_torn_first_record_is_set_aside() {
    // The tear right after the head's record when that is the genesis: an empty log.
    let full = next_line(1, GENESIS_HASH);
    recovers(0, &full.as_bytes()[..20]);
}

#[test]
fn a_tear_right_after_the_prev_hash_is_set_aside() {
    let (_tmp, src) = log_with(2);
    let prev = hash_of(&lines(&src)[1]);
    let torn = format!("{{\"seq\":3,\"prev\":\"{prev}\"");
    recovers(2, torn.as_bytes());
}

#[test]
fn a_prefix_followed_by_zeros_is_set_aside() {
    // What a crash can leave when the file size reached the disk but the data did not.
    let mut torn = b"{\"seq\":3,".to_vec();
    torn.extend_from_slice(&[0; 100]);
    recovers(2, &torn);
    recovers(2, &[0; 7]);
}

/// Opening fails with the same chain error `verify` names, and nothing is changed or set aside.
pub fn refused(dir: &Path) -> ChainError {
    let log_before = fs::read(dir.join(LOG_FILE)).unwrap();
    let head_before = fs::read(dir.join(HEAD_FILE)).unwrap();
    let err = AuditLog::open(dir).unwrap_err();
    let AuditError::Chain { source, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        verify(dir).unwrap_err().to_string(),
        source.to_string(),
        "open and verify name the same problem"
    );
    assert_eq!(fs::read(dir.join(LOG_FILE)).unwrap(), log_before);
    assert_eq!(fs::read(dir.join(HEAD_FILE)).unwrap(), head_before);
    assert!(!dir.join(TORN_FILE).exists());
    source
}

#[test]
fn a_torn_tail_after_an_edited_line_is_refused() {
    let (_tmp, dir) = log_with(3);
    let mut text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    text = text.replace("message 2", "message X");
    fs::write(dir.join(LOG_FILE), text).unwrap();
    append_raw(&dir, b"{");
    assert!(matches!(refused(&dir), ChainError::Hash { line: 2, .. }));
}

#[test]
fn a_torn_tail_after_an_edited_last_line_is_refused() {
    let (_tmp, dir) = log_with(3);
    let mut text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    text = text.replace("message 3", "message X");
    fs::write(dir.join(LOG_FILE), text).unwrap();
    append_raw(&dir, b"{\"seq\":4");
    assert!(matches!(refused(&dir), ChainError::Hash { line: 3, .. }));
}

#[test]
fn a_torn_tail_when_the_head_is_ahead_is_refused() {
    // The head names record 3, but line 3 is the torn one: a committed record was cut.
    let (_tmp, dir) = log_with(3);
    let l = lines(&dir);
    fs::write(
        dir.join(LOG_FILE),
        format!("{}\n{}\n{}", l[0], l[1], &l[2][..l[2].len() / 2]),
    )
    .unwrap();
    assert!(matches!(refused(&dir), ChainError::Torn { line: 3 }));
}

#[test]
fn a_torn_tail_after_a_missing_line_is_refused() {
    // The last complete record was removed as well: the head does not name what is left.
    let (_tmp, dir) = log_with(3);
    let l = lines(&dir);
    fs::write(dir.join(LOG_FILE), format!("{}\n{}\n{{", l[0], l[1])).unwrap();
    assert!(matches!(refused(&dir), ChainError::Torn { line: 3 }));
    // And a missing line in the middle, with a plausible tail.
    let (_tmp, dir) = log_with(3);
    let l = lines(&dir);
    let tail = format!("{{\"seq\":4,\"prev\":\"{}\"", hash_of(&l[2]));
    fs::write(dir.join(LOG_FILE), format!("{}\n{}\n{tail}", l[0], l[2])).unwrap();
    assert!(matches!(refused(&dir), ChainError::Seq { line: 2, .. }));
}

#[test]
fn a_tail_that_is_not_the_next_record_is_refused() {
    for tail in [
        // Garbage appended by hand.
        b"hello".to_vec(),
        // A record numbered as if one were missing, or repeating one.
        b"{\"seq\":5,".to_vec(),
        b"{\"seq\":3,".to_vec(),
        // The right number with the wrong prev.
        format!("{{\"seq\":4,\"prev\":\"{}\"", "a".repeat(64)).into_bytes(),
        // Zeros before text is not what a crash leaves.
        b"\0\0{\"seq\":4".to_vec(),
    ] {
        let (_tmp, dir) = log_with(3);
        append_raw(&dir, &tail);
        assert!(
            matches!(refused(&dir), ChainError::Torn { line: 4 }),
            "{tail:?}"
        );
    }
}

#[test]
fn a_tail_longer_than_any_line_is_refused() {
    let (_tmp, dir) = log_with(2);
    let l = lines(&dir);
    let prefix = format!("{{\"seq\":3,\"prev\":\"{}\",\"record\":{{", hash_of(&l[1]));
    let mut tail = prefix.into_bytes();
    tail.resize(warden_audit::MAX_LINE_BYTES + 10, b'x');
    append_raw(&dir, &tail);
    assert!(matches!(refused(&dir), ChainError::TooLong { line: 3 }));
}

#[test]
fn an_append_sets_aside_a_tail_left_by_another_writer() {
    // Another process tore a line and died while this one was running: the next append here
    // sets it aside instead of writing after it.
    let (_tmp, dir) = log_with(2);
    let log = AuditLog::open(&dir).unwrap();
    append_raw(&dir, b"{\"seq\":3,\"pr");
    let a = log.append(rec(9)).unwrap();
    assert_eq!(a.seq, 4);
    let l = lines(&dir);
    assert!(l[2].contains("\"event\":\"recovery\""), "{}", l[2]);
    assert_eq!(verify(&dir).unwrap().records, 4);
    assert!(dir.join(TORN_FILE).exists());
    let r: warden_audit::Record = serde_json::from_value(
        serde_json::from_str::<serde_json::Value>(&l[2]).unwrap()["record"].clone(),
    )
    .unwrap();
    assert_eq!((r.event(), r.outcome()), (Event::Recovery, Outcome::Error));
    // But a garbled tail is refused, and nothing is written after it.
    append_raw(&dir, b"junk");
    let err = log.append(rec(10)).unwrap_err();
    assert!(matches!(err, AuditError::Chain { .. }), "{err:?}");
    assert!(fs::read(dir.join(LOG_FILE)).unwrap().ends_with(b"junk"));
}
