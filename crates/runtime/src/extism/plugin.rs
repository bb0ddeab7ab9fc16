//! What a load makes of a plug-in (its calls are in the parent module).

use wasmtime::InstancePre;

use super::state::ExtismState;

/// A compiled, pre-linked Extism plug-in: instantiated afresh for every call.
pub struct ExtismPlugin {
    pub(super) pre: InstancePre<ExtismState>,
    /// The constructor to run after instantiating, if the module exports one.
    pub(super) constructor: Option<&'static str>,
    /// The manifest's methods, each an export `() -> i32`.
    pub(super) methods: Vec<String>,
    /// WASI preview 1 is linked (the manifest asked for it).
    pub(super) wasi: bool,
}

impl std::fmt::Debug for ExtismPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtismPlugin")
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}
