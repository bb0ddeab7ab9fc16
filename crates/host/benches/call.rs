//! Fresh-instance call overhead: `Host::call` on the echo example against a raw Wasmtime
//! baseline (`InstancePre` instantiate + typed call) on an engine with the very same settings
//! (`warden_runtime::engine_config`), measured interleaved in one run so both share the
//! machine's noise. Then, separately, the cost of the durable (fsync'd) audit log.
//! A third variant, the runtime crate's call alone (`Prepared::call_rpc` with default
//! capabilities: no host layer, no audit record), splits warden's overhead between the
//! runtime and the host.
//!
//! Needs the example components: run `scripts/build-examples.sh` first.
//! Run: `cargo bench -p warden-host --bench call`.
//! `WARDEN_BENCH_CALLS=N` changes the number of measured calls per variant (default 2000).
//! `WARDEN_PROFILE_ONLY=warden` (or `raw`, `runtime`) runs N calls of that variant alone and prints
//! nothing, for a profiler: `perf record --call-graph dwarf` on this binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_host::{ExtensionId, Grant, Host, MemoryAudit, TrustBundle};
use warden_runtime::{RuntimeConfig, engine_config};
use warden_trust::{SigningKey, publisher_entry, sign};
use wasmtime::component::{
    Component, ComponentExportIndex, InstancePre, Lift, Linker, ResourceTable,
};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const WARMUP: usize = 200;
const DEFAULT_CALLS: usize = 2000;
/// Calls per variant per round; the order of the variants alternates every round.
const BLOCK: usize = 50;
const DURABLE_CALLS: usize = 300;
const DURABLE_WARMUP: usize = 20;
const INPUT: &[u8; 16] = b"0123456789abcdef";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Packs examples/echo into `dir` and signs it with `key`; returns the bundle path.
fn signed_echo(dir: &Path, key: &SigningKey) -> PathBuf {
    let src = examples().join("echo");
    let wasm = src.join("extension.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run scripts/build-examples.sh",
        wasm.display()
    );
    let stage = dir.join("stage");
    fs::create_dir_all(&stage).unwrap();
    fs::copy(src.join("extension.toml"), stage.join("extension.toml")).unwrap();
    fs::copy(&wasm, stage.join("extension.wasm")).unwrap();
    let packed = pack_dir(&stage, &BundleLimits::default()).unwrap();
    let out = dir.join("echo.wext");
    fs::write(&out, &packed.bytes).unwrap();
    let bundle = Bundle::read_file(&out, &BundleLimits::default()).unwrap();
    let env = sign(&bundle, key, None).unwrap();
    fs::write(format!("{}.sig", out.display()), env.to_json_pretty()).unwrap();
    out
}

/// The guest's `call-error` record.
#[derive(wasmtime::component::ComponentType, Lift)]
#[component(record)]
struct CallErr {
    code: String,
    message: String,
}

/// The baseline's store data: an empty WASI context and a resource table, nothing else.
struct RawState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Raw Wasmtime: one engine with warden's settings, the component pre-linked once.
struct Raw {
    engine: Engine,
    pre: InstancePre<RawState>,
    call: ComponentExportIndex,
}

impl Raw {
    fn new(wasm: &Path) -> Raw {
        let engine = Engine::new(&engine_config(&RuntimeConfig::default()).unwrap()).unwrap();
        let component = Component::from_file(&engine, wasm).unwrap();
        let mut linker = Linker::<RawState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        linker.define_unknown_imports_as_traps(&component).unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        let handler = component
            .get_export_index(None, "warden:extension/handler@0.1.0")
            .expect("the handler export");
        let call = component
            .get_export_index(Some(&handler), "call")
            .expect("handler.call");
        Raw { engine, pre, call }
    }

    async fn call(&self, method: &str, input: &[u8]) -> Vec<u8> {
        let state = RawState {
            ctx: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_fuel(u64::MAX / 2).unwrap();
        // Epoch interruption is on, but nothing advances this engine's epoch.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self.pre.instantiate_async(&mut store).await.unwrap();
        let func = instance
            .get_typed_func::<(&str, &[u8]), (Result<Vec<u8>, CallErr>,)>(&mut store, &self.call)
            .unwrap();
        let (out,) = func.call_async(&mut store, (method, input)).await.unwrap();
        out.unwrap_or_else(|e| panic!("echo failed: {}: {}", e.code, e.message))
    }
}

/// warden's runtime crate alone: the prepared component called with default capabilities.
struct RuntimeOnly {
    rt: warden_runtime::Runtime,
    prepared: warden_runtime::Prepared,
    limits: warden_manifest::Limits,
}

impl RuntimeOnly {
    fn new(bundle: &Path, trust: &TrustBundle) -> RuntimeOnly {
        let b = Bundle::read_file(bundle, &BundleLimits::default()).unwrap();
        let env =
            warden_trust::Envelope::read_file(Path::new(&format!("{}.sig", bundle.display())))
                .unwrap();
        let verified = warden_trust::verify(b, &env, trust).unwrap();
        let rt = warden_runtime::Runtime::new(RuntimeConfig::default()).unwrap();
        let prepared = rt.prepare(&verified).unwrap();
        RuntimeOnly {
            rt,
            prepared,
            limits: warden_manifest::Profile::Standard.preset(),
        }
    }

    async fn call(&self, method: &str, input: &[u8]) -> Vec<u8> {
        let caps = warden_runtime::CallCaps::default();
        self.prepared
            .call_rpc(&self.rt, &self.limits, &caps, None, method, input)
            .await
            .result
            .unwrap()
    }
}

/// Per-call latencies of one variant.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort_unstable();
        v
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let v = self.sorted();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn mean(&self) -> Duration {
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }

    fn per_second(&self) -> f64 {
        self.0.len() as f64 / self.0.iter().sum::<Duration>().as_secs_f64()
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<34} p50 {:>7}  p90 {:>7}  p99 {:>7}  mean {:>7}  ({:.0} calls/s)",
            us(self.pct(50.0)),
            us(self.pct(90.0)),
            us(self.pct(99.0)),
            us(self.mean()),
            self.per_second()
        )
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}µs", d.as_secs_f64() * 1e6)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Runs `echo` `n` times through `call`, checking each answer, and keeps each latency in `out`.
async fn timed(n: usize, mut out: Option<&mut Samples>, call: impl AsyncFn() -> Vec<u8>) {
    for _ in 0..n {
        let t = Instant::now();
        let r = call().await;
        let dt = t.elapsed();
        assert_eq!(r, INPUT);
        if let Some(s) = out.as_deref_mut() {
            s.0.push(dt);
        }
    }
}

async fn time_warden(host: &Host, id: &ExtensionId, n: usize, out: Option<&mut Samples>) {
    // An embedder holds its tenant's handle, as the baseline holds its `InstancePre`.
    let tenant = host.default_tenant();
    timed(n, out, async || {
        tenant.call(id, "echo", INPUT).await.unwrap().value
    })
    .await;
}

async fn time_raw(raw: &Raw, n: usize, out: Option<&mut Samples>) {
    timed(n, out, async || raw.call("echo", INPUT).await).await;
}

async fn time_runtime(r: &RuntimeOnly, n: usize, out: Option<&mut Samples>) {
    timed(n, out, async || r.call("echo", INPUT).await).await;
}

fn main() {
    let calls: usize = std::env::var("WARDEN_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CALLS);
    let rounds = calls.div_ceil(BLOCK);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let dir = tempfile::TempDir::new().unwrap();
    let key = SigningKey::generate();
    let bundle = signed_echo(dir.path(), &key);
    let trust = TrustBundle::parse(&publisher_entry(
        &"warden-examples".parse().unwrap(),
        &key.public_key(),
    ))
    .unwrap();

    let audit = Arc::new(MemoryAudit::default());
    let host = Host::builder()
        .trust(trust.clone())
        .data_dir(dir.path().join("data-mem"))
        .audit(audit.clone())
        .build()
        .unwrap();
    let id = host
        .default_tenant()
        .load_file(&bundle, None, &Grant::None)
        .unwrap()
        .id;
    let raw = Raw::new(&examples().join("echo/extension.wasm"));
    let runtime = RuntimeOnly::new(&bundle, &trust);

    if let Ok(only) = std::env::var("WARDEN_PROFILE_ONLY") {
        rt.block_on(async {
            for _ in 0..calls {
                if only == "raw" {
                    time_raw(&raw, 1, None).await;
                } else if only == "runtime" {
                    time_runtime(&runtime, 1, None).await;
                } else {
                    time_warden(&host, &id, 1, None).await;
                    if audit.len() > 1000 {
                        audit.take();
                    }
                }
            }
        });
        return;
    }
    let (raw_s, warden_s, runtime_s) = rt.block_on(async {
        // Warm-up, interleaved too.
        for _ in 0..WARMUP.div_ceil(BLOCK) {
            time_raw(&raw, BLOCK, None).await;
            time_runtime(&runtime, BLOCK, None).await;
            time_warden(&host, &id, BLOCK, None).await;
        }
        let mut raw_s = Samples::default();
        let mut warden_s = Samples::default();
        let mut runtime_s = Samples::default();
        for round in 0..rounds {
            let n = BLOCK.min(calls - round * BLOCK);
            if round % 2 == 0 {
                time_raw(&raw, n, Some(&mut raw_s)).await;
                time_runtime(&runtime, n, Some(&mut runtime_s)).await;
                time_warden(&host, &id, n, Some(&mut warden_s)).await;
            } else {
                time_warden(&host, &id, n, Some(&mut warden_s)).await;
                time_runtime(&runtime, n, Some(&mut runtime_s)).await;
                time_raw(&raw, n, Some(&mut raw_s)).await;
            }
            // Keep the in-memory sink from growing through the run.
            audit.take();
        }
        (raw_s, warden_s, runtime_s)
    });
    drop(raw);
    drop(runtime);
    drop(host);

    // The real, durable audit log: one fsync'd record per call.
    let durable = Host::builder()
        .trust(trust)
        .data_dir(dir.path().join("data-durable"))
        .build()
        .unwrap();
    let did = durable
        .default_tenant()
        .load_file(&bundle, None, &Grant::None)
        .unwrap()
        .id;
    let durable_s = rt.block_on(async {
        time_warden(&durable, &did, DURABLE_WARMUP, None).await;
        let mut s = Samples::default();
        time_warden(&durable, &did, DURABLE_CALLS, Some(&mut s)).await;
        s
    });

    println!(
        "fresh-instance call, echo ({} B), {calls} calls each after {WARMUP} warm-up, interleaved in blocks of {BLOCK}",
        INPUT.len()
    );
    println!("{}", raw_s.line("raw wasmtime InstancePre:"));
    println!("{}", warden_s.line("warden host.call (mem audit):"));
    println!("{}", runtime_s.line("warden runtime alone:"));
    println!(
        "ratio p50 {:.3} (target <= 1.2), ratio p90 {:.3}, ratio p99 {:.3}, ratio mean {:.3}",
        ratio(warden_s.pct(50.0), raw_s.pct(50.0)),
        ratio(warden_s.pct(90.0), raw_s.pct(90.0)),
        ratio(warden_s.pct(99.0), raw_s.pct(99.0)),
        ratio(warden_s.mean(), raw_s.mean()),
    );
    println!(
        "where it goes (p50): runtime alone {:.3}x raw, the host layer on top {:.3}x the runtime",
        ratio(runtime_s.pct(50.0), raw_s.pct(50.0)),
        ratio(warden_s.pct(50.0), runtime_s.pct(50.0)),
    );
    println!(
        "{}",
        durable_s.line(&format!(
            "warden host.call (durable audit log, {DURABLE_CALLS} calls):"
        ))
    );
}
