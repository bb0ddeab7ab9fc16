//! Remote extensions (`kind = "remote"`) through the embedding API, against real TLS servers
//! on loopback (`warden_remote::testing`): the pinned server answers; an unpinned key, an
//! expired certificate, a refused client certificate, a stall and a flood each end the call
//! with a clear error and the records to show it; the operator's policy decides where a
//! remote extension may be reached at all.

use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;

use warden_audit::{Event, Outcome, Record};
use warden_host::{CallError, ExtensionId, Grant, Policy};
use warden_remote::testing::{Behaviour, Ca, Leaf, leaf, server};

use crate::egress::FakeResolver;
use crate::support::{Lab, text};

const HOST: &str = "ext.test";

/// Loopback is reachable and `ext.test` may be named on the servers' ports.
fn policy(servers: &[SocketAddr]) -> Policy {
    let hosts: Vec<String> = servers
        .iter()
        .map(|a| format!("\"{HOST}:{}\"", a.port()))
        .collect();
    Policy::parse(&format!(
        "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n\n[policy.remote]\nallowed_hosts = [{}]\n",
        hosts.join(", ")
    ))
    .unwrap()
}

fn lab(policy: Policy) -> Lab {
    Lab::with_resolver(
        policy,
        Some(FakeResolver::new(&[(HOST, &[&["127.0.0.1"]])])),
    )
}

/// A signed remote bundle for `https://ext.test:PORT/rpc` pinning `pins`, with `ca` as its CA
/// file if given.
fn bundle(
    lab: &Lab,
    addr: SocketAddr,
    pins: &[&Leaf],
    ca: Option<&Ca>,
    limits: &str,
) -> std::path::PathBuf {
    bundle_for(lab, false, addr, pins, ca, limits)
}

/// [`bundle`], for the gRPC form (`grpcs://ext.test:PORT`) with `grpc`.
fn bundle_for(
    lab: &Lab,
    grpc: bool,
    addr: SocketAddr,
    pins: &[&Leaf],
    ca: Option<&Ca>,
    limits: &str,
) -> std::path::PathBuf {
    let stage = lab.dir.path().join(format!("remote-{}", addr.port()));
    fs::create_dir_all(&stage).unwrap();
    let pins: Vec<String> = pins.iter().map(|l| format!("\"{}\"", l.pin)).collect();
    let entry = if grpc {
        format!("grpcs://{HOST}:{}", addr.port())
    } else {
        format!("https://{HOST}:{}/rpc", addr.port())
    };
    let mut manifest = format!(
        "schema = 1\n\n[extension]\nid = \"vendor.remote\"\nversion = \"1.0.0\"\n\
         publisher = \"warden-examples\"\nkind = \"remote\"\nentry = \"{entry}\"\n\n\
         [[methods]]\nname = \"echo\"\n\n[[methods]]\nname = \"fail\"\n\n[[methods]]\n\
         name = \"whoami\"\n\n[[methods]]\nname = \"slow\"\n\n[remote]\npins = [{}]\n",
        pins.join(", ")
    );
    if let Some(ca) = ca {
        manifest.push_str("ca = \"ca.pem\"\n");
        fs::write(stage.join("ca.pem"), &ca.pem).unwrap();
    }
    manifest.push_str(limits);
    fs::write(stage.join("extension.toml"), manifest).unwrap();
    lab.sign_dir(&stage)
}

fn load(lab: &Lab, path: &std::path::Path) -> ExtensionId {
    lab.host
        .default_tenant()
        .load_file(path, None, &Grant::None)
        .unwrap()
        .id
}

fn records(lab: &Lab, event: Event) -> Vec<Record> {
    lab.audit
        .records()
        .into_iter()
        .filter(|r| r.event() == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_server_answers_and_the_call_is_audited() {
    let s = leaf(&[HOST], None, false, false);
    let addr = server(&s, None, Behaviour::Answer).await;
    let lab = lab(policy(&[addr]));
    let id = load(&lab, &bundle(&lab, addr, &[&s], None, ""));
    assert_eq!(
        text(&lab.call(&id, "echo", b"hello").await.unwrap()),
        "hello"
    );
    let call = records(&lab, Event::Call).pop().unwrap();
    assert_eq!(call.outcome(), Outcome::Ok);
    // The lookup and the connection are uses of the network, recorded.
    let uses = format!("{:?}", records(&lab, Event::Grant));
    assert!(
        uses.contains("dns:ext.test") && uses.contains("remote:https://ext.test"),
        "{uses}"
    );
    // The extension's own error comes back as one.
    match lab.call(&id, "fail", b"").await.unwrap_err().error {
        CallError::Extension { code, message } => {
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("boom", "failing on purpose")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_signed_server_with_another_key_is_refused_and_the_denial_names_its_key() {
    let ca = Ca::new("Vendor CA");
    let pinned = leaf(&[HOST], Some(&ca), false, false);
    let other = leaf(&[HOST], Some(&ca), false, false);
    let addr = server(&other, None, Behaviour::Answer).await;
    let lab = lab(policy(&[addr]));
    let id = load(&lab, &bundle(&lab, addr, &[&pinned], Some(&ca), ""));
    match lab.call(&id, "echo", b"hello").await.unwrap_err().error {
        CallError::Remote(m) => assert!(m.contains("not pinned"), "{m}"),
        other => panic!("{other:?}"),
    }
    let denial = records(&lab, Event::Denial).pop().unwrap();
    assert_eq!(denial.capability(), Some("network"));
    let shown = format!("{denial:?}");
    assert!(shown.contains(&other.pin.to_string()), "{shown}");
    assert_eq!(
        records(&lab, Event::Call).pop().unwrap().outcome(),
        Outcome::Error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_certificates_and_refused_client_certificates_end_the_call() {
    let old = leaf(&[HOST], None, true, false);
    let expired = server(&old, None, Behaviour::Answer).await;
    let clients = Ca::new("Operator client CA");
    let s = leaf(&[HOST], None, false, false);
    let addr = server(&s, Some(&clients), Behaviour::Answer).await;
    let lab = lab(policy(&[expired, addr]));
    let id = load(&lab, &bundle(&lab, expired, &[&old], None, ""));
    match lab.call(&id, "echo", b"x").await.unwrap_err().error {
        CallError::Remote(m) => assert!(m.contains("expired"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A server that asks for the operator's client certificate: refused without it, served
    // with the one the operator issued for this install.
    let id = load(&lab, &bundle(&lab, addr, &[&s], None, ""));
    match lab.call(&id, "echo", b"x").await.unwrap_err().error {
        CallError::Remote(m) => assert!(m.contains("refused"), "{m}"),
        other => panic!("{other:?}"),
    }
    let issued = leaf(&["default.vendor.remote"], Some(&clients), false, true);
    let tenant = lab.host.default_tenant();
    tenant
        .set_client_identity(&id, &issued.cert, &issued.key)
        .unwrap();
    // Taken by the next call, without loading the install again (as another runner of a
    // fleet would, sharing the secrets' storage).
    assert_eq!(text(&lab.call(&id, "echo", b"x").await.unwrap()), "x");
    // Removed: refused again.
    tenant
        .delete_secret(&id, &warden_host::CLIENT_IDENTITY.parse().unwrap())
        .unwrap();
    assert!(lab.call(&id, "echo", b"x").await.is_err());
    // Set like a secret: audited by name, the key never in a record.
    let all = format!("{:?}", lab.audit.records());
    assert!(all.contains("WARDEN_CLIENT_IDENTITY"), "{all}");
    assert!(!all.contains("PRIVATE KEY"), "{all}");
    // Garbage is refused before it is stored, by either way of setting it.
    assert!(
        tenant
            .set_client_identity(&id, "not pem", "nor this")
            .is_err()
    );
    assert!(
        tenant
            .put_secret(
                &id,
                &warden_host::CLIENT_IDENTITY.parse().unwrap(),
                warden_host::SecretValue::new("GARBAGE".into()).unwrap(),
            )
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalling_or_flooding_server_is_stopped_at_the_installs_limits() {
    let s = leaf(&[HOST], None, false, false);
    let stall = server(&s, None, Behaviour::Stall).await;
    let flood = server(&s, None, Behaviour::Flood).await;
    let nonsense = server(&s, None, Behaviour::Malformed).await;
    let lab = lab(policy(&[stall, flood, nonsense]));
    let id = load(
        &lab,
        &bundle(
            &lab,
            stall,
            &[&s],
            None,
            "\n[limits]\nmax_execution_time = \"500ms\"\n",
        ),
    );
    let started = std::time::Instant::now();
    let e = lab.call(&id, "echo", b"x").await.unwrap_err().error;
    assert!(matches!(e, CallError::Timeout(_)), "{e:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        records(&lab, Event::Limit).pop().unwrap().outcome(),
        Outcome::Timeout
    );
    let id = load(
        &lab,
        &bundle(
            &lab,
            flood,
            &[&s],
            None,
            "\n[limits]\nmax_response_bytes = \"64KiB\"\n",
        ),
    );
    let e = lab.call(&id, "echo", b"x").await.unwrap_err().error;
    assert!(
        matches!(e, CallError::TooLarge { what: "result", .. }),
        "{e:?}"
    );
    let id = load(&lab, &bundle(&lab, nonsense, &[&s], None, ""));
    match lab.call(&id, "echo", b"x").await.unwrap_err().error {
        CallError::Remote(m) => assert!(m.contains("not valid"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_policy_decides_where_a_remote_extension_may_be_reached() {
    let s = leaf(&[HOST], None, false, false);
    let addr = server(&s, None, Behaviour::Answer).await;
    // Not named in [policy.remote]: the load is refused, naming the endpoint.
    let lab = lab(Policy::parse("[policy]\nallow_networks = [\"127.0.0.0/8\"]\n").unwrap());
    let e = lab
        .host
        .default_tenant()
        .load_file(&bundle(&lab, addr, &[&s], None, ""), None, &Grant::None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not allow the endpoint https://ext.test"),
        "{e}"
    );
    // Named, but resolving to loopback, which the policy does not open: a denial per call.
    let closed = Policy::parse(&format!(
        "[policy.remote]\nallowed_hosts = [\"{HOST}:{}\"]\n",
        addr.port()
    ))
    .unwrap();
    let lab = lab_with(closed);
    let id = load(&lab, &bundle(&lab, addr, &[&s], None, ""));
    match lab.call(&id, "echo", b"x").await.unwrap_err().error {
        CallError::Remote(m) => assert!(m.contains("non-public address"), "{m}"),
        other => panic!("{other:?}"),
    }
    let denial = records(&lab, Event::Denial).pop().unwrap();
    assert_eq!(denial.capability(), Some("network"));
}

fn lab_with(policy: Policy) -> Lab {
    lab(policy)
}

#[test]
fn remote_manifests_are_checked_at_the_edge() {
    for (extra, says) in [
        ("[remote]\npins = []\n", "at least one key"),
        ("[remote]\npins = [\"sha1/AAAA\"]\n", "sha256/"),
        ("", "needs [remote]"),
        (
            "[remote]\npins = [\"sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"]\n\n[permissions.filesystem]\npaths = [\"/data\"]\n",
            "runs elsewhere",
        ),
        (
            "[remote]\npins = [\"sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"]\n\n[permissions.network]\nenabled = true\nallowed_hosts = [\"*\"]\n",
            "runs elsewhere",
        ),
    ] {
        let text = format!(
            "schema = 1\n\n[extension]\nid = \"vendor.remote\"\nversion = \"1.0.0\"\n\
             publisher = \"p\"\nkind = \"remote\"\nentry = \"https://ext.test/rpc\"\n\n\
             [[methods]]\nname = \"echo\"\n\n{extra}"
        );
        let e = warden_manifest::Manifest::parse(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{says}: {e}");
    }
    // Key-value, secrets and calls are host requests: either form may ask for them.
    let asking = "[remote]\npins = [\"sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"]\n\n\
                  [permissions]\nkv = true\nsecrets = [\"TOKEN\"]\ncalls = [\"acme.other\"]\n";
    for entry in ["https://ext.test/rpc", "grpcs://ext.test"] {
        let text = format!(
            "schema = 1\n\n[extension]\nid = \"vendor.remote\"\nversion = \"1.0.0\"\n\
             publisher = \"p\"\nkind = \"remote\"\nentry = \"{entry}\"\n\n\
             [[methods]]\nname = \"echo\"\n\n{asking}"
        );
        let m = warden_manifest::Manifest::parse(&text).unwrap();
        assert!(m.permissions.kv, "{entry}");
    }
    let _ = Arc::new(());
}

/// A remote that is down opens the install's circuit after 5 failures in a row: the calls
/// after that are refused at once (503 at the gateway), each with a denial that says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_remote_that_is_down_opens_the_circuit() {
    let s = leaf(&[HOST], None, false, false);
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let lab = lab(policy(&[closed]));
    let id = load(&lab, &bundle(&lab, closed, &[&s], None, ""));
    for _ in 0..5 {
        match lab.call(&id, "echo", b"x").await.unwrap_err().error {
            CallError::Remote(m) => assert!(m.contains("connect"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let started = std::time::Instant::now();
    match lab.call(&id, "echo", b"x").await.unwrap_err().error {
        CallError::Unavailable(m) => assert!(m.to_string().contains("5 calls in a row"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_millis(200));
    let denial = records(&lab, Event::Denial).pop().unwrap();
    assert!(
        format!("{denial:?}").contains("circuit is open"),
        "{denial:?}"
    );
}

/// Each call tells the remote who it is for as signed claims: an EdDSA JWT in
/// `authorization`, for this tenant, extension and endpoint, good for 60 s, checked with the
/// host's public key (the same for every host on the same secrets key, as a fleet's runners).
#[tokio::test(flavor = "multi_thread")]
async fn calls_carry_signed_claims_bound_to_the_tenant_and_endpoint() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

    let s = leaf(&[HOST], None, false, false);
    let addr = server(&s, None, Behaviour::Answer).await;
    let grpc = warden_remote::testing::grpc_server(&s, None, Behaviour::Answer).await;
    let lab = lab(policy(&[addr, grpc]));
    let (pem, kid) = lab.host.claims_public_key();
    let key = VerifyingKey::from_public_key_pem(&pem).unwrap();
    let id = load(&lab, &bundle(&lab, addr, &[&s], None, ""));
    let auth = text(&lab.call(&id, "whoami", b"").await.unwrap());
    let token = auth.strip_prefix("Bearer ").unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    };
    let (header, claims) = (json(parts[0]), json(parts[1]));
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("EdDSA"), Some(kid.as_str()))
    );
    assert_eq!(claims["sub"], "default");
    assert_eq!(claims["ext"], "vendor.remote");
    assert_eq!(claims["aud"], format!("https://{HOST}:{}/rpc", addr.port()));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .unwrap();
    // Each call has its own token.
    let again = text(&lab.call(&id, "whoami", b"").await.unwrap());
    assert_ne!(auth, again);
    // The gRPC form carries them as metadata.
    let stage = lab.dir.path().join("grpc-claims");
    fs::create_dir_all(&stage).unwrap();
    fs::write(
        stage.join("extension.toml"),
        format!(
            "schema = 1\n\n[extension]\nid = \"vendor.grpc\"\nversion = \"1.0.0\"\n\
             publisher = \"warden-examples\"\nkind = \"remote\"\nentry = \"grpcs://{HOST}:{}\"\n\n\
             [[methods]]\nname = \"whoami\"\n\n[remote]\npins = [\"{}\"]\n",
            grpc.port(),
            s.pin
        ),
    )
    .unwrap();
    let gid = load(&lab, &lab.sign_dir(&stage));
    let auth = text(&lab.call(&gid, "whoami", b"").await.unwrap());
    let claims = json(
        auth.strip_prefix("Bearer ")
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap(),
    );
    assert_eq!(claims["aud"], format!("grpcs://{HOST}:{}", grpc.port()));
    // Another host on the same storage (a restart, or a fleet's runner): the same key.
    assert_eq!(lab.restarted_host().claims_public_key(), (pem, kid));
}

/// Red team of session 15: a half-open circuit's one trial call, dropped by its caller before
/// it ended, left the circuit refusing every call for good. Now a dropped trial counts as a
/// failure: the circuit opens again for its full time, and tries again after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_trial_call_dropped_by_its_caller_does_not_keep_the_circuit_open() {
    let s = leaf(&[HOST], None, false, false);
    let stall = server(&s, None, Behaviour::Stall).await;
    let lab = lab(policy(&[stall]));
    let id = load(
        &lab,
        &bundle(
            &lab,
            stall,
            &[&s],
            None,
            "\n[limits]\nmax_execution_time = \"200ms\"\n",
        ),
    );
    for _ in 0..5 {
        let e = lab.call(&id, "echo", b"x").await.unwrap_err().error;
        assert!(matches!(e, CallError::Timeout(_)), "{e:?}");
    }
    assert!(matches!(
        lab.call(&id, "echo", b"x").await.unwrap_err().error,
        CallError::Unavailable(_)
    ));
    tokio::time::sleep(std::time::Duration::from_millis(10_100)).await;
    // The trial call, dropped part-way (its caller went away).
    let host = lab.host.clone();
    let trial = {
        let id = id.clone();
        tokio::spawn(async move { host.default_tenant().call(&id, "echo", b"x").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    trial.abort();
    let _ = trial.await;
    // The stopped call is audited all the same (its input had reached the remote).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let calls = format!("{:?}", records(&lab, Event::Call));
    assert!(calls.contains("the caller went away"), "{calls}");
    // With what it did until then: the lookup and the connection it had made (red team,
    // session 16: a stopped call's grants and denials were lost with it).
    let stopped = records(&lab, Event::Call)
        .into_iter()
        .rfind(|r| format!("{r:?}").contains("the caller went away"))
        .unwrap();
    let its: Vec<String> = records(&lab, Event::Grant)
        .iter()
        .filter(|r| r.request_id() == stopped.request_id())
        .map(|r| r.target().unwrap_or("").to_string())
        .collect();
    assert!(its.iter().any(|t| t.starts_with("remote:")), "{its:?}");
    // Not waiting on a trial that will never end: the next call is the trial (the stalling
    // remote times it out), and the circuit is open again for its full time.
    assert!(matches!(
        lab.call(&id, "echo", b"x").await.unwrap_err().error,
        CallError::Timeout(_)
    ));
    match lab.call(&id, "echo", b"x").await.unwrap_err().error {
        CallError::Unavailable(m) => {
            let m = m.to_string();
            assert!(
                m.contains("resume in 10s") || m.contains("resume in 9s"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Red team, session 16: callers that hang up (on a healthy remote), or ask for answers over
/// the cap, opened the install's circuit for every other caller. Neither says the remote is
/// down.
#[tokio::test(flavor = "multi_thread")]
async fn callers_that_hang_up_or_get_too_much_do_not_open_the_circuit() {
    let s = leaf(&[HOST], None, false, false);
    let healthy = server(&s, None, Behaviour::Answer).await;
    let lab = lab(policy(&[healthy]));
    let limits = "\n[limits]\nmax_response_bytes = \"64KiB\"\n\n\
                  [[endpoints]]\nmethod = \"GET\"\npath = \"/flood\"\n";
    let id = load(&lab, &bundle(&lab, healthy, &[&s], None, limits));
    for _ in 0..6 {
        let host = lab.host.clone();
        let id = id.clone();
        let slow = tokio::spawn(async move { host.default_tenant().call(&id, "slow", b"x").await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        slow.abort();
        let _ = slow.await;
    }
    for _ in 0..6 {
        let flood = http::Request::get("/flood")
            .body(bytes::Bytes::new())
            .unwrap();
        let e = lab
            .host
            .default_tenant()
            .call_http(&id, flood)
            .await
            .unwrap_err()
            .error;
        assert!(matches!(e, CallError::TooLarge { .. }), "{e:?}");
    }
    assert_eq!(text(&lab.call(&id, "echo", b"up").await.unwrap()), "up");
    // Nor are a tunnel or an echo of the request proxied.
    for method in ["CONNECT", "TRACE"] {
        let r = http::Request::builder()
            .method(method)
            .uri("/flood")
            .body(bytes::Bytes::new())
            .unwrap();
        let e = lab
            .host
            .default_tenant()
            .call_http(&id, r)
            .await
            .unwrap_err()
            .error;
        assert!(matches!(e, CallError::Invalid(_)), "{method}: {e:?}");
    }
}

/// An install's calls share its connections (at most `[policy.remote] max_connections`
/// open), and no two installs share one: each tenant's calls go on connections of its own.
#[tokio::test(flavor = "multi_thread")]
async fn installs_reuse_their_own_connections_within_the_policys_limit() {
    let s = leaf(&[HOST], None, false, false);
    let (addr, seen) = warden_remote::testing::counted_server(&s, Behaviour::Answer, false).await;
    let mut policy = policy(&[addr]);
    policy.remote.max_connections = 1;
    let lab = lab(policy);
    let path = bundle(&lab, addr, &[&s], None, "");
    let id = load(&lab, &path);
    for i in 0..5 {
        let input = format!("{i}");
        assert_eq!(
            text(&lab.call(&id, "echo", input.as_bytes()).await.unwrap()),
            input
        );
    }
    assert_eq!(seen.accepted(), 1);

    // Another tenant's install of the same bundle: a connection of its own.
    let other: warden_host::TenantName = "other".parse().unwrap();
    lab.host
        .tenant(&other)
        .load_file(&path, None, &Grant::None)
        .unwrap();
    let out = lab
        .host
        .tenant(&other)
        .call(&id, "echo", b"x")
        .await
        .unwrap();
    assert_eq!(text(&out.value), "x");
    assert_eq!(seen.accepted(), 2);

    // Four calls at once on one connection: one after the other, all answered.
    let host = Arc::new(lab.host.clone());
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let (host, id) = (Arc::clone(&host), id.clone());
            tokio::spawn(async move {
                host.default_tenant()
                    .call(&id, "slow", format!("{i}").as_bytes())
                    .await
                    .map(|o| text(&o.value))
            })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), format!("{i}"));
    }
    assert_eq!(seen.accepted(), 2);
    assert_eq!(seen.peak(), 2, "one per install");
}

/// Through the embedding API: an HTTP request for an endpoint without `call` is proxied to the
/// remote's origin (any status an answer), under the install's limits, each one a call in the
/// audit log; the pinned key is checked as for a call.
#[tokio::test(flavor = "multi_thread")]
async fn http_requests_are_proxied_within_the_installs_limits() {
    let s = leaf(&[HOST], None, false, false);
    let (addr, seen) = warden_remote::testing::counted_server(&s, Behaviour::Answer, false).await;
    let lab = lab(policy(&[addr]));
    let limits = "\n[limits]\nmax_execution_time = \"500ms\"\nmax_response_bytes = \"64KiB\"\n\n\
                  [[endpoints]]\nmethod = \"*\"\npath = \"/{*rest}\"\n";
    let id = load(&lab, &bundle(&lab, addr, &[&s], None, limits));
    let tenant = lab.host.default_tenant();
    let request = |path: &str| {
        http::Request::builder()
            .method("PUT")
            .uri(path)
            .body(bytes::Bytes::from_static(b"body"))
            .unwrap()
    };
    let ids = |lab: &Lab| {
        lab.audit
            .records()
            .iter()
            .map(|r| r.request_id().to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let calls_before = ids(&lab);
    let r = tenant
        .call_http(&id, request("/a/b?c=d"))
        .await
        .unwrap()
        .value;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().as_ref(), b"body");
    assert_eq!(r.headers()["x-ext-target"], "/a/b?c=d");
    let r = tenant
        .call_http(&id, request("/status/503"))
        .await
        .unwrap()
        .value;
    assert_eq!(r.status(), 503);
    let e = tenant
        .call_http(&id, request("/flood"))
        .await
        .unwrap_err()
        .error;
    assert!(
        matches!(e, CallError::TooLarge { what: "result", .. }),
        "{e:?}"
    );
    let e = tenant
        .call_http(&id, request("/stall"))
        .await
        .unwrap_err()
        .error;
    assert!(matches!(e, CallError::Timeout(_)), "{e:?}");
    // Each one recorded under a request id of its own, answered or not.
    assert_eq!(ids(&lab), calls_before + 4);
    // Answers read whole leave their connection for the next request; a cut one does not:
    // the flood's connection was the first two's, the stall needed a new one, and so does
    // the request after it.
    assert_eq!(seen.accepted(), 2);
    let r = tenant
        .call_http(&id, request("/after"))
        .await
        .unwrap()
        .value;
    assert_eq!(r.status(), 200);
    assert_eq!(seen.accepted(), 3);

    // A server with another key: refused before a byte of the request is sent, and recorded.
    let impostor = leaf(&[HOST], None, false, false);
    let other = server(&impostor, None, Behaviour::Answer).await;
    let lab = self::lab(policy(&[other]));
    let id = load(&lab, &bundle(&lab, other, &[&s], None, limits));
    let e = lab
        .host
        .default_tenant()
        .call_http(&id, request("/x"))
        .await
        .unwrap_err()
        .error;
    assert!(matches!(e, CallError::Remote(_)), "{e:?}");
    assert!(!records(&lab, Event::Denial).is_empty());
}

/// A JSON-RPC remote asks things of the host before it answers (the process extensions' host
/// requests, over its own connection): key-value and secrets as granted, each refusal a denial
/// in the audit log and an error for the remote, never more than 1000 requests in one call.
#[tokio::test(flavor = "multi_thread")]
async fn a_remote_reaches_key_value_and_secrets_only_as_granted() {
    callbacks(false).await;
}

/// The same through the gRPC form's `Session` (a bidirectional stream on the install's
/// HTTP/2 connection).
#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_remote_reaches_key_value_and_secrets_only_as_granted() {
    callbacks(true).await;
}

async fn callbacks(grpc: bool) {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let s = leaf(&[HOST], None, false, false);
    let (addr, seen) = warden_remote::testing::counted_server(&s, Behaviour::Answer, grpc).await;
    let lab = lab(policy(&[addr]));
    let asks = "\n[[methods]]\nname = \"ask\"\n\n[[methods]]\nname = \"ask-forever\"\n\n\
                [[methods]]\nname = \"ask-garbled\"\n\n\
                [permissions]\nkv = true\nsecrets = [\"TOKEN\"]\ncalls = [\"warden.echo\"]\n";
    lab.load("echo");
    let path = bundle_for(&lab, grpc, addr, &[&s], None, asks);
    let granted = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::All)
        .unwrap()
        .id;
    let token = "Rem0te-S3cret-Value-7d2p";
    lab.host
        .default_tenant()
        .put_secret(
            &granted,
            &"TOKEN".parse().unwrap(),
            warden_secrets::SecretValue::new(token.into()).unwrap(),
        )
        .unwrap();
    let ask = |tenant: warden_host::TenantName, method: &'static str, params: serde_json::Value| {
        let host = lab.host.clone();
        let id = granted.clone();
        async move {
            let input = serde_json::json!({"method": method, "params": params}).to_string();
            let out = host
                .tenant(&tenant)
                .call(&id, "ask", input.as_bytes())
                .await;
            let answer: serde_json::Value =
                serde_json::from_slice(&out.map_err(|e| e.error.to_string()).unwrap().value)
                    .unwrap();
            answer
        }
    };
    let me = warden_host::TenantName::default_tenant();

    let set = ask(
        me.clone(),
        "kv.set",
        serde_json::json!({"bucket": "b", "key": "k", "value": b64(b"remembered")}),
    )
    .await;
    assert_eq!(set["id"], "h1");
    assert!(set.get("error").is_none(), "{set}");
    let got = ask(
        me.clone(),
        "kv.get",
        serde_json::json!({"bucket": "b", "key": "k"}),
    )
    .await;
    assert_eq!(got["result"]["value"], b64(b"remembered"), "{got}");
    let secret = ask(
        me.clone(),
        "secrets.get",
        serde_json::json!({"name": "TOKEN"}),
    )
    .await;
    assert_eq!(secret["result"]["value"], token, "{secret}");
    // Not granted: an error for the remote, a denial in the log; the call goes on.
    let other = ask(
        me.clone(),
        "secrets.get",
        serde_json::json!({"name": "OTHER"}),
    )
    .await;
    assert_eq!(other["error"]["data"]["code"], "denied", "{other}");
    let fetch = ask(
        me.clone(),
        "http.fetch",
        serde_json::json!({"method": "GET", "url": "https://example.com/"}),
    )
    .await;
    assert_eq!(fetch["error"]["data"]["code"], "denied", "{fetch}");
    // A call to another extension, as declared and granted; the callee runs as its own.
    let echoed = ask(
        me.clone(),
        "invoke",
        serde_json::json!({"extension": "warden.echo", "method": "echo", "input": b64(b"via remote")}),
    )
    .await;
    assert_eq!(echoed["result"]["output"], b64(b"via remote"), "{echoed}");
    let undeclared = ask(
        me.clone(),
        "invoke",
        serde_json::json!({"extension": "warden.hello", "method": "x", "input": ""}),
    )
    .await;
    assert!(undeclared.get("error").is_some(), "{undeclared}");
    let denials = format!("{:?}", records(&lab, Event::Denial));
    assert!(denials.contains("OTHER"), "{denials}");
    // A remote that quotes the value in something that is not an answer (a parser's error
    // message, a gRPC status message): redacted for the caller (red team, session 16).
    let input = serde_json::json!({"method": "secrets.get", "params": {"name": "TOKEN"}});
    let e = lab
        .host
        .default_tenant()
        .call(&granted, "ask-garbled", input.to_string().as_bytes())
        .await
        .unwrap_err()
        .error;
    match e {
        CallError::Remote(m) => {
            assert!(!m.contains(token), "{m}");
            assert!(m.contains("[REDACTED]"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // The value was read, never written to the log.
    assert!(!format!("{:?}", lab.audit.records()).contains(token));
    // All of it over one connection.
    assert_eq!(seen.accepted(), 1);

    // The same bundle for a tenant that granted nothing: every request refused.
    let bare: warden_host::TenantName = "bare".parse().unwrap();
    lab.host
        .tenant(&bare)
        .load_file(&path, None, &Grant::None)
        .unwrap();
    let got = ask(
        bare.clone(),
        "kv.get",
        serde_json::json!({"bucket": "b", "key": "k"}),
    )
    .await;
    assert_eq!(got["error"]["data"]["code"], "denied", "{got}");

    // A remote that never stops asking is stopped.
    let ask_forever = || async {
        lab.host
            .default_tenant()
            .call(&granted, "ask-forever", b"")
            .await
            .unwrap_err()
            .error
    };
    match ask_forever().await {
        CallError::Remote(m) => assert!(m.contains("more than 1000 host requests"), "{m}"),
        other => panic!("{other:?}"),
    }
    // And calling it again brings no more: past its first 64, the install's calls share 1000
    // a second (each is served by this host's own threads). A limit of this host's, like a
    // process's trap: not a failure of the remote.
    match ask_forever().await {
        CallError::Trap(m) => assert!(
            m.contains("more than 1000 host requests per second, counted over all calls"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}
