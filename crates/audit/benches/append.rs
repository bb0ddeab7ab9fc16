#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Durable append throughput: `AuditLog::append` with fsync on, from 1, 8 and 64 threads on
//! one log (a fresh log in a temporary folder for each run), as records/s and as a ratio
//! against one thread in the same run. Each append returns only once its record is on disk,
//! so one thread is bounded by the disk's sync latency; with group commit many threads share
//! one sync, and the throughput grows with concurrency.
//!
//! Run: `cargo bench -p warden-audit --bench append`. `WARDEN_BENCH_RECORDS=N` changes the
//! number of records per run (default 2000), `TMPDIR` the file system it runs on.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use warden_audit::{AuditLog, Event, Outcome, Record};

const DEFAULT_RECORDS: usize = 2000;
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Runs per concurrency; the median is reported. Runs of all concurrencies alternate.
const RUNS: usize = 5;

/// A record of the size the host writes for a call.
fn record(t: usize, i: usize) -> Record {
    Record::new(Event::Call, format!("req-{t}-{i}"))
        .at(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        .with_tenant("acme")
        .with_extension("hello")
        .with_version("1.0.0")
        .with_duration_ms(3)
        .with_outcome(Outcome::Ok)
        .with_message("GET /hello 200")
}

/// Appends `records` records from `threads` threads to a new log; returns the time taken and
/// the number of syncs.
fn run(threads: usize, records: usize) -> (Duration, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(&tmp.path().join("audit")).unwrap());
    let per_thread = records / threads;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for i in 0..per_thread {
                    log.append(record(t, i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(
        warden_audit::verify(log.dir()).unwrap().records,
        (per_thread * threads) as u64
    );
    (elapsed, log.sync_rounds())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let records = std::env::var("WARDEN_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RECORDS);
    // Warm up the file system and the thread machinery.
    run(8, 200);
    let mut times = vec![Vec::new(); CONCURRENCY.len()];
    let mut syncs = vec![0; CONCURRENCY.len()];
    for _ in 0..RUNS {
        for (k, &threads) in CONCURRENCY.iter().enumerate() {
            let (time, rounds) = run(threads, records);
            times[k].push(time);
            syncs[k] += rounds;
        }
    }
    println!(
        "durable appends (fsync on), {records} records per run, median of {RUNS} runs, {}",
        std::env::temp_dir().display()
    );
    let mut base = None;
    for (k, &threads) in CONCURRENCY.iter().enumerate() {
        let t = median(std::mem::take(&mut times[k]));
        let n = (records / threads * threads) as f64;
        let rate = n / t.as_secs_f64();
        let base = *base.get_or_insert(rate);
        println!(
            "{threads:>3} threads: {rate:>9.0} records/s  {:>7.1} µs/record  {:>6.1} records/sync  \
             ratio {:.2}x",
            t.as_secs_f64() * 1e6 / n,
            n * RUNS as f64 / syncs[k] as f64,
            rate / base
        );
    }
}
