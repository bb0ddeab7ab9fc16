//! What one Extism call's Store holds (the state the host functions of `abi` work on).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use warden_call::{CallError, Ledger, Redactor, Withheld};
use warden_manifest::{ByteSize, EffectiveNetwork, Limits};
use warden_secrets::SecretAccess;

use super::arena::Arena;
use crate::caps::CallCaps;
use crate::egress::EgressHooks;
use crate::limiter::MemoryBudget;
use crate::logging::LogCapture;

/// What one call's Store holds: Extism memory and the call's input, output and error
/// handles, vars, the last HTTP response's status and headers, and what the capabilities
/// touch (the ledger, the redactor, the log capture, the secret grant, the egress hooks).
pub(crate) struct ExtismState {
    pub(super) arena: Arena,
    /// (handle, length) of the input.
    pub(super) input: (u64, u64),
    /// (handle, length) from `output_set`.
    pub(super) output: Option<(u64, u64)>,
    /// The block `error_set` named (0: none).
    pub(super) error: u64,
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
    /// What a host function ended the call with (said precisely, not as a bare trap).
    pub(super) fault: Option<CallError>,
}

impl ExtismState {
    pub(super) fn new(limits: &Limits, caps: &CallCaps, ledger: Ledger) -> ExtismState {
        let egress_bytes = Arc::new(AtomicU64::new(0));
        ExtismState {
            arena: Arena::default(),
            input: (0, 0),
            output: None,
            error: 0,
            vars: BTreeMap::new(),
            http_status: 0,
            http_headers: None,
            budget: MemoryBudget::new(limits.max_memory.bytes()),
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
            fault: None,
        }
    }
}
