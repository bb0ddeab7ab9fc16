//! What one install may read: its effective secret grant and where the values come from. Bound
//! by the host to one (tenant, extension); every runtime checks a name against `granted`
//! before it asks the source.

use std::fmt;
use std::sync::Arc;

use warden_manifest::SecretName;

use crate::SecretValue;

/// Where an install's secret values come from; bound by the host to one (tenant, extension),
/// so nothing a guest asks can reach another install's secrets.
pub trait SecretSource: Send + Sync {
    /// The value of `name`, `None` if unset. An error must name the secret, never a value.
    fn get(&self, name: &SecretName) -> Result<Option<SecretValue>, String>;
}

/// An install's effective secret grant and where the values are read from.
#[derive(Clone)]
pub struct SecretAccess {
    /// Declared by the manifest, granted by the operator, allowed by policy.
    pub granted: Arc<[SecretName]>,
    pub source: Arc<dyn SecretSource>,
}

impl fmt::Debug for SecretAccess {
    /// Names only: there are no values here to show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretAccess")
            .field("granted", &self.granted)
            .finish_non_exhaustive()
    }
}
