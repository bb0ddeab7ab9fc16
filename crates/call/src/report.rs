//! What a call hands back, whatever ran it.

use std::time::Duration;

use crate::error::CallError;
use crate::ledger::{Denial, Use};
use crate::output::LogLine;

/// What a call used and said, reported whatever its outcome. Every text in it has been
/// redacted of the secret values handed to the call, and targets cut to
/// [`MAX_TARGET_BYTES`](crate::ledger::MAX_TARGET_BYTES).
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    pub duration: Duration,
    /// Fuel consumed, when the extension is metered.
    pub fuel: Option<u64>,
    /// Highest total of linear memory and table bytes during the call.
    pub memory_peak: u64,
    /// Captured stdout/stderr and log lines, escaped and capped.
    pub logs: Vec<LogLine>,
    /// Capabilities the guest asked for and was denied.
    pub denials: Vec<Denial>,
    /// Capabilities the guest used, once per (capability, target).
    pub uses: Vec<Use>,
    /// Limits a capability use ran into (e.g. an outgoing response cut at its cap).
    pub limits: Vec<Denial>,
    /// The memory budget refused a growth (even if the guest coped with it).
    pub memory_limit_hit: bool,
    /// Outgoing HTTP request and response body bytes.
    pub egress_bytes: u64,
    /// Calls the instance answered before this one: 0 for a fresh instance; more when the
    /// operator's policy keeps instances between calls of one install.
    pub earlier_calls: u32,
}

pub struct CallOutcome<T> {
    pub result: Result<T, CallError>,
    pub report: CallReport,
}
