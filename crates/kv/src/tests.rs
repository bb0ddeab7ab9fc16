#![allow(clippy::unwrap_used)]
//! Every behaviour is checked on both backends.

use std::sync::Arc;

use tempfile::TempDir;

use crate::*;

fn backends() -> Vec<(TempDir, Arc<dyn KvBackend>)> {
    let dir = TempDir::new().unwrap();
    let sqlite = Arc::new(SqliteKv::open(&dir.path().join("warden.db")).unwrap());
    vec![
        (dir, sqlite as Arc<dyn KvBackend>),
        (TempDir::new().unwrap(), Arc::new(MemoryKv::new())),
    ]
}

fn scope(tenant: &str, ext: &str, bucket: &str) -> Scope {
    Scope::new(
        tenant.parse().unwrap(),
        ext.parse().unwrap(),
        BucketName::new(bucket).unwrap(),
    )
}

fn q() -> Quota {
    Quota::default()
}

#[test]
fn set_get_delete_exists() {
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        assert_eq!(kv.get(&s, "k").unwrap(), None);
        assert!(!kv.exists(&s, "k").unwrap());
        kv.set(&s, "k", b"v1", &q()).unwrap();
        kv.set(&s, "k", b"v2", &q()).unwrap();
        assert_eq!(kv.get(&s, "k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert!(kv.exists(&s, "k").unwrap());
        kv.delete(&s, "k").unwrap();
        kv.delete(&s, "k").unwrap();
        assert_eq!(kv.get(&s, "k").unwrap(), None);
    }
}

/// Keys and bucket names that would collide if a scope were a joined string.
#[test]
fn crafted_keys_and_buckets_stay_in_their_scope() {
    for (_d, kv) in backends() {
        let mine = scope("t1", "a.one", "default");
        kv.set(&mine, "secret", b"mine", &q()).unwrap();
        let others = [
            scope("t2", "a.one", "default"),
            scope("t1", "a.two", "default"),
            scope("t1", "a.one", "default/"),
            scope("t1", "a.one", "default\0"),
            scope("t1", "a.one", "Default"),
            scope("t1", "a.one", "../default"),
        ];
        for o in &others {
            assert_eq!(kv.get(o, "secret").unwrap(), None, "{o:?}");
            assert!(kv.list_keys(o, None, 100).unwrap().keys.is_empty());
        }
        for key in [
            "secret\0",
            "secret/",
            "/secret",
            "../t1/a.one/default/secret",
            "t1/a.one/default/secret",
            "t1:a.one:default:secret",
            "secret%00",
            "SECRET",
            "se\u{0301}cret",
            "ｓecret",
            "secret ",
        ] {
            assert_eq!(kv.get(&mine, key).unwrap(), None, "{key:?}");
            kv.set(&mine, key, key.as_bytes(), &q()).unwrap();
            assert_eq!(kv.get(&mine, key).unwrap().unwrap(), key.as_bytes());
        }
        assert_eq!(kv.get(&mine, "secret").unwrap().unwrap(), b"mine");
        for o in &others {
            assert!(kv.list_keys(o, None, 100).unwrap().keys.is_empty(), "{o:?}");
        }
    }
}

#[test]
fn bucket_names_are_bounded() {
    assert_eq!(BucketName::new(""), Err(KvError::BadBucket));
    assert_eq!(
        BucketName::new(&"b".repeat(MAX_BUCKET_BYTES + 1)),
        Err(KvError::BadBucket)
    );
    assert!(BucketName::new(&"b".repeat(MAX_BUCKET_BYTES)).is_ok());
}

#[test]
fn list_keys_pages_with_a_cursor() {
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        for i in 0..25 {
            kv.set(&s, &format!("k{i}"), b"x", &q()).unwrap();
        }
        kv.delete(&s, "k3").unwrap();
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = kv.list_keys(&s, cursor, 10).unwrap();
            assert!(page.keys.len() <= 10);
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let want: Vec<String> = (0..25)
            .filter(|i| *i != 3)
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(all, want);
    }
}

#[test]
fn quotas_refuse_growth_and_change_nothing() {
    let quota = Quota {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_keys: 3,
        max_total_bytes: 40,
    };
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "one");
        let other_bucket = scope("t", "a.b", "two");
        assert!(matches!(
            kv.set(&s, "123456789", b"", &quota),
            Err(KvError::KeyTooLong { .. })
        ));
        assert!(matches!(
            kv.set(&s, "k", &[0; 17], &quota),
            Err(KvError::ValueTooLarge { .. })
        ));
        kv.set(&s, "a", &[1; 16], &quota).unwrap();
        kv.set(&s, "b", &[1; 16], &quota).unwrap(); // 34 bytes
        assert!(matches!(
            kv.set(&other_bucket, "c", &[1; 6], &quota),
            Err(KvError::TooManyBytes { .. })
        ));
        kv.set(&other_bucket, "c", &[1; 5], &quota).unwrap(); // 40 bytes, 3 keys
        assert!(matches!(
            kv.set(&s, "d", b"", &quota),
            Err(KvError::TooManyKeys { .. })
        ));
        // Overwriting with a smaller value, and deleting, are always allowed.
        kv.set(&s, "a", b"", &quota).unwrap();
        kv.set(&s, "d", b"", &quota).unwrap_err();
        kv.delete(&s, "b").unwrap();
        kv.set(&s, "d", &[2; 16], &quota).unwrap();
        assert_eq!(kv.get(&s, "d").unwrap().unwrap(), vec![2; 16]);
        // A batch that would exceed the quota writes nothing.
        kv.delete(&s, "d").unwrap();
        let pairs = vec![("x".to_string(), vec![0; 4]), ("y".to_string(), vec![0; 4])];
        assert!(matches!(
            kv.set_many(&s, &pairs, &quota, &Cancel::new()),
            Err(KvError::TooManyKeys { .. })
        ));
        assert_eq!(kv.get(&s, "x").unwrap(), None);
        assert_eq!(kv.list_keys(&s, None, 10).unwrap().keys, vec!["a"]);
        // Another extension has its own quota.
        kv.set(&scope("t", "a.c", "one"), "a", &[1; 16], &quota)
            .unwrap();
    }
}

/// Many threads racing past the key quota: exactly the quota is stored.
#[test]
fn concurrent_floods_cannot_exceed_the_quota() {
    let quota = Quota {
        max_keys: 50,
        ..Quota::default()
    };
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        let ok = std::thread::scope(|t| {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let (kv, s) = (&kv, &s);
                    t.spawn(move || {
                        (0..40)
                            .filter(|i| kv.set(s, &format!("{w}-{i}"), b"v", &quota).is_ok())
                            .count()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(ok, 50);
        assert_eq!(kv.list_keys(&s, None, 1000).unwrap().keys.len(), 50);
    }
}

#[test]
fn increment_counts_in_decimal_and_refuses_overflow() {
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        assert_eq!(kv.increment(&s, "n", 5, &q()).unwrap(), 5);
        assert_eq!(kv.increment(&s, "n", 2, &q()).unwrap(), 7);
        assert_eq!(kv.get(&s, "n").unwrap().unwrap(), b"7");
        kv.set(&s, "n", u64::MAX.to_string().as_bytes(), &q())
            .unwrap();
        assert_eq!(kv.increment(&s, "n", 1, &q()), Err(KvError::Overflow));
        kv.set(&s, "t", b"-1", &q()).unwrap();
        assert_eq!(kv.increment(&s, "t", 1, &q()), Err(KvError::NotACounter));
        assert_eq!(
            kv.get(&s, "n").unwrap().unwrap(),
            u64::MAX.to_string().as_bytes()
        );
        let tiny = Quota { max_keys: 2, ..q() };
        assert!(matches!(
            kv.increment(&s, "new", 1, &tiny),
            Err(KvError::TooManyKeys { .. })
        ));
        assert!(!kv.exists(&s, "new").unwrap());
    }
}

#[test]
fn batches() {
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        let pairs: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("k{i}"), vec![i])).collect();
        kv.set_many(&s, &pairs, &q(), &Cancel::new()).unwrap();
        let keys: Vec<String> = ["k0", "nope", "k2"].map(String::from).to_vec();
        assert_eq!(
            kv.get_many(&s, &keys, q().max_read_bytes(), &Cancel::new())
                .unwrap(),
            vec![Some(vec![0]), None, Some(vec![2])]
        );
        kv.delete_many(&s, &keys, &Cancel::new()).unwrap();
        assert_eq!(kv.list_keys(&s, None, 10).unwrap().keys, vec!["k1"]);
    }
}

/// Usage is kept across deletes and overwrites, so freed space can be reused exactly.
#[test]
fn usage_accounting_is_exact() {
    let quota = Quota {
        max_total_bytes: 10,
        ..Quota::default()
    };
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        for _ in 0..20 {
            kv.set(&s, "k", &[0; 9], &quota).unwrap();
            kv.set(&s, "k", &[0; 3], &quota).unwrap();
            kv.delete(&s, "k").unwrap();
        }
        kv.set(&s, "k", &[0; 9], &quota).unwrap();
        kv.set(&s, "", &[0; 1], &quota).unwrap_err();
    }
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

const MIB: usize = 1 << 20;

/// F3: one 1 MiB value asked for 1000 times. Refused from the stored lengths (the answer would
/// be ~1 GiB), before any value is read; a few duplicates are answered, each a full copy.
#[test]
fn get_many_caps_the_answer_and_reads_duplicates_once() {
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        kv.set(&s, "big", &vec![b'x'; MIB], &q()).unwrap();
        let max = q().max_read_bytes();
        assert_eq!(max, MIN_READ_BYTES);
        let dup = vec!["big".to_string(); MAX_BATCH_KEYS];
        let err = kv.get_many(&s, &dup, max, &Cancel::new()).unwrap_err();
        assert_eq!(
            err,
            KvError::ReadTooLarge {
                len: (MAX_BATCH_KEYS * (MIB + 3)) as u64,
                max
            }
        );
        assert!(err.is_quota());
        assert!(err.to_string().contains("the limit is 8388608"));

        // 7 copies (7 MiB + keys) fit under 8 MiB; 8 do not.
        let seven = vec!["big".to_string(); 7];
        let got = kv.get_many(&s, &seven, max, &Cancel::new()).unwrap();
        assert_eq!(got.len(), 7);
        assert!(got.iter().all(|v| v.as_ref().map(Vec::len) == Some(MIB)));
        let eight = vec!["big".to_string(); 8];
        assert!(matches!(
            kv.get_many(&s, &eight, max, &Cancel::new()),
            Err(KvError::ReadTooLarge { .. })
        ));

        // Missing keys cost nothing, in any number.
        let missing = vec!["nope".to_string(); MAX_BATCH_KEYS];
        let got = kv.get_many(&s, &missing, max, &Cancel::new()).unwrap();
        assert!(got.iter().all(Option::is_none));
    }
}

/// The shared body: lengths and reads once per distinct key, no read at all when over the
/// cap, and a cancel flag stops it between keys.
#[test]
fn batch_read_dedups_checks_sizes_first_and_stops_when_cancelled() {
    use std::cell::Cell;
    let keys: Vec<String> = ["a", "b", "a", "a", "c", "b"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let (lens, reads) = (Cell::new(0), Cell::new(0));
    let value = |k: &str| (k != "c").then(|| vec![b'v'; 10]);
    let len = |k: &str| {
        lens.set(lens.get() + 1);
        Ok(value(k).map(|v| v.len() as u64))
    };
    let read = |k: &str| {
        reads.set(reads.get() + 1);
        Ok(value(k))
    };
    let out = batch_read(&keys, 1000, &Cancel::new(), len, read).unwrap();
    assert_eq!((lens.get(), reads.get()), (3, 3));
    assert_eq!(out.len(), 6);
    assert_eq!(out[2], Some(vec![b'v'; 10]));
    assert_eq!(out[4], None);

    // 5 present answers of 1 + 10 bytes = 55 > 54: refused with no read.
    reads.set(0);
    let err = batch_read(&keys, 54, &Cancel::new(), len, read).unwrap_err();
    assert_eq!(err, KvError::ReadTooLarge { len: 55, max: 54 });
    assert_eq!(reads.get(), 0);

    // Cancelled after the first read: stops there.
    reads.set(0);
    let cancel = Cancel::new();
    let read_then_cancel = |k: &str| {
        reads.set(reads.get() + 1);
        cancel.cancel();
        Ok(value(k))
    };
    let err = batch_read(&keys, 1000, &cancel, len, read_then_cancel).unwrap_err();
    assert_eq!(err, KvError::Cancelled);
    assert_eq!(reads.get(), 1);
}

/// A cancelled batch write (its call is gone) writes nothing and leaves the usage as it was.
#[test]
fn cancelled_batch_writes_change_nothing() {
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        kv.set(&s, "keep", b"v", &q()).unwrap();
        let cancel = Cancel::new();
        cancel.cancel();
        let pairs = vec![("n".to_string(), b"v".to_vec())];
        assert_eq!(
            kv.set_many(&s, &pairs, &q(), &cancel),
            Err(KvError::Cancelled)
        );
        assert_eq!(
            kv.delete_many(&s, &["keep".to_string()], &cancel),
            Err(KvError::Cancelled)
        );
        assert_eq!(kv.list_keys(&s, None, 10).unwrap().keys, vec!["keep"]);
        // Usage unchanged: exactly one more key fits under a 2-key quota.
        let two = Quota { max_keys: 2, ..q() };
        kv.set(&s, "second", b"", &two).unwrap();
        assert!(kv.set(&s, "third", b"", &two).is_err());
    }
}

/// Cursors are private to the scope: other tenants', extensions' and buckets' inserts between
/// ours leave no gap in them, and a key inserted while paging is listed once, at the end.
#[test]
fn list_cursors_reveal_nothing_of_other_scopes_and_page_stably() {
    for (_d, kv) in backends() {
        let mine = scope("t1", "a.b", "default");
        let others = [scope("t2", "a.b", "default"), scope("t1", "a.c", "default")];
        for i in 0..6 {
            kv.set(&mine, &format!("k{i}"), b"x", &q()).unwrap();
            for o in &others {
                for j in 0..50 {
                    kv.set(o, &format!("o{i}-{j}"), b"x", &q()).unwrap();
                }
            }
        }
        let p1 = kv.list_keys(&mine, None, 2).unwrap();
        assert_eq!(p1.keys, ["k0", "k1"]);
        assert_eq!(p1.cursor, Some(2));
        kv.set(&mine, "late", b"x", &q()).unwrap();
        kv.set(&mine, "k0", b"replaced", &q()).unwrap();
        let p2 = kv.list_keys(&mine, p1.cursor, 2).unwrap();
        assert_eq!(p2.keys, ["k2", "k3"]);
        assert_eq!(p2.cursor, Some(4));
        let p3 = kv.list_keys(&mine, p2.cursor, 10).unwrap();
        assert_eq!(p3.keys, ["k4", "k5", "late"]);
        assert_eq!(p3.cursor, None);
    }
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

/// A number freed by a delete is never given again: with the keys at and after the cursor
/// deleted, a key inserted while paging still comes after the cursor.
#[test]
fn list_cursors_never_reuse_numbers() {
    for (_d, kv) in backends() {
        let s = scope("t", "a.b", "default");
        for k in ["a", "b", "c"] {
            kv.set(&s, k, b"x", &q()).unwrap();
        }
        let p1 = kv.list_keys(&s, None, 2).unwrap();
        assert_eq!(p1.keys, ["a", "b"]);
        kv.delete_many(&s, &["b".to_string(), "c".to_string()], &Cancel::new())
            .unwrap();
        kv.set(&s, "d", b"x", &q()).unwrap();
        let p2 = kv.list_keys(&s, p1.cursor, 2).unwrap();
        assert_eq!(p2.keys, ["d"]);
        assert_eq!(p2.cursor, None);
    }
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
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
        let KvError::Storage(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains(bad), "{msg}");
        assert!(
            msg.contains("accessible by other users (mode 644)"),
            "{msg}"
        );
        assert!(msg.contains("chmod 600"), "{msg}");
        assert_eq!(mode(&target), 0o644);
    }
}
