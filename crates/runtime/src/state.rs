//! What one call's Store holds: its WASI context, HTTP context, resource table, memory budget,
//! and the record of every capability it was denied. Built fresh for every call.

use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::{GuestCallError, warden};
use crate::capture::Capture;
use crate::limiter::MemoryBudget;

/// A capability the guest asked for and did not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// e.g. "http", "invoke".
    pub capability: &'static str,
    /// What it tried to reach, e.g. a URL's authority or an extension id (never a body).
    pub target: String,
}

/// Denials are collected while the guest runs and reported with the call's result.
pub type Denials = Arc<Mutex<Vec<Denial>>>;

fn record(denials: &Denials, capability: &'static str, target: String) {
    if let Ok(mut d) = denials.lock() {
        // A guest looping on denied calls must not grow host memory without bound.
        if d.len() < MAX_DENIALS_RECORDED {
            d.push(Denial { capability, target });
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

/// Outgoing HTTP: the capabilities issue installs an allowlist here. Until then every request
/// is denied with the standard `HTTP-request-denied` error the guest can see.
pub struct EgressHooks {
    denials: Denials,
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let target = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        record(&self.denials, "http", short(&target));
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

pub struct CallState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    pub(crate) budget: MemoryBudget,
    denials: Denials,
}

impl CallState {
    /// The baseline: no environment, no arguments, no stdin, stdout/stderr captured, no
    /// preopened directories, no sockets, no name lookups; clocks and random are available.
    pub(crate) fn new(
        stdout: &Capture,
        stderr: &Capture,
        memory_limit: u64,
        denials: Denials,
    ) -> Self {
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut table = ResourceTable::new();
        // A guest creating millions of resources is stopped here rather than by host memory.
        table.set_max_capacity(MAX_RESOURCES);
        CallState {
            table,
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            hooks: EgressHooks {
                denials: Arc::clone(&denials),
            },
            budget: MemoryBudget::new(memory_limit),
            denials,
        }
    }
}

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
        record(&self.denials, "invoke", short(&extension));
        Ok(Err(GuestCallError {
            code: "denied".into(),
            message: "calls to other extensions are not granted".into(),
        }))
    }
}
