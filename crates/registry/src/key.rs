//! Tenant API keys: 256 random bits, shown once, stored only as a hash.

use std::fmt;

use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The prefix of every key, so that a leaked one is recognizable (secret scanners, logs).
const PREFIX: &str = "wdn_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;

/// A tenant's API key, in clear: exists only between its creation and the moment it is shown,
/// and when a client presents one. Never printed by `Debug`.
pub struct ApiKey(Zeroizing<String>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl ApiKey {
    /// A new random key: `wdn_` and 64 lowercase hex digits.
    pub fn generate() -> ApiKey {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        OsRng.fill_bytes(bytes.as_mut());
        ApiKey(Zeroizing::new(format!("{PREFIX}{}", hex::encode(*bytes))))
    }

    /// A key as a client presented it. `None` unless it has the shape of a key, so that
    /// garbage is refused before any lookup.
    pub fn parse(text: &str) -> Option<ApiKey> {
        let hex = text.strip_prefix(PREFIX)?;
        (hex.len() == 2 * KEY_BYTES && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| ApiKey(Zeroizing::new(text.to_owned())))
    }

    /// The key in clear, to show once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What is stored and looked up.
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

/// The SHA-256 of an API key. A key has 256 bits of entropy, so a plain hash is enough (no
/// password stretching); lookups are by this hash, and a found row is compared again in
/// constant time.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

impl KeyHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<KeyHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(KeyHash(out))
    }

    /// Equality without a data-dependent early exit.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_well_formed_and_hash_stably() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.reveal(), b.reveal());
        assert_eq!(a.reveal().len(), 4 + 64);
        let again = ApiKey::parse(a.reveal()).unwrap();
        assert!(again.hash().matches(&a.hash()));
        assert!(!b.hash().matches(&a.hash()));
        assert_eq!(format!("{a:?}"), "ApiKey([REDACTED])");
        assert_eq!(KeyHash::from_hex(&a.hash().to_hex()), Some(a.hash()));
        for bad in [
            "",
            "wdn_",
            "wdn_zz",
            &a.reveal().to_uppercase(),
            &format!("{}0", a.reveal()),
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }
}
