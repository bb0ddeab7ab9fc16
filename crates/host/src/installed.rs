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
