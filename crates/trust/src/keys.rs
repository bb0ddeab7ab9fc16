//! Ed25519 publisher keys in PEM: PKCS#8 private keys and SPKI public keys, as written and read
//! by `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`.
//!
//! Only Ed25519 is accepted. Public keys must be canonical encodings of points that are not of
//! small order, so a key can never be one that "verifies" almost any signature.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef;
use ed25519_dalek::pkcs8::{Document, SecretDocument};
use ed25519_dalek::pkcs8::{ObjectIdentifier, PrivateKeyInfo};
use sha2::{Digest as _, Sha256};

pub use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;

/// Largest PEM text accepted for one key. An Ed25519 key in PEM is about 120 bytes (PKCS#8 v2
/// with the public key, about 170); the cap keeps a hostile file from costing memory or time.
pub const MAX_PEM_BYTES: usize = 4 * 1024;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER prefix of an Ed25519 PKCS#8 v1 PrivateKeyInfo (RFC 8410), followed by the 32-byte seed.
/// This is exactly what `openssl genpkey -algorithm ed25519` writes.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key PEM is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge,
    #[error("not a PEM key: {0}")]
    Pem(String),
    #[error("no PEM block (a line `-----BEGIN ...-----`) found: this is not a key file")]
    NoPem,
    #[error("expected a PEM block labelled `{expected}`, found `{found}`{hint}")]
    WrongLabel {
        expected: &'static str,
        found: String,
        hint: &'static str,
    },
    #[error("unsupported key algorithm {algorithm}: only Ed25519 keys are accepted")]
    UnsupportedAlgorithm { algorithm: String },
    #[error("malformed Ed25519 key: {0}")]
    Malformed(String),
    #[error("the public key is not a canonical encoding of a curve point")]
    NonCanonical,
    #[error("weak public key (a point of small order) refused")]
    Weak,
}

/// The id of a public key: `sha256:<hex>` of its 32 raw bytes. It is the DSSE `keyid` and what
/// users see. It identifies a key; it never selects which keys are trusted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    fn of(raw: &[u8; 32]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(raw))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// So that `verified.signers().join(", ")` works.
impl Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for KeyId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    /// Strict: `sha256:` followed by exactly 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(KeyError::Malformed(format!(
                "key id {s:?} is not `sha256:` followed by 64 lowercase hex digits"
            )))
        }
    }
}

/// Names the algorithms people most often hand us by mistake.
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "EC (ECDSA)",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.1" => "DSA",
        _ => return format!("with OID {oid}"),
    };
    format!("{name} ({oid})")
}

/// Hints for PEM labels that are keys, just not the kind we read.
fn label_hint(found: &str) -> &'static str {
    match found {
        "RSA PRIVATE KEY" | "RSA PUBLIC KEY" => " (an RSA key: only Ed25519 keys are accepted)",
        "EC PRIVATE KEY" => " (an EC key: only Ed25519 keys are accepted)",
        "ENCRYPTED PRIVATE KEY" => {
            " (an encrypted key: decrypt it with `openssl pkey -in KEY -out PLAIN`)"
        }
        "OPENSSH PRIVATE KEY" => " (an OpenSSH key: convert it to PKCS#8 PEM first)",
        "PRIVATE KEY" => " (this is a private key; a public key was expected)",
        "PUBLIC KEY" => " (this is a public key; a private key was expected)",
        _ => "",
    }
}

/// Checked before the PEM parser sees the text: its error for a file that holds no PEM block
/// at all ("preamble contains invalid data (NUL byte)") names a byte that is not there.
fn check_size(pem: &str) -> Result<(), KeyError> {
    if pem.len() > MAX_PEM_BYTES {
        Err(KeyError::TooLarge)
    } else if !pem.contains("-----BEGIN ") {
        Err(KeyError::NoPem)
    } else {
        Ok(())
    }
}

fn pem_error(e: impl fmt::Display) -> KeyError {
    KeyError::Pem(e.to_string())
}

fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let mut body = Zeroizing::new(String::with_capacity(der.len().div_ceil(3) * 4));
    STANDARD.encode_string(der, &mut body);
    let mut out = Zeroizing::new(String::with_capacity(body.len() + 2 * label.len() + 40));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // RFC 7468: lines of 64 characters. Our bodies are at most 64, so this is one line, as openssl writes.
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// An Ed25519 private key of a publisher. Its `Debug` shows only the key id.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Reads a PKCS#8 `PRIVATE KEY` PEM (v1 as written by `openssl genpkey -algorithm ed25519`,
    /// or v2 with the public key, which must then match).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        check_size(pem)?;
        let (label, doc) = SecretDocument::from_pem(pem.trim()).map_err(pem_error)?;
        if label != "PRIVATE KEY" {
            return Err(KeyError::WrongLabel {
                expected: "PRIVATE KEY",
                found: label.to_string(),
                hint: label_hint(label),
            });
        }
        let info = PrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        if info.algorithm.oid != ED25519_OID {
            return Err(KeyError::UnsupportedAlgorithm {
                algorithm: algorithm_name(&info.algorithm.oid),
            });
        }
        let key = ed25519_dalek::SigningKey::try_from(info)
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        Ok(Self(key))
    }

    /// PKCS#8 v1 PEM, byte for byte what `openssl genpkey -algorithm ed25519` writes.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let mut der = Zeroizing::new([0u8; 48]);
        der[..16].copy_from_slice(&PKCS8_PREFIX);
        der[16..].copy_from_slice(self.0.as_bytes());
        pem_encode("PRIVATE KEY", &der[..])
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs a message (the DSSE pre-authentication encoding).
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key: canonical, not of small order.
#[derive(Clone, Copy)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Reads an SPKI `PUBLIC KEY` PEM, as written by `openssl pkey -pubout`.
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        check_size(pem)?;
        let (label, doc) = Document::from_pem(pem.trim()).map_err(pem_error)?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::WrongLabel {
                expected: "PUBLIC KEY",
                found: label.to_string(),
                hint: label_hint(label),
            });
        }
        let spki = SubjectPublicKeyInfoRef::try_from(doc.as_bytes())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        if spki.algorithm.oid != ED25519_OID {
            return Err(KeyError::UnsupportedAlgorithm {
                algorithm: algorithm_name(&spki.algorithm.oid),
            });
        }
        if spki.algorithm.parameters.is_some() {
            return Err(KeyError::Malformed(
                "Ed25519 keys have no algorithm parameters".into(),
            ));
        }
        let raw: [u8; 32] = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KeyError::Malformed("the public key is not 32 bytes".into()))?;
        Self::from_bytes(&raw)
    }

    /// A key from its 32 raw bytes, refusing non-canonical encodings and small-order points.
    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map_err(|_| KeyError::Malformed("the bytes are not a point on the curve".into()))?;
        // Decompression tolerates y >= p and a "negative zero" x; re-encoding shows those.
        if key.to_edwards().compress().to_bytes() != *raw {
            return Err(KeyError::NonCanonical);
        }
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self(key))
    }

    /// SPKI PEM, byte for byte what `openssl pkey -pubout` writes.
    pub fn to_spki_pem(&self) -> String {
        let mut der = [0u8; 44];
        der[..12].copy_from_slice(&SPKI_PREFIX);
        der[12..].copy_from_slice(self.0.as_bytes());
        pem_encode("PUBLIC KEY", &der).to_string()
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// `sha256:<hex>` of the 32 raw bytes.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self.0.as_bytes())
    }

    /// Strict Ed25519 verification: canonical S, R not of small order.
    pub(crate) fn verify_strict(&self, message: &[u8], sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.0.verify_strict(message, &sig).is_ok()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}
impl Eq for PublicKey {}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
        pem_encode(label, der).to_string()
    }

    fn spki(raw: &[u8; 32]) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(raw);
        pem("PUBLIC KEY", &der)
    }

    #[test]
    fn round_trip() {
        let key = SigningKey::generate();
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = key.public_key().to_spki_pem();
        assert_eq!(public.lines().count(), 3);
        assert_eq!(PublicKey::from_spki_pem(&public).unwrap(), key.public_key());
        // Without the trailing newline, and with CRLF.
        assert!(PublicKey::from_spki_pem(public.trim_end()).is_ok());
        assert!(PublicKey::from_spki_pem(&public.replace('\n', "\r\n")).is_ok());
    }

    #[test]
    fn key_id_is_sha256_of_raw_bytes() {
        let key = SigningKey::generate().public_key();
        let id = key.key_id();
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(key.to_bytes())));
        assert_eq!(id.as_str(), expected);
        assert_eq!(id.as_str().parse::<KeyId>().unwrap(), id);
        for bad in [
            "",
            "sha256:",
            "sha256:ABCD",
            "md5:00",
            &id.as_str().to_uppercase(),
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad:?}");
        }
        let ids = [id.clone(), id];
        assert!(ids.join(", ").contains(", sha256:"));
    }

    #[test]
    fn v2_private_key_with_matching_public_key() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = SigningKey::generate();
        // ed25519-dalek writes PKCS#8 v2 (with the public key).
        let v2 = key
            .0
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_pem(&v2).unwrap().public_key(),
            key.public_key()
        );
    }

    #[test]
    fn refuses_small_order_and_non_canonical_keys() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_spki_pem(&spki(&identity)).unwrap_err(),
            KeyError::Weak
        );
        // All-zero y: a point of order 4.
        assert_eq!(
            PublicKey::from_spki_pem(&spki(&[0u8; 32])).unwrap_err(),
            KeyError::Weak
        );
        // y = p + 1 (a non-canonical encoding of the identity's y).
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(PublicKey::from_spki_pem(&spki(&non_canonical)).is_err());
        // The identity with the sign bit of x set: "negative zero".
        let mut neg_zero = identity;
        neg_zero[31] |= 0x80;
        assert!(PublicKey::from_spki_pem(&spki(&neg_zero)).is_err());
    }

    #[test]
    fn refuses_other_algorithms_with_a_clear_error() {
        // An X25519 SPKI (OID 1.3.101.110), same shape as Ed25519.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&[9u8; 32]);
        let err = PublicKey::from_spki_pem(&pem("PUBLIC KEY", &der)).unwrap_err();
        assert!(err.to_string().contains("X25519"), "{err}");
        // An EC P-256 public key (openssl ecparam -genkey -name prime256v1 | openssl ec -pubout).
        let ec = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEIU5ztVfj72H7s2uJJjygzoNyCJLO\nwklh2ptkzGBeTLFwv56vCn3iCFjvgyDxgpfSULz1Q4Q/fV3s7DI7d+y9qA==\n-----END PUBLIC KEY-----\n";
        let err = PublicKey::from_spki_pem(ec).unwrap_err();
        assert!(err.to_string().contains("EC"), "{err}");
        let ed448 = "-----BEGIN PUBLIC KEY-----\nMEMwBQYDK2VxAzoAzr7QZbx50ZBE5TOvHfZAlpceVmq4x4dsFJ7os7ziXGDEwTzK\n05K6u0eo5hL8lb7bsqCFpbUSPyMA\n-----END PUBLIC KEY-----\n";
        let err = PublicKey::from_spki_pem(ed448).unwrap_err();
        assert!(err.to_string().contains("Ed448"), "{err}");
        let err = SigningKey::from_pkcs8_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("RSA"), "{err}");
        let public = SigningKey::generate().public_key().to_spki_pem();
        let err = SigningKey::from_pkcs8_pem(&public).unwrap_err();
        assert!(err.to_string().contains("public key"), "{err}");
    }

    #[test]
    fn refuses_garbage_and_huge_input() {
        for bad in [
            "",
            "hello",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(PublicKey::from_spki_pem(bad).is_err(), "{bad:?}");
            assert!(SigningKey::from_pkcs8_pem(bad).is_err(), "{bad:?}");
        }
        let huge = "A".repeat(MAX_PEM_BYTES + 1);
        assert_eq!(
            PublicKey::from_spki_pem(&huge).unwrap_err(),
            KeyError::TooLarge
        );
        assert_eq!(
            SigningKey::from_pkcs8_pem(&huge).unwrap_err(),
            KeyError::TooLarge
        );
        // Trailing data after the key inside the DER.
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&SigningKey::generate().public_key().to_bytes());
        der.push(0);
        assert!(PublicKey::from_spki_pem(&pem("PUBLIC KEY", &der)).is_err());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key = SigningKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains("sha256:"));
        let pem = key.to_pkcs8_pem();
        let body = pem.lines().nth(1).unwrap();
        assert!(!shown.contains(&body[24..]));
    }

    /// Issue 9, finding 7: `sign --key /etc/passwd` spoke of a NUL byte that is not there.
    #[test]
    fn a_file_without_a_pem_block_is_named_as_such() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n";
        let e = SigningKey::from_pkcs8_pem(passwd).err().unwrap();
        assert_eq!(e, KeyError::NoPem);
        assert!(e.to_string().contains("not a key file"), "{e}");
        assert_eq!(
            PublicKey::from_spki_pem(passwd).err(),
            Some(KeyError::NoPem)
        );
    }
}
