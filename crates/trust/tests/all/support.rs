//! Builders for real bundles, keys, trust bundles and hand-crafted envelopes.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use tempfile::TempDir;
use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_trust::{Envelope, PAYLOAD_TYPE, SigningKey, TrustBundle, dsse};

pub const MANIFEST: &str = r#"schema = 1
[extension]
id = "acme.hello"
version = "1.0.0"
publisher = "acme"
kind = "component"
entry = "extension.wasm"
"#;

/// A scratch folder for one test.
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Packs a bundle folder with `manifest` (and an asset when `extra` is given), writes it to
    /// `NAME.wext` and reads it back the way the CLI does.
    pub fn bundle_from(&self, name: &str, manifest: &str, extra: Option<&[u8]>) -> Bundle {
        let src = self.path(&format!("{name}-src"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("extension.toml"), manifest).unwrap();
        let wasm = wat::parse_str("(component)").unwrap();
        std::fs::write(src.join("extension.wasm"), wasm).unwrap();
        if let Some(extra) = extra {
            std::fs::create_dir_all(src.join("assets")).unwrap();
            std::fs::write(src.join("assets/data.bin"), extra).unwrap();
        }
        let packed = pack_dir(&src, &BundleLimits::default()).unwrap();
        let file = self.path(&format!("{name}.wext"));
        std::fs::write(&file, &packed.bytes).unwrap();
        let bundle = Bundle::read_file(&file, &BundleLimits::default()).unwrap();
        assert_eq!(bundle.content_hash(), packed.hash);
        bundle
    }

    /// The standard test bundle: acme.hello 1.0.0 by acme.
    pub fn bundle(&self) -> Bundle {
        self.bundle_from("hello", MANIFEST, None)
    }

    /// The standard manifest with one field replaced.
    pub fn bundle_with(&self, name: &str, from: &str, to: &str) -> Bundle {
        assert!(MANIFEST.contains(from));
        self.bundle_from(name, &MANIFEST.replace(from, to), None)
    }

    /// A key written to `NAME.key` as PEM and read back.
    pub fn key(&self, name: &str) -> SigningKey {
        let key = SigningKey::generate();
        let path = self.path(&format!("{name}.key"));
        std::fs::write(&path, key.to_pkcs8_pem().as_bytes()).unwrap();
        SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// Writes a signature file and reads it back.
    pub fn round_trip(&self, envelope: &Envelope) -> Envelope {
        let path = self.path("bundle.wext.sig");
        std::fs::write(&path, envelope.to_json_pretty()).unwrap();
        Envelope::read_file(&path).unwrap()
    }

    /// Writes a trust bundle file and reads it back.
    pub fn trust(&self, text: &str) -> TrustBundle {
        let path = self.path("trust.toml");
        std::fs::write(&path, text).unwrap();
        TrustBundle::read_file(&path).unwrap()
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// One `[[publisher]]` entry.
pub fn entry(
    name: &str,
    keys: &[&SigningKey],
    revoked: &[&SigningKey],
    threshold: Option<usize>,
) -> String {
    let list = |ks: &[&SigningKey]| {
        ks.iter()
            .map(|k| toml_string(&k.public_key().to_spki_pem()))
            .collect::<Vec<_>>()
            .join(",\n  ")
    };
    let mut s = format!(
        "[[publisher]]\nname = \"{name}\"\nkeys = [\n  {}\n]\nrevoked = [{}]\n",
        list(keys),
        list(revoked)
    );
    if let Some(t) = threshold {
        s.push_str(&format!("threshold = {t}\n"));
    }
    s
}

/// A TOML basic string, PEM newlines escaped, as the spec shows.
pub fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\n', "\\n"))
}

/// Signs raw bytes with a key's PKCS#8 PEM, outside the crate's API: for crafting envelopes
/// whose signatures are valid but whose content is hostile.
pub fn raw_sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    let dalek = ed25519_dalek::SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
    dalek.sign(message).to_bytes()
}

/// A hand-made envelope, validly signed by `keys` over `payload` with `payload_type`.
pub fn craft(payload_type: &str, payload: &[u8], keys: &[&SigningKey]) -> String {
    let pae = dsse::pae(payload_type, payload);
    let sigs: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "keyid": k.public_key().key_id().to_string(),
                "sig": STANDARD.encode(raw_sign(k, &pae)),
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "payloadType": payload_type,
        "payload": STANDARD.encode(payload),
        "signatures": sigs,
    }))
    .unwrap()
}

/// The statement JSON of an envelope, as a mutable map.
pub fn statement_map(env: &Envelope) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_slice(env.payload()).unwrap()
}

/// A crafted envelope from a statement map, with our payload type.
pub fn craft_statement(
    map: &serde_json::Map<String, serde_json::Value>,
    keys: &[&SigningKey],
) -> String {
    craft(
        PAYLOAD_TYPE,
        serde_json::to_string(map).unwrap().as_bytes(),
        keys,
    )
}
