//! The behaviour every [`KvBackend`] must have, as checks that each take a fresh (empty)
//! backend and panic on the first difference: scoping, paging and cursors, quotas (also under
//! concurrent writers), counters, batches and their size cap, cancellation.
//!
//! A backend crate runs them all as `#[test]`s with
//! [`kv_backend_tests!`](crate::kv_backend_tests) (enable the `testing` feature in its
//! dev-dependencies); this crate runs them on [`MemoryKv`]. A new check is a
//! `pub fn name(kv: &dyn KvBackend)` here plus its name in the macro's list.
// Test code: a failed `unwrap` is the test failing.
#![allow(clippy::unwrap_used)]

use crate::*;

/// Runs every check of [`testing`](crate::testing) as its own `#[test]`, each on a new backend
/// from `$fresh`: a function (or closure) without arguments returning anything that
/// dereferences to a backend (`Box<MemoryKv>`, `Arc<dyn KvBackend>`, or a struct that also
/// keeps the backend's temporary directory alive).
///
/// ```text
/// mod sqlite_suite {
///     warden_kv::kv_backend_tests!(super::fresh_sqlite);
/// }
/// ```
#[macro_export]
macro_rules! kv_backend_tests {
    ($fresh:expr) => {
        $crate::kv_backend_tests!(@each $fresh;
            set_get_delete_exists,
            crafted_keys_and_buckets_stay_in_their_scope,
            bucket_names_count_against_the_quota,
            list_keys_pages_with_a_cursor,
            quotas_refuse_growth_and_change_nothing,
            concurrent_floods_cannot_exceed_the_quota,
            increment_counts_in_decimal_and_refuses_overflow,
            batches,
            usage_accounting_is_exact,
            get_many_caps_the_answer_and_reads_duplicates_once,
            cancelled_batch_writes_change_nothing,
            list_cursors_reveal_nothing_of_other_scopes_and_page_stably,
            list_cursors_never_reuse_numbers,
        );
    };
    (@each $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let backend = ($fresh)();
                $crate::testing::$name(&*backend);
            }
        )*
    };
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

const MIB: usize = 1 << 20;

pub fn set_get_delete_exists(kv: &dyn KvBackend) {
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

/// Keys and bucket names that would collide if a scope were a joined string.
pub fn crafted_keys_and_buckets_stay_in_their_scope(kv: &dyn KvBackend) {
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

pub fn list_keys_pages_with_a_cursor(kv: &dyn KvBackend) {
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

pub fn quotas_refuse_growth_and_change_nothing(kv: &dyn KvBackend) {
    let quota = Quota {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_keys: 3,
        // Every entry counts its bucket name too ("one", "two": 3 bytes each).
        max_total_bytes: 49,
    };
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
    kv.set(&s, "b", &[1; 16], &quota).unwrap(); // 40 bytes
    assert!(matches!(
        kv.set(&other_bucket, "c", &[1; 6], &quota),
        Err(KvError::TooManyBytes { .. })
    ));
    kv.set(&other_bucket, "c", &[1; 5], &quota).unwrap(); // 49 bytes, 3 keys
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

/// Many threads racing past the key quota: exactly the quota is stored.
pub fn concurrent_floods_cannot_exceed_the_quota(kv: &dyn KvBackend) {
    let quota = Quota {
        max_keys: 50,
        ..Quota::default()
    };
    let s = scope("t", "a.b", "default");
    let ok = std::thread::scope(|t| {
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let s = &s;
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

pub fn increment_counts_in_decimal_and_refuses_overflow(kv: &dyn KvBackend) {
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

pub fn batches(kv: &dyn KvBackend) {
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

/// Usage is kept across deletes and overwrites, so freed space can be reused exactly.
pub fn usage_accounting_is_exact(kv: &dyn KvBackend) {
    // "b" + "k" + 9 bytes: the bucket name counts with every entry.
    let quota = Quota {
        max_total_bytes: 11,
        ..Quota::default()
    };
    let s = scope("t", "a.b", "b");
    for _ in 0..20 {
        kv.set(&s, "k", &[0; 9], &quota).unwrap();
        kv.set(&s, "k", &[0; 3], &quota).unwrap();
        kv.delete(&s, "k").unwrap();
    }
    kv.set(&s, "k", &[0; 9], &quota).unwrap();
    kv.set(&s, "", &[0; 1], &quota).unwrap_err();
}

/// Red team, round 2: 256-byte bucket names, stored on every row, were not counted (a
/// million entries' worth of them for free). They count now.
pub fn bucket_names_count_against_the_quota(kv: &dyn KvBackend) {
    let quota = Quota {
        max_total_bytes: 300,
        ..Quota::default()
    };
    let long = "b".repeat(MAX_BUCKET_BYTES);
    let s = scope("t", "a.b", &long);
    kv.set(&s, "k", b"", &quota).unwrap(); // 257 bytes
    assert!(matches!(
        kv.set(&s, "l", b"", &quota),
        Err(KvError::TooManyBytes { .. })
    ));
    kv.delete(&s, "k").unwrap();
    kv.set(&s, "l", b"", &quota).unwrap();
}

/// F3: one 1 MiB value asked for 1000 times. Refused from the stored lengths (the answer would
/// be ~1 GiB), before any value is read; a few duplicates are answered, each a full copy.
pub fn get_many_caps_the_answer_and_reads_duplicates_once(kv: &dyn KvBackend) {
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

/// A cancelled batch write (its call is gone) writes nothing and leaves the usage as it was.
pub fn cancelled_batch_writes_change_nothing(kv: &dyn KvBackend) {
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

/// Cursors are private to the scope: other tenants', extensions' and buckets' inserts between
/// ours leave no gap in them, and a key inserted while paging is listed once, at the end.
pub fn list_cursors_reveal_nothing_of_other_scopes_and_page_stably(kv: &dyn KvBackend) {
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

/// A number freed by a delete is never given again: with the keys at and after the cursor
/// deleted, a key inserted while paging still comes after the cursor.
pub fn list_cursors_never_reuse_numbers(kv: &dyn KvBackend) {
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
