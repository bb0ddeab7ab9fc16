//! What one call's Store holds: its WASI context, HTTP context (with the egress policy, see
//! [`crate::egress`]), resource table, memory budget, and the record of every capability it was
//! denied. Built fresh for every call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::warden;
use crate::caps::CallCaps;
use crate::capture::Capture;
use crate::egress::EgressHooks;
use crate::invoke::Invoker;
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

/// A capability use that was allowed: recorded once per (capability, target) per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub capability: &'static str,
    pub target: String,
}

/// What a call was allowed and refused, collected while the guest runs and reported with the
/// call's result.
#[derive(Debug, Default)]
pub struct Ledger {
    denials: Mutex<Vec<Denial>>,
    grants: Mutex<Vec<Grant>>,
}

impl Ledger {
    pub fn denials(&self) -> Vec<Denial> {
        self.denials.lock().map(|d| d.clone()).unwrap_or_default()
    }

    pub fn grants(&self) -> Vec<Grant> {
        self.grants.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Shared between a call's Store and the hooks that run on its behalf.
pub type Denials = Arc<Ledger>;

/// Records a refused capability use.
pub(crate) fn record(
    denials: &Denials,
    capability: &'static str,
    target: &str,
    reason: Option<String>,
) {
    if let Ok(mut d) = denials.denials.lock() {
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

/// Records an allowed capability use, once per (capability, target).
pub(crate) fn allow(ledger: &Denials, capability: &'static str, target: &str) {
    let target = short(target);
    if let Ok(mut g) = ledger.grants.lock()
        && g.len() < MAX_DENIALS_RECORDED
        && !g
            .iter()
            .any(|x| x.capability == capability && x.target == target)
    {
        g.push(Grant { capability, target });
    }
}

/// Denials (and distinct grants) kept per call; the rest are dropped.
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
    pub(crate) denials: Denials,
    egress_bytes: Arc<AtomicU64>,
    pub(crate) invoker: Option<Arc<dyn Invoker>>,
    pub(crate) secrets: crate::config::SecretsState,
    pub(crate) logs: crate::logging::LogCapture,
    pub(crate) kv: Option<crate::kv::KvAccess>,
    pub(crate) sockets_policy: crate::sockets::SocketPolicy,
}

impl CallState {
    /// The baseline: no environment, no arguments, no stdin, stdout/stderr captured, no
    /// sockets, no name lookups; clocks and random are available. Then what `caps` grants: the
    /// mounts as preopens, the network grant for outgoing HTTP, the invoker.
    pub(crate) fn new(
        stdout: &Capture,
        stderr: &Capture,
        memory_limit: u64,
        max_response: u64,
        caps: &CallCaps,
        denials: Denials,
    ) -> Result<Self, String> {
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .max_random_size(MAX_RANDOM_BYTES);
        let sockets_policy = crate::sockets::SocketPolicy::new(
            caps.network.clone(),
            Arc::clone(&caps.resolver),
            Arc::clone(&denials),
        );
        sockets_policy.install(&mut b);
        crate::fs::preopen(&mut b, &caps.mounts, &denials)?;
        let mut table = ResourceTable::new();
        // A guest creating millions of resources is stopped here rather than by host memory.
        table.set_max_capacity(MAX_RESOURCES);
        crate::egress::handler::install(&mut table, caps.network.clone(), Arc::clone(&denials))?;
        let egress_bytes = Arc::new(AtomicU64::new(0));
        Ok(CallState {
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
            invoker: caps.invoker.clone(),
            secrets: crate::config::SecretsState::new(caps.secrets.clone(), caps.redactor.clone()),
            logs: crate::logging::LogCapture::default(),
            kv: caps.kv.clone(),
            sockets_policy,
        })
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
