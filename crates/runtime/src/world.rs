//! The worlds this host runs: what the pre-compile check decides, the cache reads off compiled
//! code, and a prepared component is linked for.

/// Which kind of extension a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldKind {
    Rpc,
    Http,
}
