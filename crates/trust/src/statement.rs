//! The signed statement: what a publisher vouches for.
//!
//! ```json
//! {"schema":1,"id":"acme.hello","version":"1.0.0","publisher":"acme",
//!  "content_hash":"sha256:…","signed_at":"2025-01-01T00:00:00Z"}
//! ```
//!
//! Parsing is strict: exactly these keys, each once, with valid values.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use warden_manifest::{ExtensionId, PublisherName};

use crate::ContentHash;

/// The only statement schema this version understands.
pub const STATEMENT_SCHEMA: u64 = 1;

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Not JSON, or unknown, missing, duplicate or wrongly typed keys.
    #[error("malformed statement: {0}")]
    Json(String),
    #[error("unsupported statement schema {0} (expected {STATEMENT_SCHEMA})")]
    Schema(u64),
    #[error("statement `{key}` is invalid: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A statement binding an extension id, version and publisher to the content hash of a bundle.
///
/// Built only by [`Statement::new`] or by strict parsing, so every field holds a valid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    id: ExtensionId,
    version: semver::Version,
    publisher: PublisherName,
    content_hash: ContentHash,
    signed_at: String,
}

/// The wire form, field order as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    schema: u64,
    id: String,
    version: String,
    publisher: String,
    content_hash: String,
    signed_at: String,
}

fn invalid(key: &'static str, e: impl fmt::Display) -> StatementError {
    StatementError::Invalid {
        key,
        message: e.to_string(),
    }
}

impl Statement {
    pub fn new(
        id: ExtensionId,
        version: semver::Version,
        publisher: PublisherName,
        content_hash: ContentHash,
        signed_at: SystemTime,
    ) -> Self {
        Self {
            id,
            version,
            publisher,
            content_hash,
            signed_at: humantime::format_rfc3339_seconds(signed_at).to_string(),
        }
    }

    pub fn schema(&self) -> u64 {
        STATEMENT_SCHEMA
    }
    pub fn id(&self) -> &ExtensionId {
        &self.id
    }
    pub fn version(&self) -> &semver::Version {
        &self.version
    }
    pub fn publisher(&self) -> &PublisherName {
        &self.publisher
    }
    pub fn content_hash(&self) -> ContentHash {
        self.content_hash
    }
    /// RFC 3339 UTC time of signing, as the signer's clock saw it (informational only).
    pub fn signed_at(&self) -> &str {
        &self.signed_at
    }

    /// Compact JSON with the keys in a fixed order.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            schema: STATEMENT_SCHEMA,
            id: self.id.to_string(),
            version: self.version.to_string(),
            publisher: self.publisher.to_string(),
            content_hash: self.content_hash.to_string(),
            signed_at: self.signed_at.clone(),
        };
        // Serializing a struct of strings and an integer into a Vec cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Strict parse: exactly the six keys, each once (serde's derive refuses a repeated field),
    /// nothing after the object, schema 1, and every value valid.
    pub fn from_json(bytes: &[u8]) -> Result<Self, StatementError> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| StatementError::Json(e.to_string()))?;
        if wire.schema != STATEMENT_SCHEMA {
            return Err(StatementError::Schema(wire.schema));
        }
        let id = wire.id.parse().map_err(|e| invalid("id", e))?;
        let version = wire
            .version
            .parse::<semver::Version>()
            .map_err(|e| invalid("version", e))?;
        let publisher = wire
            .publisher
            .parse()
            .map_err(|e| invalid("publisher", e))?;
        let content_hash = wire
            .content_hash
            .parse::<ContentHash>()
            .map_err(|e| invalid("content_hash", e))?;
        humantime::parse_rfc3339(&wire.signed_at).map_err(|e| invalid("signed_at", e))?;
        Ok(Self {
            id,
            version,
            publisher,
            content_hash,
            signed_at: wire.signed_at,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub(crate) fn sample() -> Statement {
        Statement::new(
            "acme.hello".parse().unwrap(),
            "1.0.0".parse().unwrap(),
            "acme".parse().unwrap(),
            format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        )
    }

    fn hash() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn round_trip_with_exact_keys() {
        let s = sample();
        let json = String::from_utf8(s.to_json()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"schema":1,"id":"acme.hello","version":"1.0.0","publisher":"acme","content_hash":"{}","signed_at":"2023-11-14T22:13:20Z"}}"#,
                hash()
            )
        );
        assert_eq!(Statement::from_json(json.as_bytes()).unwrap(), s);
    }

    #[test]
    fn now_is_rfc3339_seconds() {
        let s = Statement::new(
            "a.b".parse().unwrap(),
            "0.1.0".parse().unwrap(),
            "p".parse().unwrap(),
            hash().parse().unwrap(),
            SystemTime::now(),
        );
        assert!(humantime::parse_rfc3339(s.signed_at()).is_ok());
        assert!(s.signed_at().ends_with('Z') && !s.signed_at().contains('.'));
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&sample().to_json()).unwrap();
        v.insert(field.into(), serde_json::from_str(value).unwrap());
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn refuses_bad_statements() {
        let good = String::from_utf8(sample().to_json()).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (with("extra", "1"), "unknown field"),
            (
                good.replacen(r#""schema":1,"#, "", 1),
                "missing field `schema`",
            ),
            (
                good.replacen(
                    r#""id":"acme.hello""#,
                    r#""id":"acme.hello","id":"acme.other""#,
                    1,
                ),
                "duplicate field `id`",
            ),
            (
                good.replacen(r#""schema":1"#, r#""schema":1,"schema":1"#, 1),
                "duplicate field `schema`",
            ),
            (with("schema", "2"), "schema 2"),
            (with("schema", "\"1\""), "invalid type"),
            (with("schema", "1.0"), "invalid type"),
            (with("id", "\"acme\""), "`id`"),
            (with("id", "\"Acme.Hello\""), "`id`"),
            (with("version", "\"1.0\""), "`version`"),
            (with("version", "\"01.0.0\""), "`version`"),
            (with("publisher", "\"ACME\""), "`publisher`"),
            (with("content_hash", "\"sha256:1234\""), "`content_hash`"),
            (
                with("content_hash", &format!("\"{}\"", hash().to_uppercase())),
                "`content_hash`",
            ),
            (with("signed_at", "\"yesterday\""), "`signed_at`"),
            (with("signed_at", "\"2024-01-01 00:00:00\""), "`signed_at`"),
            (with("signed_at", "\"2024-13-01T00:00:00Z\""), "`signed_at`"),
            (with("signed_at", "null"), "invalid type"),
            (format!("{good} {{}}"), "trailing characters"),
            (format!("[{good}]"), "malformed"),
            ("".to_string(), "malformed"),
        ];
        for (json, expected) in cases {
            let err = Statement::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
