#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `warden` binary as a user runs it: real files, real keys (ours and OpenSSL's), real
//! crafted archives, real components. Every refusal checks the exit code, the message, and that
//! nothing was written.

mod audit_gaps;
mod audit_keyed;
mod audit_torn;
mod compile_limits;
mod extism;
mod foundation;
mod manage;
mod new;
mod quota;
mod remote;
mod run;
mod secrets;
mod serve;
mod shared;
