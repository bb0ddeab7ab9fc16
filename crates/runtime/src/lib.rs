//! Runs verified components: one Wasmtime engine per process (pooling allocator, copy-on-write
//! memory images, epoch interruption driven by a ticker the engine owns, fuel), and a fresh,
//! limited Store and instance for every call. Extism plug-ins (core modules, `extism`) run on the
//! same engine, with Extism's host ABI implemented here. (An operator may accept instances kept
//! between calls of one install instead: `warm`.)
//!
//! This crate is the mechanism; what an extension may do (its limits, and the capabilities in
//! [`CallCaps`], e.g. its network grant) is decided by the caller, `warden-host`. It knows
//! nothing of bundles, signatures or audit.

// The mechanism: engine, one call, what a call's Store holds.
mod bindings;
pub mod call;
mod caps;
mod capture;
mod code;
mod engine;
mod error;
mod extism;
mod fair;
pub mod isolate;
mod limiter;
mod live;
mod outcome;
mod precheck;
mod prepared;
pub mod process;
mod settings;
mod state;
mod sweep;
mod warm;
mod world;

// One module per host interface, each implemented on a borrowed view of the call's state.
mod config;
pub mod egress;
mod fs;
mod headers;
mod invoke;
mod kv;
pub mod logging;
mod sockets;

pub use caps::{CallCaps, InstallCaps};
pub use code::{CacheRejection, CodeSource, CodeStats};
pub use engine::{PoolUsage, Runtime};
pub use error::LoadError;
pub use extism::{EXTISM_HOST_FUNCTIONS, ExtismPlugin};
pub use fair::{FREE_RUN, Share, Turns};
pub use prepared::Prepared;
pub use process::{
    HostRequests, ProcessCode, ProcessInstall, host_support as process_support,
    tenant_starting_slots,
};
pub use settings::{CodeCacheFiles, RuntimeConfig, engine_config};
pub use warden_sandbox::remove_own_folders as remove_sandbox_folders;
pub use warm::{IDLE_FOR, WarmGroup, WarmInstances};
pub use world::WorldKind;
// The policy types a host hands the runtime, re-exported for embedders of the runtime alone.
pub use warden_call::{
    CallError, CallOutcome, CallReport, Denial, ErrorCode, InvokeError, Invoker, Ledger, LogLevel,
    LogLine, Redactor, Stream, Use,
};
pub use warden_fs::MountDir;
pub use warden_kv::KvAccess;
pub use warden_net::{Lookup, Resolver, SystemResolver};
pub use warden_secrets::{SecretAccess, SecretSource};
