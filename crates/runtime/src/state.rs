//! What one call's Store holds: its WASI context, HTTP context (with the egress policy, see
//! [`crate::egress`]), resource table, memory budget, the call's ledger and redactor, and one
//! state per capability. Built fresh for every call (or for an instance the operator's policy
//! keeps between calls of one install, `crate::warm`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use warden_call::HostFailure;

use warden_call::{Invoker, Ledger, Redactor, Withheld};
use warden_fs::FsQuota;
use warden_kv::KvAccess;
use warden_secrets::SecretAccess;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::sockets::WasiSocketsCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::warden;
use crate::caps::CallCaps;
use crate::capture::Capture;
use crate::config::SecretsView;
use crate::egress::EgressHooks;
use crate::fs::FsCall;
use crate::invoke::InvokeView;
use crate::kv::KvView;
use crate::limiter::MemoryBudget;
use crate::logging::{LogCapture, LoggingView};
use crate::sockets::{SocketPolicy, SocketsView};

pub struct CallState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    pub(crate) budget: MemoryBudget,
    pub(crate) ledger: Ledger,
    egress_bytes: Arc<AtomicU64>,
    pub(crate) invoker: Option<Arc<dyn Invoker>>,
    /// The secret values handed to this call (and, through `invoke`, to its callers): every
    /// text the call reports is redacted of them.
    pub(crate) redactor: Redactor,
    /// Capabilities the policy forbids this install: refusals name the policy.
    pub(crate) withheld: Withheld,
    pub(crate) secrets: Option<SecretAccess>,
    pub(crate) logs: LogCapture,
    pub(crate) kv: Option<KvAccess>,
    /// The install's file quota, charged by the shadowed `descriptor` methods (`fs.rs`).
    pub(crate) fs_quota: Option<FsQuota>,
    /// Which mount each open descriptor is in (for naming it in denials).
    pub(crate) fd_mounts: crate::fs::FdMounts,
    pub(crate) sockets_policy: SocketPolicy,
    /// When the call running in this store must stop (set by each call; `None` stops it).
    pub(crate) deadline: Option<std::time::Instant>,
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
        ledger: Ledger,
        sends_http: bool,
    ) -> Result<Self, HostFailure> {
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .max_random_size(MAX_RANDOM_BYTES);
        let sockets_policy = SocketPolicy::new(
            caps.network.clone(),
            Arc::clone(&caps.resolver),
            ledger.clone(),
            caps.withheld,
        );
        sockets_policy.install(&mut b);
        crate::fs::preopen(&mut b, &caps.mounts, &ledger)?;
        let fd_mounts = crate::fs::FdMounts::denying(&mut b, &caps.denied_mounts, caps.withheld)?;
        let mut table = ResourceTable::new();
        // A guest creating millions of resources is stopped here rather than by host memory.
        table.set_max_capacity(MAX_RESOURCES);
        // Only a component that can send has it: two allocations and a few reference counts
        // fewer on every other call.
        if sends_http {
            crate::egress::handler::install(
                &mut table,
                caps.network.clone(),
                ledger.clone(),
                caps.withheld,
            )?;
        }
        let egress_bytes = Arc::new(AtomicU64::new(0));
        Ok(CallState {
            table,
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            hooks: EgressHooks::new(
                caps,
                ledger.clone(),
                Arc::clone(&egress_bytes),
                max_response,
            ),
            budget: MemoryBudget::new(memory_limit).noted_in(ledger.clone()),
            ledger,
            egress_bytes,
            invoker: caps.invoker.clone(),
            redactor: caps.redactor.clone().unwrap_or_default(),
            withheld: caps.withheld,
            secrets: caps.secrets.clone(),
            logs: LogCapture::default(),
            kv: caps.kv.clone(),
            fs_quota: caps.fs_quota.clone(),
            fd_mounts,
            sockets_policy,
            deadline: None,
        })
    }

    // One view per host interface: each borrows only what that interface may touch.

    pub(crate) fn kv_view(&mut self) -> KvView<'_> {
        KvView {
            access: self.kv.as_ref(),
            table: &mut self.table,
            ledger: &self.ledger,
            withheld: self.withheld,
            quota_hit: false,
        }
    }

    pub(crate) fn secrets_view(&mut self) -> SecretsView<'_> {
        SecretsView {
            access: self.secrets.as_ref(),
            ledger: &self.ledger,
            redactor: &self.redactor,
            withheld: self.withheld,
        }
    }

    pub(crate) fn invoke_view(&mut self) -> InvokeView<'_> {
        InvokeView {
            invoker: self.invoker.as_ref(),
            ledger: &self.ledger,
            redactor: &self.redactor,
            withheld: self.withheld,
        }
    }

    pub(crate) fn logging_view(&mut self) -> LoggingView<'_> {
        LoggingView { logs: &self.logs }
    }

    pub(crate) fn sockets_view(&mut self) -> SocketsView<'_> {
        SocketsView {
            wasi: WasiSocketsCtxView {
                ctx: self.wasi.sockets(),
                table: &mut self.table,
            },
            policy: &self.sockets_policy,
        }
    }

    /// A kept instance's next call counts its own bytes.
    pub(crate) fn reset_egress_bytes(&self) {
        self.egress_bytes.store(0, Ordering::Relaxed);
    }

    /// Request and response body bytes of this call's outgoing HTTP so far.
    pub(crate) fn egress_bytes(&self) -> u64 {
        self.egress_bytes.load(Ordering::Relaxed)
    }
}

/// Resources an instance may hold and still be kept idle between calls (`crate::warm`): a
/// language runtime keeps a few handles (its stdio streams, its preopens); more is a leak the
/// host would carry while nothing runs.
pub(crate) const MAX_KEPT_RESOURCES: usize = 1024;

impl CallState {
    /// Whether the table holds what an idle kept instance must not: a file, folder, listing or
    /// stream on a file it opened (see `crate::fs::holds_opened`), a socket, an HTTP exchange,
    /// a header map, or more than [`MAX_KEPT_RESOURCES`] resources. (A fresh instance drops
    /// all of it with its call.)
    pub(crate) fn holds_live_resources(&mut self) -> bool {
        if crate::fs::holds_opened(&mut self.table, &mut self.fd_mounts) {
            return true;
        }
        let mut all = 0usize;
        for e in self.table.iter_mut() {
            all += 1;
            if holds_host_state(e) {
                return true;
            }
        }
        all > MAX_KEPT_RESOURCES
    }
}

/// A resource that holds a connection, a socket or host memory outside the guest's budget.
fn holds_host_state(e: &(dyn std::any::Any + Send)) -> bool {
    use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
    use wasmtime_wasi_http::FieldMap;
    use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
    use wasmtime_wasi_http::p2::types::{
        HostFutureIncomingResponse, HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
    };
    e.is::<TcpSocket>()
        || e.is::<UdpSocket>()
        // Header maps live in the host's memory (see `crate::headers`).
        || e.is::<FieldMap>()
        || e.is::<HostOutgoingRequest>()
        || e.is::<HostOutgoingResponse>()
        || e.is::<HostFutureIncomingResponse>()
        || e.is::<HostIncomingResponse>()
        || e.is::<HostIncomingBody>()
        || e.is::<HostFutureTrailers>()
        || e.is::<HostOutgoingBody>()
}

/// Largest `get-random-bytes` request: the host allocates it outside the guest's memory budget
/// (WASI's default allows 64 MiB). A larger request traps the call.
pub(crate) const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Live resources per call (streams, requests, pollables, ...).
pub(crate) const MAX_RESOURCES: usize = 100_000;

impl FsCall for CallState {
    fn fs_quota(&self) -> Option<&FsQuota> {
        self.fs_quota.as_ref()
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn fd_mounts(&mut self) -> &mut crate::fs::FdMounts {
        &mut self.fd_mounts
    }
}

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
