//! A log kept somewhere other than in files: an in-memory [`RoundStore`] (lines and a keyed
//! head, as a database would keep them) driven by the group commit from many threads, read
//! back with `verify_lines` and `Reader::from_lines`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use warden_audit::encode_after;
use warden_audit::{
    Appended, AuditError, AuditKey, AuditSink, ChainError, Filter, GENESIS_HASH, HeadMac, HeadView,
    Reader, Record, Round, RoundStore, StoreLog, verify_lines,
};

use crate::common::rec;

/// What the store holds: one line per record (no newline) and the head.
struct Mem {
    lines: Vec<Vec<u8>>,
    seq: u64,
    hash: String,
    mac: String,
    /// Rounds that stored something.
    rounds: u64,
}

/// A store over shared memory, keyed like a warden log.
struct MemStore {
    mem: Arc<Mutex<Mem>>,
    key: Arc<AuditKey>,
}

impl MemStore {
    fn new(key: &Arc<AuditKey>) -> (MemStore, Arc<Mutex<Mem>>) {
        let mem = Arc::new(Mutex::new(Mem {
            lines: Vec::new(),
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            mac: key.mac(0, GENESIS_HASH),
            rounds: 0,
        }));
        let store = MemStore {
            mem: Arc::clone(&mem),
            key: Arc::clone(key),
        };
        (store, mem)
    }
}

impl RoundStore for MemStore {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn begin(&mut self) -> Result<(), AuditError> {
        // Long enough for the other threads to queue: rounds of several records.
        thread::sleep(Duration::from_millis(1));
        Ok(())
    }

    fn append_round(&mut self, batch: &[&Record]) -> Round {
        let mut mem = self.mem.lock().unwrap();
        if !self.key.check(mem.seq, &mem.hash, &mem.mac) {
            return Round {
                results: batch.iter().map(|_| Err(AuditError::Broken)).collect(),
                dirty: false,
                broken: true,
            };
        }
        let (mut seq, mut hash) = (mem.seq, mem.hash.clone());
        let mut lines = Vec::new();
        let mut results = Vec::new();
        for record in batch {
            match encode_after(seq, &hash, record) {
                Ok(e) => {
                    lines.push(e.text().to_vec());
                    results.push(Ok(Appended {
                        seq: e.seq,
                        hash: e.hash.clone(),
                    }));
                    (seq, hash) = (e.seq, e.hash);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let dirty = !lines.is_empty();
        if dirty {
            mem.lines.extend(lines);
            mem.mac = self.key.mac(seq, &hash);
            (mem.seq, mem.hash) = (seq, hash);
            mem.rounds += 1;
        }
        Round {
            results,
            dirty,
            broken: false,
        }
    }
}

fn head(mem: &Mem) -> HeadView {
    HeadView {
        seq: mem.seq,
        hash: mem.hash.clone(),
        mac: Some(mem.mac.clone()),
        location: PathBuf::from("memory"),
    }
}

/// The stored lines as a store would yield them: (seq, bytes).
fn rows(lines: &[Vec<u8>]) -> Vec<Result<(u64, Vec<u8>), ChainError>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| Ok((i as u64 + 1, l.clone())))
        .collect()
}

fn verify_mem(
    head: &HeadView,
    lines: &[Vec<u8>],
    key: &AuditKey,
) -> Result<warden_audit::VerifyReport, ChainError> {
    verify_lines(head, rows(lines), Some(key), &mut |_, _| {})
}

/// A log of `threads` x `per_thread` records appended concurrently.
fn filled(threads: u64, per_thread: u64) -> (Arc<AuditKey>, Arc<Mutex<Mem>>, Vec<Vec<Appended>>) {
    let key = Arc::new(AuditKey::random());
    let (store, mem) = MemStore::new(&key);
    let log = Arc::new(StoreLog::new(Box::new(store)).unwrap());
    assert_eq!(log.location(), "memory");
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                (0..per_thread)
                    .map(|i| log.append(rec(t * 1000 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let rounds = log.sync_rounds();
    drop(log);
    assert_eq!(mem.lock().unwrap().rounds, rounds);
    assert!(
        rounds < threads * per_thread,
        "{rounds} rounds: no group commit"
    );
    (key, mem, answers)
}

#[test]
fn concurrent_appends_through_a_store_make_one_verified_chain() {
    let (key, mem, answers) = filled(4, 200);
    let mem = mem.lock().unwrap();
    let mut seqs = BTreeSet::new();
    for thread_answers in &answers {
        assert!(thread_answers.windows(2).all(|w| w[0].seq < w[1].seq));
        for a in thread_answers {
            assert!(seqs.insert(a.seq), "seq {} handed out twice", a.seq);
        }
    }
    assert_eq!(seqs, (1..=800).collect());

    let mut seen = Vec::new();
    let report = verify_lines(
        &head(&mem),
        rows(&mem.lines),
        Some(&key),
        &mut |seq, hash| seen.push((seq, hash.to_owned())),
    )
    .unwrap();
    assert_eq!(report.records, 800);
    assert_eq!(report.last_hash, mem.hash);
    assert_eq!(report.head_mac, HeadMac::Checked);
    // Each caller's answer is the record stored under its seq.
    let by_seq: std::collections::BTreeMap<u64, String> = seen.into_iter().collect();
    for a in answers.iter().flatten() {
        assert_eq!(by_seq[&a.seq], a.hash);
    }
    // Without the key the MAC is there but unchecked.
    let report = verify_lines(&head(&mem), rows(&mem.lines), None, &mut |_, _| {}).unwrap();
    assert_eq!(report.head_mac, HeadMac::Unchecked);
}

#[test]
fn tampering_with_a_stored_line_or_the_head_is_found() {
    let (key, mem, _) = filled(4, 50);
    let mem = mem.lock().unwrap();
    let h = head(&mem);
    verify_mem(&h, &mem.lines, &key).unwrap();

    // One line edited.
    let mut lines = mem.lines.clone();
    let text = String::from_utf8(lines[99].clone()).unwrap();
    let edited = text.replacen(":\"message ", ":\"massage ", 1);
    assert_ne!(edited, text);
    lines[99] = edited.into_bytes();
    let e = verify_mem(&h, &lines, &key).unwrap_err();
    assert!(matches!(e, ChainError::Hash { line: 100, .. }), "{e}");

    // One line removed: the rows skip a seq.
    let mut rows_gap = rows(&mem.lines);
    let _removed = rows_gap.remove(49);
    let e = verify_lines(&h, rows_gap, Some(&key), &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::Seq {
                line: 50,
                expected: 50,
                found: 51
            }
        ),
        "{e}"
    );

    // One line stored twice.
    let mut rows_dup = rows(&mem.lines);
    let again = Ok((50, mem.lines[49].clone()));
    rows_dup.insert(50, again);
    let e = verify_lines(&h, rows_dup, Some(&key), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, ChainError::Seq { line: 51, .. }), "{e}");

    // Records cut from the end, with a head rewritten to match by someone without the key.
    let cut = &mem.lines[..150];
    let last = serde_json::from_slice::<serde_json::Value>(&cut[149]).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = HeadView {
        seq: 150,
        hash: last.clone(),
        mac: Some("ab".repeat(32)),
        location: PathBuf::from("memory"),
    };
    let e = verify_mem(&forged, cut, &key).unwrap_err();
    assert!(matches!(e, ChainError::HeadMac { .. }), "{e}");
    let bare = HeadView {
        mac: None,
        ..forged
    };
    let e = verify_mem(&bare, cut, &key).unwrap_err();
    assert!(matches!(e, ChainError::HeadUnkeyed { .. }), "{e}");
    // The head of the whole log over the cut lines.
    let e = verify_mem(&h, cut, &key).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::Truncated {
                log_seq: 150,
                head_seq: 200,
                ..
            }
        ),
        "{e}"
    );
    // A head that is not a head.
    let garbled = HeadView {
        hash: "XYZ".to_owned(),
        ..h.clone()
    };
    let e = verify_mem(&garbled, &mem.lines, &key).unwrap_err();
    assert!(matches!(e, ChainError::HeadMalformed { .. }), "{e}");
    // A failure of the store itself is passed through.
    let failing = rows(&mem.lines)
        .into_iter()
        .take(10)
        .chain([Err(ChainError::Io {
            path: PathBuf::from("memory"),
            source: std::io::Error::other("connection lost"),
        })]);
    let e = verify_lines(&h, failing, Some(&key), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, ChainError::Io { .. }), "{e}");
}

#[test]
fn a_reader_lists_any_store_with_a_filter() {
    let (_key, mem, _) = filled(2, 10);
    let lines = mem.lock().unwrap().lines.clone();
    let acme = Filter {
        tenant: Some("acme".into()),
        ..Filter::default()
    };
    let got: Vec<_> = Reader::from_lines(rows(&lines), acme.clone())
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|r| r.record.tenant() == Some("acme")));
    assert_eq!(got[0].line.as_bytes(), lines[got[0].seq as usize - 1]);

    // A store that filters itself: the lines are checked alone.
    let selected: Vec<_> = got
        .iter()
        .map(|g| Ok::<_, ChainError>((g.seq, lines[g.seq as usize - 1].clone())))
        .collect();
    let mut reader = Reader::unchained(selected, Filter::default());
    let again: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(again, got);
    assert_eq!(reader.records_read(), 10);
    // ... which still finds an edited line, but the chained reader finds the gap.
    let mut edited = lines.clone();
    edited[3] = String::from_utf8(edited[3].clone())
        .unwrap()
        .replacen(":\"message ", ":\"massage ", 1)
        .into_bytes();
    let e = Reader::unchained(rows(&edited), Filter::default())
        .find_map(Result::err)
        .unwrap();
    assert!(matches!(e, ChainError::Hash { line: 4, .. }), "{e}");
    let mut gap = rows(&lines);
    let _removed = gap.remove(2);
    let e = Reader::from_lines(gap, Filter::default())
        .find_map(Result::err)
        .unwrap();
    assert_eq!(e.line(), Some(3));
}

#[test]
fn a_store_log_is_an_audit_sink() {
    let key = Arc::new(AuditKey::random());
    let (store, mem) = MemStore::new(&key);
    let log: Arc<dyn AuditSink> = Arc::new(StoreLog::new(Box::new(store)).unwrap());
    AuditSink::append(&*log, rec(1)).unwrap();
    // The batch is queued at once and resolves when stored.
    let mut pending = log.append_all((2..=5).map(rec).collect());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let result = loop {
        match std::pin::Pin::new(&mut pending).poll(&mut cx) {
            std::task::Poll::Ready(r) => break r,
            std::task::Poll::Pending => thread::sleep(Duration::from_millis(1)),
        }
    };
    result.unwrap();
    let mem = mem.lock().unwrap();
    assert_eq!(
        verify_mem(&head(&mem), &mem.lines, &key).unwrap().records,
        5
    );
}

/// A store whose rounds wait for the test's word: `true` stores, `false` fails the round (as
/// a log another process keeps locked past the wait does).
struct Gated {
    inner: MemStore,
    word: std::sync::mpsc::Receiver<bool>,
}

impl RoundStore for Gated {
    fn location(&self) -> String {
        "gated".to_owned()
    }

    fn begin(&mut self) -> Result<(), AuditError> {
        match self.word.recv() {
            Ok(true) => Ok(()),
            _ => Err(AuditError::Broken),
        }
    }

    fn append_round(&mut self, batch: &[&Record]) -> Round {
        self.inner.append_round(batch)
    }
}

fn gated() -> (
    Arc<dyn AuditSink>,
    std::sync::mpsc::Sender<bool>,
    Arc<Mutex<Mem>>,
) {
    let key = Arc::new(AuditKey::random());
    let (inner, mem) = MemStore::new(&key);
    let (tx, word) = std::sync::mpsc::channel();
    let log: Arc<dyn AuditSink> = Arc::new(StoreLog::new(Box::new(Gated { inner, word })).unwrap());
    (log, tx, mem)
}

/// A record whose caller stopped waiting (a call dropped while its record committed) and that
/// then could not be stored is lost: `settle` says so, so that a process about to exit can
/// (`warden run` stopped while its call's record waited for a locked log said only that the
/// call was stopped: session 40's F7).
#[test]
fn settle_says_which_records_nobody_will_store() {
    let (log, word, mem) = gated();
    drop(log.append_all(vec![rec(1)]));
    // Still queued: waiting.
    match log.settle(Duration::from_millis(50)) {
        Err(AuditError::Unstored {
            lost: 0,
            waiting: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    word.send(false).unwrap();
    let e = log.settle(Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(
            e,
            AuditError::Unstored {
                lost: 1,
                waiting: 0
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "1 audit record could not be stored");
    assert!(mem.lock().unwrap().lines.is_empty());

    // A failed record whose caller heard the error is the caller's: not lost. A stored one
    // whose caller left is not lost either.
    let (log, word, mem) = gated();
    let heard = thread::spawn({
        let log = Arc::clone(&log);
        move || log.append(rec(2))
    });
    while log.settle(Duration::ZERO).is_ok() {
        thread::sleep(Duration::from_millis(1));
    }
    word.send(false).unwrap();
    assert!(heard.join().unwrap().is_err());
    drop(log.append_all(vec![rec(3)]));
    word.send(true).unwrap();
    log.settle(Duration::from_secs(10)).unwrap();
    assert_eq!(mem.lock().unwrap().lines.len(), 1);
}
