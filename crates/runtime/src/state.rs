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
    /// How many times the guest tried this (same capability, target and reason) in the call.
    pub count: u64,
}

/// A capability use that was allowed: recorded once per (capability, target) per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub capability: &'static str,
    pub target: String,
}

/// What a call was allowed and refused, collected while the guest runs and reported with the
/// call's result.
///
/// Nothing is lost silently: repeats of a denial are counted on its entry, and each capability
/// keeps its own [`MAX_DISTINCT_PER_CAPABILITY`] distinct entries (so a flood of one kind
/// cannot crowd out another); past that, entries are counted per capability and reported as
/// one summary entry each.
#[derive(Debug, Default)]
pub struct Ledger(Mutex<Entries>);

#[derive(Debug, Default)]
struct Entries {
    denials: Vec<Denial>,
    grants: Vec<Grant>,
    /// Denials (attempts) and grants not itemized, per capability.
    more_denials: Vec<(&'static str, u64)>,
    more_grants: Vec<(&'static str, u64)>,
}

/// The target of a summary entry for what was not itemized.
pub const NOT_ITEMIZED: &str = "(more, not itemized)";

impl Ledger {
    /// Every denial, then one summary per capability whose distinct denials overflowed.
    pub fn denials(&self) -> Vec<Denial> {
        let Ok(e) = self.0.lock() else {
            return Vec::new();
        };
        let mut out = e.denials.clone();
        for (capability, n) in &e.more_denials {
            out.push(Denial {
                capability,
                target: NOT_ITEMIZED.to_string(),
                reason: Some(format!(
                    "more than {MAX_DISTINCT_PER_CAPABILITY} distinct refusals of this capability in one call"
                )),
                count: *n,
            });
        }
        out
    }

    /// Every distinct grant, then one summary per capability that overflowed.
    pub fn grants(&self) -> Vec<Grant> {
        let Ok(e) = self.0.lock() else {
            return Vec::new();
        };
        let mut out = e.grants.clone();
        for (capability, n) in &e.more_grants {
            out.push(Grant {
                capability,
                target: format!("{NOT_ITEMIZED}: {n} more distinct targets"),
            });
        }
        out
    }
}

fn bump(more: &mut Vec<(&'static str, u64)>, capability: &'static str) {
    match more.iter_mut().find(|(c, _)| *c == capability) {
        Some((_, n)) => *n = n.saturating_add(1),
        None => more.push((capability, 1)),
    }
}

/// Shared between a call's Store and the hooks that run on its behalf.
pub type Denials = Arc<Ledger>;

/// Records a refused capability use.
pub(crate) fn record(
    ledger: &Denials,
    capability: &'static str,
    target: &str,
    reason: Option<String>,
) {
    let Ok(mut e) = ledger.0.lock() else {
        return;
    };
    // Kept whole (up to a bound) until the call's report is redacted, then cut for the
    // record: cutting first could leave the start of a secret value at the cut.
    let target = cut(target, MAX_RAW_BYTES);
    let reason = reason.map(|r| cut(&r, MAX_RAW_BYTES));
    if let Some(d) = e
        .denials
        .iter_mut()
        .find(|d| d.capability == capability && d.target == target && d.reason == reason)
    {
        d.count = d.count.saturating_add(1);
        return;
    }
    if e.denials
        .iter()
        .filter(|d| d.capability == capability)
        .count()
        >= MAX_DISTINCT_PER_CAPABILITY
    {
        bump(&mut e.more_denials, capability);
        return;
    }
    e.denials.push(Denial {
        capability,
        target,
        reason,
        count: 1,
    });
}

/// Records an allowed capability use, once per (capability, target).
pub(crate) fn allow(ledger: &Denials, capability: &'static str, target: &str) {
    let Ok(mut e) = ledger.0.lock() else {
        return;
    };
    let target = cut(target, MAX_RAW_BYTES);
    if e.grants
        .iter()
        .any(|g| g.capability == capability && g.target == target)
    {
        return;
    }
    if e.grants
        .iter()
        .filter(|g| g.capability == capability)
        .count()
        >= MAX_DISTINCT_PER_CAPABILITY
    {
        bump(&mut e.more_grants, capability);
        return;
    }
    e.grants.push(Grant { capability, target });
}

/// Distinct denials, and distinct grants, itemized per capability per call.
pub const MAX_DISTINCT_PER_CAPABILITY: usize = 32;
/// Targets and reasons are held up to this many bytes during the call.
const MAX_RAW_BYTES: usize = 4096;
/// Targets and reasons are cut to this many bytes for the report (after redaction).
pub(crate) const MAX_TARGET_BYTES: usize = 256;

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
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
    /// The install's file quota, charged by the shadowed `descriptor` methods (`fs.rs`).
    pub(crate) fs_quota: Option<crate::fs::FsQuota>,
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
            fs_quota: caps.fs_quota.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_each_capability_keeps_its_own_budget() {
        let ledger = Denials::default();
        // A flood of distinct secret denials, then the one that matters.
        for i in 0..40 {
            record(&ledger, "secret", &format!("NOPE{i}"), None);
        }
        for _ in 0..5 {
            record(
                &ledger,
                "http",
                "http://169.254.169.254:80",
                Some("metadata".into()),
            );
        }
        let d = ledger.denials();
        let http: Vec<_> = d.iter().filter(|d| d.capability == "http").collect();
        assert_eq!(http.len(), 1);
        assert_eq!(http[0].count, 5);
        let secret: Vec<_> = d.iter().filter(|d| d.capability == "secret").collect();
        assert_eq!(secret.len(), MAX_DISTINCT_PER_CAPABILITY + 1);
        let summary = secret.last().unwrap();
        assert_eq!(summary.target, NOT_ITEMIZED);
        assert_eq!(summary.count, 40 - MAX_DISTINCT_PER_CAPABILITY as u64);
    }

    #[test]
    fn grants_of_one_capability_cannot_crowd_out_another() {
        let ledger = Denials::default();
        for i in 0..100 {
            allow(&ledger, "kv", &format!("bucket{i}"));
        }
        allow(&ledger, "secret", "API_TOKEN");
        allow(&ledger, "secret", "API_TOKEN");
        let g = ledger.grants();
        assert_eq!(g.iter().filter(|g| g.capability == "secret").count(), 1);
        let kv: Vec<_> = g.iter().filter(|g| g.capability == "kv").collect();
        assert_eq!(kv.len(), MAX_DISTINCT_PER_CAPABILITY + 1);
        assert!(kv.last().unwrap().target.contains("68 more"), "{kv:?}");
    }

    #[test]
    fn targets_are_held_whole_until_the_report_cuts_them() {
        let ledger = Denials::default();
        let long = format!("{}SECRET", "p".repeat(253));
        record(&ledger, "http", &long, None);
        // Whole here, so redaction sees the value before the report cuts to 256 bytes.
        assert_eq!(ledger.denials()[0].target, long);
        let huge = "x".repeat(10_000);
        record(&ledger, "http", &huge, None);
        assert_eq!(ledger.denials()[1].target.len(), MAX_RAW_BYTES);
    }
}
