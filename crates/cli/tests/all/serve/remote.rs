//! Remote extensions behind `warden serve`: published and installed over the admin API,
//! called through the runner API; a client certificate set over the admin API is used from
//! the next call; one tenant flooding a stalling remote does not starve another tenant's
//! calls.

use std::net::SocketAddr;

use warden_remote::testing::{Behaviour, Ca, Leaf, grpc_server, leaf, server};

use super::*;

/// A remote bundle for `https://127.0.0.1:PORT/rpc` pinning `pin`, packed and signed.
fn remote_bundle(
    st: &Setup,
    name: &str,
    addr: SocketAddr,
    pin: &Leaf,
    limits: &str,
) -> (PathBuf, PathBuf) {
    let entry = format!("https://127.0.0.1:{}/rpc", addr.port());
    remote_bundle_at(st, name, &entry, pin, limits)
}

/// A remote bundle for `entry` pinning `pin`, packed and signed.
fn remote_bundle_at(
    st: &Setup,
    name: &str,
    entry: &str,
    pin: &Leaf,
    limits: &str,
) -> (PathBuf, PathBuf) {
    let dir = st.t.path().join(format!("src-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("extension.toml"),
        format!(
            "schema = 1\n\n[extension]\nid = \"vendor.{name}\"\nversion = \"1.0.0\"\n\
             publisher = \"warden-examples\"\nkind = \"remote\"\n\
             entry = \"{entry}\"\n\n[[methods]]\nname = \"echo\"\n\n[[methods]]\n\
             name = \"fail\"\n\n[remote]\npins = [\"{}\"]\n{limits}",
            pin.pin
        ),
    )
    .unwrap();
    st.bundle(&dir, name)
}

fn execute(s: &Server, tenant: &str, extension: &str) -> Reply {
    call(s, tenant, extension, "echo")
}

fn call(s: &Server, tenant: &str, extension: &str, method: &str) -> Reply {
    let body = format!(
        r#"{{"tenant":"{tenant}","extension":"{extension}","method":"{method}","input":"hi"}}"#
    );
    send(
        "POST",
        &format!("{}/v1/execute", s.base),
        Some(RUNNER),
        body.as_bytes(),
    )
}

#[test]
fn remote_extensions_are_served_with_client_certificates_and_per_tenant_limits() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = leaf(&["127.0.0.1"], None, false, false);
    let clients = Ca::new("Operator client CA");
    let (echo, stall, mtls) = rt.block_on(async {
        (
            server(&key, None, Behaviour::Answer).await,
            server(&key, None, Behaviour::Stall).await,
            server(&key, Some(&clients), Behaviour::Answer).await,
        )
    });
    let st = setup();
    let s = st.serve(&format!(
        "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n\n[policy.remote]\nallowed_hosts = \
         [\"127.0.0.1:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\n[policy.gateway]\n\
         tenant_concurrency = 2\n",
        echo.port(),
        stall.port(),
        mtls.port()
    ));
    let mut hashes = Vec::new();
    for (name, addr, limits) in [
        ("echo", echo, ""),
        ("stall", stall, "\n[limits]\nmax_execution_time = \"2s\"\n"),
        ("mtls", mtls, ""),
    ] {
        let (b, sig) = remote_bundle(&st, name, addr, &key, limits);
        hashes.push(publish(&s, &b, &sig));
    }
    tenant(&s, "alpha");
    tenant(&s, "beta");
    for t in ["alpha", "beta"] {
        for (name, hash) in ["echo", "stall", "mtls"].iter().zip(&hashes) {
            let r = install(&s, t, &format!("vendor.{name}"), hash, "none");
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    let r = execute(&s, "alpha", "vendor.echo");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["output"], "hi");

    // Without the operator's client certificate the server refuses: 502 remote-error.
    let r = execute(&s, "beta", "vendor.mtls");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "remote-error", "{}", r.body);
    let issued = leaf(&["beta.vendor.mtls"], Some(&clients), false, true);
    let url = format!(
        "{}/v1/admin/tenants/beta/installs/vendor.mtls/client-certificate",
        s.base
    );
    let body = serde_json::json!({"certificate": issued.cert, "key": issued.key}).to_string();
    let r = send("PUT", &url, Some(ADMIN), body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.body);
    let r = execute(&s, "beta", "vendor.mtls");
    assert_eq!(r.status, 200, "{}", r.body);
    // A key that does not read: 400, nothing stored; the key never echoed.
    let bad = serde_json::json!({"certificate": issued.cert, "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}).to_string();
    let r = send("PUT", &url, Some(ADMIN), bad.as_bytes());
    assert_eq!(r.status, 400, "{}", r.body);
    let log = format!("{:?}", audit(&st));
    assert!(
        !log.contains("PRIVATE KEY"),
        "the key reached the audit log"
    );

    // Alpha floods the stalling remote (its concurrency is 2): its extra calls are refused,
    // the two in flight end at their 2 s limit (504); beta's call is answered meanwhile.
    let base = s.base.clone();
    let flood: Vec<_> = (0..6)
        .map(|_| {
            let base = base.clone();
            std::thread::spawn(move || {
                let body =
                    br#"{"tenant":"alpha","extension":"vendor.stall","method":"echo","input":"x"}"#;
                send("POST", &format!("{base}/v1/execute"), Some(RUNNER), body).status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let r = execute(&s, "beta", "vendor.echo");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let mut statuses: Vec<u16> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 504 || *s == 429),
        "{statuses:?}"
    );
}

#[test]
fn the_json_rpc_and_grpc_forms_of_one_extension_answer_alike_through_the_gateway() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = leaf(&["127.0.0.1"], None, false, false);
    let (json, grpc) = rt.block_on(async {
        (
            server(&key, None, Behaviour::Answer).await,
            grpc_server(&key, None, Behaviour::Answer).await,
        )
    });
    let st = setup();
    let s = st.serve(&format!(
        "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n\n[policy.remote]\nallowed_hosts = \
         [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
        json.port(),
        grpc.port()
    ));
    let (b, sig) = remote_bundle(&st, "json", json, &key, "");
    let json_hash = publish(&s, &b, &sig);
    let entry = format!("grpcs://127.0.0.1:{}", grpc.port());
    let (b, sig) = remote_bundle_at(&st, "grpc", &entry, &key, "");
    let grpc_hash = publish(&s, &b, &sig);
    tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "vendor.json", &json_hash, "none").status,
        200
    );
    assert_eq!(
        install(&s, "alpha", "vendor.grpc", &grpc_hash, "none").status,
        200
    );
    for method in ["echo", "fail"] {
        let a = call(&s, "alpha", "vendor.json", method);
        let b = call(&s, "alpha", "vendor.grpc", method);
        assert_eq!(a.status, b.status, "{method}: {} / {}", a.body, b.body);
        let (mut a, mut b) = (a.json(), b.json());
        // Each answer has its own request id.
        for v in [&mut a, &mut b] {
            if let Some(e) = v.get_mut("error") {
                e["request_id"] = serde_json::Value::Null;
            }
            if let Some(o) = v.as_object_mut() {
                o.remove("request_id");
            }
        }
        assert_eq!(a, b, "{method}");
    }
    assert_eq!(
        call(&s, "alpha", "vendor.grpc", "echo").json()["output"],
        "hi"
    );
}

/// A request to the gateway for `tenant` (its API key), with a cookie and a body.
fn through_gateway(s: &Server, key: &str, method: &str, path: &str, body: &[u8]) -> Reply {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{}/api/ext/{path}", s.base))
        .header("authorization", format!("Bearer {key}"))
        .header("cookie", "session=the-clients")
        .header("content-type", "application/json")
        .body(body.to_vec())
        .unwrap();
    reply(agent().run(req))
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers.get(name).map_or("", |v| v.to_str().unwrap_or(""))
}

/// The manifest's endpoints without `call` are proxied to the remote's origin, both forms
/// alike: path and query as sent, the tenant's signed claims instead of its API key, the
/// client's cookie kept back, the remote's status given back, its cookie and its connection's
/// headers not; an answer past the cap is a 502, a path no endpoint names a 404 that never
/// reaches the remote.
#[test]
fn http_endpoints_are_proxied_to_the_remote_in_both_forms() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = leaf(&["127.0.0.1"], None, false, false);
    let (json, grpc) = rt.block_on(async {
        (
            server(&key, None, Behaviour::Answer).await,
            grpc_server(&key, None, Behaviour::Answer).await,
        )
    });
    let st = setup();
    let s = st.serve(&format!(
        "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n\n[policy.remote]\nallowed_hosts = \
         [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
        json.port(),
        grpc.port()
    ));
    let endpoints = "\n[limits]\nmax_response_bytes = \"1MiB\"\n\n\
        [[endpoints]]\nmethod = \"*\"\npath = \"/invoices/{*rest}\"\n\n\
        [[endpoints]]\nmethod = \"GET\"\npath = \"/status/{code}\"\n\n\
        [[endpoints]]\nmethod = \"GET\"\npath = \"/flood\"\n";
    let (b, sig) = remote_bundle(&st, "json", json, &key, endpoints);
    let json_hash = publish(&s, &b, &sig);
    let entry = format!("grpcs://127.0.0.1:{}", grpc.port());
    let (b, sig) = remote_bundle_at(&st, "grpc", &entry, &key, endpoints);
    let grpc_hash = publish(&s, &b, &sig);
    let api_key = tenant(&s, "alpha");
    for (id, hash) in [("vendor.json", &json_hash), ("vendor.grpc", &grpc_hash)] {
        assert_eq!(install(&s, "alpha", id, hash, "none").status, 200);
    }

    let mut seen = Vec::new();
    for (id, port) in [("vendor.json", json.port()), ("vendor.grpc", grpc.port())] {
        let r = through_gateway(
            &s,
            &api_key,
            "POST",
            &format!("{id}/invoices/7?full=1"),
            br#"{"a":1}"#,
        );
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        assert_eq!(r.body, r#"{"a":1}"#);
        assert_eq!(header(&r, "x-ext-method"), "POST");
        assert_eq!(header(&r, "x-ext-target"), "/invoices/7?full=1");
        assert_eq!(header(&r, "x-ext-host"), format!("127.0.0.1:{port}"));
        // The tenant's identity as signed claims, never its API key or cookie.
        let auth = header(&r, "x-ext-auth");
        assert!(auth.starts_with("Bearer ey"), "{id}: {auth}");
        assert!(
            !auth.contains(&api_key),
            "{id}: the API key reached the remote"
        );
        let names = header(&r, "x-ext-headers");
        assert!(!names.split(',').any(|n| n == "cookie"), "{id}: {names}");
        assert!(
            names.split(',').any(|n| n == "x-request-id"),
            "{id}: {names}"
        );
        // Back: the remote's cookie and its connection's headers stay out.
        assert!(r.headers.get("set-cookie").is_none(), "{id}");
        assert!(r.headers.get("x-hop").is_none(), "{id}");
        assert!(!header(&r, "x-request-id").is_empty(), "{id}");

        let r = through_gateway(&s, &api_key, "GET", &format!("{id}/status/409"), b"");
        assert_eq!(r.status, 409, "{id}: {}", r.body);
        let r = through_gateway(&s, &api_key, "GET", &format!("{id}/flood"), b"");
        assert_eq!(r.status, 502, "{id}: {}", r.body);
        assert_eq!(r.code(), "response-too-large", "{id}: {}", r.body);
        let r = through_gateway(&s, &api_key, "GET", &format!("{id}/elsewhere"), b"");
        assert_eq!(r.status, 404, "{id}: {}", r.body);
        assert!(
            r.headers.get("x-ext-method").is_none(),
            "{id}: reached the remote"
        );
        seen.push((r.status, r.code()));
    }
    assert_eq!(seen[0], seen[1]);

    // Each proxied request is a call in the audit log, as any other.
    let log = format!("{:?}", audit(&st));
    assert!(
        log.contains("vendor.grpc") && log.contains("vendor.json"),
        "{log}"
    );
}
