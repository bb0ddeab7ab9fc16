//! `S3Blobs`: the suite of `warden-registry`, then what only S3 has: objects damaged or too
//! large in the bucket, the local copy, an unreachable endpoint, the bridge's callers.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use warden_bundle::ContentHash;
use warden_registry::{BlobError, BlobStore};

use crate::moto::{fresh, fresh_url, open, server, try_open};

/// Every check every `BlobStore` must pass, each under a new prefix with a new cache.
mod blob_suite {
    warden_registry::blob_store_tests!(optional: crate::moto::fresh, crate::moto::overwrite);
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole chain of `e`'s messages.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// An object whose bytes do not hash to its name is `Corrupt`, every time, and no local copy
/// is made of it.
#[test]
fn a_damaged_object_is_corrupt_and_never_cached() {
    let Some(s3) = fresh() else { return };
    let bytes = pattern(50_000, 1);
    let h = ContentHash::of(&bytes);
    let mut bad = bytes.clone();
    bad[49_999] ^= 0x80;
    s3.put_raw(&h, &bad);
    for _ in 0..2 {
        let e = s3.get(&h).unwrap_err();
        assert!(
            matches!(&e, BlobError::Corrupt { expected, found }
                if *expected == h && *found == ContentHash::of(&bad)),
            "{e}"
        );
        assert!(!s3.cached(&h).exists());
    }
    // A put of the right bytes replaces it (same size, other MD5: uploaded again).
    assert_eq!(s3.put(&bytes).unwrap(), h);
    assert_eq!(s3.get(&h).unwrap().unwrap(), bytes);
}

/// An object larger than the cap is refused from the size S3 announces, before its body is
/// read; a put over the cap is refused before anything is sent.
#[test]
fn an_object_over_the_cap_is_refused_without_reading_it() {
    let Some(s3) = fresh() else { return };
    let cap = 1 << 20;
    let store = open(s3.server, &s3.url, s3.cache_dir(), &[]).with_max_bytes(cap);
    let big = pattern(4 << 20, 2);
    let h = ContentHash::of(&big);
    s3.put_raw(&h, &big);
    let e = store.get(&h).unwrap_err();
    assert!(
        matches!(&e, BlobError::Storage { location, .. } if *location == s3.url.to_string()),
        "{e}"
    );
    assert!(
        chain(&e).contains("over the cap of 1048576 bytes"),
        "{}",
        chain(&e)
    );
    // Refused on the announced size: none of the body was taken.
    assert_eq!(store.downloaded_bytes(), 0);
    assert!(!s3.cached(&h).exists());
    // Exactly the cap is fine; one more byte is not stored.
    let at_cap = pattern(cap as usize, 3);
    assert_eq!(
        store.get(&store.put(&at_cap).unwrap()).unwrap().unwrap(),
        at_cap
    );
    let over = pattern(cap as usize + 1, 3);
    let e = store.put(&over).unwrap_err();
    assert!(chain(&e).contains("over the cap"), "{}", chain(&e));
    assert!(s3.get(&ContentHash::of(&over)).unwrap().is_none());
}

/// A blob read once is served from the local copy when S3 cannot be reached; one never read
/// is an error, not "absent".
#[test]
fn the_local_copy_is_served_when_s3_is_unreachable() {
    let Some(s3) = fresh() else { return };
    let bytes = pattern(200_000, 4);
    let h = ContentHash::of(&bytes);
    let other = pattern(1000, 5);
    s3.put_raw(&h, &bytes);
    s3.put_raw(&ContentHash::of(&other), &other);
    // First read: from S3, kept locally.
    assert_eq!(s3.get(&h).unwrap().unwrap(), bytes);
    assert!(s3.cached(&h).exists());
    let before = s3.downloaded_bytes();
    assert_eq!(s3.get(&h).unwrap().unwrap(), bytes);
    assert_eq!(s3.downloaded_bytes(), before, "read again from S3");

    // The same cache, S3 gone.
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let away = open(
        s3.server,
        &s3.url,
        s3.cache_dir(),
        &[("AWS_ENDPOINT", &endpoint)],
    );
    assert_eq!(away.get(&h).unwrap().unwrap(), bytes);
    let e = away.get(&ContentHash::of(&other)).unwrap_err();
    assert!(matches!(e, BlobError::Storage { .. }), "{e}");
    // A damaged local copy is not served either.
    std::fs::write(s3.cached(&h), b"damaged").unwrap();
    assert!(away.get(&h).is_err());
    // With S3 back it is read again, and repaired.
    assert_eq!(s3.get(&h).unwrap().unwrap(), bytes);
    assert_eq!(std::fs::read(s3.cached(&h)).unwrap(), bytes);
}

/// An endpoint nothing answers on: `Storage` within seconds (bounded retries), naming the
/// bucket and prefix and never the credentials.
#[test]
fn an_unreachable_endpoint_is_a_storage_error_within_seconds() {
    let Some(server) = server() else { return };
    let cache = TempDir::new().unwrap();
    let url = fresh_url(server);
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let secret = "do-not-print-this-secret-0123456789";
    let store = open(
        server,
        &url,
        cache.path(),
        &[
            ("AWS_ENDPOINT", &endpoint),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    );
    for op in ["put", "get"] {
        let started = Instant::now();
        let e = match op {
            "put" => store.put(b"bytes").unwrap_err(),
            _ => store.get(&ContentHash::of(b"never")).unwrap_err(),
        };
        let took = started.elapsed();
        assert!(took < Duration::from_secs(15), "{op} took {took:?}");
        let BlobError::Storage { location, .. } = &e else {
            panic!("{op}: {e}");
        };
        assert_eq!(*location, url.to_string());
        let text = format!("{}\n{e:?}", chain(&e));
        assert!(!text.contains(secret), "{text}");
        eprintln!("{op} failed after {took:?}: {}", chain(&e));
    }
}

/// Plain http is refused unless allowed, as object_store refuses it.
#[test]
fn plain_http_needs_allow_http() {
    let Some(server) = server() else { return };
    let cache = TempDir::new().unwrap();
    let url = fresh_url(server);
    let e = try_open(server, &url, cache.path(), &[("AWS_ALLOW_HTTP", "false")]).unwrap_err();
    assert!(chain(&e).contains("AWS_ALLOW_HTTP=true"), "{}", chain(&e));
    // An unknown setting is refused, not ignored.
    let e = try_open(server, &url, cache.path(), &[("AWS_NO_SUCH_THING", "1")]).unwrap_err();
    assert!(matches!(e, BlobError::Storage { .. }), "{e}");
}

/// The synchronous methods work from a `spawn_blocking` task of another runtime, and the
/// store can be dropped inside that runtime's async context.
#[test]
fn the_store_works_from_another_runtime() {
    let Some(s3) = fresh() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = std::sync::Arc::new(open(
        s3.server,
        &s3.url,
        TempDir::new().unwrap().path(),
        &[],
    ));
    let bytes = pattern(100_000, 6);
    let got = runtime.block_on({
        let (store, bytes) = (store.clone(), bytes.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let h = store.put(&bytes).unwrap();
                store.get(&h).unwrap()
            })
            .await
            .unwrap()
        }
    });
    assert_eq!(got.unwrap(), bytes);
    // The last handle dropped on an async worker: no panic.
    runtime.block_on(async move { drop(store) });
}

/// A put of bytes the bucket already holds (another runner put them) uploads nothing and makes
/// the local copy; other bytes under the name, even of the same size, are replaced.
#[test]
fn a_put_of_stored_bytes_uploads_nothing() {
    let Some(s3) = fresh() else { return };
    let bytes = pattern(30_000, 7);
    let h = ContentHash::of(&bytes);
    s3.put_raw(&h, &bytes);
    assert_eq!(s3.put(&bytes).unwrap(), h);
    assert_eq!(s3.uploaded_bytes(), 0);
    assert_eq!(std::fs::read(s3.cached(&h)).unwrap(), bytes);
    assert_eq!(s3.downloaded_bytes(), 0);
    // Same size, other bytes: uploaded again.
    s3.put_raw(&h, &pattern(30_000, 8));
    assert_eq!(s3.put(&bytes).unwrap(), h);
    assert_eq!(s3.uploaded_bytes(), 30_000);
    std::fs::remove_file(s3.cached(&h)).unwrap();
    assert_eq!(s3.get(&h).unwrap().unwrap(), bytes);
}

/// 1 MiB blobs go through S3 once: a second put of the same bytes uploads nothing, a get of
/// a cached blob downloads nothing, a get without the local copy downloads it whole and gives
/// back the same bytes. What each costs is printed (`--nocapture`).
#[test]
fn one_mib_blobs_cross_the_network_once_each_way() {
    let Some(s3) = fresh() else { return };
    let rounds = 5;
    let (mut put, mut put_again, mut get_remote, mut get_local) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let bytes = pattern(1 << 20, i as u8);
        let h = ContentHash::of(&bytes);
        let t = Instant::now();
        assert_eq!(s3.put(&bytes).unwrap(), h);
        put.push(t.elapsed());
        let (up, down) = (s3.uploaded_bytes(), s3.downloaded_bytes());
        assert_eq!(up, (i as u64 + 1) << 20);
        let t = Instant::now();
        s3.put(&bytes).unwrap();
        put_again.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(s3.get(&h).unwrap().unwrap(), bytes);
        get_local.push(t.elapsed());
        assert_eq!((s3.uploaded_bytes(), s3.downloaded_bytes()), (up, down));
        std::fs::remove_file(s3.cached(&h)).unwrap();
        let t = Instant::now();
        assert_eq!(s3.get(&h).unwrap().unwrap(), bytes);
        get_remote.push(t.elapsed());
        assert_eq!(s3.downloaded_bytes(), down + (1 << 20));
    }
    for (what, mut times) in [
        ("put (new object)", put),
        ("put (already stored)", put_again),
        ("get (from S3)", get_remote),
        ("get (local copy)", get_local),
    ] {
        times.sort();
        eprintln!(
            "1 MiB {what}: median {:?}, min {:?}, max {:?} over {rounds}",
            times[rounds / 2],
            times[0],
            times[rounds - 1]
        );
    }
}
