//! `PgKv`: the backend suite of `warden-kv`, then what only a shared database has: several
//! stores (runners) on one database, and the latency of a write.

use std::time::Instant;

use warden_kv::{KvBackend, KvError, Quota};
use warden_store_pg::PgKv;

use crate::common::{Fresh, TestDb, q, scope};

pub fn fresh_kv() -> Option<Fresh<PgKv>> {
    Fresh::new(|pg| pg.kv())
}

/// Every check every `KvBackend` must pass, each on a new database.
mod suite {
    warden_kv::kv_backend_tests!(fresh_or_skip!(crate::kv::fresh_kv()));
}

/// Three runners (stores with pools of their own) racing past the key quota of one scope: the
/// usage row lock serializes them across connections.
#[test]
fn runners_racing_cannot_exceed_the_quota() {
    let Some(db) = TestDb::new() else { return };
    let quota = Quota {
        max_keys: 40,
        ..Quota::default()
    };
    let s = scope("t", "a.b", "default");
    let stores: Vec<PgKv> = (0..3).map(|_| db.connect().kv()).collect();
    let ok: usize = std::thread::scope(|t| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .flat_map(|(r, kv)| (0..2).map(move |w| (r, w, kv)))
            .map(|(r, w, kv)| {
                let s = &s;
                t.spawn(move || {
                    (0..20)
                        .filter(|i| kv.set(s, &format!("{r}-{w}-{i}"), b"v", &quota).is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(ok, 40);
    let fresh = db.connect().kv();
    assert_eq!(fresh.list_keys(&s, None, 1000).unwrap().keys.len(), 40);
    // Counters incremented from every runner at once lose nothing.
    std::thread::scope(|t| {
        for kv in &stores {
            let s = &s;
            t.spawn(move || {
                for _ in 0..25 {
                    kv.increment(s, "n", 1, &Quota::default()).unwrap();
                }
            });
        }
    });
    assert_eq!(fresh.get(&s, "n").unwrap().unwrap(), b"75");
    // Usage counts every runner's keys: 41 now, over the 40 of `quota`.
    assert!(matches!(
        fresh.set(&s, "more", b"", &quota),
        Err(KvError::TooManyKeys { .. })
    ));
}

/// What one runner wrote, another (or a restarted one) reads: nothing is kept in memory.
#[test]
fn writes_are_seen_by_every_runner_and_survive_reconnecting() {
    let Some(db) = TestDb::new() else { return };
    let s = scope("t", "a.b", "bücket\0");
    let a = db.connect().kv();
    a.set(&s, "k\0ey", b"\x00\xffvalue", &q()).unwrap();
    drop(a);
    let b = db.connect().kv();
    assert_eq!(b.get(&s, "k\0ey").unwrap().unwrap(), b"\x00\xffvalue");
    assert_eq!(b.get(&s, "k").unwrap(), None);
    let tight = Quota { max_keys: 1, ..q() };
    assert!(matches!(
        b.set(&s, "second", b"", &tight),
        Err(KvError::TooManyKeys { max: 1 })
    ));
}

/// Not a check: prints the latency of a `set` and a `get` on this server (one round trip per
/// statement; `cargo test -p warden-store-pg kv_latency -- --nocapture`).
#[test]
fn kv_latency() {
    let Some(kv) = fresh_kv() else { return };
    let s = scope("t", "a.b", "default");
    let n = 200;
    let start = Instant::now();
    for i in 0..n {
        kv.set(&s, &format!("k{}", i % 20), b"value", &q()).unwrap();
    }
    let set = start.elapsed() / n;
    let start = Instant::now();
    for i in 0..n {
        kv.get(&s, &format!("k{}", i % 20)).unwrap();
    }
    let get = start.elapsed() / n;
    let start = Instant::now();
    for _ in 0..n {
        kv.increment(&s, "counter", 1, &q()).unwrap();
    }
    let inc = start.elapsed() / n;
    println!("kv on PostgreSQL: set {set:?}, get {get:?}, increment {inc:?} (mean of {n})");
}
