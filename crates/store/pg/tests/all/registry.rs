//! `PgRegistry`: the suite of `warden-registry`, then what only a shared database has: several
//! runners writing at once, and the change notices.

use warden_bundle::ContentHash;
use warden_registry::{ApiKey, Approval, InstallRecord, Registry, RegistryError};
use warden_store_pg::PgRegistry;

use crate::common::{Fresh, TestDb};

pub fn fresh_registry() -> Option<Fresh<PgRegistry>> {
    Fresh::new(|pg| pg.registry())
}

/// Every check every `Registry` must pass, each on a new database.
mod suite {
    warden_registry::registry_tests!(fresh_or_skip!(crate::registry::fresh_registry()));
}

fn install(version: &str, content: &[u8]) -> InstallRecord {
    InstallRecord {
        tenant: "acme".parse().unwrap(),
        extension: "acme.hello".parse().unwrap(),
        version: version.parse().unwrap(),
        content_hash: ContentHash::of(content),
        grant: "kv".parse().unwrap(),
        approved: Approval::from_text("kv\n"),
        installed: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
    }
}

/// Installs decided on one state, written at once through three runners: one winner, the
/// others `Changed`; every runner reads the winner at once.
#[test]
fn runners_installing_at_once_have_one_winner() {
    let Some(db) = TestDb::new() else { return };
    let runners: Vec<PgRegistry> = (0..3).map(|_| db.connect().registry()).collect();
    runners[0]
        .create_tenant(&"acme".parse().unwrap(), &ApiKey::generate().hash())
        .unwrap();
    let candidates: Vec<_> = (0..9)
        .map(|i| install(&format!("1.{i}.0"), format!("v{i}").as_bytes()))
        .collect();
    let answers: Vec<_> = std::thread::scope(|t| {
        let handles: Vec<_> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let r = &runners[i % 3];
                t.spawn(move || r.put_install(c, None))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<_> = answers.iter().filter(|a| a.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for a in &answers {
        if let Err(e) = a {
            assert!(matches!(e, RegistryError::Changed { .. }), "{e}");
        }
    }
    let won = runners[1]
        .install(&"acme".parse().unwrap(), &"acme.hello".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        runners[2].installs(None).unwrap(),
        std::slice::from_ref(&won)
    );
    // Every write bumped the registry version once (tenant + one install).
    assert_eq!(
        db.query_text("SELECT registry_version FROM warden_meta"),
        Some("2".into())
    );
}

/// A database that cannot be reached is a storage error naming it without its password (the
/// service answers 503), not a panic or a wrong answer.
#[test]
fn a_lost_database_is_a_storage_error() {
    let Some(db) = TestDb::new() else { return };
    let r = db.connect().registry();
    r.tenants().unwrap();
    drop(db);
    let e = r.tenants().unwrap_err();
    assert!(matches!(e, RegistryError::Storage { .. }), "{e}");
    assert!(
        e.to_string().starts_with("registry storage postgres://"),
        "{e}"
    );
}

/// Every registry write through one runner reaches another runner's listener once committed,
/// in order, with the registry version; a refused write announces nothing.
#[test]
fn changes_reach_every_runner() {
    use std::time::{Duration, Instant};
    use warden_store_pg::{Change, ChangeKind};

    let Some(db) = TestDb::new() else { return };
    let (a, b) = (db.connect(), db.connect());
    let feed = b.changes().unwrap();
    let writer = a.registry();
    let start = Instant::now();
    writer
        .create_tenant(&"acme".parse().unwrap(), &ApiKey::generate().hash())
        .unwrap();
    // Refused (exists): rolled back, so not announced.
    writer
        .create_tenant(&"acme".parse().unwrap(), &ApiKey::generate().hash())
        .unwrap_err();
    writer.put_install(&install("1.0.0", b"v1"), None).unwrap();
    assert!(
        writer
            .remove_install(&"acme".parse().unwrap(), &"acme.hello".parse().unwrap())
            .unwrap()
    );
    a.notify(ChangeKind::Secret, Some("acme"), Some("acme.hello"))
        .unwrap();
    let got: Vec<Change> = (0..4)
        .map(|_| feed.recv_timeout(Duration::from_secs(1)).unwrap())
        .collect();
    println!(
        "change feed: 4 changes seen by another runner {:?} after the first write",
        start.elapsed()
    );
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        got,
        [
            Change {
                version: 1,
                kind: ChangeKind::Tenant,
                tenant: some("acme"),
                extension: None
            },
            Change {
                version: 2,
                kind: ChangeKind::Install,
                tenant: some("acme"),
                extension: some("acme.hello")
            },
            Change {
                version: 3,
                kind: ChangeKind::Uninstall,
                tenant: some("acme"),
                extension: some("acme.hello")
            },
            Change {
                version: 4,
                kind: ChangeKind::Secret,
                tenant: some("acme"),
                extension: some("acme.hello")
            },
        ]
    );
    assert!(feed.recv_timeout(Duration::from_millis(200)).is_err());
    // The listener's connection lost (the database dropped under it, with every connection):
    // the receiver is disconnected, not silently stale.
    drop(db);
    assert!(matches!(
        feed.recv_timeout(Duration::from_secs(5)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
    ));
    drop(b);
}
