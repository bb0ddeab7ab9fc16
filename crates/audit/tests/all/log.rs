use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::thread;

use warden_audit::{
    AuditError, AuditLog, AuditSink, ChainError, GENESIS_HASH, HEAD_FILE, LOG_FILE, MemoryAudit,
    verify,
};

use crate::common::{audit_dir, forge, hash_of, lines, log_with, rec, write_lines};

#[test]
fn a_new_log_is_private_and_verifies_empty() {
    let (_tmp, dir) = audit_dir();
    let _log = AuditLog::open(&dir).unwrap();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(LOG_FILE)), 0o600);
    assert_eq!(mode(&dir.join(HEAD_FILE)), 0o600);
    let report = verify(&dir).unwrap();
    assert_eq!(report.records, 0);
    assert_eq!(report.last_hash, GENESIS_HASH);
}

#[test]
fn lines_follow_the_documented_format() {
    let (_tmp, dir) = log_with(3);
    let lines = lines(&dir);
    assert_eq!(lines.len(), 3);
    let mut prev = GENESIS_HASH.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(line, &forge(seq, &prev, &rec(seq)));
        assert!(line.starts_with(&format!(
            "{{\"seq\":{seq},\"prev\":\"{prev}\",\"record\":{{"
        )));
        prev = hash_of(line);
    }
    let head = fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
    assert_eq!(head.len(), 256);
    assert_eq!(
        head.trim_end(),
        format!("{{\"seq\":3,\"hash\":\"{prev}\"}}")
    );
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.last_hash), (3, prev));
}

#[test]
fn concurrent_appends_keep_one_contiguous_chain() {
    let (_tmp, dir) = audit_dir();
    let log = Arc::new(AuditLog::open(&dir).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                (0..40u64)
                    .map(|i| log.append(rec(t * 1000 + i)).unwrap().seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let seqs: BTreeSet<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(seqs, (1..=320).collect());
    assert_eq!(verify(&dir).unwrap().records, 320);
    assert_eq!(lines(&dir).len(), 320);
}

#[test]
fn two_handles_on_one_folder_share_the_chain() {
    // As two processes would: separate open files, serialized by the lock on the head file.
    let (_tmp, dir) = audit_dir();
    let a = Arc::new(AuditLog::open(&dir).unwrap());
    let b = Arc::new(AuditLog::open(&dir).unwrap());
    let threads: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(t, log)| {
            thread::spawn(move || {
                for i in 0..50u64 {
                    log.append(rec(t as u64 * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(verify(&dir).unwrap().records, 100);
}

#[test]
fn reopening_continues_the_chain() {
    let (_tmp, dir) = log_with(3);
    let log = AuditLog::open(&dir).unwrap();
    let a = log.append(rec(4)).unwrap();
    assert_eq!(a.seq, 4);
    let b = log.append(rec(5)).unwrap();
    assert_eq!(b.seq, 5);
    drop(log);
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.last_hash), (5, b.hash));
    let lines = lines(&dir);
    assert_eq!(lines[3], forge(4, &hash_of(&lines[2]), &rec(4)));
}

#[test]
fn opening_a_damaged_log_fails_and_names_the_line() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l.remove(4);
    write_lines(&dir, &l);
    let err = AuditLog::open(&dir).unwrap_err();
    let AuditError::Chain { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(source, ChainError::Truncated { line: 5, .. }),
        "{source}"
    );

    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l[4] = l[4].replace("message 5", "message X");
    write_lines(&dir, &l);
    let err = AuditLog::open(&dir).unwrap_err();
    let AuditError::Chain { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(source, ChainError::Hash { line: 5, .. }),
        "{source}"
    );
}

#[test]
fn opening_reads_only_the_end_and_verify_finds_the_rest() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l[1] = l[1].replace("message 2", "message X");
    write_lines(&dir, &l);
    // The end is intact, so the log opens (a large log is not read whole on every start)...
    let log = AuditLog::open(&dir).unwrap();
    log.append(rec(6)).unwrap();
    // ...and the edit is still found.
    assert!(matches!(
        verify(&dir).unwrap_err(),
        ChainError::Hash { line: 2, .. }
    ));
}

#[test]
fn a_missing_head_is_not_recreated_over_an_existing_log() {
    let (_tmp, dir) = log_with(2);
    fs::remove_file(dir.join(HEAD_FILE)).unwrap();
    let err = AuditLog::open(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Chain {
                source: ChainError::HeadMissing { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        verify(&dir).unwrap_err(),
        ChainError::HeadMissing { .. }
    ));
}

#[test]
fn memory_audit_keeps_records_in_order() {
    let mem = Arc::new(MemoryAudit::new());
    let sink: Arc<dyn AuditSink> = mem.clone();
    sink.append(rec(1)).unwrap();
    sink.append(rec(2)).unwrap();
    assert_eq!(mem.records(), vec![rec(1), rec(2)]);
    assert_eq!(mem.take().len(), 2);
    assert!(mem.is_empty());
}

#[test]
fn audit_log_is_a_sink() {
    let (_tmp, dir) = audit_dir();
    let log = AuditLog::open(&dir).unwrap();
    let sink: &dyn AuditSink = &log;
    sink.append(rec(1)).unwrap();
    assert_eq!(verify(&dir).unwrap().records, 1);
}
