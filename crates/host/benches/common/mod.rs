//! What the benchmarks share: signing a staged extension folder, and percentile lines.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_trust::{SigningKey, sign};

/// Packs the folder `stage` into `out` (a `.wext`) and signs it with `key` (`out.sig`).
pub fn sign_stage(stage: &Path, out: PathBuf, key: &SigningKey) -> PathBuf {
    let packed = pack_dir(stage, &BundleLimits::default()).unwrap();
    fs::write(&out, &packed.bytes).unwrap();
    let bundle = Bundle::read_file(&out, &BundleLimits::default()).unwrap();
    let env = sign(&bundle, key, None).unwrap();
    fs::write(format!("{}.sig", out.display()), env.to_json_pretty()).unwrap();
    out
}

pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn us(d: Duration) -> String {
    format!("{:.1}µs", d.as_secs_f64() * 1e6)
}

/// Prints `label` with the p50, p90, p99 and mean of `v`; returns the p50.
pub fn line(label: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "{label:<44} p50 {:>9}  p90 {:>9}  p99 {:>9}  mean {:>9}",
        us(pct(&v, 0.5)),
        us(pct(&v, 0.9)),
        us(pct(&v, 0.99)),
        us(mean)
    );
    pct(&v, 0.5)
}
