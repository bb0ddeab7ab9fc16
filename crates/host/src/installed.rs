//! What a load leaves behind: the public [`ExtensionInfo`] and the host's own record of an
//! install (its compiled component, capabilities, permits and audit template).

use std::sync::Arc;

use tokio::sync::Semaphore;
use warden_audit::Record;
use warden_bundle::ContentHash;
use warden_manifest::{Effective, ExtensionId, TenantName};
use warden_runtime::{CallCaps, CallError, Prepared, ProcessInstall, WarmInstances, WorldKind};

/// What was loaded.
#[derive(Debug, Clone)]
pub struct ExtensionInfo {
    pub tenant: TenantName,
    pub id: ExtensionId,
    pub version: String,
    pub publisher: String,
    pub content_hash: ContentHash,
    pub kind: WorldKind,
    /// Whether it answers HTTP requests (`Tenant::call_http`): an http component, or a
    /// remote extension (each request proxied to its origin).
    pub answers_http: bool,
    pub effective: Effective,
    /// The HTTP routes the manifest maps to this extension (`[[endpoints]]`).
    pub endpoints: Vec<warden_manifest::Endpoint>,
    /// The operator's grant it was loaded with: a service compares it with the install's, so
    /// a grant changed on the same bundle is loaded again.
    pub grant: warden_manifest::Grant,
    /// A process extension's sandbox profile, in one line (`None` for a component).
    pub sandbox: Option<String>,
}

impl ExtensionInfo {
    /// Whether `other` is the same install: the same bundle under the same grant (a record
    /// loaded again, by a trust reload say, is; an upgrade or a new grant is not).
    pub fn same_install(&self, other: &ExtensionInfo) -> bool {
        self.content_hash == other.content_hash && self.grant == other.grant
    }
}

/// What runs an install's calls.
pub(crate) enum Code {
    Component(Arc<Prepared>),
    Process(Arc<ProcessInstall>),
    /// An Extism plug-in (`kind = "extism"`): rpc-style calls of its exports.
    Extism(Arc<Prepared>),
    /// A remote extension (`kind = "remote"`): calls over pinned TLS.
    Remote(Arc<crate::remote::RemoteInstall>),
}

impl Code {
    /// The weaker sandbox profile the policy accepted, which every call records.
    pub(crate) fn weaker(&self) -> Option<&'static str> {
        match self {
            Code::Component(_) | Code::Extism(_) | Code::Remote(_) => None,
            Code::Process(p) => p.weaker(),
        }
    }
}

pub(crate) struct Loaded {
    pub(crate) info: ExtensionInfo,
    /// Extension, version and content hash, sanitized once; each record starts from it.
    pub(crate) record: Record,
    pub(crate) methods: Vec<String>,
    pub(crate) code: Code,
    /// What each call may reach (the invoker is added per call).
    pub(crate) caps: CallCaps,
    /// Calls in flight; a call beyond `max_concurrent_calls` is refused as busy, not queued.
    pub(crate) permits: Arc<Semaphore>,
    /// Loaded from the registry's install (not from a file the embedder gave).
    pub(crate) installed: bool,
    /// A component's instances kept between its calls, where `[policy.component] warm_calls`
    /// accepts it (per install: they die with this record).
    pub(crate) warm: Option<WarmInstances>,
    /// Set once this record is no longer the one served: its waiting calls are woken to be
    /// refused, and, when the install was taken away, its running calls are stopped.
    pub(crate) retired: tokio::sync::watch::Sender<Retired>,
    /// Who vouched for its bundle: asked again at each trust reload.
    pub(crate) signed: warden_trust::Signed,
    /// When a waiter that ran out of time last asked the registry about it
    /// ([`Loaded::may_ask_registry`]).
    pub(crate) asked: Asked,
}

/// When the registry was last asked about an install, for [`Loaded::may_ask_registry`].
#[derive(Debug)]
pub(crate) struct Asked {
    since: std::time::Instant,
    /// Milliseconds from `since` to the last ask, plus one (0: never asked).
    last: std::sync::atomic::AtomicU64,
}

impl Asked {
    pub(crate) fn new() -> Asked {
        Asked {
            since: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// How often waiters of one install that ran out of time may ask the registry.
const ASK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Loaded {
    /// Whether a waiter that ran out of time may ask the registry about this install now: one
    /// per [`ASK_EVERY`]. A flood of waiters would otherwise each take a blocking thread to
    /// ask (outside attack, session 27: 158 threads, and another tenant's p99 3x worse, at
    /// 2,000 connections). One that finds it gone withdraws it, and every other waiter is
    /// woken and refused as not there at once.
    pub(crate) fn may_ask_registry(&self) -> bool {
        self.asked.due(ASK_EVERY)
    }
}

impl Asked {
    /// True for the first caller, then for one caller per `every` at most.
    fn due(&self, every: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering;
        let now = u64::try_from(self.since.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < every {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Whether a [`Loaded`] record is still the one its calls should run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Retired {
    /// Served.
    No,
    /// Another record serves the install now (an upgrade, a new grant, a trust reload it
    /// survived): calls running on this one end as they are; calls waiting for its slots are
    /// refused as busy (the next try runs on the new one).
    Replaced,
    /// The install is gone (uninstalled): its calls are refused and stopped at once.
    Removed,
    /// The trust bundle now in force no longer accepts its signature (why): its calls are
    /// refused and stopped at once.
    Untrusted(Arc<str>),
}

impl Retired {
    /// Whether the calls running on the record must stop.
    pub(crate) fn stops_calls(&self) -> bool {
        matches!(self, Retired::Removed | Retired::Untrusted(_))
    }

    /// Why a call of `id` is refused or stopped `when` (what it was doing then), if it is.
    pub(crate) fn refusal(&self, id: &ExtensionId, when: &str) -> Option<CallError> {
        match self {
            Retired::No => None,
            Retired::Replaced => Some(CallError::Busy(format!(
                "{id} was replaced while the call {when}"
            ))),
            Retired::Removed => Some(CallError::Uninstalled(format!(
                "{id} was uninstalled while the call {when}"
            ))),
            Retired::Untrusted(why) => Some(CallError::Untrusted(format!(
                "{id} is no longer trusted (the trust bundle was reloaded: {why}); this happened while the call {when}"
            ))),
        }
    }
}

#[cfg(test)]
mod asked_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_caller_per_period_is_due() {
        let asked = Asked::new();
        let every = Duration::from_millis(100);
        assert!(asked.due(every));
        assert!(!asked.due(every));
        assert!(!asked.due(every));
        std::thread::sleep(Duration::from_millis(120));
        assert!(asked.due(every));
        assert!(!asked.due(every));
    }
}
