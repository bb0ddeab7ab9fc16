//! The in-process half of `scripts/bench-languages.sh`: the same hello in several languages,
//! each an http extension called through the embedding API (`Tenant::call_http`: verify once,
//! then a fresh Store and instance per call, with its limits, its capabilities and an audit
//! record per call), then the same components instantiated and called on raw Wasmtime with
//! warden's engine settings (`warden_runtime::engine_config`: pooling allocator, copy-on-write
//! memory images), phase by phase: where a call's time goes.
//!
//! Then, with `--warm LABEL=BUNDLE...`, the same calls on a host that keeps instances between
//! calls (`[policy.component] warm_calls`, `BENCH_WARM_CALLS` each, default 1000): what a
//! language runtime's start costs per call, and what an operator accepting that weaker
//! isolation gets back.
//!
//! Usage: `bench-languages TRUST DATA LABEL=BUNDLE... [--warm LABEL=BUNDLE...]` (each bundle signed, `BUNDLE.sig`
//! beside it, with a publisher of TRUST). DATA is a data dir whose compile cache should
//! already hold the components (the script runs `warden run` on it first): a load that misses
//! the cache compiles here, which takes tens of seconds for a JavaScript or Python component.
//! The audit records of the calls go to memory (a durable log would add a disk sync per call,
//! which `warden serve`'s figures include and these do not).
//!
//! Environment: `BENCH_CALLS` measured calls per language (default 2000), `BENCH_WARMUP`
//! (200), `BENCH_RAW_CALLS` calls per language on raw Wasmtime (500; 0 skips that part),
//! and, for the raw part only, `BENCH_RAW_MEMORY_KEEP_KIB`, `BENCH_RAW_TABLE_KEEP_KIB`,
//! `BENCH_RAW_STACK_KEEP_KIB`: how much of each memory, table and async stack the pool keeps
//! resident between instances instead of warden's 2 MiB, 64 KiB and none (a what-if).
//! Calls of the languages are interleaved in blocks of 50, the order turning every round, so
//! all see the same machine noise.
//!
//! Prints one line per figure, space-separated, for the script to read:
//! `load LABEL MS SOURCE`, `inproc LABEL N P50_US P99_US MEAN_US MINFLT_PER_CALL` (and
//! `inwarm ...` alike for kept instances),
//! `raw LABEL N STORE_P50 INST_P50 HANDLE_P50 DROP_P50 TOTAL_P50 TOTAL_P99 MINFLT_PER_CALL`
//! (microseconds), `rawskip LABEL REASON`, and an `image LABEL ...` line describing each
//! component's core modules and their data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use warden_bundle::{Bundle, BundleLimits, ContentHash};
use warden_codecache::{CodeCache, Lookup};
use warden_datadir::Key;
use warden_host::{ExtensionId, Grant, Host, MemoryAudit, Policy, TrustBundle};
use warden_runtime::{RuntimeConfig, engine_config};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

const BLOCK: usize = 50;
const PATH: &str = "/hi";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Minor page faults of this thread so far (`/proc/thread-self/stat`, field 10). The calls run
/// on this thread (a current-thread runtime, guests inline), so the difference over a block of
/// calls is what those calls faulted in: the pages of the instances' memories they touched.
fn minflt() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0;
    };
    // After the command name in parentheses: state ppid pgrp session tty tpgid flags minflt.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Per-call samples of one language.
#[derive(Default)]
struct Samples {
    took: Vec<Duration>,
    faults: u64,
}

impl Samples {
    /// Nearest-rank percentile, in microseconds.
    fn pct(&self, p: f64) -> f64 {
        pct(&self.took, p)
    }

    fn mean(&self) -> f64 {
        self.took.iter().sum::<Duration>().as_secs_f64() * 1e6 / self.took.len().max(1) as f64
    }

    fn faults_per_call(&self) -> f64 {
        self.faults as f64 / self.took.len().max(1) as f64
    }
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1e6
}

fn request() -> http::Request<Bytes> {
    http::Request::get(PATH)
        .body(Bytes::new())
        .expect("a GET request")
}

fn check(label: &str, status: http::StatusCode, body: &[u8]) -> Res<()> {
    let text = String::from_utf8_lossy(body);
    if status != 200 || !text.contains("Hello") {
        return Err(format!("{label} answered {status}: {text:?}").into());
    }
    Ok(())
}

async fn time_warden(
    host: &Host,
    label: &str,
    id: &ExtensionId,
    n: usize,
    out: Option<&mut Samples>,
) -> Res<()> {
    let mut took = Vec::with_capacity(n);
    let f0 = minflt();
    for _ in 0..n {
        let t = Instant::now();
        let called = host
            .default_tenant()
            .call_http(id, request())
            .await
            .map_err(|e| format!("{label}: {e}"))?;
        let dt = t.elapsed();
        check(label, called.value.status(), called.value.body())?;
        took.push(dt);
    }
    let faults = minflt() - f0;
    if let Some(s) = out {
        s.took.extend(took);
        s.faults += faults;
    }
    Ok(())
}

/// The raw baseline's store data: empty WASI and HTTP contexts and a resource table.
struct RawState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RawState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// One component on raw Wasmtime, pre-linked once.
struct Raw {
    label: String,
    engine: Engine,
    pre: ProxyPre<RawState>,
}

/// The phases of one raw call, and the whole.
#[derive(Default)]
struct RawSamples {
    store: Vec<Duration>,
    inst: Vec<Duration>,
    handle: Vec<Duration>,
    drop: Vec<Duration>,
    total: Vec<Duration>,
    faults: u64,
}

impl Raw {
    async fn call(&self, out: &mut RawSamples) -> Res<()> {
        let t0 = Instant::now();
        let state = RawState {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_fuel(u64::MAX / 2)?;
        // Epoch interruption is on in the engine, but nothing advances this one's epoch.
        store.set_epoch_deadline(u64::MAX / 2);
        let mut req = request().map(Full::new);
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let outparam = store.data_mut().http().new_response_outparam(tx)?;
        let t1 = Instant::now();
        let proxy = self.pre.instantiate_async(&mut store).await?;
        let t2 = Instant::now();
        // The body is read while the guest writes it: a guest's flush waits for the reader.
        let label = &self.label;
        let guest = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, outparam);
        let answer = async move {
            let resp = rx
                .await
                .map_err(|_| format!("{label}: no response"))?
                .map_err(|e| format!("{label}: {e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("{label}: body: {e:?}"))?
                .to_bytes();
            Ok::<_, String>((parts, body))
        };
        let (ran, answer) = tokio::join!(guest, answer);
        ran?;
        let (parts, body) = answer?;
        let t3 = Instant::now();
        drop(store);
        let t4 = Instant::now();
        check(&self.label, parts.status, &body)?;
        out.store.push(t1 - t0);
        out.inst.push(t2 - t1);
        out.handle.push(t3 - t2);
        out.drop.push(t4 - t3);
        out.total.push(t4 - t0);
        Ok(())
    }
}

/// The component's compiled code from DATA's code cache, under its key: the very code the host
/// runs, so nothing is compiled here.
fn cached_component(engine: &Engine, data: &Path, wasm: &[u8]) -> Result<Component, String> {
    let key = Key::load_or_create(&data.join("compile.key")).map_err(|e| e.to_string())?;
    let cache = CodeCache::open(&data.join("cache"), key).map_err(|e| e.to_string())?;
    match cache.load(engine, ContentHash::of(wasm).as_bytes()) {
        Lookup::Hit(c) => Ok(c),
        Lookup::Miss => Err("not in the code cache (for this engine's fingerprint)".into()),
        Lookup::Rejected(r) => Err(r.to_string()),
    }
}

/// What the component's core modules hold, from its own bytes (no compile): how many define a
/// memory and how many import one, and the bytes of their data segments. Wasmtime can map a
/// module's data as a copy-on-write image only for a memory the module defines, with segments
/// at constant offsets; other data is copied into memory at every instantiation.
fn describe(label: &str, wasm: &[u8]) {
    use wasmparser::{DataKind, Encoding, Operator, Parser, Payload, TypeRef};
    #[derive(Default)]
    struct Module {
        defines: bool,
        imports: bool,
        initial_pages: u64,
        data: u64,
        data_not_constant: u64,
    }
    let mut stack: Vec<Module> = Vec::new();
    let mut done: Vec<Module> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::Version { encoding, .. } => {
                if encoding == Encoding::Module {
                    stack.push(Module::default());
                }
            }
            Payload::End(_) => {
                // The end of a module (a component's end pops nothing: only modules are pushed).
                if let Some(m) = stack.pop() {
                    done.push(m);
                }
            }
            Payload::MemorySection(r) => {
                if let Some(m) = stack.last_mut() {
                    for mem in r.into_iter().flatten() {
                        m.defines = true;
                        m.initial_pages += mem.initial;
                    }
                }
            }
            Payload::ImportSection(r) => {
                if let Some(m) = stack.last_mut() {
                    for imp in r.into_imports().flatten() {
                        if matches!(imp.ty, TypeRef::Memory(_)) {
                            m.imports = true;
                        }
                    }
                }
            }
            Payload::DataSection(r) => {
                if let Some(m) = stack.last_mut() {
                    for d in r.into_iter().flatten() {
                        let n = d.data.len() as u64;
                        m.data += n;
                        let constant = match &d.kind {
                            DataKind::Active { offset_expr, .. } => {
                                let mut ops = offset_expr.get_operators_reader();
                                matches!(
                                    ops.read(),
                                    Ok(Operator::I32Const { .. } | Operator::I64Const { .. })
                                ) && matches!(ops.read(), Ok(Operator::End))
                            }
                            DataKind::Passive => false,
                        };
                        if !constant {
                            m.data_not_constant += n;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let defining: Vec<&Module> = done.iter().filter(|m| m.defines).collect();
    let importing: Vec<&Module> = done.iter().filter(|m| m.imports && !m.defines).collect();
    println!(
        "image {label} {:.1}MB: {} core modules; {} define a memory (initial {:.1} MiB, data {:.2} MiB, \
         {:.2} MiB of it not at constant offsets); {} import one (data {:.2} MiB)",
        mib(wasm.len() as u64),
        done.len(),
        defining.len(),
        mib(defining.iter().map(|m| m.initial_pages).sum::<u64>() * 65536),
        mib(defining.iter().map(|m| m.data).sum()),
        mib(defining.iter().map(|m| m.data_not_constant).sum()),
        importing.len(),
        mib(importing.iter().map(|m| m.data).sum()),
    );
}

/// Loads `exts` on a host with `policy` and times `calls` calls of each (after `warmup`),
/// interleaved; prints `TAG LABEL N P50 P99 MEAN MINFLT` per extension. Returns the host.
#[allow(clippy::too_many_arguments)]
fn in_process(
    rt: &tokio::runtime::Runtime,
    trust: &TrustBundle,
    data: &Path,
    policy: Policy,
    exts: &[(String, PathBuf)],
    tag: &str,
    calls: usize,
    warmup: usize,
) -> Res<Host> {
    let audit = Arc::new(MemoryAudit::default());
    let host = Host::builder()
        .trust(trust.clone())
        .policy(policy)
        .data_dir(data)
        .audit(audit.clone())
        .build()?;
    let mut ids = Vec::new();
    for (label, bundle) in exts {
        let t = Instant::now();
        let info = host
            .default_tenant()
            .load_file(bundle, None, &Grant::None)
            .map_err(|e| format!("loading {}: {e}", bundle.display()))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // A load that compiled takes seconds; one from the cache, milliseconds.
        let source = if ms > 3000.0 { "compiled" } else { "cache" };
        println!("load {label} {ms:.1} {source}");
        ids.push(info.id);
    }
    let mut samples: Vec<Samples> = exts.iter().map(|_| Samples::default()).collect();
    rt.block_on(async {
        for round in 0..warmup.div_ceil(BLOCK) {
            for i in 0..exts.len() {
                let i = (i + round) % exts.len();
                time_warden(&host, &exts[i].0, &ids[i], BLOCK, None).await?;
            }
            audit.take();
        }
        let rounds = calls.div_ceil(BLOCK);
        for round in 0..rounds {
            let n = BLOCK.min(calls - round * BLOCK);
            for i in 0..exts.len() {
                let i = (i + round) % exts.len();
                time_warden(&host, &exts[i].0, &ids[i], n, Some(&mut samples[i])).await?;
            }
            // Keep the in-memory sink from growing through the run.
            audit.take();
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    for ((label, _), s) in exts.iter().zip(&samples) {
        println!(
            "{tag} {label} {} {:.1} {:.1} {:.1} {:.0}",
            s.took.len(),
            s.pct(50.0),
            s.pct(99.0),
            s.mean(),
            s.faults_per_call()
        );
    }
    Ok(host)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err(
            "usage: bench-languages TRUST DATA LABEL=BUNDLE... [--warm LABEL=BUNDLE...]".into(),
        );
    }
    let trust = TrustBundle::read_file(Path::new(&args[0]))?;
    let data = PathBuf::from(&args[1]);
    let mut exts: Vec<(String, PathBuf)> = Vec::new();
    let mut warm: Vec<(String, PathBuf)> = Vec::new();
    let mut into_warm = false;
    for a in &args[2..] {
        if a == "--warm" {
            into_warm = true;
            continue;
        }
        let (l, p) = a.split_once('=').ok_or("each extension is LABEL=BUNDLE")?;
        let list = if into_warm { &mut warm } else { &mut exts };
        list.push((l.to_string(), PathBuf::from(p)));
    }
    let calls = env_usize("BENCH_CALLS", 2000);
    let warmup = env_usize("BENCH_WARMUP", 200);
    let raw_calls = env_usize("BENCH_RAW_CALLS", 500);
    let warm_calls = env_usize("BENCH_WARM_CALLS", 1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // The embedding API, as an embedder making one call at a time would use it: a fresh
    // instance per call (the default), then instances kept between calls.
    let host = in_process(
        &rt,
        &trust,
        &data,
        Policy::default(),
        &exts,
        "inproc",
        calls,
        warmup,
    )?;
    if !warm.is_empty() {
        let policy = Policy::parse(&format!(
            "[policy.component]\nwarm_calls = {warm_calls}\nwarm_extensions = [\"*\"]\n"
        ))?;
        in_process(&rt, &trust, &data, policy, &warm, "inwarm", calls, warmup)?;
    }
    let policy_max_memory = host.policy().ceiling.max_memory.bytes();
    drop(host);

    // What the components are made of.
    let mut wasms = Vec::new();
    for (label, bundle) in &exts {
        let b = Bundle::read_file(bundle, &BundleLimits::default())?;
        let wasm = b.entry().to_vec();
        describe(label, &wasm);
        wasms.push(wasm);
    }

    if raw_calls == 0 {
        return Ok(());
    }
    // Raw Wasmtime with the host's engine settings (the same fingerprint, so the same cache
    // entries): Store, instantiate, the handler, the Store's drop, each timed.
    let cfg = RuntimeConfig {
        max_memory: policy_max_memory,
        ..RuntimeConfig::default()
    };
    let mut config = engine_config(&cfg)?;
    let kib = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map(|k| k << 10)
    };
    let memory_kept = kib("BENCH_RAW_MEMORY_KEEP_KIB");
    let table_kept = kib("BENCH_RAW_TABLE_KEEP_KIB");
    let stack_kept = kib("BENCH_RAW_STACK_KEEP_KIB");
    if memory_kept.is_some() || table_kept.is_some() || stack_kept.is_some() {
        // What if: the pool of `engine_config` (its limits, for a few instances) keeping more
        // of each memory, table or async stack resident between instances (warden: 2 MiB,
        // 64 KiB, none). Not in the engine's fingerprint: the same cache entries load.
        let (memory, table, stack) = (
            memory_kept.unwrap_or(2 << 20),
            table_kept.unwrap_or(64 << 10),
            stack_kept.unwrap_or(0),
        );
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(8)
            .total_core_instances(8 * 32)
            .total_memories(8 * 4)
            .total_tables(8 * 16)
            .total_stacks(8)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(usize::try_from(policy_max_memory).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(memory)
            .table_keep_resident(table)
            .async_stack_keep_resident(stack)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(pool);
        println!(
            "whatif kept resident: memory {} KiB, table {} KiB, async stack {} KiB",
            memory >> 10,
            table >> 10,
            stack >> 10
        );
    }
    let engine = Engine::new(&config)?;
    let mut linker = Linker::<RawState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let mut raws = Vec::new();
    for ((label, _), wasm) in exts.iter().zip(&wasms) {
        let component = match cached_component(&engine, &data, wasm) {
            Ok(c) => c,
            Err(e) => {
                println!("rawskip {label} {e}");
                continue;
            }
        };
        let pre = match linker
            .instantiate_pre(&component)
            .map_err(|e| e.to_string())
            .and_then(|p| ProxyPre::new(p).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => {
                println!("rawskip {label} linking: {}", e.replace('\n', " "));
                continue;
            }
        };
        raws.push(Raw {
            label: label.clone(),
            engine: engine.clone(),
            pre,
        });
    }
    let mut raw_samples: Vec<RawSamples> = raws.iter().map(|_| RawSamples::default()).collect();
    rt.block_on(async {
        let mut scratch = RawSamples::default();
        for round in 0..(warmup / 2).div_ceil(BLOCK) {
            for i in 0..raws.len() {
                let i = (i + round) % raws.len();
                for _ in 0..BLOCK {
                    raws[i].call(&mut scratch).await?;
                }
            }
        }
        for round in 0..raw_calls.div_ceil(BLOCK) {
            let n = BLOCK.min(raw_calls - round * BLOCK);
            for i in 0..raws.len() {
                let i = (i + round) % raws.len();
                let f0 = minflt();
                for _ in 0..n {
                    raws[i].call(&mut raw_samples[i]).await?;
                }
                raw_samples[i].faults += minflt() - f0;
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    for (r, s) in raws.iter().zip(&raw_samples) {
        println!(
            "raw {} {} {:.1} {:.1} {:.1} {:.1} {:.1} {:.1} {:.0}",
            r.label,
            s.total.len(),
            pct(&s.store, 50.0),
            pct(&s.inst, 50.0),
            pct(&s.handle, 50.0),
            pct(&s.drop, 50.0),
            pct(&s.total, 50.0),
            pct(&s.total, 99.0),
            s.faults as f64 / s.total.len().max(1) as f64
        );
    }
    Ok(())
}
