//! `PgSecretRows`: the rows suite of `warden-secrets`, then, under `SecretStore`, what only a
//! shared database has: no plaintext in it, and a runner with another key refused.

use std::sync::Arc;

use warden_manifest::{ExtensionId, SecretName, TenantName};
use warden_secrets::{SecretError, SecretKey, SecretStore, SecretValue};
use warden_store_pg::PgSecretRows;

use crate::common::TestDb;

/// New rows on a new database, and the database to keep until the check ends.
pub fn fresh_rows() -> Option<(Arc<PgSecretRows>, TestDb)> {
    let db = TestDb::new()?;
    let rows = db.connect().secret_rows();
    Some((Arc::new(rows), db))
}

/// Every check every `SecretRows` storage must pass, each on a new database.
mod rows_suite {
    warden_secrets::secret_rows_tests!(fresh_or_skip!(crate::secrets::fresh_rows()));
}

fn ids() -> (TenantName, ExtensionId, SecretName) {
    (
        "acme".parse().unwrap(),
        "acme.invoices".parse().unwrap(),
        "API_TOKEN".parse().unwrap(),
    )
}

#[test]
fn the_database_holds_no_plaintext_and_every_runner_reads_the_value() {
    let Some(db) = TestDb::new() else { return };
    let key = SecretKey::random();
    let a = SecretStore::new(Arc::new(db.connect().secret_rows()), &key).unwrap();
    let b = SecretStore::new(Arc::new(db.connect().secret_rows()), &key).unwrap();
    let (t, e, n) = ids();
    a.put(
        &t,
        &e,
        &n,
        &SecretValue::new("s3cret-value".into()).unwrap(),
    )
    .unwrap();
    assert_eq!(b.get(&t, &e, &n).unwrap().unwrap().expose(), "s3cret-value");
    let stored = db
        .query_text(
            "SELECT encode(ciphertext, 'escape') || encode(nonce, 'escape') FROM secret_values",
        )
        .unwrap();
    assert!(!stored.contains("s3cret"), "{stored}");
    assert!(b.delete(&t, &e, &n).unwrap());
    assert!(a.get(&t, &e, &n).unwrap().is_none());
}

#[test]
fn a_runner_with_another_key_is_refused() {
    let Some(db) = TestDb::new() else { return };
    SecretStore::new(Arc::new(db.connect().secret_rows()), &SecretKey::random()).unwrap();
    let err =
        SecretStore::new(Arc::new(db.connect().secret_rows()), &SecretKey::random()).unwrap_err();
    assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
}
