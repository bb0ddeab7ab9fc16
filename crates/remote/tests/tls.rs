//! The remote client against real TLS servers on loopback, each with certificates made here
//! (rcgen): pins, a bundle's CA, expiry, names, client certificates, and servers that stall,
//! flood or answer nonsense.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use warden_manifest::RemoteEndpoint;
use warden_remote::testing::{Behaviour, Ca, Leaf, grpc_server, leaf, server};
use warden_remote::{CallLimits, ClientIdentity, Remote, RemoteError};

fn endpoint(host: &str, addr: SocketAddr) -> RemoteEndpoint {
    format!("https://{host}:{}/rpc", addr.port())
        .parse()
        .unwrap()
}

const LIMITS: CallLimits = CallLimits {
    timeout: Duration::from_secs(2),
    max_response: 1 << 20,
};

async fn call(remote: &Remote, addr: SocketAddr, method: &str) -> Result<Vec<u8>, RemoteError> {
    remote.call(addr, method, b"hello", &LIMITS).await
}

#[tokio::test]
async fn a_pinned_server_answers_and_its_errors_come_back_as_the_extensions() {
    let s = leaf(&["ext.test"], None, false, false);
    let addr = server(&s, None, Behaviour::Answer).await;
    let remote = Remote::new(&endpoint("ext.test", addr), &[s.pin], None, None).unwrap();
    assert_eq!(call(&remote, addr, "echo").await.unwrap(), b"hello");
    match call(&remote, addr, "fail").await {
        Err(RemoteError::Extension { code, message }) => {
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("boom", "failing on purpose")
            );
        }
        other => panic!("{other:?}"),
    }
    // An IP endpoint, its certificate naming the IP.
    let ip = leaf(&["127.0.0.1"], None, false, false);
    let addr = server(&ip, None, Behaviour::Answer).await;
    let remote = Remote::new(&endpoint("127.0.0.1", addr), &[ip.pin], None, None).unwrap();
    assert_eq!(call(&remote, addr, "echo").await.unwrap(), b"hello");
}

#[tokio::test]
async fn a_valid_ca_signed_certificate_for_another_key_is_refused_as_a_pin_mismatch() {
    let ca = Ca::new("Some CA");
    let pinned = leaf(&["ext.test"], Some(&ca), false, false);
    let other = leaf(&["ext.test"], Some(&ca), false, false);
    let addr = server(&other, None, Behaviour::Answer).await;
    // Even with the CA in the bundle: the key is not pinned.
    let remote = Remote::new(
        &endpoint("ext.test", addr),
        &[pinned.pin],
        Some(ca.pem.as_bytes()),
        None,
    )
    .unwrap();
    match call(&remote, addr, "echo").await {
        Err(RemoteError::Pin(p)) => {
            assert_eq!(p.presented, vec![other.pin.to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn with_a_ca_in_the_bundle_the_chain_must_lead_to_it_too() {
    let ca = Ca::new("The CA");
    let good = leaf(&["ext.test"], Some(&ca), false, false);
    let addr = server(&good, None, Behaviour::Answer).await;
    let remote = Remote::new(
        &endpoint("ext.test", addr),
        &[good.pin],
        Some(ca.pem.as_bytes()),
        None,
    )
    .unwrap();
    assert_eq!(call(&remote, addr, "echo").await.unwrap(), b"hello");
    // Pinned, but signed by another CA.
    let stranger = Ca::new("Another CA");
    let elsewhere = leaf(&["ext.test"], Some(&stranger), false, false);
    let addr = server(&elsewhere, None, Behaviour::Answer).await;
    let remote = Remote::new(
        &endpoint("ext.test", addr),
        &[elsewhere.pin],
        Some(ca.pem.as_bytes()),
        None,
    )
    .unwrap();
    match call(&remote, addr, "echo").await {
        Err(RemoteError::Certificate(m)) => assert!(m.contains("CA"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn expired_certificates_and_other_names_are_refused() {
    let old = leaf(&["ext.test"], None, true, false);
    let addr = server(&old, None, Behaviour::Answer).await;
    let remote = Remote::new(&endpoint("ext.test", addr), &[old.pin], None, None).unwrap();
    match call(&remote, addr, "echo").await {
        Err(RemoteError::Certificate(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("{other:?}"),
    }
    let named = leaf(&["other.test"], None, false, false);
    let addr = server(&named, None, Behaviour::Answer).await;
    let remote = Remote::new(&endpoint("ext.test", addr), &[named.pin], None, None).unwrap();
    match call(&remote, addr, "echo").await {
        Err(RemoteError::Certificate(m)) => assert!(m.contains("name"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_asks_for_a_client_certificate_gets_the_installs_and_refuses_others() {
    let clients = Ca::new("Operator's client CA");
    let s = leaf(&["ext.test"], None, false, false);
    let addr = server(&s, Some(&clients), Behaviour::Answer).await;
    let ep = endpoint("ext.test", addr);
    let issued = leaf(&["tenant-a.install"], Some(&clients), false, true);
    let id = ClientIdentity::from_pem(issued.cert.as_bytes(), issued.key.as_bytes()).unwrap();
    let remote = Remote::new(&ep, &[s.pin], None, Some(&id)).unwrap();
    assert_eq!(call(&remote, addr, "echo").await.unwrap(), b"hello");
    // None, and one from another CA: the server refuses both.
    let stranger = Ca::new("Not the operator");
    let forged = leaf(&["tenant-a.install"], Some(&stranger), false, true);
    let wrong = ClientIdentity::from_pem(forged.cert.as_bytes(), forged.key.as_bytes()).unwrap();
    for identity in [None, Some(&wrong)] {
        let remote = Remote::new(&ep, &[s.pin], None, identity).unwrap();
        match call(&remote, addr, "echo").await {
            Err(RemoteError::Handshake(m)) => assert!(m.contains("refused"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn stalls_floods_and_nonsense_end_the_call_with_their_own_errors() {
    let s = leaf(&["ext.test"], None, false, false);
    let stall = server(&s, None, Behaviour::Stall).await;
    let remote = Remote::new(&endpoint("ext.test", stall), &[s.pin], None, None).unwrap();
    let started = std::time::Instant::now();
    let quick = CallLimits {
        timeout: Duration::from_millis(300),
        ..LIMITS
    };
    match remote.call(stall, "echo", b"x", &quick).await {
        Err(RemoteError::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    for (behaviour, check) in [
        (
            Behaviour::Flood,
            (|e: &RemoteError| matches!(e, RemoteError::TooLarge { .. }))
                as fn(&RemoteError) -> bool,
        ),
        (Behaviour::Malformed, |e| {
            matches!(e, RemoteError::Protocol(_))
        }),
        (Behaviour::Fails, |e| matches!(e, RemoteError::Status(500))),
    ] {
        let addr = server(&s, None, behaviour).await;
        let remote = Remote::new(&endpoint("ext.test", addr), &[s.pin], None, None).unwrap();
        let e = call(&remote, addr, "echo").await.unwrap_err();
        assert!(check(&e), "{e:?}");
    }
}

/// The pin is what the issue's `openssl` line prints for the same certificate.
#[test]
fn pins_match_what_openssl_prints() {
    use std::process::Command;
    let dir = tempfile_dir();
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=ext.test", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let line = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = Command::new("sh").args(["-c", &line]).output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
    let pin = warden_remote::pin_of(&der).unwrap();
    assert_eq!(pin.to_string(), format!("sha256/{}", printed.trim()));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("warden-remote-pin-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A client key that is not the certificate's, or not a key at all, is refused when set.
#[test]
fn a_client_identity_must_be_a_certificate_and_its_own_key() {
    let a = leaf(&["a.client"], None, false, true);
    let b = leaf(&["b.client"], None, false, true);
    ClientIdentity::from_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap();
    for (cert, key) in [
        (a.cert.as_str(), b.key.as_str()),
        (
            a.cert.as_str(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ),
        ("", a.key.as_str()),
    ] {
        assert!(ClientIdentity::from_pem(cert.as_bytes(), key.as_bytes()).is_err());
    }
}

fn grpc_endpoint(host: &str, addr: SocketAddr) -> RemoteEndpoint {
    format!("grpcs://{host}:{}", addr.port()).parse().unwrap()
}

/// The gRPC form answers as the JSON-RPC form does, errors included, on the same pins.
#[tokio::test]
async fn the_grpc_form_gives_the_json_rpc_forms_results() {
    let s = leaf(&["ext.test"], None, false, false);
    let json = server(&s, None, Behaviour::Answer).await;
    let grpc = grpc_server(&s, None, Behaviour::Answer).await;
    let a = Remote::new(&endpoint("ext.test", json), &[s.pin], None, None).unwrap();
    let b = Remote::new(&grpc_endpoint("ext.test", grpc), &[s.pin], None, None).unwrap();
    for input in [&b"hello"[..], b"", &[0u8, 255, 10, 13][..]] {
        let x = a.call(json, "echo", input, &LIMITS).await.unwrap();
        let y = b.call(grpc, "echo", input, &LIMITS).await.unwrap();
        assert_eq!(x, y);
        assert_eq!(y, input);
    }
    let x = a
        .call(json, "fail", b"", &LIMITS)
        .await
        .unwrap_err()
        .to_string();
    match b.call(grpc, "fail", b"", &LIMITS).await {
        Err(RemoteError::Extension { code, message }) => {
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("boom", "failing on purpose")
            );
            assert_eq!(x, message);
        }
        other => panic!("{other:?}"),
    }
    // Pins hold for gRPC too.
    let other = leaf(&["ext.test"], None, false, false);
    let c = Remote::new(&grpc_endpoint("ext.test", grpc), &[other.pin], None, None).unwrap();
    assert!(matches!(
        c.call(grpc, "echo", b"x", &LIMITS).await,
        Err(RemoteError::Pin(_))
    ));
}

#[tokio::test]
async fn a_grpc_server_that_stalls_floods_or_answers_nonsense_is_stopped() {
    let s = leaf(&["ext.test"], None, false, false);
    let quick = CallLimits {
        timeout: Duration::from_millis(300),
        ..LIMITS
    };
    let stall = grpc_server(&s, None, Behaviour::Stall).await;
    let r = Remote::new(&grpc_endpoint("ext.test", stall), &[s.pin], None, None).unwrap();
    assert!(matches!(
        r.call(stall, "echo", b"x", &quick).await,
        Err(RemoteError::Timeout(_))
    ));
    let flood = grpc_server(&s, None, Behaviour::Flood).await;
    let r = Remote::new(&grpc_endpoint("ext.test", flood), &[s.pin], None, None).unwrap();
    let e = r.call(flood, "echo", b"x", &LIMITS).await.unwrap_err();
    assert!(matches!(e, RemoteError::TooLarge { .. }), "{e:?}");
    let junk = grpc_server(&s, None, Behaviour::Malformed).await;
    let r = Remote::new(&grpc_endpoint("ext.test", junk), &[s.pin], None, None).unwrap();
    let e = r.call(junk, "echo", b"x", &LIMITS).await.unwrap_err();
    assert!(matches!(e, RemoteError::Protocol(_)), "{e:?}");
    // An HTTP error instead of a gRPC answer (a proxy's): the remote failed, not the
    // extension (as with JSON-RPC).
    let down = grpc_server(&s, None, Behaviour::Fails).await;
    let r = Remote::new(&grpc_endpoint("ext.test", down), &[s.pin], None, None).unwrap();
    let e = r.call(down, "echo", b"x", &LIMITS).await.unwrap_err();
    assert!(matches!(e, RemoteError::Protocol(_)), "{e:?}");
}

/// Red team of session 15: an impostor appends the real server's (public) certificate to a
/// chain of its own. Only the leaf's key signs the handshake, so only the leaf's pin counts:
/// refused with and without a CA in the bundle, over both forms.
#[tokio::test]
async fn a_pinned_certificate_appended_to_an_impostors_chain_is_refused() {
    let ca = Ca::new("Vendor CA");
    let real = leaf(&["ext.test"], Some(&ca), false, false);
    for with_ca in [false, true] {
        let own = leaf(&["ext.test"], with_ca.then_some(&ca), false, false);
        let impostor = Leaf {
            cert: format!("{}{}", own.cert, real.cert),
            key: own.key.clone(),
            pin: own.pin,
        };
        let ca_pem = with_ca.then_some(ca.pem.as_bytes());
        let json = server(&impostor, None, Behaviour::Answer).await;
        let grpc = grpc_server(&impostor, None, Behaviour::Answer).await;
        for (ep, addr) in [
            (endpoint("ext.test", json), json),
            (grpc_endpoint("ext.test", grpc), grpc),
        ] {
            let r = Remote::new(&ep, &[real.pin], ca_pem, None).unwrap();
            match r.call(addr, "echo", b"secret input", &LIMITS).await {
                Err(RemoteError::Pin(p)) => {
                    assert_eq!(p.presented[0], own.pin.to_string(), "{with_ca}");
                }
                other => panic!("with a CA: {with_ca}, {ep}: {other:?}"),
            }
        }
    }
}

/// A bundle's CA file must hold CA certificates: a leaf there is refused when the client is
/// made, not at every call.
#[test]
fn a_ca_file_that_holds_a_leaf_is_refused_up_front() {
    let ca = Ca::new("Vendor CA");
    let s = leaf(&["ext.test"], Some(&ca), false, false);
    let ep: RemoteEndpoint = "https://ext.test/rpc".parse().unwrap();
    assert!(Remote::new(&ep, &[s.pin], Some(ca.pem.as_bytes()), None).is_ok());
    let e = Remote::new(&ep, &[s.pin], Some(s.cert.as_bytes()), None).unwrap_err();
    assert!(e.to_string().contains("not a CA"), "{e}");
}
