//! Calls between extensions, as any runtime sees them: it carries the request to the host's
//! [`Invoker`], which decides (declared, granted, authorized, depth and cycles) and runs the
//! callee with its own capabilities, never the caller's.

use async_trait::async_trait;

use crate::redact::Redactor;

/// Why a call to another extension did not return a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    /// Refused before the callee ran; `reason` goes to the audit log and to the guest.
    Denied { reason: String },
    /// The callee could not be run (not loaded for this tenant, not an rpc extension); `code`
    /// is what the guest sees. Recorded as a denial: nothing was reached.
    Unavailable { code: String, message: String },
    /// The callee ran and failed (its own error, a limit, a trap); `code` is what the guest sees.
    Failed { code: String, message: String },
}

/// Runs another extension on behalf of a calling guest. Implemented by the host, one value per
/// call (it knows the caller, its tenant and the chain of calls so far).
#[async_trait]
pub trait Invoker: Send + Sync {
    /// `redactor` holds the secret values the caller was handed: the callee's report must be
    /// redacted of them too (the caller may pass them in `input`); give it to the callee's
    /// the callee's call capabilities (`CallCaps::redactor` in the runtime).
    async fn invoke(
        &self,
        extension: &str,
        method: &str,
        input: Vec<u8>,
        redactor: Redactor,
    ) -> Result<Vec<u8>, InvokeError>;
}
