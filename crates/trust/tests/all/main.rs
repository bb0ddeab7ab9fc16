//! Integration tests of warden-trust with real keys (ours and openssl's), real bundles packed
//! from folders, and real files on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod bundles;
mod envelopes;
mod openssl;
mod trust_files;
