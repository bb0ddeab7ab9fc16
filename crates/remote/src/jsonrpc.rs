//! The JSON-RPC 2.0 form of a call: the request warden posts, and the strict reading of the
//! answer (the version, this request's id, exactly one of `result` and `error`, the output in
//! base64 and within the cap).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::{RemoteError, cut};

#[derive(Serialize)]
struct Request<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'static str,
    params: Params<'a>,
}

#[derive(Serialize)]
struct Params<'a> {
    method: &'a str,
    input: String,
}

pub(crate) fn request(id: u64, method: &str, input: &[u8]) -> Vec<u8> {
    let r = Request {
        jsonrpc: "2.0",
        id,
        method: "call",
        params: Params {
            method,
            input: STANDARD.encode(input),
        },
    };
    // Serializing strings and numbers cannot fail.
    serde_json::to_vec(&r).unwrap_or_default()
}

/// The most bytes of an answer read for an output of at most `max_output` bytes: its base64
/// and the envelope (an error's message is cut to 16 KiB).
pub(crate) fn body_cap(max_output: u64) -> usize {
    let b64 = max_output.div_ceil(3).saturating_mul(4);
    usize::try_from(b64.saturating_add(64 * 1024)).unwrap_or(usize::MAX)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    jsonrpc: String,
    id: serde_json::Value,
    #[serde(default)]
    result: Option<Output>,
    #[serde(default)]
    error: Option<Failure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    output: String,
}

#[derive(Deserialize)]
struct Failure {
    code: i64,
    message: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// What the remote answered a POST of the call: the call's answer, or a host request (a
/// callback) to answer first.
pub(crate) enum Message {
    Answer(Result<Vec<u8>, RemoteError>),
    HostRequest {
        id: serde_json::Value,
        method: String,
        params: Option<Box<serde_json::value::RawValue>>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostRequest {
    jsonrpc: String,
    id: serde_json::Value,
    method: String,
    #[serde(default)]
    params: Option<Box<serde_json::value::RawValue>>,
}

/// Reads what the remote answered a POST of call `id`: an object with `method` is a host
/// request (with an id, a number or a string: every one is answered), anything else must be
/// the call's answer ([`answer`]).
pub(crate) fn message(body: &[u8], id: u64, max_output: u64) -> Result<Message, RemoteError> {
    let bad = |why: String| RemoteError::Protocol(why);
    let probe: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a JSON-RPC answer: {e}")))?;
    if !probe.contains_key("method") {
        return Ok(Message::Answer(answer(body, id, max_output)));
    }
    let r: HostRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a host request: {e}")))?;
    if r.jsonrpc != "2.0" {
        return Err(bad("its jsonrpc is not \"2.0\"".into()));
    }
    if !(r.id.is_string() || r.id.is_u64() || r.id.is_i64()) {
        return Err(bad(
            "a host request needs an id (a number or a string): each one is answered".into(),
        ));
    }
    Ok(Message::HostRequest {
        id: r.id,
        method: r.method,
        params: r.params,
    })
}

/// The answer to host request `id`, to POST back.
pub(crate) fn host_answer(
    id: &serde_json::Value,
    outcome: &Result<serde_json::Value, warden_process::HostError>,
) -> Vec<u8> {
    let v = match outcome {
        Ok(result) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code(), "message": e.message(), "data": {"code": e.name().as_str()}},
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

pub(crate) fn answer(body: &[u8], id: u64, max_output: u64) -> Result<Vec<u8>, RemoteError> {
    let bad = |why: String| RemoteError::Protocol(why);
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a JSON-RPC answer: {e}")))?;
    if a.jsonrpc != "2.0" {
        return Err(bad("its jsonrpc is not \"2.0\"".into()));
    }
    if a.id.as_u64() != Some(id) {
        return Err(bad("it answers another request (its id differs)".into()));
    }
    match (a.result, a.error) {
        (Some(out), None) => {
            let bytes = STANDARD
                .decode(out.output.as_bytes())
                .map_err(|e| bad(format!("its output is not base64: {e}")))?;
            if bytes.len() as u64 > max_output {
                return Err(RemoteError::TooLarge { limit: max_output });
            }
            Ok(bytes)
        }
        (None, Some(f)) => {
            // The extension's own code, if it gave one as `data.code`; else the number.
            let code = f
                .data
                .as_ref()
                .and_then(|d| d.get("code"))
                .and_then(|c| c.as_str())
                .map(|c| c.chars().take(64).collect())
                .unwrap_or_else(|| f.code.to_string());
            Err(RemoteError::Extension {
                code,
                message: cut(&f.message),
            })
        }
        _ => Err(bad("it has both or neither of result and error".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        let ok = br#"{"jsonrpc":"2.0","id":7,"result":{"output":"aGk="}}"#;
        assert_eq!(answer(ok, 7, 10).unwrap(), b"hi");
        assert!(matches!(
            answer(ok, 7, 1),
            Err(RemoteError::TooLarge { limit: 1 })
        ));
        let err = br#"{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"no","data":{"code":"not-found"}}}"#;
        match answer(err, 7, 10) {
            Err(RemoteError::Extension { code, message }) => {
                assert_eq!((code.as_str(), message.as_str()), ("not-found", "no"));
            }
            other => panic!("{other:?}"),
        }
        for (bad, says) in [
            (
                &br#"{"jsonrpc":"2.0","id":8,"result":{"output":""}}"#[..],
                "another request",
            ),
            (
                br#"{"jsonrpc":"1.0","id":7,"result":{"output":""}}"#,
                "\"2.0\"",
            ),
            (br#"{"jsonrpc":"2.0","id":7}"#, "neither"),
            (
                br#"{"jsonrpc":"2.0","id":7,"result":{"output":"!"}}"#,
                "base64",
            ),
            (
                br#"{"jsonrpc":"2.0","id":7,"result":{"output":""},"x":1}"#,
                "unknown field",
            ),
            (b"[", "not a JSON-RPC answer"),
        ] {
            let e = answer(bad, 7, 10).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
