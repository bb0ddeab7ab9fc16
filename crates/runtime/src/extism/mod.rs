//! Extism plug-ins (`kind = "extism"`): core WebAssembly modules built with an Extism PDK, run
//! unchanged on this host's one Wasmtime engine, with Extism's host ABI implemented here
//! (`abi`), not by the `extism` crate or its kernel module.
//!
//! - **Load** ([`Runtime::prepare_extism`]): the pre-compile check of components (limits,
//!   validation) on the core module, then its imports (`check`: functions of
//!   `extism:host/env` only; `extism:host/user`, WASI and anything else refused, each said);
//!   compiled on the compile pool, each manifest method checked to be an export `() -> i32`,
//!   and pre-linked (`InstancePre`) against the engine's Extism linker.
//! - **Call** ([`ExtismPlugin::call_rpc`]): a fresh Store and instance, as for a component:
//!   the same memory budget (the plug-in's linear memory, plus Extism memory: the host-side
//!   [`arena`] holding input, allocations, config values, vars and response bodies), fuel,
//!   and the epoch callback at the call's own deadline (a tokio timeout on the same deadline
//!   stops a plug-in blocked in `http_request`); the constructors Extism runs
//!   (`__wasm_call_ctors`, else `_initialize`), then the export. The outcome, in Extism's
//!   order: a trap or a host function's refusal; an error set with `error_set` (a failure
//!   whatever the return code); a non-zero return code; else the output of `output_set`.
//! - **Nothing survives a call**: vars live for one call (Extism keeps them per plug-in
//!   instance), and so does Extism memory.
//!
//! Config (`config_get`) is the install's granted secrets, read through the components'
//! `wasi:config` view (a key not granted is a denial in the ledger and reads as absent; values
//! handed out are redacted from everything the call reports). Logs go to the call's capture
//! (`crate::logging`), at `abi::LOG_LEVEL` and above.

pub(crate) mod abi;
mod arena;
pub(crate) mod check;
mod files;
mod http;
pub(crate) mod plugin;
pub(crate) mod state;

pub use plugin::ExtismPlugin;

use std::sync::atomic::Ordering;
use std::time::Instant;

use warden_bundle::{Bundle, ContentHash};
use warden_call::text::cut;
use warden_call::{CallError, CallOutcome, CallReport, Ledger, Stream};
use warden_manifest::Limits;
use warden_trust::Verified;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::caps::CallCaps;
use crate::capture::captured;
use crate::code::CodeSource;
use crate::engine::Runtime;
use crate::error::LoadError;
use crate::fair::fairly;
use crate::outcome::{UNMETERED_FUEL, failed};

use state::ExtismState;

/// Every function a plug-in may import from `extism:host/env` (Extism's kernel and host
/// functions, 1.x); an import of anything else is refused at load.
pub const EXTISM_HOST_FUNCTIONS: &[&str] = abi::NAMES;

pub use abi::MAX_ERROR_BYTES;
/// Bytes one WASI preview 1 call may copy or allocate on the host (a write's buffers, a
/// poll's subscriptions); past it the call answers `nomem`.
const HOSTCALL_FUEL: usize = 8 << 20;
/// The constructors Extism runs after instantiating, first found first (a reactor's).
const CONSTRUCTORS: [&str; 2] = ["__wasm_call_ctors", "_initialize"];

impl Runtime {
    /// Checks a verified bundle's Extism plug-in (limits, validation, imports), compiles it
    /// (or loads it from the code cache, as a component: see [`Runtime::prepare`]), checks that
    /// each of the manifest's methods is an export `() -> i32` and that it imports WASI only if
    /// the manifest asks for it, and pre-links it. CPU-heavy: call it off the async executor.
    pub(crate) fn prepare_extism(
        &self,
        bundle: &Verified<Bundle>,
    ) -> Result<(ExtismPlugin, CodeSource), LoadError> {
        let bytes = bundle.entry();
        let manifest = bundle.manifest();
        let methods: Vec<String> = manifest.methods.iter().map(|m| m.to_string()).collect();
        let (module, source) =
            self.module(ContentHash::of(bytes).as_bytes(), bytes, check::check)?;
        // Per bundle, not per compiled module (which bundles with other manifests share).
        let wasi = manifest.extism.wasi;
        check::wasi_asked(&module, wasi)?;
        check::exports(&module, &methods)?;
        let linker = if wasi {
            self.extism_wasi_linker()
        } else {
            self.extism_linker()
        };
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Imports(e.into_boxed_dyn_error()))?;
        let constructor = CONSTRUCTORS.into_iter().find(|name| {
            matches!(
                module.get_export(name),
                Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0
            )
        });
        let plugin = ExtismPlugin {
            pre,
            constructor,
            methods,
            wasi,
        };
        Ok((plugin, source))
    }
}

impl ExtismPlugin {
    /// The exports it may be called by (the manifest's methods).
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// Calls the export `method` with `input` in a fresh instance, with `caps` as its
    /// capabilities.
    pub async fn call_rpc(
        &self,
        rt: &Runtime,
        limits: &Limits,
        caps: &CallCaps,
        method: &str,
        input: &[u8],
    ) -> CallOutcome<Vec<u8>> {
        let started = Instant::now();
        if !self.methods.iter().any(|m| m == method) {
            return failed(
                started,
                CallError::Invalid(format!("the plug-in has no method {method:?}")),
            );
        }
        if input.len() as u64 > limits.max_request_bytes.bytes() {
            return failed(
                started,
                CallError::TooLarge {
                    what: "input",
                    size: input.len() as u64,
                    limit: limits.max_request_bytes,
                },
            );
        }
        let ledger = caps.ledger.clone();
        // Counted until the store is gone (dropped after it: declared before).
        let _live = rt.plugin_instance();
        let state = match ExtismState::new(limits, caps, ledger.clone(), self.wasi) {
            Ok(s) => s,
            Err(e) => return failed(started, CallError::Host(e)),
        };
        let mut store = Store::new(rt.engine(), state);
        store.limiter(|s| &mut s.budget);
        // What one WASI call may copy or allocate on the host (Wasmtime's default: 128 MiB).
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        let fuel = limits.max_fuel.map(|f| f.get());
        if let Err(e) = store.set_fuel(fuel.unwrap_or(UNMETERED_FUEL)) {
            return failed(
                started,
                CallError::host_caused("setting the fuel", e.into_boxed_dyn_error()),
            );
        }
        let deadline = started + limits.max_execution_time;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            if let Some(ctor) = self.constructor {
                instance
                    .get_typed_func::<(), ()>(&mut store, ctor)?
                    .call_async(&mut store, ())
                    .await?;
            }
            // The input goes in after the constructors, as in Extism; an error a constructor
            // set is not the call's.
            let s = store.data_mut();
            s.clear_error();
            let h = s.put("the input", input)?;
            s.input = (h, input.len() as u64);
            instance
                .get_typed_func::<(), i32>(&mut store, method)?
                .call_async(&mut store, ())
                .await
        };
        let ran = tokio::time::timeout(limits.max_execution_time, fairly(caps.share(), run)).await;
        let result = match ran {
            Err(_elapsed) => Err(CallError::Timeout(limits.max_execution_time)),
            // WASI's `proc_exit`: 0 ends the call as a return of 0 would, any other code as
            // the plug-in's error.
            Ok(Err(e)) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) if exit.0 == 0 => outcome(store.data(), 0, limits),
                Some(exit) => Err(CallError::Extension {
                    code: exit.0.to_string(),
                    message: format!("the plug-in exited with code {}", exit.0),
                }),
                None => Err(classify(&mut store, &e, limits, fuel)),
            },
            Ok(Ok(rc)) => outcome(store.data(), rc, limits),
        };
        finish(store, result, started, fuel, &ledger)
    }
}

/// What a finished export's return code, error and output make of the call.
fn outcome(s: &ExtismState, rc: i32, limits: &Limits) -> Result<Vec<u8>, CallError> {
    if let Some(message) = &s.error_text {
        return Err(CallError::Extension {
            code: rc.to_string(),
            message: cut(&String::from_utf8_lossy(message), MAX_ERROR_BYTES),
        });
    }
    if rc != 0 {
        return Err(CallError::Extension {
            code: rc.to_string(),
            message: format!("the plug-in returned {rc} without an error message"),
        });
    }
    let Some((h, len)) = s.output else {
        return Ok(Vec::new());
    };
    if len > limits.max_response_bytes.bytes() {
        return Err(CallError::TooLarge {
            what: "result",
            size: len,
            limit: limits.max_response_bytes,
        });
    }
    if h == 0 && len == 0 {
        return Ok(Vec::new());
    }
    s.arena
        .within_block(h, len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| CallError::Trap("the block output_set named was freed".into()))
}

/// Turns a Wasmtime error into what happened, using what the store saw.
fn classify(
    store: &mut Store<ExtismState>,
    e: &wasmtime::Error,
    limits: &Limits,
    fuel: Option<u64>,
) -> CallError {
    let s = store.data_mut();
    if s.budget.limit_hit() {
        return CallError::MemoryLimit(limits.max_memory);
    }
    if let Some(fault) = s.fault.take() {
        return fault;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(limits.max_execution_time),
        Some(Trap::OutOfFuel) => CallError::FuelExhausted(fuel.unwrap_or(0)),
        Some(t) => CallError::Trap(t.to_string()),
        None if e
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some() =>
        {
            CallError::Busy("no free instance slot".into())
        }
        None => CallError::Trap(format!("{e:#}")),
    }
}

/// The outcome and the call's report, both redacted of the secret values handed out.
fn finish(
    store: Store<ExtismState>,
    result: Result<Vec<u8>, CallError>,
    started: Instant,
    fuel: Option<u64>,
    ledger: &Ledger,
) -> CallOutcome<Vec<u8>> {
    let used = fuel.and_then(|given| Some(given.saturating_sub(store.get_fuel().ok()?)));
    let s = store.data();
    let result = result.map_err(|e| s.redactor.error(e));
    let (denials, uses, limits) = ledger.report(&s.redactor);
    let mut logs = captured(Stream::Stdout, &s.stdout, &s.redactor);
    logs.extend(captured(Stream::Stderr, &s.stderr, &s.redactor));
    logs.extend(s.logs.lines(&s.redactor));
    CallOutcome {
        result,
        report: CallReport {
            duration: started.elapsed(),
            fuel: used,
            memory_peak: s.budget.peak(),
            memory_limit_hit: s.budget.limit_hit(),
            egress_bytes: s.egress_bytes.load(Ordering::Relaxed),
            earlier_calls: 0,
            logs,
            denials,
            uses,
            limits,
        },
    }
}
