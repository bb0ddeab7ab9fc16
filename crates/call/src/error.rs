//! Why a call did not produce a result, and the one mapping from that to a stable code.
//!
//! The code is what everyone downstream keys on: the guest that called another extension sees
//! it, the audit record's outcome is derived from it (in the host), and the service maps it to
//! an HTTP status. Nobody else matches on [`CallError`] variants to name them.

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
    /// The call does not fit the extension (an rpc call to an http extension, a bad request,
    /// an unknown method or extension).
    #[error("{0}")]
    Invalid(String),
    /// Something failed on the host's side.
    #[error("host error: {0}")]
    Host(String),
}

/// A stable, short name for how a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The extension's own error (its code is in [`CallError::Extension`]).
    Extension,
    Timeout,
    MemoryLimit,
    FuelExhausted,
    TooLarge,
    Trap,
    Busy,
    Invalid,
    Host,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Extension => "error",
            ErrorCode::Timeout => "timeout",
            ErrorCode::MemoryLimit => "memory-limit",
            ErrorCode::FuelExhausted => "fuel-exhausted",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Trap => "trap",
            ErrorCode::Busy => "busy",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Host => "host-error",
        }
    }

    /// A limit of the extension's (time, memory, fuel, size, concurrency) stopped the call.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            ErrorCode::Timeout
                | ErrorCode::MemoryLimit
                | ErrorCode::FuelExhausted
                | ErrorCode::TooLarge
                | ErrorCode::Busy
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CallError {
    /// The one mapping from an error to its code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::Extension { .. } => ErrorCode::Extension,
            CallError::Timeout(_) => ErrorCode::Timeout,
            CallError::MemoryLimit(_) => ErrorCode::MemoryLimit,
            CallError::FuelExhausted(_) => ErrorCode::FuelExhausted,
            CallError::TooLarge { .. } => ErrorCode::TooLarge,
            CallError::Trap(_) => ErrorCode::Trap,
            CallError::Busy(_) => ErrorCode::Busy,
            CallError::Invalid(_) => ErrorCode::Invalid,
            CallError::Host(_) => ErrorCode::Host,
        }
    }

    /// What a calling guest sees as the error's code: the extension's own code, or the
    /// stable one.
    pub fn guest_code(&self) -> &str {
        match self {
            CallError::Extension { code, .. } => code,
            other => other.code().as_str(),
        }
    }
}
