//! The behaviour every [`SecretRows`] storage must have, as checks that each take a fresh
//! (empty) storage and panic on the first difference: rows stored and returned byte for byte,
//! each (tenant, extension, name) kept apart, the key-check row kept by its first writer (also
//! under concurrent writers), and, through a [`SecretStore`] over the rows, no plaintext ever
//! reaching them and a wrong key refused.
//!
//! A storage crate runs them all as `#[test]`s with
//! [`secret_rows_tests!`](crate::secret_rows_tests) (enable the `testing` feature in its
//! dev-dependencies); this crate runs them on [`MemoryRows`](crate::MemoryRows). A new check is
//! a `pub fn name(rows: Arc<dyn SecretRows>)` here plus its name in the macro's list.
//!
//! What only one storage has (its files and their modes, reopening, rows edited behind its
//! back) stays in that crate's own tests.
// Test code: a failed `unwrap` is the test failing.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};

use warden_manifest::{ExtensionId, SecretName, TenantName};

use crate::{SealedRow, SecretError, SecretKey, SecretRows, SecretStore, SecretValue};

/// Runs every check of [`testing`](crate::testing) as its own `#[test]`, each on new rows from
/// `$fresh`: a function (or closure) without arguments returning `(Arc<R>, keep)` where `R`
/// implements [`SecretRows`](crate::SecretRows) and `keep` is anything that must outlive the
/// check (the rows' temporary directory or database; `()` if nothing).
///
/// ```text
/// mod rows_suite {
///     warden_secrets::secret_rows_tests!(super::fresh_rows);
/// }
/// ```
#[macro_export]
macro_rules! secret_rows_tests {
    ($fresh:expr) => {
        $crate::secret_rows_tests!(@each $fresh;
            rows_put_get_delete_and_list,
            rows_keep_every_byte,
            rows_stay_in_their_own_tenant_extension_and_name,
            key_check_keeps_the_first_row,
            concurrent_key_checks_agree_on_one_row,
            concurrent_writers_lose_nothing,
            the_rows_never_see_a_plaintext,
            a_wrong_key_is_refused,
            identities_list_every_row_in_order,
        );
    };
    (@each $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (rows, _keep) = ($fresh)();
                $crate::testing::$name(rows);
            }
        )*
    };
}

/// Threads in each concurrency check.
const RACERS: usize = 8;

fn t(name: &str) -> TenantName {
    name.parse().unwrap()
}

fn e(id: &str) -> ExtensionId {
    id.parse().unwrap()
}

fn n(name: &str) -> SecretName {
    name.parse().unwrap()
}

fn row(nonce: &[u8], ciphertext: &[u8]) -> SealedRow {
    SealedRow {
        nonce: nonce.to_vec(),
        ciphertext: ciphertext.to_vec(),
    }
}

fn sorted(mut names: Vec<SecretName>) -> Vec<SecretName> {
    names.sort();
    names
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

pub fn rows_put_get_delete_and_list(rows: Arc<dyn SecretRows>) {
    assert!(!rows.location().is_empty());
    let (t, e, a, b) = (t("acme"), e("acme.invoices"), n("API_TOKEN"), n("OTHER"));
    assert_eq!(rows.get(&t, &e, &a).unwrap(), None);
    assert!(rows.names(&t, &e).unwrap().is_empty());
    assert!(!rows.delete(&t, &e, &a).unwrap());
    rows.put(&t, &e, &a, &row(b"nonce-1", b"ciphertext-1"))
        .unwrap();
    assert_eq!(
        rows.get(&t, &e, &a).unwrap(),
        Some(row(b"nonce-1", b"ciphertext-1"))
    );
    // A put replaces the row, nonce and ciphertext both.
    rows.put(&t, &e, &a, &row(b"nonce-2", b"ct-2")).unwrap();
    assert_eq!(
        rows.get(&t, &e, &a).unwrap(),
        Some(row(b"nonce-2", b"ct-2"))
    );
    rows.put(&t, &e, &b, &row(b"nonce-3", b"ct-3")).unwrap();
    assert_eq!(sorted(rows.names(&t, &e).unwrap()), [a.clone(), b.clone()]);
    assert!(rows.delete(&t, &e, &a).unwrap());
    assert!(!rows.delete(&t, &e, &a).unwrap());
    assert_eq!(rows.get(&t, &e, &a).unwrap(), None);
    assert_eq!(rows.names(&t, &e).unwrap(), std::slice::from_ref(&b));
    assert_eq!(
        rows.get(&t, &e, &b).unwrap(),
        Some(row(b"nonce-3", b"ct-3"))
    );
    // Set again after a delete.
    rows.put(&t, &e, &a, &row(b"nonce-4", b"ct-4")).unwrap();
    assert_eq!(
        rows.get(&t, &e, &a).unwrap(),
        Some(row(b"nonce-4", b"ct-4"))
    );
}

/// Rows are bytes: every byte value (NUL, invalid UTF-8) and sizes up to a large sealed value
/// come back as they were.
pub fn rows_keep_every_byte(rows: Arc<dyn SecretRows>) {
    let (t, e) = (t("acme"), e("acme.invoices"));
    let every: Vec<u8> = (0..=255u8).collect();
    let large: Vec<u8> = (0..(crate::MAX_SECRET_BYTES + 16))
        .map(|i| (i % 251) as u8)
        .collect();
    let cases = [
        row(&[0; 24], &every),
        row(&every[..24], &[0, 0, 0]),
        row(&[0xff; 24], &large),
        row(b"\x00\xc3\x28", b"\xf0\x28\x8c\x28"),
    ];
    for (i, r) in cases.iter().enumerate() {
        let name = n(&format!("CASE_{i}"));
        rows.put(&t, &e, &name, r).unwrap();
        assert!(
            rows.get(&t, &e, &name).unwrap().as_ref() == Some(r),
            "case {i}"
        );
    }
}

/// The three parts of a row's identity stay apart: no two of these identities share a row,
/// though several would if the parts were joined into one string (with or without `-`).
pub fn rows_stay_in_their_own_tenant_extension_and_name(rows: Arc<dyn SecretRows>) {
    let ids = [
        ("acme", "acme.invoices", "TOKEN"),
        ("acme", "acme.invoices", "token"),
        ("acme", "acme.other", "TOKEN"),
        ("beta", "acme.invoices", "TOKEN"),
        // "abc.d" + "x" when joined without a separator.
        ("ab", "c.d", "x"),
        ("a", "bc.d", "x"),
        // "a-b-c.d-x" when joined with '-'.
        ("a-b", "c.d", "x"),
        ("a", "b-c.d", "x"),
        // "t" + "a.bcd" when extension and name are joined.
        ("t", "a.b", "cd"),
        ("t", "a.bc", "d"),
    ];
    for (i, (tn, en, nn)) in ids.iter().enumerate() {
        let r = row(&[i as u8; 24], format!("{tn}/{en}/{nn}").as_bytes());
        rows.put(&t(tn), &e(en), &n(nn), &r).unwrap();
    }
    let check = |deleted: Option<usize>| {
        for (i, (tn, en, nn)) in ids.iter().enumerate() {
            let expected = (Some(i) != deleted)
                .then(|| row(&[i as u8; 24], format!("{tn}/{en}/{nn}").as_bytes()));
            assert_eq!(
                rows.get(&t(tn), &e(en), &n(nn)).unwrap(),
                expected,
                "{tn} {en} {nn}"
            );
        }
    };
    check(None);
    assert_eq!(
        sorted(rows.names(&t("acme"), &e("acme.invoices")).unwrap()),
        [n("TOKEN"), n("token")]
    );
    for (tn, en, only) in [
        ("acme", "acme.other", "TOKEN"),
        ("beta", "acme.invoices", "TOKEN"),
        ("ab", "c.d", "x"),
        ("a", "bc.d", "x"),
        ("a-b", "c.d", "x"),
        ("a", "b-c.d", "x"),
        ("t", "a.b", "cd"),
        ("t", "a.bc", "d"),
    ] {
        assert_eq!(rows.names(&t(tn), &e(en)).unwrap(), [n(only)], "{tn} {en}");
    }
    assert!(
        rows.names(&t("acme"), &e("acme.nothing"))
            .unwrap()
            .is_empty()
    );
    assert!(
        rows.names(&t("nobody"), &e("acme.invoices"))
            .unwrap()
            .is_empty()
    );
    // A delete removes one identity's row only.
    assert!(rows.delete(&t("ab"), &e("c.d"), &n("x")).unwrap());
    check(Some(4));
}

/// The first key-check row stays: later proposals get it back, whoever makes them, and the
/// secret rows do not touch it.
pub fn key_check_keeps_the_first_row(rows: Arc<dyn SecretRows>) {
    let first = row(b"first nonce", b"first check");
    assert_eq!(rows.key_check(&first).unwrap(), first);
    assert_eq!(
        rows.key_check(&row(b"other", b"other check")).unwrap(),
        first
    );
    let (t, e, name) = (t("acme"), e("acme.invoices"), n("CHECK"));
    rows.put(&t, &e, &name, &row(b"n", b"c")).unwrap();
    rows.delete(&t, &e, &name).unwrap();
    assert_eq!(
        rows.key_check(&row(b"third", b"third check")).unwrap(),
        first
    );
    assert!(rows.names(&t, &e).unwrap().is_empty());
}

/// Two first starts at once: every one is answered with the same stored row, one of theirs.
pub fn concurrent_key_checks_agree_on_one_row(rows: Arc<dyn SecretRows>) {
    let proposals: Vec<_> = (0..RACERS)
        .map(|i| row(&[i as u8; 24], format!("check {i}").as_bytes()))
        .collect();
    let answers = race(|i| rows.key_check(&proposals[i]).unwrap());
    assert!(proposals.contains(&answers[0]), "{:?}", answers[0]);
    for a in &answers {
        assert_eq!(*a, answers[0]);
    }
    assert_eq!(rows.key_check(&row(b"late", b"late")).unwrap(), answers[0]);
}

/// Writers on several threads, each to names of its own and all to one shared name: every
/// row is there afterwards, and the shared one is one writer's whole row.
pub fn concurrent_writers_lose_nothing(rows: Arc<dyn SecretRows>) {
    let (t, e, shared) = (t("acme"), e("acme.invoices"), n("SHARED"));
    let mine = |i: usize, j: usize| {
        (
            n(&format!("W{i}_{j}")),
            row(&[i as u8; 24], format!("{i}/{j}").as_bytes()),
        )
    };
    race(|i| {
        for j in 0..10 {
            let (name, r) = mine(i, j);
            rows.put(&t, &e, &name, &r).unwrap();
            rows.put(
                &t,
                &e,
                &shared,
                &row(&[i as u8; 24], format!("shared {i}").as_bytes()),
            )
            .unwrap();
        }
    });
    for i in 0..RACERS {
        for j in 0..10 {
            let (name, r) = mine(i, j);
            assert_eq!(rows.get(&t, &e, &name).unwrap(), Some(r));
        }
    }
    let got = rows.get(&t, &e, &shared).unwrap().unwrap();
    let writer = got.nonce[0] as usize;
    assert_eq!(
        got,
        row(&[writer as u8; 24], format!("shared {writer}").as_bytes())
    );
    assert_eq!(rows.names(&t, &e).unwrap().len(), RACERS * 10 + 1);
}

/// Through a [`SecretStore`]: what the rows receive is sealed (no plaintext, a new nonce per
/// write), and it opens again to the value.
pub fn the_rows_never_see_a_plaintext(rows: Arc<dyn SecretRows>) {
    let store = SecretStore::new(rows.clone(), &SecretKey::random()).unwrap();
    let (t, e, name) = (t("acme"), e("acme.invoices"), n("API_TOKEN"));
    let plain = "plaintext-never-stored";
    store
        .put(&t, &e, &name, &SecretValue::new(plain.into()).unwrap())
        .unwrap();
    let first = rows.get(&t, &e, &name).unwrap().unwrap();
    store
        .put(&t, &e, &name, &SecretValue::new(plain.into()).unwrap())
        .unwrap();
    let second = rows.get(&t, &e, &name).unwrap().unwrap();
    assert_ne!(first.nonce, second.nonce);
    for r in [&first, &second] {
        assert_eq!(r.nonce.len(), 24);
        for part in [&r.nonce, &r.ciphertext] {
            assert!(
                !part.windows(9).any(|w| w == &plain.as_bytes()[..9]),
                "{r:?}"
            );
        }
    }
    // Nor does the key-check row hold its known plaintext.
    let check = rows.key_check(&row(b"x", b"x")).unwrap();
    assert!(!check.ciphertext.windows(6).any(|w| w == b"warden"));
    assert_eq!(store.get(&t, &e, &name).unwrap().unwrap().expose(), plain);
    assert_eq!(store.names(&t, &e).unwrap(), std::slice::from_ref(&name));
    assert!(store.delete(&t, &e, &name).unwrap());
    assert_eq!(rows.get(&t, &e, &name).unwrap(), None);
}

/// A store over rows first written under another key is [`SecretError::WrongKey`], naming the
/// rows' location; the rows and their key stay usable.
pub fn a_wrong_key_is_refused(rows: Arc<dyn SecretRows>) {
    let key = SecretKey::random();
    let (t, e, name) = (t("acme"), e("acme.invoices"), n("API_TOKEN"));
    SecretStore::new(rows.clone(), &key)
        .unwrap()
        .put(&t, &e, &name, &SecretValue::new("value".into()).unwrap())
        .unwrap();
    let err = SecretStore::new(rows.clone(), &SecretKey::random()).unwrap_err();
    assert!(
        matches!(&err, SecretError::WrongKey { location } if *location == rows.location()),
        "{err}"
    );
    let again = SecretStore::new(rows, &key).unwrap();
    assert_eq!(again.get(&t, &e, &name).unwrap().unwrap().expose(), "value");
}

/// [`SecretRows::identities`] lists every row once, by tenant, extension, then name, and no
/// longer a deleted one.
pub fn identities_list_every_row_in_order(rows: Arc<dyn SecretRows>) {
    assert!(rows.identities().unwrap().is_empty());
    for (tenant, ext, name) in [
        ("zeta", "acme.b", "TOKEN"),
        ("acme", "acme.b", "TOKEN"),
        ("acme", "acme.a", "Z"),
        ("acme", "acme.a", "A"),
        ("acme", "acme.a", "GONE"),
    ] {
        rows.put(&t(tenant), &e(ext), &n(name), &row(b"n", b"c"))
            .unwrap();
    }
    assert!(rows.delete(&t("acme"), &e("acme.a"), &n("GONE")).unwrap());
    let ids: Vec<String> = rows
        .identities()
        .unwrap()
        .iter()
        .map(|(t, e, n)| format!("{t}/{e}/{n}"))
        .collect();
    assert_eq!(
        ids,
        [
            "acme/acme.a/A",
            "acme/acme.a/Z",
            "acme/acme.b/TOKEN",
            "zeta/acme.b/TOKEN"
        ]
    );
}
