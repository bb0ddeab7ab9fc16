use std::fs::{self, OpenOptions};
use std::io::Write as _;

use warden_audit::{
    AuditLog, ChainError, Event, Filter, HEAD_FILE, LOG_FILE, Record, StoredRecord, read,
};

use crate::common::{audit_dir, lines, log_with, rec, write_lines};

fn all(dir: &std::path::Path, filter: Filter) -> Vec<StoredRecord> {
    read(dir, filter).unwrap().map(Result::unwrap).collect()
}

#[test]
fn lists_everything_in_order() {
    let (_tmp, dir) = log_with(4);
    let got = all(&dir, Filter::default());
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(got[2].record, rec(3));
    assert_eq!(
        got.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
        lines(&dir)
    );
}

#[test]
fn filters_by_tenant_extension_event_and_limit() {
    let (_tmp, dir) = log_with(6);
    let acme = Filter {
        tenant: Some("acme".into()),
        ..Filter::default()
    };
    assert_eq!(
        all(&dir, acme.clone())
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        [2, 4, 6]
    );
    let first_two = Filter {
        limit: Some(2),
        ..acme
    };
    assert_eq!(all(&dir, first_two).len(), 2);
    let nobody = Filter {
        extension: Some("other".into()),
        ..Filter::default()
    };
    assert!(all(&dir, nobody).is_empty());
    let denials = Filter {
        event: Some(Event::Denial),
        ..Filter::default()
    };
    assert!(all(&dir, denials).is_empty());
}

/// `request` keeps a request's records and its nested calls' (`ID.N`), not those of another
/// request whose id merely starts the same.
#[test]
fn filters_by_request_with_its_nested_calls() {
    let (_tmp, dir) = audit_dir();
    let log = AuditLog::open(&dir).unwrap();
    for id in ["r1", "r1.1", "r1.1.2", "r10", "r1x", "r2", "r1.2"] {
        log.append(Record::new(Event::Call, id)).unwrap();
    }
    let ids = |request: &str| {
        all(
            &dir,
            Filter {
                request: Some(request.into()),
                ..Filter::default()
            },
        )
        .into_iter()
        .map(|r| r.record.request_id().to_owned())
        .collect::<Vec<_>>()
    };
    assert_eq!(ids("r1"), ["r1", "r1.1", "r1.1.2", "r1.2"]);
    assert_eq!(ids("r1.1"), ["r1.1", "r1.1.2"]);
    assert_eq!(ids("r10"), ["r10"]);
    assert!(ids("r").is_empty());
}

#[test]
fn reading_stops_at_the_first_problem() {
    let (_tmp, dir) = log_with(4);
    let mut l = lines(&dir);
    l.swap(2, 3);
    write_lines(&dir, &l);
    let mut r = read(&dir, Filter::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq, 1);
    assert_eq!(r.next().unwrap().unwrap().seq, 2);
    let err = r.next().unwrap().unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(r.next().is_none());
}

#[test]
fn a_missing_log_is_reported() {
    let (_tmp, dir) = audit_dir();
    assert!(matches!(
        read(&dir, Filter::default()),
        Err(ChainError::Missing { .. })
    ));
    assert!(matches!(
        warden_audit::verify(&dir),
        Err(ChainError::Missing { .. })
    ));
}

#[test]
fn following_sees_new_records() {
    let (_tmp, dir) = audit_dir();
    let log = AuditLog::open(&dir).unwrap();
    log.append(rec(1)).unwrap();
    let mut r = read(&dir, Filter::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq, 1);
    assert!(r.next().is_none());
    log.append(rec(2)).unwrap();
    log.append(rec(3)).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq, 2);
    assert_eq!(r.next().unwrap().unwrap().seq, 3);
    assert!(r.next().is_none());
    assert_eq!(r.records_read(), 3);
}

#[test]
fn following_waits_for_a_partial_line_to_complete() {
    let (_tmp, src) = log_with(2);
    let l = lines(&src);
    let (_tmp2, dir) = audit_dir();
    fs::create_dir_all(&dir).unwrap();
    fs::copy(src.join(HEAD_FILE), dir.join(HEAD_FILE)).unwrap();
    let (first, second) = l[1].split_at(40);
    fs::write(dir.join(LOG_FILE), format!("{}\n{first}", l[0])).unwrap();

    let mut r = read(&dir, Filter::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq, 1);
    assert!(r.next().is_none());
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .unwrap();
    writeln!(f, "{second}").unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq, 2);
    assert!(r.next().is_none());
}

#[test]
fn records_from_any_event_round_trip() {
    let (_tmp, dir) = audit_dir();
    let log = AuditLog::open(&dir).unwrap();
    let events = [
        Event::Call,
        Event::Denial,
        Event::Limit,
        Event::Install,
        Event::Upgrade,
        Event::Uninstall,
        Event::Publish,
        Event::VerificationFailure,
        Event::Load,
    ];
    for e in events {
        log.append(Record::new(e, "r")).unwrap();
    }
    let got: Vec<_> = all(&dir, Filter::default())
        .into_iter()
        .map(|s| s.record.event())
        .collect();
    assert_eq!(got, events);
    assert!(lines(&dir)[7].contains("\"event\":\"verification-failure\""));
}
