//! What the operator grants an install: `--grant all|none|LIST`.
//!
//! LIST is comma-separated: `kv`, `network` (every requested host) or `network:<host entry>`,
//! `filesystem` or `fs:<guest path>`, `secrets` or `secret:<NAME>`, `calls` or `call:<id>`.
//! A grant may only name what the manifest requests; anything else is an error, so a typo
//! cannot silently grant or withhold something.

use std::fmt;
use std::str::FromStr;

use crate::capability::Capability;
use crate::host::AllowedHost;
use crate::ids::{ExtensionId, SecretName};
use crate::path::GuestPath;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantItem {
    /// Everything the manifest requests for this capability.
    All(Capability),
    Host(AllowedHost),
    Path(GuestPath),
    Secret(SecretName),
    Call(ExtensionId),
}

/// The operator's grant. The default is [`Grant::None`]: an empty grant denies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Grant {
    /// Everything the manifest requests (still bounded by the policy).
    All,
    #[default]
    None,
    List(Vec<GrantItem>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(pub String);

/// The text [`Grant::from_str`] reads back: `all`, `none`, or the items joined by commas.
impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::All => f.write_str("all"),
            Grant::None => f.write_str("none"),
            Grant::List(items) if items.is_empty() => f.write_str("none"),
            Grant::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    match item {
                        GrantItem::All(c) => write!(f, "{c}")?,
                        GrantItem::Host(h) => write!(f, "network:{h}")?,
                        GrantItem::Path(p) => write!(f, "fs:{p}")?,
                        GrantItem::Secret(s) => write!(f, "secret:{s}")?,
                        GrantItem::Call(c) => write!(f, "call:{c}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Grant {
    type Err = GrantError;
    fn from_str(s: &str) -> Result<Self, GrantError> {
        match s {
            "all" => return Ok(Grant::All),
            "none" | "" => return Ok(Grant::None),
            _ => {}
        }
        let mut items = Vec::new();
        for raw in s.split(',') {
            let raw = raw.trim();
            let item = match raw.split_once(':') {
                None => GrantItem::All(
                    raw.parse()
                        .map_err(|e| GrantError(format!("grant {raw:?}: {e}")))?,
                ),
                Some((kind, value)) => {
                    let bad = |e: &dyn fmt::Display| GrantError(format!("grant {raw:?}: {e}"));
                    match kind {
                        "network" | "net" => GrantItem::Host(value.parse().map_err(|e| bad(&e))?),
                        "fs" => GrantItem::Path(value.parse().map_err(|e| bad(&e))?),
                        "secret" => GrantItem::Secret(value.parse().map_err(|e| bad(&e))?),
                        "call" => GrantItem::Call(value.parse().map_err(|e| bad(&e))?),
                        _ => {
                            return Err(GrantError(format!(
                                "grant {raw:?}: use kv, network[:HOST], filesystem, fs:PATH, secrets, secret:NAME, calls, call:ID, all or none"
                            )));
                        }
                    }
                }
            };
            if !items.contains(&item) {
                items.push(item);
            }
        }
        Ok(Grant::List(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip_through_their_text() {
        for text in [
            "all",
            "none",
            "kv,network:api.example.com,network:*.example.org,fs:/data,secret:TOKEN,call:acme.other,secrets,calls,filesystem,network",
            "network:https://api.example.com:8443",
        ] {
            let g: Grant = text.parse().unwrap();
            let shown = g.to_string();
            assert_eq!(shown.parse::<Grant>().unwrap(), g, "{text} -> {shown}");
        }
        assert_eq!(Grant::List(vec![]).to_string(), "none");
    }
}
