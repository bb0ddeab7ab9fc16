//! `wasi:http/outgoing-handler.handle`, in front of Wasmtime's: the allowlist (the same pure
//! [`admit`](warden_net::admit) the send hook applies again) runs here, so a refused request is
//! answered `HTTP-request-denied` at once, before Wasmtime spawns a task for it. A denial costs
//! no system call and no thread wake-up (see `benches/denied_egress.rs` in warden-host).
//!
//! Wasmtime hands this function only the HTTP view of the store (context, resource table,
//! hooks), so the call's grant travels in the resource table: [`EarlyCheck`] is the first entry
//! pushed into the table (index 0) of every call of a component that imports the handler,
//! before the guest exists (a component that does not cannot call it). Guests cannot name it
//! (their handles map only to entries given to them, by type). If it were ever missing the
//! request would simply take Wasmtime's path, where the send hook refuses it all the same.

use std::sync::Arc;
use warden_call::HostFailure;

use warden_manifest::EffectiveNetwork;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi_http::p2::HttpResult;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtxView, WasiHttpView};

use warden_call::{Capability, Ledger, Withheld};

use bindings::wasi::http::outgoing_handler::RequestOptions;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "warden:host/http-shim",
        imports: { default: trappable },
        require_store_data_send: true,
        trappable_error_type: {
            "wasi:http/types.error-code" => wasmtime_wasi_http::p2::HttpError,
        },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http/types": wasmtime_wasi_http::p2::bindings::http::types,
        },
    });
}

/// The call's grant and ledger, where `handle` can find them.
pub(crate) struct EarlyCheck {
    grant: Option<Arc<EffectiveNetwork>>,
    ledger: Ledger,
    withheld: Withheld,
}

const EARLY_CHECK: u32 = 0;

/// Puts the early check into a fresh table; it must be the table's first entry.
pub(crate) fn install(
    table: &mut ResourceTable,
    grant: Option<Arc<EffectiveNetwork>>,
    ledger: Ledger,
    withheld: Withheld,
) -> Result<(), HostFailure> {
    let r = table
        .push(EarlyCheck {
            grant,
            ledger,
            withheld,
        })
        .map_err(|e| HostFailure::caused("setting up egress checks", e))?;
    if r.rep() != EARLY_CHECK {
        return Err(HostFailure::new(
            "setting up egress checks: the resource table was not fresh",
        ));
    }
    Ok(())
}

impl bindings::wasi::http::outgoing_handler::Host for WasiHttpCtxView<'_> {
    fn handle(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> HttpResult<Resource<HostFutureIncomingResponse>> {
        let refused = {
            let req = self.table.get(&request)?;
            let check = self
                .table
                .get(&Resource::<EarlyCheck>::new_own(EARLY_CHECK))
                .ok();
            check.and_then(|c| {
                refusal(req, c.grant.as_deref(), c.withheld).map(|r| (r, c.ledger.clone()))
            })
        };
        if let Some((refusal, ledger)) = refused {
            ledger.deny(Capability::Network, &refusal.target, Some(refusal.reason));
            // The guest handed the request over: drop it as `handle` would have.
            self.table.delete(request)?;
            return Err(ErrorCode::HttpRequestDenied.into());
        }
        wasmtime_wasi_http::p2::bindings::http::outgoing_handler::Host::handle(
            self, request, options,
        )
    }
}

/// The allowlist's verdict on a request, if it can be read as a URI (one that cannot is left
/// to Wasmtime, which refuses it; the send hook checks again anyway).
fn refusal(
    req: &HostOutgoingRequest,
    grant: Option<&EffectiveNetwork>,
    withheld: Withheld,
) -> Option<warden_net::Refusal> {
    let scheme = match &req.scheme {
        Some(Scheme::Http) => "http",
        // Wasmtime's default for a request without a scheme.
        Some(Scheme::Https) | None => "https",
        Some(Scheme::Other(s)) => s.as_str(),
    };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(req.authority.as_deref().unwrap_or(""))
        .path_and_query("/")
        .build()
        .ok()?;
    warden_net::admit(&uri, grant)
        .err()
        .map(|r| super::say_withheld(r, grant, withheld))
}

/// Replaces Wasmtime's `outgoing-handler` with the one above. Must be called after
/// wasmtime-wasi-http's interfaces are added.
pub(crate) fn add_to_linker<T: WasiHttpView + 'static>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    bindings::wasi::http::outgoing_handler::add_to_linker::<T, WasiHttp>(l, |s| s.http())?;
    l.allow_shadowing(false);
    Ok(())
}
