//! TEST FIXTURE: each export attacks the host in one way (see the host's tests in
//! `crates/host/tests/all/extism.rs`).

use extism_pdk::*;

/// Spins for ever: stopped by the call's deadline (epochs) or fuel.
#[plugin_fn]
pub fn spin() -> FnResult<String> {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Grows its own linear memory without end.
#[plugin_fn]
pub fn grow() -> FnResult<String> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&kept);
    }
}

/// Grows Extism memory (the host's arena) without end, 1 MiB a block.
#[plugin_fn]
pub fn alloc_bomb() -> FnResult<String> {
    loop {
        let h = unsafe { extism::alloc(1 << 20) };
        std::hint::black_box(h);
    }
}

/// A result larger than any response cap: 64 MiB (or the input's number of MiB).
#[plugin_fn]
pub fn huge(input: String) -> FnResult<Vec<u8>> {
    let mib: usize = input.trim().parse().unwrap_or(64);
    Ok(vec![b'x'; mib << 20])
}

/// GETs the URL given as input (bare, or a JSON string); returns `STATUS BODY`.
#[plugin_fn]
pub fn fetch(url: String) -> FnResult<String> {
    let req = HttpRequest::new(url.trim().trim_matches('"')).with_method("GET");
    let res = http::request::<()>(&req, None)?;
    Ok(format!(
        "{} {}",
        res.status_code(),
        String::from_utf8_lossy(&res.body())
    ))
}

/// Reads the config key given as input; returns `some VALUE` or `none`.
#[plugin_fn]
pub fn config(key: String) -> FnResult<String> {
    Ok(match config::get(key.trim().trim_matches('"'))? {
        Some(v) => format!("some {v}"),
        None => "none".to_string(),
    })
}

/// Hands the host handles it never allocated: reads and writes past Extism memory, then logs
/// from a handle that is no block (a clean error, never a host crash).
#[plugin_fn]
pub fn bad_handle() -> FnResult<String> {
    unsafe {
        let r = extism::load_u64(u64::MAX - 3);
        extism::store_u64(u64::MAX - 3, 1);
        extism::store_u8(1 << 40, 1);
        extism::free(12345);
        extism::log_info(u64::MAX - 1);
        Ok(format!("not reached {r}"))
    }
}

/// Sets vars until the store is full.
#[plugin_fn]
pub fn vars() -> FnResult<String> {
    let big = vec![b'v'; 64 * 1024];
    for i in 0..1024 {
        var::set(format!("k{i}"), big.clone())?;
    }
    Ok("all set".into())
}

/// Probes the raw host ABI at its edges (from the research plug-in that ran on Extism's own
/// host): zero-length allocations, interior and freed handles, out-of-bounds loads and
/// stores, input reads past the end, a missing config key, a var set empty (removed).
#[plugin_fn]
pub fn probe(input: Vec<u8>) -> FnResult<String> {
    use extism_pdk::extism as k;
    unsafe {
        let a = k::alloc(10);
        let b = k::alloc(3);
        let z = k::alloc(0);
        k::store_u64(a, 0x0102030405060708);
        let la = k::length(a);
        let la_unsafe = k::length_unsafe(a);
        let l_inside = k::length(a + 1);
        let l_zero = k::length(0);
        let word = k::load_u64(a);
        let oob_u8 = k::load_u8(1u64 << 40);
        let oob_u64 = k::load_u64(1u64 << 40);
        k::store_u8(1u64 << 40, 7);
        let in_len = k::input_length();
        let in_past_u8 = k::input_load_u8(in_len + 5);
        let in_past_u64 = k::input_load_u64(in_len.saturating_sub(4));
        k::free(b);
        let lb_after_free = k::length(b);
        let missing_cfg = config::get_memory("no-such-key")?
            .map(|m| m.offset())
            .unwrap_or(0);
        var::set("v", "x")?;
        let before = var::get::<String>("v")?;
        var::set("v", "")?;
        let after = var::get::<String>("v")?;
        let head = String::from_utf8_lossy(&input[..input.len().min(16)]).to_string();
        Ok(format!(
            "alloc0={z} length(a)={la} length_unsafe(a)={la_unsafe} length(a+1)={l_inside} \
             length(0)={l_zero} word={word:#x} load_u8(2^40)={oob_u8} load_u64(2^40)={oob_u64} \
             input_length={in_len} input_load_u8(len+5)={in_past_u8} \
             input_load_u64(len-4)={in_past_u64} length(freed)={lb_after_free} \
             config_get(missing)={missing_cfg} var_before={before:?} var_after={after:?} \
             input_head={head}"
        ))
    }
}

/// Reads the config key given as input and tries to get its value out: in a log line and in
/// its error (both must come out redacted).
#[plugin_fn]
pub fn leak(key: String) -> FnResult<String> {
    let value = config::get(key.trim().trim_matches('"'))?.unwrap_or_default();
    info!("the value is {value}");
    Err(WithReturnCode::new(
        Error::msg(format!("leaking {value}")),
        3,
    ))
}
