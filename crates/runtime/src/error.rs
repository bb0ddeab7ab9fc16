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
    #[error(
        "the component exports neither `warden:extension/handler` (rpc) nor `wasi:http/incoming-handler` (http)"
    )]
    NoKnownWorld,
    #[error("setting up the runtime failed: {0}")]
    Engine(String),
}
