//! caller: calls other extensions through `warden:extension/invoke`, as far as the host allows.
//!
//! Method `call`, input: a first line `EXTENSION METHOD [N]`, then the bytes to send (N times,
//! default once; with N, the answer is `ok=K err=E` and the last answer). The callee's
//! result comes back as `ok:` + its bytes; a refusal or a failure as `err:CODE:MESSAGE`, so
//! the caller keeps running and reports what the host said. Chains are built by nesting: the
//! input `b.ext call\nc.ext echo\nhi` makes this extension call `b.ext`'s `call` with
//! `c.ext echo\nhi`, which (if `b.ext` is a caller too) calls `c.ext`'s `echo` with `hi`.

wit_bindgen::generate!({ path: "../../wit", world: "rpc-extension" });

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;

struct Caller;

export!(Caller);

impl Guest for Caller {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        if method != "call" {
            return Err(CallError {
                code: "not-found".into(),
                message: format!("no method {method:?}"),
            });
        }
        let (head, rest) = match input.iter().position(|&b| b == b'\n') {
            Some(i) => (&input[..i], &input[i + 1..]),
            None => (&input[..], &[][..]),
        };
        let head = String::from_utf8_lossy(head);
        let mut words = head.split_whitespace();
        let (Some(extension), Some(target_method)) = (words.next(), words.next()) else {
            return Err(CallError {
                code: "bad-input".into(),
                message: "expected a first line `EXTENSION METHOD [N]`".into(),
            });
        };
        let once = || match warden::extension::invoke::call(extension, target_method, rest) {
            Ok(out) => [b"ok:".as_slice(), &out].concat(),
            Err(e) => format!("err:{}:{}", e.code, e.message).into_bytes(),
        };
        let Some(n) = words.next().and_then(|n| n.parse::<u32>().ok()) else {
            return Ok(once());
        };
        let (mut ok, mut err, mut last) = (0u32, 0u32, Vec::new());
        for _ in 0..n {
            last = once();
            if last.starts_with(b"ok:") {
                ok += 1;
            } else {
                err += 1;
            }
        }
        Ok([format!("ok={ok} err={err} ").as_bytes(), &last].concat())
    }
}
