//! Red team, round 3 (low): the request id of admin actions, publisher pins, a broken trust
//! file, the process's body budget, a huge declared length, more headers than hyper takes.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::foundation::{Publisher, keygen, pack, sign, trust_file};

/// examples/hello copied with `edit` applied to its manifest, packed and signed with `key`.
fn hello_as(
    st: &Setup,
    name: &str,
    key: &Path,
    edit: impl Fn(String) -> String,
) -> (PathBuf, PathBuf) {
    let dir = st.t.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        example("hello").join("extension.wasm"),
        dir.join("extension.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(example("hello").join("extension.toml")).unwrap();
    std::fs::write(dir.join("extension.toml"), edit(manifest)).unwrap();
    let b = st.t.path().join(format!("{name}.wext"));
    pack(&dir, &b);
    sign(&b, key);
    let sig = PathBuf::from(format!("{}.sig", b.display()));
    (b, sig)
}

/// The records of the request id a reply carries in `x-request-id`.
fn records_of(st: &Setup, r: &Reply) -> Vec<serde_json::Value> {
    let id = r_id(r);
    assert_eq!(id.len(), 32, "{:?}", r.headers);
    record_for(&audit(st), &id)
}

#[track_caller]
fn has(records: &[serde_json::Value], event: &str, outcome: &str) {
    assert!(
        records
            .iter()
            .any(|r| r["event"] == event && r["outcome"] == outcome),
        "no {event}/{outcome} record: {records:?}"
    );
}

/// Every admin action is on record under the id its answer carries (red team: the records
/// had ids of their own); a trust file that does not parse is the service's failure (500
/// `trust-reload-failed`), not the request's, and is on record too.
#[test]
fn admin_actions_are_audited_under_the_request_id_they_answer() {
    let st = setup();
    let s = st.serve("");
    let r = send(
        "POST",
        &format!("{}/v1/admin/tenants", s.base),
        Some(ADMIN),
        br#"{"name":"alpha"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    has(&records_of(&st, &r), "tenant", "ok");

    let (hello, sig) = st.bundle(&example("hello"), "hello");
    let r = publish_reply(&s, &hello, &sig);
    assert_eq!(r.status, 201, "{}", r.body);
    has(&records_of(&st, &r), "publish", "ok");
    let hash = r.json()["content_hash"].as_str().unwrap().to_string();

    let r = install(&s, "alpha", "warden.hello", &hash, "none");
    assert_eq!(r.status, 200, "{}", r.body);
    has(&records_of(&st, &r), "install", "ok");

    let (v2, v2_sig) = hello_as(&st, "hello-v2", &st.key, |m| {
        m.replace("version = \"0.1.0\"", "version = \"0.2.0\"")
    });
    let hash2 = publish(&s, &v2, &v2_sig);
    let r = install(&s, "alpha", "warden.hello", &hash2, "none");
    assert_eq!(r.status, 200, "{}", r.body);
    has(&records_of(&st, &r), "upgrade", "ok");

    let secret = format!(
        "{}/v1/admin/tenants/alpha/installs/warden.hello/secrets/TOKEN",
        s.base
    );
    let r = send("PUT", &secret, Some(ADMIN), br#"{"value":"v"}"#);
    assert_eq!(r.status, 204, "{}", r.body);
    has(&records_of(&st, &r), "secret", "ok");
    let r = send("DELETE", &secret, Some(ADMIN), b"");
    assert_eq!(r.status, 204, "{}", r.body);
    has(&records_of(&st, &r), "secret", "ok");

    let reload = format!("{}/v1/admin/trust/reload", s.base);
    let r = send("POST", &reload, Some(ADMIN), b"");
    assert_eq!(r.status, 200, "{}", r.body);
    has(&records_of(&st, &r), "trust-reload", "ok");
    let good = std::fs::read(&st.trust).unwrap();
    std::fs::write(&st.trust, "[[publisher]]\nname = \"broken\n").unwrap();
    let r = send("POST", &reload, Some(ADMIN), b"");
    assert_eq!(
        (r.status, r.code().as_str()),
        (500, "trust-reload-failed"),
        "{}",
        r.body
    );
    assert!(r.body.contains("not reloaded"), "{}", r.body);
    has(&records_of(&st, &r), "trust-reload", "invalid");
    std::fs::write(&st.trust, good).unwrap();

    let r = send(
        "DELETE",
        &format!("{}/v1/admin/tenants/alpha/installs/warden.hello", s.base),
        Some(ADMIN),
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    has(&records_of(&st, &r), "uninstall", "ok");
    // A refusal too: the verification failure of a tampered bundle.
    let tampered = st.t.path().join("tampered.wext");
    let mut bytes = std::fs::read(&hello).unwrap();
    let i = bytes.len() - 600;
    bytes[i] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    let r = publish_reply(&s, &tampered, &sig);
    assert!(r.status == 400 || r.status == 403, "{}", r.body);
    has(&records_of(&st, &r), "verification-failure", "denied");
}

/// An extension id is pinned to the publisher that first published it: another publisher
/// the operator trusts cannot publish it (409 `publisher-pinned`, on record), and publishes
/// ids of its own as before (red team: any trusted publisher could take over any id).
#[test]
fn a_publisher_cannot_publish_an_id_another_published_first() {
    let st = setup();
    let mallory: Publisher = keygen(&st.t.path().join("mallory"), "mallory");
    trust_file(
        st.t.path(),
        "trust.toml",
        &[
            ("warden-examples", &[&st.pem], &[]),
            ("mallory", &[&mallory.pem], &[]),
        ],
    );
    let s = st.serve("");
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    publish(&s, &hello, &sig);
    let as_mallory = |m: String| {
        m.replace("publisher = \"warden-examples\"", "publisher = \"mallory\"")
            .replace("version = \"0.1.0\"", "version = \"9.0.0\"")
    };
    let (theirs, theirs_sig) = hello_as(&st, "hello-mallory", &mallory.key, as_mallory);
    let r = publish_reply(&s, &theirs, &theirs_sig);
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "publisher-pinned"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("first published by warden-examples"),
        "{}",
        r.body
    );
    has(&records_of(&st, &r), "publish", "denied");
    // Its own id: published.
    let (own, own_sig) = hello_as(&st, "mallory-hello", &mallory.key, |m| {
        as_mallory(m).replace("id = \"warden.hello\"", "id = \"mallory.hello\"")
    });
    publish(&s, &own, &own_sig);
}

/// Request bodies held at once are capped for the whole process: over `max_buffered_bytes`,
/// 503 with `retry-after`; the share comes back when the request holding it ends.
#[test]
fn the_process_holds_request_bodies_within_its_budget() {
    let st = setup();
    let s = st.serve("[policy.gateway]\nmax_buffered_bytes = \"64KiB\"\nbody_timeout = \"20s\"\n");
    let (echo, sig) = st.bundle(&example("echo"), "echo");
    let hash = publish(&s, &echo, &sig);
    tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.echo", &hash, "none").status,
        200
    );
    let url = format!("{}/v1/execute", s.base);
    let body = br#"{"tenant":"alpha","extension":"warden.echo","method":"echo","input":{"n":1}}"#;
    let head = format!(
        "POST /v1/execute HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {RUNNER}\r\nContent-Type: application/json\r\nContent-Length: 65500\r\n\r\n{{"
    );
    // Idle clients that declare 65,500 bytes and send none hold nothing (red team round 4:
    // a declared length was reserved, and 8 idle connections refused every body for 30 s).
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(&s.addr).unwrap();
            c.write_all(head.as_bytes()).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let r = send("POST", &url, Some(RUNNER), body);
    assert_eq!(r.status, 200, "{}", r.body);
    drop(idle);
    // A slow client that sends 65,490 of its 65,500 bytes holds them: the next body is over.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&vec![b' '; 65_489]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let r = send("POST", &url, Some(RUNNER), body);
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "unavailable"),
        "{}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"));
    // The slow client goes away: its share is given back.
    drop(slow);
    let mut r = send("POST", &url, Some(RUNNER), body);
    for _ in 0..50 {
        if r.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        r = send("POST", &url, Some(RUNNER), body);
    }
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A `Content-Length` over the cap is refused from the header, before the body is read (red
/// team: `/v1/execute` waited for a body it would refuse anyway).
#[test]
fn a_huge_declared_length_is_refused_before_the_body_is_read() {
    let st = setup();
    let s = st.serve("[policy.gateway]\nbody_timeout = \"20s\"\n");
    for target in ["/v1/execute", "/api/ext/warden.nothing/x"] {
        let auth = if target.starts_with("/v1") {
            RUNNER.to_string()
        } else {
            tenant(&s, "alpha")
        };
        let started = Instant::now();
        let lines = raw(
            &s.addr,
            format!("POST {target} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auth}\r\nContent-Length: 1000000000000\r\n\r\n{{").as_bytes(),
            Duration::from_secs(10),
        );
        assert_eq!(lines, ["HTTP/1.1 413 Payload Too Large"], "{target}");
        assert!(started.elapsed() < Duration::from_secs(5), "{target}");
    }
}

/// More headers than the policy allows, up to several times more, get the service's own
/// JSON 431, not hyper's empty one.
#[test]
fn too_many_headers_get_the_json_431() {
    let st = setup();
    let s = st.serve("");
    let mut req = agent().get(format!("{}/api/ext/warden.hello/hi", s.base));
    for i in 0..200 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let r = reply(req.call());
    assert_eq!(
        (r.status, r.code().as_str()),
        (431, "headers-too-large"),
        "{}",
        r.body
    );
    assert_eq!(r.json()["error"]["request_id"].as_str().unwrap().len(), 32);
}

/// Red team, round 4: a path whose percent-encoding does not decode got axum's plain-text 400
/// (no JSON, no request id, no audit record); a response over its cap was not counted as a
/// limit hit in the metrics.
#[test]
fn an_undecodable_path_and_an_output_over_its_cap_are_counted_like_the_rest() {
    let st = setup();
    let s = st.serve("");
    let (hostile, sig) = st.bundle(&example("hostile-http"), "hostile");
    let hash = publish(&s, &hostile, &sig);
    let alpha = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hostile-http", &hash, "none").status,
        200
    );
    let ext = |path: &str| format!("{}/api/ext/warden.hostile-http{path}", s.base);
    let r = get(&ext("/%ff"), Some(&alpha));
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "malformed"),
        "{}",
        r.body
    );
    let id = r_id(&r);
    let r = get(&format!("{}/api/ext/%ff", s.base), Some(&alpha));
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "malformed"),
        "{}",
        r.body
    );
    // Without a key: the same answer, and nothing to audit it under.
    let r = get(&ext("/%ff"), None);
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "unauthorized"),
        "{}",
        r.body
    );
    let big = get(&ext("/big/2000000"), Some(&alpha));
    assert_eq!(big.status, 502, "{}", big.body);
    let records = audit(&st);
    let mine = record_for(&records, &id);
    assert!(
        mine.iter()
            .any(|r| r["tenant"] == "alpha" && r["outcome"] == "invalid"),
        "{records:?}"
    );
    let m = get(&format!("{}/metrics", s.base), Some(ADMIN));
    let line =
        r#"warden_limit_hits_total{tenant="alpha",extension="warden.hostile-http",limit="size"} 1"#;
    assert!(m.body.lines().any(|l| l == line), "{}", m.body);
}

/// A POST refused before its body is read (over the tenant's rate) ends its connection, and
/// the answer says so (`connection: close`): a client then opens a new one for its next
/// request instead of having it fail on a closing connection (red team, session 12). A request
/// whose body was read, or without one, keeps its connection.
#[test]
fn a_refusal_before_the_body_is_read_says_the_connection_closes() {
    let st = setup();
    let s = st.serve("[policy.gateway]\ntenant_rate = 1\ntenant_burst = 1\n");
    let (kv, sig) = st.bundle(&example("kv-counter"), "kv");
    let hash = publish(&s, &kv, &sig);
    let key = tenant(&s, "alpha");
    let r = install(&s, "alpha", "warden-examples.kv-counter", &hash, "kv");
    assert_eq!(r.status, 200, "{}", r.body);
    let url = format!("{}/api/ext/warden-examples.kv-counter/increment", s.base);
    let first = send("POST", &url, Some(&key), b"hits");
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(
        !first.headers.contains_key("connection"),
        "{:?}",
        first.headers
    );
    let refused = send("POST", &url, Some(&key), b"hits");
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(
        refused
            .headers
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close")
    );
    let get_refused = get(&url, Some(&key));
    assert_eq!(get_refused.status, 429, "{}", get_refused.body);
    assert!(!get_refused.headers.contains_key("connection"));
}
