//! [`SecretRows`] on `DATA/warden.db`, in the `secret_*` tables (`schema.rs`): nonces and
//! ciphertexts only, as `warden_secrets::SecretStore` sealed them. This code never sees a key
//! or a plaintext.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use warden_manifest::{ExtensionId, SecretName, TenantName};
use warden_secrets::{SealedRow, SecretError, SecretId, SecretRows, parse_secret_id};

use crate::{file, schema};

/// Sealed secret rows in SQLite. One connection, used under a lock (each operation is one or
/// two short statements on a primary key).
pub struct SqliteSecretRows {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteSecretRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSecretRows")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteSecretRows {
    /// Opens (creating if needed) the database at `path` and the `secret_*` tables.
    pub fn open(path: &Path) -> Result<Self, SecretError> {
        let conn = file::connect(path, schema::secrets).map_err(|e| SecretError::Storage {
            location: path.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(SqliteSecretRows {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, SecretError> {
        self.conn
            .lock()
            .map_err(|_| self.err("connection lock poisoned"))
    }

    fn err(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> SecretError {
        SecretError::Storage {
            location: self.location(),
            source: source.into(),
        }
    }
}

impl SecretRows for SqliteSecretRows {
    fn get(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<Option<SealedRow>, SecretError> {
        self.lock()?
            .query_row(
                "SELECT nonce, ciphertext FROM secret_values
                 WHERE tenant = ?1 AND extension = ?2 AND name = ?3",
                params![tenant.as_str(), extension.as_str(), name.as_str()],
                |r| {
                    Ok(SealedRow {
                        nonce: r.get(0)?,
                        ciphertext: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn put(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
        row: &SealedRow,
    ) -> Result<(), SecretError> {
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
                    row.nonce,
                    row.ciphertext
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn delete(
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
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn names(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Vec<SecretName>, SecretError> {
        let conn = self.lock()?;
        let e = |e: rusqlite::Error| self.err(e);
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

    fn identities(&self) -> Result<Vec<SecretId>, SecretError> {
        let conn = self.lock()?;
        let e = |e: rusqlite::Error| self.err(e);
        let mut stmt = conn
            .prepare("SELECT tenant, extension, name FROM secret_values")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(e)?;
        let mut out = Vec::new();
        for r in rows {
            let (t, x, n) = r.map_err(e)?;
            out.push(parse_secret_id(&t, &x, &n).map_err(|m| self.err(m))?);
        }
        out.sort();
        Ok(out)
    }

    fn key_check(&self, proposed: &SealedRow) -> Result<SealedRow, SecretError> {
        let conn = self.lock()?;
        let e = |e: rusqlite::Error| self.err(e);
        let read = || {
            conn.query_row(
                "SELECT nonce, check_ciphertext FROM secret_meta WHERE id = 1",
                [],
                |r| {
                    Ok(SealedRow {
                        nonce: r.get(0)?,
                        ciphertext: r.get(1)?,
                    })
                },
            )
            .optional()
        };
        // Read first: every open but the first finds it, and takes no write lock (outside
        // attack, session 27: each CLI command and runner start waited behind the runners'
        // writes for this insert).
        if let Some(row) = read().map_err(e)? {
            return Ok(row);
        }
        // Two first starts may race: the first insert wins (OR IGNORE), both read the winner.
        conn.execute(
            "INSERT OR IGNORE INTO secret_meta (id, nonce, check_ciphertext) VALUES (1, ?1, ?2)",
            params![proposed.nonce, proposed.ciphertext],
        )
        .map_err(e)?;
        read()
            .map_err(e)?
            .ok_or_else(|| e(rusqlite::Error::QueryReturnedNoRows))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
