//! Runs verified components: one Wasmtime engine per process (pooling allocator, copy-on-write
//! memory images, epoch interruption driven by a ticker the engine owns, fuel), and a fresh,
//! limited Store and instance for every call.
//!
//! This crate is the mechanism; what an extension may do (its limits, and the capabilities in
//! [`CallCaps`], e.g. its network grant) is decided by the caller, `warden-host`. It knows
//! nothing of bundles, signatures or audit.

mod bindings;
pub mod call;
pub mod capture;
pub mod egress;
pub mod engine;
pub mod error;
mod limiter;
pub mod state;

pub use call::{CallOutcome, CallReport, Prepared, WorldKind};
pub use capture::{LogLine, Stream};
pub use egress::{CallCaps, Lookup, Resolver, SystemResolver};
pub use engine::{Runtime, RuntimeConfig, engine_config};
pub use error::{CallError, LoadError};
pub use state::Denial;
