//! Secret values per (tenant, extension, name) in SQLite (`DATA/warden.db`, tables
//! `secret_*`), each encrypted with XChaCha20-Poly1305: a random 192-bit nonce per write, and
//! associated data binding the row's tenant, extension and name, so a ciphertext copied to
//! another row (another extension, tenant or name) fails to decrypt.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, OptionalExtension, params};
use warden_manifest::{ExtensionId, SecretName, TenantName};
use zeroize::Zeroizing;

use crate::key::{KEY_FILE, SecretKey};
use crate::{SecretError, SecretValue};

/// The database file inside the data folder (shared with the key-value store).
pub const DB_FILE: &str = "warden.db";
/// How long a write waits for another connection (key-value, another host) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Domain separation for the associated data, versioned with the row format.
const AAD_PREFIX: &[u8] = b"warden-secret-v1\0";
const NONCE_BYTES: usize = 24;
/// A known plaintext stored once per database: a wrong key file is reported at start, not
/// at the first read of each secret.
const CHECK_PLAINTEXT: &[u8] = b"warden secret key check";
const CHECK_AAD: &[u8] = b"warden-secret-check-v1";

/// Encrypted secret values. Cheap to share behind an `Arc`; one SQLite connection, used under
/// a lock (reads are short: one row by primary key).
pub struct SecretStore {
    conn: Mutex<Connection>,
    cipher: XChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// Opens the store in data folder `dir`: `dir/secret.key` (created on first start, see
    /// [`SecretKey::load_or_create`]) and `dir/warden.db` (WAL, busy timeout). A key that does
    /// not match the one the database was written with is [`SecretError::WrongKey`].
    pub fn open(dir: &Path) -> Result<Self, SecretError> {
        let key = SecretKey::load_or_create(&dir.join(KEY_FILE))?;
        let path = dir.join(DB_FILE);
        prepare_db_file(&path)?;
        let conn = Connection::open(&path).map_err(|e| db_err(&path, e))?;
        Self::with(conn, &key, path)
    }

    /// A store that lives in memory only, with a random key (hosts without a data folder).
    pub fn in_memory() -> Result<Self, SecretError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| db_err(&path, e))?;
        Self::with(conn, &SecretKey::random(), path)
    }

    /// Opens with an explicit key (tests, key rotation tools).
    pub fn open_with_key(db: &Path, key: &SecretKey) -> Result<Self, SecretError> {
        prepare_db_file(db)?;
        let conn = Connection::open(db).map_err(|e| db_err(db, e))?;
        Self::with(conn, key, db.to_path_buf())
    }

    fn with(conn: Connection, key: &SecretKey, path: PathBuf) -> Result<Self, SecretError> {
        let e = |e: rusqlite::Error| db_err(&path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
        // WAL lets the key-value store's connection read while this one writes.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS secret_values (
                tenant TEXT NOT NULL,
                extension TEXT NOT NULL,
                name TEXT NOT NULL,
                nonce BLOB NOT NULL,
                ciphertext BLOB NOT NULL,
                PRIMARY KEY (tenant, extension, name)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS secret_meta (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                nonce BLOB NOT NULL,
                check_ciphertext BLOB NOT NULL
            );",
        )
        .map_err(e)?;
        let store = SecretStore {
            conn: Mutex::new(conn),
            cipher: XChaCha20Poly1305::new(key.bytes().into()),
            path,
        };
        store.check_key()?;
        Ok(store)
    }

    /// Compares the key with the one the database was first written with, recording a check
    /// value on first use (two first starts may race: the first insert wins, both compare).
    fn check_key(&self) -> Result<(), SecretError> {
        let conn = self.lock()?;
        let e = |e: rusqlite::Error| db_err(&self.path, e);
        let nonce = random_nonce();
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: CHECK_PLAINTEXT,
                    aad: CHECK_AAD,
                },
            )
            .map_err(|_| db_err_msg(&self.path, "encrypting the key check failed"))?;
        conn.execute(
            "INSERT OR IGNORE INTO secret_meta (id, nonce, check_ciphertext) VALUES (1, ?1, ?2)",
            params![nonce.as_slice(), ct],
        )
        .map_err(e)?;
        let (nonce, ct): (Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT nonce, check_ciphertext FROM secret_meta WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(e)?;
        let ok = nonce.len() == NONCE_BYTES
            && self
                .cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &ct,
                        aad: CHECK_AAD,
                    },
                )
                .is_ok_and(|p| p == CHECK_PLAINTEXT);
        if ok {
            Ok(())
        } else {
            Err(SecretError::WrongKey {
                path: self.path.clone(),
            })
        }
    }

    /// Stores (or replaces) a value, encrypted under a fresh nonce.
    pub fn put(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        let nonce = random_nonce();
        let aad = aad(tenant, extension, name);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| db_err_msg(&self.path, &format!("encrypting secret {name} failed")))?;
        self.lock()?
            .execute(
                "INSERT INTO secret_values (tenant, extension, name, nonce, ciphertext)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, extension, name)
                 DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
                params![
                    tenant.as_str(),
                    extension.as_str(),
                    name.as_str(),
                    nonce.as_slice(),
                    ct
                ],
            )
            .map_err(|e| db_err(&self.path, e))?;
        Ok(())
    }

    /// The value of a secret, `None` if it was never set. A row that does not decrypt (wrong
    /// key, tampered or moved ciphertext) is [`SecretError::Decrypt`], naming the secret.
    pub fn get(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<Option<SecretValue>, SecretError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .lock()?
            .query_row(
                "SELECT nonce, ciphertext FROM secret_values
                 WHERE tenant = ?1 AND extension = ?2 AND name = ?3",
                params![tenant.as_str(), extension.as_str(), name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| db_err(&self.path, e))?;
        let Some((nonce, ct)) = row else {
            return Ok(None);
        };
        let failed = || SecretError::Decrypt {
            tenant: tenant.to_string(),
            extension: extension.to_string(),
            name: name.to_string(),
        };
        if nonce.len() != NONCE_BYTES {
            return Err(failed());
        }
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &ct,
                        aad: &aad(tenant, extension, name),
                    },
                )
                .map_err(|_| failed())?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| failed())?;
        SecretValue::new(text.to_string()).map(Some)
    }

    /// Removes a secret; `true` if it existed.
    pub fn delete(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<bool, SecretError> {
        let n = self
            .lock()?
            .execute(
                "DELETE FROM secret_values WHERE tenant = ?1 AND extension = ?2 AND name = ?3",
                params![tenant.as_str(), extension.as_str(), name.as_str()],
            )
            .map_err(|e| db_err(&self.path, e))?;
        Ok(n > 0)
    }

    /// The names set for (tenant, extension), sorted.
    pub fn names(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Vec<SecretName>, SecretError> {
        let conn = self.lock()?;
        let e = |e: rusqlite::Error| db_err(&self.path, e);
        let mut stmt = conn
            .prepare(
                "SELECT name FROM secret_values WHERE tenant = ?1 AND extension = ?2 ORDER BY name",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), extension.as_str()], |r| {
                r.get::<_, String>(0)
            })
            .map_err(e)?;
        let mut out = Vec::new();
        for r in rows {
            // A row whose name is not a valid secret name was not written by this store: skip.
            if let Ok(n) = r.map_err(e)?.parse() {
                out.push(n);
            }
        }
        Ok(out)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, SecretError> {
        self.conn
            .lock()
            .map_err(|_| db_err_msg(&self.path, "connection lock poisoned"))
    }
}

/// Tenant, extension and name, NUL-separated (none of them can contain NUL).
fn aad(tenant: &TenantName, extension: &ExtensionId, name: &SecretName) -> Vec<u8> {
    let mut a = AAD_PREFIX.to_vec();
    for part in [tenant.as_str(), extension.as_str(), name.as_str()] {
        a.extend_from_slice(part.as_bytes());
        a.push(0);
    }
    a
}

fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut n);
    n
}

/// The database file is shared with the key-value store, which creates it 0600 and refuses one
/// that other users may access (see `warden_kv::prepare_db_file`): the same check here.
fn prepare_db_file(path: &Path) -> Result<(), SecretError> {
    warden_kv::prepare_db_file(path).map_err(|e| SecretError::Db {
        path: e.path,
        reason: e.reason,
    })
}

fn db_err(path: &Path, e: rusqlite::Error) -> SecretError {
    db_err_msg(path, &e.to_string())
}

fn db_err_msg(path: &Path, reason: &str) -> SecretError {
    SecretError::Db {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn put_get_delete_and_nonce_per_write() {
        let s = SecretStore::in_memory().unwrap();
        let (t, e, n) = ids();
        assert!(s.get(&t, &e, &n).unwrap().is_none());
        s.put(&t, &e, &n, &val("first")).unwrap();
        let n1: Vec<u8> = s
            .lock()
            .unwrap()
            .query_row("SELECT nonce FROM secret_values", [], |r| r.get(0))
            .unwrap();
        s.put(&t, &e, &n, &val("second")).unwrap();
        let n2: Vec<u8> = s
            .lock()
            .unwrap()
            .query_row("SELECT nonce FROM secret_values", [], |r| r.get(0))
            .unwrap();
        assert_ne!(n1, n2);
        assert_eq!(s.get(&t, &e, &n).unwrap().unwrap().expose(), "second");
        assert_eq!(s.names(&t, &e).unwrap(), vec![n.clone()]);
        assert!(s.delete(&t, &e, &n).unwrap());
        assert!(!s.delete(&t, &e, &n).unwrap());
        assert!(s.get(&t, &e, &n).unwrap().is_none());
    }

    #[test]
    fn tampered_row_names_the_secret_not_the_value() {
        let s = SecretStore::in_memory().unwrap();
        let (t, e, n) = ids();
        s.put(&t, &e, &n, &val("s3cret-value")).unwrap();
        let conn = s.lock().unwrap();
        let mut ct: Vec<u8> = conn
            .query_row("SELECT ciphertext FROM secret_values", [], |r| r.get(0))
            .unwrap();
        ct[3] ^= 1;
        conn.execute("UPDATE secret_values SET ciphertext = ?1", [ct])
            .unwrap();
        drop(conn);
        let err = s.get(&t, &e, &n).unwrap_err().to_string();
        assert!(
            err.contains("API_TOKEN") && err.contains("acme.invoices"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn wrong_key_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        SecretStore::open_with_key(&db, &SecretKey::random()).unwrap();
        let err = SecretStore::open_with_key(&db, &SecretKey::random()).unwrap_err();
        assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
    }

    /// The secrets store creates the shared database 0600 and refuses one (or its WAL)
    /// readable by others, as the key-value store does.
    #[test]
    fn the_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs_mode(dir.path(), 0o755);
        let store = SecretStore::open(dir.path()).unwrap();
        let (t, e, n) = ids();
        store.put(&t, &e, &n, &val("v")).unwrap();
        for f in ["warden.db", "warden.db-wal", "warden.db-shm"] {
            let m = std::fs::metadata(dir.path().join(f)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
        }
        drop(store);
        for f in ["warden.db", "warden.db-wal"] {
            let p = dir.path().join(f);
            if !p.exists() {
                std::fs::write(&p, b"").unwrap();
            }
            fs_mode(&p, 0o640);
            let err = SecretStore::open(dir.path()).err().unwrap().to_string();
            assert!(err.contains(f), "{err}");
            assert!(
                err.contains("accessible by other users (mode 640)"),
                "{err}"
            );
            fs_mode(&p, 0o600);
        }
        SecretStore::open(dir.path()).unwrap();
    }

    fn fs_mode(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
