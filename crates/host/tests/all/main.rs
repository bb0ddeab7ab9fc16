#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The embedding API with real components built from examples/, real signed bundles, and
//! hostile guests. One test binary (Wasmtime's code is shared by all tests).

mod audit_fail;
mod calls;
mod compile_limits;
mod egress;
mod extism;
mod extism_fs;
mod fs;
mod hostile;
mod invoke;
mod kv;
mod languages;
mod process;
mod registry;
mod remote;
mod secrets;
mod sockets;
mod support;
mod twins;
mod warm;
mod witness;
