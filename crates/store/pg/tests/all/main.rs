//! Integration tests for `warden-store-pg`, each on a database of its own (`warden_t_<hex>`,
//! created on `WARDEN_TEST_PG_URL` and dropped after): the backend suites of the storage
//! traits, then what only a shared database has (several stores, as several runners, on one
//! database; migrations; the server's settings).
//!
//! `eval "$(bash scripts/shared-storage.sh start)"` starts a throwaway server and sets the
//! variable. Without it the tests print "skipped: WARDEN_TEST_PG_URL not set" and pass, unless
//! `CI` is set: then they fail, so CI cannot skip them silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
mod audit;
mod kv;
mod proxy;
mod rate;
mod registry;
mod schema;
mod secrets;
mod tls;
