//! Who is asking: the operator's tokens (admin, runner) and the tenants' API keys, all as
//! `Authorization: Bearer ...`. Tokens are compared in constant time; API keys are looked up
//! by their hash (only hashes are stored) and compared again in full.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warden_host::{ApiKey, TenantName};
use warden_registry::Registry;

use crate::error::ApiError;

/// An operator token (admin or runner), kept as its SHA-256 so that comparing costs the same
/// whatever the candidate's length.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is shorter than {MIN_TOKEN} characters")]
    TooShort,
    #[error("the token has characters other than printable ASCII")]
    NotPrintable,
}

/// Tokens shorter than this are refused at start: they could be guessed.
pub const MIN_TOKEN: usize = 32;

impl Token {
    /// A token from its text (surrounding whitespace, e.g. a file's last newline, is ignored).
    pub fn new(text: &str) -> Result<Token, TokenError> {
        let t = text.trim();
        if t.len() < MIN_TOKEN {
            return Err(TokenError::TooShort);
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        Ok(Token(digest(t.as_bytes())))
    }

    pub(crate) fn accepts(&self, candidate: &str) -> bool {
        self.0.ct_eq(&digest(candidate.as_bytes())).into()
    }

    /// A key for `label` derived from the token (so that changing the token changes it).
    pub(crate) fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"warden token derive v1\0");
        h.update(self.0);
        h.update(label);
        h.finalize().into()
    }
}

/// The bearer credential of a request, if it has exactly one well-formed one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Checks an operator token: 401 without a credential or with a wrong one.
pub fn operator(headers: &HeaderMap, token: &Token, what: &str) -> Result<(), ApiError> {
    match bearer(headers) {
        Some(c) if token.accepts(c) => Ok(()),
        Some(c) if ApiKey::parse(c).is_some() => Err(ApiError::forbidden(format!(
            "a tenant's API key does not give access to the {what}"
        ))),
        Some(_) => Err(ApiError::unauthorized(format!("the {what} token is wrong"))),
        None => Err(ApiError::unauthorized(format!(
            "the {what} needs `Authorization: Bearer <token>`"
        ))),
    }
}

/// The tenant whose API key the request carries: 401 without one or with an unknown one.
pub fn tenant(headers: &HeaderMap, registry: &dyn Registry) -> Result<TenantName, ApiError> {
    let Some(text) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "the gateway needs a tenant's API key: `Authorization: Bearer wdn_...`",
        ));
    };
    let Some(key) = ApiKey::parse(text) else {
        return Err(ApiError::unauthorized("that is not a warden API key"));
    };
    match registry.tenant_by_key(&key.hash()) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(ApiError::unauthorized("the API key is not known")),
        Err(e) => Err(crate::error::registry_failed(&e)),
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use http::HeaderValue;

    use super::*;

    fn with(auth: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn tokens_must_be_long_and_printable() {
        assert!(matches!(Token::new("short"), Err(TokenError::TooShort)));
        assert!(matches!(
            Token::new(&format!("{}\u{7f}", "a".repeat(40))),
            Err(TokenError::NotPrintable)
        ));
        assert!(Token::new(&format!("{}\n", "a".repeat(40))).is_ok());
    }

    #[test]
    fn operator_tokens_are_checked_whole() {
        let t = Token::new(&"s".repeat(40)).unwrap();
        let ok = format!("Bearer {}", "s".repeat(40));
        assert!(operator(&with(&[&ok]), &t, "admin API").is_ok());
        let e = operator(
            &with(&[&format!("Bearer {}", "s".repeat(39))]),
            &t,
            "admin API",
        )
        .unwrap_err();
        assert_eq!(e.status, 401);
        assert_eq!(
            operator(&with(&[]), &t, "admin API").unwrap_err().status,
            401
        );
        // Two credentials: neither is taken.
        assert_eq!(
            operator(&with(&[&ok, &ok]), &t, "admin API")
                .unwrap_err()
                .status,
            401
        );
        let key = ApiKey::generate();
        let e = operator(
            &with(&[&format!("Bearer {}", key.reveal())]),
            &t,
            "admin API",
        )
        .unwrap_err();
        assert_eq!(e.status, 403);
    }
}
