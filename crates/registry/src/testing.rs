//! The behaviour every [`Registry`] and every [`BlobStore`] must have, as checks that each take
//! a fresh (empty) store and panic on the first difference: tenants and their keys, the
//! publication rules (a version names one content, an id stays with its first publisher),
//! installs written only over the state they were decided on (also under concurrent writers),
//! and content-addressed blobs that are never served damaged.
//!
//! A storage crate runs them all as `#[test]`s with [`registry_tests!`](crate::registry_tests)
//! and [`blob_store_tests!`](crate::blob_store_tests) (enable the `testing` feature in its
//! dev-dependencies). A new check is a `pub fn name(r: &dyn Registry)` (or
//! `pub fn name(blobs: &dyn BlobStore, overwrite: &dyn Fn(&ContentHash, &[u8]))`) here plus
//! its name in the macro's list.
//!
//! What only one storage has (its files, their modes, several connections, migrations, rows
//! edited behind its back) stays in that crate's own tests.
// Test code: a failed `unwrap` is the test failing.
#![allow(clippy::unwrap_used)]

use std::sync::Barrier;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_bundle::ContentHash;
use warden_manifest::{ExtensionId, TenantName};

use crate::{
    ApiKey, Approval, BlobError, BlobStore, InstallRecord, Pin, Published, Registry, RegistryError,
    RegistryImage,
};

/// Runs every [`Registry`] check of [`testing`](crate::testing) as its own `#[test]`, each on a
/// new registry from `$fresh`: a function (or closure) without arguments returning anything
/// that dereferences to a registry (`Box<SqliteRegistry>`, `Arc<dyn Registry>`, or a struct
/// that also keeps the registry's temporary directory or database alive).
///
/// ```text
/// mod registry_suite {
///     warden_registry::registry_tests!(super::fresh_registry);
/// }
/// ```
#[macro_export]
macro_rules! registry_tests {
    ($fresh:expr) => {
        $crate::registry_tests!(@each $fresh;
            tenants_are_created_once_and_found_by_their_key,
            publications_round_trip_and_republishing_is_idempotent,
            a_version_names_one_content_for_ever,
            an_id_is_pinned_to_its_first_publisher,
            installs_round_trip_whole,
            put_install_writes_only_over_the_expected_state,
            put_install_needs_the_tenant,
            installs_are_listed_by_tenant_then_extension,
            remove_install_removes_that_install_only,
            concurrent_tenant_creations_have_one_winner,
            concurrent_installs_on_one_state_have_one_winner,
            concurrent_publications_of_one_version_have_one_winner,
            concurrent_first_publications_pin_one_publisher,
            the_image_holds_everything_written_in_order,
        );
    };
    (@each $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let registry = ($fresh)();
                $crate::testing::$name(&*registry);
            }
        )*
    };
}

/// Runs every [`BlobStore`] check of [`testing`](crate::testing) as its own `#[test]`, each on
/// a new store from `$fresh` (as for [`registry_tests!`](crate::registry_tests): anything that
/// dereferences to a blob store). `$overwrite(&fresh, &hash, bytes)` replaces what the store
/// holds under `hash` with `bytes` behind its back, as damage or an intruder would (write the
/// file, the object, the row directly); the checks use it to show that damaged bytes are never
/// served.
///
/// ```text
/// mod blob_suite {
///     warden_registry::blob_store_tests!(super::fresh_blobs, super::overwrite_blob);
/// }
/// ```
///
/// For a store behind a service the machine may lack (an S3 server), `optional:` takes a
/// `$fresh` that returns an `Option`: on `None` each test returns at once (`$fresh` says why,
/// or fails the test where the service is required).
///
/// ```text
/// mod blob_suite {
///     warden_registry::blob_store_tests!(optional: super::fresh_s3, super::overwrite_object);
/// }
/// ```
#[macro_export]
macro_rules! blob_store_tests {
    (optional: $fresh:expr, $overwrite:expr) => {
        $crate::blob_store_tests!(@each $fresh, $overwrite;
            blobs_are_named_by_their_hash,
            blobs_keep_every_byte,
            damaged_blobs_are_never_served_and_a_put_repairs_them,
            concurrent_puts_of_one_blob_agree,
        );
    };
    ($fresh:expr, $overwrite:expr) => {
        $crate::blob_store_tests!(optional: (|| ::core::option::Option::Some(($fresh)())), $overwrite);
    };
    (@each $fresh:expr, $overwrite:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let ::core::option::Option::Some(blobs) = ($fresh)() else {
                    return;
                };
                $crate::testing::$name(&*blobs, &|hash, bytes| ($overwrite)(&blobs, hash, bytes));
            }
        )*
    };
}

/// Threads in each concurrency check.
const RACERS: usize = 8;

fn t(name: &str) -> TenantName {
    name.parse().unwrap()
}

fn ext(id: &str) -> ExtensionId {
    id.parse().unwrap()
}

/// A whole second: every backend keeps times at least to the millisecond, so records written
/// with it compare equal when read back.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn install(tenant: &str, extension: &str, version: &str, content: &[u8]) -> InstallRecord {
    InstallRecord {
        tenant: t(tenant),
        extension: ext(extension),
        version: version.parse().unwrap(),
        content_hash: ContentHash::of(content),
        grant: "kv,secret:TOKEN,network:api.example.com".parse().unwrap(),
        approved: Approval::from_text("kv\nsecret TOKEN\nnetwork api.example.com ports 443\n"),
        installed: at(1_700_000_000),
    }
}

fn publication(content: &[u8], id: &str, version: &str, publisher: &str) -> Published {
    Published {
        content_hash: ContentHash::of(content),
        id: ext(id),
        version: version.parse().unwrap(),
        publisher: publisher.parse().unwrap(),
        signature: b"{\"payloadType\":\"x\",\"signatures\":[]}".to_vec(),
        published: at(1_700_000_000),
    }
}

fn tenant(r: &dyn Registry, name: &str) {
    r.create_tenant(&t(name), &ApiKey::generate().hash())
        .unwrap();
}

/// Runs `f(i)` on [`RACERS`] threads released at once; the answers in thread order.
fn race<T: Send>(f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let start = Barrier::new(RACERS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let (f, start) = (&f, &start);
                s.spawn(move || {
                    start.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub fn tenants_are_created_once_and_found_by_their_key(r: &dyn Registry) {
    assert!(r.tenants().unwrap().is_empty());
    assert!(r.tenant(&t("acme")).unwrap().is_none());
    let (acme_key, beta_key) = (ApiKey::generate(), ApiKey::generate());
    let before = SystemTime::now();
    r.create_tenant(&t("acme"), &acme_key.hash()).unwrap();
    r.create_tenant(&t("beta"), &beta_key.hash()).unwrap();
    let after = SystemTime::now();
    let got = r.tenant(&t("acme")).unwrap().unwrap();
    assert_eq!(got.name, t("acme"));
    // Created now (a backend may keep whole milliseconds or seconds only).
    let slack = Duration::from_secs(1);
    assert!(
        got.created + slack >= before && got.created <= after + slack,
        "{:?} not within {before:?}..{after:?}",
        got.created
    );
    let mut names: Vec<_> = r.tenants().unwrap().into_iter().map(|t| t.name).collect();
    names.sort();
    assert_eq!(names, [t("acme"), t("beta")]);

    // A second create of a name fails and changes nothing: the first key still opens it, the
    // new one opens nothing.
    let thief = ApiKey::generate();
    let e = r.create_tenant(&t("acme"), &thief.hash()).unwrap_err();
    assert!(
        matches!(&e, RegistryError::TenantExists(n) if *n == t("acme")),
        "{e}"
    );
    assert_eq!(r.tenants().unwrap().len(), 2);
    assert_eq!(r.tenant_by_key(&acme_key.hash()).unwrap(), Some(t("acme")));
    assert_eq!(r.tenant_by_key(&beta_key.hash()).unwrap(), Some(t("beta")));
    assert_eq!(r.tenant_by_key(&thief.hash()).unwrap(), None);
    assert_eq!(r.tenant_by_key(&ApiKey::generate().hash()).unwrap(), None);
}

pub fn publications_round_trip_and_republishing_is_idempotent(r: &dyn Registry) {
    let mut p = publication(b"bundle", "acme.hello", "1.2.3-rc.1+build.5", "acme");
    // The signature is kept byte for byte, whatever it holds.
    p.signature.extend([0, 0xff, 0x80, b'\n']);
    assert!(r.published(&p.content_hash).unwrap().is_none());
    r.publish(&p).unwrap();
    r.publish(&p).unwrap();
    assert_eq!(r.published(&p.content_hash).unwrap(), Some(p.clone()));
    assert!(r.published(&ContentHash::of(b"other")).unwrap().is_none());
    // Other ids, and other versions of the id, are other publications.
    let v2 = publication(b"bundle 2", "acme.hello", "1.2.4", "acme");
    let other = publication(b"other", "acme.other", "1.2.3-rc.1+build.5", "acme");
    r.publish(&v2).unwrap();
    r.publish(&other).unwrap();
    assert_eq!(r.published(&v2.content_hash).unwrap(), Some(v2));
    assert_eq!(r.published(&other.content_hash).unwrap(), Some(other));
    assert_eq!(r.published(&p.content_hash).unwrap(), Some(p));
}

/// Red team: two different bundles both published as acme.hello 1.2.3.
pub fn a_version_names_one_content_for_ever(r: &dyn Registry) {
    let first = publication(b"first", "acme.hello", "1.2.3", "acme");
    r.publish(&first).unwrap();
    let second = publication(b"second", "acme.hello", "1.2.3", "acme");
    let e = r.publish(&second).unwrap_err();
    assert!(
        matches!(&e, RegistryError::VersionTaken { id, version, existing }
            if *id == first.id && version == "1.2.3" && *existing == first.content_hash),
        "{e}"
    );
    assert!(r.published(&second.content_hash).unwrap().is_none());
    assert_eq!(
        r.published(&first.content_hash).unwrap(),
        Some(first.clone())
    );
    // The first can still be published again; the second under a version of its own.
    r.publish(&first).unwrap();
    let renamed = Published {
        version: "1.2.4".parse().unwrap(),
        ..second
    };
    r.publish(&renamed).unwrap();
    assert_eq!(r.published(&renamed.content_hash).unwrap(), Some(renamed));
}

/// Red team: any trusted publisher could publish over another's id.
pub fn an_id_is_pinned_to_its_first_publisher(r: &dyn Registry) {
    r.publish(&publication(b"a1", "acme.hello", "1.0.0", "acme"))
        .unwrap();
    let theft = publication(b"m1", "acme.hello", "2.0.0", "mallory");
    let e = r.publish(&theft).unwrap_err();
    assert!(
        matches!(&e, RegistryError::PublisherPinned { id, pinned, publisher }
            if *id == theft.id && pinned == "acme" && *publisher == theft.publisher),
        "{e}"
    );
    assert!(r.published(&theft.content_hash).unwrap().is_none());
    // The pin holds for the first publisher's later versions, and both ways.
    r.publish(&publication(b"a2", "acme.hello", "2.0.0", "acme"))
        .unwrap();
    r.publish(&publication(b"m2", "mallory.hello", "1.0.0", "mallory"))
        .unwrap();
    let e = r
        .publish(&publication(b"a3", "mallory.hello", "2.0.0", "acme"))
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::PublisherPinned { pinned, .. } if pinned == "mallory"),
        "{e}"
    );
    // The refused content was not kept: it can still be published under mallory's own id.
    r.publish(&publication(b"m1", "mallory.other", "1.0.0", "mallory"))
        .unwrap();
}

pub fn installs_round_trip_whole(r: &dyn Registry) {
    tenant(r, "acme");
    let i = install("acme", "acme.hello", "1.0.0-beta.2", b"v1");
    assert!(r.install(&t("acme"), &i.extension).unwrap().is_none());
    r.put_install(&i, None).unwrap();
    assert_eq!(
        r.install(&t("acme"), &i.extension).unwrap(),
        Some(i.clone())
    );
    assert_eq!(r.installs(None).unwrap(), std::slice::from_ref(&i));
    assert_eq!(
        r.installs(Some(&t("acme"))).unwrap(),
        std::slice::from_ref(&i)
    );
    // An install with an empty grant and approval is kept as such.
    let bare = InstallRecord {
        extension: ext("acme.bare"),
        grant: "none".parse().unwrap(),
        approved: Approval::default(),
        ..i.clone()
    };
    r.put_install(&bare, None).unwrap();
    assert_eq!(r.install(&t("acme"), &bare.extension).unwrap(), Some(bare));
    // An upgrade replaces the whole record.
    let v2 = InstallRecord {
        grant: "all".parse().unwrap(),
        approved: Approval::from_text("kv\n"),
        installed: at(1_800_000_000),
        ..install("acme", "acme.hello", "2.0.0", b"v2")
    };
    r.put_install(&v2, Some(&i.content_hash)).unwrap();
    assert_eq!(r.install(&t("acme"), &i.extension).unwrap(), Some(v2));
}

/// Red team round 3: parallel installs rolled back without `--force`. Each refusal is
/// [`RegistryError::Changed`] and writes nothing.
pub fn put_install_writes_only_over_the_expected_state(r: &dyn Registry) {
    tenant(r, "acme");
    let v1 = install("acme", "acme.hello", "1.0.0", b"v1");
    let e = r
        .put_install(&v1, Some(&ContentHash::of(b"v0")))
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::Changed { tenant, extension }
            if *tenant == v1.tenant && *extension == v1.extension),
        "{e}"
    );
    assert!(r.install(&t("acme"), &v1.extension).unwrap().is_none());
    r.put_install(&v1, None).unwrap();
    let current = || r.install(&t("acme"), &v1.extension).unwrap();
    // Expected nothing, or another content: refused.
    let v2 = install("acme", "acme.hello", "2.0.0", b"v2");
    for expected in [None, Some(&v2.content_hash), Some(&ContentHash::of(b"v0"))] {
        let e = r.put_install(&v2, expected).unwrap_err();
        assert!(
            matches!(e, RegistryError::Changed { .. }),
            "{expected:?}: {e}"
        );
        assert_eq!(current(), Some(v1.clone()));
    }
    r.put_install(&v2, Some(&v1.content_hash)).unwrap();
    // Decided on v1, which is no longer there.
    let racer = install("acme", "acme.hello", "1.5.0", b"v1.5");
    let e = r.put_install(&racer, Some(&v1.content_hash)).unwrap_err();
    assert!(matches!(e, RegistryError::Changed { .. }), "{e}");
    assert_eq!(current(), Some(v2.clone()));
    // The same content again (a re-install with a new grant) expects that content.
    let regrant = InstallRecord {
        grant: "kv".parse().unwrap(),
        ..v2.clone()
    };
    r.put_install(&regrant, Some(&v2.content_hash)).unwrap();
    assert_eq!(current(), Some(regrant.clone()));
    // Once removed, only "nothing installed" is the state to expect.
    assert!(r.remove_install(&t("acme"), &v1.extension).unwrap());
    let e = r.put_install(&v1, Some(&v2.content_hash)).unwrap_err();
    assert!(matches!(e, RegistryError::Changed { .. }), "{e}");
    assert!(current().is_none());
    r.put_install(&v1, None).unwrap();
    assert_eq!(current(), Some(v1));
}

pub fn put_install_needs_the_tenant(r: &dyn Registry) {
    tenant(r, "acme");
    let ghost = install("ghost", "acme.hello", "1.0.0", b"v1");
    let e = r.put_install(&ghost, None).unwrap_err();
    assert!(
        matches!(&e, RegistryError::NoTenant(n) if *n == t("ghost")),
        "{e}"
    );
    assert!(r.install(&t("ghost"), &ghost.extension).unwrap().is_none());
    assert!(r.installs(None).unwrap().is_empty());
    assert!(r.tenant(&t("ghost")).unwrap().is_none());
}

/// By tenant, then extension, comparing names byte by byte (as `Ord` on the names does; a
/// database collation that ignores `-` or `.` would order them otherwise).
pub fn installs_are_listed_by_tenant_then_extension(r: &dyn Registry) {
    for name in ["b", "a-b", "ab", "a"] {
        tenant(r, name);
    }
    let mut written = Vec::new();
    for (tenant, extension) in [
        ("b", "z.z"),
        ("ab", "a.b"),
        ("a-b", "a.b"),
        ("a", "a-b.c"),
        ("a", "ab.c"),
        ("a", "a.bc"),
        ("a", "a.b-c"),
        ("b", "a.a"),
    ] {
        let i = install(tenant, extension, "1.0.0", extension.as_bytes());
        r.put_install(&i, None).unwrap();
        written.push(i);
    }
    let key = |i: &InstallRecord| (i.tenant.clone(), i.extension.clone());
    let mut all = written.clone();
    all.sort_by_key(key);
    assert_eq!(r.installs(None).unwrap(), all);
    for name in ["a", "ab", "a-b", "b"] {
        let mine: Vec<_> = all
            .iter()
            .filter(|i| i.tenant == t(name))
            .cloned()
            .collect();
        assert_eq!(r.installs(Some(&t(name))).unwrap(), mine, "{name}");
    }
    tenant(r, "empty");
    assert!(r.installs(Some(&t("empty"))).unwrap().is_empty());
    assert!(r.installs(Some(&t("nobody"))).unwrap().is_empty());
}

pub fn remove_install_removes_that_install_only(r: &dyn Registry) {
    tenant(r, "acme");
    tenant(r, "beta");
    let mine = install("acme", "acme.hello", "1.0.0", b"v1");
    let other_ext = install("acme", "acme.other", "1.0.0", b"o1");
    let other_tenant = install("beta", "acme.hello", "1.0.0", b"v1");
    for i in [&mine, &other_ext, &other_tenant] {
        r.put_install(i, None).unwrap();
    }
    assert!(!r.remove_install(&t("acme"), &ext("acme.nothing")).unwrap());
    assert!(!r.remove_install(&t("nobody"), &mine.extension).unwrap());
    assert!(r.remove_install(&t("acme"), &mine.extension).unwrap());
    assert!(!r.remove_install(&t("acme"), &mine.extension).unwrap());
    assert!(r.install(&t("acme"), &mine.extension).unwrap().is_none());
    assert_eq!(r.installs(None).unwrap(), [other_ext, other_tenant]);
    // The tenant stays.
    assert!(r.tenant(&t("acme")).unwrap().is_some());
}

/// Several first starts creating one tenant at once: one creates it, the others are told it
/// exists, and only the winner's key opens it.
pub fn concurrent_tenant_creations_have_one_winner(r: &dyn Registry) {
    let keys: Vec<_> = (0..RACERS).map(|_| ApiKey::generate()).collect();
    let answers = race(|i| r.create_tenant(&t("acme"), &keys[i].hash()));
    let winners: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_ok())
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for a in &answers {
        if let Err(e) = a {
            assert!(matches!(e, RegistryError::TenantExists(_)), "{e}");
        }
    }
    let winner = winners[0].0;
    for (i, key) in keys.iter().enumerate() {
        let expected = (i == winner).then(|| t("acme"));
        assert_eq!(r.tenant_by_key(&key.hash()).unwrap(), expected, "key {i}");
    }
    assert_eq!(r.tenants().unwrap().len(), 1);
}

/// Installs decided on the same state, written at once: exactly one is written, every other
/// is [`RegistryError::Changed`]. First from nothing installed, then over an install.
pub fn concurrent_installs_on_one_state_have_one_winner(r: &dyn Registry) {
    tenant(r, "acme");
    let mut expected: Option<ContentHash> = None;
    for round in 0..2 {
        let candidates: Vec<_> = (0..RACERS)
            .map(|i| {
                install(
                    "acme",
                    "acme.hello",
                    &format!("{round}.{i}.0"),
                    format!("{round}-{i}").as_bytes(),
                )
            })
            .collect();
        let answers = race(|i| r.put_install(&candidates[i], expected.as_ref()));
        let winners: Vec<_> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_ok())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        for a in &answers {
            if let Err(e) = a {
                assert!(
                    matches!(e, RegistryError::Changed { .. }),
                    "round {round}: {e}"
                );
            }
        }
        let winner = &candidates[winners[0]];
        assert_eq!(
            r.install(&t("acme"), &winner.extension).unwrap().as_ref(),
            Some(winner)
        );
        assert_eq!(r.installs(None).unwrap().len(), 1);
        expected = Some(winner.content_hash);
    }
}

/// Different bundles published under one id and version at once: exactly one is published,
/// the others are [`RegistryError::VersionTaken`] naming it.
pub fn concurrent_publications_of_one_version_have_one_winner(r: &dyn Registry) {
    let candidates: Vec<_> = (0..RACERS)
        .map(|i| {
            publication(
                format!("bundle {i}").as_bytes(),
                "acme.hello",
                "1.0.0",
                "acme",
            )
        })
        .collect();
    let answers = race(|i| r.publish(&candidates[i]));
    let winners: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let winner = &candidates[winners[0]];
    for a in &answers {
        if let Err(e) = a {
            assert!(
                matches!(e, RegistryError::VersionTaken { existing, .. } if *existing == winner.content_hash),
                "{e}"
            );
        }
    }
    for c in &candidates {
        let expected = (c.content_hash == winner.content_hash).then(|| winner.clone());
        assert_eq!(r.published(&c.content_hash).unwrap(), expected);
    }
}

/// Publishers racing to be first on a new id: exactly one gets it, the others are
/// [`RegistryError::PublisherPinned`] to it.
pub fn concurrent_first_publications_pin_one_publisher(r: &dyn Registry) {
    let candidates: Vec<_> = (0..RACERS)
        .map(|i| {
            publication(
                format!("bundle {i}").as_bytes(),
                "shared.hello",
                &format!("1.0.{i}"),
                &format!("publisher-{i}"),
            )
        })
        .collect();
    let answers = race(|i| r.publish(&candidates[i]));
    let winners: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let winner = &candidates[winners[0]];
    for a in &answers {
        if let Err(e) = a {
            assert!(
                matches!(e, RegistryError::PublisherPinned { pinned, .. } if *pinned == winner.publisher.to_string()),
                "{e}"
            );
        }
    }
    for c in &candidates {
        assert_eq!(r.published(&c.content_hash).unwrap().is_some(), c == winner);
    }
    // The pin stays with the winner.
    let later = Published {
        content_hash: ContentHash::of(b"later"),
        version: "2.0.0".parse().unwrap(),
        ..winner.clone()
    };
    r.publish(&later).unwrap();
}

/// Deterministic bytes of every value, `len` long.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

pub fn blobs_are_named_by_their_hash(blobs: &dyn BlobStore, _: &dyn Fn(&ContentHash, &[u8])) {
    let bytes = b"a bundle's bytes".repeat(1000);
    assert!(blobs.get(&ContentHash::of(&bytes)).unwrap().is_none());
    let h = blobs.put(&bytes).unwrap();
    assert_eq!(h, ContentHash::of(&bytes));
    // Again: the same name.
    assert_eq!(blobs.put(&bytes).unwrap(), h);
    assert_eq!(blobs.get(&h).unwrap().unwrap(), bytes);
    let other = blobs.put(b"other").unwrap();
    assert_eq!(other, ContentHash::of(b"other"));
    assert_eq!(blobs.get(&other).unwrap().unwrap(), b"other");
    assert_eq!(blobs.get(&h).unwrap().unwrap(), bytes);
    assert!(
        blobs
            .get(&ContentHash::of(b"never stored"))
            .unwrap()
            .is_none()
    );
    // No bytes are bytes too.
    let empty = blobs.put(b"").unwrap();
    assert_eq!(empty, ContentHash::of(b""));
    assert_eq!(blobs.get(&empty).unwrap().unwrap(), b"");
}

pub fn blobs_keep_every_byte(blobs: &dyn BlobStore, _: &dyn Fn(&ContentHash, &[u8])) {
    for bytes in [
        (0..=255u8).collect::<Vec<_>>(),
        vec![0; 4096],
        pattern((3 << 20) + 7, 1),
    ] {
        let h = blobs.put(&bytes).unwrap();
        assert_eq!(h, ContentHash::of(&bytes));
        let got = blobs.get(&h).unwrap().unwrap();
        assert!(
            got == bytes,
            "{} bytes came back as {}",
            bytes.len(),
            got.len()
        );
    }
}

/// Bytes that no longer hash to their name (damaged, truncated, or another blob's) are
/// [`BlobError::Corrupt`], never served; a put of the right bytes makes the blob whole again.
pub fn damaged_blobs_are_never_served_and_a_put_repairs_them(
    blobs: &dyn BlobStore,
    overwrite: &dyn Fn(&ContentHash, &[u8]),
) {
    let bytes = pattern(10_000, 7);
    let h = blobs.put(&bytes).unwrap();
    let other = blobs.put(b"another blob").unwrap();
    let mut flipped = bytes.clone();
    flipped[10] ^= 1;
    for bad in [
        flipped,
        bytes[..9_999].to_vec(),
        b"another blob".to_vec(),
        Vec::new(),
    ] {
        overwrite(&h, &bad);
        let e = blobs.get(&h).unwrap_err();
        assert!(
            matches!(&e, BlobError::Corrupt { expected, found }
                if *expected == h && *found == ContentHash::of(&bad)),
            "{e}"
        );
        assert_eq!(blobs.put(&bytes).unwrap(), h);
        assert_eq!(blobs.get(&h).unwrap().unwrap(), bytes);
    }
    // The other blob was never touched.
    assert_eq!(blobs.get(&other).unwrap().unwrap(), b"another blob");
}

/// The same bytes put from several threads at once: every put names them, and they are whole.
pub fn concurrent_puts_of_one_blob_agree(blobs: &dyn BlobStore, _: &dyn Fn(&ContentHash, &[u8])) {
    let shared = pattern(1 << 20, 3);
    let answers = race(|i| {
        let own = pattern(1000 + i, i as u8);
        let shared_hash = blobs.put(&shared).unwrap();
        (shared_hash, blobs.put(&own).unwrap(), own)
    });
    for (shared_hash, own_hash, own) in answers {
        assert_eq!(shared_hash, ContentHash::of(&shared));
        assert_eq!(own_hash, ContentHash::of(&own));
        assert_eq!(blobs.get(&own_hash).unwrap().unwrap(), own);
    }
    assert_eq!(
        blobs.get(&ContentHash::of(&shared)).unwrap().unwrap(),
        shared
    );
}

/// [`Registry::image`] holds every row written, whole and in its documented order, and an
/// empty registry's image is empty.
pub fn the_image_holds_everything_written_in_order(r: &dyn Registry) {
    assert_eq!(r.image().unwrap(), RegistryImage::default());
    let (zeta, acme) = (ApiKey::generate(), ApiKey::generate());
    r.create_tenant(&t("zeta"), &zeta.hash()).unwrap();
    r.create_tenant(&t("acme"), &acme.hash()).unwrap();
    let (p2, p1) = (
        publication(b"two", "beta.ext", "1.0.0", "beta"),
        publication(b"one", "acme.ext", "1.0.0", "acme"),
    );
    r.publish(&p2).unwrap();
    r.publish(&p1).unwrap();
    let (i2, i1) = (
        install("zeta", "beta.ext", "1.0.0", b"two"),
        install("acme", "beta.ext", "1.0.0", b"two"),
    );
    r.put_install(&i2, None).unwrap();
    r.put_install(&i1, None).unwrap();
    let image = r.image().unwrap();
    let names: Vec<_> = image.tenants.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["acme", "zeta"]);
    for (tenant, k) in [(&image.tenants[0], &acme), (&image.tenants[1], &zeta)] {
        assert_eq!(Some(tenant.clone()), r.tenant(&tenant.name).unwrap());
        assert!(image.keys.contains(&(k.hash(), tenant.name.clone())));
    }
    assert_eq!(image.keys.len(), 2);
    assert!(image.keys[0].0.to_hex() < image.keys[1].0.to_hex());
    let mut published = vec![p1.clone(), p2.clone()];
    published.sort_by_key(|p| p.content_hash.to_string());
    assert_eq!(image.published, published);
    assert_eq!(
        image.pins,
        [
            Pin {
                id: ext("acme.ext"),
                publisher: "acme".parse().unwrap(),
                pinned: p1.published
            },
            Pin {
                id: ext("beta.ext"),
                publisher: "beta".parse().unwrap(),
                pinned: p2.published
            },
        ]
    );
    assert_eq!(image.installs, [i1, i2]);
    assert_eq!(
        image.counts().map(|(_, n)| n),
        [2, 2, 2, 2, 2],
        "{:?}",
        image.counts()
    );
}
