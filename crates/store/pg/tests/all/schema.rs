//! Connecting: migrations (once, also when runners start together; a newer database refused),
//! the durability check, and a password never shown.

use warden_store_pg::{PgError, PgStore, SCHEMA_VERSION};

use crate::common::{TestDb, server_url, tls_query, with_params};

#[test]
fn runners_starting_together_migrate_once() {
    let Some(db) = TestDb::new() else { return };
    let stores: Vec<PgStore> = std::thread::scope(|t| {
        let handles: Vec<_> = (0..4).map(|_| t.spawn(|| db.connect())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(stores.len(), 4);
    assert_eq!(
        db.query_text("SELECT version FROM schema_versions WHERE component = 'core'"),
        Some(SCHEMA_VERSION.to_string())
    );
    assert_eq!(
        db.query_text("SELECT count(*) FROM warden_meta"),
        Some("1".into())
    );
    // And again, on a migrated database.
    drop(db.connect());
}

#[test]
fn a_database_from_a_newer_warden_is_refused() {
    let Some(db) = TestDb::new() else { return };
    drop(db.connect());
    db.sql("UPDATE schema_versions SET version = 99 WHERE component = 'core'");
    let e = PgStore::connect(db.url()).unwrap_err();
    assert!(matches!(e, PgError::TooNew { found: 99, .. }), "{e}");
    assert!(
        e.to_string().contains("newer than this warden knows"),
        "{e}"
    );
}

/// A database whose commits are acknowledged before they are durable is refused.
#[test]
fn a_server_that_may_lose_commits_is_refused() {
    let Some(db) = TestDb::new() else { return };
    let name = db.name().to_owned();
    db.sql(&format!(
        "ALTER DATABASE {name} SET synchronous_commit = off"
    ));
    let e = PgStore::connect(db.url()).unwrap_err();
    assert!(
        matches!(&e, PgError::NotDurable { setting: "synchronous_commit", value, .. } if value == "off"),
        "{e}"
    );
}

/// A password in the URL appears in no error and no `Debug`.
#[test]
fn a_password_is_never_shown() {
    let Some(url) = server_url() else { return };
    // The test server's port, nobody's database, and a password.
    let host = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    for url in [
        format!("postgres://warden:s3cret-pw@{host}/no_such_db_here"),
        "postgres://warden:s3cret-pw@127.0.0.1:1/x".to_owned(),
    ] {
        // Over TLS when the server has it: the database is missing, not the trust.
        let url = match tls_query() {
            Some(tls) => with_params(&url, &tls),
            None => url,
        };
        let e = PgStore::connect(&url).unwrap_err();
        let mut all = format!("{e} {e:?}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            all.push_str(&format!(" {c} {c:?}"));
            cause = c.source();
        }
        assert!(!all.contains("s3cret"), "{all}");
        assert!(all.contains("warden:***@"), "{all}");
    }
    // A store's Debug and location, too.
    let Some(db) = TestDb::new() else { return };
    let pg = db.connect();
    assert!(!format!("{pg:?}").contains("s3cret"));
}

/// A database at version 1 is brought to version 2: its rate buckets are kept, and the table
/// no longer writes WAL.
#[test]
fn version_1_is_migrated_to_unlogged_rate_buckets() {
    let Some(db) = TestDb::new() else { return };
    drop(db.connect());
    assert_eq!(
        db.query_text("SELECT relpersistence FROM pg_class WHERE relname = 'rate_buckets'"),
        Some("u".into())
    );
    // Back to what version 1 left.
    db.sql(
        "ALTER TABLE rate_buckets SET LOGGED;
         UPDATE schema_versions SET version = 1 WHERE component = 'core';
         INSERT INTO rate_buckets VALUES ('acme', 3.5, clock_timestamp(), 0)",
    );
    drop(db.connect());
    assert_eq!(
        db.query_text("SELECT version FROM schema_versions WHERE component = 'core'"),
        Some("2".into())
    );
    assert_eq!(
        db.query_text("SELECT relpersistence FROM pg_class WHERE relname = 'rate_buckets'"),
        Some("u".into())
    );
    assert_eq!(
        db.query_text("SELECT tokens FROM rate_buckets WHERE tenant = 'acme'"),
        Some("3.5".into())
    );
}
