//! A bound on the header maps one call holds in the host's memory. `wasi:http`'s `fields` (and
//! the outgoing requests and responses that take them over) live in the host, outside the
//! guest's memory budget, each up to Wasmtime's 128 KiB field limit: without a bound a call
//! made thousands and the host grew by hundreds of MB (outside attack: 2,600 of them, 470 MB,
//! with no grant at all). So the constructors of `fields` count what the call holds first;
//! past [`MAX_HEADER_MAPS`] the call is stopped, and the ledger records the limit.

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::p2::bindings::http::types::{HeaderError, HostFields};
use wasmtime_wasi_http::p2::types::{HostOutgoingRequest, HostOutgoingResponse};
use wasmtime_wasi_http::{FieldMap, WasiHttpView};

use warden_call::Capability;

use crate::state::CallState;

/// Header maps (`fields`, outgoing requests and responses) one call may hold at once. A
/// handler needs a few; a guest sending many requests at once is held to the egress
/// concurrency anyway.
pub(crate) const MAX_HEADER_MAPS: usize = 64;

/// Why the call was stopped.
fn too_many() -> String {
    format!(
        "more than {MAX_HEADER_MAPS} header maps (fields, outgoing requests and responses) held \
         at once in one call"
    )
}

/// Counts what the call holds; `Err` (the call is stopped, and the limit recorded) past the
/// bound.
fn room(state: &mut CallState) -> wasmtime::Result<()> {
    let held = state
        .http()
        .table
        .iter_mut()
        .filter(|e| {
            e.downcast_ref::<FieldMap>().is_some()
                || e.downcast_ref::<HostOutgoingRequest>().is_some()
                || e.downcast_ref::<HostOutgoingResponse>().is_some()
        })
        .count();
    if held < MAX_HEADER_MAPS {
        return Ok(());
    }
    state
        .ledger
        .limit(Capability::Network, "header maps", too_many());
    Err(wasmtime::Error::msg(too_many()))
}

/// Shadows the three `fields` constructors of Wasmtime's `wasi:http/types` with counted ones.
/// Must be called after Wasmtime's `wasi:http` interfaces are added.
pub(crate) fn add_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    let mut inst = l.instance("wasi:http/types@0.2.12")?;
    inst.func_wrap("[constructor]fields", |mut store, (): ()| {
        let state = store.data_mut();
        room(state)?;
        Ok((HostFields::new(&mut state.http())?,))
    })?;
    inst.func_wrap(
        "[static]fields.from-list",
        |mut store, (entries,): (Vec<(String, Vec<u8>)>,)| {
            let state = store.data_mut();
            room(state)?;
            let made: Result<Resource<FieldMap>, HeaderError> =
                match HostFields::from_list(&mut state.http(), entries) {
                    Ok(f) => Ok(f),
                    Err(e) => Err(e.downcast()?),
                };
            Ok((made,))
        },
    )?;
    inst.func_wrap(
        "[method]fields.clone",
        |mut store, (fields,): (Resource<FieldMap>,)| {
            let state = store.data_mut();
            room(state)?;
            Ok((HostFields::clone(&mut state.http(), fields)?,))
        },
    )?;
    l.allow_shadowing(false);
    Ok(())
}
