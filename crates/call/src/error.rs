//! Why a call did not produce a result, and the one mapping from that to a stable code.
//!
//! The code is what everyone downstream keys on: the guest that called another extension sees
//! it, the audit record's outcome is derived from it (in the host), and the service maps it to
//! an HTTP status. Nobody else matches on [`CallError`] variants to name them.

use std::sync::Arc;
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
    /// `size` is `limit + 1` when only "over" is known (an answer cut at its cap): then the
    /// message names no size.
    #[error("the {what} is {}over the limit of {limit}", size_shown(*size, *limit))]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: ByteSize,
    },
    /// A quota of the install's storage is used up (e.g. a process's read-write folders).
    #[error("over quota: {0}")]
    Quota(String),
    #[error("the extension trapped: {0}")]
    Trap(String),
    /// No capacity for another instance right now; try again later.
    #[error("busy: {0}")]
    Busy(String),
    /// The call does not fit the extension (an rpc call to an http extension, a bad request,
    /// an unknown method or extension).
    #[error("{0}")]
    Invalid(String),
    /// A remote extension could not be reached as its bundle requires: a server key that is
    /// not pinned, a certificate refused, a handshake or connection that failed, an answer
    /// that is not one.
    #[error("the remote extension: {0}")]
    Remote(String),
    /// Something failed on the host's side.
    #[error("host error: {0}")]
    Host(#[source] HostFailure),
    /// The host cannot serve calls for now (it cannot store their audit records, or reach its
    /// storage) and refuses them until it can: retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(#[source] HostFailure),
    /// The install was taken away (uninstalled) while the call waited for a slot or ran: the
    /// call was refused or stopped, as if the extension had never been there.
    #[error("{0}")]
    Uninstalled(String),
    /// The trust bundle now in force no longer accepts the install's signature (a key revoked,
    /// a publisher removed) and the call waiting or running on it was refused or stopped.
    #[error("{0}")]
    Untrusted(String),
}

/// What failed on the host's side, and why: the cause is kept as an error (with its own
/// chain) for the operator, not flattened into the text. Cloning shares the cause.
#[derive(Debug, Clone)]
pub struct HostFailure {
    what: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HostFailure {
    /// A failure described by `what` alone.
    pub fn new(what: impl Into<String>) -> Self {
        HostFailure {
            what: what.into(),
            cause: None,
        }
    }

    /// `what` failed because of `cause`.
    pub fn caused(
        what: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        HostFailure {
            what: what.into(),
            cause: Some(Arc::from(cause.into())),
        }
    }

    /// What failed (without the cause).
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for HostFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Equal when they say the same and share the same cause (causes have no equality).
impl PartialEq for HostFailure {
    fn eq(&self, other: &Self) -> bool {
        self.what == other.what
            && match (&self.cause, &other.cause) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}
impl Eq for HostFailure {}

impl CallError {
    /// [`CallError::Host`] described by `what` alone.
    pub fn host(what: impl Into<String>) -> Self {
        CallError::Host(HostFailure::new(what))
    }

    /// [`CallError::Host`]: `what` failed because of `cause`.
    pub fn host_caused(
        what: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        CallError::Host(HostFailure::caused(what, cause))
    }
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
    Remote,
    Host,
    Unavailable,
    Uninstalled,
    Untrusted,
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
            ErrorCode::Remote => "remote-error",
            ErrorCode::Host => "host-error",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Uninstalled => "uninstalled",
            ErrorCode::Untrusted => "untrusted",
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
            CallError::TooLarge { .. } | CallError::Quota(_) => ErrorCode::TooLarge,
            CallError::Trap(_) => ErrorCode::Trap,
            CallError::Busy(_) => ErrorCode::Busy,
            CallError::Invalid(_) => ErrorCode::Invalid,
            CallError::Remote(_) => ErrorCode::Remote,
            CallError::Host(_) => ErrorCode::Host,
            CallError::Unavailable(_) => ErrorCode::Unavailable,
            CallError::Uninstalled(_) => ErrorCode::Uninstalled,
            CallError::Untrusted(_) => ErrorCode::Untrusted,
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

/// `N bytes, ` for a known size; nothing for `limit + 1`, which stands for "over" (see
/// [`CallError::TooLarge`]).
fn size_shown(size: u64, limit: ByteSize) -> String {
    if size == limit.bytes().saturating_add(1) {
        String::new()
    } else {
        format!("{size} bytes, ")
    }
}

#[cfg(test)]
mod too_large_tests {
    use super::*;

    #[test]
    fn an_answer_cut_at_its_cap_names_no_size() {
        let limit = ByteSize::kib(64);
        let known = CallError::TooLarge {
            what: "input",
            size: 70_000,
            limit,
        };
        assert_eq!(
            known.to_string(),
            "the input is 70000 bytes, over the limit of 64KiB"
        );
        let cut = CallError::TooLarge {
            what: "result",
            size: limit.bytes() + 1,
            limit,
        };
        assert_eq!(cut.to_string(), "the result is over the limit of 64KiB");
    }
}
