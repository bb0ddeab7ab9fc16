//! Who a call is for, told to the remote as signed claims rather than raw headers: a compact
//! JWS (RFC 7515) signed with Ed25519 (`alg: EdDSA`, RFC 8037) by the host's claims key, sent
//! as `authorization: Bearer <token>` (a JSON-RPC request's header, a gRPC call's metadata).
//!
//! ```text
//! header  {"alg":"EdDSA","typ":"JWT","kid":"<first 16 hex of the public key's SHA-256>"}
//! payload {"iss":"warden","sub":"<tenant>","ext":"<extension id>","aud":"<endpoint>",
//!          "iat":<unix s>,"exp":<iat + 60>,"jti":"<128 random bits, hex>"}
//! ```
//!
//! Short-lived (60 s) and bound to the endpoint it was made for: a token a remote receives
//! cannot be replayed to another vendor's endpoint, nor for long. The remote checks the
//! signature with the operator's public key (PEM, `ClaimsKey::public_pem`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How long a token is good for.
pub const CLAIMS_TTL_SECONDS: u64 = 60;

/// The host's key for signing claims (from a 32-byte seed the host keeps, 0600).
pub struct ClaimsKey {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for ClaimsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimsKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    sub: &'a str,
    ext: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

impl ClaimsKey {
    pub fn from_seed(seed: &[u8; 32]) -> ClaimsKey {
        let key = SigningKey::from_bytes(seed);
        let kid = hex16(&Sha256::digest(key.verifying_key().as_bytes()));
        ClaimsKey { key, kid }
    }

    /// The key's id (`kid`): the first 16 hex digits of the public key's SHA-256.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, PEM (SPKI), for the remotes to check tokens with.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap_or_default()
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// A token for a call of `tenant` to `extension` at `audience` (the endpoint), made at
    /// `now` (Unix seconds), with `nonce` as its `jti`.
    pub fn token(
        &self,
        tenant: &str,
        extension: &str,
        audience: &str,
        now: u64,
        nonce: [u8; 16],
    ) -> String {
        let header = Header {
            alg: "EdDSA",
            typ: "JWT",
            kid: &self.kid,
        };
        let claims = Claims {
            iss: "warden",
            sub: tenant,
            ext: extension,
            aud: audience,
            iat: now,
            exp: now.saturating_add(CLAIMS_TTL_SECONDS),
            jti: nonce.iter().map(|b| format!("{b:02x}")).collect(),
        };
        // Serializing strings and numbers cannot fail.
        let part = |v: Vec<u8>| URL_SAFE_NO_PAD.encode(v);
        let signing_input = format!(
            "{}.{}",
            part(serde_json::to_vec(&header).unwrap_or_default()),
            part(serde_json::to_vec(&claims).unwrap_or_default())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", part(signature.to_bytes().to_vec()))
    }
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn tokens_are_signed_short_lived_and_bound_to_their_endpoint() {
        let key = ClaimsKey::from_seed(&[7; 32]);
        let t = key.token(
            "alpha",
            "vendor.ext",
            "https://ext.test:443/rpc",
            1_000,
            [1; 16],
        );
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "alpha");
        assert_eq!(claims["ext"], "vendor.ext");
        assert_eq!(claims["aud"], "https://ext.test:443/rpc");
        assert_eq!(claims["exp"], 1_060);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], key.kid());
        let vk = VerifyingKey::from_bytes(&key.public_key()).unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        vk.verify(input.as_bytes(), &sig).unwrap();
        // One changed byte of the claims fails the signature.
        let forged = format!("{}.{}x", parts[0], parts[1]);
        assert!(vk.verify(forged.as_bytes(), &sig).is_err());
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
