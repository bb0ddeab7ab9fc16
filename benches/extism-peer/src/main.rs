//! Issue 15: the same Extism plug-in (`examples/extism/count-vowels`, Extism Rust PDK) run by
//! Extism's own host (the `extism` crate 1.30.0, Wasmtime 43) and by warden (`warden_host::Host`,
//! Wasmtime 48.0.8), both in this one binary.
//!
//! 1. Equality: for allowed work (`count_vowels` and `greet` on several inputs, `count_vowels`
//!    with the config key `vowels` set and unset, `fail`), both hosts must give the same output
//!    bytes (or, for `fail`, the same error message and code). Extism is given a fresh `Plugin`
//!    per check, as warden gives a fresh instance per call. Any difference: exit code 1.
//! 2. Per-call cost, interleaved in blocks whose order rotates every round: Extism with a fresh
//!    `Plugin` from a `CompiledPlugin` per call, Extism reusing one `Plugin` (its usual mode:
//!    the instance, its memory and vars survive between calls), and warden's `Tenant::call`
//!    (fresh instance per call, every check and the audit records on, to an in-memory sink).
//!
//! Needs the example built (`scripts/build-examples.sh`). Run: `scripts/bench-extism-peer.sh`
//! (`WARDEN_BENCH_CALLS=N`, default 2000 calls per variant and method).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};
use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_host::{ExtensionId, Grant, Host, MemoryAudit, SecretName, SecretValue, TrustBundle};
use warden_trust::{SigningKey, publisher_entry, sign};

const EXAMPLE: &str = "extism/count-vowels";
const WARMUP: usize = 200;
const DEFAULT_CALLS: usize = 2000;
/// Calls per variant per round; the order of the variants changes every round.
const BLOCK: usize = 50;
const INPUT: &[u8; 16] = b"0123456789abcdef";
/// The config value given to Extism's manifest and, as a granted secret, to warden.
const VOWELS: &str = "aeiouyAEIOUYéö";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(EXAMPLE)
}

/// Packs and signs the example into `dir`, as the in-project bench does.
fn signed(dir: &Path, key: &SigningKey) -> PathBuf {
    let src = example_dir();
    let wasm = src.join("extension.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run scripts/build-examples.sh",
        wasm.display()
    );
    let stage = dir.join("count-vowels");
    fs::create_dir_all(&stage).unwrap();
    fs::copy(src.join("extension.toml"), stage.join("extension.toml")).unwrap();
    fs::copy(&wasm, stage.join("extension.wasm")).unwrap();
    let packed = pack_dir(&stage, &BundleLimits::default()).unwrap();
    let out = dir.join("count-vowels.wext");
    fs::write(&out, &packed.bytes).unwrap();
    let bundle = Bundle::read_file(&out, &BundleLimits::default()).unwrap();
    let env = sign(&bundle, key, None).unwrap();
    fs::write(format!("{}.sig", out.display()), env.to_json_pretty()).unwrap();
    out
}

/// A warden host with the example loaded; with `vowels`, the secret is granted and set.
struct Warden {
    host: Host,
    id: ExtensionId,
    _dir: tempfile::TempDir,
}

impl Warden {
    fn new(vowels: Option<&str>) -> Warden {
        let dir = tempfile::TempDir::new().unwrap();
        let key = SigningKey::generate();
        let trust = publisher_entry(&"warden-examples".parse().unwrap(), &key.public_key());
        let host = Host::builder()
            .trust(TrustBundle::parse(&trust).unwrap())
            .data_dir(dir.path().join("data"))
            .audit(Arc::new(MemoryAudit::default()))
            .build()
            .unwrap();
        let bundle = signed(dir.path(), &key);
        let grant: Grant = match vowels {
            Some(_) => "secret:vowels".parse().unwrap(),
            None => Grant::None,
        };
        let t = host.default_tenant();
        let id = t.load_file(&bundle, None, &grant).unwrap().id;
        if let Some(v) = vowels {
            t.put_secret(
                &id,
                &"vowels".parse::<SecretName>().unwrap(),
                SecretValue::new(v.into()).unwrap(),
            )
            .unwrap();
        }
        Warden {
            host,
            id,
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, input: &[u8]) -> Outcome {
        match self
            .host
            .default_tenant()
            .call(&self.id, method, input)
            .await
        {
            Ok(called) => Outcome::Ok(called.value),
            Err(failure) => match failure.error {
                warden_host::CallError::Extension { code, message } => Outcome::Err {
                    code: code.parse().unwrap_or(i32::MIN),
                    message,
                },
                other => Outcome::Other(other.to_string()),
            },
        }
    }
}

fn manifest(wasm: &[u8], vowels: Option<&str>) -> Manifest {
    let m = Manifest::new([Wasm::data(wasm.to_vec())]);
    match vowels {
        Some(v) => m.with_config_key("vowels", v),
        None => m,
    }
}

fn compiled(wasm: &[u8], vowels: Option<&str>) -> CompiledPlugin {
    CompiledPlugin::new(PluginBuilder::new(manifest(wasm, vowels)).with_wasi(false)).unwrap()
}

fn extism_call(plugin: &mut Plugin, method: &str, input: &[u8]) -> Outcome {
    match plugin.call_get_error_code::<&[u8], Vec<u8>>(method, input) {
        Ok(out) => Outcome::Ok(out),
        Err((e, code)) => Outcome::Err {
            code,
            message: e.to_string(),
        },
    }
}

/// What a call gave: output bytes, a plug-in error (`error_set` + return code), or anything
/// else (a trap, a limit, a denial), which allowed work never gives.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok(Vec<u8>),
    Err { code: i32, message: String },
    Other(String),
}

impl Outcome {
    fn show(&self) -> String {
        let cut = |s: &str| -> String {
            if s.chars().count() > 44 {
                let head: String = s.chars().take(41).collect();
                format!("{head}...")
            } else {
                s.to_string()
            }
        };
        match self {
            Outcome::Ok(v) => format!("{} B {:?}", v.len(), cut(&String::from_utf8_lossy(v))),
            Outcome::Err { code, message } => format!("error {code} {:?}", cut(message)),
            Outcome::Other(e) => format!("FAILED {}", cut(e)),
        }
    }
}

struct Case {
    method: &'static str,
    label: &'static str,
    input: Vec<u8>,
    vowels: bool,
}

fn cases() -> Vec<Case> {
    let big: Vec<u8> = (0..64 * 1024)
        .map(|i| b"Hello, World! yes "[i % 18])
        .collect();
    let utf8 = "héllo wörld — ÀÉÎ ünïcödé 日本語 🦀".as_bytes().to_vec();
    let mut out = Vec::new();
    for method in ["count_vowels", "greet"] {
        for (label, input) in [
            ("empty", Vec::new()),
            ("ascii", b"Hello, World! yes".to_vec()),
            ("utf-8", utf8.clone()),
            ("64 KiB", big.clone()),
        ] {
            let configs: &[bool] = if method == "count_vowels" {
                &[false, true]
            } else {
                &[false]
            };
            for &vowels in configs {
                out.push(Case {
                    method,
                    label,
                    input: input.clone(),
                    vowels,
                });
            }
        }
    }
    for (label, input) in [("ascii", b"boom".to_vec()), ("utf-8", utf8)] {
        out.push(Case {
            method: "fail",
            label,
            input,
            vowels: false,
        });
    }
    out
}

/// Runs every case on both hosts, prints a table; true if all are equal. Extism reusing one
/// plug-in is shown too, for information: its vars survive between calls, so `count_vowels`'s
/// running `total` grows there (not a failure: warden's vars live for one call, by design).
async fn equality(wasm: &[u8], plain: &Warden, configured: &Warden) -> bool {
    let fresh = [compiled(wasm, None), compiled(wasm, Some(VOWELS))];
    let mut reused = [
        Plugin::new(manifest(wasm, None), [], false).unwrap(),
        Plugin::new(manifest(wasm, Some(VOWELS)), [], false).unwrap(),
    ];
    let mut all = true;
    let mut table = String::new();
    writeln!(
        table,
        "{:<13} {:<7} {:<6} {:<5} {:<62} {:<8}",
        "method", "input", "vowels", "equal", "output (extism fresh = warden)", "reuse"
    )
    .unwrap();
    for case in cases() {
        let k = usize::from(case.vowels);
        let mut p = Plugin::new_from_compiled(&fresh[k]).unwrap();
        let e = extism_call(&mut p, case.method, &case.input);
        drop(p);
        let warden = if case.vowels { configured } else { plain };
        let w = warden.call(case.method, &case.input).await;
        let r = extism_call(&mut reused[k], case.method, &case.input);
        let allowed_fails = case.method == "fail";
        // Allowed work answers; `fail` must fail on both, with a plug-in error.
        let shape_ok = match &e {
            Outcome::Ok(_) => !allowed_fails,
            Outcome::Err { .. } => allowed_fails,
            Outcome::Other(_) => false,
        };
        let equal = shape_ok && e == w;
        all &= equal;
        let reuse = if r == e {
            "same".to_string()
        } else {
            "differs".to_string()
        };
        let vowels = if case.vowels { "set" } else { "unset" };
        let verdict = if equal { "yes" } else { "NO" };
        writeln!(
            table,
            "{:<13} {:<7} {:<6} {:<5} {:<62} {:<8}",
            case.method,
            case.label,
            vowels,
            verdict,
            e.show(),
            reuse
        )
        .unwrap();
        if !equal {
            writeln!(table, "{:>34} warden: {}", "", w.show()).unwrap();
        }
        if r != e {
            writeln!(table, "{:>34} extism reused: {}", "", r.show()).unwrap();
        }
    }
    print!("{table}");
    all
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.1}µs", d.as_secs_f64() * 1e6)
}

struct Stats {
    p50: Duration,
    mean: Duration,
}

fn line(label: &str, mut v: Vec<Duration>) -> Stats {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "  {label:<46} p50 {:>9}  p90 {:>9}  p99 {:>9}  mean {:>9}",
        us(pct(&v, 0.5)),
        us(pct(&v, 0.9)),
        us(pct(&v, 0.99)),
        us(mean)
    );
    Stats {
        p50: pct(&v, 0.5),
        mean,
    }
}

#[derive(Clone, Copy)]
enum Variant {
    ExtismFresh,
    ExtismReuse,
    Warden,
}

/// The six orders of the three variants, one per round in turn.
const ORDERS: [[Variant; 3]; 6] = {
    use Variant::*;
    [
        [ExtismFresh, ExtismReuse, Warden],
        [Warden, ExtismReuse, ExtismFresh],
        [ExtismReuse, Warden, ExtismFresh],
        [ExtismFresh, Warden, ExtismReuse],
        [Warden, ExtismFresh, ExtismReuse],
        [ExtismReuse, ExtismFresh, Warden],
    ]
};

struct Bench<'a> {
    method: &'static str,
    compiled: &'a CompiledPlugin,
    reused: Plugin,
    warden: &'a Warden,
}

impl Bench<'_> {
    /// Times `n` calls of one variant into `out`. Extism fresh: `new_from_compiled` (instantiate
    /// the plug-in and Extism's kernel), call, drop. Extism reuse: call only. Warden: the whole
    /// `Tenant::call` (checks, fresh instance, call, audit record, teardown).
    async fn run(&mut self, v: Variant, n: usize, out: &mut Vec<Duration>) {
        match v {
            Variant::ExtismFresh => {
                for _ in 0..n {
                    let start = Instant::now();
                    let mut p = Plugin::new_from_compiled(self.compiled).unwrap();
                    let r: Vec<u8> = p.call(self.method, INPUT.as_slice()).unwrap();
                    drop(p);
                    out.push(start.elapsed());
                    black_box(r);
                }
            }
            Variant::ExtismReuse => {
                for _ in 0..n {
                    let start = Instant::now();
                    let r: Vec<u8> = self.reused.call(self.method, INPUT.as_slice()).unwrap();
                    out.push(start.elapsed());
                    black_box(r);
                }
            }
            Variant::Warden => {
                let t = self.warden.host.default_tenant();
                for _ in 0..n {
                    let start = Instant::now();
                    let r = t.call(&self.warden.id, self.method, INPUT).await.unwrap();
                    out.push(start.elapsed());
                    black_box(r);
                }
            }
        }
    }
}

async fn bench(method: &'static str, wasm: &[u8], warden: &Warden, calls: usize) {
    let compiled = compiled(wasm, None);
    let mut b = Bench {
        method,
        compiled: &compiled,
        reused: Plugin::new(manifest(wasm, None), [], false).unwrap(),
        warden,
    };
    for v in ORDERS[0] {
        b.run(v, WARMUP, &mut Vec::new()).await;
    }
    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut round = 0;
    while times[0].len() < calls {
        let n = BLOCK.min(calls - times[0].len());
        for v in ORDERS[round % ORDERS.len()] {
            b.run(v, n, &mut times[v as usize]).await;
        }
        round += 1;
    }
    let [fresh, reuse, w] = times;
    println!("{method} (16-byte input), {calls} calls each, {round} interleaved rounds:");
    let f = line("extism, fresh Plugin per call (from compiled)", fresh);
    let r = line("extism, one Plugin reused (state persists)", reuse);
    let w = line("warden Host::call (fresh instance, audited)", w);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  ratio warden / extism-fresh: p50 {:.3}  mean {:.3}",
        ratio(w.p50, f.p50),
        ratio(w.mean, f.mean)
    );
    println!(
        "  ratio warden / extism-reuse: p50 {:.3}  mean {:.3}",
        ratio(w.p50, r.p50),
        ratio(w.mean, r.mean)
    );
}

fn main() -> ExitCode {
    let calls: usize = std::env::var("WARDEN_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_CALLS);
    let wasm = fs::read(example_dir().join("extension.wasm"))
        .expect("examples/extism/count-vowels/extension.wasm: run scripts/build-examples.sh");
    let plain = Warden::new(None);
    let configured = Warden::new(Some(VOWELS));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("== equality: extism 1.30.0 (fresh Plugin per call) vs warden, allowed work ==");
        let equal = equality(&wasm, &plain, &configured).await;
        if !equal {
            println!("equality: FAILED (see NO rows)");
            return ExitCode::FAILURE;
        }
        println!("equality: all outputs identical");
        println!();
        println!("== per-call cost, one process, blocks of {BLOCK} in rotating order ==");
        bench("greet", &wasm, &plain, calls).await;
        bench("count_vowels", &wasm, &plain, calls).await;
        ExitCode::SUCCESS
    })
}
