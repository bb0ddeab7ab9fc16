//! Instances kept between calls (`[policy.component] warm_calls`): what survives, for whom,
//! for how long, and what the audit and the redactor make of it. Real guests: `hostile`
//! (its `state` method counts calls in its instance), `hostile-secrets` (`keep` a secret in
//! memory, `spill` it in a later call), `hello` (the http path).

use warden_audit::{Event, Record};
use warden_host::{
    CallError, ExtensionId, Grant, Policy, SecretName, SecretValue, Stream, TenantName,
};

use crate::support::{Lab, text};

fn warm_policy(calls: u32) -> Policy {
    Policy::parse(&format!(
        "[policy.component]\nwarm_calls = {calls}\nwarm_extensions = [\"*\"]\n"
    ))
    .unwrap()
}

async fn state(lab: &Lab, tenant: &TenantName, id: &ExtensionId) -> String {
    let out = lab
        .host
        .tenant(tenant)
        .call(id, "state", b"")
        .await
        .unwrap();
    text(&out.value)
}

fn count(state: &str) -> u32 {
    state
        .split(' ')
        .find_map(|w| w.strip_prefix("count="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {state:?}"))
}

fn calls(lab: &Lab) -> Vec<Record> {
    lab.audit
        .records()
        .into_iter()
        .filter(|r| matches!(r.event(), Event::Call | Event::Limit))
        .collect()
}

fn kept_note(r: &Record) -> bool {
    r.message()
        .is_some_and(|m| m.contains("ran in an instance kept from"))
}

#[tokio::test]
async fn without_the_policy_every_call_gets_a_fresh_instance() {
    let hello = "warden.hello";
    for policy in [
        Policy::default(),
        // Kept instances for another extension only.
        Policy::parse(&format!(
            "[policy.component]\nwarm_calls = 9\nwarm_extensions = [\"{hello}\"]\n"
        ))
        .unwrap(),
    ] {
        let lab = Lab::with_policy(policy);
        let id = lab.load("hostile");
        assert_ne!(id.as_str(), hello);
        let t = TenantName::default_tenant();
        for _ in 0..3 {
            assert_eq!(count(&state(&lab, &t, &id).await), 1);
        }
        assert!(calls(&lab).iter().all(|r| !kept_note(r)));
    }
}

#[tokio::test]
async fn an_instance_answers_at_most_warm_calls_calls_and_each_reuse_is_audited() {
    let lab = Lab::with_policy(warm_policy(3));
    let id = lab.load("hostile");
    let t = TenantName::default_tenant();
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(count(&state(&lab, &t, &id).await));
    }
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
    let records = calls(&lab);
    assert_eq!(records.len(), 7);
    let notes: Vec<Option<&str>> = records.iter().map(|r| r.message()).collect();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(kept_note(r), i % 3 != 0, "call {i}: {notes:?}");
    }
    assert!(
        records[2]
            .message()
            .is_some_and(|m| m.contains("kept from 2 earlier call(s)")
                && m.contains("[policy.component] warm_calls")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_fault_drops_the_instance_and_the_guests_own_error_does_not() {
    let lab = Lab::with_policy(warm_policy(100));
    let id = lab.load_edited("hostile", |m| {
        m.replace("max_execution_time = \"5s\"", "max_execution_time = \"1s\"")
    });
    let t = TenantName::default_tenant();
    assert_eq!(count(&state(&lab, &t, &id).await), 1);
    // The guest's own error: it ended cleanly, its instance answers on.
    let e = lab.call(&id, "fail", b"\"no\"").await.unwrap_err();
    assert!(matches!(e.error, CallError::Extension { .. }), "{e:?}");
    assert_eq!(count(&state(&lab, &t, &id).await), 2);
    // A trap, a time-out, an exit and a refused memory growth each end the instance.
    for (method, input) in [
        ("trap", &b""[..]),
        ("loop", b""),
        ("exit", b"3"),
        ("grow", b"1000000"),
    ] {
        let before = count(&state(&lab, &t, &id).await);
        assert!(before >= 2, "before {method}: {before}");
        let r = lab.call(&id, method, input).await;
        let after = count(&state(&lab, &t, &id).await);
        assert_eq!(after, 1, "{method} left its instance in use: {r:?}");
    }
}

#[tokio::test]
async fn kept_instances_never_cross_tenants_or_installs() {
    let lab = Lab::with_policy(warm_policy(100));
    let a = TenantName::default_tenant();
    let b: TenantName = "tenant-b".parse().unwrap();
    let path = lab.bundle("hostile", |m| m);
    let id = lab
        .host
        .tenant(&a)
        .load_file(&path, None, &Grant::None)
        .unwrap()
        .id;
    lab.host
        .tenant(&b)
        .load_file(&path, None, &Grant::None)
        .unwrap();
    assert_eq!(count(&state(&lab, &a, &id).await), 1);
    assert_eq!(count(&state(&lab, &a, &id).await), 2);
    // Same bundle, same code in memory: another tenant's install still starts fresh.
    assert_eq!(count(&state(&lab, &b, &id).await), 1);
    assert_eq!(count(&state(&lab, &a, &id).await), 3);
    // Loaded again (an upgrade, a grant change): the old install's instances die with it.
    lab.host
        .tenant(&a)
        .load_file(&path, None, &Grant::None)
        .unwrap();
    assert_eq!(count(&state(&lab, &a, &id).await), 1);
}

#[tokio::test]
async fn a_secret_kept_in_memory_is_redacted_in_every_later_call() {
    const TOKEN: &str = "Warm-S3cret-Value-91c7e";
    let lab = Lab::with_policy(warm_policy(10));
    let path = lab.bundle("hostile-secrets", |m| m);
    let t = TenantName::default_tenant();
    let id = lab
        .host
        .tenant(&t)
        .load_file(&path, None, &"secrets".parse().unwrap())
        .unwrap()
        .id;
    let name: SecretName = "API_TOKEN".parse().unwrap();
    lab.host
        .tenant(&t)
        .put_secret(&id, &name, SecretValue::new(TOKEN.into()).unwrap())
        .unwrap();
    let tenant = lab.host.tenant(&t);
    assert_eq!(
        text(&tenant.call(&id, "keep", b"API_TOKEN").await.unwrap().value),
        "kept"
    );
    // The next calls read no secret: the value comes from the instance's memory.
    for _ in 0..2 {
        let e = tenant.call(&id, "spill", b"").await.unwrap_err();
        let CallError::Extension { code, message } = &e.error else {
            panic!("{e:?}");
        };
        assert_eq!(code, "spilled");
        assert!(!message.contains(TOKEN), "{message}");
        assert!(message.contains("[REDACTED]"), "{message}");
        let out: Vec<&str> = e
            .logs
            .iter()
            .filter(|l| matches!(l.stream, Stream::Stdout | Stream::Stderr | Stream::Log(_)))
            .map(|l| l.text.as_str())
            .collect();
        assert!(out.len() >= 3, "{out:?}");
        assert!(out.iter().all(|m| !m.contains(TOKEN)), "{out:?}");
    }
    let audit = format!("{:?}", lab.audit.records());
    assert!(!audit.contains(TOKEN), "{audit}");
    assert!(audit.contains("[REDACTED]"), "{audit}");
    // Without the policy the value cannot survive a call at all.
    let fresh = Lab::new();
    let id = fresh.load_granted("hostile-secrets", |m| m, &"secrets".parse().unwrap());
    fresh
        .host
        .default_tenant()
        .put_secret(&id, &name, SecretValue::new(TOKEN.into()).unwrap())
        .unwrap();
    fresh.call(&id, "keep", b"API_TOKEN").await.unwrap();
    let e = fresh.call(&id, "spill", b"").await.unwrap_err();
    assert!(
        matches!(&e.error, CallError::Extension { code, .. } if code == "nothing-kept"),
        "{e:?}"
    );
}

#[tokio::test]
async fn http_components_are_kept_too() {
    let lab = Lab::with_policy(warm_policy(5));
    let id = lab.load("hello");
    for i in 0..3 {
        let req = http::Request::get(format!("/n{i}"))
            .body(bytes::Bytes::new())
            .unwrap();
        let resp = lab.call_http(&id, req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(text(resp.body()).contains(&format!("/n{i}")));
    }
    let records = calls(&lab);
    let kept: Vec<bool> = records.iter().map(kept_note).collect();
    assert_eq!(kept, [false, true, true]);
}

#[tokio::test]
async fn an_instance_holding_open_files_is_not_kept() {
    let lab = Lab::with_policy(warm_policy(100));
    let grant: Grant = "fs:/data".parse().unwrap();
    let id = lab.load_granted("hostile-fs", crate::fs::mounts(&["/data"], &[]), &grant);
    let op = |method: &'static str, input: &'static str| {
        let (host, id) = (lab.host.clone(), id.clone());
        async move {
            text(
                &host
                    .default_tenant()
                    .call(&id, method, input.as_bytes())
                    .await
                    .unwrap()
                    .value,
            )
        }
    };
    assert_eq!(op("write", "/data/f|x").await, "ok");
    assert_eq!(op("read", "/data/f").await, "ok:x");
    assert_eq!(op("leak-open", "/data/f|3").await, "ok:3");
    assert_eq!(op("read", "/data/f").await, "ok:x");
    // A stream on a file keeps it open (a deleted one's space too) after its descriptor is
    // dropped: not kept either (outside attack: 32 MB held past a 4 MiB quota this way).
    assert_eq!(op("hold-streams", "/data/f|2|keep").await, "ok:2");
    assert_eq!(op("read", "/data/f").await, "ok:x");
    // A folder's listing is held in the host's memory: not kept either.
    assert_eq!(op("hold-listings", "/data/.|1|keep").await, "ok:1");
    assert_eq!(op("read", "/data/f").await, "ok:x");
    let kept: Vec<bool> = calls(&lab).iter().map(kept_note).collect();
    // Each leak happened in a kept instance, which was then dropped: the next call is fresh.
    assert_eq!(kept, [false, true, true, false, true, false, true, false]);
    // Each call's record names the mount it could reach, kept instance or not.
    let mounts = lab
        .audit
        .records()
        .iter()
        .filter(|r| r.event() == Event::Grant && r.capability() == Some("filesystem"))
        .count();
    assert_eq!(mounts, 8);
}

/// Kept instances answer like fresh ones in every language: the kv-counters (rpc) in Rust,
/// JavaScript and Python give the Rust fresh instance's answers call by call, and the
/// JavaScript hello that exports its handler answers request after request in one instance.
#[tokio::test(flavor = "multi_thread")]
async fn kept_instances_answer_like_fresh_ones_in_every_language() {
    use crate::twins::{allow, kv_counter_calls, outcome, server};
    let policy = |warm: &str| {
        Policy::parse(&format!(
            "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n{warm}"
        ))
        .unwrap()
    };
    let fresh = Lab::with_policy(policy(""));
    let lab = Lab::with_policy(policy(
        "[policy.component]\nwarm_calls = 100\nwarm_extensions = [\"*\"]\n",
    ));
    let port = server();
    let allowed = format!("http://127.0.0.1:{port}/health");
    let calls = kv_counter_calls(&allowed);
    let rust = fresh.load_granted("kv-counter", allow(port), &Grant::All);
    let mut want = Vec::new();
    for (method, input) in &calls {
        want.push(outcome(&fresh, &rust, method, input).await);
    }
    for name in ["kv-counter", "js/kv-counter", "python/kv-counter"] {
        let id = lab.load_granted(name, allow(port), &Grant::All);
        let before = calls_of(&lab, &id).len();
        for ((method, input), want) in calls.iter().zip(&want) {
            let got = outcome(&lab, &id, method, input).await;
            assert_eq!(&got, want, "{name}: {method} {:?}", text(input));
        }
        let kept = calls_of(&lab, &id)[before..]
            .iter()
            .filter(|r| kept_note(r))
            .count();
        assert!(
            kept >= calls.len() / 2,
            "{name}: {kept} of {} kept",
            calls.len()
        );
    }
    let id = lab.load("js/hello-handler");
    for i in 0..3 {
        let req = http::Request::get(format!("/n{i}"))
            .body(bytes::Bytes::new())
            .unwrap();
        let resp = lab.call_http(&id, req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(text(resp.body()).contains(&format!("/n{i}")), "{resp:?}");
    }
    let kept: Vec<bool> = calls_of(&lab, &id).iter().map(kept_note).collect();
    assert_eq!(kept, [false, true, true]);
}

fn calls_of(lab: &Lab, id: &ExtensionId) -> Vec<Record> {
    calls(lab)
        .into_iter()
        .filter(|r| r.extension() == Some(id.as_str()))
        .collect()
}

/// A caller's secret handed to a kept instance through invoke: the callee's later calls,
/// which no caller's redactor covers and whose own install has no such secret, are redacted of
/// it all the same (the instance remembers every value its calls were handed).
#[tokio::test]
async fn a_callers_secret_kept_by_a_callee_is_redacted_in_the_callees_later_calls() {
    const TOKEN: &str = "Caller-S3cret-Handed-On-4411";
    let lab = Lab::with_policy(warm_policy(10));
    let t = TenantName::default_tenant();
    let holder = lab.bundle("hostile-secrets", |m| {
        m.replace("warden.hostile-secrets", "warden.holder")
            .replace("secrets = [\"API_TOKEN\", \"OTHER_TOKEN\"]", "")
    });
    let holder = lab
        .host
        .tenant(&t)
        .load_file(&holder, None, &Grant::None)
        .unwrap()
        .id;
    let caller = lab.bundle("hostile-secrets", |m| {
        m.replace(
            "secrets = [\"API_TOKEN\", \"OTHER_TOKEN\"]",
            "secrets = [\"API_TOKEN\"]\ncalls = [\"warden.holder\"]",
        )
    });
    let caller = lab
        .host
        .tenant(&t)
        .load_file(
            &caller,
            None,
            &"secret:API_TOKEN,call:warden.holder".parse().unwrap(),
        )
        .unwrap()
        .id;
    lab.host
        .tenant(&t)
        .put_secret(
            &caller,
            &"API_TOKEN".parse().unwrap(),
            SecretValue::new(TOKEN.into()).unwrap(),
        )
        .unwrap();
    let tenant = lab.host.tenant(&t);
    let out = tenant
        .call(&caller, "pass-hold", b"API_TOKEN warden.holder")
        .await
        .unwrap();
    assert_eq!(text(&out.value), "passed");
    // The holder's own call, made by nobody holding the secret.
    let e = tenant.call(&holder, "spill", b"").await.unwrap_err();
    let CallError::Extension { code, message } = &e.error else {
        panic!("{e:?}");
    };
    assert_eq!(code, "spilled", "not a kept instance: {message}");
    assert!(
        !message.contains(TOKEN) && message.contains("[REDACTED]"),
        "{message}"
    );
    let shown = format!("{:?}", e.logs);
    assert!(
        !shown.contains(TOKEN) && shown.contains("[REDACTED]"),
        "{shown}"
    );
    let audit = format!("{:?}", lab.audit.records());
    assert!(!audit.contains(TOKEN), "{audit}");
}

/// A secret rotated or removed ends the kept instances that may hold the old value: the next
/// call starts fresh (the old value stays redacted all the same).
#[tokio::test]
async fn a_rotated_or_removed_secret_ends_the_kept_instances() {
    let lab = Lab::with_policy(warm_policy(10));
    let t = TenantName::default_tenant();
    let path = lab.bundle("hostile-secrets", |m| m);
    let id = lab
        .host
        .tenant(&t)
        .load_file(&path, None, &"secrets".parse().unwrap())
        .unwrap()
        .id;
    let name: SecretName = "API_TOKEN".parse().unwrap();
    let put = |v: &str| {
        lab.host
            .tenant(&t)
            .put_secret(&id, &name, SecretValue::new(v.into()).unwrap())
            .unwrap()
    };
    let spill = || async {
        match lab.host.tenant(&t).call(&id, "spill", b"").await {
            Err(e) => match e.error {
                CallError::Extension { code, .. } => code,
                other => panic!("{other:?}"),
            },
            Ok(v) => panic!("{v:?}"),
        }
    };
    put("First-Value-0001");
    assert_eq!(lab.call(&id, "keep", b"API_TOKEN").await.unwrap(), b"kept");
    assert_eq!(spill().await, "spilled", "kept as long as nothing changed");
    put("Second-Value-0002");
    assert_eq!(spill().await, "nothing-kept", "kept across a rotation");
    assert_eq!(lab.call(&id, "keep", b"API_TOKEN").await.unwrap(), b"kept");
    assert!(lab.host.tenant(&t).delete_secret(&id, &name).unwrap());
    assert_eq!(spill().await, "nothing-kept", "kept across a removal");
}
