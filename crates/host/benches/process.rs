//! Per-call overhead of a process extension: `examples/process/kv-counter` (a native program in
//! the sandbox) spawned for every call and kept warm, against `examples/kv-counter` (the same
//! extension as a component, a fresh instance per call), doing the same work (`get` of a
//! counter: one key-value read through the host) on one host, interleaved in blocks so all
//! variants share the machine's noise. Prints p50/p99 and the ratios.
//!
//! Needs the examples: run `scripts/build-examples.sh` first.
//! Run: `cargo bench -p warden-host --bench process`.
//! `WARDEN_BENCH_CALLS=N` changes the calls per variant (default 2000; spawning runs a tenth).
//! `WARDEN_BENCH_STORE=sqlite` puts the key-value store in a data dir (SQLite), as a service has.
//! `WARDEN_PROFILE_ONLY=warm` (or `component`, `spawned`) runs only that variant and prints
//! nothing, for a profiler (`perf record -g`, `strace -c -f`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_host::{ExtensionId, Grant, Host, MemoryAudit, Policy, TrustBundle};
use warden_trust::{SigningKey, publisher_entry, sign};

const BLOCK: usize = 50;
const WARMUP: usize = 100;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Stages `files` (name in the stage, source path) with `manifest`, packs and signs them.
fn signed(
    dir: &Path,
    name: &str,
    manifest: &Path,
    files: &[(&str, PathBuf)],
    key: &SigningKey,
) -> PathBuf {
    let stage = dir.join(name);
    fs::create_dir_all(&stage).unwrap();
    fs::copy(manifest, stage.join("extension.toml")).unwrap();
    for (to, from) in files {
        assert!(
            from.exists(),
            "{} is missing: run scripts/build-examples.sh",
            from.display()
        );
        fs::copy(from, stage.join(to)).unwrap();
    }
    let packed = pack_dir(&stage, &BundleLimits::default()).unwrap();
    let out = dir.join(format!("{name}.wext"));
    fs::write(&out, &packed.bytes).unwrap();
    let bundle = Bundle::read_file(&out, &BundleLimits::default()).unwrap();
    let env = sign(&bundle, key, None).unwrap();
    fs::write(format!("{}.sig", out.display()), env.to_json_pretty()).unwrap();
    out
}

/// A host with an in-memory store, or with `WARDEN_BENCH_STORE=sqlite` a data dir's (in
/// `dir`): what a service's key-value reads go through.
fn host(trust: &str, policy: &str, dir: &Path) -> Host {
    let b = Host::builder()
        .trust(TrustBundle::parse(trust).unwrap())
        .policy(Policy::parse(policy).unwrap())
        .audit(Arc::new(MemoryAudit::default()));
    let b = match std::env::var("WARDEN_BENCH_STORE").as_deref() {
        Ok("sqlite") => {
            b.data_dir(dir.join(format!("data-{}", fs::read_dir(dir).unwrap().count())))
        }
        _ => b,
    };
    b.build().unwrap()
}

struct Variant {
    key: &'static str,
    name: &'static str,
    host: Host,
    id: ExtensionId,
    share: usize,
    times: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let calls: usize = std::env::var("WARDEN_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let trust = publisher_entry(&"warden-examples".parse().unwrap(), &key.public_key());
    let ex = examples();
    let component = signed(
        dir.path(),
        "component",
        &ex.join("kv-counter/extension.toml"),
        &[("extension.wasm", ex.join("kv-counter/extension.wasm"))],
        &key,
    );
    let process = signed(
        dir.path(),
        "process",
        &ex.join("process/kv-counter/extension.toml"),
        &[("kv-counter", ex.join("process/kv-counter/kv-counter"))],
        &key,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let load = |host: Host, bundle: &Path| {
        let id = host
            .default_tenant()
            .load_file(bundle, None, &"kv".parse::<Grant>().unwrap())
            .unwrap()
            .id;
        (host, id)
    };
    let (warm_host, warm_id) = load(
        host(
            &trust,
            "[policy.process]\nwarm_calls = 1000000\n",
            dir.path(),
        ),
        &process,
    );
    let (spawn_host, spawn_id) = load(host(&trust, "", dir.path()), &process);
    let (comp_host, comp_id) = load(host(&trust, "", dir.path()), &component);
    let mut variants = vec![
        Variant {
            key: "component",
            name: "component (fresh instance)",
            host: comp_host,
            id: comp_id,
            share: 1,
            times: Vec::new(),
        },
        Variant {
            key: "warm",
            name: "process, warm",
            host: warm_host,
            id: warm_id,
            share: 1,
            times: Vec::new(),
        },
        Variant {
            key: "spawned",
            name: "process, spawned per call",
            host: spawn_host,
            id: spawn_id,
            share: 10,
            times: Vec::new(),
        },
    ];
    let only = std::env::var("WARDEN_PROFILE_ONLY").ok();
    if let Some(only) = &only {
        variants.retain(|v| v.key == only);
        assert!(
            !variants.is_empty(),
            "WARDEN_PROFILE_ONLY: warm, component or spawned"
        );
    }
    // On a worker thread, as the service runs its calls (`block_on` would run them on this
    // thread and hand every I/O wake-up over from the workers).
    let mut variants = rt
        .block_on(rt.spawn(async move {
            for v in &variants {
                let t = v.host.default_tenant();
                t.call(&v.id, "increment", b"bench 7").await.unwrap();
                for _ in 0..WARMUP / v.share {
                    assert_eq!(t.call(&v.id, "get", b"bench").await.unwrap().value, b"7");
                }
            }
            let rounds = calls.div_ceil(BLOCK);
            for round in 0..rounds {
                let mut order: Vec<usize> = (0..variants.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    let v = &mut variants[i];
                    let t = v.host.default_tenant();
                    for _ in 0..(BLOCK / v.share).max(1) {
                        let start = Instant::now();
                        let out = t.call(&v.id, "get", b"bench").await.unwrap();
                        v.times.push(start.elapsed());
                        assert_eq!(out.value, b"7");
                    }
                }
            }
            variants
        }))
        .unwrap();
    if only.is_some() {
        return;
    }
    println!(
        "process extension call overhead: `get` (one key-value read), {calls} calls per variant (spawned: a tenth)"
    );
    let mut p50s = Vec::new();
    for v in &mut variants {
        v.times.sort();
        let (p50, p99) = (percentile(&v.times, 0.5), percentile(&v.times, 0.99));
        p50s.push(p50);
        println!(
            "  {:<28} n={:<5} p50 {:>9.1} us   p99 {:>9.1} us",
            v.name,
            v.times.len(),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    println!(
        "  warm process / component p50: {:.2}x; spawned / warm p50: {:.1}x (target: warm p50 <= 100 us)",
        p50s[1].as_secs_f64() / p50s[0].as_secs_f64(),
        p50s[2].as_secs_f64() / p50s[1].as_secs_f64()
    );
}
