//! Hostile guests: each is stopped or denied with a clear error, audited, and the next call on
//! the same host succeeds.

use std::time::{Duration, Instant};

use warden_audit::{Event, Outcome};
use warden_host::{CallError, ExtensionId};

use crate::support::{Lab, text};

/// Time limits fire within this margin (epoch tick, scheduling, instance teardown).
const MARGIN: Duration = Duration::from_millis(750);

async fn still_serves(lab: &Lab, id: &ExtensionId) {
    let out = lab.call(id, "state", b"").await.unwrap();
    assert_eq!(text(&out), "count=1 leftover=no");
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_at_the_time_limit() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    let t = Instant::now();
    let e = lab.call(&id, "loop", b"").await.unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(e.error, CallError::Timeout(d) if d == Duration::from_secs(1)),
        "{e}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(1) + MARGIN,
        "{took:?}"
    );
    let last = lab.audit.records().pop().unwrap();
    assert_eq!(
        (last.event(), last.outcome()),
        (Event::Limit, Outcome::Timeout)
    );
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_traps_cleanly() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    let e = lab.call(&id, "recurse", b"").await.unwrap_err();
    // Rust guests keep their stack in linear memory: overflowing it is an out-of-bounds trap
    // (or, for deep wasm frames, "call stack exhausted"). Either way a trap, not a host crash.
    assert!(matches!(&e.error, CallError::Trap(_)), "{e}");
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_host_call_is_stopped_at_the_time_limit() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    let t = Instant::now();
    let e = lab.call(&id, "sleep", b"10000").await.unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e.error, CallError::Timeout(_)), "{e}");
    assert!(took < Duration::from_secs(1) + MARGIN, "{took:?}");
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_is_capped_for_the_whole_instance() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    // The guest asks for 100 MiB in 1 MiB steps; the 32 MiB budget stops it, gracefully.
    let out = lab.call(&id, "grow", b"100").await;
    match out {
        Ok(bytes) => {
            let got: u64 = text(&bytes)
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{}", text(&bytes)));
            assert!(got < 32, "grew {got} MiB past a 32 MiB limit");
        }
        Err(e) => assert!(matches!(e.error, CallError::MemoryLimit(_)), "{e}"),
    }
    let records = lab.audit.records();
    assert!(
        records.iter().any(|r| r.outcome() == Outcome::MemoryLimit),
        "a memory limit hit is audited: {records:#?}"
    );
    // A result too large to build inside the budget: the guest's allocation fails.
    let e = lab.call(&id, "huge", b"100000000").await.unwrap_err();
    assert!(
        matches!(&e.error, CallError::MemoryLimit(_))
            || matches!(&e.error, CallError::Extension { code, .. } if code == "out-of-memory"),
        "{e}"
    );
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_results_are_refused() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    let e = lab.call(&id, "huge", b"2000000").await.unwrap_err();
    assert!(
        matches!(e.error, CallError::TooLarge { what: "result", .. }),
        "{e}"
    );
    let last = lab.audit.records().pop().unwrap();
    assert_eq!(last.outcome(), Outcome::TooLarge);
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_state_survives_between_calls() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    for _ in 0..5 {
        let out = lab.call(&id, "state", b"").await.unwrap();
        assert_eq!(text(&out), "count=1 leftover=no");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn traps_and_ambient_authority() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    let e = lab.call(&id, "trap", b"").await.unwrap_err();
    assert!(matches!(e.error, CallError::Trap(_)), "{e}");
    // Issue 9, finding 7: `exit(3)` showed as a trap with a wasm backtrace. WASI 0.2's
    // `exit` carries only success or failure, so any non-zero status arrives as 1.
    for (status, seen) in [("3", 1), ("0", 0)] {
        let e = lab.call(&id, "exit", status.as_bytes()).await.unwrap_err();
        match &e.error {
            CallError::Extension { code, message } => {
                assert_eq!(code, "exit");
                assert_eq!(
                    message,
                    &format!("the extension exited with status {seen} before returning a result")
                );
            }
            other => panic!("exit({status}) should be the extension's own error, not {other:?}"),
        }
    }
    let env = text(&lab.call(&id, "env", b"").await.unwrap());
    assert_eq!(env, "env=|args=", "no environment, no arguments");
    let files = text(&lab.call(&id, "files", b"").await.unwrap());
    assert!(
        files.starts_with("passwd=err:") && files.contains("root=err:"),
        "{files}"
    );
    let net = text(&lab.call(&id, "net", b"").await.unwrap());
    assert!(!net.contains("ok"), "network reached: {net}");
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_captured_escaped_and_capped() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    // 20k lines (180 KB) with an escape sequence: captured up to the cap, escaped, the rest counted.
    let called = lab
        .host
        .default_tenant()
        .call(&id, "stdout", b"hi\x1b[31m\n|20000")
        .await
        .unwrap();
    assert_eq!(text(&called.value), "printed");
    let logs = &called.logs;
    assert!(logs.len() > 100, "{}", logs.len());
    assert_eq!(logs[0].text, "hi\\u{1b}[31m", "escaped");
    assert!(
        logs.iter()
            .all(|l| !l.text.contains('\x1b') && !l.text.contains('\n'))
    );
    let last = &logs[logs.len() - 1].text;
    assert!(last.contains("bytes dropped: output cap reached"), "{last}");
    let kept: usize = logs.iter().map(|l| l.text.len()).sum();
    assert!(kept < 2 * warden_runtime::call::MAX_OUTPUT_BYTES, "{kept}");
    let e = lab.call(&id, "trap", b"").await.unwrap_err();
    assert!(e.logs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn extensions_keep_their_own_limits_when_called_together() {
    let lab = Lab::new();
    let fast = lab.load("hostile");
    let slow = lab.load_edited("hostile", |m| {
        m.replace("id = \"warden.hostile\"", "id = \"warden.hostile-slow\"")
            .replace("max_execution_time = \"1s\"", "max_execution_time = \"3s\"")
    });
    let t = Instant::now();
    let (a, b) = tokio::join!(
        async {
            let r = lab.call(&fast, "loop", b"").await;
            (r, t.elapsed())
        },
        async {
            let r = lab.call(&slow, "loop", b"").await;
            (r, t.elapsed())
        }
    );
    assert!(matches!(a.0.unwrap_err().error, CallError::Timeout(d) if d == Duration::from_secs(1)));
    assert!(matches!(b.0.unwrap_err().error, CallError::Timeout(d) if d == Duration::from_secs(3)));
    assert!(
        a.1 < Duration::from_secs(1) + MARGIN,
        "fast one stopped late: {:?}",
        a.1
    );
    assert!(
        b.1 >= Duration::from_secs(3) && b.1 < Duration::from_secs(3) + MARGIN,
        "slow one: {:?}",
        b.1
    );
}

/// Fills the hostile guest's two slots (`max_concurrent_calls = 2`) with calls sleeping `hold`
/// ms, sends a third (sleeping `third` ms) 100 ms later while `meanwhile` runs, and returns
/// the three outcomes and how long the third took from when it was sent.
async fn a_third_call_over_the_cap(
    lab: &Lab,
    id: &ExtensionId,
    hold: &[u8],
    third: &[u8],
    meanwhile: impl std::future::Future<Output = ()>,
) -> (CallResult, CallResult, CallResult, Duration) {
    let (a, b, (c, waited), ()) = tokio::join!(
        lab.call(id, "sleep", hold),
        lab.call(id, "sleep", hold),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t = Instant::now();
            (lab.call(id, "sleep", third).await, t.elapsed())
        },
        meanwhile
    );
    (a, b, c, waited)
}

type CallResult = Result<Vec<u8>, warden_host::CallFailure>;

#[tokio::test(flavor = "multi_thread")]
async fn excess_concurrent_calls_are_refused_as_busy() {
    let lab = Lab::new();
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let (a, b, c, waited) = a_third_call_over_the_cap(&lab, &id, b"900", b"300", async {}).await;
    assert_eq!(text(&a.unwrap()), "slept");
    assert_eq!(text(&b.unwrap()), "slept");
    // Refused once it waited `[policy] busy_wait` (100 ms by default) for a slot.
    let e = c.unwrap_err();
    assert!(matches!(e.error, CallError::Busy(_)), "{e}");
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    let busy: Vec<_> = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| r.outcome() == Outcome::Busy)
        .collect();
    assert_eq!(busy.len(), 1);
    still_serves(&lab, &id).await;
}

/// A call over `max_concurrent_calls` waits up to `[policy] busy_wait` for a slot: it runs
/// when one frees in time (a burst just over the cap is served, and a flood is answered at
/// the pace slots free instead of as fast as refusals can be made), and with a wait of 0 it
/// is refused at once, as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_over_the_cap_waits_a_bounded_time_for_a_slot() {
    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::from_secs(2),
        ..warden_manifest::Policy::default()
    });
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let (a, b, c, waited) = a_third_call_over_the_cap(&lab, &id, b"400", b"10", async {}).await;
    assert_eq!(text(&a.unwrap()), "slept");
    assert_eq!(text(&b.unwrap()), "slept");
    assert_eq!(text(&c.unwrap()), "slept");
    assert!(
        waited >= Duration::from_millis(200),
        "ran before a slot freed: {waited:?}"
    );
    assert!(
        !lab.audit
            .records()
            .iter()
            .any(|r| r.outcome() == Outcome::Busy),
        "nothing was refused"
    );

    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::ZERO,
        ..warden_manifest::Policy::default()
    });
    let id = lab.load("hostile");
    let (a, b, c, waited) = a_third_call_over_the_cap(&lab, &id, b"600", b"10", async {}).await;
    assert!(a.is_ok() && b.is_ok());
    assert!(matches!(c.unwrap_err().error, CallError::Busy(_)));
    assert!(waited < Duration::from_millis(300), "{waited:?}");
}

/// A call waiting for a slot when its install is removed does not run on the record it was
/// looked up with: it is refused (busy), and the calls after it find nothing loaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_waiting_for_a_slot_does_not_outlive_its_install() {
    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::from_secs(2),
        ..warden_manifest::Policy::default()
    });
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let (a, b, c, waited) = a_third_call_over_the_cap(&lab, &id, b"900", b"10", async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(lab.host.default_tenant().unload(&id));
    })
    .await;
    // Unloaded (as an upgrade replaces it): the calls running end as they are...
    assert_eq!(text(&a.unwrap()), "slept");
    assert_eq!(text(&b.unwrap()), "slept");
    // ...and the one waiting is refused when it happens, not when a slot frees.
    let e = c.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Busy(m) if m.contains("was replaced while the call waited")),
        "{e}"
    );
    assert!(waited < Duration::from_millis(600), "{waited:?}");
    assert!(lab.call(&id, "sleep", b"10").await.is_err());
}

/// What was judged is what is withdrawn: an install loaded again after it was looked at (a
/// reinstall while the registry was read) stays.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_install_looked_at_is_withdrawn() {
    let lab = Lab::new();
    let id = lab.load("echo");
    let tenant = lab.host.default_tenant();
    let judged = tenant.loaded(&id).unwrap();
    assert_eq!(judged.info().id, id);
    // Loaded again meanwhile.
    assert!(tenant.unload(&id));
    let again = lab.load("echo");
    assert_eq!(again, id);
    assert!(!tenant.withdraw_loaded(&judged));
    assert_eq!(lab.call(&id, "echo", b"still").await.unwrap(), b"still");
    // The one loaded now, judged: withdrawn.
    let now = tenant.loaded(&id).unwrap();
    assert!(tenant.withdraw_loaded(&now));
    assert!(tenant.loaded(&id).is_none());
    assert!(lab.call(&id, "echo", b"gone").await.is_err());
}

/// An install taken away (uninstalled, here or by another runner) stops its calls at once:
/// those running are stopped, those waiting for a slot refused, each with its audit record;
/// nothing of it runs afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn an_uninstalled_extensions_calls_stop_at_once() {
    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::from_secs(5),
        ..warden_manifest::Policy::default()
    });
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let started = Instant::now();
    let (a, b, c, _) = a_third_call_over_the_cap(&lab, &id, b"3000", b"10", async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(lab.host.default_tenant().withdraw(&id));
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the calls ran on: {:?}",
        started.elapsed()
    );
    for running in [a, b] {
        let e = running.unwrap_err();
        assert!(
            matches!(&e.error, CallError::Uninstalled(m) if m.contains("uninstalled while the call ran")),
            "{e}"
        );
    }
    let e = c.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Uninstalled(m) if m.contains("uninstalled while the call waited")),
        "{e}"
    );
    let stopped: Vec<_> = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| {
            r.event() == Event::Call && r.message().is_some_and(|m| m.contains("uninstalled while"))
        })
        .collect();
    assert_eq!(stopped.len(), 3, "{stopped:?}");
    assert!(stopped.iter().all(|r| r.outcome() == Outcome::Invalid));
    // Each says how long it lasted (150-250 ms, running or waiting), and the two that ran
    // how much memory their instance held: not the zeros of a call that never ran.
    for r in &stopped {
        let ms = r.duration_ms().unwrap_or(0);
        assert!((100..900).contains(&ms), "{r:?}");
        let peak = r.memory_peak_bytes().unwrap_or(0);
        if r.message()
            .is_some_and(|m| m.contains("while the call ran"))
        {
            assert!(peak >= 64 * 1024, "{r:?}");
        } else {
            assert_eq!(peak, 0, "it never ran: {r:?}");
        }
    }
    assert!(lab.call(&id, "sleep", b"10").await.is_err());
}

/// A call that waited out its `busy_wait` for a slot of an install uninstalled meanwhile by
/// another process on the same storage (`warden uninstall`, another runner), which this one
/// had not yet seen, is refused as not there rather than busy, and the calls holding the
/// slots stop with it (outside attack, session 27: 12 waiting calls got 429 while the CLI's
/// commit waited on a slow disk).
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_that_ends_after_an_uninstall_elsewhere_is_refused_as_not_there() {
    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::from_millis(500),
        ..warden_manifest::Policy::default()
    });
    let acme: warden_host::TenantName = "acme".parse().unwrap();
    let admin = lab.host.admin().unwrap();
    admin.create_tenant(&acme).unwrap();
    let b = lab.bundle("hostile", |m| m);
    let bytes = std::fs::read(&b).unwrap();
    let sig = std::fs::read(format!("{}.sig", b.display())).unwrap();
    admin
        .install(
            &acme,
            "hostile",
            bytes,
            &sig,
            Some(&warden_host::Grant::None),
            true,
        )
        .unwrap();
    let id: ExtensionId = "warden.hostile".parse().unwrap();
    admin.load_installed(&acme, &id).unwrap();
    let view = lab.host.tenant(&acme);
    let other = warden_host::Host::builder()
        .trust(warden_host::TrustBundle::parse(lab.trust_text()).unwrap())
        .data_dir(lab.dir.path().join("data"))
        .build()
        .unwrap();
    let started = Instant::now();
    // max_concurrent_calls = 2: two hold the slots, the third waits.
    let (a, b, (c, waited)) = tokio::join!(
        view.call(&id, "sleep", b"5000"),
        view.call(&id, "sleep", b"5000"),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(other.admin().unwrap().uninstall(&acme, &id).unwrap());
            let t = Instant::now();
            (view.call(&id, "sleep", b"10").await, t.elapsed())
        }
    );
    let e = c.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Uninstalled(m) if m.contains("uninstalled while the call waited for a slot")),
        "{e}"
    );
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    // Those holding the slots stopped with it, not at their 5 s.
    for running in [a, b] {
        let e = running.unwrap_err();
        assert!(matches!(&e.error, CallError::Uninstalled(_)), "{e}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let refused = lab
        .audit
        .records()
        .into_iter()
        .find(|r| r.request_id() == e.request_id && r.event() == Event::Call)
        .unwrap();
    assert_eq!(refused.outcome(), Outcome::Invalid, "{refused:?}");
}

/// A call whose caller goes away is stopped, and its record says how long it ran and how much
/// memory its instance held (outside attack, session 26: such records said 0 ms and 0 bytes).
#[tokio::test(flavor = "multi_thread")]
async fn a_call_its_caller_left_is_recorded_with_its_time_and_memory() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    let tenant = lab.host.default_tenant();
    let call = tenant.call_as("left-1".into(), &id, "sleep", b"3000");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err()
    );
    // Written on the runtime once the call is dropped.
    let record = lab.call_record("left-1").await;
    assert!(
        record
            .message()
            .is_some_and(|m| m.contains("the caller went away")),
        "{record:?}"
    );
    let ms = record.duration_ms().unwrap_or(0);
    assert!((250..2500).contains(&ms), "{record:?}");
    assert!(
        record.memory_peak_bytes().unwrap_or(0) >= 64 * 1024,
        "{record:?}"
    );
}

/// A call whose caller goes away while it waits for a slot leaves a record saying so, as a
/// wait that runs out does (outside attack, session 28: it left none), and holds no slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_its_caller_left_while_it_waited_for_a_slot_is_recorded() {
    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::from_secs(10),
        ..warden_manifest::Policy::default()
    });
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let tenant = lab.host.default_tenant();
    let a = tenant.slot_as("wait-a".into(), &id).await.unwrap();
    let b = tenant.slot_as("wait-b".into(), &id).await.unwrap();
    let call = tenant.call_as("wait-left".into(), &id, "sleep", b"1");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err()
    );
    let record = lab.call_record("wait-left").await;
    assert!(
        record
            .message()
            .is_some_and(|m| m.contains("the caller went away before the call ran")),
        "{record:?}"
    );
    let ms = record.duration_ms().unwrap_or(0);
    assert!((250..2500).contains(&ms), "{record:?}");
    assert_eq!(record.memory_peak_bytes().unwrap_or(0), 0, "nothing ran");
    // It left no claim on a slot: one given back is the next call's at once.
    drop(b);
    let called = tokio::time::timeout(Duration::from_secs(5), lab.call(&id, "sleep", b"1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&called), "slept");
    drop(a);
}

/// A slot taken before the call's input is read ([`warden_host::Slot`]) counts in the
/// install's `max_concurrent_calls` until it is used or dropped; a slot whose install is
/// uninstalled before the input arrives runs nothing and is refused as not there, audited
/// under its request id.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_taken_before_the_input_holds_its_place_and_dies_with_its_install() {
    let lab = Lab::new(); // busy_wait 100 ms
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let tenant = lab.host.default_tenant();
    let a = tenant.slot_as("slot-a".into(), &id).await.unwrap();
    let b = tenant.slot_as("slot-b".into(), &id).await.unwrap();
    assert_eq!(a.info().id, id);
    let e = tenant.slot_as("slot-c".into(), &id).await.err().unwrap();
    assert!(matches!(e.error, CallError::Busy(_)), "{e}");
    assert!(
        lab.call(&id, "sleep", b"1").await.is_err(),
        "both slots are held"
    );
    drop(b);
    let called = a.call("sleep", b"1").await.unwrap();
    assert_eq!(called.request_id, "slot-a");
    assert_eq!(text(&called.value), "slept");
    // Taken, then the install is replaced (an upgrade, a new grant) before the input
    // arrives: refused as busy, so that a new try runs on the new install.
    let slot = tenant.slot_as("slot-r".into(), &id).await.unwrap();
    assert!(tenant.unload(&id));
    let e = slot.call("sleep", b"1").await.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Busy(m) if m.contains("replaced while the call waited for its input")),
        "{e}"
    );
    assert_eq!(lab.load("hostile"), id);
    // Replaced by the same bundle and grant (as a trust reload that still accepts it does):
    // the call runs.
    let slot = tenant.slot_as("slot-t".into(), &id).await.unwrap();
    assert!(tenant.unload(&id));
    assert_eq!(lab.load("hostile"), id);
    assert_eq!(
        text(&slot.call("sleep", b"1").await.unwrap().value),
        "slept"
    );
    // Taken, then the install goes before the input arrives.
    let slot = tenant.slot_as("slot-d".into(), &id).await.unwrap();
    assert!(tenant.withdraw(&id));
    let e = slot.call("sleep", b"1").await.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Uninstalled(m) if m.contains("waited for its input")),
        "{e}"
    );
    let records = lab.audit.records();
    let d: Vec<_> = records
        .iter()
        .filter(|r| r.request_id() == "slot-d")
        .collect();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].outcome(), Outcome::Invalid);
    assert!(!records.iter().any(|r| r.event() == Event::CallStart));
    // Taken, then the host starts to shut down: nothing starts during the drain.
    assert_eq!(lab.load("hostile"), id);
    let slot = tenant.slot_as("slot-s".into(), &id).await.unwrap();
    lab.host.stop_waiting();
    let e = slot.call("sleep", b"1").await.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Busy(m) if m.contains("shutting down")),
        "{e}"
    );
}

/// A trust reload stops at once the calls running on an install whose signature it no longer
/// accepts (a key revoked), each with its audit record; under a bundle that still accepts it,
/// calls run on.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_stops_the_calls_running_at_once() {
    use warden_trust::{SigningKey, TrustBundle};
    let lab = Lab::new();
    let id = lab.load("hostile");
    let same = || TrustBundle::parse(lab.trust_text()).unwrap();
    let (a, ()) = tokio::join!(lab.call(&id, "sleep", b"600"), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lab.host.set_trust(same(), "the same bundle").unwrap();
    });
    assert_eq!(text(&a.unwrap()), "slept");

    let id = lab.load("hostile");
    let ours = same().publishers()[0].keys()[0].to_spki_pem();
    let other = SigningKey::generate().public_key().to_spki_pem();
    let revoked = TrustBundle::parse(&format!(
        "[[publisher]]\nname = \"warden-examples\"\nkeys = [{other:?}]\nrevoked = [{ours:?}]\n"
    ))
    .unwrap();
    let started = Instant::now();
    let (a, ()) = tokio::join!(lab.call(&id, "sleep", b"3000"), async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        lab.host
            .set_trust(revoked, "a bundle revoking the key")
            .unwrap();
    });
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the call ran on: {:?}",
        started.elapsed()
    );
    let e = a.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Untrusted(m) if m.contains("revoked") && m.contains("it was stopped")),
        "{e}"
    );
    let records = lab.audit.records();
    let call = records.iter().rfind(|r| r.event() == Event::Call).unwrap();
    assert_eq!(call.outcome(), Outcome::Denied);
    assert!(
        call.message()
            .is_some_and(|m| m.contains("no longer trusted")),
        "{call:?}"
    );
    let reload = records
        .iter()
        .rfind(|r| r.event() == Event::TrustReload)
        .unwrap();
    assert!(
        reload
            .message()
            .is_some_and(|m| m.contains("1 loaded install(s) no longer verify")),
        "{reload:?}"
    );
    assert!(lab.call(&id, "sleep", b"10").await.is_err());
}

/// A caller that already spent part of the policy's `busy_wait` on the same request (a
/// service, on its tenant's limits) gives the call only the rest: refused after that, not
/// after the whole `busy_wait` again.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_waits_only_what_its_caller_has_left() {
    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::from_secs(3),
        ..warden_manifest::Policy::default()
    });
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let view = lab
        .host
        .default_tenant()
        .waiting_at_most(Duration::from_millis(200));
    let (a, b, (c, waited)) = tokio::join!(
        lab.call(&id, "sleep", b"900"),
        lab.call(&id, "sleep", b"900"),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t = Instant::now();
            (view.call(&id, "sleep", b"10").await, t.elapsed())
        }
    );
    assert!(a.is_ok() && b.is_ok());
    let e = c.unwrap_err();
    assert!(matches!(e.error, CallError::Busy(_)), "{e}");
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(700),
        "{waited:?}"
    );
}

/// A host told to stop waiting (a service starting its shutdown) refuses the calls waiting
/// for a slot at once instead of starting them during the drain; calls running go on.
#[tokio::test(flavor = "multi_thread")]
async fn calls_waiting_for_a_slot_are_refused_when_the_host_stops_waiting() {
    let lab = Lab::with_policy(warden_manifest::Policy {
        busy_wait: Duration::from_secs(5),
        ..warden_manifest::Policy::default()
    });
    let id = lab.load("hostile"); // max_concurrent_calls = 2
    let (a, b, c, waited) = a_third_call_over_the_cap(&lab, &id, b"600", b"10", async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        lab.host.stop_waiting();
    })
    .await;
    assert_eq!(text(&a.unwrap()), "slept");
    assert_eq!(text(&b.unwrap()), "slept");
    let e = c.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Busy(m) if m.contains("shutting down")),
        "{e}"
    );
    assert!(
        waited < Duration::from_millis(450),
        "refused only when a slot freed: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fuel_limits_stop_a_busy_guest_before_its_time_limit() {
    let lab = Lab::new();
    let id = lab.load_edited("hostile", |m| {
        m.replace("[limits]", "[limits]\nmax_fuel = 5000000")
    });
    let t = Instant::now();
    let e = lab.call(&id, "loop", b"").await.unwrap_err();
    assert!(
        matches!(e.error, CallError::FuelExhausted(5_000_000)),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "fuel, not time, stopped it"
    );
    let last = lab.audit.records().pop().unwrap();
    assert_eq!(last.outcome(), Outcome::FuelExhausted);
    // A metered call that finishes reports the fuel it used.
    lab.call(&id, "state", b"").await.unwrap();
    let last = lab.audit.records().pop().unwrap();
    assert!(
        last.fuel().is_some_and(|f| f > 0 && f < 5_000_000),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ungranted_capabilities_are_typed_errors_and_audited() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    let out = text(&lab.call(&id, "egress", b"example.com").await.unwrap());
    assert_eq!(out, "egress=err:ErrorCode::HttpRequestDenied");
    let out = text(&lab.call(&id, "invoke", b"warden.echo").await.unwrap());
    assert_eq!(out, "invoke=err:denied");
    let denials: Vec<_> = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Denial)
        .collect();
    assert_eq!(denials.len(), 2, "{denials:#?}");
    assert_eq!(
        (denials[0].capability(), denials[0].target()),
        (Some("network"), Some("http://example.com:80"))
    );
    assert_eq!(
        (denials[1].capability(), denials[1].target()),
        (Some("calls"), Some("warden.echo"))
    );
    assert!(denials.iter().all(|d| d.outcome() == Outcome::Denied));
    still_serves(&lab, &id).await;
}

fn get(path: &str) -> http::Request<bytes::Bytes> {
    http::Request::get(path).body(bytes::Bytes::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_guests_that_finish_early_or_flood_the_body_are_contained() {
    let lab = Lab::new();
    let id = lab.load("hostile-http");
    // A guest that sets the response and finishes before the host reads it (empty body, or no
    // body at all): answered normally, every time, and audited.
    for _ in 0..5 {
        let resp = lab.call_http(&id, get("/empty")).await.unwrap();
        assert_eq!(resp.status(), 204);
        assert!(resp.body().is_empty());
        let resp = lab.call_http(&id, get("/nobody")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.body().is_empty());
    }
    let calls = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Call)
        .count();
    assert_eq!(calls, 10);
    // A body far over the 1 MiB cap ends the call as too large (not at the deadline).
    let e = lab.call_http(&id, get("/big/134217728")).await.unwrap_err();
    assert!(
        matches!(
            e.error,
            CallError::TooLarge {
                what: "response body",
                ..
            }
        ),
        "{e}"
    );
    let last = lab.audit.records().pop().unwrap();
    assert_eq!(last.outcome(), Outcome::TooLarge);
    let resp = lab.call_http(&id, get("/")).await.unwrap();
    assert_eq!(resp.body().as_ref(), b"fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_side_allocations_a_guest_can_request_are_capped() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    // Random bytes are allocated by the host, outside the guest's memory budget: capped at 1 MiB.
    let out = lab.call(&id, "random", b"1048576").await.unwrap();
    assert_eq!(text(&out), "random=1048576");
    let e = lab.call(&id, "random", b"67108864").await.unwrap_err();
    assert!(matches!(e.error, CallError::Trap(_)), "{e}");
    still_serves(&lab, &id).await;
}

/// Header maps live in the host's memory, outside the guest's budget: a call holds at most 64
/// (about 8 MB); the one past it stops the call, which is audited with the limit. No grant is
/// needed to make them, so this bounds every component.
#[tokio::test(flavor = "multi_thread")]
async fn header_maps_in_host_memory_are_bounded_per_call() {
    let lab = Lab::new();
    let id = lab.load("hostile");
    assert_eq!(
        text(&lab.call(&id, "fields", b"60").await.unwrap()),
        "fields=ok:60"
    );
    let e = lab.call(&id, "fields", b"100000").await.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Trap(m) if m.contains("more than 64 header maps")),
        "{e}"
    );
    let records = lab.audit.records();
    assert!(
        records
            .iter()
            .any(|r| r.target() == Some("header maps") && r.event() == Event::Limit),
        "{records:?}"
    );
    still_serves(&lab, &id).await;
}
