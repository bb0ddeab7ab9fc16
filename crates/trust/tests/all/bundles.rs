//! Signing and verifying real bundles: every way a signature can fail to vouch for these bytes.

use warden_trust::{Envelope, SignError, VerifyError, sign, verify};

use crate::support::{Scratch, entry};

#[test]
fn sign_then_verify_through_files() {
    let s = Scratch::new();
    let key = s.key("acme");
    let bundle = s.bundle();
    let env = s.round_trip(&sign(&bundle, &key, None).unwrap());
    let trust = s.trust(&entry("acme", &[&key], &[], None));
    let hash = bundle.content_hash();
    let verified = verify(bundle, &env, &trust).unwrap();
    assert_eq!(verified.statement().id().as_str(), "acme.hello");
    assert_eq!(verified.statement().version().to_string(), "1.0.0");
    assert_eq!(verified.statement().publisher().as_str(), "acme");
    assert_eq!(verified.statement().content_hash(), hash);
    assert!(humantime::parse_rfc3339(verified.statement().signed_at()).is_ok());
    assert_eq!(verified.signers(), &[key.public_key().key_id()]);
    // Deref and accessors reach the verified bundle itself.
    assert_eq!(verified.content_hash(), hash);
    assert_eq!(
        verified.get().manifest().extension.id.as_str(),
        "acme.hello"
    );
    assert_eq!(verified.into_inner().content_hash(), hash);
}

#[test]
fn any_changed_byte_of_the_bundle_is_refused() {
    let s = Scratch::new();
    let key = s.key("acme");
    let bundle = s.bundle();
    let env = sign(&bundle, &key, None).unwrap();
    let trust = s.trust(&entry("acme", &[&key], &[], None));
    let bytes = bundle.bytes().to_vec();
    let caps = warden_bundle::BundleLimits::default();
    let mut still_valid_archives = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            // Either it is no longer a bundle at all, or it is one whose hash is not the signed one.
            if let Ok(tampered) = warden_bundle::Bundle::from_bytes(b, &caps) {
                still_valid_archives += 1;
                let e = verify(tampered, &env, &trust).unwrap_err();
                assert!(
                    matches!(
                        e,
                        VerifyError::ContentHashMismatch { .. }
                            | VerifyError::IdMismatch { .. }
                            | VerifyError::VersionMismatch { .. }
                            | VerifyError::PublisherMismatch { .. }
                    ),
                    "flip {mask:#x} at {i}: {e}"
                );
            }
        }
    }
    // Flips inside file data (the wasm, padding the reader ignores...) still parse: the hash
    // is what catches them.
    assert!(still_valid_archives > 0);
}

#[test]
fn unknown_publisher_revoked_and_other_publishers_keys() {
    let s = Scratch::new();
    let (acme, acme2, evil) = (s.key("acme"), s.key("acme2"), s.key("evil"));
    let bundle = s.bundle();
    let env = sign(&bundle, &acme, None).unwrap();
    let hash = bundle.content_hash();
    let rebuild = || s.bundle();
    assert_eq!(rebuild().content_hash(), hash, "packing is deterministic");

    // Nobody trusts "acme".
    let trust = s.trust(&entry("other", &[&evil], &[], None));
    let e = verify(rebuild(), &env, &trust).unwrap_err();
    assert!(matches!(e, VerifyError::UnknownPublisher { .. }), "{e}");
    assert_eq!(e.to_string(), "publisher `acme` is not in the trust bundle");

    // The signing key is revoked.
    let trust = s.trust(&entry("acme", &[&acme2], &[&acme], None));
    let e = verify(rebuild(), &env, &trust).unwrap_err();
    assert_eq!(
        e,
        VerifyError::RevokedKey {
            publisher: "acme".parse().unwrap(),
            key_id: acme.public_key().key_id()
        }
    );
    assert!(e.to_string().contains("revoked"), "{e}");

    // Listed and revoked: revoked wins.
    let trust = s.trust(&entry("acme", &[&acme, &acme2], &[&acme], None));
    assert!(matches!(
        verify(rebuild(), &env, &trust),
        Err(VerifyError::RevokedKey { .. })
    ));

    // Signed with a key the trust bundle gives to another publisher.
    let env_evil = sign(&bundle, &evil, None).unwrap();
    let trust = s.trust(&format!(
        "{}\n{}",
        entry("acme", &[&acme], &[], None),
        entry("evil", &[&evil], &[], None)
    ));
    let e = verify(rebuild(), &env_evil, &trust).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "signed by a key that is not trusted for publisher `acme`: {} (it belongs to publisher `evil`)",
            evil.public_key().key_id()
        )
    );

    // Signed with a key nobody lists.
    let stranger = s.key("stranger");
    let env_stranger = sign(&bundle, &stranger, None).unwrap();
    let e = verify(rebuild(), &env_stranger, &trust).unwrap_err();
    assert!(matches!(e, VerifyError::UnknownKey { .. }), "{e}");
    assert!(
        e.to_string().contains("not trusted for publisher `acme`"),
        "{e}"
    );

    // A revoked signature beside a valid one: the valid one carries threshold 1.
    let both = sign(&bundle, &acme2, Some(env.clone())).unwrap();
    let trust = s.trust(&entry("acme", &[&acme2], &[&acme], None));
    let v = verify(rebuild(), &both, &trust).unwrap();
    assert_eq!(v.signers(), &[acme2.public_key().key_id()]);
}

#[test]
fn mix_and_match_statements_and_bundles() {
    let s = Scratch::new();
    let (acme, evil) = (s.key("acme"), s.key("evil"));
    let v1 = s.bundle();
    let v2 = s.bundle_with("v2", "version = \"1.0.0\"", "version = \"2.0.0\"");
    let other = s.bundle_with("other", "id = \"acme.hello\"", "id = \"acme.other\"");
    let changed = s.bundle_from("changed", crate::support::MANIFEST, Some(b"more"));
    let by_evil = s.bundle_with("evil", "publisher = \"acme\"", "publisher = \"evil\"");
    let trust = s.trust(&format!(
        "{}\n{}",
        entry("acme", &[&acme], &[], None),
        entry("evil", &[&evil], &[], None)
    ));
    let env_v1 = sign(&v1, &acme, None).unwrap();

    let e = verify(v2, &env_v1, &trust).unwrap_err();
    assert!(matches!(e, VerifyError::VersionMismatch { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "the signature is for version 1.0.0 but the bundle's manifest says 2.0.0"
    );

    let e = verify(other, &env_v1, &trust).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the signature is for extension `acme.hello` but the bundle's manifest says `acme.other`"
    );

    let changed_hash = changed.content_hash();
    let e = verify(changed, &env_v1, &trust).unwrap_err();
    assert!(
        matches!(e, VerifyError::ContentHashMismatch { actual, .. } if actual == changed_hash),
        "{e}"
    );

    // acme's valid statement presented with evil's bundle...
    let e = verify(by_evil.clone(), &env_v1, &trust).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the signature is for publisher `acme` but the bundle's manifest says `evil`"
    );
    // ...and evil, itself trusted, signing a bundle that claims to be acme's: its statement says
    // acme, so evil's key is not acme's key.
    let env_evil_for_acme = sign(&v1, &evil, None).unwrap();
    let e = verify(s.bundle(), &env_evil_for_acme, &trust).unwrap_err();
    assert!(matches!(e, VerifyError::UntrustedKey { .. }), "{e}");
    // evil signing its own bundle is fine, and does not make it acme's.
    let env_evil = sign(&by_evil, &evil, None).unwrap();
    assert!(verify(by_evil, &env_evil, &trust).is_ok());
    let e = verify(s.bundle(), &env_evil, &trust).unwrap_err();
    assert!(matches!(e, VerifyError::PublisherMismatch { .. }), "{e}");
}

#[test]
fn several_signatures_and_thresholds() {
    let s = Scratch::new();
    let (a, b) = (s.key("a"), s.key("b"));
    let bundle = s.bundle();
    let env_a = sign(&bundle, &a, None).unwrap();
    let trust2 = s.trust(&entry("acme", &[&a, &b], &[], Some(2)));

    // One signature, threshold 2.
    let e = verify(s.bundle(), &env_a, &trust2).unwrap_err();
    assert_eq!(
        e,
        VerifyError::ThresholdNotMet {
            publisher: "acme".parse().unwrap(),
            have: 1,
            need: 2
        }
    );

    // The same signature pasted twice: still one key.
    let text = env_a.to_json_pretty();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sig = v["signatures"][0].clone();
    v["signatures"].as_array_mut().unwrap().push(sig);
    let doubled = Envelope::from_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(doubled.signatures().len(), 2);
    let e = verify(s.bundle(), &doubled, &trust2).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::ThresholdNotMet {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{e}"
    );

    // The same key listed twice in the trust bundle cannot fake a second signer.
    let path = s.write("dup.toml", entry("acme", &[&a, &a], &[], Some(2)));
    let e = warden_trust::TrustBundle::read_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("publisher[0].threshold") && e.contains("(1)"),
        "{e}"
    );

    // Signing again with the same key changes nothing; a second key adds a signature over the
    // same payload, and meets the threshold.
    let again = sign(&bundle, &a, Some(env_a.clone())).unwrap();
    assert_eq!(again, env_a);
    let env_ab = s.round_trip(&sign(&bundle, &b, Some(env_a.clone())).unwrap());
    assert_eq!(env_ab.payload(), env_a.payload());
    assert_eq!(env_ab.signatures().len(), 2);
    let v = verify(s.bundle(), &env_ab, &trust2).unwrap();
    assert_eq!(
        v.signers(),
        &[a.public_key().key_id(), b.public_key().key_id()]
    );

    // Sixteen distinct keys, threshold 16: the maximum works.
    let keys: Vec<_> = (0..16).map(|i| s.key(&format!("k{i}"))).collect();
    let refs: Vec<_> = keys.iter().collect();
    let mut env = sign(&bundle, refs[0], None).unwrap();
    for k in &refs[1..] {
        env = sign(&bundle, k, Some(env)).unwrap();
    }
    let trust16 = s.trust(&entry("acme", &refs, &[], Some(16)));
    assert_eq!(
        verify(s.bundle(), &env, &trust16).unwrap().signers().len(),
        16
    );
    // A seventeenth is refused by sign.
    let e = sign(&bundle, &a, Some(env)).unwrap_err();
    assert_eq!(e, SignError::TooManySignatures);
}

#[test]
fn sign_refuses_to_extend_a_signature_file_for_another_bundle() {
    let s = Scratch::new();
    let key = s.key("acme");
    let v1 = s.bundle();
    let v2 = s.bundle_with("v2", "version = \"1.0.0\"", "version = \"2.0.0\"");
    let env_v1 = sign(&v1, &key, None).unwrap();
    let e = sign(&v2, &key, Some(env_v1)).unwrap_err();
    assert!(
        matches!(
            e,
            SignError::DifferentBundle(VerifyError::VersionMismatch { .. })
        ),
        "{e:?}"
    );
}

#[test]
fn non_canonical_signature_is_refused() {
    let s = Scratch::new();
    let key = s.key("acme");
    let bundle = s.bundle();
    let env = sign(&bundle, &key, None).unwrap();
    let trust = s.trust(&entry("acme", &[&key], &[], None));

    // S' = S + L encodes the same scalar; only strict verification refuses it.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut sig = *env.signatures()[0].sig();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits");
    let mut v: serde_json::Value = serde_json::from_str(&env.to_json_pretty()).unwrap();
    use base64::Engine as _;
    v["signatures"][0]["sig"] = base64::engine::general_purpose::STANDARD.encode(sig).into();
    let malleated = Envelope::from_json(v.to_string().as_bytes()).unwrap();
    let e = verify(bundle, &malleated, &trust).unwrap_err();
    assert!(
        matches!(e, VerifyError::NoValidSignature { count: 1, .. }),
        "{e}"
    );
}
