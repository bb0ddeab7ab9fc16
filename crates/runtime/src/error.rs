//! Why a call did not produce a result. The host maps these to audit outcomes, CLI exit codes
//! and (later) HTTP statuses; this crate only says what happened.

use std::time::Duration;

use warden_manifest::ByteSize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The extension ran and returned its own error.
    #[error("the extension returned an error: {code}: {message}")]
    Extension { code: String, message: String },
    #[error("the call exceeded its time limit of {0:?}")]
    Timeout(Duration),
    #[error("the call exceeded its memory limit of {0}")]
    MemoryLimit(ByteSize),
    #[error("the call used up its fuel ({0} units)")]
    FuelExhausted(u64),
    #[error("the {what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: ByteSize,
    },
    #[error("the extension trapped: {0}")]
    Trap(String),
    /// No capacity for another instance right now; try again later.
    #[error("busy: {0}")]
    Busy(String),
    /// The call does not fit the component (an rpc call to an http extension, a bad request).
    #[error("{0}")]
    Invalid(String),
    /// Something failed on the host's side.
    #[error("host error: {0}")]
    Host(String),
}

/// A stable, short name for each outcome (audit records, metrics).
impl CallError {
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Extension { .. } => "error",
            CallError::Timeout(_) => "timeout",
            CallError::MemoryLimit(_) => "memory-limit",
            CallError::FuelExhausted(_) => "fuel-exhausted",
            CallError::TooLarge { .. } => "too-large",
            CallError::Trap(_) => "trap",
            CallError::Busy(_) => "busy",
            CallError::Invalid(_) => "invalid",
            CallError::Host(_) => "error",
        }
    }
}

/// Why a component could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Invalid, or over a limit of this host (e.g. more memories or tables than allowed).
    #[error("the entry cannot be compiled for this host: {0}")]
    Compile(String),
    #[error("the component imports interfaces this host does not provide: {0}")]
    Imports(String),
    #[error("the component's exports do not match its world: {0}")]
    Exports(String),
    #[error(
        "the component exports neither `warden:extension/handler` (rpc) nor `wasi:http/incoming-handler` (http)"
    )]
    NoKnownWorld,
    #[error("setting up the runtime failed: {0}")]
    Engine(String),
}
