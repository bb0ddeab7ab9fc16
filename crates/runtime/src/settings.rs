//! The engine's settings: [`RuntimeConfig`] (what an embedder chooses, compile isolation
//! included), the safety constants, and the Wasmtime `Config` built from them. Shared by the
//! engine and the compile child (`isolate`), which must build the very same engine.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use wasmtime::{Config, PoolingAllocationConfig};

use crate::error::LoadError;

/// Engine-wide settings. Defaults are listed on each field. Runtimes made with equal settings
/// share one engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeConfig {
    /// Largest linear memory any extension may have: the operator's `max_memory` ceiling.
    /// Default 256 MiB (the `relaxed` preset).
    pub max_memory: u64,
    /// Component instances that may be alive at once across all extensions (pool size).
    /// Default 256. A call beyond this gets a `busy` error.
    pub max_instances: u32,
    /// Where compiled code is kept, so a restart does not recompile. Default: none (nothing
    /// is kept on disk). Entries carry a MAC under the key file: one that does not match is
    /// compiled again, never loaded (see `warden-codecache`).
    pub code_cache: Option<CodeCacheFiles>,
    /// How often the epoch advances: the granularity of time limits, and the longest a guest
    /// runs before it gives its turn of the CPU back (see `fair`). Default 1 ms.
    pub epoch_tick: Duration,
    /// Compiles that may run at once; a load beyond this waits for one to finish. Default 1:
    /// compiling a large real component (componentize-py's or componentize-js's hello, 13-18
    /// MB) holds 365-420 MiB for 14-47 s on 2 cores, so two at once double the memory without
    /// finishing sooner on the same compile threads.
    pub max_concurrent_compiles: usize,
    /// Threads that compile, shared by all compiles of the engine: Wasmtime's parallel
    /// compilation runs on these and no others, so a burst of loads leaves the other cores to
    /// calls. Default: half the cores, at least 1.
    pub compile_threads: usize,
    /// Compile in a child process with a hard bound on time and memory (see the `isolate`
    /// module). Default: none (compiles run in this process, bounded only by the pre-compile
    /// check's shape limits).
    pub isolation: Option<Isolation>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        RuntimeConfig {
            max_memory: 256 << 20,
            max_instances: 256,
            code_cache: None,
            epoch_tick: Duration::from_millis(1),
            max_concurrent_compiles: 1,
            compile_threads: (cores / 2).max(1),
            isolation: None,
        }
    }
}

/// The compile cache's folder (0700, created if missing) and its 32-byte key file (0600,
/// created atomically if missing): `DATA/cache` and `DATA/compile.key` for a host with a data
/// dir.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodeCacheFiles {
    pub dir: PathBuf,
    pub key_file: PathBuf,
}

/// Memories and tables per component: a Rust wasip2 component uses a few of each (the
/// program, the WASI adapter, shims); these bound what a hostile one may declare. Core
/// instances per component are the pre-compile check's limit (one number for both).
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 16;
/// Bytes at the start of each memory slot kept resident between instances: the pages a call
/// wrote there are reset in place (found with the kernel's PAGEMAP_SCAN where it has it,
/// Linux 6.7+; memset otherwise) instead of being unmapped and faulted in again by the next
/// instance. A Rust guest's stack (1 MiB) and data sit in the first 2 MiB. Worst case resident:
/// this times `max_instances` (512 MiB at the default 256).
const KEEP_RESIDENT: usize = 2 << 20;
/// Tables are small; reset in place.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

// The safety settings we rely on, set explicitly (they are Wasmtime 48's defaults on 64-bit
// hosts) and asserted by `Runtime::new`, so that a later change cannot turn one off silently.
// Bounds checks themselves have no safe switch: only the `unsafe` Cranelift flag setters can
// remove them, and `unsafe_code = "deny"` keeps every `unsafe` call out of this workspace.

/// Address space reserved for each linear memory: all of a 32-bit memory's index space, so
/// with the guard below every 32-bit access with a static offset lands in reserved, unmapped
/// memory when it is out of bounds.
pub(crate) const MEMORY_RESERVATION: u64 = 1 << 32;
/// Unmapped guard pages after each linear memory (and before it, `guard_before_linear_memory`):
/// an out-of-bounds access faults there, a second line behind the compiled bounds checks.
pub(crate) const MEMORY_GUARD: u64 = 32 << 20;
/// Stack a guest may use before it traps with a stack overflow.
pub(crate) const MAX_WASM_STACK: usize = 512 << 10;

/// Builds the engine configuration shared by the runtime and its benchmark baseline.
pub fn engine_config(cfg: &RuntimeConfig) -> Result<Config, LoadError> {
    let mut pool = PoolingAllocationConfig::new();
    let n = cfg.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(crate::precheck::CORE_INSTANCES_PER_COMPONENT / 4))
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT / 2))
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT / 2))
        .total_stacks(n)
        .max_core_instances_per_component(crate::precheck::CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(usize::try_from(cfg.max_memory).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    // Decommits are not batched: a batch is flushed by whichever call frees the slot that
    // fills it, so a quiet tenant's call would pay for a memory bomb's whole memory.
    let mut c = Config::new();
    c.wasm_component_model(true)
        .allocation_strategy(pool)
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(true)
        // Out-of-bounds accesses and stack overflows trap through the signal handlers, behind
        // guard pages on both sides of every memory.
        .signals_based_traps(true)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(MEMORY_GUARD)
        .guard_before_linear_memory(true)
        .max_wasm_stack(MAX_WASM_STACK)
        // Kept: the compile pool bounds how many threads it uses.
        .parallel_compilation(true);
    // No Wasmtime `Cache`: it would load whatever its folder holds as native code. Compiled
    // code is kept by `warden-codecache` (see `engine.rs`), under a MAC.
    Ok(c)
}

/// The child process that compiles, and its limits. `program args...` must call
/// [`crate::isolate::child_main`] with the arguments that follow and its standard input (the `warden` binary
/// does, as `warden __compile`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Isolation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Wall-clock time one compile may take; the child is killed past it.
    pub max_time: Duration,
    /// Writable memory the child may map (its `RLIMIT_DATA`), engine and compiler included.
    pub max_memory: u64,
}
