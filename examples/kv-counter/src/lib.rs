//! kv-counter: named counters in the extension's key-value store (`wasi:keyvalue`), which the
//! host keeps private to this extension and the tenant that installed it, across restarts.
//!
//! Methods (plain-text input and output):
//! - `increment`: input `NAME` or `NAME DELTA` (default delta 1; empty name = `hits`);
//!   returns the new value. Uses `atomics.increment`, so concurrent calls never lose a count.
//! - `get`: input `NAME`; returns the value (`0` if never incremented).

wit_bindgen::generate!({ path: ["../../wit", "wit"], world: "warden-examples:kv-counter/kv-counter", generate_all });

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;
use wasi::keyvalue::{atomics, store};

struct Counter;

export!(Counter);

impl Guest for Counter {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let input =
            String::from_utf8(input).map_err(|_| error("bad-input", "input must be UTF-8"))?;
        let mut parts = input.split_whitespace();
        let name = parts.next().unwrap_or("hits");
        let bucket = store::open("default").map_err(kv_error)?;
        let value = match method.as_str() {
            "increment" => {
                let delta = match parts.next() {
                    Some(d) => d
                        .parse()
                        .map_err(|_| error("bad-input", "delta must be a u64"))?,
                    None => 1,
                };
                atomics::increment(&bucket, name, delta).map_err(kv_error)?
            }
            "get" => match bucket.get(name).map_err(kv_error)? {
                Some(v) => String::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| error("corrupt", "the counter is not a number"))?,
                None => 0,
            },
            _ => return Err(error("not-found", format!("no method {method:?}"))),
        };
        Ok(value.to_string().into_bytes())
    }
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
