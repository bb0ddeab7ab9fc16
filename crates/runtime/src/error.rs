//! Why a component could not be prepared. (Why a call failed is `warden_call::CallError`.)

/// Why a component could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Invalid, or over a limit of this host (e.g. more memories or tables than allowed).
    #[error("the entry cannot be compiled for this host: {0}")]
    Compile(String),
    #[error("the component imports interfaces this host does not provide: {0}")]
    Imports(String),
    #[error("the component's exports do not match its world: {0}")]
    Exports(String),
    /// Found before compiling: the top-level exports name no world this host runs.
    #[error(
        "the component exports neither `warden:extension/handler` (rpc) nor `wasi:http/incoming-handler` (http); it exports {exports}"
    )]
    NoKnownWorld { exports: String },
    /// Found before compiling: not a component, or its binary cannot be read.
    #[error("the entry is not a WebAssembly component: {0}")]
    NotComponent(String),
    /// Found before compiling: over one of the host's compile limits (`limit` names it).
    #[error("the component has {value} {limit}, more than this host compiles ({max})")]
    TooLarge {
        limit: &'static str,
        value: u64,
        max: u64,
    },
    #[error("setting up the runtime failed: {0}")]
    Engine(String),
}
