//! Integration tests for `warden-store-s3` against a real S3 API: moto, started once per test
//! binary on a loopback port (or the one a harness started: `WARDEN_TEST_S3`), each test under
//! a prefix of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blobs;
mod moto;
