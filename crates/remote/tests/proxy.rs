//! HTTP requests proxied to a remote extension, both forms (HTTP/1.1 beside JSON-RPC, HTTP/2
//! beside gRPC), against real TLS servers on loopback that say what reached them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use warden_remote::testing::{Behaviour, counted_server, leaf};
use warden_remote::{CallLimits, Remote, RemoteError};

const LIMITS: CallLimits = CallLimits {
    timeout: Duration::from_secs(2),
    max_response: 1 << 20,
};

fn client(pin: warden_manifest::SpkiPin, addr: SocketAddr, grpc: bool) -> Remote {
    let endpoint = if grpc {
        format!("grpcs://ext.test:{}", addr.port())
    } else {
        format!("https://ext.test:{}/rpc", addr.port())
    };
    Remote::new(&endpoint.parse().unwrap(), &[pin], None, None).unwrap()
}

fn request(method: &str, target: &str, body: &'static [u8]) -> http::Request<Bytes> {
    http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "client-chosen.example")
        .header("authorization", "Bearer the-clients-own")
        .header("content-type", "application/json")
        .header("connection", "x-private")
        .header("x-private", "hop")
        .header("content-length", "999")
        .body(Bytes::from_static(body))
        .unwrap()
}

fn header<'a>(r: &'a http::Response<Bytes>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_the_endpoints_origin_as_sent_with_the_calls_claims() {
    for grpc in [false, true] {
        let s = leaf(&["ext.test"], None, false, false);
        let (addr, seen) = counted_server(&s, Behaviour::Answer, grpc).await;
        let remote = client(s.pin, addr, grpc);
        let r = remote
            .forward(
                addr,
                &request("POST", "/invoices/7?full=1&x=%20", b"{\"a\":1}"),
                &LIMITS,
                Some("CLAIMS"),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "grpc {grpc}");
        assert_eq!(r.body().as_ref(), b"{\"a\":1}");
        assert_eq!(header(&r, "x-ext-method"), "POST");
        assert_eq!(header(&r, "x-ext-target"), "/invoices/7?full=1&x=%20");
        // The endpoint's host, never the client's; the call's claims, never the client's.
        assert_eq!(
            header(&r, "x-ext-host"),
            format!("ext.test:{}", addr.port())
        );
        assert_eq!(header(&r, "x-ext-auth"), "Bearer CLAIMS");
        let names = header(&r, "x-ext-headers");
        assert!(!names.contains("x-private"), "grpc {grpc}: {names}");
        assert!(names.contains("content-type"), "{names}");
        // The connection's own headers stay on that side too.
        assert!(r.headers().get("x-hop").is_none());
        assert!(r.headers().get("connection").is_none());
        // Any status is an answer, and the connection carries the next one.
        let r = remote
            .forward(addr, &request("GET", "/status/404", b""), &LIMITS, None)
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(header(&r, "x-ext-auth"), "");
        let out = remote.call(addr, "echo", b"rpc", &LIMITS).await.unwrap();
        assert_eq!(out, b"rpc");
        assert_eq!(seen.accepted(), 1, "grpc {grpc}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_or_a_stall_ends_the_request_at_the_calls_limits() {
    for grpc in [false, true] {
        let s = leaf(&["ext.test"], None, false, false);
        let (addr, seen) = counted_server(&s, Behaviour::Answer, grpc).await;
        let remote = client(s.pin, addr, grpc);
        let e = remote
            .forward(addr, &request("GET", "/flood", b""), &LIMITS, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, RemoteError::TooLarge { limit } if limit == 1 << 20),
            "{e:?}"
        );
        let short = CallLimits {
            timeout: Duration::from_millis(300),
            ..LIMITS
        };
        let e = remote
            .forward(addr, &request("GET", "/stall", b""), &short, None)
            .await
            .unwrap_err();
        assert!(matches!(e, RemoteError::Timeout(_)), "{e:?}");
        // And the next request is served.
        let r = remote
            .forward(addr, &request("GET", "/ok", b""), &LIMITS, None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Neither connection a request was cut on was used again (HTTP/2: the next requests
        // open another, the cut one is left to the requests still on it).
        assert_eq!(seen.accepted(), 3, "grpc {grpc}");
    }
}
