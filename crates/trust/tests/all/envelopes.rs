//! Hostile signature files: tampered, oversized, overfull, mislabelled, or carrying a validly
//! signed but malformed statement.

use warden_trust::{
    DsseError, Envelope, MAX_ENVELOPE_BYTES, PAYLOAD_TYPE, StatementError, VerifyError, sign,
    verify,
};

use crate::support::{Scratch, craft, craft_statement, entry, statement_map};

#[test]
fn every_flipped_byte_of_the_signature_file_is_refused() {
    let s = Scratch::new();
    let (key, other) = (s.key("acme"), s.key("other"));
    let bundle = s.bundle();
    // Two signatures, so flips in either are covered; threshold 1 would let one bad signature
    // slide, so require both.
    let env = sign(&bundle, &key, None).unwrap();
    let env = sign(&bundle, &other, Some(env)).unwrap();
    let trust = s.trust(&entry("acme", &[&key, &other], &[], Some(2)));
    let path = s.write("hello.wext.sig", env.to_json_pretty());
    let bytes = std::fs::read(&path).unwrap();
    assert!(verify(s.bundle(), &Envelope::read_file(&path).unwrap(), &trust).is_ok());

    let mut parse_failures = 0;
    let mut verify_failures = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            match Envelope::from_json(&b) {
                Err(_) => parse_failures += 1,
                Ok(tampered) => {
                    let result = verify(bundle.clone(), &tampered, &trust);
                    assert!(result.is_err(), "byte {i} ^ {mask:#x} was accepted");
                    verify_failures += 1;
                }
            }
        }
    }
    // Both layers did real work.
    assert!(parse_failures > 0 && verify_failures > 0);
}

#[test]
fn oversized_signature_file_is_refused_before_parsing() {
    let s = Scratch::new();
    let key = s.key("acme");
    let env = sign(&s.bundle(), &key, None).unwrap();
    // A valid envelope padded with whitespace past the cap: only its size is wrong.
    let mut text = env.to_json_pretty();
    text.push_str(&" ".repeat(MAX_ENVELOPE_BYTES + 1 - text.len()));
    let path = s.write("big.sig", &text);
    let e = Envelope::read_file(&path).unwrap_err();
    assert!(
        matches!(e, DsseError::TooLarge { size } if size == (MAX_ENVELOPE_BYTES + 1) as u64),
        "{e}"
    );
    assert!(matches!(
        Envelope::from_json(text.as_bytes()),
        Err(DsseError::TooLarge { .. })
    ));
    // Exactly at the cap it is read.
    text.pop();
    let path = s.write("at-cap.sig", &text);
    assert!(Envelope::read_file(&path).is_ok());

    // A huge file is refused from its metadata: a sparse 4 GiB file is never read.
    let path = s.path("huge.sig");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(4 << 30).unwrap();
    let e = Envelope::read_file(&path).unwrap_err();
    assert!(
        matches!(e, DsseError::TooLarge { size } if size == 4 << 30),
        "{e}"
    );
}

#[test]
fn seventeen_signatures_are_refused() {
    let s = Scratch::new();
    let keys: Vec<_> = (0..17).map(|i| s.key(&format!("k{i}"))).collect();
    let refs: Vec<_> = keys.iter().collect();
    let env = sign(&s.bundle(), refs[0], None).unwrap();
    let text = craft(PAYLOAD_TYPE, env.payload(), &refs);
    let e = Envelope::from_json(text.as_bytes()).unwrap_err();
    assert!(
        matches!(e, DsseError::TooManySignatures { count: 17 }),
        "{e}"
    );
    assert!(
        Envelope::from_json(craft(PAYLOAD_TYPE, env.payload(), &refs[..16]).as_bytes()).is_ok()
    );
}

#[test]
fn wrong_payload_type_is_refused() {
    let s = Scratch::new();
    let key = s.key("acme");
    let env = sign(&s.bundle(), &key, None).unwrap();
    for other in [
        "application/json",
        "application/vnd.in-toto+json",
        "application/vnd.warden.statement.v2+json",
        "APPLICATION/VND.WARDEN.STATEMENT.V1+JSON",
        "application/vnd.warden.statement.v1+json ",
        "",
    ] {
        // Validly signed over the other type: the type alone is wrong.
        let text = craft(other, env.payload(), &[&key]);
        let e = Envelope::from_json(text.as_bytes()).unwrap_err();
        assert!(matches!(e, DsseError::PayloadType { .. }), "{other:?}: {e}");
    }
}

#[test]
fn validly_signed_but_malformed_statements_are_refused() {
    let s = Scratch::new();
    let key = s.key("acme");
    let bundle = s.bundle();
    let env = sign(&bundle, &key, None).unwrap();
    let trust = s.trust(&entry("acme", &[&key], &[], None));
    let good = statement_map(&env);

    // The crafting itself is sound: the unmodified statement verifies.
    let control = Envelope::from_json(craft_statement(&good, &[&key]).as_bytes()).unwrap();
    assert!(verify(bundle.clone(), &control, &trust).is_ok());

    let check = |payload: Vec<u8>, expected: &str| {
        let text = craft(PAYLOAD_TYPE, &payload, &[&key]);
        let env = Envelope::from_json(text.as_bytes()).unwrap();
        let e = verify(bundle.clone(), &env, &trust).unwrap_err();
        assert!(matches!(e, VerifyError::Statement(_)), "{e}");
        let VerifyError::Statement(inner) = &e else {
            unreachable!()
        };
        assert!(
            inner.to_string().contains(expected),
            "{}: {inner}",
            String::from_utf8_lossy(&payload)
        );
    };

    let mut m = good.clone();
    m.insert("permissions".into(), "all".into());
    check(
        serde_json::to_vec(&m).unwrap(),
        "unknown field `permissions`",
    );

    let mut m = good.clone();
    m.remove("content_hash");
    check(
        serde_json::to_vec(&m).unwrap(),
        "missing field `content_hash`",
    );

    let text = String::from_utf8(env.payload().to_vec()).unwrap();
    let dup = text.replacen(
        "\"version\":\"1.0.0\"",
        "\"version\":\"1.0.0\",\"version\":\"9.9.9\"",
        1,
    );
    assert_ne!(dup, text);
    check(dup.into_bytes(), "duplicate field `version`");

    let mut m = good.clone();
    m.insert("schema".into(), 2.into());
    check(serde_json::to_vec(&m).unwrap(), "schema 2");

    for bad in [
        "yesterday",
        "2025-02-30T00:00:00Z",
        "2025-01-01T00:00:00",
        "2025-01-01",
    ] {
        let mut m = good.clone();
        m.insert("signed_at".into(), bad.into());
        check(serde_json::to_vec(&m).unwrap(), "`signed_at`");
    }

    let mut m = good.clone();
    m.insert("content_hash".into(), "sha512:00".into());
    check(serde_json::to_vec(&m).unwrap(), "`content_hash`");

    check(b"not json".to_vec(), "malformed");
    let StatementError::Json(_) = warden_trust::Statement::from_json(b"[]").unwrap_err() else {
        panic!("arrays are not statements")
    };
}

#[test]
fn keyid_that_names_another_key_is_refused() {
    let s = Scratch::new();
    let (a, b) = (s.key("a"), s.key("b"));
    let bundle = s.bundle();
    let env = sign(&bundle, &a, None).unwrap();
    let trust = s.trust(&entry("acme", &[&a, &b], &[], None));
    let mut v: serde_json::Value = serde_json::from_str(&env.to_json_pretty()).unwrap();
    v["signatures"][0]["keyid"] = b.public_key().key_id().to_string().into();
    let lying = Envelope::from_json(v.to_string().as_bytes()).unwrap();
    let e = verify(bundle, &lying, &trust).unwrap_err();
    assert!(
        matches!(e, VerifyError::KeyIdMismatch { index: 0, .. }),
        "{e}"
    );
}
