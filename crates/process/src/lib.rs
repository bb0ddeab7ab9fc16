//! The protocol of process extensions: JSON-RPC 2.0 over the program's stdin and stdout,
//! framed with `Content-Length` headers as LSP does. This crate is the mechanism only: it
//! neither spawns nor sandboxes (that is `warden-sandbox`) nor decides what a host request
//! may do (the host's [`HostApi`] does, with the same capability checks as components).
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use warden_process::{Call, DenyAll, Limits, Stdio, run};
//!
//! # async fn f(mut child: warden_sandbox::Child) -> std::io::Result<()> {
//! let (Some(i), Some(o), Some(e)) = (child.take_stdin(), child.take_stdout(), child.take_stderr())
//! else { return Ok(()) };
//! let out = run(
//!     Stdio::from_fds(i, o, e)?,
//!     Call { method: "echo", input: b"hello" },
//!     &Limits::default(),
//!     &DenyAll,
//!     Instant::now() + Duration::from_secs(5),
//! )
//! .await;
//! match out.reply {
//!     Ok(reply) => { let _ = reply.output; }      // Ok(bytes) or the program's own error
//!     Err(e) => { let _ = e; drop(child); }          // protocol error: the sandbox is killed
//! }
//! # Ok(()) }
//! ```
//!
//! # Wire format
//!
//! Each message is `Content-Length: N\r\n` (optionally `Content-Type: ...; charset=utf-8\r\n`),
//! `\r\n`, then N bytes of UTF-8 JSON. Bytes travel as standard padded base64 strings (one
//! spelling per byte string, so input and output round-trip exactly). The host sends:
//!
//! ```text
//! {"jsonrpc":"2.0","id":1,"method":"call","params":{"method":"echo","input":"aGk="}}
//! ```
//!
//! and the program answers, with the same id (a warm program's first call is 1, each later
//! one a number it cannot guess, below 2^53), either
//!
//! ```text
//! {"jsonrpc":"2.0","id":1,"result":{"output":"aGk="}}
//! {"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"no such note","data":{"code":"not-found"}}}
//! ```
//!
//! Before answering it may send host requests with ids of its own (numbers or strings), and
//! get one answer each ([`host`] lists the methods):
//!
//! ```text
//! → {"jsonrpc":"2.0","id":"a1","method":"kv.get","params":{"bucket":"notes","key":"k"}}
//! ← {"jsonrpc":"2.0","id":"a1","result":{"value":"AP8="}}
//! → {"jsonrpc":"2.0","id":"a2","method":"secrets.get","params":{"name":"token"}}
//! ← {"jsonrpc":"2.0","id":"a2","error":{"code":-32000,"message":"secrets.get is not available","data":{"code":"denied"}}}
//! ```
//!
//! A request without an id is a notification: handled, never answered.
//!
//! # What ends a call ([`ProtocolError`])
//!
//! Checked in this order for each frame: header lines (length, CRLF, only `Content-Length`
//! and `Content-Type`, once each, printable ASCII), the declared length against
//! [`Limits::max_frame_bytes`] (at its header line, before the body is read), the message
//! count, UTF-8, nesting depth (a flat scan, before serde_json), the JSON-RPC shape, the
//! response id, the host request rate. The whole exchange runs under the call's deadline.
//! None of it panics or allocates more than one frame plus one read.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod budget;
mod error;
mod frame;
pub mod host;
mod json;
pub mod limits;
mod message;
mod session;

pub use budget::RequestBudget;
pub use error::{HeaderError, ProtocolError};
pub use frame::encode_frame;
pub use host::{
    DenyAll, Fetch, FetchResponse, HostApi, HostMethod, Invoke, KvIncrement, KvKey, KvList, KvPage,
    KvSet, Log, LogLevel, SecretGet, dispatch,
};
pub use limits::{LimitError, Limits};
pub use message::{BadErrorName, ErrorName, ExtensionError, HostError, RequestId, codes};
pub use session::{Call, Output, Reply, Session, Stdio, call, run};
