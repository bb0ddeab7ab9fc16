//! [`SharedTrust`]: the trust bundle every runner of a fleet enforces, kept in the storage
//! they share, so that a reload (or a revocation) through one runner is enforced by all.

use crate::store::RegistryError;

/// The fleet's trust bundle, as text (each runner parses and checks it itself).
pub trait SharedTrust: Send + Sync {
    /// The bundle in force for the fleet, if one was stored.
    fn current(&self) -> Result<Option<String>, RegistryError>;
    /// Makes `text` the fleet's bundle.
    fn replace(&self, text: &str) -> Result<(), RegistryError>;
}
