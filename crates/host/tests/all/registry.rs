//! Installs served from the registry (issue 10): what is loaded for calls is the stored blob,
//! checked against its hash and verified again against the trust bundle of the host that
//! loads it, so a tampered blob or a revoked publisher key stops an install from being served.

use std::fs;
use std::sync::Arc;

use warden_audit::Event;
use warden_host::{Grant, Host, HostError, MemoryAudit, TrustBundle};
use warden_registry::BlobError;

use crate::support::Lab;

fn bytes_of(path: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    (
        fs::read(path).unwrap(),
        fs::read(format!("{}.sig", path.display())).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_install_is_verified_again_when_loaded_from_the_registry() {
    let lab = Lab::new();
    let acme = "acme".parse().unwrap();
    let admin = lab.host.admin().unwrap();
    admin.create_tenant(&acme).unwrap();
    let (bundle, sig) = bytes_of(&lab.bundle("echo", |m| m));
    let done = admin
        .install(&acme, "echo.wext", bundle, &sig, Some(&Grant::None), false)
        .unwrap();
    let id = done.record.extension.clone();

    // Served: loaded from the blob, verified, called.
    let info = admin.load_installed(&acme, &id).unwrap();
    assert_eq!(info.content_hash, done.record.content_hash);
    let out = lab
        .host
        .tenant(&acme)
        .call(&id, "echo", b"hi")
        .await
        .unwrap();
    assert_eq!(out.value, b"hi");
    // Another tenant has no such install: it does not exist for them.
    let globex = "globex".parse().unwrap();
    let e = admin.load_installed(&globex, &id).unwrap_err();
    assert!(matches!(e, HostError::NotInstalled { .. }), "{e}");

    // Trust rotation: a host whose trust bundle revokes the publisher's key, or no longer
    // lists the publisher, refuses to serve the install, and records why.
    let keys_line = lab
        .trust_text()
        .lines()
        .find(|l| l.starts_with("keys = "))
        .unwrap()
        .to_owned();
    // The publisher rotated to a new key and revoked the one the bundle was signed with.
    let new_pem = warden_trust::SigningKey::generate()
        .public_key()
        .to_spki_pem()
        .replace('\n', "\\n");
    let revoked = lab
        .trust_text()
        .replace(
            "revoked = []",
            &keys_line.replacen("keys = ", "revoked = ", 1),
        )
        .replace(&keys_line, &format!("keys = [\"{new_pem}\"]"));
    assert_ne!(revoked, lab.trust_text());
    for trust in [revoked.as_str(), ""] {
        let audit = Arc::new(MemoryAudit::default());
        let rotated = Host::builder()
            .trust(TrustBundle::parse(trust).unwrap())
            .data_dir(lab.dir.path().join("data"))
            .audit(audit.clone())
            .build()
            .unwrap();
        let e = rotated
            .admin()
            .unwrap()
            .load_installed(&acme, &id)
            .unwrap_err();
        assert!(matches!(e, HostError::Verify(_)), "{e}");
        assert!(
            audit
                .records()
                .iter()
                .any(|r| r.event() == Event::VerificationFailure
                    && r.tenant() == Some("acme")
                    && r.content_hash().is_some())
        );
        assert!(
            rotated
                .tenant(&acme)
                .call(&id, "echo", b"hi")
                .await
                .is_err()
        );
    }

    // A blob changed on disk is never loaded.
    let hex = done.record.content_hash.to_string();
    let blob = lab
        .dir
        .path()
        .join("data/blobs/sha256")
        .join(hex.trim_start_matches("sha256:"));
    let mut b = fs::read(&blob).unwrap();
    let i = b.len() / 2;
    b[i] ^= 1;
    fs::write(&blob, &b).unwrap();
    let e = admin.load_installed(&acme, &id).unwrap_err();
    assert!(
        matches!(e, HostError::Blob(BlobError::Corrupt { .. })),
        "{e}"
    );

    // Uninstalled: gone from the registry and from this host's loaded extensions at once.
    assert!(admin.uninstall(&acme, &id).unwrap());
    assert!(
        lab.host
            .tenant(&acme)
            .call(&id, "echo", b"hi")
            .await
            .is_err()
    );
    let e = admin.load_installed(&acme, &id).unwrap_err();
    assert!(matches!(e, HostError::NotInstalled { .. }), "{e}");
}

/// Red team (issue 10): an install whose grant names, item by item, a capability the
/// operator's policy forbids was accepted (and the capability quietly withheld at call time).
/// Now it is refused as a policy error (the admin API's 403), nothing is installed, and the
/// refusal is audited; `all` still installs, with the forbidden part withheld.
#[tokio::test(flavor = "multi_thread")]
async fn a_grant_naming_a_forbidden_capability_is_refused_at_install() {
    let policy =
        warden_host::Policy::parse("[policy]\ncapabilities = [\"filesystem\", \"secrets\"]\n")
            .unwrap();
    let lab = Lab::with_policy(policy);
    let acme = "acme".parse().unwrap();
    let admin = lab.host.admin().unwrap();
    admin.create_tenant(&acme).unwrap();
    let (bundle, sig) = bytes_of(&lab.bundle("echo", |m| {
        m + "\n[permissions]\ncalls = [\"warden.hostile\"]\n"
    }));
    let grant: Grant = "calls".parse().unwrap();
    let e = admin
        .install(
            &acme,
            "echo.wext",
            bundle.clone(),
            &sig,
            Some(&grant),
            false,
        )
        .unwrap_err();
    assert!(matches!(e, HostError::Policy(_)), "{e}");
    assert!(e.to_string().contains("policy forbids"), "{e}");
    assert!(admin.registry().installs(Some(&acme)).unwrap().is_empty());
    let audit = lab.audit.records();
    let refused = audit
        .iter()
        .rev()
        .find(|r| r.event() == Event::Install)
        .unwrap();
    assert_eq!(refused.outcome().as_str(), "denied", "{refused:?}");
    admin
        .install(&acme, "echo.wext", bundle, &sig, Some(&Grant::All), false)
        .unwrap();
}
