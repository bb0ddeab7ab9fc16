//! What a denied outgoing request costs: time (in process, against a call that makes none) and
//! system calls (counted with `strace -c` attached to the host process only while the calls
//! run). The guest is hostile's `egress-many N URL`: N `wasi:http` requests to a host its grant
//! does not name, all in one call.
//!
//! Needs the example components (`scripts/build-examples.sh`) and, for the count, `strace`
//! (installed by `scripts/setup.sh`). Run: `cargo bench -p warden-host --bench denied_egress`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_host::{ExtensionId, Grant, Host, MemoryAudit, TrustBundle};
use warden_trust::{SigningKey, publisher_entry, sign};

/// Denied requests per measured call.
const ATTEMPTS: u32 = 20_000;
const ROUNDS: usize = 7;
const DENIED_URL: &str = "http://forbidden.test/";

/// The hostile test fixture (tests/guests/hostile).
fn hostile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests/hostile")
}

/// A host with hostile loaded, allowed to reach `allowed.test` only.
fn host(dir: &Path) -> (Host, ExtensionId) {
    let key = SigningKey::generate();
    let src = hostile();
    let stage = dir.join("stage");
    fs::create_dir_all(&stage).unwrap();
    let manifest = fs::read_to_string(src.join("extension.toml")).unwrap()
        + "\n[permissions.network]\nenabled = true\nallowed_hosts = [\"allowed.test\"]\n";
    let manifest = manifest.replace(
        "max_execution_time = \"1s\"",
        "max_execution_time = \"30s\"",
    );
    fs::write(stage.join("extension.toml"), manifest).unwrap();
    fs::copy(src.join("extension.wasm"), stage.join("extension.wasm")).unwrap();
    let packed = pack_dir(&stage, &BundleLimits::default()).unwrap();
    let out = dir.join("hostile.wext");
    fs::write(&out, &packed.bytes).unwrap();
    let bundle = Bundle::read_file(&out, &BundleLimits::default()).unwrap();
    fs::write(
        format!("{}.sig", out.display()),
        sign(&bundle, &key, None).unwrap().to_json_pretty(),
    )
    .unwrap();
    let trust = publisher_entry(&"warden-examples".parse().unwrap(), &key.public_key());
    let host = Host::builder()
        .trust(TrustBundle::parse(&trust).unwrap())
        .data_dir(dir.join("data"))
        .audit(Arc::new(MemoryAudit::default()))
        .build()
        .unwrap();
    let id = host
        .default_tenant()
        .load_file(&out, None, &Grant::All)
        .unwrap()
        .id;
    (host, id)
}

async fn attempt(host: &Host, id: &ExtensionId, n: u32) -> Duration {
    let input = format!("{n} {DENIED_URL}");
    let t = Instant::now();
    let out = host
        .default_tenant()
        .call(id, "egress-many", input.as_bytes())
        .await
        .unwrap()
        .value;
    let elapsed = t.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("denied={n} other=0"),
        "every attempt must be denied"
    );
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Child mode: load, warm up, say "ready", then run one call of `n` attempts per line read.
fn child(n: u32) {
    let dir = tempfile::TempDir::new().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (host, id) = host(dir.path());
    rt.block_on(attempt(&host, &id, 100));
    println!("ready");
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line).unwrap() > 0 {
        if line.trim() == "go" {
            rt.block_on(attempt(&host, &id, n));
            println!("done");
        }
        line.clear();
    }
}

/// Runs a child, attaches strace to all its threads for one call of `n` attempts, and returns
/// the calls per system call name.
fn strace_count(strace: &Path, n: u32) -> BTreeMap<String, u64> {
    let me = std::env::current_exe().unwrap();
    let mut kid = Command::new(me)
        .args(["--child", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(kid.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let summary = tempfile::NamedTempFile::new().unwrap();
    let mut tracer = Command::new(strace)
        .args(["-f", "-c", "-o"])
        .arg(summary.path())
        .args(["-p", &kid.id().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // strace attaches to every thread of the process (-f with -p); give it time to.
    std::thread::sleep(Duration::from_millis(500));
    let mut stdin = kid.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    // SIGINT makes strace detach and write its summary.
    Command::new("kill")
        .args(["-INT", &tracer.id().to_string()])
        .status()
        .unwrap();
    tracer.wait().unwrap();
    drop(stdin);
    kid.wait().unwrap();
    let text = fs::read_to_string(summary.path()).unwrap();
    let mut counts = BTreeMap::new();
    for l in text.lines() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.len() < 5 || cols[0].starts_with('%') || cols[0].starts_with('-') {
            continue;
        }
        let (Some(name), Ok(calls)) = (cols.last(), cols[3].parse::<u64>()) else {
            continue;
        };
        if *name != "total" {
            counts.insert(name.to_string(), calls);
        }
    }
    counts
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args[i + 1].parse().unwrap());
        return;
    }
    if !hostile().join("extension.wasm").exists() {
        panic!("tests/guests/hostile/extension.wasm is missing: run scripts/build-examples.sh");
    }

    // Time: calls of ATTEMPTS denied requests against calls of none, interleaved.
    let dir = tempfile::TempDir::new().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (host, id) = host(dir.path());
    rt.block_on(attempt(&host, &id, 1000));
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        with.push(rt.block_on(attempt(&host, &id, ATTEMPTS)));
        without.push(rt.block_on(attempt(&host, &id, 0)));
    }
    let (w, wo) = (median(with), median(without));
    let per = (w.saturating_sub(wo)).as_nanos() as f64 / f64::from(ATTEMPTS);
    println!("denied egress, {ATTEMPTS} attempts per call, median of {ROUNDS} calls:");
    println!("  call with attempts: {w:?}; call without: {wo:?}");
    println!(
        "  per denied attempt (guest builds the request, host refuses it, guest reads the error): {:.2} µs",
        per / 1000.0
    );

    // System calls: the same call under strace, against a call of no attempts.
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(strace) = strace else {
        println!(
            "  system calls: strace is not installed (scripts/setup.sh installs it); not counted"
        );
        return;
    };
    let base = strace_count(&strace, 0);
    let busy = strace_count(&strace, ATTEMPTS);
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    println!(
        "  system calls during the call: {} with {ATTEMPTS} attempts, {} with none",
        total(&busy),
        total(&base)
    );
    let net = [
        "socket",
        "connect",
        "sendto",
        "sendmsg",
        "recvfrom",
        "recvmsg",
        "bind",
        "openat",
        "open",
        "getsockname",
        "poll",
        "write",
        "read",
    ];
    let mut extra = Vec::new();
    for (name, n) in &busy {
        let b = base.get(name).copied().unwrap_or(0);
        if *n > b {
            extra.push(format!("{name} +{}", n - b));
        }
    }
    println!(
        "  more than without: {} ({:.4} per attempt)",
        if extra.is_empty() {
            "none".to_string()
        } else {
            extra.join(", ")
        },
        total(&busy).saturating_sub(total(&base)) as f64 / f64::from(ATTEMPTS)
    );
    let net_calls: u64 = net.iter().filter_map(|n| busy.get(*n)).sum();
    let net_base: u64 = net.iter().filter_map(|n| base.get(*n)).sum();
    println!(
        "  network and file system calls (socket, connect, send*, recv*, bind, open*, read, write, poll): {net_calls} with attempts, {net_base} without"
    );
}
