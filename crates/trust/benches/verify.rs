#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Verify throughput on a 64 MiB bundle against `openssl dgst -sha256` on the same file, in the
//! same run. Both read the file (from the page cache after the first round) and hash all of it;
//! warden also parses the archive, checks every header, and verifies the Ed25519 signature.
//!
//! Run: `cargo bench -p warden-trust --bench verify`. Target: ratio >= 0.9, also on one core
//! (`taskset -c 0 cargo bench ...`, as on a shared machine whose other core is busy). The page
//! faults a verify takes are printed too: on a virtual machine each costs 1.3 to 2 µs, and
//! openssl's small reused buffer takes none.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_trust::{Envelope, SigningKey, TrustBundle, publisher_entry, sign, verify};

const ROUNDS: usize = 15;

/// (min, median)
fn summary(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

/// Minor page faults of this process so far (Linux), from field 10 of `/proc/self/stat`.
fn minor_faults() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("ext");
    fs::create_dir_all(ext.join("assets")).unwrap();
    fs::write(
        ext.join("extension.toml"),
        "schema = 1\n[extension]\nid = \"bench.big\"\nversion = \"1.0.0\"\npublisher = \"bench\"\nkind = \"component\"\nentry = \"extension.wasm\"\n",
    )
    .unwrap();
    fs::write(
        ext.join("extension.wasm"),
        wat::parse_str("(component)").unwrap(),
    )
    .unwrap();
    // 64 MiB of incompressible-looking data in two assets (the per-file cap is 64 MiB).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = vec![0u8; 32 << 20];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    fs::write(ext.join("assets/a.bin"), &data).unwrap();
    data.reverse();
    fs::write(ext.join("assets/b.bin"), &data).unwrap();
    let packed = pack_dir(&ext, &BundleLimits::default()).unwrap();
    let file = dir.path().join("big.wext");
    fs::write(&file, &packed.bytes).unwrap();
    let size = packed.bytes.len() as f64;

    let key = SigningKey::generate();
    let bundle = Bundle::read_file(&file, &BundleLimits::default()).unwrap();
    let envelope = sign(&bundle, &key, None).unwrap();
    let sig = dir.path().join("big.wext.sig");
    fs::write(&sig, envelope.to_json_pretty()).unwrap();
    let trust = TrustBundle::parse(&publisher_entry(
        &"bench".parse().unwrap(),
        &key.public_key(),
    ))
    .unwrap();

    let mut warden_times = Vec::new();
    let mut openssl_times = Vec::new();
    let mut faults = Vec::new();
    // Interleave the two so that machine noise hits both alike.
    for _ in 0..ROUNDS {
        let faults_before = minor_faults();
        let start = Instant::now();
        let envelope = Envelope::read_file(&sig).unwrap();
        let bundle = Bundle::read_file(&file, &BundleLimits::default()).unwrap();
        let verified = verify(bundle, &envelope, &trust).unwrap();
        warden_times.push(start.elapsed());
        if let (Some(before), Some(after)) = (faults_before, minor_faults()) {
            faults.push(after.saturating_sub(before));
        }
        assert_eq!(verified.content_hash(), packed.hash);

        let start = Instant::now();
        let out = Command::new("openssl")
            .arg("dgst")
            .arg("-sha256")
            .arg(&file)
            .output()
            .unwrap();
        openssl_times.push(start.elapsed());
        assert!(out.status.success());
        let expected = packed.hash.to_string();
        let hex = expected.trim_start_matches("sha256:");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(hex),
            "openssl disagrees on the hash"
        );
    }
    let (w_min, w) = summary(warden_times);
    let (o_min, o) = summary(openssl_times);
    let mib = size / (1024.0 * 1024.0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let tp = |d: Duration| mib / d.as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("bundle: {mib:.1} MiB, {ROUNDS} rounds, {cores} core(s) available; median (min)");
    println!(
        "warden verify (read + parse + sha256 + ed25519): {:>7.2} ms ({:>6.2})  {:>5.0} MiB/s",
        ms(w),
        ms(w_min),
        tp(w)
    );
    println!(
        "openssl dgst -sha256 (process, read + sha256):  {:>7.2} ms ({:>6.2})  {:>5.0} MiB/s",
        ms(o),
        ms(o_min),
        tp(o)
    );
    if !faults.is_empty() {
        faults.sort_unstable();
        println!(
            "page faults per warden verify (median): {}",
            faults[faults.len() / 2]
        );
    }
    println!(
        "ratio (warden / openssl throughput): {:.2}x median, {:.2}x min  (target >= 0.9x)",
        tp(w) / tp(o),
        tp(w_min) / tp(o_min)
    );
}
