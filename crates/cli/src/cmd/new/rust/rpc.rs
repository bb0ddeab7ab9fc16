//! {{name}}: an rpc extension. It exports `warden:extension/handler` (see wit/world.wit) and
//! dispatches on the method name; every method must also be listed in extension.toml.
//!
//! - `greet`: the input is `{"name": "..."}`, a JSON string or plain text; the answer is
//!   `{"greeting":"Hello, NAME!"}`.
//! - anything else: the error `not-found`.

wit_bindgen::generate!({ path: "wit", world: "extension", generate_all });

use exports::warden::extension::handler::Guest;
use serde_json::{Value, json};
use warden::extension::types::CallError;

struct Extension;

export!(Extension);

impl Guest for Extension {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        match method.as_str() {
            "greet" => greet(&input),
            _ => Err(error("not-found", format!("no method \"{method}\""))),
        }
    }
}

fn greet(input: &[u8]) -> Result<Vec<u8>, CallError> {
    let text = std::str::from_utf8(input)
        .map_err(|_| error("bad-input", "input must be UTF-8"))?
        .trim();
    let name = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => match fields.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => return Err(error("bad-input", r#"expected {"name": "..."}"#)),
        },
        Ok(Value::String(name)) => name,
        _ if text.is_empty() => "world".to_string(),
        _ => text.to_string(),
    };
    let answer = json!({ "greeting": format!("Hello, {name}!") });
    Ok(answer.to_string().into_bytes())
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError { code: code.into(), message: message.into() }
}
