//! `SqliteKv`: the backend suite of `warden-kv`, then what only a database file has
//! (durability, several connections, migration, file modes).

use tempfile::TempDir;
use warden_kv::{KvBackend, KvError, Quota};
use warden_store_sqlite::{SqliteKv, open_kv, prepare_db_file};

use crate::common::{Fresh, mode, q, scope};

/// A new database in its own temporary folder, which lives as long as the backend.
fn fresh() -> Fresh<SqliteKv> {
    Fresh::new(|dir| open_kv(dir).unwrap())
}

/// Every check every `KvBackend` must pass, each on a new database.
mod suite {
    warden_kv::kv_backend_tests!(super::fresh);
}

#[test]
fn sqlite_writes_survive_reopening() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("warden.db");
    let s = scope("t", "a.b", "default");
    {
        let kv = SqliteKv::open(&path).unwrap();
        kv.set(&s, "k", b"durable", &q()).unwrap();
        kv.increment(&s, "n", 3, &q()).unwrap();
    }
    let kv = SqliteKv::open(&path).unwrap();
    assert_eq!(kv.get(&s, "k").unwrap().unwrap(), b"durable");
    // The usage row came back too: the quota still counts the earlier entries.
    let tight = Quota { max_keys: 2, ..q() };
    assert!(matches!(
        kv.set(&s, "third", b"", &tight),
        Err(KvError::TooManyKeys { .. })
    ));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A `get` answered where it is asked (`get_now`) reads the last commit on its own
/// connection, even while another writer holds the database's write lock mid-transaction, and
/// only a value within its size: a larger one is left to `get` on the blocking pool. Keys are
/// read there too; writes never.
#[test]
fn sqlite_answers_small_reads_at_once_and_leaves_large_ones() {
    use warden_kv::KvOp;
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("warden.db");
    let s = scope("t", "a.b", "default");
    let kv = SqliteKv::open(&path).unwrap();
    assert!(!kv.may_block(KvOp::ReadKeys) && kv.may_block(KvOp::Other));
    kv.set(&s, "small", b"committed", &q()).unwrap();
    kv.set(&s, "large", &[7u8; 2048], &q()).unwrap();
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("UPDATE kv_entries SET value = x'00'", [])
        .unwrap();
    let now = |key: &str| kv.get_now(&s, key, 1024).map(Result::unwrap);
    assert_eq!(now("small"), Some(Some(b"committed".to_vec())));
    assert_eq!(now("missing"), Some(None));
    assert_eq!(
        now("large"),
        None,
        "over the size: left to the blocking pool"
    );
    assert_eq!(kv.get(&s, "large").unwrap().unwrap().len(), 2048);
    drop(tx);
}

/// Two connections (as two hosts on one data dir would have) racing past the key quota: the
/// write lock taken at the start of each transaction serializes them.
#[test]
fn sqlite_connections_racing_cannot_exceed_the_quota() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("warden.db");
    let quota = Quota {
        max_keys: 30,
        ..Quota::default()
    };
    let s = scope("t", "a.b", "default");
    let ok: usize = std::thread::scope(|t| {
        let handles: Vec<_> = (0..2)
            .map(|w| {
                let (path, s) = (&path, &s);
                t.spawn(move || {
                    let kv = SqliteKv::open(path).unwrap();
                    (0..25)
                        .filter(|i| kv.set(s, &format!("{w}-{i}"), b"v", &quota).is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(ok, 30);
    let kv = SqliteKv::open(&path).unwrap();
    assert_eq!(kv.list_keys(&s, None, 1000).unwrap().keys.len(), 30);
}

/// A database written before cursors were per scope (no `seq` column) is migrated on open:
/// insertion order is kept and cursors count only the bucket's own keys.
#[test]
fn sqlite_migrates_old_databases_to_scoped_cursors() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("warden.db");
    prepare_db_file(&path).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE kv_entries (tenant TEXT NOT NULL, extension TEXT NOT NULL,
                 bucket BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
                 UNIQUE (tenant, extension, bucket, key));
             INSERT INTO kv_entries VALUES ('t1', 'a.b', X'64656661756c74', X'7a', X'01');
             INSERT INTO kv_entries VALUES ('t2', 'a.b', X'64656661756c74', X'6f', X'01');
             INSERT INTO kv_entries VALUES ('t1', 'a.b', X'64656661756c74', X'61', X'01');
             INSERT INTO kv_entries VALUES ('t2', 'a.b', X'64656661756c74', X'70', X'01');
             INSERT INTO kv_entries VALUES ('t1', 'a.b', X'64656661756c74', X'6d', X'01');
             CREATE TABLE kv_usage (tenant TEXT NOT NULL, extension TEXT NOT NULL,
                 keys INTEGER NOT NULL, bytes INTEGER NOT NULL,
                 PRIMARY KEY (tenant, extension)) WITHOUT ROWID;
             INSERT INTO kv_usage VALUES ('t1', 'a.b', 3, 6), ('t2', 'a.b', 2, 4);",
        )
        .unwrap();
    }
    let kv = SqliteKv::open(&path).unwrap();
    let s = scope("t1", "a.b", "default");
    let p1 = kv.list_keys(&s, None, 2).unwrap();
    assert_eq!(p1.keys, ["z", "a"]);
    assert_eq!(p1.cursor, Some(2));
    kv.set(&s, "new", b"x", &q()).unwrap();
    let p2 = kv.list_keys(&s, p1.cursor, 10).unwrap();
    assert_eq!(p2.keys, ["m", "new"]);
    assert_eq!(p2.cursor, None);
    // Reopening does not migrate again, and the usage still counts the old keys.
    drop(kv);
    let kv = SqliteKv::open(&path).unwrap();
    assert_eq!(
        kv.list_keys(&s, None, 10).unwrap().keys,
        ["z", "a", "m", "new"]
    );
    let four = Quota { max_keys: 4, ..q() };
    assert!(matches!(
        kv.set(&s, "fifth", b"", &four),
        Err(KvError::TooManyKeys { max: 4 })
    ));
}

/// F5: in a data dir that is 0755, the database and its WAL files are 0600.
#[test]
fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("warden.db");
    let kv = SqliteKv::open(&path).unwrap();
    kv.set(&scope("t", "a.b", "default"), "k", b"private", &q())
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("warden.db{suffix}"));
        assert!(p.exists(), "{}", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// An existing database (or WAL file) readable by others is refused with a clear error, and
/// its mode is left for the operator to fix.
#[test]
fn sqlite_refuses_a_database_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    for bad in ["warden.db", "warden.db-wal"] {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("warden.db");
        drop(SqliteKv::open(&path).unwrap());
        let target = dir.path().join(bad);
        std::fs::write(&target, b"").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SqliteKv::open(&path).err().unwrap();
        let KvError::Storage(failure) = err else {
            panic!("{err:?}")
        };
        // The cause is kept as an error, not flattened into text.
        let msg = failure.to_string();
        assert!(msg.contains(bad), "{msg}");
        assert!(
            msg.contains("accessible by other users (mode 644)"),
            "{msg}"
        );
        assert!(msg.contains("chmod 600"), "{msg}");
        assert_eq!(mode(&target), 0o644);
    }
}

/// A database written before bucket names counted: its usage is counted again, once, from the
/// entries (in bytes), when a newer warden opens it.
#[test]
fn usage_from_before_bucket_names_counted_is_recounted() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("warden.db");
    {
        let kv = SqliteKv::open(&path).unwrap();
        let s = warden_kv::Scope::new(
            "t".parse().unwrap(),
            "a.b".parse().unwrap(),
            warden_kv::BucketName::new("bücket").unwrap(),
        );
        kv.set(&s, "ké", b"value", &warden_kv::Quota::default())
            .unwrap();
    }
    // As an older warden left it: usage without the bucket, and no record of the recount.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE kv_usage SET bytes = 3 + 5", [])
        .unwrap();
    raw.execute(
        "DELETE FROM schema_versions WHERE component = 'kv-usage'",
        [],
    )
    .unwrap();
    drop(raw);
    drop(SqliteKv::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    let bytes: i64 = raw
        .query_row("SELECT bytes FROM kv_usage", [], |r| r.get(0))
        .unwrap();
    assert_eq!(bytes, ("bücket".len() + "ké".len() + 5) as i64);
}
