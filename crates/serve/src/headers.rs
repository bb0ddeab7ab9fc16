//! What crosses the gateway in headers, both ways. Pure functions over header maps.
//!
//! In: the client's credentials (`authorization`, `cookie`, `proxy-authorization`), hop-by-hop
//! headers and every header `Connection` names are dropped, and so is anything that claims to
//! say where the request came from (`forwarded`, `x-forwarded-*`, `x-real-ip`, `x-request-id`):
//! the gateway sets those itself. Out: only an allowlist passes (never `set-cookie`). A value
//! with CR, LF, NUL or another control byte cannot get this far: Wasmtime refuses it to the
//! guest, and `HeaderValue` cannot hold one (a test below keeps that true).

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use warden_net::hop::HopByHop;

/// The client's credentials for the gateway, never the extension's business.
const CREDENTIALS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Set by the gateway only, or claims about the request a client must not make (with every
/// `x-forwarded-*` and `x-warden-*`).
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-forwarded-for",
    "x-request-id",
];

fn claimed(name: &str) -> bool {
    FORWARDING.contains(&name) || name.starts_with("x-forwarded-") || name.starts_with("x-warden-")
}

/// Response headers an extension may set (plus any `x-ext-*`).
const RESPONSE_ALLOWED: &[&str] = &[
    "content-type",
    "content-language",
    "content-disposition",
    "cache-control",
    "etag",
    "last-modified",
    "expires",
    "vary",
    "location",
];

/// The headers of a request as the extension gets them: `headers` without credentials,
/// hop-by-hop headers or client-claimed forwarding headers, plus the gateway's own
/// forwarding headers and request id.
pub fn inbound(headers: &HeaderMap, peer: Option<SocketAddr>, request_id: &str) -> HeaderMap {
    // Every header named in `Connection` is hop-by-hop for this request too.
    let hop = HopByHop::of(headers);
    let mut out = HeaderMap::with_capacity(headers.len() + 3);
    for (name, value) in headers {
        let n = name.as_str();
        if hop.contains(name) || CREDENTIALS.contains(&n) || claimed(n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Some(peer) = peer
        && let Ok(v) = HeaderValue::from_str(&peer.ip().to_string())
    {
        out.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    out.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        out.insert(HeaderName::from_static("x-request-id"), v);
    }
    out
}

/// The headers of an extension's response as the client gets them: only the allowlist.
pub fn outbound(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n == "location" && !plain_location(value) {
            continue;
        }
        if RESPONSE_ALLOWED.contains(&n) || n.starts_with("x-ext-") {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A `location` a browser may follow as a page: a reference without a scheme, or `http:` /
/// `https:`. Anything else (`javascript:`, `data:`, ...) is left out (red team, session 16).
fn plain_location(value: &HeaderValue) -> bool {
    let Ok(v) = value.to_str() else {
        return false;
    };
    let v = v.trim_start();
    // A scheme is what comes before the first `:`, if no `/`, `?` or `#` comes first.
    let end = v.find(['/', '?', '#']).unwrap_or(v.len());
    match v[..end].split_once(':') {
        None => true,
        Some((scheme, _)) => {
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_page_locations_go_out() {
        for (loc, kept) in [
            ("/next", true),
            ("next?a=b:c", true),
            ("https://example.com/x", true),
            ("HTTP://example.com", true),
            ("//example.com/x", true),
            ("javascript:alert(1)", false),
            ("JavaScript:alert(1)", false),
            (" javascript:alert(1)", false),
            ("data:text/html,hi", false),
            ("vbscript:x", false),
        ] {
            let out = outbound(&map(&[("location", loc)]));
            assert_eq!(out.contains_key("location"), kept, "{loc}");
        }
    }

    #[test]
    fn credentials_hop_by_hop_and_connection_named_headers_are_dropped() {
        let h = map(&[
            ("authorization", "Bearer wdn_secret"),
            ("cookie", "session=1"),
            ("proxy-authorization", "Basic x"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("accept", "text/plain"),
            ("x-custom", "kept"),
        ]);
        let out = inbound(&h, None, "rid");
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["accept", "x-custom", "x-forwarded-proto", "x-request-id"]
        );
    }

    #[test]
    fn forwarding_headers_are_the_gateways_never_the_clients() {
        let h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("x-request-id", "spoofed"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-whatever", "1"),
            ("x-warden-tenant", "bob"),
            ("true-client-ip", "1.1.1.1"),
            ("x-original-url", "/admin"),
        ]);
        let out = inbound(&h, Some("127.0.0.9:5555".parse().unwrap()), "rid-1");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "127.0.0.9");
        assert_eq!(out.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(out.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(out.get("x-request-id").unwrap(), "rid-1");
        for gone in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-whatever",
            "x-warden-tenant",
            "true-client-ip",
            "x-original-url",
        ] {
            assert!(out.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn only_allowlisted_response_headers_pass_and_never_set_cookie() {
        let h = map(&[
            ("content-type", "text/plain"),
            ("set-cookie", "session=stolen"),
            ("x-ext-trace", "1"),
            ("server", "evil"),
            ("access-control-allow-origin", "*"),
            ("cache-control", "no-store"),
        ]);
        let out = outbound(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-ext-trace", "cache-control"]);
    }

    #[test]
    fn a_header_value_cannot_hold_control_bytes() {
        // What `outbound` relies on to never pass CR/LF (response splitting) or NUL on.
        for bad in [
            &b"a\r\nset-cookie: x=1"[..],
            b"a\nb",
            b"a\rb",
            b"a\0b",
            b"a\x01b",
            b"a\x7fb",
        ] {
            assert!(HeaderValue::from_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
