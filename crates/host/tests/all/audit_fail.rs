//! Fail closed: while the audit store cannot be written, calls are refused; once a record can
//! be stored again, calls run again.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use warden_audit::{AuditError, AuditSink, Event, MemoryAudit, Outcome, Record};
use warden_host::{CallError, Policy};

use crate::support::Lab;

/// An audit store that fails (like a full disk) while `failing` is set, and otherwise keeps
/// records in memory.
#[derive(Default)]
struct FlakySink {
    failing: AtomicBool,
    stored: MemoryAudit,
}

impl AuditSink for FlakySink {
    fn append(&self, record: Record) -> Result<(), AuditError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditError::Io {
                action: "writing",
                path: PathBuf::from("/data/audit/audit.jsonl"),
                source: io::Error::from_raw_os_error(28), // ENOSPC
            });
        }
        self.stored.append(record)
    }
}

fn refused_for_audit(e: &warden_host::CallFailure) -> bool {
    // Nothing ran: the refusal is `unavailable` (503 from the service), worth a retry later.
    matches!(&e.error, CallError::Unavailable(m) if m.what().contains("the audit log cannot be written"))
        && e.error.code().as_str() == "unavailable"
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_refused_while_the_audit_log_fails_and_allowed_after() {
    let sink = Arc::new(FlakySink::default());
    let lab = Lab::with_builder(Policy::default(), {
        let sink = Arc::clone(&sink);
        |b| b.audit(sink)
    });
    let echo = lab.load("echo");
    let hello = lab.load("hello");
    assert_eq!(lab.call(&echo, "echo", b"1").await.unwrap(), b"1");
    let healthy = sink.stored.len();

    // The disk fills. The call in flight already ran, but its records cannot be stored: its
    // result is not handed out as a success, the caller is told it ran (`host-error`, not a
    // retryable `unavailable`), and the host notices. Its records are kept.
    sink.failing.store(true, Ordering::SeqCst);
    let ran = lab.call(&echo, "echo", b"2").await.unwrap_err();
    assert!(
        matches!(&ran.error, CallError::Host(m) if m.what().contains("the call ran, but its audit records could not be written yet")),
        "{ran}"
    );
    assert_eq!(ran.error.code().as_str(), "host-error");
    assert!(
        warden_call::text::chain(&ran).contains("No space left"),
        "{ran}"
    );
    assert_eq!(sink.stored.len(), healthy);

    // From now on nothing runs, rpc or http, for as long as records cannot be stored.
    let mut refused = Vec::new();
    for _ in 0..3 {
        let e = lab.call(&echo, "echo", b"3").await.unwrap_err();
        assert!(refused_for_audit(&e), "{e}");
        assert!(
            warden_call::text::chain(&e).contains("No space left"),
            "{e}"
        );
        refused.push(e.request_id);
        let req = http::Request::get("/greet/me").body(Bytes::new()).unwrap();
        let e = lab.call_http(&hello, req).await.unwrap_err();
        assert!(refused_for_audit(&e), "{e}");
        refused.push(e.request_id);
    }
    assert_eq!(sink.stored.len(), healthy, "nothing could be stored");
    // A readiness probe can tell (`warden serve`'s `/readyz` answers 503).
    assert!(!lab.host.audit_healthy());

    // Space is freed. The next call is still refused, but its refusal is stored: that is the
    // proof the store works again. Before it: the kept records of the call that ran and of
    // the six refusals (outside attack, session 30: they were lost), late, after a record
    // saying so.
    sink.failing.store(false, Ordering::SeqCst);
    let e = lab.call(&echo, "echo", b"4").await.unwrap_err();
    assert!(refused_for_audit(&e), "{e}");
    assert!(lab.host.audit_healthy());
    let records = sink.stored.records();
    assert_eq!(records.len(), healthy + 9, "{records:#?}");
    let (marker, late) = (&records[healthy], &records[healthy + 1]);
    assert_eq!(marker.event(), Event::Recovery);
    assert!(
        marker
            .message()
            .unwrap()
            .contains("7 records (of calls that ran, changes made and requests refused)"),
        "{marker:?}"
    );
    assert_eq!(
        (late.event(), late.outcome(), late.request_id()),
        (Event::Call, Outcome::Ok, ran.request_id.as_str())
    );
    let kept: Vec<_> = records[healthy + 2..healthy + 8]
        .iter()
        .map(|r| {
            assert_eq!((r.event(), r.outcome()), (Event::Call, Outcome::Error));
            assert!(
                r.message()
                    .unwrap()
                    .contains("the audit log cannot be written"),
                "{r:?}"
            );
            r.request_id().to_owned()
        })
        .collect();
    assert_eq!(kept, refused);
    let refusal = records.last().unwrap();
    assert_eq!(
        (refusal.event(), refusal.outcome()),
        (Event::Call, Outcome::Error)
    );
    assert_eq!(refusal.extension(), Some(echo.as_str()));
    assert_eq!(refusal.request_id(), e.request_id);
    assert!(
        refusal
            .message()
            .unwrap()
            .contains("the audit log cannot be written"),
        "{refusal:?}"
    );

    // And calls run (and are audited) again.
    assert_eq!(lab.call(&echo, "echo", b"5").await.unwrap(), b"5");
    let req = http::Request::get("/greet/me").body(Bytes::new()).unwrap();
    assert_eq!(lab.call_http(&hello, req).await.unwrap().status(), 200);
    let records = sink.stored.records();
    let ok_calls = records[healthy + 3..]
        .iter()
        .filter(|r| r.event() == Event::Call && r.outcome() == Outcome::Ok)
        .count();
    assert_eq!(ok_calls, 2, "{records:#?}");
}

/// Calls refused at once while the log fails, many together: whichever probes, and whichever
/// are refused beside the probe (the first of their kind alone, the others counted into a
/// summary), every one is on the trail once records can be stored again (outside attack,
/// session 30: three in four left no record).
#[tokio::test(flavor = "multi_thread")]
async fn every_call_refused_while_the_log_fails_is_on_the_trail_after() {
    let sink = Arc::new(FlakySink::default());
    let lab = Arc::new(Lab::with_builder(Policy::default(), {
        let sink = Arc::clone(&sink);
        |b| b.audit(sink)
    }));
    let echo = lab.load("echo");
    sink.failing.store(true, Ordering::SeqCst);
    // The call that meets the failure (it ran: kept as before).
    lab.call(&echo, "echo", b"1").await.unwrap_err();
    let crowd: Vec<_> = (0..16)
        .map(|_| {
            let (lab, echo) = (Arc::clone(&lab), echo.clone());
            tokio::spawn(async move { lab.call(&echo, "echo", b"2").await.unwrap_err() })
        })
        .collect();
    let mut refused = Vec::new();
    for c in crowd {
        let e = c.await.unwrap();
        assert!(refused_for_audit(&e), "{e}");
        refused.push(e.request_id);
    }
    // A window's summary is written (and fails, and is kept) while the log still fails.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    sink.failing.store(false, Ordering::SeqCst);
    // The probe that finds the log working stores what was kept; then calls run again.
    let mut ran = false;
    for _ in 0..3 {
        if lab.call(&echo, "echo", b"3").await.is_ok() {
            ran = true;
            break;
        }
    }
    assert!(ran);
    lab.host.close().unwrap();
    let records = sink.stored.records();
    for id in &refused {
        let found = records
            .iter()
            .any(|r| r.request_id() == id || r.folded_requests().any(|f| f == id));
        assert!(found, "{id} is not on the trail: {records:#?}");
    }
    let markers = records
        .iter()
        .filter(|r| r.event() == Event::Recovery)
        .count();
    assert_eq!(markers, 1, "{records:#?}");
}

/// Records kept while the log failed are stored when the host closes, if the log works by
/// then: no request need come after the outage to probe it (a service stopped right after
/// one lost them).
#[tokio::test(flavor = "multi_thread")]
async fn kept_records_are_stored_when_the_host_closes() {
    let sink = Arc::new(FlakySink::default());
    let lab = Lab::with_builder(Policy::default(), {
        let sink = Arc::clone(&sink);
        |b| b.audit(sink)
    });
    let echo = lab.load("echo");
    let before = sink.stored.len();
    sink.failing.store(true, Ordering::SeqCst);
    let ran = lab.call(&echo, "echo", b"1").await.unwrap_err();
    let refused = lab.call(&echo, "echo", b"2").await.unwrap_err();
    assert!(refused_for_audit(&refused), "{refused}");
    sink.failing.store(false, Ordering::SeqCst);
    assert_eq!(sink.stored.len(), before);
    lab.host.close().unwrap();
    let records = sink.stored.records().split_off(before);
    let ids: Vec<_> = records.iter().map(|r| r.request_id()).collect();
    assert_eq!(records[0].event(), Event::Recovery, "{records:#?}");
    assert!(ids.contains(&ran.request_id.as_str()), "{records:#?}");
    assert!(ids.contains(&refused.request_id.as_str()), "{records:#?}");
    assert!(lab.host.audit_healthy());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_while_refusing_keeps_the_host_closed() {
    // A call refused before it ran (an unknown method) whose record cannot be stored also
    // closes the host.
    let sink = Arc::new(FlakySink::default());
    let lab = Lab::with_builder(Policy::default(), {
        let sink = Arc::clone(&sink);
        |b| b.audit(sink)
    });
    let echo = lab.load("echo");
    sink.failing.store(true, Ordering::SeqCst);
    let e = lab.call(&echo, "nope", b"").await.unwrap_err();
    assert!(matches!(e.error, CallError::Invalid(_)), "{e}");
    let e = lab.call(&echo, "echo", b"x").await.unwrap_err();
    assert!(refused_for_audit(&e), "{e}");
    sink.failing.store(false, Ordering::SeqCst);
    assert!(refused_for_audit(
        &lab.call(&echo, "echo", b"x").await.unwrap_err()
    ));
    assert_eq!(lab.call(&echo, "echo", b"y").await.unwrap(), b"y");
}

/// While records cannot be stored, the operator's changes are refused before anything changes
/// (outside attack: an uninstall and a new tenant were made, answered 503, and never recorded).
/// The change that meets the failure first is made (its record is what failed) and closes the
/// host; once a record can be stored, the next change is refused as the probe and the one
/// after it is made and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn changes_are_refused_while_the_audit_log_fails() {
    let sink = Arc::new(FlakySink::default());
    let lab = Lab::with_builder(Policy::default(), {
        let sink = Arc::clone(&sink);
        |b| b.audit(sink)
    });
    let admin = lab.host.admin().unwrap();
    let acme: warden_host::TenantName = "acme".parse().unwrap();
    admin.create_tenant(&acme).unwrap();
    let b = lab.bundle("echo", |m| m);
    let bytes = std::fs::read(&b).unwrap();
    let sig = std::fs::read(format!("{}.sig", b.display())).unwrap();
    admin
        .install(
            &acme,
            "echo",
            bytes,
            &sig,
            Some(&warden_host::Grant::None),
            false,
        )
        .unwrap();
    let echo: warden_host::ExtensionId = "warden.echo".parse().unwrap();

    sink.failing.store(true, Ordering::SeqCst);
    // The first change meets the failure: made, not recorded, and the host closes.
    let beta: warden_host::TenantName = "beta".parse().unwrap();
    let e = admin.create_tenant(&beta).unwrap_err();
    assert!(matches!(e, warden_host::HostError::AuditClosed), "{e}");
    // Every change after it is refused with nothing changed.
    let gamma: warden_host::TenantName = "gamma".parse().unwrap();
    let e = admin.create_tenant(&gamma).unwrap_err();
    assert!(matches!(e, warden_host::HostError::AuditClosed), "{e}");
    let e = admin.uninstall(&acme, &echo).unwrap_err();
    assert!(matches!(e, warden_host::HostError::AuditClosed), "{e}");
    let e = lab
        .host
        .tenant(&acme)
        .put_secret(
            &echo,
            &"TOKEN".parse().unwrap(),
            warden_host::SecretValue::new("x".into()).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(e, warden_host::HostError::AuditClosed), "{e}");
    assert!(admin.registry().tenant(&gamma).unwrap().is_none());
    assert!(admin.registry().install(&acme, &echo).unwrap().is_some());

    // Records can be stored again: the next change is refused as the probe, and recorded as
    // refused after the kept records (the change made and the ones refused while records could
    // not be stored); the one after it is made and recorded.
    sink.failing.store(false, Ordering::SeqCst);
    let e = admin.uninstall(&acme, &echo).unwrap_err();
    assert!(matches!(e, warden_host::HostError::AuditClosed), "{e}");
    assert!(admin.registry().install(&acme, &echo).unwrap().is_some());
    assert!(admin.uninstall(&acme, &echo).unwrap());
    let records = sink.stored.records();
    let uninstalls: Vec<_> = records
        .iter()
        .filter(|r| r.event() == Event::Uninstall)
        .map(|r| r.outcome())
        .collect();
    assert_eq!(
        uninstalls,
        vec![Outcome::Error, Outcome::Error, Outcome::Ok]
    );
    let tenants: Vec<_> = records
        .iter()
        .filter(|r| r.event() == Event::Tenant)
        .map(|r| (r.tenant().map(str::to_owned), r.outcome()))
        .collect();
    assert!(
        tenants.contains(&(Some("beta".into()), Outcome::Ok))
            && tenants.contains(&(Some("gamma".into()), Outcome::Error)),
        "{tenants:?}"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event() == Event::Recovery)
            .count(),
        1
    );
}
