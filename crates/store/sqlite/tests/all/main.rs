//! Integration tests for `warden-store-sqlite`: real database files in temporary folders,
//! opened by several connections, migrated from older layouts, and tampered with through a
//! second SQLite connection the way an intruder with file access would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod kv;
mod registry;
mod secrets;
