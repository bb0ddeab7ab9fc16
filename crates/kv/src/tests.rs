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
            kv.set_many(&s, &pairs, &quota),
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
        kv.set_many(&s, &pairs, &q()).unwrap();
        let keys: Vec<String> = ["k0", "nope", "k2"].map(String::from).to_vec();
        assert_eq!(
            kv.get_many(&s, &keys).unwrap(),
            vec![Some(vec![0]), None, Some(vec![2])]
        );
        kv.delete_many(&s, &keys).unwrap();
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
