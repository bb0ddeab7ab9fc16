//! Calls between extensions (`warden:extension/invoke`). The runtime only carries the request
//! to the host's [`Invoker`]: the host decides (declared in `permissions.calls`, granted,
//! authorized, depth and cycles) and runs the callee in its own Store with its own
//! capabilities, never the caller's. A refusal is a `denied` call-error the guest sees, and is
//! recorded as a denial of this call.

use std::sync::Arc;

use async_trait::async_trait;
use warden_call::{Capability, Ledger, Redactor};
use wasmtime::component::{HasData, Linker};

use crate::bindings::{GuestCallError, warden};
use crate::state::CallState;

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

/// What `warden:extension/invoke` may touch of a call: the host's invoker (none: denied), the
/// ledger, and the caller's redactor (handed on to the callee).
pub(crate) struct InvokeView<'a> {
    invoker: Option<&'a Arc<dyn Invoker>>,
    ledger: &'a Ledger,
    redactor: &'a Redactor,
}

impl warden::extension::invoke::Host for InvokeView<'_> {
    async fn call(
        &mut self,
        extension: String,
        method: String,
        input: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, GuestCallError>> {
        let Some(invoker) = self.invoker.cloned() else {
            let reason = "calls to other extensions are not granted".to_string();
            self.ledger
                .deny(Capability::Calls, &extension, Some(reason.clone()));
            return Ok(Err(GuestCallError {
                code: "denied".into(),
                message: reason,
            }));
        };
        let redactor = self.redactor.clone();
        Ok(
            match invoker.invoke(&extension, &method, input, redactor).await {
                Ok(out) => {
                    self.ledger.allow(Capability::Calls, &extension);
                    Ok(out)
                }
                Err(InvokeError::Denied { reason }) => {
                    self.ledger
                        .deny(Capability::Calls, &extension, Some(reason.clone()));
                    Err(GuestCallError {
                        code: "denied".into(),
                        message: reason,
                    })
                }
                Err(InvokeError::Unavailable { code, message }) => {
                    self.ledger
                        .deny(Capability::Calls, &extension, Some(message.clone()));
                    Err(GuestCallError { code, message })
                }
                Err(InvokeError::Failed { code, message }) => {
                    self.ledger.allow(Capability::Calls, &extension);
                    Err(GuestCallError { code, message })
                }
            },
        )
    }
}

struct Invoke;

impl HasData for Invoke {
    type Data<'a> = InvokeView<'a>;
}

/// Links `warden:extension/invoke`.
pub(crate) fn add_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
    warden::extension::invoke::add_to_linker::<_, Invoke>(l, |s: &mut CallState| InvokeView {
        invoker: s.invoker.as_ref(),
        ledger: &s.ledger,
        redactor: &s.redactor,
    })
}
