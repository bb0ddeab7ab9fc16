//! `PgRateLeases`: the semantics of `MemoryRateLeases`, then the fleet bound: three runners
//! leasing at once never get more than rate × time + burst together, and nearly all of it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warden_manifest::TenantName;
use warden_registry::{Rate, RateLeases};
use warden_store_pg::PgRateLeases;

use crate::common::TestDb;

fn rate(per_second: u32, burst: u32) -> Rate {
    Rate {
        per_second: NonZeroU32::new(per_second).unwrap(),
        burst: NonZeroU32::new(burst).unwrap(),
    }
}

/// As `MemoryRateLeases`' test: full at the start, whole tokens, refilled at the rate, given
/// back up to the burst, one bucket per tenant.
#[test]
fn a_bucket_starts_full_lends_whole_tokens_and_refills_at_its_rate() {
    let Some(db) = TestDb::new() else { return };
    let leases = db.connect().rate_leases();
    let t: TenantName = "acme".parse().unwrap();
    let r = rate(50, 10);
    let start = Instant::now();
    assert_eq!(leases.lease(&t, 5, r).unwrap(), 5);
    let first = start.elapsed();
    assert_eq!(leases.lease(&t, 5, r).unwrap(), 5);
    assert!(leases.lease(&t, 5, r).unwrap() <= 1);
    std::thread::sleep(Duration::from_millis(100));
    // 100 ms of 50/s is 5 tokens (a little more on a slow machine, never past the burst).
    let got = leases.lease(&t, 10, r).unwrap();
    assert!((4..=10).contains(&got), "{got}");
    // Given back, capped at the burst.
    leases.give_back(&t, 100, r).unwrap();
    assert_eq!(leases.lease(&t, 100, r).unwrap(), 10);
    // Tenants do not share.
    let other: TenantName = "other".parse().unwrap();
    assert_eq!(leases.lease(&other, 10, r).unwrap(), 10);
    // Nothing asked, nothing taken; nothing given back is a no-op.
    assert_eq!(leases.lease(&other, 0, r).unwrap(), 0);
    leases.give_back(&other, 0, r).unwrap();

    // The round trip of a lease on a warm connection.
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        leases.lease(&t, 1, rate(1_000_000, 1_000_000)).unwrap();
    }
    println!(
        "rate lease on PostgreSQL: first {first:?}, then {:?} each ({n} in a row)",
        start.elapsed() / n
    );
}

/// A bucket whose `at` is ahead of the server's clock (a clock stepped back) refills nothing
/// and never goes negative.
#[test]
fn a_clock_stepping_back_refills_nothing() {
    let Some(db) = TestDb::new() else { return };
    let leases = db.connect().rate_leases();
    let t: TenantName = "acme".parse().unwrap();
    let r = rate(50, 10);
    assert_eq!(leases.lease(&t, 10, r).unwrap(), 10);
    db.sql("UPDATE rate_buckets SET at = clock_timestamp() + interval '1 hour'");
    assert_eq!(leases.lease(&t, 10, r).unwrap(), 0);
    assert_eq!(
        db.query_text("SELECT tokens >= 0 FROM rate_buckets"),
        Some("t".into())
    );
}

/// Three runners (three stores), two threads each, asking for more than the rate for 3 s:
/// together they get at most rate × t + burst, and at least 90 % of it.
#[test]
fn three_runners_share_one_bucket() {
    let Some(db) = TestDb::new() else { return };
    let runners: Vec<PgRateLeases> = (0..3).map(|_| db.connect().rate_leases()).collect();
    let t: TenantName = "acme".parse().unwrap();
    let (r, burst) = (50u32, 10u32);
    let rt = rate(r, burst);
    let run = Duration::from_secs(3);
    let got = AtomicU64::new(0);
    let leases = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for i in 0..6 {
            let (leaser, t, got, leases) = (&runners[i % 3], &t, &got, &leases);
            s.spawn(move || {
                while start.elapsed() < run {
                    got.fetch_add(
                        u64::from(leaser.lease(t, 3, rt).unwrap()),
                        Ordering::Relaxed,
                    );
                    leases.fetch_add(1, Ordering::Relaxed);
                    // About 6 × 3 / 5 ms = 3600 tokens/s asked: far more than the rate.
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
    });
    // The last lease started before `run`; the elapsed time bounds it from above.
    let elapsed = start.elapsed().as_secs_f64();
    let got = got.load(Ordering::Relaxed) as f64;
    let most = f64::from(r) * elapsed + f64::from(burst);
    let least = 0.9 * (f64::from(r) * run.as_secs_f64() + f64::from(burst));
    println!(
        "rate leases: 3 runners × 2 threads got {got} tokens in {elapsed:.3} s at 50/s burst 10 \
         (bound {most:.1}, floor {least:.1}; {} leases)",
        leases.load(Ordering::Relaxed)
    );
    assert!(got <= most, "{got} > {most}");
    assert!(got >= least, "{got} < {least}");
}
