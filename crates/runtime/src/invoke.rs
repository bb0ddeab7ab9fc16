//! Calls between extensions (`warden:extension/invoke`). The runtime only carries the request
//! to the host's [`Invoker`]: the host decides (declared in `permissions.calls`, granted,
//! authorized, depth and cycles) and runs the callee in its own Store with its own
//! capabilities, never the caller's. A refusal is a `denied` call-error the guest sees, and is
//! recorded as a denial of this call.

use async_trait::async_trait;

use crate::bindings::{GuestCallError, warden};
use crate::redact::Redactor;
use crate::state::{CallState, allow, record};

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
    /// [`CallCaps::redactor`](crate::CallCaps).
    async fn invoke(
        &self,
        extension: &str,
        method: &str,
        input: Vec<u8>,
        redactor: Redactor,
    ) -> Result<Vec<u8>, InvokeError>;
}

impl warden::extension::invoke::Host for CallState {
    async fn call(
        &mut self,
        extension: String,
        method: String,
        input: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, GuestCallError>> {
        let Some(invoker) = self.invoker.clone() else {
            let reason = "calls to other extensions are not granted".to_string();
            record(&self.denials, "invoke", &extension, Some(reason.clone()));
            return Ok(Err(GuestCallError {
                code: "denied".into(),
                message: reason,
            }));
        };
        let redactor = self.secrets.redactor.clone();
        Ok(
            match invoker.invoke(&extension, &method, input, redactor).await {
                Ok(out) => {
                    allow(&self.denials, "invoke", &extension);
                    Ok(out)
                }
                Err(InvokeError::Denied { reason }) => {
                    record(&self.denials, "invoke", &extension, Some(reason.clone()));
                    Err(GuestCallError {
                        code: "denied".into(),
                        message: reason,
                    })
                }
                Err(InvokeError::Unavailable { code, message }) => {
                    record(&self.denials, "invoke", &extension, Some(message.clone()));
                    Err(GuestCallError { code, message })
                }
                Err(InvokeError::Failed { code, message }) => {
                    allow(&self.denials, "invoke", &extension);
                    Err(GuestCallError { code, message })
                }
            },
        )
    }
}
