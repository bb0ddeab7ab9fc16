//! `SqliteRegistry` and `FileBlobs`: the suites of `warden-registry`, then what only a data
//! dir has: two handles (two processes' worth) on one database, the change stamp, blob files
//! and their modes, rows edited behind warden's back, migrations.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tempfile::TempDir;
use warden_bundle::ContentHash;
use warden_manifest::TenantName;
use warden_registry::{
    ApiKey, Approval, BlobError, BlobStore, InstallRecord, Published, Registry, RegistryError,
};
use warden_store_sqlite::{FileBlobs, SqliteRegistry, open_registry};

use crate::common::Fresh;

fn fresh_registry() -> Fresh<SqliteRegistry> {
    Fresh::new(|dir| open_registry(dir).unwrap())
}

fn fresh_blobs() -> Fresh<FileBlobs> {
    Fresh::new(|dir| FileBlobs::open(dir).unwrap())
}

fn blob_path(data: &Path, hash: &ContentHash) -> PathBuf {
    data.join("blobs/sha256")
        .join(hash.to_string().trim_start_matches("sha256:"))
}

/// Damage on disk: the file of `hash` rewritten with `bytes`.
fn overwrite_blob(blobs: &Fresh<FileBlobs>, hash: &ContentHash, bytes: &[u8]) {
    fs::write(blob_path(blobs.dir(), hash), bytes).unwrap();
}

/// Every check every `Registry` must pass, each on a new database.
mod registry_suite {
    warden_registry::registry_tests!(super::fresh_registry);
}

/// Every check every `BlobStore` must pass, each in a new data dir.
mod blob_suite {
    warden_registry::blob_store_tests!(super::fresh_blobs, super::overwrite_blob);
}

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

/// Two handles on one data dir (two processes' worth): each sees the other's writes, and an
/// install decided on what one read is refused when the other changed it meanwhile.
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
    let v2 = install("acme", "acme.hello", "1.1.0", ContentHash::of(b"v2"));
    a.put_install(&v2, Some(&h)).unwrap();
    // Decided on the state b read before a's upgrade: refused, nothing written.
    let racer = install("acme", "acme.hello", "1.0.5", ContentHash::of(b"v1.5"));
    let e = b.put_install(&racer, Some(&h)).unwrap_err();
    assert!(matches!(e, RegistryError::Changed { .. }), "{e}");
    assert_eq!(
        b.installs(Some(&t("acme"))).unwrap()[0].version.to_string(),
        "1.1.0"
    );
    assert!(b.remove_install(&t("acme"), &i.extension).unwrap());
    assert!(!a.remove_install(&t("acme"), &i.extension).unwrap());
    assert!(a.install(&t("acme"), &i.extension).unwrap().is_none());
}

/// Installs decided on one state and written at once through separate handles (separate
/// connections, as separate processes would): one is written, the others are `Changed`.
#[test]
fn handles_racing_on_one_install_have_one_winner() {
    let dir = TempDir::new().unwrap();
    open_registry(dir.path())
        .unwrap()
        .create_tenant(&t("acme"), &ApiKey::generate().hash())
        .unwrap();
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u8)
            .map(|n| {
                let dir = dir.path();
                s.spawn(move || {
                    let r = open_registry(dir).unwrap();
                    let i = install("acme", "acme.hello", "1.0.0", ContentHash::of(&[n]));
                    r.put_install(&i, None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|a| a.is_ok()).count(),
        1,
        "{answers:?}"
    );
    for a in answers {
        if let Err(e) = a {
            assert!(matches!(e, RegistryError::Changed { .. }), "{e}");
        }
    }
    let r = open_registry(dir.path()).unwrap();
    assert_eq!(r.installs(None).unwrap().len(), 1);
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

/// A writer that died between its commit and its new stamp (killed there) left its pending
/// mark: the change is read at once, not answered from memory for ever (outside attack,
/// session 29: the uninstalled extension answered until the service restarted).
#[test]
fn a_writer_that_died_after_its_commit_leaves_no_stale_answer() {
    let dir = TempDir::new().unwrap();
    let gateway = open_registry(dir.path()).unwrap();
    let cli = open_registry(dir.path()).unwrap();
    cli.create_tenant(&t("acme"), &ApiKey::generate().hash())
        .unwrap();
    let i = install("acme", "acme.hello", "1.0.0", ContentHash::of(b"v1"));
    cli.put_install(&i, None).unwrap();
    for _ in 0..2 {
        assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_some());
    }
    // What such a writer leaves: its mark (written before its change), then its change.
    let stamp = dir.path().join("warden.db-stamp");
    let mut mark = fs::read(&stamp).unwrap();
    mark[0] |= 0x80;
    fs::write(&stamp, &mark).unwrap();
    // Read while the change is under way: not committed yet.
    for _ in 0..2 {
        assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_some());
    }
    let raw = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
    assert_eq!(raw.execute("DELETE FROM registry_installs", []).unwrap(), 1);
    for _ in 0..3 {
        assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_none());
    }
    // The next write ends the mark; answers come from memory again, and are right.
    cli.put_install(&i, None).unwrap();
    for _ in 0..2 {
        assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_some());
    }
}

/// A write waiting for another process's write (stopped inside it, its mark left) never holds
/// up this handle's lookups: they read the database at once while the writer waits, and the
/// writer goes on once the other lets go (outside attack, session 29: a stopped CLI stalled
/// the gateway and `/healthz` 5 s per queued admin write).
#[test]
fn a_writer_waiting_for_another_process_does_not_hold_up_lookups() {
    let dir = TempDir::new().unwrap();
    let gateway = std::sync::Arc::new(open_registry(dir.path()).unwrap());
    let key = ApiKey::generate().hash();
    gateway.create_tenant(&t("acme"), &key).unwrap();
    let i = install("acme", "acme.hello", "1.0.0", ContentHash::of(b"v1"));
    gateway.put_install(&i, None).unwrap();
    // The other process, stopped inside its write: holding the stamp, its mark written.
    let stamp = dir.path().join("warden.db-stamp");
    let other = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&stamp)
        .unwrap();
    other.lock().unwrap();
    let mut mark = fs::read(&stamp).unwrap();
    mark[0] |= 0x80;
    fs::write(&stamp, &mark).unwrap();
    let writer = {
        let gateway = gateway.clone();
        let next = install("acme", "acme.other", "1.0.0", ContentHash::of(b"v2"));
        std::thread::spawn(move || gateway.put_install(&next, None))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(gateway.tenant_by_key(&key).unwrap(), Some(t("acme")));
        assert!(gateway.install(&t("acme"), &i.extension).unwrap().is_some());
    }
    assert!(
        !writer.is_finished(),
        "the writer waits for the other's write"
    );
    other.unlock().unwrap();
    writer.join().unwrap().unwrap();
    let other_ext = "acme.other".parse().unwrap();
    assert!(gateway.install(&t("acme"), &other_ext).unwrap().is_some());
}

/// Writes of one handle queued behind another process's write that never ends (a stopped
/// CLI) are refused together within the one bound, not one bound each in turn (outside
/// attack, session 30: three admin writes were answered 503 at 5, 10 and 15 s), and say why.
#[test]
fn writes_queued_behind_a_stopped_process_are_refused_together() {
    let dir = TempDir::new().unwrap();
    let r = std::sync::Arc::new(open_registry(dir.path()).unwrap());
    let other = fs::File::open(dir.path().join("warden.db-stamp")).unwrap();
    other.lock().unwrap();
    let started = std::time::Instant::now();
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let r = r.clone();
            std::thread::spawn(move || {
                let e = r
                    .create_tenant(&t(name), &ApiKey::generate().hash())
                    .unwrap_err();
                (e, started.elapsed())
            })
        })
        .collect();
    for w in writers {
        let (e, at) = w.join().unwrap();
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(why.contains("stopped or stuck `warden` command"), "{why}");
        // Each within its own 5 s wait (before: 5, 10 and 15 s).
        assert!(at < std::time::Duration::from_secs(8), "{at:?}: {why}");
    }
    other.unlock().unwrap();
    assert!(r.tenants().unwrap().is_empty());
    r.create_tenant(&t("a"), &ApiKey::generate().hash())
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

/// The blob files: 0600 in a 0700 folder, no temporary file left behind, and a link planted
/// in their folder is refused, not followed. (Content addressing and damaged bytes: the
/// suite above.)
#[test]
fn blobs_are_private_files_and_links_are_not_followed() {
    let dir = TempDir::new().unwrap();
    let blobs = FileBlobs::open(dir.path()).unwrap();
    let bytes = b"a bundle's bytes".repeat(1000);
    let h = blobs.put(&bytes).unwrap();
    let path = blob_path(dir.path(), &h);
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
    assert_eq!(
        fs::read_dir(dir.path().join("blobs/tmp")).unwrap().count(),
        0
    );

    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
    let e = blobs.get(&h).unwrap_err();
    assert!(e.to_string().contains("blob storage"), "{e}");
    assert!(matches!(e, BlobError::Storage { .. }));
}

/// A database from before the publisher pin (schema version 1) is migrated with each id
/// pinned to the publisher of its earliest publication. (The pin itself: the suite above.)
#[test]
fn databases_from_before_the_publisher_pin_are_migrated() {
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
