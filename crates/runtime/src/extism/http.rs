//! `http_request(request, body)`: Extism's request JSON sent through the very egress hooks a
//! component's `wasi:http` request goes through ([`crate::egress`]): the allowlist
//! (`warden_net::admit`) before any lookup or socket, one lookup whose every address is
//! classified, a connection to the checked address only, the response cut at
//! `max_response_bytes`, each use and denial in the call's ledger.
//!
//! Redirects are not followed: a 3xx reaches the plug-in as its `http_status_code`, with its
//! `location` among the `http_headers` (Extism's own host follows up to 10 without checking
//! them again). A refused request ends the call, as in Extism (a trap the plug-in cannot
//! catch), with an error naming the refused `scheme://host:port` and why.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use warden_call::CallError;
use wasmtime::Caller;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpHooks};

use super::state::ExtismState;

/// Extism's request (`extism_manifest::HttpRequest`): unknown fields are refused, as there.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    method: Option<String>,
}

/// The largest request JSON read (URL, method, headers); checked before it is copied.
const MAX_REQUEST_JSON: usize = 64 * 1024;
/// The most headers one request may set.
const MAX_HEADERS: usize = 100;

/// Headers a plug-in may not set: the host sets `host` and the framing, and hop-by-hop
/// headers are refused, as for a component or a process extension.
fn forbidden(name: &http::HeaderName) -> bool {
    name == http::header::HOST
        || name == http::header::CONTENT_LENGTH
        || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
}

pub(super) async fn request(
    c: &mut Caller<'_, ExtismState>,
    req: u64,
    body: u64,
) -> wasmtime::Result<u64> {
    let s = c.data_mut();
    s.http_status = 0;
    s.http_headers = None;
    let text = s.text_of("http_request", "request", req, MAX_REQUEST_JSON)?;
    let parsed: Request = serde_json::from_str(&text).map_err(|e| {
        s.trap(format!(
            "http_request: the request is not Extism's JSON: {e}"
        ))
    })?;
    if parsed.headers.len() > MAX_HEADERS {
        return Err(s.trap(format!(
            "http_request: the request sets {} headers, more than the {MAX_HEADERS} it may",
            parsed.headers.len()
        )));
    }
    let method = parsed
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let method = http::Method::from_bytes(method.as_bytes())
        .map_err(|_| s.trap("http_request: the method is not an HTTP method".into()))?;
    // CONNECT would turn an allowed host into a tunnel to anywhere.
    if method == http::Method::CONNECT {
        return Err(s.trap("http_request: the method CONNECT is not allowed".into()));
    }
    // The body's copy is charged to the call's memory while the request is out.
    let payload = if body == 0 {
        Vec::new()
    } else {
        let len = match s.arena.block(body) {
            Some(b) => b.len(),
            None => {
                return Err(s.trap(format!(
                    "http_request: the body handle {body} is not a block of Extism memory"
                )));
            }
        };
        if !s.budget.charge(len) {
            return Err(s.fail(CallError::MemoryLimit(s.max_memory)));
        }
        s.arena.block(body).map(<[u8]>::to_vec).unwrap_or_default()
    };
    let charged = payload.len();
    s.arena.free(req);
    s.arena.free(body);
    let uri: http::Uri = parsed
        .url
        .parse()
        .map_err(|_| s.trap("http_request: the url is not a URL".into()))?;
    let mut request = http::Request::builder().method(method).uri(uri.clone());
    for (name, value) in &parsed.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| s.trap("http_request: a header name is not valid".into()))?;
        if forbidden(&name) {
            return Err(s.trap(format!("http_request: header {name} is set by the host")));
        }
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| s.trap("http_request: a header value is not valid".into()))?;
        request = request.header(name, value);
    }
    let request = request
        .body(
            Full::new(Bytes::from(payload))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|_| s.trap("http_request: the request is not valid".into()))?;
    // The same hooks as a component's `wasi:http`: checks, lookup, connect, caps, ledger.
    let send = Box::into_pin(
        s.hooks
            .send_request(request, None, Box::new(async { Ok(()) })),
    );
    let sent = send.await;
    let s = c.data_mut();
    s.budget.release(charged);
    let (response, io) = match sent {
        Ok(r) => r,
        Err(e) => return Err(refused(s, &e, &target_of(s, &uri))),
    };
    let (parts, body) = response.into_parts();
    // The connection is driven while the body is read (it ends with the body).
    let (collected, _) = tokio::join!(body.collect(), Box::into_pin(io));
    let s = c.data_mut();
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(refused(s, &e, &target_of(s, &uri))),
    };
    s.http_status = parts.status.as_u16();
    // Lower-case names (as `http` keeps them); the last of a repeated header wins; values
    // that are not UTF-8 are left out, as in Extism.
    let headers: BTreeMap<&str, &str> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    s.http_headers = serde_json::to_vec(&headers).ok();
    s.put("http_request", &body)
}

/// The target as the ledger names it: `scheme://host:port`, as the allowlist reads the URL.
fn target_of(s: &ExtismState, uri: &http::Uri) -> String {
    match warden_net::admit(uri, s.network.as_deref()) {
        Err(r) => r.target,
        Ok(t) => t.describe(),
    }
}

/// The call's error for a request that failed: a refusal names the target and the reason the
/// ledger recorded (and audits); a response over the cap is the cap's error.
fn refused(s: &mut ExtismState, e: &HttpError, target: &str) -> wasmtime::Error {
    match e {
        HttpError::HttpRequestDenied => {
            let reason = s
                .ledger
                .denials()
                .into_iter()
                .rev()
                .find(|d| d.target == target)
                .and_then(|d| d.reason)
                .unwrap_or_else(|| "not allowed".into());
            s.trap(format!("http_request to {target} was refused: {reason}"))
        }
        HttpError::HttpResponseBodySize(_) => s.fail(CallError::TooLarge {
            what: "http_request response body",
            size: s.max_response.bytes().saturating_add(1),
            limit: s.max_response,
        }),
        HttpError::DnsTimeout | HttpError::DnsError { .. } => s.trap(format!(
            "http_request to {target}: the name could not be resolved"
        )),
        HttpError::ConnectionTimeout
        | HttpError::ConnectionReadTimeout
        | HttpError::ConnectionWriteTimeout => {
            s.trap(format!("http_request to {target}: the request timed out"))
        }
        HttpError::ConnectionRefused | HttpError::Connect(_) => s.trap(format!(
            "http_request to {target}: the connection was refused"
        )),
        HttpError::Tls(_) | HttpError::TlsProtocolError | HttpError::TlsCertificateError => {
            s.trap(format!("http_request to {target}: TLS failed"))
        }
        other => s.trap(format!("http_request to {target} failed: {other}")),
    }
}
