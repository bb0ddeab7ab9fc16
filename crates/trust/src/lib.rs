//! Publisher keys, DSSE signatures over bundle statements, the operator's trust bundle, and
//! verification.
//!
//! - [`keys`]: Ed25519 keys in PEM (PKCS#8 private, SPKI public), interoperable with `openssl pkey`.
//! - [`statement`]: what a publisher signs: id, version, publisher, content hash, time.
//! - [`dsse`]: the detached signature file (a DSSE envelope), decoded strictly and with caps.
//! - [`trust`]: the trust bundle (`--trust FILE`): trusted and revoked keys per publisher.
//! - [`verify()`]: the only way to get a [`Verified<Bundle>`]; [`sign()`] makes envelopes.
//!
//! This crate never prints, never panics on input, and knows nothing about terminals or Wasmtime.

pub mod dsse;
pub mod keys;
pub mod sign;
pub mod statement;
pub mod trust;
pub mod verify;

pub use warden_bundle::{Bundle, ContentHash};

pub use dsse::{
    DsseError, Envelope, EnvelopeSignature, MAX_ENVELOPE_BYTES, MAX_SIGNATURES, PAYLOAD_TYPE,
};
pub use keys::{KeyError, KeyId, PublicKey, SigningKey, Zeroizing};
pub use sign::{SignError, sign};
pub use statement::{Statement, StatementError};
pub use trust::{KeyStatus, TrustBundle, TrustError, TrustedPublisher, publisher_entry};
pub use verify::{Signed, Verified, VerifyError, verify};
