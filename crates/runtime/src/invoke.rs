//! Calls between extensions (`warden:extension/invoke`). The runtime only carries the request
//! to the host's [`Invoker`]: the host decides (declared in `permissions.calls`, granted,
//! authorized, depth and cycles) and runs the callee in its own Store with its own
//! capabilities, never the caller's. A refusal is a `denied` call-error the guest sees, and is
//! recorded as a denial of this call.

use std::sync::Arc;

use warden_call::{Capability, Ledger, Redactor, Withheld};
use wasmtime::component::{HasData, Linker};

use crate::bindings::{GuestCallError, warden};

use warden_call::{InvokeError, Invoker};

/// What `warden:extension/invoke` may touch of a call: the host's invoker (none: denied), the
/// ledger, and the caller's redactor (handed on to the callee).
pub(crate) struct InvokeView<'a> {
    pub(crate) invoker: Option<&'a Arc<dyn Invoker>>,
    pub(crate) ledger: &'a Ledger,
    pub(crate) redactor: &'a Redactor,
    pub(crate) withheld: Withheld,
}

impl warden::extension::invoke::Host for InvokeView<'_> {
    async fn call(
        &mut self,
        extension: String,
        method: String,
        input: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, GuestCallError>> {
        let Some(invoker) = self.invoker.cloned() else {
            let reason = self.withheld.reason(Capability::Calls);
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

/// Links `warden:extension/invoke`, with `view` giving each call's invoker, ledger and
/// redactor.
pub(crate) fn add_to_linker<T: Send + 'static>(
    l: &mut Linker<T>,
    view: fn(&mut T) -> InvokeView<'_>,
) -> wasmtime::Result<()> {
    warden::extension::invoke::add_to_linker::<T, Invoke>(l, view)
}
