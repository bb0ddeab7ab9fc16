//! hostile: a TEST FIXTURE for the host's sandbox tests, not an example to copy.
//!
//! It is an ordinary rpc-extension (world `rpc-extension`, wit/warden.wit) whose methods each
//! misbehave in one specific way, so the host's tests can check that the runtime contains it.
//! The input is the raw request bytes (decimal numbers are plain ASCII, not JSON):
//!
//! | method    | input          | what it does / what the host must do                             |
//! |-----------|----------------|------------------------------------------------------------------|
//! | `loop`    | -              | spins forever: the execution-time limit (epoch/fuel) must stop it |
//! | `recurse` | -              | recurses until the stack overflows: must trap, not crash the host |
//! | `sleep`   | ms, e.g. 10000 | blocks in a host call (clock poll): the deadline must cover it    |
//! | `grow`    | MiB, e.g. 64   | allocates 1 MiB at a time: `max_memory` must refuse the growth    |
//! | `huge`    | bytes          | returns that many b'x': `max_response_bytes` must reject it       |
//! | `state`   | -              | bumps a static counter: a fresh instance per call gives count=1   |
//! | `stdout`  | `TEXT\|N`      | prints TEXT N times: output capture must be capped and escaped    |
//! | `trap`    | -              | executes `unreachable`: a trap must become an error, not a crash  |
//! | `env`     | -              | lists env vars and args it can see: the host must give none       |
//! | `files`   | -              | opens /etc/passwd and /: with no preopens both must fail          |
//! | `net`     | -              | TCP connect and DNS lookup: both must be denied                   |
//! | `egress`  | URL or host    | outgoing wasi:http GET: checked against the grant, capped, audited |
//! | `invoke`  | extension id   | calls another extension: denied (typed error) and audited         |
//! | `egress-many` | `N URL`    | N outgoing requests in one call (the denied-egress benchmark)     |
//! | `egress-dropped` | `N URL` | N outgoing requests, each dropped 1 ms after it was started          |
//! | `sock`    | `HOST:PORT [N]`| TCP connect through wasi:sockets (lookup, then connect), N times   |
//! | `lookup`  | name           | wasi:sockets name lookup                                          |
//! | `listen`  | -              | bind + listen: always refused                                     |
//! | `udp`     | `HOST:PORT`    | one UDP datagram: always refused                                  |
//! | `socks`   | N              | N TCP sockets created and held to the end of the call             |
//! | `fields`  | N              | N header maps of 100 KB (host memory) held to the end of the call |
//! | `random`  | bytes          | asks WASI for that many random bytes: the host caps the request   |
//! | `fail`    | TEXT           | fails with TEXT as its message (a JSON string decoded): hostile text into the audit log |
//!
//! The release profile uses `panic = "abort"`, so every "graceful" path here avoids panicking:
//! allocations that may fail use `try_reserve_exact`, and output errors are ignored, not unwrapped.

wit_bindgen::generate!({ path: "../../../wit", world: "rpc-extension" });

use std::hint::black_box;
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;

struct Hostile;

export!(Hostile);

impl Guest for Hostile {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let out: String = match method.as_str() {
            "loop" => spin(),
            "recurse" => format!("depth {}", recurse(0)),
            "sleep" => {
                let ms = number(&input)?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                "slept".into()
            }
            "grow" => grow(number(&input)?),
            "huge" => return huge(number(&input)?),
            "state" => state(),
            "stdout" => flood_stdout(&input)?,
            "trap" => core::arch::wasm32::unreachable(),
            // `exit(N)` in the middle of a call (issue 9, finding 7).
            "exit" => std::process::exit(number(&input)? as i32),
            "env" => env(),
            "files" => files(),
            "net" => net(),
            "random" => {
                let n = number(&input)?;
                format!("random={}", wasip2::random::random::get_random_bytes(n).len())
            }
            "egress" => egress(&String::from_utf8_lossy(&input)),
            "egress-many" => egress_many(&String::from_utf8_lossy(&input)),
            "egress-dropped" => egress_dropped(&String::from_utf8_lossy(&input)),
            "sock" => sock(&String::from_utf8_lossy(&input)),
            "lookup" => lookup(&String::from_utf8_lossy(&input)),
            "listen" => listen(),
            "udp" => udp(&String::from_utf8_lossy(&input)),
            "socks" => socks(number(&input)? as usize),
            "fields" => fields(number(&input)? as usize),
            "invoke" => match warden::extension::invoke::call(&String::from_utf8_lossy(&input), "echo", b"{}") {
                Ok(_) => "invoke=ok".into(),
                Err(e) => format!("invoke=err:{}", e.code),
            },
            "fail" => return Err(error("failed", json_text(&input))),
            _ => return Err(error("not-found", format!("no method {method:?}"))),
        };
        Ok(out.into_bytes())
    }
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError { code: code.into(), message: message.into() }
}

/// `fail`'s input as text: the runner API hands a method its JSON input's bytes, so a JSON
/// string is decoded (`\u0007`, `\u001b`, `\n`, ... become the characters themselves, an
/// unpaired surrogate U+FFFD); anything else is taken as it is.
fn json_text(input: &[u8]) -> String {
    let raw = String::from_utf8_lossy(input);
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.into_owned();
    };
    let mut out = String::new();
    let mut units: Vec<u16> = Vec::new();
    let mut chars = inner.chars();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or('\u{fffd}')));
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut units, &mut out);
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u16::from_str_radix(&hex, 16) {
                    Ok(u) => units.push(u),
                    Err(_) => return raw.into_owned(),
                }
            }
            Some(e) => {
                flush(&mut units, &mut out);
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    other => other,
                });
            }
            None => return raw.into_owned(),
        }
    }
    flush(&mut units, &mut out);
    out
}

/// The input as a non-negative decimal number.
fn number(input: &[u8]) -> Result<u64, CallError> {
    std::str::from_utf8(input)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| error("bad-input", "expected a decimal number"))
}

/// `loop`: never returns. `black_box` hides the counter from the optimizer, so the loop has an
/// observable effect each iteration and cannot be removed or proven infinite-and-empty.
fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = black_box(black_box(i).wrapping_add(1));
    }
}

/// `recurse`: non-tail recursion with a stack frame the optimizer must keep (a local array
/// passed through `black_box`, then read after the recursive call returns), so it cannot be
/// turned into a loop. It does not return in practice: it recurses until the stack (the shadow
/// stack in linear memory, or the engine's native stack) is exhausted and the call traps.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // Never true in practice, but the optimizer cannot know that: it keeps the function from
    // being marked no-return, so the work after the recursive call stays live.
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let mut frame = [0u8; 256];
    frame[(depth % 256) as usize] = depth as u8;
    black_box(&mut frame);
    let below = recurse(black_box(depth + 1));
    below.wrapping_add(frame[(depth % 251) as usize] as u64)
}

/// `grow`: allocates `mib` chunks of 1 MiB, writing every byte so the pages are really used.
/// Returns `"grew N"` when all succeeded, or just `"N"` (the MiB it got) when an allocation
/// failed, i.e. when the host refused `memory.grow` and the allocator reported it gracefully.
fn grow(mib: u64) -> String {
    const MIB: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut got = 0u64;
    let mut failed = false;
    while got < mib {
        let mut chunk = Vec::new();
        if chunks.try_reserve(1).is_err() || chunk.try_reserve_exact(MIB).is_err() {
            failed = true;
            break;
        }
        chunk.resize(MIB, 0xA5); // fits in the reserved capacity: no further allocation
        chunks.push(black_box(chunk));
        got += 1;
    }
    // Free everything before formatting, so the result string itself can be allocated.
    drop(black_box(chunks));
    if failed { got.to_string() } else { format!("grew {got}") }
}

/// `huge`: a result of exactly `len` bytes of b'x'. If even the guest cannot allocate it, this
/// returns an `out-of-memory` error instead of aborting.
fn huge(len: u64) -> Result<Vec<u8>, CallError> {
    let too_big = || error("out-of-memory", format!("cannot allocate {len} bytes"));
    let len = usize::try_from(len).map_err(|_| too_big())?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| too_big())?;
    out.resize(len, b'x');
    Ok(out)
}

/// `state`: state in linear memory that a reused instance would leak from one call to the next.
static COUNTER: AtomicU32 = AtomicU32::new(0);
static BUFFER: Mutex<[u8; 16]> = Mutex::new([0; 16]);
const MARKER: &[u8; 16] = b"warden-leftover!";

fn state() -> String {
    let count = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    // Single-threaded guest: the lock cannot be contended; a poisoned lock still holds the data.
    let mut buf = BUFFER.lock().unwrap_or_else(|e| e.into_inner());
    let leftover = &*buf == MARKER;
    *buf = *MARKER;
    format!("count={count} leftover={}", if leftover { "yes" } else { "no" })
}

/// `stdout`: input `TEXT|N` (split at the last `|`) prints TEXT, byte for byte (it may hold
/// escape sequences or invalid UTF-8), N times. Write errors (e.g. the host closed the stream
/// at its cap) stop the loop instead of panicking the way `print!` would.
fn flood_stdout(input: &[u8]) -> Result<String, CallError> {
    let bar = input
        .iter()
        .rposition(|&b| b == b'|')
        .ok_or_else(|| error("bad-input", "expected TEXT|N"))?;
    let (text, times) = (&input[..bar], number(&input[bar + 1..])?);
    let mut out = std::io::stdout().lock();
    for _ in 0..times {
        if out.write_all(text).is_err() {
            break;
        }
    }
    let _ = out.flush();
    Ok("printed".into())
}

/// `env`: every environment variable and program argument the guest can see.
fn env() -> String {
    let vars: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("env={}|args={}", vars.join(";"), args.join(";"))
}

/// `files`: tries to read a host file and list the root directory through std::fs.
fn files() -> String {
    fn outcome<T>(r: std::io::Result<T>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => format!("err:{:?}", e.kind()),
        }
    }
    let passwd = outcome(std::fs::read("/etc/passwd"));
    let root = outcome(std::fs::read_dir("/"));
    format!("passwd={passwd} root={root}")
}

/// `net`: tries an outgoing TCP connection and a DNS lookup through std::net.
fn net() -> String {
    use std::net::{TcpStream, ToSocketAddrs as _};
    let tcp = match TcpStream::connect("127.0.0.1:1") {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("err:{:?}", e.kind()),
    };
    let dns = match "localhost:80".to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.map(|a| a.to_string()).collect();
            format!("ok:{}", addrs.join(","))
        }
        Err(e) => format!("err:{:?}", e.kind()),
    };
    format!("tcp={tcp} dns={dns}")
}

/// `sock`: input `HOST:PORT` or `HOST:PORT ATTEMPTS`; connects with std (wasi:sockets name lookup,
/// then TCP connect to each resolved address in turn), sends `ping` and reads what comes back.
/// `sock=ok:REPLY` or `sock=err:KIND`; with ATTEMPTS, connects that many times and reports each.
fn sock(input: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut words = input.split_whitespace();
    let target = words.next().unwrap_or("");
    let attempts: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let mut out = Vec::new();
    for _ in 0..attempts.min(16) {
        let r = std::net::TcpStream::connect(target).and_then(|mut s| {
            s.write_all(b"ping")?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        out.push(match r {
            Ok(reply) => format!("sock=ok:{reply}"),
            Err(e) => format!("sock=err:{:?}", e.kind()),
        });
    }
    out.join(" ")
}

/// `fields`: input N; makes N header maps (`fields`) of 100 KB each and keeps them to the end
/// of the call, all in the host's memory: `fields=ok:N`.
fn fields(n: usize) -> String {
    use wasip2::http::types::Fields;
    let value = vec![b'v'; 100_000];
    let mut held = Vec::new();
    for i in 0..n {
        let f = Fields::new();
        if let Err(e) = f.append(&format!("x-big-{i}"), &value) {
            return format!("fields={}:{e:?}", held.len());
        }
        held.push(f);
    }
    format!("fields=ok:{}", held.len())
}

/// `socks`: input N; creates N TCP sockets (none connected) and keeps them to the end of the
/// call: `socks=ok:N`, or `socks=K:CODE` at the first refusal.
fn socks(n: usize) -> String {
    use wasip2::sockets::network::IpAddressFamily;
    use wasip2::sockets::tcp_create_socket::create_tcp_socket;
    let mut held = Vec::new();
    for _ in 0..n {
        match create_tcp_socket(IpAddressFamily::Ipv4) {
            Ok(s) => held.push(s),
            Err(e) => return format!("socks={}:{e:?}", held.len()),
        }
    }
    format!("socks=ok:{}", held.len())
}

/// `egress-many`: input `N URL`; sends N outgoing requests (for the denied-egress benchmark) and
/// counts how they ended: `denied=D other=O`.
fn egress_many(input: &str) -> String {
    let (n, url) = input.trim().split_once(' ').unwrap_or(("0", ""));
    let n: u32 = n.parse().unwrap_or(0);
    let (mut denied, mut other) = (0u32, 0u32);
    for _ in 0..n {
        if egress(url) == "egress=err:ErrorCode::HttpRequestDenied" {
            denied += 1;
        } else {
            other += 1;
        }
    }
    format!("denied={denied} other={other}")
}

/// `lookup`: input `NAME`; resolves it (wasi:sockets/ip-name-lookup) and lists the addresses.
fn lookup(name: &str) -> String {
    use std::net::ToSocketAddrs as _;
    match (name.trim(), 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            format!("lookup=ok:{}", addrs.join(","))
        }
        Err(e) => format!("lookup=err:{:?}", e.kind()),
    }
}

/// `listen`: tries to accept connections (bind + listen on a wildcard address).
fn listen() -> String {
    match std::net::TcpListener::bind("0.0.0.0:0") {
        Ok(l) => format!("listen=ok:{:?}", l.local_addr().ok()),
        Err(e) => format!("listen=err:{:?}", e.kind()),
    }
}

/// `udp`: input `HOST:PORT`; sends one datagram there.
fn udp(target: &str) -> String {
    let r = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"ping", target.trim()));
    match r {
        Ok(n) => format!("udp=ok:{n}"),
        Err(e) => format!("udp=err:{:?}", e.kind()),
    }
}

/// `egress`: an outgoing HTTP GET through wasi:http; reports what came back.
///
/// The input is a full URL (`http://name:port/path?query`, `https://...`) or, for short, a bare
/// authority (`a.b`, meaning `http://a.b/`). The answer is `egress=ok:STATUS:PREFIX` (the first
/// 32 bytes of the body, read to the end), `egress=err:CODE` (the request failed; CODE is the
/// `ErrorCode` in Debug form) or `egress=body-err:STATUS:CODE` (the body failed part way, e.g.
/// it was cut at the host's size cap). The body is read in chunks and never kept whole.
fn egress(input: &str) -> String {
    egress_or_drop(input, None)
}

/// `egress-dropped`: input `N URL`; N requests, each dropped (its response's future) 1 ms after
/// it was started, unless answered by then.
fn egress_dropped(input: &str) -> String {
    let (n, url) = input.trim().split_once(' ').unwrap_or(("0", ""));
    let n: u32 = n.parse().unwrap_or(0);
    let (mut dropped, mut other) = (0u32, 0u32);
    for _ in 0..n {
        if egress_or_drop(url, Some(1_000_000)) == "egress=dropped" {
            dropped += 1;
        } else {
            other += 1;
        }
    }
    format!("dropped={dropped} other={other}")
}

/// An outgoing GET of `input`; with `drop_after` (ns), given up on after that long.
fn egress_or_drop(input: &str, drop_after: Option<u64>) -> String {
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let (scheme, rest) = match input.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((other, rest)) => (Scheme::Other(other.to_string()), rest),
        None => (Scheme::Http, input),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let req = OutgoingRequest::new(Fields::new());
    if req.set_scheme(Some(&scheme)).is_err()
        || req.set_authority(Some(authority)).is_err()
        || req.set_path_with_query(Some(&path)).is_err()
    {
        return "egress=err:bad-url".into();
    }
    if let Some(wait) = drop_after {
        // Started, then given up on: the response's future is dropped after `wait`.
        return match wasip2::http::outgoing_handler::handle(req, None) {
            Err(e) => format!("egress=err:{e:?}"),
            Ok(future) => {
                let timer = wasip2::clocks::monotonic_clock::subscribe_duration(wait);
                wasip2::io::poll::poll(&[&future.subscribe(), &timer]);
                match future.get() {
                    Some(_) => "egress=answered".into(),
                    None => "egress=dropped".into(),
                }
            }
        };
    }
    let response = match wasip2::http::outgoing_handler::handle(req, None) {
        Err(e) => return format!("egress=err:{e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(resp))) => resp,
                Some(Ok(Err(e))) => return format!("egress=err:{e:?}"),
                other => return format!("egress=other:{other:?}"),
            }
        }
    };
    let status = response.status();
    let Ok(body) = response.consume() else {
        return format!("egress=body-err:{status}:no-body");
    };
    let Ok(stream) = body.stream() else {
        return format!("egress=body-err:{status}:no-stream");
    };
    let mut prefix: Vec<u8> = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                let room = 32usize.saturating_sub(prefix.len());
                prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                let code = match wasip2::http::types::http_error_code(&e) {
                    Some(code) => format!("{code:?}"),
                    None => e.to_debug_string(),
                };
                return format!("egress=body-err:{status}:{code}");
            }
        }
    }
    format!("egress=ok:{status}:{}", String::from_utf8_lossy(&prefix))
}
