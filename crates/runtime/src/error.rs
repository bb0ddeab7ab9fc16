//! Why a component could not be prepared. (Why a call failed is `warden_call::CallError`.)

/// The cause behind a [`LoadError`], with its own chain (Wasmtime's errors are converted with
/// `into_boxed_dyn_error`, which keeps their context).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a component could not be prepared. Causes are kept as sources, not flattened into text.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Invalid, or over a limit of this host (e.g. more memories or tables than allowed).
    #[error("the entry cannot be compiled for this host")]
    Compile(#[source] Cause),
    #[error("the component imports interfaces this host does not provide")]
    Imports(#[source] Cause),
    #[error("the component's exports do not match its world")]
    Exports(#[source] Cause),
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
    /// Compiling it in the child process went over a limit of `[policy.compile]`, and the
    /// compile was stopped.
    #[error(
        "checking and compiling the code needed more than {max} ({limit} in [policy.compile]); it was stopped"
    )]
    OverCompileLimit { limit: &'static str, max: String },
    /// Refused by the pre-compile check run in the compile process (its message says why).
    #[error("{0}")]
    Checked(String),
    /// This bundle was refused before by this engine (for `reason`); not checked again.
    #[error("the code was refused before: {reason}")]
    Refused { reason: std::sync::Arc<str> },
    /// Too many compiles wait already, or none ended in time: nothing is wrong with the
    /// component, try again later.
    #[error("the host is busy compiling other components ({0}); try again later")]
    CompileBusy(String),
    /// A process extension's sandbox cannot be made on this host (a missing kernel feature,
    /// a mount it cannot take): said with the feature or step.
    #[error("the process sandbox cannot be set up: {0}")]
    Sandbox(#[source] warden_sandbox::SandboxError),
    /// The operator's `[policy.process]` does not allow what this process extension needs.
    #[error("{0}")]
    ProcessPolicy(String),
    #[error("setting up the runtime failed: {what}")]
    Engine {
        what: String,
        #[source]
        source: Option<Cause>,
    },
}

impl LoadError {
    /// The refusal is about the component itself (the same bytes would be refused again), not
    /// about this host's state.
    pub fn is_about_the_component(&self) -> bool {
        matches!(
            self,
            LoadError::Compile(_)
                | LoadError::Imports(_)
                | LoadError::Exports(_)
                | LoadError::NoKnownWorld { .. }
                | LoadError::NotComponent(_)
                | LoadError::TooLarge { .. }
                | LoadError::OverCompileLimit { .. }
                | LoadError::Checked(_)
                // Refused before for one of the reasons above.
                | LoadError::Refused { .. }
        )
    }

    pub(crate) fn engine(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> LoadError {
        LoadError::Engine {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn wasmtime(what: impl Into<String>, source: wasmtime::Error) -> LoadError {
        LoadError::Engine {
            what: what.into(),
            source: Some(source.into_boxed_dyn_error()),
        }
    }
}
