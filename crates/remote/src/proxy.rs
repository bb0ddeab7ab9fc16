//! An HTTP request proxied to a remote extension (an `[[endpoints]]` route without `call`):
//! what goes out and what comes back, as pure functions over requests and header maps.
//!
//! Out: the request's method, its path and query unchanged on the endpoint's origin (the
//! manifest's endpoint paths are the remote's own), its headers without hop-by-hop ones and
//! without `host`, `authorization` and `content-length` (this side sets those: the host the
//! endpoint names, the call's signed claims, the body's length). Back: the status, the headers
//! without hop-by-hop ones and `content-length`, the body read whole within the call's cap.
//! Which headers reach the remote and the client is the caller's policy (the gateway's
//! allowlists); this module only keeps the connection's own headers to itself.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};

use warden_net::hop::HopByHop;

use crate::RemoteError;

/// `headers` without the connection's own ones (and every header `Connection` names), and
/// without `drop`.
fn kept(headers: &HeaderMap, drop: &[HeaderName]) -> HeaderMap {
    let hop = HopByHop::of(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if hop.contains(name) || drop.contains(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The request to send: `request`'s method, path and query and kept headers, to
/// `authority`, with `bearer` as its authorization. `absolute`: the URI carries the scheme and
/// authority (HTTP/2), else it is the path and query with a `host` header (HTTP/1.1).
pub(crate) fn outgoing(
    request: &http::Request<Bytes>,
    authority: &str,
    bearer: Option<&str>,
    absolute: bool,
) -> Result<http::Request<Bytes>, RemoteError> {
    let bad = |why: String| RemoteError::Protocol(format!("the request cannot be sent: {why}"));
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if !path.starts_with('/') {
        return Err(bad(format!("its target {path:?} is not a path")));
    }
    let uri = if absolute {
        http::Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| bad(e.to_string()))?
    } else {
        path.parse()
            .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?
    };
    // The body is read whole already (no `expect`), and what comes back is given back as
    // it is, so it must not be encoded in a way the client did not ask this side for (the
    // gateway does not pass `content-encoding` back).
    let mut headers = kept(
        request.headers(),
        &[
            header::HOST,
            header::AUTHORIZATION,
            header::CONTENT_LENGTH,
            header::EXPECT,
            header::ACCEPT_ENCODING,
        ],
    );
    if !absolute {
        headers.insert(
            header::HOST,
            authority
                .parse()
                .map_err(|_| bad("the endpoint's host".into()))?,
        );
    }
    if let Some(token) = bearer {
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .map_err(|_| bad("the claims are not a header value".into()))?,
        );
    }
    let mut out = http::Request::new(request.body().clone());
    *out.method_mut() = request.method().clone();
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The answer to give back: `parts`' status and kept headers, and `body`. An informational
/// status (`101 Switching Protocols` above all) is not an answer to relay: a front proxy that
/// trusts it may open a raw tunnel (red team).
pub(crate) fn answer(
    parts: &http::response::Parts,
    body: Bytes,
) -> Result<http::Response<Bytes>, RemoteError> {
    if parts.status.is_informational() {
        return Err(RemoteError::Protocol(format!(
            "the remote answered {} to a proxied request",
            parts.status
        )));
    }
    let mut out = http::Response::new(body);
    *out.status_mut() = parts.status;
    *out.headers_mut() = kept(&parts.headers, &[header::CONTENT_LENGTH]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_connections_own_headers_stay_on_this_side() {
        let request = http::Request::builder()
            .method("PUT")
            .uri("/invoices/7?full=1")
            .header("host", "evil.example")
            .header("authorization", "Bearer client-token")
            .header("connection", "x-secret, keep-alive")
            .header("x-secret", "hop")
            .header("transfer-encoding", "chunked")
            .header("content-length", "999")
            .header("content-type", "application/json")
            .header("expect", "100-continue")
            .header("accept-encoding", "gzip")
            .header("x-ext-a", "1")
            .header("x-ext-a", "2")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let h1 = outgoing(&request, "ext.test:8443", Some("JWT"), false).unwrap();
        assert_eq!(h1.method(), "PUT");
        assert_eq!(h1.uri(), "/invoices/7?full=1");
        let names: Vec<&str> = h1.headers().keys().map(|k| k.as_str()).collect();
        for gone in [
            "connection",
            "x-secret",
            "transfer-encoding",
            "content-length",
        ] {
            assert!(!names.contains(&gone), "{gone}: {names:?}");
        }
        assert_eq!(h1.headers()["host"], "ext.test:8443");
        assert_eq!(h1.headers()["authorization"], "Bearer JWT");
        assert_eq!(h1.headers().get_all("x-ext-a").iter().count(), 2);
        assert_eq!(h1.body().as_ref(), b"{}");

        // HTTP/2: the authority is in the URI, no host header; no claims, no authorization.
        let h2 = outgoing(&request, "ext.test:8443", None, true).unwrap();
        assert_eq!(h2.uri(), "https://ext.test:8443/invoices/7?full=1");
        assert!(h2.headers().get("host").is_none());
        assert!(h2.headers().get("authorization").is_none());

        let parts = http::Response::builder()
            .status(404)
            .header("connection", "close")
            .header("keep-alive", "timeout=5")
            .header("content-length", "3")
            .header("etag", "\"1\"")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let back = answer(&parts, Bytes::from_static(b"gone")).unwrap();
        assert_eq!(back.status(), 404);
        let names: Vec<&str> = back.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["etag"]);
        let switching = http::Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(answer(&switching, Bytes::new()).is_err());
    }

    #[test]
    fn an_absolute_target_keeps_only_its_path() {
        let request = http::Request::builder()
            .uri("https://elsewhere.example/x")
            .body(Bytes::new())
            .unwrap();
        // An absolute URI keeps only its path: the origin is the endpoint's, never the caller's.
        let out = outgoing(&request, "ext.test", None, true).unwrap();
        assert_eq!(out.uri(), "https://ext.test/x");
        let star = http::Request::builder()
            .method("OPTIONS")
            .uri("*")
            .body(Bytes::new())
            .unwrap();
        assert!(outgoing(&star, "ext.test", None, false).is_err());
    }
}
