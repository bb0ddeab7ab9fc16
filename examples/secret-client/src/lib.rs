//! secret-client: an rpc-extension that uses a secret the way a real integration does. The
//! operator grants `secret:ACME_TOKEN` and sets its value (`warden run --secret
//! ACME_TOKEN=@token.txt`, or `Tenant::put_secret`); `whoami` reads it through
//! `wasi:config/store` and sends `GET http://api.acme.test/whoami` (or the authority given as
//! input) with `authorization: Bearer TOKEN`, returning the status and body. The token itself is never
//! printed or returned; logs say only whether one was found.

wit_bindgen::generate!({ path: "../../wit", world: "rpc-extension-secrets", generate_all });

use exports::warden::extension::handler::Guest;
use wasi::config::store;
use wasi::logging::logging::{self, Level};
use warden::extension::types::CallError;

struct SecretClient;

export!(SecretClient);

impl Guest for SecretClient {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        match method.as_str() {
            "whoami" => whoami(&String::from_utf8_lossy(&input)),
            _ => Err(error("not-found", format!("no method {method:?}"))),
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError { code: code.into(), message: message.into() }
}

/// `api` is the API's authority (`host[:port]`), `api.acme.test` when empty.
fn whoami(api: &str) -> Result<Vec<u8>, CallError> {
    let api = if api.trim().is_empty() { "api.acme.test" } else { api.trim() };
    let token = match store::get("ACME_TOKEN") {
        Ok(Some(t)) => t,
        Ok(None) => return Err(error("not-configured", "secret ACME_TOKEN is not set")),
        Err(store::Error::Upstream(m) | store::Error::Io(m)) => {
            return Err(error("denied", m));
        }
    };
    logging::log(Level::Info, "whoami", "calling the Acme API with the configured token");
    let (status, body) = get(api, "/whoami", &format!("Bearer {token}"))?;
    Ok(format!("{status} {body}").into_bytes())
}

/// `GET http://AUTHORITY/PATH` with an authorization header; the status and body (text).
fn get(authority: &str, path: &str, auth: &str) -> Result<(u16, String), CallError> {
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let headers = Fields::new();
    headers
        .append("authorization", auth.as_bytes())
        .map_err(|e| error("bad-request", format!("{e:?}")))?;
    let req = OutgoingRequest::new(headers);
    let bad = |_| error("bad-request", "bad URL");
    req.set_scheme(Some(&Scheme::Http)).map_err(bad)?;
    req.set_authority(Some(authority)).map_err(bad)?;
    req.set_path_with_query(Some(path)).map_err(bad)?;
    let future = wasip2::http::outgoing_handler::handle(req, None)
        .map_err(|e| error("request-failed", format!("{e:?}")))?;
    future.subscribe().block();
    let resp = match future.get() {
        Some(Ok(Ok(resp))) => resp,
        Some(Ok(Err(e))) => return Err(error("request-failed", format!("{e:?}"))),
        other => return Err(error("request-failed", format!("{other:?}"))),
    };
    let status = resp.status();
    let body = resp.consume().map_err(|_| error("request-failed", "no body"))?;
    let stream = body.stream().map_err(|_| error("request-failed", "no body"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(error("request-failed", format!("{e:?}"))),
        }
        if bytes.len() > 1 << 20 {
            return Err(error("too-large", "response over 1 MiB"));
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
