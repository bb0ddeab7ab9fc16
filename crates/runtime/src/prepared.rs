//! A compiled, pre-linked component and the world it was linked for (or an Extism plug-in).

use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::RpcExtensionPre;
use crate::code::CodeSource;
use crate::extism::plugin::ExtismPlugin;
use crate::state::CallState;
use crate::world::WorldKind;

pub(crate) enum World {
    Rpc(RpcExtensionPre<CallState>),
    Http(ProxyPre<CallState>),
    /// An Extism plug-in (a core module): rpc-style calls of its exports.
    Extism(Box<ExtismPlugin>),
}

/// A compiled, pre-linked component (or Extism plug-in): instantiated afresh for every call.
pub struct Prepared {
    pub(crate) world: World,
    source: CodeSource,
}

impl Prepared {
    pub(crate) fn new(world: World, source: CodeSource) -> Self {
        Prepared { world, source }
    }

    pub fn kind(&self) -> WorldKind {
        match self.world {
            World::Rpc(_) | World::Extism(_) => WorldKind::Rpc,
            World::Http(_) => WorldKind::Http,
        }
    }

    /// Where its native code came from: the code cache, or a compile (and whether a cache
    /// entry for it was rejected, which a host may want to audit).
    pub fn code_source(&self) -> &CodeSource {
        &self.source
    }
}
