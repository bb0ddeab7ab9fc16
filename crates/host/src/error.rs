//! What the host's operations return when they fail, and what a call returns when it works.

use warden_manifest::{ExtensionId, TenantName};
use warden_runtime::{CallError, LogLine};

/// Why loading failed. Every variant is also written to the audit log.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading the bundle failed: {0}")]
    Bundle(#[from] warden_bundle::BundleError),
    #[error("reading the signature failed: {0}")]
    Signature(#[from] warden_trust::DsseError),
    #[error("verification failed: {0}")]
    Verify(#[from] warden_trust::VerifyError),
    #[error("the install is refused: {0}")]
    Policy(#[from] warden_manifest::EffectiveError),
    #[error("the extension cannot be loaded: {0}")]
    Load(#[from] warden_runtime::LoadError),
    /// A remote extension cannot be set up: its endpoint is not allowed by the operator's
    /// policy, its CA file or client certificate does not read.
    #[error("the remote extension cannot be loaded: {0}")]
    Remote(String),
    #[error("the audit log: {0}")]
    Audit(#[from] warden_audit::AuditError),
    /// An audit record could not be stored: changes and calls are refused until one can.
    #[error("the audit log cannot be written now; nothing was changed (try again later)")]
    AuditClosed,
    #[error("key-value store: {0}")]
    Kv(#[from] warden_kv::KvError),
    /// A lock was poisoned by a panic elsewhere: the host refuses rather than guess.
    #[error("the host's {0} is unusable after a panic elsewhere; restart the host")]
    Poisoned(&'static str),
    #[error("the load is refused: {0}")]
    Refused(String),
    #[error("file system: {0}")]
    Files(#[from] warden_fs::FsError),
    #[error("data dir: {0}")]
    DataDir(#[from] warden_datadir::DataDirError),
    #[error("the host has no data dir, so no registry of tenants and installs")]
    NoRegistry,
    #[error("{extension} is not installed for tenant {tenant}")]
    NotInstalled {
        tenant: TenantName,
        extension: ExtensionId,
    },
    #[error("no bundle {0} was published")]
    NotPublished(warden_bundle::ContentHash),
    #[error("{0}")]
    Registry(#[from] warden_registry::RegistryError),
    #[error("{0}")]
    Blob(#[from] warden_registry::BlobError),
    #[error("the install is refused: {0}")]
    Plan(#[from] warden_registry::PlanError),
    #[error("the blob store kept {found} for bundle {expected}")]
    BlobMismatch {
        expected: warden_bundle::ContentHash,
        found: warden_bundle::ContentHash,
    },
    #[error("secrets: {0}")]
    Secret(#[from] warden_secrets::SecretError),
}

impl HostError {
    /// The host is busy compiling other components: nothing is wrong with this one, try
    /// again later.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            HostError::Load(warden_runtime::LoadError::CompileBusy(_))
        )
    }
}

/// Why a call failed, with the request id of its audit record.
#[derive(Debug, thiserror::Error)]
#[error("{error} (request {request_id})")]
pub struct CallFailure {
    pub request_id: String,
    #[source]
    pub error: CallError,
    /// Captured guest output, escaped; useful to show next to the error.
    pub logs: Vec<LogLine>,
}

/// A successful call's value, with its request id and the guest's captured output.
#[derive(Debug)]
pub struct Called<T> {
    pub value: T,
    pub request_id: String,
    pub logs: Vec<LogLine>,
}
