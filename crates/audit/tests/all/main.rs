//! Integration tests for `warden-audit`: real log files in temporary folders, appended from
//! many threads, then edited, truncated, reordered and forged the way an intruder would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod group;
mod keyed;
mod log;
mod read;
mod sanitize;
mod source;
mod store;
mod tamper;
mod torn;
mod uncommitted;
