//! Group commit: many threads (and handles, as processes would) appending at once share
//! syncs, and still get one contiguous chain and each its own, durable answer.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::sync::Arc;
use std::thread;

use warden_audit::{
    AUDIT_DIR, AuditError, AuditKey, AuditLog, LOG_FILE, TORN_FILE, verify, verify_with,
};

use crate::common::{audit_dir, hash_of, lines, log_with, rec};

/// Appends `per_thread` records from each of `threads` threads; returns each thread's answers
/// in the order it got them.
fn append_from_threads(
    log: &Arc<AuditLog>,
    threads: u64,
    per_thread: u64,
    base: u64,
) -> Vec<Vec<warden_audit::Appended>> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(log);
            thread::spawn(move || {
                (0..per_thread)
                    .map(|i| log.append(rec(base + t * 1000 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn concurrent_appends_get_consecutive_seqs_and_share_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = Arc::new(AuditLog::open_in(&data, None).unwrap());
    let dir = data.join(AUDIT_DIR);
    let (threads, per_thread) = (16, 50);
    let total = threads * per_thread;
    let answers = append_from_threads(&log, threads, per_thread, 0);
    let stored = lines(&dir);
    let mut seqs = BTreeSet::new();
    for thread_answers in &answers {
        // A thread's own appends are in its order.
        assert!(thread_answers.windows(2).all(|w| w[0].seq < w[1].seq));
        for a in thread_answers {
            assert!(seqs.insert(a.seq), "seq {} handed out twice", a.seq);
            assert_eq!(hash_of(&stored[a.seq as usize - 1]), a.hash);
        }
    }
    assert_eq!(seqs, (1..=total).collect());
    let key = AuditKey::load(&data.join(warden_audit::AUDIT_KEY_FILE)).unwrap();
    let report = verify_with(&dir, Some(&key), &mut |_, _| {}).unwrap();
    assert_eq!(report.records, total);
    // 16 callers at a time: far fewer syncs than records.
    let rounds = log.sync_rounds();
    assert!(rounds * 4 <= total, "{rounds} syncs for {total} records");
}

#[test]
fn two_handles_group_commit_into_one_chain() {
    // As two processes would: separate open files and writer threads, serialized by the lock
    // on the head file; each round re-reads the head the other one wrote.
    let (_tmp, dir) = audit_dir();
    let a = Arc::new(AuditLog::open(&dir).unwrap());
    let b = Arc::new(AuditLog::open(&dir).unwrap());
    let (ta, tb) = {
        let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
        (
            thread::spawn(move || append_from_threads(&a2, 8, 40, 0)),
            thread::spawn(move || append_from_threads(&b2, 8, 40, 100_000)),
        )
    };
    let mut seqs = BTreeSet::new();
    for answers in [ta.join().unwrap(), tb.join().unwrap()] {
        for a in answers.into_iter().flatten() {
            assert!(seqs.insert(a.seq), "seq {} handed out twice", a.seq);
        }
    }
    assert_eq!(seqs, (1..=640).collect());
    assert_eq!(verify(&dir).unwrap().records, 640);
    assert!(a.sync_rounds() + b.sync_rounds() < 640);
}

#[test]
fn a_torn_tail_is_set_aside_once_by_a_round_of_many() {
    let (_tmp, dir) = log_with(2);
    let log = Arc::new(AuditLog::open(&dir).unwrap());
    // Another process tore a line and died.
    OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .unwrap()
        .write_all(b"{\"seq\":3,\"pr")
        .unwrap();
    let answers = append_from_threads(&log, 8, 5, 0);
    let seqs: BTreeSet<u64> = answers.into_iter().flatten().map(|a| a.seq).collect();
    // The recovery record took seq 3, the callers the 40 after it.
    assert_eq!(seqs, (4..=43).collect());
    let l = lines(&dir);
    assert!(l[2].contains("\"event\":\"recovery\""), "{}", l[2]);
    assert_eq!(
        l.iter()
            .filter(|l| l.contains("\"event\":\"recovery\""))
            .count(),
        1
    );
    assert_eq!(
        fs::read_to_string(dir.join(TORN_FILE))
            .unwrap()
            .lines()
            .count(),
        1
    );
    assert_eq!(verify(&dir).unwrap().records, 43);
}

#[test]
fn a_garbled_tail_fails_every_caller_and_nothing_is_written() {
    let (_tmp, dir) = log_with(2);
    let log = Arc::new(AuditLog::open(&dir).unwrap());
    OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .unwrap()
        .write_all(b"junk")
        .unwrap();
    let before = fs::read(dir.join(LOG_FILE)).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let log = Arc::clone(&log);
            thread::spawn(move || log.append(rec(10 + i)))
        })
        .collect();
    for h in handles {
        let err = h.join().unwrap().unwrap_err();
        assert!(matches!(err, AuditError::Chain { .. }), "{err:?}");
    }
    assert_eq!(fs::read(dir.join(LOG_FILE)).unwrap(), before);
    assert_eq!(log.sync_rounds(), 0);
}
