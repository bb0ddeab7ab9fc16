//! JSON-RPC 2.0 messages on the wire, parsed at the edge into [`Incoming`] and the error types.
//!
//! Conventions (one rule each way):
//! - bytes travel as standard base64 with padding (RFC 4648 §4), in a JSON string;
//! - every error, from the host or from the program, is a JSON-RPC error object whose `data`
//!   is `{"code": "<kebab-case name>"}`, the same names a component's `call-error` carries.
//!
//! Not supported: batches (a top-level array is refused), `"id": null`, fractional ids.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ProtocolError;

pub(crate) const VERSION: &str = "2.0";

/// Longest error message or parse detail kept from the program, in characters.
const MAX_DETAIL_CHARS: usize = 256;

/// Bytes as standard base64 in a JSON string.
pub(crate) mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub(crate) fn serialize<S: Serializer, T: AsRef<[u8]> + ?Sized>(
        bytes: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes.as_ref()))
    }

    /// Padding is required and trailing bits must be zero, so each byte string has exactly
    /// one accepted spelling.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }

    pub(crate) mod option {
        use serde::{Deserialize, Deserializer};

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            #[derive(Deserialize)]
            struct W(#[serde(with = "super")] Vec<u8>);
            Ok(Option::<W>::deserialize(d)?.map(|W(v)| v))
        }
    }
}

/// The id a program gave its request: echoed back as it came.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{:?}", cut(s)),
        }
    }
}

/// A short machine-readable error name: lowercase ASCII letters and digits in words joined by
/// `-`, at most 64 bytes (`denied`, `not-found`, `bad-input`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorName(String);

/// A string that is not an [`ErrorName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an error name is kebab-case ASCII, 1 to 64 bytes")]
pub struct BadErrorName;

impl std::str::FromStr for ErrorName {
    type Err = BadErrorName;
    fn from_str(s: &str) -> Result<Self, BadErrorName> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.split('-').all(|w| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if ok {
            Ok(ErrorName(s.to_owned()))
        } else {
            Err(BadErrorName)
        }
    }
}

impl ErrorName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `error`: the name of an error that gave no valid name of its own.
    pub fn generic() -> ErrorName {
        ErrorName::fixed("error")
    }
    fn fixed(s: &'static str) -> ErrorName {
        ErrorName(s.to_owned())
    }
}

impl std::fmt::Display for ErrorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// JSON-RPC 2.0's own codes, and warden's (in the range the spec leaves to servers).
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    /// A capability the program was not granted (`denied`).
    pub const DENIED: i64 = -32000;
    /// A quota or limit (`limit`).
    pub const LIMIT: i64 = -32001;
    /// The operation was allowed but failed (`failed`): storage, upstream, callee.
    pub const FAILED: i64 = -32002;
    /// An error an extension returned, passed on as it came (`invoke`).
    pub const CALL_ERROR: i64 = -32003;
}

/// The name JSON-RPC's integer code stands for when no `data.code` says better.
fn default_name(code: i64) -> ErrorName {
    ErrorName::fixed(match code {
        codes::PARSE_ERROR => "parse-error",
        codes::INVALID_REQUEST => "invalid-request",
        codes::METHOD_NOT_FOUND => "method-not-found",
        codes::INVALID_PARAMS => "invalid-params",
        codes::INTERNAL => "internal",
        codes::DENIED => "denied",
        codes::LIMIT => "limit",
        codes::FAILED => "failed",
        _ => "error",
    })
}

/// What the host answers a host request with when it refuses or fails it; it reaches the
/// program as a JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name} ({code}): {message}")]
pub struct HostError {
    code: i64,
    name: ErrorName,
    message: String,
}

impl HostError {
    pub fn new(code: i64, name: ErrorName, message: impl Into<String>) -> HostError {
        HostError {
            code,
            name,
            message: message.into(),
        }
    }
    /// The capability was not granted, or the policy refused this use of it.
    pub fn denied(message: impl Into<String>) -> HostError {
        Self::new(codes::DENIED, default_name(codes::DENIED), message)
    }
    /// A quota or limit was hit.
    pub fn limit(message: impl Into<String>) -> HostError {
        Self::new(codes::LIMIT, default_name(codes::LIMIT), message)
    }
    /// Allowed, but it failed (storage, upstream, callee).
    pub fn failed(message: impl Into<String>) -> HostError {
        Self::new(codes::FAILED, default_name(codes::FAILED), message)
    }
    /// Well-formed params that still make no sense (a bad URL, a bucket name out of rules).
    pub fn invalid_params(message: impl Into<String>) -> HostError {
        Self::new(
            codes::INVALID_PARAMS,
            default_name(codes::INVALID_PARAMS),
            message,
        )
    }
    /// An error another extension returned (`invoke`), passed on under its own name.
    pub fn call_error(name: ErrorName, message: impl Into<String>) -> HostError {
        Self::new(codes::CALL_ERROR, name, message)
    }
    pub(crate) fn method_not_found(method: &str) -> HostError {
        Self::new(
            codes::METHOD_NOT_FOUND,
            default_name(codes::METHOD_NOT_FOUND),
            format!("no host method {:?}", cut(method)),
        )
    }
    pub fn code(&self) -> i64 {
        self.code
    }
    pub fn name(&self) -> &ErrorName {
        &self.name
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The program's own error answer to a call (the analogue of a component's `call-error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name} ({code}): {message}")]
pub struct ExtensionError {
    /// The JSON-RPC integer code the program sent.
    pub code: i64,
    /// `data.code` when it is a valid name, else the name of `code` (`error` for codes JSON-RPC
    /// does not define).
    pub name: ErrorName,
    /// Cut to 256 characters.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireError {
    code: i64,
    message: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

impl From<WireError> for ExtensionError {
    fn from(w: WireError) -> Self {
        let name = w
            .data
            .as_ref()
            .and_then(|d| d.get("code"))
            .and_then(serde_json::Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| default_name(w.code));
        ExtensionError {
            code: w.code,
            name,
            message: cut(&w.message),
        }
    }
}

/// `Some` even for `null`, so a present `"result": null` differs from an absent one.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    jsonrpc: String,
    #[serde(default, deserialize_with = "present")]
    id: Option<RequestId>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<WireError>,
}

/// A message from the program.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A host request; without an id it is a notification and gets no answer.
    Request {
        id: Option<RequestId>,
        method: String,
        params: Option<Box<RawValue>>,
    },
    Response {
        id: RequestId,
        outcome: Result<Box<RawValue>, ExtensionError>,
    },
}

fn invalid(what: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::InvalidMessage(cut(&what.to_string()))
}

/// Parses one frame's text (already checked for UTF-8 and depth).
pub(crate) fn parse(text: &str) -> Result<Incoming, ProtocolError> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid(e),
        _ => ProtocolError::InvalidJson(cut(&e.to_string())),
    })?;
    if env.jsonrpc != VERSION {
        return Err(invalid(format_args!(
            "jsonrpc is {:?}, not \"2.0\"",
            cut(&env.jsonrpc)
        )));
    }
    match (env.method, env.result, env.error) {
        (Some(method), None, None) => Ok(Incoming::Request {
            id: env.id,
            method,
            params: env.params,
        }),
        (None, result, error) if env.params.is_none() => {
            let id = env.id.ok_or_else(|| invalid("a response without an id"))?;
            let outcome = match (result, error) {
                (Some(r), None) => Ok(r),
                (None, Some(e)) => Err(e.into()),
                _ => return Err(invalid("a response needs exactly one of result and error")),
            };
            Ok(Incoming::Response { id, outcome })
        }
        _ => Err(invalid(
            "neither a request (method) nor a response (result or error)",
        )),
    }
}

/// `{"output": "<base64>"}`, the result of a call.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallResult {
    #[serde(with = "b64")]
    pub(crate) output: Vec<u8>,
}

pub(crate) fn call_result(raw: &RawValue) -> Result<Vec<u8>, ProtocolError> {
    serde_json::from_str::<CallResult>(raw.get())
        .map(|r| r.output)
        .map_err(|e| {
            invalid(format_args!(
                "the result of call must be {{\"output\": base64}}: {e}"
            ))
        })
}

#[derive(Serialize)]
struct OutCall<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'static str,
    params: CallParams<'a>,
}

#[derive(Serialize)]
struct CallParams<'a> {
    method: &'a str,
    #[serde(serialize_with = "b64::serialize")]
    input: &'a [u8],
}

#[derive(Serialize)]
struct OutResult<'a> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    result: &'a serde_json::Value,
}

#[derive(Serialize)]
struct OutError<'a> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    data: ErrorData<'a>,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    code: &'a str,
}

/// Serializing these cannot fail (string keys, no maps with other keys); an empty body would
/// make the program see a broken frame, never the host panic.
fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The host's request for a call.
pub(crate) fn call_request(id: u64, method: &str, input: &[u8]) -> Vec<u8> {
    to_vec(&OutCall {
        jsonrpc: VERSION,
        id,
        method: "call",
        params: CallParams { method, input },
    })
}

/// The host's answer to a host request.
pub(crate) fn response(id: &RequestId, outcome: &Result<serde_json::Value, HostError>) -> Vec<u8> {
    match outcome {
        Ok(result) => to_vec(&OutResult {
            jsonrpc: VERSION,
            id,
            result,
        }),
        Err(e) => to_vec(&OutError {
            jsonrpc: VERSION,
            id,
            error: ErrorObject {
                code: e.code,
                message: &e.message,
                data: ErrorData {
                    code: e.name.as_str(),
                },
            },
        }),
    }
}

/// At most [`MAX_DETAIL_CHARS`] characters of text that came from the program.
pub(crate) fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ProtocolError {
        parse(text).unwrap_err()
    }

    #[test]
    fn requests_responses_and_notifications() {
        match parse(r#"{"jsonrpc":"2.0","id":"a","method":"kv.get","params":{"key":"k"}}"#).unwrap()
        {
            Incoming::Request { id, method, params } => {
                assert_eq!(id, Some(RequestId::String("a".into())));
                assert_eq!(method, "kv.get");
                assert_eq!(params.unwrap().get(), r#"{"key":"k"}"#);
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"jsonrpc":"2.0","method":"log"}"#).unwrap() {
            Incoming::Request { id: None, .. } => {}
            other => panic!("{other:?}"),
        }
        match parse(r#"{"jsonrpc":"2.0","id":3,"result":null}"#).unwrap() {
            Incoming::Response { id, outcome } => {
                assert_eq!(id, RequestId::Number(3));
                assert_eq!(outcome.unwrap().get(), "null");
            }
            other => panic!("{other:?}"),
        }
        match parse(
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"m","data":{"code":"not-found"}}}"#,
        )
        .unwrap()
        {
            Incoming::Response { outcome, .. } => {
                let e = outcome.unwrap_err();
                assert_eq!((e.code, e.name.as_str(), &*e.message), (-32000, "not-found", "m"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_is_not_a_message() {
        assert!(matches!(err("[1]"), ProtocolError::InvalidMessage(_)));
        assert!(matches!(err("{"), ProtocolError::InvalidJson(_)));
        assert!(matches!(err(""), ProtocolError::InvalidJson(_)));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","id":1,"result":1} x"#),
            ProtocolError::InvalidJson(_)
        ));
        assert!(matches!(
            err(r#"{"jsonrpc":"1.0","id":1,"result":1}"#),
            ProtocolError::InvalidMessage(_)
        ));
        assert!(matches!(
            err(r#"{"id":1,"result":1}"#),
            ProtocolError::InvalidMessage(_)
        ));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":""}}"#),
            ProtocolError::InvalidMessage(_)
        ));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","id":null,"result":1}"#),
            ProtocolError::InvalidMessage(_)
        ));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","id":1.5,"result":1}"#),
            ProtocolError::InvalidMessage(_)
        ));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","id":1,"result":1,"extra":0}"#),
            ProtocolError::InvalidMessage(_)
        ));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"result":1}"#),
            ProtocolError::InvalidMessage(_)
        ));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","id":1}"#),
            ProtocolError::InvalidMessage(_)
        ));
    }

    #[test]
    fn call_results_are_exact_base64() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(call_result(&raw(r#"{"output":"AP8="}"#)), Ok(vec![0, 255]));
        assert_eq!(call_result(&raw(r#"{"output":""}"#)), Ok(vec![]));
        // JSON's escaped slash is still base64's slash.
        assert_eq!(call_result(&raw(r#"{"output":"\/w=="}"#)), Ok(vec![255]));
        for bad in [
            r#"{"output":"AP8"}"#,  // padding missing
            r#"{"output":"AP9="}"#, // trailing bits set
            r#"{"output":"A P8="}"#,
            r#"{"output":1}"#,
            r#"{"output":"AP8=","x":1}"#,
            r#""AP8=""#,
            "null",
        ] {
            assert!(
                matches!(
                    call_result(&raw(bad)),
                    Err(ProtocolError::InvalidMessage(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_names() {
        for ok in ["denied", "not-found", "e2big", "a-1-b"] {
            assert!(ok.parse::<ErrorName>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "a b", &"a".repeat(65)] {
            assert!(bad.parse::<ErrorName>().is_err(), "{bad}");
        }
        // A program's error without a usable data.code is named after its integer code.
        let e: ExtensionError = WireError {
            code: -32601,
            message: "x".repeat(1000),
            data: Some(serde_json::json!({"code": "Not Valid"})),
        }
        .into();
        assert_eq!(e.name.as_str(), "method-not-found");
        assert_eq!(e.message.chars().count(), 259);
    }

    #[test]
    fn the_wire_format() {
        assert_eq!(
            String::from_utf8(call_request(7, "echo", b"hi\x00")).unwrap(),
            r#"{"jsonrpc":"2.0","id":7,"method":"call","params":{"method":"echo","input":"aGkA"}}"#
        );
        assert_eq!(
            String::from_utf8(response(
                &RequestId::String("r1".into()),
                &Err(HostError::denied("kv bucket \"x\" not granted"))
            ))
            .unwrap(),
            r#"{"jsonrpc":"2.0","id":"r1","error":{"code":-32000,"message":"kv bucket \"x\" not granted","data":{"code":"denied"}}}"#
        );
    }
}
