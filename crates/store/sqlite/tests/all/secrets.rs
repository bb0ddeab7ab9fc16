//! `SqliteSecretRows`: the rows suite of `warden-secrets`, then, under `SecretStore`, what only
//! a database file has: sealed rows on disk, a replaced key file refused at open, real
//! tampering through a second connection, file modes, and the file shared with the key-value
//! store.

use std::path::Path;
use std::sync::Arc;

use tempfile::TempDir;
use warden_kv::KvBackend;
use warden_manifest::{ExtensionId, SecretName, TenantName};
use warden_secrets::{KEY_FILE, SecretError, SecretKey, SecretStore, SecretValue};
use warden_store_sqlite::{
    DB_FILE, SqliteSecretRows, open_kv, open_secrets, open_secrets_with_key,
};

use crate::common::{mode, q, scope, set_mode};

/// New rows in a new database, and its folder to keep until the check ends.
fn fresh_rows() -> (Arc<SqliteSecretRows>, TempDir) {
    let dir = TempDir::new().unwrap();
    let rows = SqliteSecretRows::open(&dir.path().join(DB_FILE)).unwrap();
    (Arc::new(rows), dir)
}

/// Every check every `SecretRows` storage must pass, each on a new database.
mod rows_suite {
    warden_secrets::secret_rows_tests!(super::fresh_rows);
}

fn ids() -> (TenantName, ExtensionId, SecretName) {
    (
        "acme".parse().unwrap(),
        "acme.invoices".parse().unwrap(),
        "API_TOKEN".parse().unwrap(),
    )
}

fn val(s: &str) -> SecretValue {
    SecretValue::new(s.into()).unwrap()
}

/// A second connection to the database, as someone with access to the file would open it.
fn intruder(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(DB_FILE)).unwrap()
}

fn open(dir: &TempDir) -> SecretStore {
    open_secrets(dir.path()).unwrap()
}

/// Each write is sealed under a new nonce, and neither the database nor its WAL ever holds a
/// plaintext (the suite checks what the rows are given; this, what reaches the disk).
#[test]
fn the_database_and_its_wal_hold_no_plaintext() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    let (t, e, n) = ids();
    let nonce = || -> Vec<u8> {
        intruder(dir.path())
            .query_row("SELECT nonce FROM secret_values", [], |r| r.get(0))
            .unwrap()
    };
    s.put(&t, &e, &n, &val("first-value")).unwrap();
    let n1 = nonce();
    s.put(&t, &e, &n, &val("second-value")).unwrap();
    let n2 = nonce();
    assert_ne!(n1, n2);
    assert_eq!(n1.len(), 24);
    assert_eq!(s.get(&t, &e, &n).unwrap().unwrap().expose(), "second-value");
    for f in [DB_FILE.to_string(), format!("{DB_FILE}-wal")] {
        let bytes = std::fs::read(dir.path().join(&f)).unwrap();
        assert!(!bytes.is_empty(), "{f}");
        assert!(!bytes.windows(6).any(|w| w == b"-value"), "{f}");
    }
    assert!(s.delete(&t, &e, &n).unwrap());
    assert!(s.get(&t, &e, &n).unwrap().is_none());
}

#[test]
fn values_survive_reopening() {
    let dir = TempDir::new().unwrap();
    let (t, e, n) = ids();
    open(&dir).put(&t, &e, &n, &val("durable")).unwrap();
    assert_eq!(
        open(&dir).get(&t, &e, &n).unwrap().unwrap().expose(),
        "durable"
    );
}

#[test]
fn tampered_row_names_the_secret_not_the_value() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    let (t, e, n) = ids();
    s.put(&t, &e, &n, &val("s3cret-value")).unwrap();
    let db = intruder(dir.path());
    let mut ct: Vec<u8> = db
        .query_row("SELECT ciphertext FROM secret_values", [], |r| r.get(0))
        .unwrap();
    ct[3] ^= 1;
    db.execute("UPDATE secret_values SET ciphertext = ?1", [ct])
        .unwrap();
    let err = s.get(&t, &e, &n).unwrap_err();
    assert!(matches!(err, SecretError::Decrypt { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("API_TOKEN") && err.contains("acme.invoices"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    // A truncated nonce is the same error.
    db.execute("UPDATE secret_values SET nonce = substr(nonce, 2)", [])
        .unwrap();
    assert!(matches!(
        s.get(&t, &e, &n),
        Err(SecretError::Decrypt { .. })
    ));
}

/// A row renamed or moved to another extension or tenant in the file does not decrypt there.
#[test]
fn a_row_moved_in_the_file_does_not_decrypt() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    let (t, e, n) = ids();
    s.put(&t, &e, &n, &val("s3cret-value")).unwrap();
    let db = intruder(dir.path());
    for (column, to) in [
        ("name", "OTHER"),
        ("extension", "acme.other"),
        ("tenant", "evil"),
    ] {
        db.execute(&format!("UPDATE secret_values SET {column} = ?1"), [to])
            .unwrap();
        let (t2, e2, n2): (String, String, String) = db
            .query_row(
                "SELECT tenant, extension, name FROM secret_values",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let err = s
            .get(
                &t2.parse().unwrap(),
                &e2.parse().unwrap(),
                &n2.parse().unwrap(),
            )
            .unwrap_err();
        assert!(
            matches!(err, SecretError::Decrypt { .. }),
            "{column}: {err}"
        );
    }
}

#[test]
fn wrong_key_is_refused_at_open() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join(DB_FILE);
    open_secrets_with_key(&db, &SecretKey::random()).unwrap();
    let err = open_secrets_with_key(&db, &SecretKey::random()).unwrap_err();
    assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains(&db.display().to_string()), "{err}");
}

/// The key file of the data folder is used: replacing it is a clear error at open.
#[test]
fn a_replaced_key_file_is_refused_at_open() {
    let dir = TempDir::new().unwrap();
    let (t, e, n) = ids();
    open(&dir).put(&t, &e, &n, &val("v")).unwrap();
    let key = dir.path().join(KEY_FILE);
    std::fs::remove_file(&key).unwrap();
    let err = open_secrets(dir.path()).unwrap_err();
    assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
    // A new key file was created (0600), and it is not the one the rows were written with.
    assert_eq!(mode(&key), 0o600);
}

/// The secrets store creates the shared database 0600 and refuses one (or its WAL)
/// readable by others, as the key-value store does.
#[test]
fn the_database_file_is_private() {
    let dir = TempDir::new().unwrap();
    set_mode(dir.path(), 0o755);
    let store = open(&dir);
    let (t, e, n) = ids();
    store.put(&t, &e, &n, &val("v")).unwrap();
    for f in ["warden.db", "warden.db-wal", "warden.db-shm"] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    drop(store);
    for f in ["warden.db", "warden.db-wal"] {
        let p = dir.path().join(f);
        if !p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
        set_mode(&p, 0o640);
        // The cause is kept as the error's source: read the whole chain.
        let e = open_secrets(dir.path()).err().unwrap();
        let mut err = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            err = format!("{err}: {c}");
            cause = c.source();
        }
        assert!(err.contains(f), "{err}");
        assert!(
            err.contains("accessible by other users (mode 640)"),
            "{err}"
        );
        set_mode(&p, 0o600);
    }
    open_secrets(dir.path()).unwrap();
}

/// Both stores of a data folder use `DATA/warden.db` at once, each with its own connection
/// and tables, and find their data again after reopening.
#[test]
fn kv_and_secrets_share_one_database() {
    let dir = TempDir::new().unwrap();
    let (t, e, n) = ids();
    let s = scope("acme", "acme.invoices", "default");
    {
        let kv = open_kv(dir.path()).unwrap();
        let secrets = open(&dir);
        kv.set(&s, "k", b"v", &q()).unwrap();
        secrets.put(&t, &e, &n, &val("secret")).unwrap();
        kv.set(&s, "k2", b"v2", &q()).unwrap();
    }
    let kv = open_kv(dir.path()).unwrap();
    let secrets = open(&dir);
    assert_eq!(kv.get(&s, "k2").unwrap().unwrap(), b"v2");
    assert_eq!(secrets.get(&t, &e, &n).unwrap().unwrap().expose(), "secret");
    let tables: Vec<String> = intruder(dir.path())
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "kv_entries",
            "kv_usage",
            "schema_versions",
            "secret_meta",
            "secret_values"
        ]
    );
}

/// Opening a data dir whose stores were opened before only reads the database: every store
/// opens while another connection holds the write lock (outside attack, session 27: the
/// secrets store's key check wrote on every open, so each CLI command waited behind the
/// runners' writes, and failed after 5 s beside a held lock).
#[test]
fn every_store_opens_a_current_database_while_another_connection_writes() {
    let dir = TempDir::new().unwrap();
    open(&dir);
    open_kv(dir.path()).unwrap();
    warden_store_sqlite::open_registry(dir.path()).unwrap();
    let held = intruder(dir.path());
    held.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    open(&dir);
    open_kv(dir.path()).unwrap();
    warden_store_sqlite::open_registry(dir.path()).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    held.execute_batch("COMMIT").unwrap();
}
