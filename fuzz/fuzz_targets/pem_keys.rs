#![no_main]
//! Any bytes as PEM public and private keys, as the DER inside a `PUBLIC KEY` / `PRIVATE KEY`
//! PEM block, as 32 raw public key bytes, and as a key id. Nothing panics; a key that is accepted
//! prints back to PEM that parses to the same key (byte for byte the same PEM the second time),
//! and a raw public key is accepted only in its canonical encoding.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use warden_trust::{KeyId, PublicKey, SigningKey};

fn public(pem: &str) {
    let Ok(key) = PublicKey::from_spki_pem(pem) else {
        return;
    };
    let printed = key.to_spki_pem();
    let again = PublicKey::from_spki_pem(&printed).expect("printed public key parses");
    assert_eq!(again, key);
    assert_eq!(again.to_spki_pem(), printed);
    assert_eq!(
        PublicKey::from_bytes(&key.to_bytes()).expect("raw bytes of a key"),
        key
    );
    let id = key.key_id();
    assert_eq!(id.as_str().parse::<KeyId>().expect("key id parses"), id);
}

fn private(pem: &str) {
    let Ok(key) = SigningKey::from_pkcs8_pem(pem) else {
        return;
    };
    let printed = key.to_pkcs8_pem();
    let again = SigningKey::from_pkcs8_pem(&printed).expect("printed private key parses");
    assert_eq!(again.public_key(), key.public_key());
    assert_eq!(*again.to_pkcs8_pem(), *printed);
    // The public half of an accepted private key is a usable public key.
    public(&key.public_key().to_spki_pem());
}

fn wrap(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fuzz_target!(|data: &[u8]| {
    // The bytes as PEM text (lossily, so non-UTF-8 input still reaches the parser).
    let text = String::from_utf8_lossy(data);
    public(&text);
    private(&text);
    if let Ok(id) = text.parse::<KeyId>() {
        assert_eq!(id.as_str(), text, "key id changed on parse");
    }

    // The bytes as DER in a well-formed PEM block, so the DER readers are reached directly.
    if data.len() <= 2048 {
        public(&wrap("PUBLIC KEY", data));
        private(&wrap("PRIVATE KEY", data));
    }

    // The first 32 bytes as a raw public key: accepted only if canonical.
    if let Some(raw) = data.first_chunk::<32>() {
        if let Ok(key) = PublicKey::from_bytes(raw) {
            assert_eq!(
                &key.to_bytes(),
                raw,
                "a non-canonical encoding was accepted"
            );
            public(&key.to_spki_pem());
        }
    }
});
