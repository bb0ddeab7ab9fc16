//! A store and, once instantiated, its instance: what one call runs on (`crate::call`), made
//! for it or kept from earlier calls of the same install (`crate::warm`).

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use warden_call::{CallError, Ledger, Redactor};
use warden_manifest::Limits;

use crate::bindings::RpcExtension;
use crate::caps::CallCaps;
use crate::capture::{Capture, MAX_OUTPUT_BYTES};
use crate::engine::Runtime;
use crate::logging::LogCapture;
use crate::state::CallState;

/// A store and, once instantiated, its instance: made for one call, or kept between calls of
/// one install (see [`crate::warm`]).
pub(crate) struct Live {
    pub(crate) store: Store<CallState>,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    /// What the store's capabilities write to. A kept instance has its own, handed over to
    /// each call's after the call (and when the call is dropped part-way).
    pub(crate) ledger: Ledger,
    /// Every secret value a call of this instance was handed: its guest may still hold them,
    /// so each later call is redacted of them too.
    pub(crate) seen: Redactor,
    pub(crate) bound: Option<Bound>,
    /// Calls this instance answered before this one.
    pub(crate) served: u32,
    /// What it was made under (`CallCaps::generation`).
    pub(crate) generation: u64,
}

/// The instance's exports, once instantiated.
pub(crate) enum Bound {
    Rpc(RpcExtension),
    Http(Proxy),
}

impl Live {
    pub(crate) fn new(
        rt: &Runtime,
        (limits, caps): (&Limits, &CallCaps),
        ledger: Ledger,
        sends_http: bool,
    ) -> Result<Live, CallError> {
        let (stdout, stderr) = Capture::pair(MAX_OUTPUT_BYTES);
        let state = CallState::new(
            &stdout,
            &stderr,
            limits.max_memory.bytes(),
            limits.max_response_bytes.bytes(),
            caps,
            ledger.clone(),
            sends_http,
        )
        .map_err(CallError::Host)?;
        let seen = state.redactor.clone();
        let mut store = Store::new(rt.engine(), state);
        store.limiter(|s| &mut s.budget);
        Ok(Live {
            store,
            stdout,
            stderr,
            ledger,
            seen,
            bound: None,
            served: 0,
            generation: caps.generation,
        })
    }

    /// Readies a kept instance for its next call: this call's invoker and redactor (which
    /// learns what earlier calls were handed), and nothing left of the last call's logs.
    pub(crate) fn renew(&mut self, caps: &CallCaps) {
        let redactor = caps.redactor.clone().unwrap_or_default();
        redactor.absorb(&self.seen);
        let s = self.store.data_mut();
        s.redactor = redactor;
        s.invoker = caps.invoker.clone();
        s.logs = LogCapture::default();
        s.reset_egress_bytes();
        s.sockets_policy.forget_resolutions();
        // Each call's record names the folders it could reach, as a fresh instance's does.
        crate::fs::record_mounts(&caps.mounts, &self.ledger);
        self.stdout.take();
        self.stderr.take();
    }

    /// Whether it may answer another call, after one that ended cleanly: its memory never
    /// hit the limit, and it holds nothing live while idle (see
    /// [`CallState::holds_live_resources`]).
    pub(crate) fn reusable(&mut self) -> bool {
        self.bound.is_some()
            && !self.store.data().budget.limit_hit()
            && !self.store.data_mut().holds_live_resources()
    }
}
