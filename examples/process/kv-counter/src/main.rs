//! kv-counter as a process extension: the twin of the component in `examples/kv-counter`, with
//! the same methods, outputs and errors (codes and messages), so a caller cannot tell them apart.
//!
//! It speaks warden's process protocol (`crates/process`): JSON-RPC 2.0 messages in
//! `Content-Length: N\r\n\r\n` frames on stdin and stdout. For each `call` from the host it
//! sends host requests (`kv.increment`, `kv.get`, `http.fetch`) with ids of its own, reads
//! each one's answer, then answers the call. It serves calls until stdin closes (a warm
//! process serves many) and exits 0; on anything that is not the protocol it writes one line
//! to stderr and exits 1, never panicking.
//!
//! It runs in the sandbox's empty root (no /proc, no /etc, no libc, no environment), so it is
//! built as a static executable and touches nothing but fds 0-2.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, StdinLock, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest frame read: the host's own ceiling for a frame (64 MiB).
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Longest header line read.
const MAX_HEADER_LINE: usize = 1024;

/// The JSON-RPC code of this program's own errors: `CALL_ERROR` (-32003) in
/// `crates/process/src/message.rs`, "an error an extension returned". The host goes by
/// `data.code` (the component's `call-error` code) and the message; the integer is only a
/// fallback, and -32000 would wrongly say "denied" for `bad-input` or `not-found`.
const CALL_ERROR: i64 = -32003;

fn main() -> ExitCode {
    // stdout as a plain file: std's stdout is line-buffered, which would split each frame
    // into two writes (the header ends in a newline) and wake the host twice.
    let output = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("kv-counter: stdout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut conn = Conn {
        input: BufReader::new(io::stdin().lock()),
        output,
        next_id: 0,
    };
    match serve(&mut conn) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Broken(why)) => {
            eprintln!("kv-counter: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Answers calls until stdin closes.
fn serve(conn: &mut Conn) -> Result<(), Broken> {
    while let Some(frame) = conn.read_frame()? {
        let (id, method, input) = parse_call(&frame)?;
        let answer = match call(conn, &method, input) {
            Ok(output) => ("result", json!({"output": B64.encode(output)})),
            Err(Fail::Call(e)) => (
                "error",
                json!({"code": CALL_ERROR, "message": e.message, "data": {"code": e.code}}),
            ),
            Err(Fail::Broken(b)) => return Err(b),
        };
        conn.write_message(&id, &[answer])?;
    }
    Ok(())
}

/// The method first, so an unknown one is `not-found` whatever the input (as the component).
fn call(conn: &mut Conn, method: &str, input: Vec<u8>) -> Result<Vec<u8>, Fail> {
    match method {
        "increment" | "get" => count(conn, method, input),
        "ping" => ping(conn, &input),
        _ => Err(error("not-found", format!("no method {method:?}"))),
    }
}

/// `increment` (`NAME` or `NAME DELTA`) and `get` (`NAME`); an empty name is `hits`.
fn count(conn: &mut Conn, method: &str, input: Vec<u8>) -> Result<Vec<u8>, Fail> {
    let input = String::from_utf8(input).map_err(|_| error("bad-input", "input must be UTF-8"))?;
    let mut parts = input.split_whitespace();
    let name = parts.next().unwrap_or("hits");
    let value = if method == "increment" {
        let delta: u64 = match parts.next() {
            Some(d) => d
                .parse()
                .map_err(|_| error("bad-input", "delta must be a u64"))?,
            None => 1,
        };
        let params = json!({"bucket": "default", "key": name, "delta": delta});
        let answer = conn.host("kv.increment", params)?.map_err(kv_error)?;
        // The host counts atomically, so concurrent calls never lose a count.
        answer["value"]
            .as_u64()
            .ok_or_else(|| broken("kv.increment answered without a number"))?
    } else {
        // `get` ignores anything after the name.
        let params = json!({"bucket": "default", "key": name});
        let answer = conn.host("kv.get", params)?.map_err(kv_error)?;
        match answer.get("value") {
            Some(Value::Null) => 0, // never incremented
            Some(Value::String(b64)) => {
                let bytes = B64
                    .decode(b64)
                    .map_err(|_| broken("kv.get answered bad base64"))?;
                String::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| error("corrupt", "the counter is not a number"))?
            }
            _ => return Err(broken("kv.get answered without a value")),
        }
    };
    Ok(value.to_string().into_bytes())
}

/// The component's texts: a refusal names the capability; other failures (a quota, storage)
/// pass the host's message on, as `wasi:keyvalue`'s `other(message)` does for the component.
fn kv_error(e: HostError) -> Fail {
    match e.code.as_str() {
        "denied" => error("denied", "key-value access is not granted"),
        _ => error("kv", e.message),
    }
}

/// GETs the URL through the host and answers the response status.
fn ping(conn: &mut Conn, input: &[u8]) -> Result<Vec<u8>, Fail> {
    let bad_input = || error("bad-input", "input must be an http or https URL");
    let url = std::str::from_utf8(input).map_err(|_| bad_input())?;
    let (scheme, authority, path) = split_url(url.trim()).ok_or_else(bad_input)?;
    // The URL as the component sends it (`/` when it has no path).
    let params = json!({"method": "GET", "url": format!("{scheme}://{authority}{path}")});
    // Fixed messages, as the component's: the details differ between the two HTTP stacks.
    let answer = conn
        .host("http.fetch", params)?
        .map_err(|e| match e.code.as_str() {
            "denied" => error("denied", "the host refused the request"),
            _ => error("fetch", "the request failed"),
        })?;
    let status = answer["status"]
        .as_u64()
        .ok_or_else(|| broken("http.fetch answered without a status"))?;
    Ok(status.to_string().into_bytes())
}

/// A copy of the component's `split_url` (keep the two the same): `http(s)://HOST[:PORT][/PATH]`
/// into scheme, authority and path (`/` if none), for a plain subset every HTTP stack accepts
/// as it is (a host of letters, digits, `.` and `-`; a decimal port; a path of URL characters).
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

/// The component's `call-error`.
struct CallError {
    code: &'static str,
    message: String,
}

/// The stream is not the protocol: the call cannot be answered, and the process exits.
struct Broken(String);

/// Why a call has no output.
enum Fail {
    Call(CallError),
    Broken(Broken),
}

impl From<Broken> for Fail {
    fn from(b: Broken) -> Fail {
        Fail::Broken(b)
    }
}

fn error(code: &'static str, message: impl Into<String>) -> Fail {
    Fail::Call(CallError {
        code,
        message: message.into(),
    })
}

fn broken(why: impl Into<String>) -> Fail {
    Fail::Broken(Broken(why.into()))
}

/// The host's answer to a host request when it refuses or fails it.
struct HostError {
    /// `data.code`: `denied`, `limit`, `failed`, `invalid-params`, ...
    code: String,
    message: String,
}

/// A message from the host: a `call` request, or the answer to one of our host requests.
#[derive(Deserialize)]
struct Message {
    jsonrpc: String,
    id: Option<Value>,
    method: Option<String>,
    params: Option<CallParams>,
    result: Option<Value>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct CallParams {
    method: String,
    input: String,
}

#[derive(Deserialize)]
struct WireError {
    message: String,
    data: Option<ErrorData>,
}

#[derive(Deserialize)]
struct ErrorData {
    code: String,
}

fn parse(frame: &[u8]) -> Result<Message, Broken> {
    let msg: Message = serde_json::from_slice(frame)
        .map_err(|e| Broken(format!("a frame is not a message: {e}")))?;
    if msg.jsonrpc != "2.0" {
        return Err(Broken("a message is not JSON-RPC 2.0".into()));
    }
    Ok(msg)
}

/// `{"jsonrpc":"2.0","id":N,"method":"call","params":{"method":"..","input":"<base64>"}}`.
fn parse_call(frame: &[u8]) -> Result<(Value, String, Vec<u8>), Broken> {
    let msg = parse(frame)?;
    match (msg.id, msg.method.as_deref(), msg.params) {
        (Some(id), Some("call"), Some(p)) => {
            let input = B64
                .decode(&p.input)
                .map_err(|_| Broken("the call's input is not base64".into()))?;
            Ok((id, p.method, input))
        }
        _ => Err(Broken("expected a call request".into())),
    }
}

/// The program's ends of the pipes.
struct Conn {
    input: BufReader<StdinLock<'static>>,
    output: File,
    next_id: u64,
}

impl Conn {
    /// Sends a host request (ids `h1`, `h2`, ...) and reads its answer: the host answers each
    /// request before it sends anything else, so the next frame must be that answer.
    fn host(&mut self, method: &str, params: Value) -> Result<Result<Value, HostError>, Broken> {
        self.next_id += 1;
        let id = format!("h{}", self.next_id);
        self.write_message(&json!(id), &[("method", json!(method)), ("params", params)])?;
        let frame = self
            .read_frame()?
            .ok_or_else(|| Broken(format!("stdin closed before the answer to {method}")))?;
        let msg = parse(&frame)?;
        if msg.id.as_ref().and_then(Value::as_str) != Some(id.as_str()) || msg.method.is_some() {
            return Err(Broken(format!("expected the answer to {method} ({id})")));
        }
        match (msg.result, msg.error) {
            (Some(result), None) => Ok(Ok(result)),
            (None, Some(e)) => Ok(Err(HostError {
                code: e.data.map(|d| d.code).unwrap_or_default(),
                message: e.message,
            })),
            // `"result": null` (an answer without a value) is not used by these methods.
            _ => Err(Broken(format!(
                "the answer to {method} has no result or error"
            ))),
        }
    }

    /// One frame's body; `None` at end of input between frames.
    fn read_frame(&mut self) -> Result<Option<Vec<u8>>, Broken> {
        let mut length = None;
        let mut first = true;
        loop {
            let mut line = Vec::new();
            let n = (&mut self.input)
                .take(MAX_HEADER_LINE as u64)
                .read_until(b'\n', &mut line)
                .map_err(|e| Broken(format!("reading stdin: {e}")))?;
            if n == 0 && first {
                return Ok(None);
            }
            first = false;
            let Some(line) = line.strip_suffix(b"\r\n") else {
                return Err(Broken("a header line does not end in CRLF".into()));
            };
            if line.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(line);
            let (name, value) = text
                .split_once(':')
                .ok_or_else(|| Broken("a header line has no colon".into()))?;
            if name.eq_ignore_ascii_case("content-length") {
                let value = value.trim();
                let n = value
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| value.parse::<usize>().ok())
                    .flatten()
                    .filter(|&n| n <= MAX_FRAME_BYTES)
                    .ok_or_else(|| Broken("a bad or too large Content-Length".into()))?;
                length = Some(n);
            } else if !name.eq_ignore_ascii_case("content-type") {
                return Err(Broken("an unknown header".into()));
            }
        }
        let length = length.ok_or_else(|| Broken("a frame without Content-Length".into()))?;
        let mut body = vec![0; length];
        self.input
            .read_exact(&mut body)
            .map_err(|e| Broken(format!("reading a frame's body: {e}")))?;
        Ok(Some(body))
    }

    /// Writes `{"jsonrpc":"2.0","id":ID,...fields}` in one frame, keys in the order of the
    /// protocol's documentation (a `json!` object would sort them).
    fn write_message(&mut self, id: &Value, fields: &[(&str, Value)]) -> Result<(), Broken> {
        let mut body = format!(r#"{{"jsonrpc":"2.0","id":{id}"#);
        for (key, value) in fields {
            body.extend([",", &Value::from(*key).to_string(), ":", &value.to_string()]);
        }
        body.push('}');
        // One write for the whole frame.
        let frame = format!("Content-Length: {}\r\n\r\n{body}", body.len());
        let out = &mut self.output;
        out.write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Broken(format!("writing stdout: {e}")))
    }
}
