//! What one Extism call's Store holds (the state the host functions of `abi` work on).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use warden_call::{CallError, HostFailure, Ledger, Redactor, Withheld};
use warden_manifest::{ByteSize, EffectiveNetwork, Limits};
use warden_secrets::SecretAccess;

use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtxBuilder, WasiView as _};

use super::arena::Arena;
use super::files::Files;
use crate::caps::CallCaps;
use crate::capture::{Capture, MAX_OUTPUT_BYTES};
use crate::egress::EgressHooks;
use crate::limiter::MemoryBudget;
use crate::logging::LogCapture;
use crate::state::{MAX_RANDOM_BYTES, MAX_RESOURCES};

/// What one call's Store holds: Extism memory and the call's input, output and error
/// handles, vars, the last HTTP response's status and headers, and what the capabilities
/// touch (the ledger, the redactor, the log capture, the secret grant, the egress hooks).
pub(crate) struct ExtismState {
    pub(super) arena: Arena,
    /// (handle, length) of the input.
    pub(super) input: (u64, u64),
    /// (handle, length) from `output_set`.
    pub(super) output: Option<(u64, u64)>,
    /// The block `error_set` named (0: none), and the start of what it held then.
    pub(super) error: u64,
    pub(super) error_text: Option<Vec<u8>>,
    pub(super) vars: BTreeMap<String, Vec<u8>>,
    pub(super) http_status: u16,
    /// The last response's headers as Extism's JSON object.
    pub(super) http_headers: Option<Vec<u8>>,
    pub(super) budget: MemoryBudget,
    pub(super) ledger: Ledger,
    pub(super) redactor: Redactor,
    pub(super) logs: LogCapture,
    pub(super) secrets: Option<SecretAccess>,
    pub(super) withheld: Withheld,
    pub(super) network: Option<Arc<EffectiveNetwork>>,
    pub(super) hooks: EgressHooks,
    pub(super) egress_bytes: Arc<AtomicU64>,
    pub(super) max_response: ByteSize,
    pub(super) max_memory: ByteSize,
    /// What a host function ended the call with (said precisely, not as a bare trap).
    pub(super) fault: Option<CallError>,
    /// WASI preview 1, for a plug-in whose manifest asks for it: stdout and stderr captured,
    /// clocks and random, the install's mounts; no arguments, environment or sockets.
    wasi: Option<WasiP1Ctx>,
    /// The mounts, quota and open files of `wasi` (see `files`).
    files: Files,
    pub(super) stdout: Capture,
    pub(super) stderr: Capture,
}

impl ExtismState {
    pub(super) fn new(
        limits: &Limits,
        caps: &CallCaps,
        ledger: Ledger,
        wasi: bool,
    ) -> Result<ExtismState, HostFailure> {
        let egress_bytes = Arc::new(AtomicU64::new(0));
        let (stdout, stderr) = Capture::pair(MAX_OUTPUT_BYTES);
        let (wasi, files) = if wasi {
            let mut b = wasi_builder(&stdout, &stderr);
            let files = Files::preopen(&mut b, caps, &ledger)?;
            (Some(wasi_ctx(b)), files)
        } else {
            (None, Files::default())
        };
        Ok(ExtismState {
            wasi,
            files,
            stdout,
            stderr,
            arena: Arena::default(),
            input: (0, 0),
            output: None,
            error: 0,
            error_text: None,
            vars: BTreeMap::new(),
            http_status: 0,
            http_headers: None,
            budget: MemoryBudget::new(limits.max_memory.bytes()).noted_in(ledger.clone()),
            hooks: EgressHooks::new(
                caps,
                ledger.clone(),
                Arc::clone(&egress_bytes),
                limits.max_response_bytes.bytes(),
            ),
            ledger,
            redactor: caps.redactor.clone().unwrap_or_default(),
            logs: LogCapture::default(),
            secrets: caps.secrets.clone(),
            withheld: caps.withheld,
            network: caps.network.clone(),
            egress_bytes,
            max_response: limits.max_response_bytes,
            max_memory: limits.max_memory,
            fault: None,
        })
    }

    /// The call's WASI context (for the WASI linker; a plug-in linked without WASI never
    /// asks, and one that did would get a context with nothing in it).
    pub(crate) fn wasi(&mut self) -> &mut WasiP1Ctx {
        super::files::FilesState::wasi_parts(self).0
    }
}

impl super::files::FilesState for ExtismState {
    /// The WASI context with what the shadowed file functions keep beside it.
    fn wasi_parts(&mut self) -> (&mut WasiP1Ctx, &mut Files, &Ledger) {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let ctx = self
            .wasi
            .get_or_insert_with(|| wasi_ctx(wasi_builder(stdout, stderr)));
        (ctx, &mut self.files, &self.ledger)
    }

    fn trap(&mut self, message: String) -> wasmtime::Error {
        ExtismState::trap(self, message)
    }
}

/// The components' baseline, less what preview 1 has no use for: no environment, arguments
/// or stdin, stdout/stderr captured, no sockets or name lookups; mounts are added by `files`.
fn wasi_builder(stdout: &Capture, stderr: &Capture) -> WasiCtxBuilder {
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    b
}

fn wasi_ctx(mut b: WasiCtxBuilder) -> WasiP1Ctx {
    let mut ctx = b.build_p1();
    // A plug-in opening millions of files is stopped here rather than by host memory.
    ctx.ctx().table.set_max_capacity(MAX_RESOURCES);
    ctx
}
