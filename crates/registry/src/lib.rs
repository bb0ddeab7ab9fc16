//! What the runner service keeps, and the rules for changing it:
//!
//! - tenants, each with an API key that is shown once and stored as a SHA-256 hash
//!   ([`ApiKey`], [`KeyHash`]);
//! - published bundles: the bytes in a content-addressed [`BlobStore`] (`blobs/sha256/<hex>`
//!   in the embedded default), their signature and identity in the [`Registry`];
//! - installs: which tenant runs which content hash of an extension, with the grant the
//!   operator approved and the permissions the installed manifest requested ([`Approval`]);
//! - [`plan`]: the install rules (a lower version is refused unless forced; an upgrade that
//!   requests more than was approved is refused until the operator approves again).
//!
//! Storage is behind the two traits; `warden-store-sqlite` implements them on `DATA/`. Every
//! implementation must behave alike, and pass the suites in `warden_registry::testing`
//! (feature `testing`). This crate knows nothing of SQLite, Wasmtime or HTTP.

mod approval;
mod key;
mod plan;
mod rate;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod trust;

pub use approval::{Approval, items as requested_items};
pub use key::{ApiKey, KeyHash};
pub use plan::{Plan, PlanError, plan};
pub use rate::{MemoryRateLeases, Rate, RateLeases, Seat, SharedSeats};
pub use store::{
    BlobError, BlobStore, InstallRecord, Pin, Published, Registry, RegistryError, RegistryImage,
    TenantRecord,
};
pub use trust::SharedTrust;
