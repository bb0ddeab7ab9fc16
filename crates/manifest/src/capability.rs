//! The one vocabulary for capabilities: the manifest's permissions, the operator's grants and
//! policy, every call's ledger, audit records and metrics name a capability with this enum.
//! What was reached is the target's business (`https://host:443`, `tcp://ip:port`, `dns:name`,
//! a mount, a bucket, a secret's name, an extension id), never the capability's name.

use std::fmt;
use std::str::FromStr;

/// A capability an install can be granted, and that a call uses or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    Kv,
    Network,
    Filesystem,
    Secrets,
    Calls,
    /// The kernel's interface itself, as the sandbox of a process extension filters it: never
    /// granted (not in [`Capability::ALL`], not parsed), only named in the denials of system
    /// calls the sandbox refused.
    System,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::Kv,
        Capability::Network,
        Capability::Filesystem,
        Capability::Secrets,
        Capability::Calls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Kv => "kv",
            Capability::Network => "network",
            Capability::Filesystem => "filesystem",
            Capability::Secrets => "secrets",
            Capability::Calls => "calls",
            Capability::System => "system",
        }
    }
}

impl FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                "capability must be one of kv, network, filesystem, secrets, calls".to_string()
            })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
