//! fetcher: `fetch` takes a URL (`http://` or `https://`) and returns `STATUS\n` followed by at
//! most 64 KiB of the body. The host decides where it may go: its manifest lists the allowed
//! hosts, the operator grants them, and everything else comes back as the typed error
//! `HTTP-request-denied` (returned here as the `denied` call-error).

wit_bindgen::generate!({ path: "../../wit", world: "rpc-extension" });

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// Body bytes returned at most.
const MAX_BODY: usize = 64 * 1024;

struct Fetcher;

export!(Fetcher);

impl Guest for Fetcher {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        match method.as_str() {
            "fetch" => fetch(String::from_utf8_lossy(&input).trim()),
            _ => Err(error("not-found", format!("no method {method:?}"))),
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError { code: code.into(), message: message.into() }
}

fn http_error(e: ErrorCode) -> CallError {
    match e {
        ErrorCode::HttpRequestDenied => error("denied", "the host does not allow this request"),
        other => error("fetch-failed", format!("{other:?}")),
    }
}

fn fetch(url: &str) -> Result<Vec<u8>, CallError> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(error("bad-input", "expected an http:// or https:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    if request.set_scheme(Some(&scheme)).is_err()
        || request.set_authority(Some(authority)).is_err()
        || request.set_path_with_query(Some(path)).is_err()
    {
        return Err(error("bad-input", "not a valid URL"));
    }
    let future = outgoing_handler::handle(request, None).map_err(http_error)?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(http_error(e)),
        _ => return Err(error("fetch-failed", "no response")),
    };
    let mut out = format!("{}\n", response.status()).into_bytes();
    let body = response.consume().map_err(|()| error("fetch-failed", "no body"))?;
    let stream = body.stream().map_err(|()| error("fetch-failed", "no body stream"))?;
    let limit = out.len() + MAX_BODY;
    while out.len() < limit {
        match stream.blocking_read((limit - out.len()) as u64) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(error("fetch-failed", e.to_debug_string()));
            }
        }
    }
    Ok(out)
}
