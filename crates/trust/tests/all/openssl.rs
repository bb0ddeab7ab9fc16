//! Keys interoperate with `openssl pkey`, and our signatures are plain Ed25519 that openssl
//! verifies over the DSSE pre-authentication encoding.

use std::path::Path;
use std::process::Command;

use warden_trust::{KeyError, PublicKey, SigningKey, sign, verify};

use crate::support::{Scratch, toml_string};

const OPENSSL: &str = "/usr/bin/openssl";

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new(OPENSSL).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn openssl_keys_sign_and_verify() {
    let s = Scratch::new();
    let (key_path, pub_path) = (s.path("k.pem"), s.path("k.pub"));
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&key_path)]);
    openssl(&["pkey", "-in", p(&key_path), "-pubout", "-out", p(&pub_path)]);
    let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    let public_pem = std::fs::read_to_string(&pub_path).unwrap();
    let public = PublicKey::from_spki_pem(&public_pem).unwrap();
    assert_eq!(key.public_key(), public);
    // We write exactly what openssl writes.
    assert_eq!(public.to_spki_pem(), public_pem);
    assert_eq!(
        key.to_pkcs8_pem().as_str(),
        std::fs::read_to_string(&key_path).unwrap()
    );

    let bundle = s.bundle();
    let env = s.round_trip(&sign(&bundle, &key, None).unwrap());
    let trust = s.trust(&format!(
        "[[publisher]]\nname = \"acme\"\nkeys = [{}]\n",
        toml_string(&public_pem)
    ));
    let v = verify(bundle, &env, &trust).unwrap();
    assert_eq!(v.signers(), &[public.key_id()]);

    // openssl itself agrees the signature is Ed25519 over the DSSE PAE.
    let pae = s.write("pae.bin", env.pae());
    let sig = s.write("sig.bin", env.signatures()[0].sig());
    let out = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        p(&pub_path),
        "-rawin",
        "-in",
        p(&pae),
        "-sigfile",
        p(&sig),
    ]);
    assert!(String::from_utf8_lossy(&out).contains("Signature Verified Successfully"));
}

#[test]
fn openssl_reads_our_keys() {
    let s = Scratch::new();
    let key = SigningKey::generate();
    let key_path = s.write("our.key", key.to_pkcs8_pem().as_bytes());
    let public = openssl(&["pkey", "-in", p(&key_path), "-pubout"]);
    assert_eq!(
        String::from_utf8(public).unwrap(),
        key.public_key().to_spki_pem()
    );
    // And it signs with our key what we verify.
    let msg = s.write("msg.bin", b"hello");
    let sig = openssl(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        p(&key_path),
        "-rawin",
        "-in",
        p(&msg),
    ]);
    assert_eq!(sig.len(), 64);
}

#[test]
fn rsa_ec_and_other_keys_are_refused_clearly() {
    let s = Scratch::new();
    let cases: [(&[&str], &str); 4] = [
        (
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
            "RSA",
        ),
        (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "EC",
        ),
        (&["-algorithm", "ed448"], "Ed448"),
        (&["-algorithm", "x25519"], "X25519"),
    ];
    for (args, name) in cases {
        let key_path = s.path("other.pem");
        let mut all = vec!["genpkey"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-out", p(&key_path)]);
        openssl(&all);
        let private = std::fs::read_to_string(&key_path).unwrap();
        let public = String::from_utf8(openssl(&["pkey", "-in", p(&key_path), "-pubout"])).unwrap();
        let e = SigningKey::from_pkcs8_pem(&private).unwrap_err();
        assert!(
            matches!(e, KeyError::UnsupportedAlgorithm { .. }),
            "{name}: {e}"
        );
        assert!(
            e.to_string().contains(name) && e.to_string().contains("only Ed25519"),
            "{e}"
        );
        let e = PublicKey::from_spki_pem(&public).unwrap_err();
        assert!(e.to_string().contains(name), "{e}");
    }
    // Traditional (PKCS#1 / SEC1) encodings name what they are.
    let rsa = String::from_utf8(openssl(&["genrsa", "-traditional", "1024"])).unwrap();
    let e = SigningKey::from_pkcs8_pem(&rsa).unwrap_err();
    assert!(e.to_string().contains("RSA"), "{e}");
    let ec = String::from_utf8(openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
    ]))
    .unwrap();
    let e = SigningKey::from_pkcs8_pem(&ec).unwrap_err();
    assert!(e.to_string().contains("EC"), "{e}");
    // An encrypted key says how to decrypt it.
    let key_path = s.path("enc.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-aes-256-cbc",
        "-pass",
        "pass:x",
        "-out",
        p(&key_path),
    ]);
    let e = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
}
