//! The one Wasmtime engine of a process: configuration, the epoch ticker it owns, the linkers,
//! and compilation (cached on disk by Wasmtime, keyed by the bytes and the engine's settings).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use warden_bundle::Bundle;
use warden_trust::Verified;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::RpcExtensionPre;
use crate::error::LoadError;
use crate::state::CallState;

/// Engine-wide settings. Defaults are listed on each field.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest linear memory any extension may have: the operator's `max_memory` ceiling.
    /// Default 256 MiB (the `relaxed` preset).
    pub max_memory: u64,
    /// Component instances that may be alive at once across all extensions (pool size).
    /// Default 256. A call beyond this gets a `busy` error.
    pub max_instances: u32,
    /// Folder for compiled code, so a restart does not recompile. Default: none (in-memory only).
    /// Must not be writable by anyone but the operator: its contents are executed.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances: the granularity of time limits. Default 5 ms.
    pub epoch_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_memory: 256 << 20,
            max_instances: 256,
            cache_dir: None,
            epoch_tick: Duration::from_millis(5),
        }
    }
}

/// Core instances, memories and tables per component: a Rust wasip2 component uses a few of
/// each (the program, the WASI adapter, shims); these bound what a hostile one may declare.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 16;
/// Pages kept resident (zeroed with memset, not madvise) per slot: cheap reuse for small guests.
const KEEP_RESIDENT: usize = 64 << 10;

/// Advances the engine's epoch on a dedicated thread; stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: &Engine, tick: Duration) -> Result<Self, LoadError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| LoadError::Engine(format!("starting the epoch thread: {e}")))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds the engine configuration shared by the runtime and its benchmark baseline.
pub fn engine_config(cfg: &RuntimeConfig) -> Result<Config, LoadError> {
    let mut pool = PoolingAllocationConfig::new();
    let n = cfg.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT / 4))
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT / 2))
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT / 2))
        .total_stacks(n)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(usize::try_from(cfg.max_memory).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut c = Config::new();
    c.wasm_component_model(true)
        .allocation_strategy(pool)
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(true);
    if let Some(dir) = &cfg.cache_dir {
        // Wasmtime wants an absolute path; relative ones are taken from the current folder.
        let dir = std::path::absolute(dir)
            .map_err(|e| LoadError::Engine(format!("compile cache in {}: {e}", dir.display())))?;
        let mut cc = CacheConfig::new();
        cc.with_directory(&dir);
        let cache = Cache::new(cc)
            .map_err(|e| LoadError::Engine(format!("compile cache in {}: {e}", dir.display())))?;
        c.cache(Some(cache));
    }
    Ok(c)
}

/// The engine, its ticker and linkers. One per process; cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, LoadError> {
        let engine =
            Engine::new(&engine_config(&cfg)?).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let linker = linker(&engine)?;
        let ticker = EpochTicker::start(&engine, cfg.epoch_tick)?;
        Ok(Runtime {
            engine,
            linker,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) a verified bundle's component and pre-links it for
    /// its world. Only verified bytes reach the compiler and the on-disk cache.
    /// CPU-heavy on a cache miss: call it off the async executor.
    pub fn prepare(
        &self,
        bundle: &Verified<Bundle>,
    ) -> Result<crate::prepared::Prepared, LoadError> {
        let component = Component::new(&self.engine, bundle.entry())
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports_rpc = exports
            .iter()
            .any(|e| e.starts_with("warden:extension/handler@"));
        let exports_http = exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@"));
        let imports = |e: wasmtime::Error| LoadError::Imports(format!("{e:#}"));
        let exports = |e: wasmtime::Error| LoadError::Exports(format!("{e:#}"));
        let pre = || self.linker.instantiate_pre(&component).map_err(imports);
        let world = if exports_rpc {
            crate::prepared::World::Rpc(RpcExtensionPre::new(pre()?).map_err(exports)?)
        } else if exports_http {
            crate::prepared::World::Http(ProxyPre::new(pre()?).map_err(exports)?)
        } else {
            return Err(LoadError::NoKnownWorld);
        };
        Ok(crate::prepared::Prepared::new(world))
    }
}

/// Every interface a standard component may import is linked; what is not granted denies at
/// call time (no sockets, no preopens, outgoing HTTP and `invoke` denied), so standard
/// toolchains' components load and get typed errors instead of failing to link.
fn linker(engine: &Engine) -> Result<Linker<CallState>, LoadError> {
    let err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
    let mut l = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut l).map_err(err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut l).map_err(err)?;
    // Shadowing Wasmtime's own: checked name lookups and sockets, audited file system calls,
    // the egress allowlist in front of `outgoing-handler`.
    crate::sockets::add_to_linker(&mut l, CallState::sockets_view).map_err(err)?;
    crate::fs::add_to_linker(&mut l).map_err(err)?;
    crate::egress::handler::add_to_linker(&mut l).map_err(err)?;
    // warden's own host interfaces.
    crate::kv::add_to_linker(&mut l, CallState::kv_view).map_err(err)?;
    crate::config::add_to_linker(&mut l, CallState::secrets_view).map_err(err)?;
    crate::logging::add_to_linker(&mut l, CallState::logging_view).map_err(err)?;
    crate::bindings::warden::extension::types::add_to_linker::<_, HasSelf<CallState>>(
        &mut l,
        |s| s,
    )
    .map_err(err)?;
    crate::invoke::add_to_linker(&mut l, CallState::invoke_view).map_err(err)?;
    Ok(l)
}
