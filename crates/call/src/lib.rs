//! What every call shares, whatever runs it (a WebAssembly component today, a sandboxed
//! process later): the [`Ledger`] of capability uses and denials, the [`Redactor`] of secret
//! values, the [`CallReport`] a call hands back, and [`CallError`] with its one mapping to
//! stable [`ErrorCode`]s.
//!
//! Capability policies (`warden-net`, `warden-fs`, `warden-kv`, `warden-secrets`) record into
//! the ledger and the redactor; the runtimes fill the report; the host turns it into audit
//! records. This crate knows nothing about Wasmtime, storage, audit logs or terminals.

pub mod error;
pub mod invoke;
pub mod ledger;
pub mod output;
pub mod redact;
pub mod report;
pub mod text;
pub mod withheld;

pub use error::{CallError, ErrorCode, HostFailure};
pub use invoke::{InvokeError, Invoker};
pub use ledger::{Denial, Ledger, Use, Witness};
pub use output::{LogLevel, LogLine, Stream};
pub use redact::Redactor;
pub use report::{CallOutcome, CallReport};
pub use warden_manifest::Capability;
pub use withheld::Withheld;
