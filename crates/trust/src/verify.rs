//! Verification: a bundle plus its signature file plus the trust bundle gives a
//! [`Verified<Bundle>`], the only form in which later layers accept a bundle.
//!
//! Every failure is a denial. The checks, in order:
//! 1. the envelope's payload type is ours;
//! 2. the statement parses strictly;
//! 3. the statement's publisher is in the trust bundle;
//! 4. each signature is checked (strict Ed25519 over the DSSE PAE) against every trusted key of
//!    that publisher, and distinct keys with a valid signature are counted; the `keyid` of a
//!    signature never selects a key, but must name the key that made it;
//! 5. the count reaches the publisher's threshold (signatures by revoked keys, other publishers'
//!    keys or unknown keys never count, and explain the denial when nothing else satisfies);
//! 6. the statement binds this bundle: publisher, id, version and content hash all equal.

use std::ops::Deref;

use warden_manifest::{ExtensionId, PublisherName};

use crate::dsse::{Envelope, PAYLOAD_TYPE};
use crate::keys::KeyId;
use crate::statement::{Statement, StatementError};
use crate::trust::{TrustBundle, TrustedPublisher};
use crate::{Bundle, ContentHash};

/// A value whose signature has been verified against the trust bundle.
///
/// Only this crate can make one, so a function taking `Verified<Bundle>` cannot be handed an
/// unverified bundle.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    inner: T,
    statement: Statement,
    signers: Vec<KeyId>,
}

impl<T> Verified<T> {
    pub fn get(&self) -> &T {
        &self.inner
    }
    pub fn into_inner(self) -> T {
        self.inner
    }
    /// The statement the signers vouched for.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }
    /// Ids of the distinct trusted keys whose signatures were valid, in envelope order.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
}

impl<T> Verified<T> {
    /// Who vouched for it, kept to ask a later trust bundle ([`Signed::still_trusted`]).
    pub fn signed(&self) -> Signed {
        Signed {
            publisher: self.statement.publisher().clone(),
            signers: self.signers.clone(),
        }
    }
}

/// Who vouched for a verified value: its publisher and the trusted keys whose signatures were
/// valid. What serves the value keeps it, to ask whether a new trust bundle still trusts it
/// without its bytes or its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    publisher: PublisherName,
    signers: Vec<KeyId>,
}

impl Signed {
    /// Whether `trust` still accepts these signatures: the publisher is in it, and enough of
    /// the keys that signed are still trusted for that publisher (a key revoked, removed or
    /// now another publisher's no longer counts). Stricter than verifying again: a key
    /// trusted only now is not counted even if it signed (its signature was not checked when
    /// it was not trusted), so this may say no where a new verification says yes, never the
    /// reverse.
    pub fn still_trusted(&self, trust: &TrustBundle) -> Result<(), VerifyError> {
        let name = &self.publisher;
        let publisher = trust
            .publisher(name)
            .ok_or_else(|| VerifyError::UnknownPublisher {
                publisher: name.clone(),
            })?;
        let listed = |keys: &[crate::PublicKey], id: &KeyId| keys.iter().any(|k| &k.key_id() == id);
        let have = self
            .signers
            .iter()
            .filter(|id| listed(publisher.keys(), id))
            .count();
        let need = publisher.threshold();
        if have >= need && have > 0 {
            return Ok(());
        }
        for id in &self.signers {
            if listed(publisher.revoked(), id) {
                return Err(VerifyError::RevokedKey {
                    publisher: name.clone(),
                    key_id: id.clone(),
                });
            }
        }
        for id in &self.signers {
            if listed(publisher.keys(), id) {
                continue;
            }
            return Err(match trust.key_owner(id) {
                Some((owner, _, _)) => VerifyError::UntrustedKey {
                    publisher: name.clone(),
                    key_id: id.clone(),
                    owner: Some(owner.name().clone()),
                },
                None => VerifyError::UnknownKey {
                    publisher: name.clone(),
                    key_id: id.clone(),
                },
            });
        }
        Err(VerifyError::ThresholdNotMet {
            publisher: name.clone(),
            have,
            need,
        })
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// Why verification denied a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature envelope has payloadType {found:?}, expected {PAYLOAD_TYPE:?}")]
    PayloadType { found: String },
    #[error("signed statement is invalid")]
    Statement(#[from] StatementError),
    #[error("publisher `{publisher}` is not in the trust bundle")]
    UnknownPublisher { publisher: PublisherName },
    #[error(
        "signatures[{index}] claims key {claimed} but was made by key {actual}; the signature file was altered"
    )]
    KeyIdMismatch {
        index: usize,
        claimed: KeyId,
        actual: KeyId,
    },
    #[error("signed by key {key_id}, which is revoked for publisher `{publisher}`")]
    RevokedKey {
        publisher: PublisherName,
        key_id: KeyId,
    },
    #[error(
        "signed by a key that is not trusted for publisher `{publisher}`: {key_id}{}",
        match owner { Some(o) => format!(" (it belongs to publisher `{o}`)"), None => String::new() }
    )]
    UntrustedKey {
        publisher: PublisherName,
        key_id: KeyId,
        /// The other publisher in the trust bundle that lists this key, if any.
        owner: Option<PublisherName>,
    },
    #[error(
        "signed by key {key_id} (as the signature claims), which the trust bundle does not list; it is not trusted for publisher `{publisher}`"
    )]
    UnknownKey {
        publisher: PublisherName,
        key_id: KeyId,
    },
    #[error(
        "none of the {count} signature(s) is valid under a trusted key of publisher `{publisher}`"
    )]
    NoValidSignature {
        publisher: PublisherName,
        count: usize,
    },
    #[error(
        "publisher `{publisher}` requires signatures by {need} distinct trusted keys, found {have}"
    )]
    ThresholdNotMet {
        publisher: PublisherName,
        have: usize,
        need: usize,
    },
    #[error(
        "the signature is for publisher `{signed}` but the bundle's manifest says `{manifest}`"
    )]
    PublisherMismatch {
        signed: PublisherName,
        manifest: PublisherName,
    },
    #[error(
        "the signature is for extension `{signed}` but the bundle's manifest says `{manifest}`"
    )]
    IdMismatch {
        signed: ExtensionId,
        manifest: ExtensionId,
    },
    #[error("the signature is for version {signed} but the bundle's manifest says {manifest}")]
    VersionMismatch {
        signed: semver::Version,
        manifest: semver::Version,
    },
    #[error(
        "the signature is for content {signed} but the bundle's content hash is {actual}: the bundle was altered or another bundle was signed"
    )]
    ContentHashMismatch {
        signed: ContentHash,
        actual: ContentHash,
    },
}

/// What the bundle says about itself; the statement must match all of it.
pub(crate) struct Subject<'a> {
    pub id: &'a ExtensionId,
    pub version: &'a semver::Version,
    pub publisher: &'a PublisherName,
    pub content_hash: ContentHash,
}

impl<'a> Subject<'a> {
    pub(crate) fn of(bundle: &'a Bundle) -> Self {
        let ext = &bundle.manifest().extension;
        Subject {
            id: &ext.id,
            version: &ext.version,
            publisher: &ext.publisher,
            content_hash: bundle.content_hash(),
        }
    }
}

/// Verifies `envelope` over `bundle` against `trust`; see the module docs for the checks.
pub fn verify(
    bundle: Bundle,
    envelope: &Envelope,
    trust: &TrustBundle,
) -> Result<Verified<Bundle>, VerifyError> {
    let (statement, signers) = verify_envelope(envelope, trust)?;
    check_binding(&statement, &Subject::of(&bundle))?;
    Ok(Verified {
        inner: bundle,
        statement,
        signers,
    })
}

/// How one signature fared.
enum Outcome<'t> {
    Trusted(KeyId),
    Revoked(KeyId),
    Foreign(KeyId, &'t TrustedPublisher),
    Invalid,
}

/// Checks 1 to 5: the envelope is ours and enough trusted keys signed its statement.
pub(crate) fn verify_envelope(
    envelope: &Envelope,
    trust: &TrustBundle,
) -> Result<(Statement, Vec<KeyId>), VerifyError> {
    if envelope.payload_type() != PAYLOAD_TYPE {
        return Err(VerifyError::PayloadType {
            found: envelope.payload_type().to_string(),
        });
    }
    let statement = envelope.statement()?;
    let publisher =
        trust
            .publisher(statement.publisher())
            .ok_or_else(|| VerifyError::UnknownPublisher {
                publisher: statement.publisher().clone(),
            })?;
    let pae = envelope.pae();

    let mut outcomes = Vec::with_capacity(envelope.signatures().len());
    for (index, s) in envelope.signatures().iter().enumerate() {
        let trusted = publisher
            .keys()
            .iter()
            .find(|k| k.verify_strict(&pae, s.sig()));
        let outcome = if let Some(k) = trusted {
            Outcome::Trusted(k.key_id())
        } else if let Some(k) = publisher
            .revoked()
            .iter()
            .find(|k| k.verify_strict(&pae, s.sig()))
        {
            Outcome::Revoked(k.key_id())
        } else {
            // Only to explain the denial: is it another publisher's key? The keyid is a claim,
            // so the key it names is checked, and never counts.
            match trust.key_owner(s.keyid()) {
                Some((owner, _, key)) if key.verify_strict(&pae, s.sig()) => {
                    Outcome::Foreign(key.key_id(), owner)
                }
                _ => Outcome::Invalid,
            }
        };
        let actual = match &outcome {
            Outcome::Trusted(id) | Outcome::Revoked(id) | Outcome::Foreign(id, _) => Some(id),
            Outcome::Invalid => None,
        };
        if let Some(actual) = actual
            && actual != s.keyid()
        {
            return Err(VerifyError::KeyIdMismatch {
                index,
                claimed: s.keyid().clone(),
                actual: actual.clone(),
            });
        }
        outcomes.push(outcome);
    }

    let mut signers: Vec<KeyId> = Vec::new();
    for o in &outcomes {
        if let Outcome::Trusted(id) = o
            && !signers.contains(id)
        {
            signers.push(id.clone());
        }
    }
    let need = publisher.threshold();
    if signers.len() >= need && !signers.is_empty() {
        return Ok((statement, signers));
    }

    let name = publisher.name().clone();
    for o in &outcomes {
        if let Outcome::Revoked(id) = o {
            return Err(VerifyError::RevokedKey {
                publisher: name,
                key_id: id.clone(),
            });
        }
    }
    for o in &outcomes {
        if let Outcome::Foreign(id, owner) = o {
            return Err(VerifyError::UntrustedKey {
                publisher: name,
                key_id: id.clone(),
                owner: Some(owner.name().clone()),
            });
        }
    }
    if signers.is_empty() {
        // Invalid signatures, or made by keys the trust bundle does not list at all. If every
        // signature claims a key the trust bundle does not know, that is the likely story.
        let sigs = envelope.signatures();
        if sigs.iter().all(|s| trust.key_owner(s.keyid()).is_none())
            && let Some(first) = sigs.first()
        {
            return Err(VerifyError::UnknownKey {
                publisher: name,
                key_id: first.keyid().clone(),
            });
        }
        return Err(VerifyError::NoValidSignature {
            publisher: name,
            count: envelope.signatures().len(),
        });
    }
    Err(VerifyError::ThresholdNotMet {
        publisher: name,
        have: signers.len(),
        need,
    })
}

/// Check 6: the verified statement is about this very bundle.
pub(crate) fn check_binding(
    statement: &Statement,
    subject: &Subject<'_>,
) -> Result<(), VerifyError> {
    if statement.publisher() != subject.publisher {
        return Err(VerifyError::PublisherMismatch {
            signed: statement.publisher().clone(),
            manifest: subject.publisher.clone(),
        });
    }
    if statement.id() != subject.id {
        return Err(VerifyError::IdMismatch {
            signed: statement.id().clone(),
            manifest: subject.id.clone(),
        });
    }
    if statement.version() != subject.version {
        return Err(VerifyError::VersionMismatch {
            signed: statement.version().clone(),
            manifest: subject.version.clone(),
        });
    }
    if statement.content_hash() != subject.content_hash {
        return Err(VerifyError::ContentHashMismatch {
            signed: statement.content_hash(),
            actual: subject.content_hash,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::SystemTime;

    use super::*;
    use crate::SigningKey;
    use crate::sign::sign_subject;

    struct Fixture {
        id: ExtensionId,
        version: semver::Version,
        publisher: PublisherName,
        hash: ContentHash,
    }

    impl Fixture {
        fn new(id: &str, version: &str, publisher: &str, hash_byte: u8) -> Self {
            Fixture {
                id: id.parse().unwrap(),
                version: version.parse().unwrap(),
                publisher: publisher.parse().unwrap(),
                hash: format!("sha256:{}", hex::encode([hash_byte; 32]))
                    .parse()
                    .unwrap(),
            }
        }
        fn subject(&self) -> Subject<'_> {
            Subject {
                id: &self.id,
                version: &self.version,
                publisher: &self.publisher,
                content_hash: self.hash,
            }
        }
        fn sign(&self, key: &SigningKey, existing: Option<Envelope>) -> Envelope {
            sign_subject(&self.subject(), key, existing, SystemTime::now()).unwrap()
        }
        fn verify(&self, env: &Envelope, trust: &TrustBundle) -> Result<Vec<KeyId>, VerifyError> {
            let (statement, signers) = verify_envelope(env, trust)?;
            check_binding(&statement, &self.subject())?;
            Ok(signers)
        }
    }

    fn acme() -> Fixture {
        Fixture::new("acme.hello", "1.0.0", "acme", 1)
    }

    /// (publisher, keys, revoked, threshold)
    type Entry<'a> = (
        &'a str,
        &'a [&'a SigningKey],
        &'a [&'a SigningKey],
        Option<usize>,
    );

    fn trust(entries: &[Entry<'_>]) -> TrustBundle {
        let mut text = String::new();
        for (name, keys, revoked, threshold) in entries {
            let list = |ks: &[&SigningKey]| {
                ks.iter()
                    .map(|k| format!("{:?}", k.public_key().to_spki_pem()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            text.push_str(&format!(
                "[[publisher]]\nname = \"{name}\"\nkeys = [{}]\nrevoked = [{}]\n",
                list(keys),
                list(revoked)
            ));
            if let Some(t) = threshold {
                text.push_str(&format!("threshold = {t}\n"));
            }
        }
        TrustBundle::parse(&text).unwrap()
    }

    /// Re-serializes an envelope after editing its JSON.
    fn edit(env: &Envelope, f: impl FnOnce(&mut serde_json::Value)) -> Envelope {
        let mut v: serde_json::Value = serde_json::from_str(&env.to_json_pretty()).unwrap();
        f(&mut v);
        Envelope::from_json(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn accepts_a_trusted_signature() {
        let key = SigningKey::generate();
        let f = acme();
        let env = f.sign(&key, None);
        let signers = f
            .verify(&env, &trust(&[("acme", &[&key], &[], None)]))
            .unwrap();
        assert_eq!(signers, vec![key.public_key().key_id()]);
    }

    #[test]
    fn refuses_unknown_publisher_revoked_and_foreign_keys() {
        let (a, b, c) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let f = acme();
        let env = f.sign(&a, None);

        let t = trust(&[("other", &[&a], &[], None)]);
        assert!(matches!(
            f.verify(&env, &t),
            Err(VerifyError::UnknownPublisher { .. })
        ));

        let t = trust(&[("acme", &[&b], &[&a], None)]);
        let e = f.verify(&env, &t).unwrap_err();
        assert_eq!(
            e,
            VerifyError::RevokedKey {
                publisher: "acme".parse().unwrap(),
                key_id: a.public_key().key_id()
            }
        );

        // Listed in `keys` and `revoked`: revoked.
        let t = trust(&[("acme", &[&a, &b], &[&a], None)]);
        assert!(matches!(
            f.verify(&env, &t),
            Err(VerifyError::RevokedKey { .. })
        ));

        let t = trust(&[("acme", &[&b], &[], None), ("other", &[&a], &[], None)]);
        let e = f.verify(&env, &t).unwrap_err();
        assert!(
            matches!(&e, VerifyError::UntrustedKey { owner: Some(o), .. } if o.as_str() == "other"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("not trusted for publisher `acme`"),
            "{e}"
        );
        assert!(
            e.to_string().contains("belongs to publisher `other`"),
            "{e}"
        );

        let t = trust(&[("acme", &[&b], &[], None), ("other", &[&c], &[], None)]);
        let e = f.verify(&env, &t).unwrap_err();
        assert!(
            matches!(&e, VerifyError::UnknownKey { key_id, .. } if *key_id == a.public_key().key_id()),
            "{e:?}"
        );

        // A revoked signature next to a valid one: the valid one satisfies threshold 1.
        let env2 = f.sign(&b, Some(env.clone()));
        let t = trust(&[("acme", &[&b], &[&a], None)]);
        assert_eq!(f.verify(&env2, &t).unwrap(), vec![b.public_key().key_id()]);
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let f = acme();
        let env = f.sign(&a, None);
        let t = trust(&[("acme", &[&a, &b], &[], Some(2))]);
        assert_eq!(
            f.verify(&env, &t).unwrap_err(),
            VerifyError::ThresholdNotMet {
                publisher: "acme".parse().unwrap(),
                have: 1,
                need: 2
            }
        );
        // The same signature twice counts once.
        let doubled = edit(&env, |v| {
            let s = v["signatures"][0].clone();
            v["signatures"].as_array_mut().unwrap().push(s);
        });
        assert_eq!(doubled.signatures().len(), 2);
        assert!(matches!(
            f.verify(&doubled, &t),
            Err(VerifyError::ThresholdNotMet {
                have: 1,
                need: 2,
                ..
            })
        ));
        // Signing again with the same key changes nothing.
        assert_eq!(f.sign(&a, Some(env.clone())), env);
        // A second key meets it.
        let both = f.sign(&b, Some(env));
        assert_eq!(both.signatures().len(), 2);
        assert_eq!(f.verify(&both, &t).unwrap().len(), 2);
    }

    /// What a later trust bundle says of the signers kept from a verification is what a new
    /// verification of the same envelope says (for keys that were trusted when it was made).
    #[test]
    fn the_signers_kept_are_judged_by_a_later_trust_bundle_as_a_new_verification_would() {
        let (a, b, c) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let f = acme();
        let both = f.sign(&b, Some(f.sign(&a, None)));
        let signed = Signed {
            publisher: f.publisher.clone(),
            signers: f
                .verify(&both, &trust(&[("acme", &[&a, &b], &[], None)]))
                .unwrap(),
        };
        let later: [&[Entry<'_>]; 8] = [
            &[("acme", &[&a, &b], &[], None)],
            &[("acme", &[&a, &b], &[], Some(2))],
            &[("acme", &[&b], &[&a], None)],
            &[("acme", &[&c], &[&a, &b], None)],
            &[("other", &[&a, &b], &[], None)],
            &[("acme", &[&c], &[], None), ("other", &[&a, &b], &[], None)],
            &[("acme", &[&c], &[], None)],
            &[("acme", &[&a, &c], &[&b], Some(2))],
        ];
        for entries in later {
            let t = trust(entries);
            let again = f.verify(&both, &t).map(|_| ());
            assert_eq!(signed.still_trusted(&t), again, "{entries:?}");
        }
        // Stricter only where a key is trusted now that was not then: not counted.
        let one = Signed {
            publisher: f.publisher.clone(),
            signers: vec![a.public_key().key_id()],
        };
        let t = trust(&[("acme", &[&a, &b], &[], Some(2))]);
        assert!(matches!(
            one.still_trusted(&t),
            Err(VerifyError::ThresholdNotMet {
                have: 1,
                need: 2,
                ..
            })
        ));
    }

    #[test]
    fn keyid_must_name_the_signing_key() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let f = acme();
        let env = f.sign(&a, None);
        let t = trust(&[("acme", &[&a, &b], &[], None)]);
        // A keyid naming another trusted key: the signature is still found, but refused.
        let lying = edit(&env, |v| {
            v["signatures"][0]["keyid"] = b.public_key().key_id().to_string().into();
        });
        assert!(matches!(
            f.verify(&lying, &t),
            Err(VerifyError::KeyIdMismatch { index: 0, .. })
        ));
    }

    #[test]
    fn refuses_non_canonical_signatures() {
        let a = SigningKey::generate();
        let f = acme();
        let env = f.sign(&a, None);
        let t = trust(&[("acme", &[&a], &[], None)]);
        // S + L is the same scalar mod L: lax verifiers accept it, strict ones must not.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut sig = *env.signatures()[0].sig();
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = sig[32 + i] as u16 + L[i] as u16 + carry;
            sig[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        let malleated = edit(&env, |v| {
            use base64::Engine as _;
            v["signatures"][0]["sig"] =
                base64::engine::general_purpose::STANDARD.encode(sig).into();
        });
        assert!(matches!(
            f.verify(&malleated, &t),
            Err(VerifyError::UnknownKey { .. } | VerifyError::NoValidSignature { .. })
        ));
    }

    #[test]
    fn the_statement_must_bind_this_bundle() {
        let a = SigningKey::generate();
        let t = trust(&[
            ("acme", &[&a], &[], None),
            ("other", &[&SigningKey::generate()], &[], None),
        ]);
        let v1 = acme();
        let env = v1.sign(&a, None);
        let cases = [
            (
                Fixture::new("acme.hello", "2.0.0", "acme", 1),
                "version 1.0.0 but the bundle's manifest says 2.0.0",
            ),
            (
                Fixture::new("acme.other", "1.0.0", "acme", 1),
                "extension `acme.hello` but the bundle's manifest says `acme.other`",
            ),
            (
                Fixture::new("acme.hello", "1.0.0", "acme", 2),
                "content sha256:0101",
            ),
            (
                Fixture::new("acme.hello", "1.0.0", "other", 1),
                "publisher `acme` but the bundle's manifest says `other`",
            ),
            (
                Fixture::new("acme.hello", "1.0.0+build", "acme", 1),
                "version 1.0.0",
            ),
        ];
        for (other, expected) in cases {
            let e = other.verify(&env, &t).unwrap_err();
            assert!(e.to_string().contains(expected), "{e}");
            // Signing on top of a signature file for another bundle is refused too.
            let e = sign_subject(&other.subject(), &a, Some(env.clone()), SystemTime::now())
                .unwrap_err();
            assert!(matches!(e, crate::SignError::DifferentBundle(_)), "{e:?}");
        }
    }

    #[test]
    fn every_single_bit_flip_of_the_signature_file_is_refused() {
        let a = SigningKey::generate();
        let f = acme();
        let env = f.sign(&a, None);
        let t = trust(&[("acme", &[&a], &[], None)]);
        let bytes = env.to_json_pretty().into_bytes();
        assert!(f.verify(&Envelope::from_json(&bytes).unwrap(), &t).is_ok());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                if let Ok(e) = Envelope::from_json(&b) {
                    assert!(
                        f.verify(&e, &t).is_err(),
                        "flip of bit {bit} at {i} accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn sign_refuses_a_forged_claim_of_our_key_and_caps_signatures() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let f = acme();
        let env = f.sign(&b, None);
        let claims_a = edit(&env, |v| {
            v["signatures"][0]["keyid"] = a.public_key().key_id().to_string().into();
        });
        let e = sign_subject(&f.subject(), &a, Some(claims_a), SystemTime::now()).unwrap_err();
        assert!(matches!(
            e,
            crate::SignError::InvalidExistingSignature { index: 0, .. }
        ));

        let full = edit(&env, |v| {
            let s = v["signatures"][0].clone();
            *v["signatures"].as_array_mut().unwrap() = vec![s; crate::MAX_SIGNATURES];
        });
        let e = sign_subject(&f.subject(), &a, Some(full), SystemTime::now()).unwrap_err();
        assert_eq!(e, crate::SignError::TooManySignatures);
    }

    #[test]
    fn verified_exposes_what_was_verified() {
        let a = SigningKey::generate();
        let f = acme();
        let env = f.sign(&a, None);
        let t = trust(&[("acme", &[&a], &[], None)]);
        let (statement, signers) = verify_envelope(&env, &t).unwrap();
        let v = Verified {
            inner: 7u8,
            statement,
            signers,
        };
        assert_eq!(*v, 7);
        assert_eq!(v.get(), &7);
        assert_eq!(v.statement().id().as_str(), "acme.hello");
        assert_eq!(v.signers().join(","), a.public_key().key_id().as_str());
        assert_eq!(v.into_inner(), 7);
    }
}
