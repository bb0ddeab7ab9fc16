//! Integration tests for `warden-bundle`: real bundles packed from real folders, and hostile
//! archives crafted with the `tar` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod archive;
mod bundle;
mod common;
mod pack;
