//! Names that appear in manifests, trust bundles and on the command line.
//!
//! Each is a newtype that can only hold a valid value, so later layers never re-check.

use std::fmt;
use std::str::FromStr;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, NameError> {
    Err(NameError(msg.into()))
}

/// A DNS-like label: `[a-z0-9-]`, not empty, not starting or ending with `-`.
fn check_label(label: &str, what: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return err(format!("{what} has an empty label"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err(format!(
            "{what} label {label:?} may only contain a-z, 0-9 and '-'"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return err(format!(
            "{what} label {label:?} may not start or end with '-'"
        ));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// An extension id: lowercase dotted name, at least two `[a-z0-9-]` labels, at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtensionId(String);
string_newtype!(ExtensionId);

impl ExtensionId {
    pub const MAX_LEN: usize = 128;
}

impl FromStr for ExtensionId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.len() > Self::MAX_LEN {
            return err(format!(
                "extension id is longer than {} bytes",
                Self::MAX_LEN
            ));
        }
        let labels: Vec<&str> = s.split('.').collect();
        if labels.len() < 2 {
            return err(
                "extension id needs at least two dot-separated labels, e.g. \"acme.invoices\"",
            );
        }
        for label in labels {
            check_label(label, "extension id")?;
        }
        Ok(Self(s.to_string()))
    }
}

/// A publisher name: one `[a-z0-9-]` label of at most 64 bytes.
///
/// It names files (`keygen` writes `NAME.key`), so it can never contain a path separator or dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublisherName(String);
string_newtype!(PublisherName);

impl PublisherName {
    pub const MAX_LEN: usize = 64;
}

impl FromStr for PublisherName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.len() > Self::MAX_LEN {
            return err(format!(
                "publisher name is longer than {} bytes",
                Self::MAX_LEN
            ));
        }
        check_label(s, "publisher name")?;
        Ok(Self(s.to_string()))
    }
}

/// A tenant name: one `[a-z0-9-]` label of at most 64 bytes. It names a folder under the data
/// dir, so it can never hold a separator, a dot or anything a file system treats specially.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(String);
string_newtype!(TenantName);

impl TenantName {
    pub const MAX_LEN: usize = 64;
    /// The tenant of `warden run` and of the embedding API's shorthand methods.
    pub fn default_tenant() -> TenantName {
        TenantName("default".to_string())
    }
}

impl FromStr for TenantName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.len() > Self::MAX_LEN {
            return err(format!(
                "tenant name is longer than {} bytes",
                Self::MAX_LEN
            ));
        }
        check_label(s, "tenant name")?;
        Ok(Self(s.to_string()))
    }
}

/// An RPC method name: `[A-Za-z_][A-Za-z0-9_.-]*`, at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MethodName(String);
string_newtype!(MethodName);

impl FromStr for MethodName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let mut bytes = s.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if !first_ok
            || s.len() > 64
            || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return err(
                "method name must start with a letter or '_' and contain only letters, digits, '_', '.', '-' (at most 64 bytes)",
            );
        }
        Ok(Self(s.to_string()))
    }
}

/// A secret name: `[A-Za-z0-9_]`, at most 128 bytes (environment-variable style).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);
string_newtype!(SecretName);

impl FromStr for SecretName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.is_empty()
            || s.len() > 128
            || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return err("secret name must be 1 to 128 characters of A-Z, a-z, 0-9 and '_'");
        }
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_ids() {
        for ok in ["acme.invoices", "a.b", "acme-corp.x1.y-2"] {
            assert!(ok.parse::<ExtensionId>().is_ok(), "{ok}");
        }
        let long = format!("a.{}", "b".repeat(127));
        for bad in [
            "acme",
            "",
            ".",
            "acme.",
            ".acme",
            "acme..x",
            "Acme.x",
            "acme.x_y",
            "acme.-x",
            "acme.x-",
            "acme/x.y",
            "acme.x y",
            "ac\u{0}me.x",
            "acme.\u{e9}",
            long.as_str(),
        ] {
            assert!(bad.parse::<ExtensionId>().is_err(), "{bad:?}");
        }
        let max = format!("a.{}", "b".repeat(126));
        assert!(max.parse::<ExtensionId>().is_ok());
    }

    #[test]
    fn publisher_names() {
        assert!("acme".parse::<PublisherName>().is_ok());
        assert!("acme-2".parse::<PublisherName>().is_ok());
        for bad in ["", "acme.corp", "../x", "a/b", "ACME", "-a", "a b"] {
            assert!(bad.parse::<PublisherName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_names() {
        assert!("acme".parse::<TenantName>().is_ok());
        assert_eq!(TenantName::default_tenant().as_str(), "default");
        let long = "a".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            "a.b",
            "a/b",
            "A",
            "-a",
            "a\u{0}",
            long.as_str(),
        ] {
            assert!(bad.parse::<TenantName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn method_and_secret_names() {
        assert!("render".parse::<MethodName>().is_ok());
        assert!("v1.render-all_2".parse::<MethodName>().is_ok());
        assert!("1x".parse::<MethodName>().is_err());
        assert!("".parse::<MethodName>().is_err());
        assert!("a b".parse::<MethodName>().is_err());
        assert!("ACME_TOKEN".parse::<SecretName>().is_ok());
        for bad in ["", "A-B", "A.B", "A/B", "A\nB"] {
            assert!(bad.parse::<SecretName>().is_err(), "{bad:?}");
        }
    }
}
