//! Counts the vowels of its input, the classic Extism example: reads the config key `vowels`
//! (in warden: a secret the operator grants and sets; absent, the default set), keeps a
//! running total in a var (in warden vars live for one call, so the total is this call's
//! count), logs, and returns JSON.

use extism_pdk::*;
use serde::Serialize;

#[derive(Serialize)]
struct Out {
    count: u64,
    total: u64,
    vowels: String,
    input_len: usize,
}

#[plugin_fn]
pub fn count_vowels(input: String) -> FnResult<Json<Out>> {
    let vowels = config::get("vowels")?.unwrap_or_else(|| "aeiouAEIOU".to_string());
    let count = input.chars().filter(|c| vowels.contains(*c)).count() as u64;
    let prev: u64 = match var::get::<String>("total")? {
        Some(s) => s.parse().unwrap_or(0),
        None => 0,
    };
    let total = prev + count;
    var::set("total", total.to_string())?;
    info!("counted {} vowels (total {})", count, total);
    debug!("debug line");
    Ok(Json(Out {
        count,
        total,
        vowels,
        input_len: input.len(),
    }))
}

/// The smallest call: greets its input.
#[plugin_fn]
pub fn greet(name: String) -> FnResult<String> {
    Ok(format!("Hello, {name}!"))
}

/// Fails on purpose through `error_set`, with return code 7.
#[plugin_fn]
pub fn fail(input: String) -> FnResult<String> {
    Err(WithReturnCode::new(
        Error::msg(format!("failing on purpose: {input}")),
        7,
    ))
}
