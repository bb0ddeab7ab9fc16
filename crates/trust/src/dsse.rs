//! The detached signature file: a DSSE envelope (<https://github.com/secure-systems-lab/dsse>).
//!
//! ```json
//! {
//!   "payloadType": "application/vnd.warden.statement.v1+json",
//!   "payload": "<base64 of the statement JSON>",
//!   "signatures": [{ "keyid": "sha256:…", "sig": "<base64 of 64 bytes>" }]
//! }
//! ```
//!
//! Decoding is strict and bounded: the size is capped before parsing, unknown or repeated
//! fields are refused, base64 must be canonical, and each signature is exactly 64 bytes.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyId, PublicKey};
use crate::statement::{Statement, StatementError};

/// The DSSE payload type of a warden statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.warden.statement.v1+json";

/// Largest signature file read. A real one is well under 2 KiB even with
/// [`MAX_SIGNATURES`] signatures; the cap is checked before any parsing.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Most signatures one envelope may carry: verification tries every signature against every
/// key of the publisher, so the count bounds the work an attacker can cause.
pub const MAX_SIGNATURES: usize = 16;

/// Longest `keyid` accepted (ours are `sha256:` + 64 hex digits = 71 bytes).
const MAX_KEYID_BYTES: usize = 128;

/// Why a signature file was refused.
#[derive(Debug, thiserror::Error)]
pub enum DsseError {
    #[error("signature file is {size} bytes, more than the limit of {MAX_ENVELOPE_BYTES}")]
    TooLarge { size: u64 },
    #[error("reading signature file {path:?}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or unknown, missing, duplicate or wrongly typed fields.
    #[error("malformed signature envelope: {0}")]
    Json(String),
    #[error("unexpected payloadType {found:?} (expected {PAYLOAD_TYPE:?})")]
    PayloadType { found: String },
    #[error("`{field}` is not canonical standard base64: {message}")]
    Base64 { field: String, message: String },
    #[error("signatures[{index}] is {len} bytes, an Ed25519 signature is 64")]
    SignatureLength { index: usize, len: usize },
    #[error("signatures[{index}].keyid is invalid: {message}")]
    KeyId { index: usize, message: String },
    #[error("the envelope has no signatures")]
    NoSignatures,
    #[error("the envelope has {count} signatures, more than the limit of {MAX_SIGNATURES}")]
    TooManySignatures { count: usize },
    #[error("the envelope's payload is empty")]
    EmptyPayload,
}

/// One signature over the envelope's pre-authentication encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSignature {
    keyid: KeyId,
    sig: [u8; 64],
}

impl EnvelopeSignature {
    /// The id of the key that claims to have made this signature. Only a claim: verification
    /// tries every trusted key and refuses an envelope whose claim disagrees with the key.
    pub fn keyid(&self) -> &KeyId {
        &self.keyid
    }
    pub fn sig(&self) -> &[u8; 64] {
        &self.sig
    }
}

/// A decoded DSSE envelope. Built only by [`Envelope::from_json`] / [`Envelope::read_file`] or
/// by signing, so it always holds our payload type, 1..=16 signatures and a non-empty payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    payload_type: String,
    payload: Vec<u8>,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<WireSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    keyid: String,
    sig: String,
}

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

fn decode_base64(field: String, text: &str) -> Result<Vec<u8>, DsseError> {
    STANDARD.decode(text).map_err(|e| DsseError::Base64 {
        field,
        message: e.to_string(),
    })
}

impl Envelope {
    /// A new envelope over `statement`, signed by `key`.
    pub(crate) fn new_signed(statement: &Statement, key: &crate::SigningKey) -> Self {
        let mut env = Self {
            payload_type: PAYLOAD_TYPE.to_string(),
            payload: statement.to_json(),
            signatures: Vec::new(),
        };
        env.push_signature(key);
        env
    }

    /// Appends a signature by `key` over this envelope's payload.
    pub(crate) fn push_signature(&mut self, key: &crate::SigningKey) {
        let sig = key.sign_raw(&self.pae());
        self.signatures.push(EnvelopeSignature {
            keyid: key.public_key().key_id(),
            sig,
        });
    }

    /// Strict decode of a signature file's bytes; the size cap is checked first.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DsseError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DsseError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        let wire: WireEnvelope =
            serde_json::from_slice(bytes).map_err(|e| DsseError::Json(e.to_string()))?;
        if wire.payload_type != PAYLOAD_TYPE {
            return Err(DsseError::PayloadType {
                found: wire.payload_type,
            });
        }
        if wire.signatures.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        if wire.signatures.len() > MAX_SIGNATURES {
            return Err(DsseError::TooManySignatures {
                count: wire.signatures.len(),
            });
        }
        let payload = decode_base64("payload".into(), &wire.payload)?;
        if payload.is_empty() {
            return Err(DsseError::EmptyPayload);
        }
        let mut signatures = Vec::with_capacity(wire.signatures.len());
        for (index, s) in wire.signatures.into_iter().enumerate() {
            if s.keyid.len() > MAX_KEYID_BYTES {
                return Err(DsseError::KeyId {
                    index,
                    message: format!("longer than {MAX_KEYID_BYTES} bytes"),
                });
            }
            let keyid = s.keyid.parse::<KeyId>().map_err(|e| DsseError::KeyId {
                index,
                message: e.to_string(),
            })?;
            let raw = decode_base64(format!("signatures[{index}].sig"), &s.sig)?;
            let sig: [u8; 64] =
                raw.as_slice()
                    .try_into()
                    .map_err(|_| DsseError::SignatureLength {
                        index,
                        len: raw.len(),
                    })?;
            signatures.push(EnvelopeSignature { keyid, sig });
        }
        Ok(Self {
            payload_type: wire.payload_type,
            payload,
            signatures,
        })
    }

    /// Reads and decodes a signature file, refusing one larger than [`MAX_ENVELOPE_BYTES`]
    /// before reading it (and never reading more than the cap plus one byte, should it grow).
    pub fn read_file(path: &Path) -> Result<Self, DsseError> {
        let io = |source| DsseError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Check the type before opening: opening a FIFO would block until a writer appears.
        let not_a_file = || {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ))
        };
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(not_a_file());
        }
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(not_a_file());
        }
        if meta.len() > MAX_ENVELOPE_BYTES as u64 {
            return Err(DsseError::TooLarge { size: meta.len() });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_ENVELOPE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        Self::from_json(&bytes)
    }

    /// Pretty JSON with a trailing newline, as written to `NAME.wext.sig`.
    pub fn to_json_pretty(&self) -> String {
        let wire = WireEnvelope {
            payload_type: self.payload_type.clone(),
            payload: STANDARD.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| WireSignature {
                    keyid: s.keyid.to_string(),
                    sig: STANDARD.encode(s.sig),
                })
                .collect(),
        };
        // Serializing strings into a String cannot fail.
        let mut out = serde_json::to_string_pretty(&wire).unwrap_or_default();
        out.push('\n');
        out
    }

    pub fn payload_type(&self) -> &str {
        &self.payload_type
    }

    /// The raw statement bytes that were signed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub fn signatures(&self) -> &[EnvelopeSignature] {
        &self.signatures
    }

    /// The payload, strictly parsed. Unverified: only [`crate::verify()`] says whether to trust it.
    pub fn statement(&self) -> Result<Statement, StatementError> {
        Statement::from_json(&self.payload)
    }

    /// The bytes every signature covers.
    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// Whether one of the signatures is valid under `key` (strict verification).
    pub fn is_signed_by(&self, key: &PublicKey) -> bool {
        let pae = self.pae();
        self.signatures
            .iter()
            .any(|s| key.verify_strict(&pae, &s.sig))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::SigningKey;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    fn statement() -> Statement {
        Statement::new(
            "acme.hello".parse().unwrap(),
            "1.0.0".parse().unwrap(),
            "acme".parse().unwrap(),
            format!("sha256:{}", "00".repeat(32)).parse().unwrap(),
            std::time::SystemTime::now(),
        )
    }

    fn wire(env: &Envelope) -> serde_json::Value {
        serde_json::from_str(&env.to_json_pretty()).unwrap()
    }

    #[test]
    fn round_trip() {
        let key = SigningKey::generate();
        let env = Envelope::new_signed(&statement(), &key);
        let text = env.to_json_pretty();
        assert!(text.starts_with(
            "{\n  \"payloadType\": \"application/vnd.warden.statement.v1+json\",\n  \"payload\": \""
        ));
        let back = Envelope::from_json(text.as_bytes()).unwrap();
        assert_eq!(back, env);
        assert!(back.is_signed_by(&key.public_key()));
        assert!(!back.is_signed_by(&SigningKey::generate().public_key()));
        assert_eq!(back.statement().unwrap(), statement_of(&env));
        assert_eq!(back.signatures()[0].keyid(), &key.public_key().key_id());
    }

    fn statement_of(env: &Envelope) -> Statement {
        Statement::from_json(env.payload()).unwrap()
    }

    fn refuse(value: serde_json::Value) -> String {
        Envelope::from_json(value.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn refuses_malformed_envelopes() {
        let key = SigningKey::generate();
        let env = Envelope::new_signed(&statement(), &key);
        let good = wire(&env);

        let mut v = good.clone();
        v["payloadType"] = "application/json".into();
        assert!(refuse(v).contains("payloadType"));

        let mut v = good.clone();
        v["extra"] = 1.into();
        assert!(refuse(v).contains("unknown field"));

        let mut v = good.clone();
        v["signatures"][0]["extra"] = 1.into();
        assert!(refuse(v).contains("unknown field"));

        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("payload");
        assert!(refuse(v).contains("missing field"));

        let mut v = good.clone();
        v["signatures"] = serde_json::json!([]);
        assert!(refuse(v).contains("no signatures"));

        let mut v = good.clone();
        let sigs = vec![good["signatures"][0].clone(); MAX_SIGNATURES + 1];
        v["signatures"] = sigs.into();
        assert!(refuse(v).contains("17 signatures"));

        let mut v = good.clone();
        v["signatures"][0]["sig"] = STANDARD.encode([0u8; 63]).into();
        assert!(refuse(v).contains("63 bytes"));

        let mut v = good.clone();
        v["signatures"][0]["sig"] = STANDARD.encode([0u8; 65]).into();
        assert!(refuse(v).contains("65 bytes"));

        let mut v = good.clone();
        v["signatures"][0]["keyid"] = "".into();
        assert!(refuse(v).contains("keyid"));

        let mut v = good.clone();
        v["signatures"][0]["keyid"] = "k".repeat(10_000).into();
        assert!(refuse(v).contains("keyid"));

        let mut v = good.clone();
        v["payload"] = "".into();
        assert!(refuse(v).contains("empty"));

        // Base64: no padding, URL alphabet, whitespace, non-canonical trailing bits.
        let payload = good["payload"].as_str().unwrap().to_string();
        let sig = good["signatures"][0]["sig"].as_str().unwrap().to_string();
        assert!(sig.ends_with("=="));
        let mut non_canonical = sig.clone().into_bytes();
        let i = non_canonical.len() - 3;
        // The last data character of a 64-byte signature carries 4 unused bits.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let pos = ALPHABET
            .iter()
            .position(|&c| c == non_canonical[i])
            .unwrap();
        non_canonical[i] = ALPHABET[pos ^ 1];
        let non_canonical = String::from_utf8(non_canonical).unwrap();
        let decodes_same = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        )
        .decode(&non_canonical)
        .unwrap()
            == STANDARD.decode(&sig).unwrap();
        assert!(
            decodes_same,
            "the tampered text must decode to the same bytes when lax"
        );
        for bad_sig in [
            sig.trim_end_matches('=').to_string(),
            sig.replace('+', "-").replace('/', "_"),
            format!(" {sig}"),
            format!("{}\n{}", &sig[..40], &sig[40..]),
            non_canonical,
        ] {
            if bad_sig == sig {
                continue;
            }
            let mut v = good.clone();
            v["signatures"][0]["sig"] = bad_sig.clone().into();
            assert!(refuse(v).contains("base64"), "{bad_sig}");
        }
        let mut v = good.clone();
        v["payload"] = format!("{payload}=").into();
        assert!(refuse(v).contains("base64"));

        // Duplicate fields, at both levels.
        let text = env.to_json_pretty();
        let dup = text.replacen(
            "\"payloadType\":",
            "\"payloadType\": \"application/vnd.warden.statement.v1+json\",\n  \"payloadType\":",
            1,
        );
        assert!(
            Envelope::from_json(dup.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("duplicate field")
        );
        let dup = text.replacen("\"sig\":", "\"keyid\": \"x\", \"sig\":", 1);
        assert!(
            Envelope::from_json(dup.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("duplicate field")
        );
    }

    #[test]
    fn caps_size_before_parsing() {
        let huge = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            Envelope::from_json(&huge),
            Err(DsseError::TooLarge { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.sig");
        std::fs::write(&path, &huge).unwrap();
        assert!(matches!(
            Envelope::read_file(&path),
            Err(DsseError::TooLarge { size }) if size == huge.len() as u64
        ));
        let missing = dir.path().join("missing.sig");
        let err = Envelope::read_file(&missing).unwrap_err();
        assert!(matches!(err, DsseError::Io { ref path, .. } if path == &missing));
        assert!(Envelope::read_file(dir.path()).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("sig.fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = Envelope::read_file(&fifo).unwrap_err();
        assert!(err.to_string().contains("sig.fifo"), "{err}");
    }
}
