//! The content hash of a bundle: `sha256:<64 lowercase hex digits>` of the exact archive bytes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// SHA-256 of a bundle's exact bytes. Displayed and parsed as `sha256:<64 lowercase hex>`.
///
/// There is no "unknown" or optional form: a value of this type always names real bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

/// Why a string is not a content hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid content hash {shown:?}: {reason}")]
pub struct HashParseError {
    shown: String,
    reason: &'static str,
}

impl ContentHash {
    /// The only algorithm prefix this version writes and accepts.
    pub const PREFIX: &'static str = "sha256:";

    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(Sha256::digest(bytes).into())
    }

    /// Wraps a raw 32-byte SHA-256 digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> ContentHash {
        ContentHash(bytes)
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = HashParseError;

    /// Strict: exactly `sha256:` followed by exactly 64 lowercase hex digits, nothing else
    /// (no uppercase, no whitespace, no other algorithm).
    fn from_str(s: &str) -> Result<Self, HashParseError> {
        let err = |reason| HashParseError {
            // Never echo an unbounded string back into an error message.
            shown: s.chars().take(80).collect(),
            reason,
        };
        let Some(hex_part) = s.strip_prefix(Self::PREFIX) else {
            return Err(err("it must start with \"sha256:\""));
        };
        if hex_part.len() != 64 {
            return Err(err("it must have exactly 64 hex digits after \"sha256:\""));
        }
        if !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err("the digest must be lowercase hex (0-9, a-f)"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| err("the digest is not hex"))?;
        Ok(ContentHash(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn known_vector_and_round_trip() {
        let h = ContentHash::of(b"abc");
        let s = h.to_string();
        assert_eq!(
            s,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<ContentHash>().unwrap(), h);
        assert_eq!(h.as_bytes()[0], 0xba);
        assert_eq!(ContentHash::from_bytes(*h.as_bytes()), h);
    }

    #[test]
    fn strict_parse() {
        let good = ContentHash::of(b"").to_string();
        let hex = &good["sha256:".len()..];
        for bad in [
            String::new(),
            hex.to_string(),
            format!("SHA256:{hex}"),
            format!("sha512:{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256: {hex}"),
            format!("{good} "),
            format!(" {good}"),
            format!("{good}0"),
            good[..good.len() - 1].to_string(),
            format!("sha256:{}g", &hex[..63]),
            format!("sha256:{}", "é".repeat(32)),
        ] {
            assert!(bad.parse::<ContentHash>().is_err(), "{bad:?}");
        }
        let long = format!("x{}", "a".repeat(10_000));
        let msg = long.parse::<ContentHash>().unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }
}
