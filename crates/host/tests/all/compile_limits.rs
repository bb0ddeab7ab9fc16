//! Compile limits (issue 9, finding 2): a signed component is checked with wasmparser before it
//! is compiled, so a compile bomb is refused in milliseconds and with no memory to speak of,
//! and the refusal is audited. The hostile components are made here, byte by byte.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use warden_audit::{Event, Outcome};
use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_host::{Grant, Host, HostError, MemoryAudit, TrustBundle};
use warden_trust::{SigningKey, publisher_entry, sign};

const RPC: &str = "warden:extension/handler@0.1.0";

fn leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    leb(out, body.len());
    out.extend_from_slice(body);
}

/// A component of one core module of `funcs` functions `() -> i32` whose bodies are about
/// `body` bytes each (`i32.const 1; i32.add` repeated), exporting an empty instance as
/// `export` if given.
fn component(funcs: usize, body: usize, export: Option<&str>) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(&mut m, 1, &[1, 0x60, 0, 1, 0x7f]);
    let mut f = Vec::new();
    leb(&mut f, funcs);
    f.resize(f.len() + funcs, 0);
    section(&mut m, 3, &f);
    let mut b = vec![0, 0x41, 0];
    while b.len() + 1 < body {
        b.extend_from_slice(&[0x41, 1, 0x6a]);
    }
    b.push(0x0b);
    let mut code = Vec::with_capacity(funcs * (b.len() + 3) + 5);
    leb(&mut code, funcs);
    for _ in 0..funcs {
        leb(&mut code, b.len());
        code.extend_from_slice(&b);
    }
    section(&mut m, 10, &code);
    let mut c = b"\0asm\x0d\0\x01\0".to_vec();
    section(&mut c, 1, &m);
    if let Some(name) = export {
        section(&mut c, 5, &[1, 0x01, 0]);
        let mut e = vec![1, 0];
        leb(&mut e, name.len());
        e.extend_from_slice(name.as_bytes());
        e.extend_from_slice(&[0x05, 0, 0]);
        section(&mut c, 11, &e);
    }
    c
}

/// The finding's bomb: 100,000 functions of about 300 bytes (30.5 MB), and no exports.
fn bomb() -> Vec<u8> {
    component(100_000, 300, None)
}

/// A publisher key, a host trusting it, and bundles it signed.
struct Signer {
    dir: TempDir,
    key: SigningKey,
    trust: String,
}

impl Signer {
    fn new() -> Signer {
        let key = SigningKey::generate();
        let trust = publisher_entry(&"warden-tests".parse().unwrap(), &key.public_key());
        Signer {
            dir: TempDir::new().unwrap(),
            key,
            trust,
        }
    }

    fn host(&self, audit: Arc<MemoryAudit>) -> Host {
        Host::builder()
            .trust(TrustBundle::parse(&self.trust).unwrap())
            .audit(audit)
            .build()
            .unwrap()
    }

    /// Packs `wasm` as an rpc extension named `name` and signs it; returns the bundle's path.
    fn bundle(&self, name: &str, wasm: &[u8]) -> PathBuf {
        let stage = self.dir.path().join(name);
        fs::create_dir_all(&stage).unwrap();
        fs::write(
            stage.join("extension.toml"),
            format!(
                "schema = 1\n\n[extension]\nid = \"test.{name}\"\nversion = \"0.1.0\"\n\
                 publisher = \"warden-tests\"\nkind = \"component\"\nentry = \"extension.wasm\"\n\n\
                 [[methods]]\nname = \"call\"\n"
            ),
        )
        .unwrap();
        fs::write(stage.join("extension.wasm"), wasm).unwrap();
        let packed = pack_dir(&stage, &BundleLimits::default()).unwrap();
        let out = self.dir.path().join(format!("{name}.wext"));
        fs::write(&out, &packed.bytes).unwrap();
        let bundle = Bundle::read_file(&out, &BundleLimits::default()).unwrap();
        let env = sign(&bundle, &self.key, None).unwrap();
        fs::write(format!("{}.sig", out.display()), env.to_json_pretty()).unwrap();
        out
    }
}

/// Loads `bundle` on a fresh host; the error, how long the load took, and the audit records.
fn load_refused(signer: &Signer, bundle: &Path) -> (HostError, Duration, Arc<MemoryAudit>) {
    let audit = Arc::new(MemoryAudit::default());
    let host = signer.host(audit.clone());
    let started = Instant::now();
    let result = host.default_tenant().load_file(bundle, None, &Grant::None);
    let took = started.elapsed();
    (result.expect_err("the load is refused"), took, audit)
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The child half of the test below: in a process of its own (so its peak memory is the
/// load's), loads the bundle at `WARDEN_BOMB` trusting `WARDEN_BOMB_TRUST` and prints the
/// figures. Does nothing when run as an ordinary test.
#[test]
fn bomb_child() {
    let (Ok(bundle), Ok(trust)) = (
        std::env::var("WARDEN_BOMB"),
        std::env::var("WARDEN_BOMB_TRUST"),
    ) else {
        return;
    };
    let host = Host::builder()
        .trust(TrustBundle::parse(&trust).unwrap())
        .audit(Arc::new(MemoryAudit::default()))
        .build()
        .unwrap();
    let before = peak_rss_kib();
    let started = Instant::now();
    let result = host
        .default_tenant()
        .load_file(Path::new(&bundle), None, &Grant::None);
    let took = started.elapsed();
    let after = peak_rss_kib();
    let error = result.err().map(|e| e.to_string()).unwrap_or_default();
    println!(
        "BOMB ms={} peak_before_kib={before} peak_after_kib={after} error={error}",
        took.as_millis()
    );
}

/// The finding's compile bomb, signed, through `Tenant::load_file` in a child process: refused
/// in well under a second (reading, hashing and verifying 30.5 MB included), its peak memory
/// the bundle's bytes and little more, and audited as a refused load.
#[test]
fn the_compile_bomb_is_refused_fast_with_bounded_memory() {
    let signer = Signer::new();
    let wasm = bomb();
    assert!(wasm.len() > 30_000_000, "{}", wasm.len());
    let path = signer.bundle("bomb", &wasm);
    drop(wasm);

    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "compile_limits::bomb_child", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("WARDEN_BOMB", &path)
        .env("WARDEN_BOMB_TRUST", &signer.trust)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("BOMB ").map(|(_, figures)| figures))
        .unwrap_or_else(|| panic!("no figures from the child: {stdout}"));
    let figure = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let (ms, before, after) = (
        figure("ms="),
        figure("peak_before_kib="),
        figure("peak_after_kib="),
    );
    eprintln!(
        "compile bomb (30.5 MB, 100,000 functions, no exports): refused in {ms} ms, \
         peak RSS {} MiB -> {} MiB",
        before / 1024,
        after / 1024
    );
    assert!(line.contains("100000 defined functions"), "{line}");
    assert!(ms < 2_000, "{line}");
    // The load holds the bundle file (30.5 MB) while it is verified; compiling it took
    // 664 MB. 128 MiB above the host's own start is room for the bytes and nothing like a
    // compile.
    assert!(after.saturating_sub(before) < 128 << 10, "{line}");

    // In this process too: the refusal is the load's audit record, with its reason.
    let (e, took, audit) = load_refused(&signer, &path);
    assert!(e.to_string().contains("100000 defined functions"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let records = audit.records();
    let load = records
        .iter()
        .find(|r| r.event() == Event::Load)
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(load.outcome(), Outcome::Invalid);
    assert_eq!(load.extension(), Some("test.bomb"));
    let message = load.message().unwrap();
    assert!(message.contains("100000 defined functions"), "{message}");
    assert!(message.contains("(40000)"), "the limit is named: {message}");
}

/// Claiming a known world does not buy a compile: over a limit is refused before compiling.
#[test]
fn a_known_world_over_the_limits_is_refused_before_compiling() {
    let signer = Signer::new();
    // The bomb's functions, exporting warden's handler.
    let many = signer.bundle("many", &component(100_000, 300, Some(RPC)));
    let (e, took, _) = load_refused(&signer, &many);
    assert!(e.to_string().contains("100000 defined functions"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // One function body of 2 MiB.
    let huge = signer.bundle("huge", &component(1, 2 << 20, Some(RPC)));
    let (e, took, audit) = load_refused(&signer, &huge);
    assert!(e.to_string().contains("bytes in one function body"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        audit
            .records()
            .iter()
            .any(|r| r.event() == Event::Load && r.outcome() == Outcome::Invalid)
    );
}

/// A component under the limits that exports no known world is refused for that, before
/// compiling, and says what it does export.
#[test]
fn no_known_world_is_refused_before_compiling() {
    let signer = Signer::new();
    let path = signer.bundle("other", &component(1_000, 300, Some("wasi:cli/run@0.2.0")));
    let (e, took, _) = load_refused(&signer, &path);
    let e = e.to_string();
    assert!(e.contains("exports neither"), "{e}");
    assert!(e.contains("wasi:cli/run@0.2.0"), "{e}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
