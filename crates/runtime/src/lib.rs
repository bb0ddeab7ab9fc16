//! Runs verified components: one Wasmtime engine per process (pooling allocator, copy-on-write
//! memory images, epoch interruption driven by a ticker the engine owns, fuel), and a fresh,
//! limited Store and instance for every call.
//!
//! This crate is the mechanism; what an extension may do (its limits, and the capabilities in
//! [`CallCaps`], e.g. its network grant) is decided by the caller, `warden-host`. It knows
//! nothing of bundles, signatures or audit.

mod bindings;
pub mod call;
pub mod caps;
pub mod capture;
pub mod config;
pub mod egress;
pub mod engine;
pub mod error;
pub mod fs;
pub mod invoke;
pub mod kv;
mod limiter;
pub mod logging;
mod sockets;
pub mod state;

pub use call::{Prepared, WorldKind};
pub use caps::CallCaps;
pub use config::{SecretAccess, SecretSource};
pub use egress::{Lookup, Resolver, SystemResolver};
pub use engine::{Runtime, RuntimeConfig, engine_config};
pub use error::LoadError;
pub use fs::MountDir;
pub use invoke::{InvokeError, Invoker};
pub use kv::KvAccess;
pub use warden_call::{
    CallError, CallOutcome, CallReport, Denial, ErrorCode, Ledger, LogLevel, LogLine, Redactor,
    Stream, Use,
};
