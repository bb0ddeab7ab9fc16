//! `PgRoundStore` under `StoreLog`, and `PgAuditSource`: one chain shared by several runners,
//! group commit, verification from one snapshot, tampering found, and the head's key enforced.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use warden_audit::{
    Appended, AuditError, AuditKey, AuditSource, ChainError, Event, Filter, HeadMac, Outcome,
    Record, StoreLog,
};

use crate::common::TestDb;

fn rec(i: u64) -> Record {
    Record::new(Event::Call, format!("req-{i}"))
        .at(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i))
        .with_tenant(if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        })
        .with_extension("hello")
        .with_version("1.0.0")
        .with_duration_ms(i)
        .with_outcome(Outcome::Ok)
        .with_message(format!("message {i}"))
}

/// A log on `db` through a runner (a store) of its own.
fn log(db: &TestDb, key: &Arc<AuditKey>) -> StoreLog {
    let store = db.connect().round_store(Some(Arc::clone(key))).unwrap();
    StoreLog::new(Box::new(store)).unwrap()
}

/// Appends `per_thread` records from each of `threads` threads to `log`.
fn append(log: &StoreLog, base: u64, threads: u64, per_thread: u64) -> Vec<Appended> {
    std::thread::scope(|t| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                t.spawn(move || {
                    (0..per_thread)
                        .map(|i| log.append(rec(base + w * 1000 + i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Three runners, each with its own store and writer, 300 appends each at once: one chain of
/// 900 with no gap or duplicate, which verifies under the key, every answer the record stored
/// under its seq.
#[test]
fn three_runners_append_one_chain() {
    let Some(db) = TestDb::new() else { return };
    let key = Arc::new(AuditKey::random());
    let logs: Vec<StoreLog> = (0..3).map(|_| log(&db, &key)).collect();
    let start = Instant::now();
    let answers: Vec<Appended> = std::thread::scope(|t| {
        let handles: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(r, log)| {
                t.spawn(move || {
                    (0..300)
                        .map(|i| log.append(rec(r as u64 * 1000 + i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let took = start.elapsed();
    println!(
        "audit on PostgreSQL: 900 appends from 3 runners in {took:?} ({} rounds)",
        logs.iter().map(StoreLog::sync_rounds).sum::<u64>()
    );
    let seqs: BTreeSet<u64> = answers.iter().map(|a| a.seq).collect();
    assert_eq!(seqs.len(), 900, "a seq handed out twice");
    assert_eq!(seqs, (1..=900).collect());

    let source = db.connect().audit_source();
    let mut seen = std::collections::BTreeMap::new();
    let report = source
        .verify(Some(&key), &mut |seq, hash| {
            seen.insert(seq, hash.to_owned());
        })
        .unwrap();
    assert_eq!(report.records, 900);
    assert_eq!(report.head_mac, HeadMac::Checked);
    for a in &answers {
        assert_eq!(seen[&a.seq], a.hash);
    }
    assert_eq!(report.last_hash, seen[&900]);
    // Without the key the MAC is there but unchecked.
    assert_eq!(
        source.verify(None, &mut |_, _| {}).unwrap().head_mac,
        HeadMac::Unchecked
    );
}

/// One runner's threads share rounds (group commit): fewer transactions than records.
#[test]
fn appends_waiting_together_share_a_round() {
    let Some(db) = TestDb::new() else { return };
    let key = Arc::new(AuditKey::random());
    let log = log(&db, &key);
    let answers = append(&log, 0, 8, 40);
    assert_eq!(answers.len(), 320);
    let rounds = log.sync_rounds();
    assert!(rounds < 320, "{rounds} rounds: no group commit");
    let report = db
        .connect()
        .audit_source()
        .verify(Some(&key), &mut |_, _| {})
        .unwrap();
    assert_eq!(report.records, 320);
}

/// Listing: the whole chain, or one tenant's records (selected in SQL), and following: records
/// appended after the end was reached are yielded by the same reader.
#[test]
fn records_are_listed_filtered_and_followed() {
    let Some(db) = TestDb::new() else { return };
    let key = Arc::new(AuditKey::random());
    let log = log(&db, &key);
    for i in 0..10 {
        log.append(rec(i)).unwrap();
    }
    let source = db.connect().audit_source();
    let all: Vec<_> = source
        .read(Filter::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len(), 10);
    assert_eq!(all[3].seq, 4);
    assert_eq!(all[3].record.request_id(), "req-3");
    let mut acme = source
        .read(Filter {
            tenant: Some("acme".into()),
            ..Filter::default()
        })
        .unwrap();
    let first: Vec<_> = acme.by_ref().map(Result::unwrap).collect();
    assert_eq!(first.len(), 5);
    assert!(first.iter().all(|r| r.record.tenant() == Some("acme")));
    log.append(rec(10)).unwrap();
    log.append(rec(11)).unwrap();
    let later: Vec<_> = acme.map(Result::unwrap).collect();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].record.request_id(), "req-10");
}

/// Rows edited, removed or the head rolled back behind warden's back are found by `verify`.
#[test]
fn tampering_is_found() {
    let Some(db) = TestDb::new() else { return };
    let key = Arc::new(AuditKey::random());
    let log = log(&db, &key);
    append(&log, 0, 4, 10);
    drop(log);
    let source = db.connect().audit_source();
    let verify = || source.verify(Some(&key), &mut |_, _| {});
    verify().unwrap();

    // One line edited.
    db.sql(
        "UPDATE audit_records SET line = replace(line, '\"message ', '\"massage ') WHERE seq = 7",
    );
    let e = verify().unwrap_err();
    assert!(matches!(e, ChainError::Hash { line: 7, .. }), "{e}");
    db.sql(
        "UPDATE audit_records SET line = replace(line, '\"massage ', '\"message ') WHERE seq = 7",
    );
    verify().unwrap();

    // Only the hash column changed: the line is intact, the row is not.
    db.sql("UPDATE audit_records SET hash = repeat('0', 64) WHERE seq = 9");
    let e = verify().unwrap_err();
    assert!(matches!(e, ChainError::Hash { line: 9, .. }), "{e}");
    db.sql("UPDATE audit_records r SET hash = substring(line from '\"hash\":\"([0-9a-f]{64})\"') WHERE seq = 9");
    verify().unwrap();

    // A column listings filter on, changed to hide the record from its tenant's listing.
    let tenant = db
        .query_text("SELECT coalesce(tenant, '') FROM audit_records WHERE seq = 8")
        .unwrap();
    db.sql("UPDATE audit_records SET tenant = 'someone-else' WHERE seq = 8");
    let e = verify().unwrap_err();
    assert!(matches!(e, ChainError::Malformed { line: 8, .. }), "{e}");
    db.sql(&format!(
        "UPDATE audit_records SET tenant = nullif('{tenant}', '') WHERE seq = 8"
    ));
    verify().unwrap();

    // A record removed from the middle.
    db.sql("DELETE FROM audit_records WHERE seq = 20");
    assert!(verify().is_err());

    // The last records cut and the head rolled back without the key: its MAC no longer fits.
    let db2 = TestDb::new().unwrap();
    let log = self::log(&db2, &key);
    append(&log, 0, 1, 5);
    drop(log);
    db2.sql(
        "DELETE FROM audit_records WHERE seq = 5;
         UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_records WHERE seq = 4)",
    );
    let e = db2
        .connect()
        .audit_source()
        .verify(Some(&key), &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(e, ChainError::HeadMac { .. }), "{e}");
}

/// A runner holding another audit key cannot open the log, and a writer that finds a head the
/// key did not write fails its records and stops.
#[test]
fn a_head_the_key_did_not_write_is_refused() {
    let Some(db) = TestDb::new() else { return };
    let key = Arc::new(AuditKey::random());
    let log = log(&db, &key);
    log.append(rec(1)).unwrap();
    let other = Arc::new(AuditKey::random());
    let e = db.connect().round_store(Some(other)).unwrap_err();
    assert!(
        matches!(
            &e,
            AuditError::Chain {
                source: ChainError::HeadMac { .. },
                ..
            }
        ),
        "{e}"
    );
    // The head forged while a writer runs.
    db.sql("UPDATE audit_head SET mac = repeat('a', 64)");
    let e = log.append(rec(2)).unwrap_err();
    assert!(
        matches!(
            &e,
            AuditError::Chain {
                source: ChainError::HeadMac { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(log.append(rec(3)), Err(AuditError::Broken)));
    assert_eq!(
        db.query_text("SELECT count(*) FROM audit_records"),
        Some("1".into())
    );
}
