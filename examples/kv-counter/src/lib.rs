//! kv-counter: named counters in the extension's key-value store (`wasi:keyvalue`), which the
//! host keeps private to this extension and the tenant that installed it, across restarts.
//!
//! Methods (plain-text input and output):
//! - `increment`: input `NAME` or `NAME DELTA` (default delta 1; empty name = `hits`);
//!   returns the new value. Uses `atomics.increment`, so concurrent calls never lose a count.
//! - `get`: input `NAME`; returns the value (`0` if never incremented).
//! - `ping`: input an `http://` or `https://` URL; GETs it through `wasi:http` and returns the
//!   response status (`200`). Where it may go is the operator's grant, not this code's choice.
//!
//! `examples/process/kv-counter` is the same extension as a native process: it gives the same
//! outputs and the same errors (codes and messages), which is why the messages here are fixed.

wit_bindgen::generate!({ path: ["../../wit", "wit"], world: "warden-examples:kv-counter/kv-counter", generate_all });

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;
use wasi::keyvalue::{atomics, store};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, OutgoingRequest, Scheme};

struct Counter;

export!(Counter);

impl Guest for Counter {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        // The method is looked at first, so an unknown one is `not-found` whatever the input
        // and the grant (the process twin cannot "open" a store, so it could not match that).
        match method.as_str() {
            "increment" | "get" => count(&method, input),
            "ping" => ping(&input),
            _ => Err(error("not-found", format!("no method {method:?}"))),
        }
    }
}

fn count(method: &str, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
    let input = String::from_utf8(input).map_err(|_| error("bad-input", "input must be UTF-8"))?;
    let mut parts = input.split_whitespace();
    let name = parts.next().unwrap_or("hits");
    // The delta is checked before the store is opened, so bad input is `bad-input` with or
    // without the kv grant, as in the process twin (which has no separate "open").
    let delta = match (method, parts.next()) {
        ("increment", Some(d)) => d
            .parse()
            .map_err(|_| error("bad-input", "delta must be a u64"))?,
        _ => 1, // `get` ignores anything after the name
    };
    let bucket = store::open("default").map_err(kv_error)?;
    let value = match method {
        "increment" => atomics::increment(&bucket, name, delta).map_err(kv_error)?,
        _ => match bucket.get(name).map_err(kv_error)? {
            Some(v) => String::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| error("corrupt", "the counter is not a number"))?,
            None => 0,
        },
    };
    Ok(value.to_string().into_bytes())
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError {
        code: code.into(),
        message: message.into(),
    }
}

fn kv_error(e: store::Error) -> CallError {
    match e {
        store::Error::AccessDenied => error("denied", "key-value access is not granted"),
        store::Error::NoSuchStore => error("kv", "no such store"),
        store::Error::Other(m) => error("kv", m),
    }
}

/// GETs the URL and answers its status; the body is not read.
fn ping(input: &[u8]) -> Result<Vec<u8>, CallError> {
    let bad_input = || error("bad-input", "input must be an http or https URL");
    let url = std::str::from_utf8(input).map_err(|_| bad_input())?;
    let (scheme, authority, path) = split_url(url.trim()).ok_or_else(bad_input)?;
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let request = OutgoingRequest::new(Fields::new());
    // Unreachable after `split_url`, which accepts only what these take; kept as a fence.
    if request.set_scheme(Some(&scheme)).is_err()
        || request.set_authority(Some(authority)).is_err()
        || request.set_path_with_query(Some(path)).is_err()
    {
        return Err(bad_input());
    }
    // Refusals and failures get fixed messages: the details (a DNS error, a TLS alert) differ
    // between the component's and the process's HTTP stacks, the category does not.
    let http_error = |e: ErrorCode| match e {
        ErrorCode::HttpRequestDenied => error("denied", "the host refused the request"),
        _ => error("fetch", "the request failed"),
    };
    let future = outgoing_handler::handle(request, None).map_err(http_error)?;
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Ok(response.status().to_string().into_bytes()),
        Some(Ok(Err(e))) => Err(http_error(e)),
        _ => Err(error("fetch", "the request failed")),
    }
}

/// Splits `http(s)://HOST[:PORT][/PATH]` into scheme, authority and path (`/` if none). Only
/// a plain subset is taken (a host of letters, digits, `.` and `-`; a decimal port; a path of
/// URL characters), which every HTTP stack accepts as it is, so the component and the process
/// twin refuse exactly the same inputs. The process twin has a copy of this function.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b));
    (host_ok && port_ok && path_ok).then_some((scheme, authority, path))
}
