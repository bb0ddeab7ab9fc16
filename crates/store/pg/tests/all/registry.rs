//! `PgRegistry`: the suite of `warden-registry`, then what only a shared database has: several
//! runners writing at once, and the change notices.

use warden_bundle::ContentHash;
use warden_registry::{ApiKey, Approval, InstallRecord, Registry, RegistryError};
use warden_store_pg::PgRegistry;

use std::time::{Duration, Instant};

use warden_manifest::{ExtensionId, TenantName};
use warden_registry::KeyHash;

use crate::common::{Fresh, TestDb};
use crate::proxy::Proxy;

pub fn fresh_registry() -> Option<Fresh<PgRegistry>> {
    Fresh::new(|pg| pg.registry())
}

pub fn fresh_cached() -> Option<Fresh<PgRegistry>> {
    Fresh::new(|pg| pg.registry_cached().unwrap())
}

/// Every check every `Registry` must pass, each on a new database.
mod suite {
    warden_registry::registry_tests!(fresh_or_skip!(crate::registry::fresh_registry()));
}

/// The same on the registry that answers `tenant_by_key` and `install` from its snapshot: every
/// write is seen by the next lookup on the same runner.
mod suite_cached {
    warden_registry::registry_tests!(fresh_or_skip!(crate::registry::fresh_cached()));
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

fn acme() -> TenantName {
    "acme".parse().unwrap()
}

fn hello() -> ExtensionId {
    "acme.hello".parse().unwrap()
}

/// Waits (polling every millisecond, at most 3 s) until `seen`; returns how long it took.
fn until(what: &str, mut seen: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !seen() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{what}: not seen in 3 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

/// A new tenant key, an install and an uninstall made through another runner are seen by the
/// cached registry within 1 s each, from the notices.
#[test]
fn changes_through_another_runner_are_seen_within_a_second() {
    let Some(db) = TestDb::new() else { return };
    let writer = db.connect().registry();
    let cached = db.connect().registry_cached().unwrap();
    let key = ApiKey::generate().hash();
    assert_eq!(cached.tenant_by_key(&key).unwrap(), None);

    writer.create_tenant(&acme(), &key).unwrap();
    let tenant = until("a new tenant key", || {
        cached.tenant_by_key(&key).unwrap() == Some(acme())
    });
    writer.put_install(&install("1.0.0", b"v1"), None).unwrap();
    let installed = until("an install", || {
        cached.install(&acme(), &hello()).unwrap().is_some()
    });
    assert_eq!(
        cached.install(&acme(), &hello()).unwrap(),
        Some(install("1.0.0", b"v1"))
    );
    assert!(writer.remove_install(&acme(), &hello()).unwrap());
    let uninstalled = until("an uninstall", || {
        cached.install(&acme(), &hello()).unwrap().is_none()
    });
    println!(
        "registry snapshot: another runner's change seen after {tenant:?} (tenant key), \
         {installed:?} (install), {uninstalled:?} (uninstall)"
    );
    for t in [tenant, installed, uninstalled] {
        assert!(t < Duration::from_secs(1), "{t:?}");
    }
    // An unknown key stays unknown; a wrong key of the same tenant is not it.
    assert_eq!(
        cached.tenant_by_key(&ApiKey::generate().hash()).unwrap(),
        None
    );
}

/// Changes written behind warden's back without a notice are found by the poll of the registry
/// version; a notice that skips versions reloads everything.
#[test]
fn changes_without_their_notice_are_found_by_the_poll() {
    let Some(db) = TestDb::new() else { return };
    let writer = db.connect().registry();
    let key = ApiKey::generate().hash();
    writer.create_tenant(&acme(), &key).unwrap();
    writer.put_install(&install("1.0.0", b"v1"), None).unwrap();
    let cached = db.connect().registry_cached().unwrap();
    assert!(cached.install(&acme(), &hello()).unwrap().is_some());

    // No notice at all: the poll sees the version move.
    db.sql(
        "DELETE FROM registry_installs;
         UPDATE warden_meta SET registry_version = registry_version + 1",
    );
    let polled = until("a change without a notice", || {
        cached.install(&acme(), &hello()).unwrap().is_none()
    });
    // A notice 5 versions on, naming nothing: everything is reloaded.
    let other = ApiKey::generate().hash();
    db.sql(&format!(
        "INSERT INTO registry_keys VALUES ('{}', 'acme');
         UPDATE warden_meta SET registry_version = registry_version + 5;
         SELECT pg_notify('warden_changes', 'v1 ' || registry_version || ' publish - -')
         FROM warden_meta",
        other.to_hex()
    ));
    let jumped = until("a notice past a gap", || {
        cached.tenant_by_key(&other).unwrap() == Some(acme())
    });
    println!(
        "registry snapshot: a change without a notice seen after {polled:?}, past a gap after {jumped:?}"
    );
    assert!(polled < Duration::from_secs(1), "{polled:?}");
}

/// Each of the cached registry's connections ended by the server (as a restart does): the
/// listener reconnects by itself and changes made meanwhile are seen.
#[test]
fn the_listener_reconnects_after_its_connection_is_ended() {
    let Some(db) = TestDb::new() else { return };
    let writer = db.connect().registry();
    let key = ApiKey::generate().hash();
    writer.create_tenant(&acme(), &key).unwrap();
    // Named, so that only its connections are ended (a pooled one the writer is about to use,
    // ended under it, would fail its write).
    let cached = warden_store_pg::PgStore::connect(&db.url_with("application_name=warden_cached"))
        .unwrap()
        .registry_cached()
        .unwrap();
    assert_eq!(cached.tenant_by_key(&key).unwrap(), Some(acme()));
    let cut = Instant::now();
    db.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'warden_cached'",
    );
    writer.put_install(&install("1.0.0", b"v1"), None).unwrap();
    let seen = until("an install after the listener was cut", || {
        cached.install(&acme(), &hello()).is_ok_and(|i| i.is_some())
    });
    println!(
        "registry snapshot: listener's connection ended; an install made after it seen {seen:?} \
         after the write, {:?} after the cut",
        cut.elapsed()
    );
    assert!(seen < Duration::from_secs(1), "{seen:?}");
}

/// The database out of reach (a proxy cut): the two lookups fail with a storage error within
/// about a second, never with stale answers, and answer again, current, once it is back.
#[test]
fn lookups_fail_closed_while_the_database_is_away_and_recover() {
    let Some(db) = TestDb::new() else { return };
    let writer = db.connect().registry();
    let key: KeyHash = ApiKey::generate().hash();
    writer.create_tenant(&acme(), &key).unwrap();
    writer.put_install(&install("1.0.0", b"v1"), None).unwrap();
    let proxy = Proxy::start(db.url());
    let cached = warden_store_pg::PgStore::connect(&proxy.url(db.url()))
        .unwrap()
        .registry_cached()
        .unwrap();
    assert_eq!(cached.tenant_by_key(&key).unwrap(), Some(acme()));
    // Confirmed a few times over.
    std::thread::sleep(Duration::from_millis(600));

    proxy.down();
    let down = Instant::now();
    let mut last_ok = Duration::ZERO;
    let refused = loop {
        let (k, i) = (
            cached.tenant_by_key(&key),
            cached.install(&acme(), &hello()),
        );
        match (k, i) {
            (Ok(k), Ok(i)) => {
                // Until refused, the answers are those of before.
                assert_eq!(k, Some(acme()));
                assert!(i.is_some());
                last_ok = down.elapsed();
            }
            (Err(k), Err(i)) => {
                for e in [&k, &i] {
                    assert!(matches!(e, RegistryError::Storage { .. }), "{e}");
                }
                let chain = format!("{k}: {}", std::error::Error::source(&k).unwrap());
                assert!(chain.contains("not confirmed current"), "{chain}");
                break down.elapsed();
            }
            other => panic!("one lookup refused, not the other: {other:?}"),
        }
        assert!(down.elapsed() < Duration::from_secs(3), "still answering");
        std::thread::sleep(Duration::from_millis(5));
    };
    // Stays refused while away; meanwhile another runner uninstalls.
    std::thread::sleep(Duration::from_millis(500));
    assert!(cached.install(&acme(), &hello()).is_err());
    assert!(writer.remove_install(&acme(), &hello()).unwrap());

    proxy.up();
    let back = Instant::now();
    let recovered = until("answers after the database is back", || {
        cached.install(&acme(), &hello()).is_ok()
    });
    // Current at once: the uninstall made while away is there.
    assert_eq!(cached.install(&acme(), &hello()).unwrap(), None);
    assert_eq!(cached.tenant_by_key(&key).unwrap(), Some(acme()));
    println!(
        "registry snapshot: database cut; last answer {last_ok:?} after, refused {refused:?} \
         after; back {:?} after it returned",
        back.elapsed().min(recovered)
    );
    assert!(refused <= Duration::from_millis(1300), "{refused:?}");
    assert!(recovered < Duration::from_secs(3), "{recovered:?}");
}
