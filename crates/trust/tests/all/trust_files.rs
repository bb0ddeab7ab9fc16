//! Trust bundle files: strict, with errors that name the key path and the line.

use base64::Engine as _;
use warden_trust::{TrustBundle, TrustError};

use crate::support::{Scratch, entry, toml_string};

fn spki_pem(raw: &[u8; 32]) -> String {
    let mut der = hex::decode("302a300506032b6570032100").unwrap();
    der.extend_from_slice(raw);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

fn error_of(s: &Scratch, text: &str) -> String {
    let path = s.write("trust.toml", text);
    let e = TrustBundle::read_file(&path).unwrap_err();
    assert!(matches!(e, TrustError::Toml { .. }), "{e}");
    e.to_string()
}

#[test]
fn small_order_key_is_refused_with_key_and_line() {
    let s = Scratch::new();
    let good = s.key("acme");
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let text = format!(
        "[[publisher]]\nname = \"acme\"\nkeys = [\n  {},\n  {},\n]\n",
        toml_string(&good.public_key().to_spki_pem()),
        toml_string(&spki_pem(&identity))
    );
    let e = error_of(&s, &text);
    assert!(e.contains("line 5: `publisher[0].keys[1]`"), "{e}");
    assert!(e.contains("weak public key"), "{e}");
    assert!(e.contains("trust.toml"), "{e}");
}

#[test]
fn structural_errors_name_key_and_line() {
    let s = Scratch::new();
    let (a, b) = (s.key("a"), s.key("b"));
    let e = error_of(
        &s,
        &format!(
            "{}\n{}",
            entry("acme", &[&a], &[], None),
            entry("acme", &[&b], &[], None)
        ),
    );
    assert!(
        e.contains("`publisher[1].name`") && e.contains("already listed"),
        "{e}"
    );

    let e = error_of(
        &s,
        &format!(
            "{}\n{}",
            entry("acme", &[&a], &[], None),
            entry("other", &[&a], &[], None)
        ),
    );
    assert!(
        e.contains("`publisher[1].keys[0]`") && e.contains("publisher `acme`"),
        "{e}"
    );

    let e = error_of(
        &s,
        &format!("{}keyz = []\n", entry("acme", &[&a], &[], None)),
    );
    assert!(e.contains("`publisher[0].keyz`: unknown key"), "{e}");

    let e = error_of(&s, &entry("acme", &[&a], &[], Some(2)));
    assert!(e.contains("`publisher[0].threshold`"), "{e}");

    let e = error_of(
        &s,
        "[[publisher]]\nname = \"acme\"\nkeys = [\"not a key\"]\n",
    );
    assert!(
        e.contains("line 3: `publisher[0].keys[0]`: invalid public key"),
        "{e}"
    );

    let e = error_of(&s, "[[publisher]]\nname = \"acme\"\nkeys = [\"x\"\n");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn io_errors_name_the_path() {
    let s = Scratch::new();
    let missing = s.path("missing.toml");
    let e = TrustBundle::read_file(&missing).unwrap_err();
    assert!(matches!(e, TrustError::Io { .. }));
    assert!(e.to_string().contains("missing.toml"), "{e}");
}
