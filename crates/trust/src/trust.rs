//! The operator's trust bundle: which publisher keys are trusted, which are revoked.
//!
//! ```toml
//! [[publisher]]
//! name = "acme"
//! keys = ["-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----\n"]   # SPKI PEM strings
//! revoked = []                                                           # optional, PEM strings
//! threshold = 1                                                          # optional, default 1
//! ```
//!
//! Read strictly: unknown keys, wrong types, unparseable or weak keys, a publisher listed twice,
//! and a key listed under two publishers are errors naming the key path and line. Within a
//! publisher the same key listed twice counts once, and a key that is also in `revoked` is revoked.
//! `threshold` is how many distinct trusted keys must have signed; it must be between 1 and the
//! number of distinct non-revoked keys.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use warden_manifest::PublisherName;
use warden_manifest::TomlError;
use warden_manifest::strict::{Document, MAX_DOCUMENT_BYTES, Value};

use crate::keys::{KeyId, PublicKey};

/// Largest trust bundle file read (the strict TOML reader's own limit).
pub const MAX_TRUST_BUNDLE_BYTES: usize = MAX_DOCUMENT_BYTES;

/// Most keys one publisher may list in `keys`. Verification tries each signature against each
/// trusted key, so this bounds the work per signature file; real publishers have a handful.
pub const MAX_KEYS_PER_PUBLISHER: usize = 64;

/// Most keys one publisher may list in `revoked` (also tried, to explain a denial).
pub const MAX_REVOKED_PER_PUBLISHER: usize = 256;

/// Why a trust bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("reading trust bundle {path:?}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "trust bundle {path:?} is {size} bytes, more than the limit of {MAX_TRUST_BUNDLE_BYTES}"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("trust bundle {path:?} is not UTF-8")]
    NotUtf8 { path: PathBuf },
    /// A problem in the document, located by key path and line.
    #[error("{}{error}", path.as_ref().map(|p| format!("trust bundle {p:?}: ")).unwrap_or_else(|| "trust bundle: ".into()))]
    Toml {
        path: Option<PathBuf>,
        error: TomlError,
    },
}

impl From<TomlError> for TrustError {
    fn from(error: TomlError) -> Self {
        TrustError::Toml { path: None, error }
    }
}

/// One publisher's entry.
#[derive(Debug, Clone)]
pub struct TrustedPublisher {
    name: PublisherName,
    keys: Vec<PublicKey>,
    revoked: Vec<PublicKey>,
    threshold: usize,
}

impl TrustedPublisher {
    pub fn name(&self) -> &PublisherName {
        &self.name
    }
    /// Distinct trusted keys, none of them revoked, in file order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
    /// Distinct revoked keys.
    pub fn revoked(&self) -> &[PublicKey] {
        &self.revoked
    }
    /// How many distinct trusted keys must have signed (1..=keys().len()).
    pub fn threshold(&self) -> usize {
        self.threshold
    }
}

/// Where a key appears in the trust bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Trusted,
    Revoked,
}

/// The parsed trust bundle.
#[derive(Debug, Clone, Default)]
pub struct TrustBundle {
    publishers: Vec<TrustedPublisher>,
    /// Every key of every publisher: which publisher (index) and whether revoked.
    index: HashMap<KeyId, (usize, KeyStatus)>,
}

fn parse_keys(
    value: Option<Value<'_, '_>>,
    max: usize,
) -> Result<Vec<(PublicKey, TomlError)>, TomlError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let items = value.as_array()?;
    if items.len() > max {
        return Err(value.error(format!("more than {max} keys")));
    }
    let mut out: Vec<(PublicKey, TomlError)> = Vec::with_capacity(items.len());
    for item in items {
        let key = PublicKey::from_spki_pem(item.as_str()?)
            .map_err(|e| item.error(format!("invalid public key: {e}")))?;
        // A key listed twice counts once.
        if !out.iter().any(|(k, _)| *k == key) {
            // Keep where it was found, for errors that span publishers.
            out.push((key, item.error(String::new())));
        }
    }
    Ok(out)
}

impl TrustBundle {
    /// Parses a trust bundle document.
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let doc = Document::parse(text)?;
        let root = doc.root();
        let mut bundle = TrustBundle::default();
        // Where each key was first seen, for the "listed under two publishers" error.
        let mut first_seen: HashMap<PublicKey, (usize, TomlError)> = HashMap::new();
        let tables = match root.get("publisher") {
            Some(v) => v.as_tables()?,
            None => Vec::new(),
        };
        for (i, t) in tables.into_iter().enumerate() {
            let name_value = t.require("name")?;
            let name: PublisherName = name_value.parse()?;
            if let Some(earlier) = bundle.publishers.iter().position(|p| p.name == name) {
                return Err(name_value
                    .error(format!(
                        "publisher `{name}` is already listed as publisher[{earlier}]"
                    ))
                    .into());
            }
            let keys_value = t.require("keys")?;
            let listed = parse_keys(Some(keys_value), MAX_KEYS_PER_PUBLISHER)?;
            let revoked = parse_keys(t.get("revoked"), MAX_REVOKED_PER_PUBLISHER)?;

            for (key, at) in listed.iter().chain(revoked.iter()) {
                if let Some((other, other_at)) = first_seen.get(key) {
                    if *other != i {
                        let other_name = &bundle.publishers[*other].name;
                        return Err(TomlError {
                            message: format!(
                                "key {} is already listed for publisher `{}` (`{}`, line {}); a key belongs to one publisher",
                                key.key_id(),
                                other_name,
                                other_at.key,
                                other_at.line
                            ),
                            ..at.clone()
                        }
                        .into());
                    }
                } else {
                    first_seen.insert(*key, (i, at.clone()));
                }
            }

            let revoked: Vec<PublicKey> = revoked.into_iter().map(|(k, _)| k).collect();
            let keys: Vec<PublicKey> = listed
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| !revoked.contains(k))
                .collect();

            let threshold = match t.get("threshold") {
                None => 1,
                Some(v) => {
                    let n = v.as_u64()?;
                    if n == 0 || n > keys.len() as u64 {
                        return Err(v
                            .error(format!(
                                "threshold must be between 1 and the number of distinct non-revoked keys ({})",
                                keys.len()
                            ))
                            .into());
                    }
                    n as usize
                }
            };
            if keys.is_empty() {
                return Err(keys_value
                    .error(format!(
                        "publisher `{}` has no trusted key that is not revoked",
                        name
                    ))
                    .into());
            }
            t.finish()?;

            for k in &keys {
                bundle.index.insert(k.key_id(), (i, KeyStatus::Trusted));
            }
            for k in &revoked {
                bundle.index.insert(k.key_id(), (i, KeyStatus::Revoked));
            }
            bundle.publishers.push(TrustedPublisher {
                name,
                keys,
                revoked,
                threshold,
            });
        }
        root.finish()?;
        Ok(bundle)
    }

    /// Reads and parses a trust bundle file; the size is capped before reading.
    pub fn read_file(path: &Path) -> Result<Self, TrustError> {
        Self::read_file_text(path).map(|(bundle, _)| bundle)
    }

    /// [`TrustBundle::read_file`], with the text it was parsed from (to hand the very same
    /// bundle to other runners).
    pub fn read_file_text(path: &Path) -> Result<(Self, String), TrustError> {
        let io = |source| TrustError::Io {
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
        if meta.len() > MAX_TRUST_BUNDLE_BYTES as u64 {
            return Err(TrustError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_TRUST_BUNDLE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() > MAX_TRUST_BUNDLE_BYTES {
            return Err(TrustError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| TrustError::NotUtf8 {
            path: path.to_path_buf(),
        })?;
        let bundle = Self::parse(&text).map_err(|e| match e {
            TrustError::Toml { error, .. } => TrustError::Toml {
                path: Some(path.to_path_buf()),
                error,
            },
            other => other,
        })?;
        Ok((bundle, text))
    }

    /// The entry for `name`, if the operator trusts that publisher at all.
    pub fn publisher(&self, name: &PublisherName) -> Option<&TrustedPublisher> {
        self.publishers.iter().find(|p| &p.name == name)
    }

    pub fn publishers(&self) -> &[TrustedPublisher] {
        &self.publishers
    }

    /// Which publisher lists the key with this id, and how. For explaining denials only.
    pub fn key_owner(&self, id: &KeyId) -> Option<(&TrustedPublisher, KeyStatus, &PublicKey)> {
        let (i, status) = *self.index.get(id)?;
        let p = self.publishers.get(i)?;
        let list = match status {
            KeyStatus::Trusted => &p.keys,
            KeyStatus::Revoked => &p.revoked,
        };
        let key = list.iter().find(|k| &k.key_id() == id)?;
        Some((p, status, key))
    }
}

/// A `[[publisher]]` entry trusting `key` for `name`, ready to append to a trust bundle (what
/// `warden keygen` prints).
pub fn publisher_entry(name: &PublisherName, key: &PublicKey) -> String {
    let pem = key.to_spki_pem().replace('\n', "\\n");
    format!("[[publisher]]\nname = \"{name}\"\nkeys = [\"{pem}\"]\nrevoked = []\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::SigningKey;

    fn pem() -> String {
        SigningKey::generate().public_key().to_spki_pem()
    }

    fn toml_str(s: &str) -> String {
        // A TOML basic string with escaped newlines, as the spec shows.
        format!("{:?}", s)
    }

    fn entry(name: &str, keys: &[&str], revoked: &[&str], extra: &str) -> String {
        let list = |ks: &[&str]| {
            ks.iter()
                .map(|k| toml_str(k))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "[[publisher]]\nname = \"{name}\"\nkeys = [{}]\nrevoked = [{}]\n{extra}",
            list(keys),
            list(revoked)
        )
    }

    fn err(text: &str) -> TomlError {
        match TrustBundle::parse(text).unwrap_err() {
            TrustError::Toml { error, .. } => error,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn parses_the_spec_example_shape() {
        let (a, b) = (pem(), pem());
        let text = format!(
            "{}\n{}",
            entry("acme", &[&a], &[], ""),
            entry("other", &[&b], &[], "threshold = 1\n")
        );
        let t = TrustBundle::parse(&text).unwrap();
        let acme = t.publisher(&"acme".parse().unwrap()).unwrap();
        assert_eq!(acme.keys().len(), 1);
        assert_eq!(acme.threshold(), 1);
        assert!(t.publisher(&"nobody".parse().unwrap()).is_none());
        let bk = PublicKey::from_spki_pem(&b).unwrap();
        let (owner, status, _) = t.key_owner(&bk.key_id()).unwrap();
        assert_eq!(owner.name().as_str(), "other");
        assert_eq!(status, KeyStatus::Trusted);
        // Multi-line literal strings work too, and `revoked` is optional.
        let text = format!("[[publisher]]\nname = \"x\"\nkeys = ['''\n{a}''']\n");
        assert!(TrustBundle::parse(&text).is_ok());
        // An empty document trusts nobody.
        assert!(TrustBundle::parse("").unwrap().publishers().is_empty());
    }

    #[test]
    fn publisher_entry_parses_back() {
        let key = SigningKey::generate().public_key();
        let text = publisher_entry(&"acme".parse().unwrap(), &key);
        assert!(
            text.contains("keys = [\"-----BEGIN PUBLIC KEY-----\\n"),
            "{text}"
        );
        let t = TrustBundle::parse(&text).unwrap();
        assert_eq!(
            t.publisher(&"acme".parse().unwrap()).unwrap().keys(),
            &[key]
        );
    }

    #[test]
    fn duplicates_and_revocation() {
        let (a, b) = (pem(), pem());
        let t = TrustBundle::parse(&entry("acme", &[&a, &a, &b], &[&b], "")).unwrap();
        let p = t.publisher(&"acme".parse().unwrap()).unwrap();
        assert_eq!(p.keys(), &[PublicKey::from_spki_pem(&a).unwrap()]);
        assert_eq!(p.revoked(), &[PublicKey::from_spki_pem(&b).unwrap()]);
        let e = err(&entry("acme", &[&a, &a], &[], "threshold = 2\n"));
        assert_eq!(e.key, "publisher[0].threshold");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("(1)"), "{e}");
        let e = err(&entry("acme", &[&a, &b], &[&b], "threshold = 2\n"));
        assert_eq!(e.key, "publisher[0].threshold");
        let t = TrustBundle::parse(&entry("acme", &[&a, &b], &[], "threshold = 2\n")).unwrap();
        assert_eq!(t.publishers()[0].threshold(), 2);
        let e = err(&entry("acme", &[&a], &[], "threshold = 0\n"));
        assert_eq!(e.key, "publisher[0].threshold");
        let e = err(&entry("acme", &[&a], &[&a], ""));
        assert_eq!(e.key, "publisher[0].keys");
        assert!(e.message.contains("no trusted key"), "{e}");
    }

    #[test]
    fn errors_name_key_and_line() {
        let (a, b) = (pem(), pem());
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&identity);
        use base64::Engine as _;
        let weak = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );

        let cases: Vec<(String, &str, usize, &str)> = vec![
            (
                entry("acme", &[&a, &weak], &[], ""),
                "publisher[0].keys[1]",
                3,
                "weak",
            ),
            (
                entry("acme", &[&a, "nope"], &[], ""),
                "publisher[0].keys[1]",
                3,
                "invalid public key",
            ),
            (
                entry("acme", &[&a], &["nope"], ""),
                "publisher[0].revoked[0]",
                4,
                "invalid public key",
            ),
            (
                format!(
                    "{}{}",
                    entry("acme", &[&a], &[], ""),
                    entry("acme", &[&b], &[], "")
                ),
                "publisher[1].name",
                6,
                "already listed",
            ),
            (
                format!(
                    "{}{}",
                    entry("acme", &[&a], &[], ""),
                    entry("other", &[&b, &a], &[], "")
                ),
                "publisher[1].keys[1]",
                7,
                "already listed for publisher `acme` (`publisher[0].keys[0]`, line 3)",
            ),
            (
                format!(
                    "{}{}",
                    entry("acme", &[&a], &[], ""),
                    entry("other", &[&b], &[&a], "")
                ),
                "publisher[1].revoked[0]",
                8,
                "already listed for publisher `acme`",
            ),
            (
                entry("acme", &[&a], &[], "trheshold = 1\n"),
                "publisher[0].trheshold",
                5,
                "unknown key",
            ),
            (
                entry("acme", &[&a], &[], "threshold = \"1\"\n"),
                "publisher[0].threshold",
                5,
                "integer",
            ),
            (
                entry("ACME", &[&a], &[], ""),
                "publisher[0].name",
                2,
                "invalid value",
            ),
            (
                "[[publisher]]\nname = \"acme\"\n".into(),
                "publisher[0].keys",
                1,
                "missing",
            ),
            (
                format!("[[publisher]]\nname = \"acme\"\nkeys = {:?}\n", a),
                "publisher[0].keys",
                3,
                "array",
            ),
            (
                format!("{}publishers = 1\n", entry("acme", &[&a], &[], "")),
                "publisher[0].publishers",
                5,
                "unknown key",
            ),
            (
                format!("x = 1\n{}", entry("acme", &[&a], &[], "")),
                "x",
                1,
                "unknown key",
            ),
            ("publisher = 1\n".into(), "publisher", 1, "array"),
        ];
        for (text, key, line, message) in cases {
            let e = err(&text);
            assert_eq!(e.key, key, "{text}\n{e}");
            assert_eq!(e.line, line, "{text}\n{e}");
            assert!(e.message.contains(message), "{text}\n{e}");
        }
    }

    #[test]
    fn caps_the_number_of_keys() {
        let many: Vec<String> = (0..=MAX_KEYS_PER_PUBLISHER).map(|_| pem()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = err(&entry("acme", &refs, &[], ""));
        assert_eq!(e.key, "publisher[0].keys");
    }

    #[test]
    fn read_file_caps_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        std::fs::write(&path, entry("acme", &[&pem()], &[], "bogus = 1\n")).unwrap();
        let e = TrustBundle::read_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("trust.toml") && e.contains("line 5") && e.contains("bogus"),
            "{e}"
        );
        std::fs::write(&path, vec![b'#'; MAX_TRUST_BUNDLE_BYTES + 1]).unwrap();
        assert!(matches!(
            TrustBundle::read_file(&path),
            Err(TrustError::TooLarge { .. })
        ));
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            TrustBundle::read_file(&path),
            Err(TrustError::NotUtf8 { .. })
        ));
        let missing = dir.path().join("nope.toml");
        let e = TrustBundle::read_file(&missing).unwrap_err();
        assert!(e.to_string().contains("nope.toml"));
    }
}
