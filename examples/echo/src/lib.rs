//! echo: the smallest rpc-extension. It exports `warden:extension/handler` (world
//! `rpc-extension` in wit/warden.wit) and dispatches on the method name:
//!
//! - `echo`: returns the input bytes unchanged.
//! - `greet`: takes JSON `{"name": "..."}` and returns `{"greeting":"Hello, NAME!"}`.
//! - anything else: `Err(call-error { code: "not-found", .. })`.
//!
//! JSON is handled by a few lines of hand-written code instead of serde_json, to keep the
//! component small; a real extension would normally just use serde_json.

wit_bindgen::generate!({ path: "../../wit", world: "rpc-extension" });

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;

struct Echo;

export!(Echo);

impl Guest for Echo {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        match method.as_str() {
            "echo" => Ok(input),
            "greet" => greet(&input),
            _ => Err(error("not-found", format!("no method {method:?}"))),
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError { code: code.into(), message: message.into() }
}

fn greet(input: &[u8]) -> Result<Vec<u8>, CallError> {
    let name = name_field(input)
        .ok_or_else(|| error("bad-input", r#"expected a JSON object {"name": "..."}"#))?;
    let mut out = String::from(r#"{"greeting":"Hello, "#);
    push_json_escaped(&mut out, &name);
    out.push_str(r#"!"}"#);
    Ok(out.into_bytes())
}

/// Returns the string value of the top-level `"name"` key of a JSON object, if the input is one.
/// Other members are skipped (their values only need to be well-bracketed); the last `"name"`
/// wins, like most JSON parsers.
fn name_field(input: &[u8]) -> Option<String> {
    let mut p = Parser { s: input, i: 0 };
    p.expect(b'{')?;
    let mut name = None;
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            let key = p.string()?;
            p.expect(b':')?;
            if key == "name" {
                name = Some(p.string()?);
            } else {
                p.skip_value()?;
            }
            match p.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    // Nothing but whitespace may follow the object.
    p.peek().is_none().then_some(())?;
    name
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    /// The next non-whitespace byte, without consuming it.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.s.get(self.i) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.i += 1;
        }
        None
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.i..self.i + 4)?;
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    }

    /// A JSON string literal, with its escapes decoded.
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i)?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    let c = match e {
                        b'"' | b'\\' | b'/' => e as char,
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair: `\uD83D\uDE00`.
                                (self.s.get(self.i..self.i + 2)? == b"\\u").then_some(())?;
                                self.i += 2;
                                let lo = self.hex4()?;
                                (0xDC00..0xE000).contains(&lo).then_some(())?;
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                0..0x20 => return None,
                _ => out.push(b),
            }
        }
    }

    /// Skips one JSON value: a string, or a run of other bytes with balanced brackets, up to
    /// the `,` or `}` that ends it. Lenient on purpose (numbers and literals are not
    /// validated): we only need "name".
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b',' | b'}' if depth == 0 => return Some(()),
                b']' if depth == 0 => return None,
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    depth -= 1;
                    self.i += 1;
                }
                _ => self.i += 1,
            }
        }
    }
}

/// Appends `s` to `out` as the inside of a JSON string literal.
fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}
