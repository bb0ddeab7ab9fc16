//! The registry and the blob store on a real data dir: two handles (two processes' worth) on
//! one database, blobs damaged or swapped on disk, rows edited behind warden's back.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::SystemTime;

use tempfile::TempDir;
use warden_bundle::ContentHash;
use warden_manifest::{ExtensionId, TenantName};
use warden_registry::{
    ApiKey, Approval, BlobError, BlobStore, InstallRecord, Published, Registry, RegistryError,
};
use warden_store_sqlite::{FileBlobs, open_registry};

fn t(name: &str) -> TenantName {
    name.parse().unwrap()
}

fn install(tenant: &str, ext: &str, version: &str, hash: ContentHash) -> InstallRecord {
    InstallRecord {
        tenant: t(tenant),
        extension: ext.parse().unwrap(),
        version: version.parse().unwrap(),
        content_hash: hash,
        grant: "kv,secret:TOKEN,network:api.example.com".parse().unwrap(),
        approved: Approval::from_text("kv\nsecret TOKEN\n"),
        installed: SystemTime::now(),
    }
}

#[test]
fn tenants_keys_and_installs_round_trip_across_handles() {
    let dir = TempDir::new().unwrap();
    let a = open_registry(dir.path()).unwrap();
    let b = open_registry(dir.path()).unwrap();
    let key = ApiKey::generate();
    a.create_tenant(&t("acme"), &key.hash()).unwrap();
    // The second handle sees it; a second create of the name fails whoever asks.
    assert!(b.tenant(&t("acme")).unwrap().is_some());
    let e = b
        .create_tenant(&t("acme"), &ApiKey::generate().hash())
        .unwrap_err();
    assert!(matches!(e, RegistryError::TenantExists(_)), "{e}");
    assert_eq!(b.tenant_by_key(&key.hash()).unwrap(), Some(t("acme")));
    assert_eq!(b.tenant_by_key(&ApiKey::generate().hash()).unwrap(), None);
    // Only the hash is stored.
    let db = fs::read(dir.path().join("warden.db")).unwrap();
    assert!(
        !db.windows(key.reveal().len())
            .any(|w| w == key.reveal().as_bytes())
    );

    let h = ContentHash::of(b"bundle v1");
    let i = install("acme", "acme.hello", "1.0.0", h);
    a.put_install(&i, None).unwrap();
    assert_eq!(
        b.install(&t("acme"), &i.extension).unwrap().unwrap().grant,
        i.grant
    );
    let got = b.installs(None).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].approved, i.approved);
    assert_eq!(got[0].content_hash, h);
    // Upgrade replaces; another tenant's install is separate and needs the tenant.
    let v2 = install("acme", "acme.hello", "1.1.0", ContentHash::of(b"v2"));
    a.put_install(&v2, Some(&h)).unwrap();
    // Two installs decided on the same state: the second finds it changed and writes nothing
    // (red team round 3: parallel installs rolled back without --force).
    let racer = install("acme", "acme.hello", "1.0.5", ContentHash::of(b"v1.5"));
    let e = b.put_install(&racer, Some(&h)).unwrap_err();
    assert!(matches!(e, RegistryError::Changed { .. }), "{e}");
    assert_eq!(
        b.installs(Some(&t("acme"))).unwrap()[0].version.to_string(),
        "1.1.0"
    );
    let e = a
        .put_install(&install("ghost", "acme.hello", "1.0.0", h), None)
        .unwrap_err();
    assert!(matches!(e, RegistryError::NoTenant(_)), "{e}");
    assert!(b.remove_install(&t("acme"), &i.extension).unwrap());
    assert!(!a.remove_install(&t("acme"), &i.extension).unwrap());
    assert!(a.install(&t("acme"), &i.extension).unwrap().is_none());
}

#[test]
fn lookups_answered_from_memory_follow_every_other_handles_write() {
    let dir = TempDir::new().unwrap();
    let gateway = open_registry(dir.path()).unwrap();
    let cli = open_registry(dir.path()).unwrap();
    let key = ApiKey::generate();
    cli.create_tenant(&t("acme"), &key.hash()).unwrap();
    let h = ContentHash::of(b"bundle v1");
    let i = install("acme", "acme.hello", "1.0.0", h);
    cli.put_install(&i, None).unwrap();
    // Remembered by the gateway's handle...
    for _ in 0..3 {
        assert_eq!(gateway.tenant_by_key(&key.hash()).unwrap(), Some(t("acme")));
        assert_eq!(
            gateway
                .install(&t("acme"), &i.extension)
                .unwrap()
                .unwrap()
                .content_hash,
            h
        );
    }
    // ...and forgotten at once when another handle (another process) changes anything.
    let v2 = install("acme", "acme.hello", "2.0.0", ContentHash::of(b"v2"));
    cli.put_install(&v2, Some(&h)).unwrap();
    assert_eq!(
        gateway
            .install(&t("acme"), &i.extension)
            .unwrap()
            .unwrap()
            .version
            .to_string(),
        "2.0.0"
    );
    assert!(cli.remove_install(&t("acme"), &i.extension).unwrap());
    assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_none());
    // A stamp file that cannot be read: nothing is answered from memory.
    cli.put_install(&i, None).unwrap();
    assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_some());
    let stamp = dir.path().join("warden.db-stamp");
    assert_eq!(
        fs::metadata(&stamp).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fs::write(&stamp, b"").unwrap(); // truncated: reads as a new stamp
    assert!(cli.remove_install(&t("acme"), &i.extension).unwrap());
    assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_none());
}

#[test]
fn publications_keep_their_signature() {
    let dir = TempDir::new().unwrap();
    let r = open_registry(dir.path()).unwrap();
    let p = Published {
        content_hash: ContentHash::of(b"x"),
        id: "acme.hello".parse::<ExtensionId>().unwrap(),
        version: "1.2.3".parse().unwrap(),
        publisher: "acme".parse().unwrap(),
        signature: b"{\"payload\":1}".to_vec(),
        published: SystemTime::now(),
    };
    r.publish(&p).unwrap();
    r.publish(&p).unwrap(); // idempotent
    let got = r.published(&p.content_hash).unwrap().unwrap();
    assert_eq!(
        (&got.id, &got.version, &got.signature),
        (&p.id, &p.version, &p.signature)
    );
    assert!(r.published(&ContentHash::of(b"y")).unwrap().is_none());
    // Other content under the same id and version is refused; the first stays (red team:
    // two different bundles both published as acme.hello 1.2.3).
    let other = Published {
        content_hash: ContentHash::of(b"y"),
        ..p.clone()
    };
    let e = r.publish(&other).unwrap_err();
    assert!(
        matches!(&e, RegistryError::VersionTaken { existing, .. } if *existing == p.content_hash),
        "{e}"
    );
    assert!(r.published(&other.content_hash).unwrap().is_none());
    // A new version of it is fine.
    r.publish(&Published {
        version: "1.2.4".parse().unwrap(),
        ..other
    })
    .unwrap();
}

#[test]
fn a_row_edited_behind_wardens_back_is_reported_not_trusted() {
    let dir = TempDir::new().unwrap();
    let r = open_registry(dir.path()).unwrap();
    r.create_tenant(&t("acme"), &ApiKey::generate().hash())
        .unwrap();
    r.put_install(
        &install("acme", "acme.hello", "1.0.0", ContentHash::of(b"v1")),
        None,
    )
    .unwrap();
    let raw = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
    raw.execute(
        "UPDATE registry_installs SET content_hash = 'sha256:../../etc'",
        [],
    )
    .unwrap();
    let e = r.installs(None).unwrap_err();
    assert!(matches!(e, RegistryError::Damaged(_)), "{e}");
    assert!(e.to_string().contains("content hash"), "{e}");
}

#[test]
fn blobs_are_content_addressed_private_and_checked_on_read() {
    let dir = TempDir::new().unwrap();
    let blobs = FileBlobs::open(dir.path()).unwrap();
    let bytes = b"a bundle's bytes".repeat(1000);
    let h = blobs.put(&bytes).unwrap();
    assert_eq!(h, ContentHash::of(&bytes));
    assert_eq!(blobs.put(&bytes).unwrap(), h); // again: same name, nothing rewritten
    assert_eq!(blobs.get(&h).unwrap().unwrap(), bytes);
    assert!(blobs.get(&ContentHash::of(b"other")).unwrap().is_none());
    let path = dir
        .path()
        .join("blobs/sha256")
        .join(h.to_string().trim_start_matches("sha256:"));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(dir.path().join("blobs"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // No temporary file is left behind.
    assert_eq!(
        fs::read_dir(dir.path().join("blobs/tmp")).unwrap().count(),
        0
    );

    // Swapped on disk (same length, one byte): never served.
    let mut bad = bytes.clone();
    bad[10] ^= 1;
    fs::write(&path, &bad).unwrap();
    let e = blobs.get(&h).unwrap_err();
    assert!(matches!(e, BlobError::Corrupt { .. }), "{e}");
    // A put of the right bytes repairs it.
    blobs.put(&bytes).unwrap();
    assert_eq!(blobs.get(&h).unwrap().unwrap(), bytes);

    // A link planted in the blob folder is refused, not followed.
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
    let e = blobs.get(&h).unwrap_err();
    assert!(e.to_string().contains("blob storage"), "{e}");
    assert!(matches!(e, BlobError::Storage { .. }));
}

/// An extension id stays with the publisher that first published it (red team: any trusted
/// publisher could publish over another's id); a database from before the pin (schema
/// version 1) is migrated with each id pinned to the publisher of its earliest publication.
#[test]
fn an_id_is_pinned_to_its_first_publisher_and_old_databases_are_migrated() {
    let dir = TempDir::new().unwrap();
    let r = open_registry(dir.path()).unwrap();
    let p = |bytes: &[u8], id: &str, version: &str, publisher: &str| Published {
        content_hash: ContentHash::of(bytes),
        id: id.parse().unwrap(),
        version: version.parse().unwrap(),
        publisher: publisher.parse().unwrap(),
        signature: b"{}".to_vec(),
        published: SystemTime::now(),
    };
    r.publish(&p(b"a1", "acme.hello", "1.0.0", "acme")).unwrap();
    let e = r
        .publish(&p(b"m1", "acme.hello", "2.0.0", "mallory"))
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::PublisherPinned { pinned, .. } if pinned == "acme"),
        "{e}"
    );
    assert!(e.to_string().contains("first published by acme"), "{e}");
    assert!(r.published(&ContentHash::of(b"m1")).unwrap().is_none());
    r.publish(&p(b"a2", "acme.hello", "2.0.0", "acme")).unwrap();
    r.publish(&p(b"m2", "mallory.hello", "1.0.0", "mallory"))
        .unwrap();
    drop(r);

    // As a version-1 database holding the attack already made: two publishers of one id.
    let raw = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
    raw.execute_batch(
        "DROP TABLE registry_publishers;
         UPDATE schema_versions SET version = 1 WHERE component = 'registry';
         UPDATE registry_published SET published_ms = 1000 WHERE id = 'acme.hello';
         INSERT INTO registry_published (content_hash, id, version, publisher, signature, published_ms)
           VALUES ('sha256:0000000000000000000000000000000000000000000000000000000000000000',
                   'acme.hello', '3.0.0', 'mallory', x'7b7d', 2000);",
    )
    .unwrap();
    drop(raw);
    let r = open_registry(dir.path()).unwrap();
    let e = r
        .publish(&p(b"m3", "acme.hello", "4.0.0", "mallory"))
        .unwrap_err();
    assert!(matches!(e, RegistryError::PublisherPinned { .. }), "{e}");
    r.publish(&p(b"a4", "acme.hello", "4.0.0", "acme")).unwrap();
    let e = r
        .publish(&p(b"a5", "mallory.hello", "2.0.0", "acme"))
        .unwrap_err();
    assert!(matches!(e, RegistryError::PublisherPinned { .. }), "{e}");
}
