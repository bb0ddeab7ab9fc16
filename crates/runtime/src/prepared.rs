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
    /// Whether it imports `wasi:http/outgoing-handler`: only then can a call send a request,
    /// and need the egress check put in front of the handler (`egress::handler`).
    pub(crate) sends_http: bool,
}

impl Prepared {
    pub(crate) fn new(world: World, source: CodeSource, sends_http: bool) -> Self {
        Prepared {
            world,
            source,
            sends_http,
        }
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
