//! Per-call cost of an Extism plug-in against a component, both through `Host::call` (fresh
//! instance per call, every check and the audit records on, to an in-memory audit sink),
//! measured interleaved in one run: the `greet` export of `examples/extism/count-vowels`
//! (Extism Rust PDK) and the `echo` method of `examples/echo` (a component), each with a
//! 16-byte input. Extism's own host on the same plug-in is measured in its own workspace
//! (a scratch host on the `extism` crate 1.30.0, `Plugin::new_from_compiled` + call, 190-265 µs; see `docs/design/extism/abi.md`).
//!
//! Needs the examples: run `scripts/build-examples.sh` first.
//! Run: `cargo bench -p warden-host --bench extism` (`WARDEN_BENCH_CALLS=N`, default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::line;
use warden_host::{ExtensionId, Grant, Host, MemoryAudit, TrustBundle};
use warden_trust::{SigningKey, publisher_entry};

const WARMUP: usize = 200;
const DEFAULT_CALLS: usize = 2000;
/// Calls per variant per round; the order of the variants alternates every round.
const BLOCK: usize = 50;
const INPUT: &[u8; 16] = b"0123456789abcdef";

fn signed(dir: &Path, key: &SigningKey, example: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example);
    let wasm = src.join("extension.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run scripts/build-examples.sh",
        wasm.display()
    );
    let stage = dir.join(example.replace('/', "-"));
    fs::create_dir_all(&stage).unwrap();
    fs::copy(src.join("extension.toml"), stage.join("extension.toml")).unwrap();
    fs::copy(&wasm, stage.join("extension.wasm")).unwrap();
    common::sign_stage(
        &stage,
        dir.join(format!("{}.wext", example.replace('/', "-"))),
        key,
    )
}

async fn time(host: &Host, id: &ExtensionId, method: &str, n: usize, out: &mut Vec<Duration>) {
    let t = host.default_tenant();
    for _ in 0..n {
        let start = Instant::now();
        let r = t.call(id, method, INPUT).await.unwrap();
        out.push(start.elapsed());
        std::hint::black_box(r);
    }
}

fn main() {
    let calls: usize = std::env::var("WARDEN_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CALLS);
    let dir = tempfile::TempDir::new().unwrap();
    let key = SigningKey::generate();
    let trust = publisher_entry(&"warden-examples".parse().unwrap(), &key.public_key());
    let host = Host::builder()
        .trust(TrustBundle::parse(&trust).unwrap())
        .data_dir(dir.path().join("data"))
        .audit(Arc::new(MemoryAudit::default()))
        .build()
        .unwrap();
    let plugin = signed(dir.path(), &key, "extism/count-vowels");
    let component = signed(dir.path(), &key, "echo");
    let t = host.default_tenant();
    let plugin = t.load_file(&plugin, None, &Grant::None).unwrap().id;
    let component = t.load_file(&component, None, &Grant::None).unwrap().id;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let out = t.call(&plugin, "greet", INPUT).await.unwrap();
        assert_eq!(out.value, b"Hello, 0123456789abcdef!");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        time(&host, &plugin, "greet", WARMUP, &mut Vec::new()).await;
        time(&host, &component, "echo", WARMUP, &mut Vec::new()).await;
        let mut round = 0;
        while a.len() < calls {
            if round % 2 == 0 {
                time(&host, &plugin, "greet", BLOCK, &mut a).await;
                time(&host, &component, "echo", BLOCK, &mut b).await;
            } else {
                time(&host, &component, "echo", BLOCK, &mut b).await;
                time(&host, &plugin, "greet", BLOCK, &mut a).await;
            }
            round += 1;
        }
        println!("{calls} calls each, fresh instance per call, audit in memory:");
        let pa = line("extism plug-in (count-vowels greet)", a);
        let pb = line("component (echo echo)", b);
        println!(
            "ratio p50 plug-in / component {:.3}",
            pa.as_secs_f64() / pb.as_secs_f64()
        );
    });
}
