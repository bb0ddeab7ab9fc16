//! The Wasmtime engine: the safety settings (`settings`) asserted at start, the epoch
//! ticker it owns, the linker, and compilation (checked first by `precheck`, run on a
//! bounded pool, kept on disk by `warden-codecache` under a MAC, keyed by the component's sha256
//! and the engine's fingerprint).
//!
//! One engine serves the process for one configuration: [`Runtime::new`] with settings equal
//! to those of a live runtime shares that runtime's engine, epoch ticker, linker and compile
//! pool (so two hosts in one process do not reserve two pools or run two tickers); different
//! settings (another memory ceiling or cache folder) need, and get, an engine of their own.
//! Sharing is sound because nothing of a call lives in the engine: every call has its own
//! Store, and its deadline is a wall-clock instant of its own that the Store's epoch callback
//! checks at each tick, with one ticker per engine advancing the epoch (never two tickers on
//! one engine, which would halve the tick).
//!
//! Loading a component ([`Runtime::prepare`]) looks in the code cache first: an entry whose MAC
//! matches is loaded without reading the component's bytes again (its world is read off the
//! compiled component's exports by the pre-compile check's rule). Otherwise the component is
//! checked and compiled (in the compile child when isolation is configured, which hands back
//! the compiled code; else here), and the code is stored, replacing any entry that was
//! rejected. A rejected entry is logged (`tracing`), counted ([`Runtime::code_stats`]) and
//! reported on the [`Prepared`] ([`Prepared::code_source`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use warden_bundle::{Bundle, ContentHash};
use warden_codecache::{CodeCache, Key, Lookup};
use warden_trust::Verified;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::RpcExtensionPre;
use crate::code::{CacheRejection, CodeSource, CodeStats, Counters};
use crate::error::LoadError;
use crate::prepared::{Prepared, World};
use crate::settings::{
    MAX_WASM_STACK, MEMORY_GUARD, MEMORY_RESERVATION, RuntimeConfig, engine_config,
};
use crate::state::CallState;
use crate::world::WorldKind;

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
            .map_err(|e| LoadError::engine("starting the epoch thread", e))?;
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

/// What the safety of running untrusted code rests on, read back from a built engine: empty
/// when all is as `engine_config` sets it, else one line per setting that is not.
pub(crate) fn unsafe_settings(engine: &Engine, cfg: &RuntimeConfig) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut want = |ok: bool, what: String| {
        if !ok {
            wrong.push(what);
        }
    };
    want(
        engine.get_signals_based_traps(),
        "signals-based traps are off".into(),
    );
    want(
        engine.get_memory_guard_size() >= MEMORY_GUARD,
        format!(
            "memory guard is {} bytes, less than {MEMORY_GUARD}",
            engine.get_memory_guard_size()
        ),
    );
    want(
        engine.get_guard_before_linear_memory(),
        "no guard before linear memories".into(),
    );
    want(
        engine.get_memory_reservation() >= MEMORY_RESERVATION,
        format!(
            "memory reservation is {} bytes, less than {MEMORY_RESERVATION}",
            engine.get_memory_reservation()
        ),
    );
    want(
        engine.get_epoch_interruption(),
        "epoch interruption (time limits) is off".into(),
    );
    want(engine.get_consume_fuel(), "fuel is off".into());
    want(
        (1..=MAX_WASM_STACK).contains(&engine.get_max_wasm_stack()),
        format!(
            "wasm stack limit is {} bytes, not in 1..={MAX_WASM_STACK}",
            engine.get_max_wasm_stack()
        ),
    );
    match engine.get_pooling_config() {
        None => want(false, "the pooling allocator is off".into()),
        Some(p) => want(
            u64::try_from(p.get_max_memory_size()).ok() == Some(cfg.max_memory),
            format!(
                "the pool's memory limit is {} bytes, not max_memory {}",
                p.get_max_memory_size(),
                cfg.max_memory
            ),
        ),
    }
    wrong
}

/// Where compiles run: at most `max` at once (a load beyond waits its turn), on a thread pool
/// of their own, so Wasmtime's parallel compilation cannot take the cores calls run on. The
/// wait is bounded too: at most [`MAX_WAITING_COMPILES`] loads wait, each at most `max_wait`
/// (the compile's own time limit); past either the load is refused as busy, to be tried again,
/// instead of queueing without end behind a flood of publishes.
struct Compiler {
    threads: rayon::ThreadPool,
    max: usize,
    max_wait: Duration,
    running: Mutex<Queue>,
    freed: Condvar,
}

#[derive(Default)]
struct Queue {
    running: usize,
    waiting: usize,
}

/// Loads that may wait for a compile slot at once.
const MAX_WAITING_COMPILES: usize = 8;
/// How long a load waits for a compile slot without `[policy.compile] max_time`.
const DEFAULT_COMPILE_WAIT: Duration = Duration::from_secs(120);

impl Compiler {
    fn new(cfg: &RuntimeConfig) -> Result<Compiler, LoadError> {
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.compile_threads.max(1))
            .thread_name(|i| format!("warden-compile-{i}"))
            .build()
            .map_err(|e| LoadError::engine("starting the compile threads", e))?;
        Ok(Compiler {
            threads,
            max: cfg.max_concurrent_compiles.max(1),
            max_wait: cfg
                .isolation
                .as_ref()
                .map_or(DEFAULT_COMPILE_WAIT, |i| i.max_time),
            running: Mutex::new(Queue::default()),
            freed: Condvar::new(),
        })
    }

    /// Runs `compile` once a slot is free, on the compile threads; refused as busy when too
    /// many wait or none frees in time.
    fn run<T: Send>(
        &self,
        compile: impl FnOnce() -> Result<T, LoadError> + Send,
    ) -> Result<T, LoadError> {
        let _slot = self.slot()?;
        self.threads.install(compile)
    }

    fn slot(&self) -> Result<Slot<'_>, LoadError> {
        // The counts stay right whatever panicked while the lock was held.
        let mut q = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if q.running >= self.max {
            if q.waiting >= MAX_WAITING_COMPILES {
                return Err(LoadError::CompileBusy(format!(
                    "{} compiles are running and {} more waiting",
                    q.running, q.waiting
                )));
            }
            q.waiting += 1;
            let deadline = Instant::now() + self.max_wait;
            while q.running >= self.max {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    q.waiting -= 1;
                    return Err(LoadError::CompileBusy(format!(
                        "no compile slot came free within {:?}",
                        self.max_wait
                    )));
                }
                q = self
                    .freed
                    .wait_timeout(q, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            q.waiting -= 1;
        }
        q.running += 1;
        Ok(Slot(self))
    }
}

/// A compile slot, given back when dropped (also when the compile panics).
struct Slot<'a>(&'a Compiler);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut q = self
            .0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        q.running = q.running.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// The engine's pool of instances: how many are live, out of how many it can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Component instances live.
    pub instances: u64,
    /// Component instances the pool can hold.
    pub capacity: u64,
    /// Extism plug-in instances live (each a core instance of the same pool).
    pub plugins: u64,
}

/// The engine and what belongs to it: shared by every runtime with the same settings.
struct Shared {
    config: RuntimeConfig,
    engine: Engine,
    linker: Linker<CallState>,
    /// The linkers of Extism plug-ins (`crate::extism`): `extism:host/env` only, and with
    /// WASI preview 1.
    extism_linker: wasmtime::Linker<crate::extism::state::ExtismState>,
    extism_wasi_linker: wasmtime::Linker<crate::extism::state::ExtismState>,
    compiler: Compiler,
    /// Compiled code kept under a MAC (in memory only without a cache folder).
    code: CodeCache,
    counters: Counters,
    /// Extism plug-in instances live now (`Runtime::plugin_instance`).
    plugins: Arc<AtomicU64>,
    /// Component instances kept idle between calls now (`Runtime::idle_slot`).
    idle: Arc<AtomicU64>,
    /// Components this engine refused (by the bundle's content hash), and why: a refused
    /// compile is not paid again, however often the same bundle is loaded.
    refused: Mutex<HashMap<ContentHash, Arc<str>>>,
    _ticker: EpochTicker,
}

/// One live plug-in instance, counted in [`PoolUsage::plugins`] while held.
pub(crate) struct LiveInstance(Arc<AtomicU64>);

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One component instance kept idle between calls (`crate::warm`), counted while held: in
/// the engine's count and in its group's (its tenant's).
pub(crate) struct IdleSlot(Arc<AtomicU64>, Arc<AtomicU64>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes one of `count`'s `cap` places, if one is free.
fn take_place(count: &AtomicU64, cap: u64) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

/// Refusals remembered per engine; the memory is cleared when full (a bundle refused then is
/// checked, and perhaps compiled, once more).
const MAX_REFUSED: usize = 4096;

impl Shared {
    fn new(cfg: &RuntimeConfig) -> Result<Shared, LoadError> {
        let engine = Engine::new(&engine_config(cfg)?)
            .map_err(|e| LoadError::wasmtime("creating the engine", e))?;
        let wrong = unsafe_settings(&engine, cfg);
        if !wrong.is_empty() {
            return Err(LoadError::Engine {
                what: format!("the engine is not configured safely: {}", wrong.join("; ")),
                source: None,
            });
        }
        let linker = linker(&engine)?;
        let extism_linker = crate::extism::abi::linker(&engine, false)?;
        let extism_wasi_linker = crate::extism::abi::linker(&engine, true)?;
        let compiler = Compiler::new(cfg)?;
        let code = match &cfg.code_cache {
            Some(files) => {
                let key = Key::load_or_create(&files.key_file).map_err(|e| {
                    LoadError::engine(
                        format!("the compile cache key {}", files.key_file.display()),
                        e,
                    )
                })?;
                CodeCache::open(&files.dir, key).map_err(|e| {
                    LoadError::engine(format!("the compile cache in {}", files.dir.display()), e)
                })?
            }
            None => CodeCache::in_memory(),
        };
        let ticker = EpochTicker::start(&engine, cfg.epoch_tick)?;
        Ok(Shared {
            config: cfg.clone(),
            engine,
            linker,
            extism_linker,
            extism_wasi_linker,
            compiler,
            code,
            counters: Counters::default(),
            plugins: Arc::default(),
            idle: Arc::default(),
            refused: Mutex::new(HashMap::new()),
            _ticker: ticker,
        })
    }
}

/// The live engines of this process, by their settings (dead entries are pruned on use).
static ENGINES: Mutex<Vec<(RuntimeConfig, Weak<Shared>)>> = Mutex::new(Vec::new());

/// The engine, its ticker, linker and compile pool. Cheap to share behind an `Arc`; runtimes
/// made with equal settings share one engine.
pub struct Runtime {
    shared: Arc<Shared>,
}

impl Runtime {
    /// The runtime for `cfg`: the live engine for these settings, or a new one whose safety
    /// settings are checked before it is used.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, LoadError> {
        // Only weak references live in the list, so a panic elsewhere cannot leave it wrong.
        let mut engines = ENGINES.lock().unwrap_or_else(PoisonError::into_inner);
        engines.retain(|(_, w)| w.strong_count() > 0);
        if let Some(shared) = engines
            .iter()
            .find(|(c, _)| *c == cfg)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(Runtime { shared });
        }
        let shared = Arc::new(Shared::new(&cfg)?);
        engines.push((cfg, Arc::downgrade(&shared)));
        Ok(Runtime { shared })
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub(crate) fn extism_linker(&self) -> &wasmtime::Linker<crate::extism::state::ExtismState> {
        &self.shared.extism_linker
    }

    pub(crate) fn extism_wasi_linker(
        &self,
    ) -> &wasmtime::Linker<crate::extism::state::ExtismState> {
        &self.shared.extism_wasi_linker
    }

    /// How full the engine's instance pool is now.
    pub fn pool_usage(&self) -> PoolUsage {
        let live = self
            .shared
            .engine
            .pooling_allocator_metrics()
            .map_or(0, |m| m.component_instances());
        PoolUsage {
            instances: live,
            capacity: u64::from(self.shared.config.max_instances.max(1)),
            plugins: self.shared.plugins.load(Ordering::Relaxed),
        }
    }

    /// A slot for one more idle kept instance, while they hold less than a quarter of the
    /// pool (at least one) and `group`'s (its tenant's) hold less than a sixteenth (at least
    /// one), so that one tenant cannot take every place; `None` past that, and the instance is
    /// dropped instead.
    pub(crate) fn idle_slot(&self, group: &Arc<AtomicU64>) -> Option<IdleSlot> {
        let pool = u64::from(self.shared.config.max_instances);
        let idle = &self.shared.idle;
        if !take_place(idle, (pool / 4).max(1)) {
            return None;
        }
        if !take_place(group, (pool / 16).max(1)) {
            idle.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(IdleSlot(Arc::clone(idle), Arc::clone(group)))
    }

    /// Counts one plug-in instance live until the guard is dropped.
    pub(crate) fn plugin_instance(&self) -> LiveInstance {
        self.shared.plugins.fetch_add(1, Ordering::Relaxed);
        LiveInstance(Arc::clone(&self.shared.plugins))
    }

    /// What this engine's loads did with compiled code so far (compiles, cache hits,
    /// rejected entries, stores).
    pub fn code_stats(&self) -> CodeStats {
        self.shared.counters.get()
    }

    /// Loads a verified bundle's component from the code cache, or checks it (without
    /// compiling: the `precheck` module) and compiles it on the compile pool, and pre-links it
    /// for its world. Only verified bytes reach the compiler, and only code compiled from them
    /// by this host, under its MAC, is loaded from the cache.
    /// CPU-heavy on a cache miss, and waits while `max_concurrent_compiles` others run: call
    /// it off the async executor.
    ///
    /// A refusal is remembered by the bundle's content hash: loading the same bundle again is
    /// refused at once ([`LoadError::Refused`]), so a component that costs a long compile and
    /// then fails is not compiled again and again.
    pub fn prepare(&self, bundle: &Verified<Bundle>) -> Result<Prepared, LoadError> {
        self.remembering(bundle, || self.prepare_once(bundle))
    }

    /// Runs `load` for `bundle` unless this engine refused it before; remembers a refusal
    /// that is about the bundle's code (see [`Runtime::prepare`]).
    pub(crate) fn remembering<T>(
        &self,
        bundle: &Verified<Bundle>,
        load: impl FnOnce() -> Result<T, LoadError>,
    ) -> Result<T, LoadError> {
        let hash = bundle.content_hash();
        let known = self
            .shared
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .cloned();
        if let Some(reason) = known {
            return Err(LoadError::Refused { reason });
        }
        let result = load();
        if let Err(e) = &result
            && e.is_about_the_component()
        {
            let mut refused = self
                .shared
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if refused.len() >= MAX_REFUSED {
                refused.clear();
            }
            refused.insert(hash, Arc::from(warden_call::text::chain(e)));
        }
        result
    }

    fn prepare_once(&self, bundle: &Verified<Bundle>) -> Result<Prepared, LoadError> {
        if bundle.manifest().extension.kind == warden_manifest::Kind::Extism {
            let (plugin, source) = self.prepare_extism(bundle)?;
            return Ok(Prepared::new(
                World::Extism(Box::new(plugin)),
                source,
                false,
            ));
        }
        // Compiled code is keyed by the component's own hash, not the bundle's: bundles that
        // differ only in their manifest share one entry.
        let bytes = bundle.entry();
        let (kind, component, source) = self.component(ContentHash::of(bytes).as_bytes(), bytes)?;
        let pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports(e.into_boxed_dyn_error()))?;
        let sends_http = component
            .component_type()
            .imports(self.engine())
            .any(|(name, _)| name.starts_with("wasi:http/outgoing-handler@"));
        let exports = |e: wasmtime::Error| LoadError::Exports(e.into_boxed_dyn_error());
        let world = match kind {
            WorldKind::Rpc => World::Rpc(RpcExtensionPre::new(pre).map_err(exports)?),
            WorldKind::Http => World::Http(ProxyPre::new(pre).map_err(exports)?),
        };
        Ok(Prepared::new(world, source, sends_http))
    }

    /// The compiled component for `bytes` (whose sha256 is `hash`) and its world: from the code
    /// cache if it holds a valid entry, else compiled and stored.
    fn component(
        &self,
        hash: &[u8; 32],
        bytes: &[u8],
    ) -> Result<(WorldKind, Component, CodeSource), LoadError> {
        let shared = &self.shared;
        let rejected = match self.cached(shared.code.load(&shared.engine, hash)) {
            Ok(component) => match crate::code::world_of(&component, &shared.engine) {
                Some(kind) => {
                    shared.counters.hit();
                    return Ok((kind, component, CodeSource::Cache));
                }
                // Not for an entry this host stored (the check decided a world before it was
                // compiled): compiled again, the check then says what is wrong.
                None => None,
            },
            Err(rejected) => rejected,
        };
        let (kind, component) = self.compile(hash, bytes)?;
        Ok((kind, component, CodeSource::Compiled { rejected }))
    }

    /// The compiled core module (an Extism plug-in, already checked by `check` in this
    /// process or the compile child) for `bytes`, whose sha256 is `hash`: from the code cache
    /// if it holds a valid entry, else checked, compiled (in the compile child when isolation
    /// is configured) and stored.
    pub(crate) fn module(
        &self,
        hash: &[u8; 32],
        bytes: &[u8],
        check: fn(&[u8]) -> Result<(), LoadError>,
    ) -> Result<(wasmtime::Module, CodeSource), LoadError> {
        let shared = &self.shared;
        let rejected = match self.cached(shared.code.load_module(&shared.engine, hash)) {
            Ok(module) => {
                shared.counters.hit();
                return Ok((module, CodeSource::Cache));
            }
            Err(rejected) => rejected,
        };
        let compile_here = || {
            let module = wasmtime::Module::new(&shared.engine, bytes)
                .map_err(|e| LoadError::Compile(e.into_boxed_dyn_error()))?;
            shared.counters.compiled();
            if shared.code.dir().is_some() {
                match module.serialize() {
                    Ok(code) => self.stored(shared.code.store_module(&shared.engine, hash, &code)),
                    Err(e) => {
                        shared.counters.stored(false);
                        tracing::warn!("serializing a compiled module for the cache: {e:#}");
                    }
                }
            }
            Ok::<_, LoadError>(module)
        };
        let source = CodeSource::Compiled { rejected };
        let Some(iso) = &shared.config.isolation else {
            let module = shared.compiler.run(|| {
                check(bytes)?;
                compile_here()
            })?;
            return Ok((module, source));
        };
        let (compiled, code) = shared
            .compiler
            .run(|| crate::isolate::compile(iso, &shared.config, bytes, true))?;
        if compiled != crate::isolate::Compiled::Module {
            return Err(LoadError::Engine {
                what: "the compile process compiled a component, not a module".into(),
                source: None,
            });
        }
        shared.counters.compiled();
        let admitted = shared.code.admit_module(&shared.engine, hash, code);
        self.stored(admitted.stored);
        match admitted.component {
            Ok(module) => Ok((module, source)),
            Err(reason) => {
                tracing::warn!(
                    "the compile process's code for this module did not load ({reason}); compiling it here"
                );
                Ok((shared.compiler.run(compile_here)?, source))
            }
        }
    }

    /// A code cache lookup's entry, or what the cache held that was not loaded (logged and
    /// counted).
    fn cached<T>(&self, lookup: Lookup<T>) -> Result<T, Option<CacheRejection>> {
        match lookup {
            Lookup::Hit(code) => Ok(code),
            Lookup::Miss => Err(None),
            Lookup::Rejected(r) => {
                self.shared.counters.rejected();
                if r.reason.is_tampering() {
                    tracing::error!("{r}; compiling it again");
                } else {
                    tracing::warn!("{r}; compiling it again");
                }
                Err(Some(CacheRejection::from(&r)))
            }
        }
    }

    /// Checks and compiles `bytes`, in the compile child when isolation is configured, and
    /// stores the compiled code.
    fn compile(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(WorldKind, Component), LoadError> {
        let shared = &self.shared;
        let Some(iso) = &shared.config.isolation else {
            let (kind, component) = shared.compiler.run(|| {
                let kind = crate::precheck::check(bytes)?;
                Ok::<_, LoadError>((kind, self.compile_here(bytes)?))
            })?;
            self.keep(hash, &component);
            return Ok((kind, component));
        };
        // The child checks (validation can be as costly as a compile) and compiles; this
        // process seals its code with the cache's MAC and loads it from memory.
        let (compiled, code) = shared
            .compiler
            .run(|| crate::isolate::compile(iso, &shared.config, bytes, false))?;
        let crate::isolate::Compiled::Component(kind) = compiled else {
            return Err(LoadError::Engine {
                what: "the compile process compiled a module, not a component".into(),
                source: None,
            });
        };
        shared.counters.compiled();
        let admitted = shared.code.admit(&shared.engine, hash, code);
        self.stored(admitted.stored);
        match admitted.component {
            Ok(component) => Ok((kind, component)),
            Err(reason) => {
                // Code from an engine of the same settings should load; if not, compile here:
                // the child has just shown that this compile ends within the limits.
                tracing::warn!(
                    "the compile process's code for this component did not load ({reason}); compiling it here"
                );
                let component = shared.compiler.run(|| self.compile_here(bytes))?;
                self.keep(hash, &component);
                Ok((kind, component))
            }
        }
    }

    fn compile_here(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        let component = Component::new(&self.shared.engine, bytes)
            .map_err(|e| LoadError::Compile(e.into_boxed_dyn_error()))?;
        self.shared.counters.compiled();
        Ok(component)
    }

    /// Stores what was compiled in this process (if the runtime has a cache folder).
    fn keep(&self, hash: &[u8; 32], component: &Component) {
        let shared = &self.shared;
        if shared.code.dir().is_none() {
            return;
        }
        match component.serialize() {
            Ok(code) => self.stored(shared.code.store(&shared.engine, hash, &code)),
            Err(e) => {
                shared.counters.stored(false);
                tracing::warn!("serializing a compiled component for the cache: {e:#}");
            }
        }
    }

    fn stored(&self, result: Result<Option<std::path::PathBuf>, warden_codecache::CacheError>) {
        match result {
            Ok(Some(_)) => self.shared.counters.stored(true),
            Ok(None) => {}
            Err(e) => {
                self.shared.counters.stored(false);
                tracing::warn!("storing compiled code in the cache: {e}");
            }
        }
    }
}

/// Every interface a standard component may import is linked; what is not granted denies at
/// call time (no sockets, no preopens, outgoing HTTP and `invoke` denied), so standard
/// toolchains' components load and get typed errors instead of failing to link.
fn linker(engine: &Engine) -> Result<Linker<CallState>, LoadError> {
    let err = |e: wasmtime::Error| LoadError::wasmtime("linking the host interfaces", e);
    let mut l = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut l).map_err(err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut l).map_err(err)?;
    // Shadowing Wasmtime's own: checked name lookups and sockets, audited file system calls,
    // the egress allowlist in front of `outgoing-handler`.
    crate::sockets::add_to_linker(&mut l, CallState::sockets_view).map_err(err)?;
    crate::fs::add_to_linker(&mut l).map_err(err)?;
    crate::egress::handler::add_to_linker(&mut l).map_err(err)?;
    crate::headers::add_to_linker(&mut l).map_err(err)?;
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

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use warden_bundle::BundleLimits;
    use warden_bundle::ustar::ArchiveWriter;
    use warden_trust::{Envelope, SigningKey, TrustBundle, publisher_entry, sign, verify};

    use super::*;
    use wasmtime::Config;

    /// A signed, verified bundle made in memory around `wasm`: an rpc manifest (method `call`)
    /// when `rpc`, else an http one.
    pub(crate) fn verified(wasm: &[u8], rpc: bool) -> Verified<Bundle> {
        let shape = if rpc {
            "[[methods]]\nname = \"call\"\n"
        } else {
            "[[endpoints]]\nmethod = \"GET\"\npath = \"/{*rest}\"\n"
        };
        let manifest = format!(
            "schema = 1\n\n[extension]\nid = \"test.precheck\"\nversion = \"0.1.0\"\n\
             publisher = \"warden-tests\"\nkind = \"component\"\nentry = \"extension.wasm\"\n\n\
             {shape}"
        );
        let mut w = ArchiveWriter::new();
        let mode = warden_bundle::Mode::Regular;
        w.add_file(
            &"extension.toml".parse().unwrap(),
            mode,
            manifest.as_bytes(),
        )
        .unwrap();
        w.add_file(&"extension.wasm".parse().unwrap(), mode, wasm)
            .unwrap();
        let bundle = Bundle::from_bytes(w.finish(), &BundleLimits::default()).unwrap();
        let key = SigningKey::generate();
        let envelope: Envelope = sign(&bundle, &key, None).unwrap();
        let trust = TrustBundle::parse(&publisher_entry(
            &"warden-tests".parse().unwrap(),
            &key.public_key(),
        ))
        .unwrap();
        verify(bundle, &envelope, &trust).unwrap()
    }

    fn guest(path: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        std::fs::read(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-examples.sh)", p.display()))
    }

    #[test]
    fn equal_settings_share_one_engine() {
        let cfg = RuntimeConfig {
            max_instances: 3,
            ..RuntimeConfig::default()
        };
        let a = Runtime::new(cfg.clone()).unwrap();
        let b = Runtime::new(cfg.clone()).unwrap();
        assert!(Engine::same(a.engine(), b.engine()));
        // One engine, so one ticker and one compile pool.
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        let other = Runtime::new(RuntimeConfig {
            max_memory: 64 << 20,
            ..cfg.clone()
        })
        .unwrap();
        assert!(!Engine::same(a.engine(), other.engine()));
        // Once every runtime of these settings is gone, the engine goes with them.
        let weak = Arc::downgrade(&a.shared);
        drop((a, b));
        assert_eq!(weak.strong_count(), 0);
        let again = Runtime::new(cfg).unwrap();
        assert!(!Arc::ptr_eq(&again.shared, &other.shared));
    }

    #[test]
    fn the_engine_has_the_safety_settings() {
        let cfg = RuntimeConfig::default();
        let rt = Runtime::new(cfg.clone()).unwrap();
        let e = rt.engine();
        assert!(e.get_signals_based_traps());
        assert_eq!(e.get_memory_guard_size(), MEMORY_GUARD);
        assert!(e.get_guard_before_linear_memory());
        assert_eq!(e.get_memory_reservation(), MEMORY_RESERVATION);
        assert!(e.get_epoch_interruption());
        assert!(e.get_consume_fuel());
        assert_eq!(e.get_max_wasm_stack(), MAX_WASM_STACK);
        assert!(e.get_parallel_compilation());
        let pool = e.get_pooling_config().unwrap();
        assert_eq!(pool.get_max_memory_size() as u64, cfg.max_memory);
        assert!(unsafe_settings(e, &cfg).is_empty());
    }

    #[test]
    fn an_engine_without_them_is_refused() {
        let cfg = RuntimeConfig::default();
        let weakened = |change: fn(&mut Config)| {
            let mut c = engine_config(&cfg).unwrap();
            change(&mut c);
            unsafe_settings(&Engine::new(&c).unwrap(), &cfg).join("; ")
        };
        let no_signals = weakened(|c| {
            c.signals_based_traps(false);
        });
        assert!(no_signals.contains("signals-based traps"), "{no_signals}");
        let no_guard = weakened(|c| {
            c.memory_guard_size(0);
        });
        assert!(no_guard.contains("memory guard"), "{no_guard}");
        let no_guard_before = weakened(|c| {
            c.guard_before_linear_memory(false);
        });
        assert!(
            no_guard_before.contains("guard before"),
            "{no_guard_before}"
        );
        let no_epochs = weakened(|c| {
            c.epoch_interruption(false);
        });
        assert!(no_epochs.contains("epoch"), "{no_epochs}");
        let no_fuel = weakened(|c| {
            c.consume_fuel(false);
        });
        assert!(no_fuel.contains("fuel"), "{no_fuel}");
        let on_demand = weakened(|c| {
            c.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
        });
        assert!(on_demand.contains("pooling"), "{on_demand}");
    }

    #[test]
    fn compiles_run_one_at_a_time_on_their_own_threads() {
        let compiler = Compiler::new(&RuntimeConfig {
            max_concurrent_compiles: 1,
            compile_threads: 2,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    compiler
                        .run(|| {
                            let name = std::thread::current().name().map(str::to_owned);
                            assert!(name.unwrap().starts_with("warden-compile-"));
                            // Wasmtime's parallel compilation sees this pool, not the global one.
                            assert_eq!(rayon::current_num_threads(), 2);
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap()
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn kept_instances_hold_a_quarter_of_the_pool_and_one_tenant_a_sixteenth() {
        let rt = Runtime::new(RuntimeConfig {
            max_instances: 32,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let (a, b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        // A sixteenth of 32: two per tenant.
        let a1 = rt.idle_slot(&a).unwrap();
        let _a2 = rt.idle_slot(&a).unwrap();
        assert!(rt.idle_slot(&a).is_none(), "one tenant took a third place");
        // A quarter of 32: eight in all (other tenants' groups here).
        let groups: Vec<_> = (0..6).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let others: Vec<_> = groups.iter().map(|g| rt.idle_slot(g).unwrap()).collect();
        assert!(rt.idle_slot(&b).is_none(), "past a quarter of the pool");
        assert_eq!(
            b.load(Ordering::Relaxed),
            0,
            "a refused place is given back"
        );
        drop(a1);
        let _b1 = rt.idle_slot(&b).unwrap();
        drop(others);
        assert_eq!(a.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn loads_wait_for_a_compile_slot_in_a_bounded_queue_and_for_a_bounded_time() {
        let compiler = Compiler::new(&RuntimeConfig {
            max_concurrent_compiles: 1,
            compile_threads: 1,
            isolation: Some(crate::settings::Isolation {
                program: "/nonexistent".into(),
                args: Vec::new(),
                max_time: Duration::from_millis(600),
                max_memory: 1 << 30,
            }),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let release = Mutex::new(release);
        let started = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            // One compile holds the only slot until told.
            s.spawn(|| {
                compiler
                    .run(|| {
                        started.wait();
                        let _ = release
                            .lock()
                            .unwrap()
                            .recv_timeout(Duration::from_secs(10));
                        Ok(())
                    })
                    .unwrap()
            });
            started.wait();
            let waiters: Vec<_> = (0..MAX_WAITING_COMPILES)
                .map(|_| s.spawn(|| compiler.run(|| Ok(()))))
                .collect();
            while compiler.running.lock().unwrap().waiting < MAX_WAITING_COMPILES {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The queue is full: refused at once.
            let t = Instant::now();
            let e = compiler.run(|| Ok(())).unwrap_err();
            assert!(matches!(e, LoadError::CompileBusy(_)), "{e}");
            assert!(t.elapsed() < Duration::from_millis(300));
            assert!(!e.is_about_the_component());
            // The waiters give up after the compile's time limit, with the slot still held.
            for w in waiters {
                let e = w.join().unwrap().unwrap_err();
                assert!(e.to_string().contains("no compile slot came free"), "{e}");
            }
            hold.send(()).unwrap();
        });
        // Free again: a load gets the slot.
        compiler.run(|| Ok(())).unwrap();
        assert_eq!(compiler.running.lock().unwrap().waiting, 0);
        assert_eq!(compiler.running.lock().unwrap().running, 0);
    }

    #[test]
    fn real_guests_are_prepared_for_the_world_they_export() {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let echo = verified(&guest("examples/echo/extension.wasm"), true);
        assert_eq!(rt.prepare(&echo).unwrap().kind(), WorldKind::Rpc);
        let hello = verified(&guest("examples/hello/extension.wasm"), false);
        assert_eq!(rt.prepare(&hello).unwrap().kind(), WorldKind::Http);
    }

    #[test]
    fn only_a_guest_that_can_send_gets_the_early_egress_check() {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let echo = verified(&guest("examples/echo/extension.wasm"), true);
        assert!(!rt.prepare(&echo).unwrap().sends_http);
        // Imports `wasi:http/outgoing-handler`: its calls need the check (`egress::handler`).
        let fetcher = verified(&guest("examples/fetcher/extension.wasm"), true);
        assert!(rt.prepare(&fetcher).unwrap().sends_http);
    }

    /// Red team, round 2: a failed compile was paid again at every load of the same bundle
    /// (and held the one compile slot each time). A refusal is now remembered.
    #[test]
    fn a_refused_bundle_is_not_compiled_again() {
        // Claims the rpc world but exports an empty instance: compiled, then refused at the
        // pre-link.
        let wasm = wat::parse_str(
            r#"(component
                (core module (func (result i32) i32.const 1))
                (instance $i)
                (export "warden:extension/handler@0.1.0" (instance $i)))"#,
        )
        .unwrap();
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let bundle = verified(&wasm, true);
        let first = rt.prepare(&bundle).err().unwrap();
        assert!(matches!(first, LoadError::Exports(_)), "{first}");
        let again = rt.prepare(&bundle).err().unwrap();
        match &again {
            LoadError::Refused { reason } => {
                assert!(reason.contains("exports do not match"), "{reason}")
            }
            other => panic!("expected Refused, got {other}"),
        }
        // Another runtime on the same engine settings knows it too; other bundles do not.
        let rt2 = Runtime::new(RuntimeConfig::default()).unwrap();
        assert!(matches!(
            rt2.prepare(&bundle),
            Err(LoadError::Refused { .. })
        ));
        let echo = verified(&guest("examples/echo/extension.wasm"), true);
        assert!(rt2.prepare(&echo).is_ok());
    }

    /// A runtime whose code cache is `DATA/cache` under `DATA/compile.key`.
    fn cached_runtime(data: &std::path::Path) -> Runtime {
        Runtime::new(RuntimeConfig {
            code_cache: Some(crate::settings::CodeCacheFiles {
                dir: data.join("cache"),
                key_file: data.join("compile.key"),
            }),
            ..RuntimeConfig::default()
        })
        .unwrap()
    }

    async fn echo(rt: &Runtime, prepared: &Prepared, input: &[u8]) -> Vec<u8> {
        let limits = warden_manifest::Profile::Standard.preset();
        prepared
            .call_rpc(
                rt,
                &limits,
                &crate::CallCaps::default(),
                None,
                "echo",
                input,
            )
            .await
            .result
            .unwrap()
    }

    /// The one entry in the cache folder.
    fn entry(data: &std::path::Path) -> std::path::PathBuf {
        let entries: Vec<_> = std::fs::read_dir(data.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.into_iter().next().unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_component_is_compiled_once_then_loaded_from_the_cache() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let data = t.path();
        let bundle = verified(&guest("examples/echo/extension.wasm"), true);
        let rt = cached_runtime(data);
        let first = rt.prepare(&bundle).unwrap();
        assert_eq!(
            first.code_source(),
            &CodeSource::Compiled { rejected: None }
        );
        let stats = rt.code_stats();
        assert_eq!((stats.compiled, stats.stored, stats.cache_hits), (1, 1, 0));
        let key = std::fs::metadata(data.join("compile.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        assert_eq!(key.len(), 32);
        let path = entry(data);
        let written = std::fs::read(&path).unwrap();
        // Loaded again: from the cache, nothing compiled.
        let second = rt.prepare(&bundle).unwrap();
        assert_eq!(second.code_source(), &CodeSource::Cache);
        assert_eq!(rt.code_stats().compiled, 1);
        assert_eq!(rt.code_stats().cache_hits, 1);
        assert_eq!(echo(&rt, &second, b"{\"a\":1}").await, b"{\"a\":1}");
        // A restart (a new engine on the same folder and key): a hit, no compile, no write.
        let weak = Arc::downgrade(&rt.shared);
        drop((first, second, rt));
        assert_eq!(weak.strong_count(), 0);
        let rt = cached_runtime(data);
        let again = rt.prepare(&bundle).unwrap();
        assert_eq!(again.code_source(), &CodeSource::Cache);
        assert_eq!(
            rt.code_stats(),
            CodeStats {
                cache_hits: 1,
                ..CodeStats::default()
            }
        );
        assert_eq!(echo(&rt, &again, b"[2]").await, b"[2]");
        assert_eq!(std::fs::read(entry(data)).unwrap(), written);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_tampered_entry_is_compiled_again_never_loaded_and_rewritten() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path();
        let bundle = verified(&guest("examples/echo/extension.wasm"), true);
        let rt = cached_runtime(data);
        rt.prepare(&bundle).unwrap();
        let path = entry(data);
        let genuine = std::fs::read(&path).unwrap();
        // One bit of the compiled code changed (past the 40-byte header).
        let mut tampered = genuine.clone();
        let at = genuine.len() / 2;
        tampered[at] ^= 0x10;
        std::fs::write(&path, &tampered).unwrap();
        let prepared = rt.prepare(&bundle).unwrap();
        match prepared.code_source() {
            CodeSource::Compiled {
                rejected: Some(r), ..
            } => {
                assert!(r.tampering, "{r:?}");
                assert!(r.message.contains("MAC does not match"), "{r:?}");
            }
            other => panic!("the tampered entry was not rejected: {other:?}"),
        }
        let stats = rt.code_stats();
        assert_eq!(
            (
                stats.compiled,
                stats.cache_rejected,
                stats.stored,
                stats.cache_hits
            ),
            (2, 1, 2, 0)
        );
        assert_eq!(echo(&rt, &prepared, b"\"ok\"").await, b"\"ok\"");
        // Rewritten with a valid MAC: the next load is a hit again.
        let rewritten = std::fs::read(entry(data)).unwrap();
        assert_ne!(rewritten, tampered);
        let next = rt.prepare(&bundle).unwrap();
        assert_eq!(next.code_source(), &CodeSource::Cache);
        assert_eq!(echo(&rt, &next, b"3").await, b"3");
        // A key that is not the one the entry was written under: rejected too.
        std::fs::remove_file(data.join("compile.key")).unwrap();
        let weak = Arc::downgrade(&rt.shared);
        drop((prepared, next, rt));
        assert_eq!(weak.strong_count(), 0);
        let rt = cached_runtime(data);
        let p = rt.prepare(&bundle).unwrap();
        assert!(
            matches!(p.code_source(), CodeSource::Compiled { rejected: Some(r) } if r.tampering),
            "{:?}",
            p.code_source()
        );
    }

    /// A component with no known export, or with a body that does not validate, is refused
    /// before it is compiled: the pre-compile pass validates every body, so a broken body
    /// under a known world's name is `NotComponent` (the compiler would have said `Compile`).
    #[test]
    fn no_known_world_is_refused_before_compiling() {
        // A component exporting `export` whose one function has a body that is not valid:
        // its `i32.const 1` becomes an unknown opcode after encoding.
        let component = |export: &str, broken: bool| {
            let mut wasm = wat::parse_str(format!(
                r#"(component
                    (core module (func (result i32) i32.const 1))
                    (instance $i)
                    (export "{export}" (instance $i)))"#
            ))
            .unwrap();
            if broken {
                let at = wasm.windows(2).position(|w| w == [0x41, 0x01]).unwrap();
                wasm[at] = 0xff;
            }
            wasm
        };
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let started = Instant::now();
        let e = rt
            .prepare(&verified(&component("wasi:cli/run@0.2.0", false), true))
            .err()
            .unwrap();
        assert!(
            matches!(&e, LoadError::NoKnownWorld { exports } if exports == "wasi:cli/run@0.2.0"),
            "{e}"
        );
        for export in ["wasi:cli/run@0.2.0", "wasi:http/incoming-handler@0.2.0"] {
            let e = rt
                .prepare(&verified(&component(export, true), false))
                .err()
                .unwrap();
            assert!(
                matches!(&e, LoadError::NotComponent(m) if m.contains("illegal opcode")),
                "{e}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
