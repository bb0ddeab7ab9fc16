//! Embed warden in a Rust application: load verified bundles and call them, with the same
//! verification, limits and audit as the `warden` command.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use warden_host::{Grant, Host, TrustBundle};
//!
//! let host = Host::builder()
//!     .trust(TrustBundle::read_file("trust.toml".as_ref())?)
//!     .data_dir("warden-data")
//!     .build()?;
//! let tenant = host.tenant(&"acme".parse()?); // or host.default_tenant()
//! let ext = tenant.load_file("echo.wext".as_ref(), None, &Grant::None)?;
//! let out = tenant.call(&ext.id, "echo", br#"{"hi":1}"#).await?;
//! assert_eq!(out.value, br#"{"hi":1}"#); // and out.request_id, out.logs
//! host.close()?; // before the process exits: the last audit records
//! # Ok(()) }
//! ```
//!
//! Defaults ([`HostBuilder`]): no trusted publishers (every load fails until [`HostBuilder::trust`]
//! is given), the default [`Policy`] (standard profile, relaxed ceilings, no private networks),
//! audit records kept in memory unless a data dir or sink is given, no compile cache on disk
//! unless a data dir is given; key-value data in SQLite at `DATA/warden.db` (in memory without a
//! data dir) with the quota of the policy's `[policy.kv]`; secrets encrypted in `DATA/warden.db`
//! under the key file `DATA/secret.key` (created on first start; in memory with a random key
//! without a data dir), readable only by the installs they are granted to; guest code on the
//! caller's threads ([`HostBuilder::guest_threads`] gives it threads of its own, as `warden
//! serve` does).

mod admin;
mod audit;
mod authorize;
mod budgets;
mod builder;
mod call;
mod error;
mod guests;
mod host;
mod ids;
mod installed;
mod invoke;
mod load;
mod orphans;
mod refusals;
mod remote;
mod review;
mod secrets;
mod storage;
mod tenant;
mod unstored;
mod usage;

pub use admin::{Admin, Installed};
pub use audit::{CLIENT_GONE, CUT_OFF};
pub use authorize::{Authorizer, CallRequest, LoadRequest, ManifestAuthorizer};
pub use builder::HostBuilder;
pub use call::Slot;
pub use error::{CallFailure, Called, HostError};
pub use host::Host;
pub use installed::ExtensionInfo;
pub use invoke::{MAX_CALL_DEPTH, MAX_NESTED_CALLS};
pub use remote::CLIENT_IDENTITY;
pub use review::{BundleFacts, InstallFacts, LimitRaised, Review, kind_word};
pub use storage::{LocalFiles, Storage};
pub use tenant::{LoadedInstall, Tenant};
pub use usage::InstallUsage;
pub use warden_audit::{AuditLog, AuditSink, MemoryAudit};
pub use warden_kv::{KvBackend, MemoryKv, Quota as KvQuota};
pub use warden_manifest::{ExtensionId, Grant, Policy, SecretName, TenantName};
pub use warden_registry::{ApiKey, InstallRecord, Plan, Registry};
pub use warden_runtime::isolate::child_main as compile_child_main;
pub use warden_runtime::{
    CallError, LogLevel, LogLine, Lookup, Resolver, Stream, SystemResolver, WorldKind,
};
pub use warden_runtime::{
    EXTISM_HOST_FUNCTIONS, LoadError, PoolUsage, process_support, remove_sandbox_folders,
};
pub use warden_secrets::{SecretError, SecretValue};
pub use warden_store_sqlite::SqliteKv;
pub use warden_trust::TrustBundle;
