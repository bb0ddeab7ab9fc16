//! What one call's Store holds: its WASI context, HTTP context (with the egress policy, see
//! [`crate::egress`]), resource table, memory budget, and the record of every capability it was
//! denied. Built fresh for every call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::{GuestCallError, warden};
use crate::capture::Capture;
use crate::egress::{CallCaps, EgressHooks};
use crate::limiter::MemoryBudget;

/// A capability the guest asked for and did not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// e.g. "http", "invoke".
    pub capability: &'static str,
    /// What it tried to reach, e.g. `scheme://host:port` or an extension id (never a path,
    /// query or body).
    pub target: String,
    /// Why, when more can be said than "not granted" (e.g. "resolves to a non-public address").
    pub reason: Option<String>,
}

/// Denials are collected while the guest runs and reported with the call's result.
pub type Denials = Arc<Mutex<Vec<Denial>>>;

pub(crate) fn record(
    denials: &Denials,
    capability: &'static str,
    target: &str,
    reason: Option<String>,
) {
    if let Ok(mut d) = denials.lock() {
        // A guest looping on denied calls must not grow host memory without bound.
        if d.len() < MAX_DENIALS_RECORDED {
            d.push(Denial {
                capability,
                target: short(target),
                reason: reason.map(|r| short(&r)),
            });
        }
    }
}

/// Denials kept per call; the rest are counted by the caller as "more".
pub const MAX_DENIALS_RECORDED: usize = 64;
/// Targets are cut to this many bytes before they are recorded.
const MAX_TARGET_BYTES: usize = 256;

fn short(s: &str) -> String {
    let mut end = s.len().min(MAX_TARGET_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub struct CallState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    pub(crate) budget: MemoryBudget,
    denials: Denials,
    egress_bytes: Arc<AtomicU64>,
}

impl CallState {
    /// The baseline: no environment, no arguments, no stdin, stdout/stderr captured, no
    /// preopened directories, no sockets, no name lookups; clocks and random are available.
    pub(crate) fn new(
        stdout: &Capture,
        stderr: &Capture,
        memory_limit: u64,
        max_response: u64,
        caps: &CallCaps,
        denials: Denials,
    ) -> Self {
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM_BYTES);
        let mut table = ResourceTable::new();
        // A guest creating millions of resources is stopped here rather than by host memory.
        table.set_max_capacity(MAX_RESOURCES);
        let egress_bytes = Arc::new(AtomicU64::new(0));
        CallState {
            table,
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            hooks: EgressHooks::new(
                caps,
                Arc::clone(&denials),
                Arc::clone(&egress_bytes),
                max_response,
            ),
            budget: MemoryBudget::new(memory_limit),
            denials,
            egress_bytes,
        }
    }

    /// Request and response body bytes of this call's outgoing HTTP so far.
    pub(crate) fn egress_bytes(&self) -> u64 {
        self.egress_bytes.load(Ordering::Relaxed)
    }
}

/// Largest `get-random-bytes` request: the host allocates it outside the guest's memory budget
/// (WASI's default allows 64 MiB). A larger request traps the call.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Live resources per call (streams, requests, pollables, ...).
const MAX_RESOURCES: usize = 100_000;

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl warden::extension::types::Host for CallState {}

impl warden::extension::invoke::Host for CallState {
    /// Calls between extensions come with the capabilities issue; until then every call is
    /// denied with a typed error and recorded.
    async fn call(
        &mut self,
        extension: String,
        _method: String,
        _input: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, GuestCallError>> {
        record(
            &self.denials,
            "invoke",
            &extension,
            Some("calls to other extensions are not granted".into()),
        );
        Ok(Err(GuestCallError {
            code: "denied".into(),
            message: "calls to other extensions are not granted".into(),
        }))
    }
}
