//! TEST FIXTURE: an Extism plug-in for wasm32-wasip1, so every WASI preview 1 call comes from
//! Rust's std as any PDK's would.
//!
//! - `hello`: writes a line to stdout and one to stderr, returns "hello, INPUT".
//! - `probe`: what the plug-in can see of the world, as JSON: its arguments and environment
//!   (none), whether the clock and random work, and what opening host files and listing `/`
//!   answer (no preopens: both fail).
//! - `quit`: `std::process::exit(INPUT)`.
//! - `flood`: writes INPUT bytes to stdout (the capture keeps its cap, the rest is counted).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use extism_pdk::*;

#[plugin_fn]
pub fn hello(input: String) -> FnResult<String> {
    println!("to stdout: {input}");
    eprintln!("to stderr: {input}");
    Ok(format!("hello, {input}"))
}

#[plugin_fn]
pub fn probe(_: ()) -> FnResult<String> {
    let args = std::env::args().count();
    let env = std::env::vars().count();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Two different 16-byte draws: random works.
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    let random = getrandom(&mut a) && getrandom(&mut b) && a != b;
    let file = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(e) => format!("error: {:?}", e.kind()),
    };
    let root = match std::fs::read_dir("/") {
        Ok(entries) => format!("listed {}", entries.count()),
        Err(e) => format!("error: {:?}", e.kind()),
    };
    let write = match std::fs::write("/tmp/escape", b"x") {
        Ok(()) => "written".to_string(),
        Err(e) => format!("error: {:?}", e.kind()),
    };
    Ok(format!(
        r#"{{"args":{args},"env":{env},"clock":{},"random":{random},"file":"{file}","root":"{root}","write":"{write}"}}"#,
        now > 1_600_000_000
    ))
}

/// `random_get` through std's hasher seed is indirect; this asks WASI directly.
fn getrandom(buf: &mut [u8]) -> bool {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn random_get(buf: *mut u8, len: usize) -> u16;
    }
    // SAFETY: `buf` is a live, writable buffer of `len` bytes for the duration of the call.
    unsafe { random_get(buf.as_mut_ptr(), buf.len()) == 0 }
}

#[plugin_fn]
pub fn quit(code: String) -> FnResult<String> {
    let code: i32 = code.trim().parse().unwrap_or(1);
    std::process::exit(code)
}

#[plugin_fn]
pub fn flood(n: String) -> FnResult<String> {
    let n: usize = n.trim().parse().unwrap_or(0);
    let line = [b'x'; 1024];
    let mut out = std::io::stdout();
    let mut left = n;
    while left > 0 {
        let take = left.min(line.len());
        let _ = out.write_all(&line[..take]);
        left -= take;
    }
    let _ = out.flush();
    Ok(format!("wrote {n}"))
}
