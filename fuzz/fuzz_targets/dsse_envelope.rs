#![no_main]
//! Any bytes as a signature file (a DSSE envelope), and the same bytes as the payload of an
//! otherwise well-formed envelope. Decoding never panics; an accepted envelope keeps its
//! invariants, prints back to JSON that decodes to the same envelope, and its statement (if any)
//! round-trips; and verification against an empty trust bundle or a one-key trust bundle whose
//! private key nobody has is always a denial, never a panic and never a `Verified`.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use warden_bundle::ustar::ArchiveWriter;
use warden_bundle::{Bundle, COMPONENT_PREAMBLE, BundleLimits, MANIFEST_FILE, Mode};
use warden_trust::{
    Envelope, KeyId, MAX_ENVELOPE_BYTES, MAX_SIGNATURES, PAYLOAD_TYPE, PublicKey, Statement,
    TrustBundle, publisher_entry, verify,
};

/// A public key generated once with `openssl genpkey -algorithm ed25519`; its private key was
/// thrown away, so no input can carry a valid signature by it.
const TRUSTED_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
MCowBQYDK2VwAyEAAu8hoY/teu27mxDqdBNUPx2AQiadwfnSBB88VOCZHb4=\n\
-----END PUBLIC KEY-----\n";

/// The publisher the fixed bundle and the one-key trust bundle name.
const PUBLISHER: &str = "fuzz";

struct Fixture {
    bundle: Bundle,
    key: PublicKey,
    empty: TrustBundle,
    one_key: TrustBundle,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let manifest = format!(
            "schema = 1\n[extension]\nid = \"{PUBLISHER}.target\"\nversion = \"1.0.0\"\n\
             publisher = \"{PUBLISHER}\"\nkind = \"component\"\nentry = \"extension.wasm\"\n"
        );
        let mut archive = ArchiveWriter::new();
        archive
            .add_file(
                &MANIFEST_FILE.parse().expect("path"),
                Mode::Regular,
                manifest.as_bytes(),
            )
            .expect("manifest entry");
        archive
            .add_file(
                &"extension.wasm".parse().expect("path"),
                Mode::Regular,
                &COMPONENT_PREAMBLE,
            )
            .expect("component entry");
        let bundle = Bundle::from_bytes(archive.finish(), &BundleLimits::default()).expect("fixed bundle");
        let key = PublicKey::from_spki_pem(TRUSTED_KEY).expect("fixed key");
        let one_key = TrustBundle::parse(&publisher_entry(&PUBLISHER.parse().expect("name"), &key))
            .expect("one-key trust bundle");
        Fixture {
            bundle,
            key,
            empty: TrustBundle::default(),
            one_key,
        }
    })
}

fn check(envelope: &Envelope) {
    let f = fixture();
    // What `from_json` promises about every envelope it returns.
    assert_eq!(envelope.payload_type(), PAYLOAD_TYPE);
    assert!(!envelope.payload().is_empty(), "accepted an empty payload");
    let n = envelope.signatures().len();
    assert!((1..=MAX_SIGNATURES).contains(&n), "accepted {n} signatures");
    for s in envelope.signatures() {
        assert_eq!(
            s.keyid().as_str().parse::<KeyId>().ok().as_ref(),
            Some(s.keyid())
        );
        let _ = s.sig();
    }
    assert!(envelope.pae().starts_with(b"DSSEv1 "));

    // Printing back: the pretty form decodes to the same envelope, unless the extra whitespace
    // pushes it over the size cap (then it must be refused as too large, nothing else).
    let pretty = envelope.to_json_pretty();
    match Envelope::from_json(pretty.as_bytes()) {
        Ok(again) => assert_eq!(&again, envelope, "pretty form decodes differently"),
        Err(e) => assert!(
            pretty.len() > MAX_ENVELOPE_BYTES,
            "pretty form of an accepted envelope refused: {e}"
        ),
    }

    // The statement, unverified: strict parse, and what parses prints back to the same value.
    if let Ok(statement) = envelope.statement() {
        let again = Statement::from_json(&statement.to_json()).expect("printed statement parses");
        assert_eq!(again, statement);
    }

    // No input can be signed by a key whose private half does not exist.
    assert!(!envelope.is_signed_by(&f.key), "forged signature accepted");
    for trust in [&f.empty, &f.one_key] {
        match verify(f.bundle.clone(), envelope, trust) {
            Ok(v) => panic!("verified an unsigned envelope: signers {:?}", v.signers()),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a signature file.
    match Envelope::from_json(data) {
        Ok(envelope) => check(&envelope),
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // 2. The bytes as the statement of a well-formed envelope whose signature claims the trusted
    //    key, so the statement parser, the publisher lookup and the signature checks are reached
    //    without the fuzzer having to find base64 first. The first 64 bytes are the signature.
    if data.len() > 64 && data.len() <= 8 * 1024 {
        let (sig, payload) = data.split_at(64);
        let json = format!(
            r#"{{"payloadType":"{PAYLOAD_TYPE}","payload":"{}","signatures":[{{"keyid":"{}","sig":"{}"}}]}}"#,
            STANDARD.encode(payload),
            fixture().key.key_id(),
            STANDARD.encode(sig),
        );
        let envelope = Envelope::from_json(json.as_bytes()).expect("well-formed envelope refused");
        assert_eq!(envelope.payload(), payload);
        check(&envelope);
    }
});
