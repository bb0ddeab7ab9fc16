//! [`Export`]: a data dir's database read whole, read-only and from one snapshot, for copying
//! it to another storage (`warden migrate`). Nothing is ever written to the file: not a schema
//! migration, not a key-check row.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use warden_kv::{KvError, KvRow};
use warden_registry::{RegistryError, RegistryImage};
use warden_secrets::{SealedRow, SecretError, SecretId, parse_secret_id};

use crate::file::DbFileError;

/// Every sealed secret row with its identity, and the key-check row if there is one.
pub type SealedSecrets = (Vec<(SecretId, SealedRow)>, Option<SealedRow>);

/// A read-only connection holding one read transaction open: every read sees the database as
/// it was at the first one.
pub struct Export {
    conn: Connection,
    path: PathBuf,
}

impl Export {
    /// Opens the database at `path` read-only and starts the snapshot. A file on a read-only
    /// mount (where SQLite cannot create its shared-memory file) is opened as immutable:
    /// nothing can write it there either.
    pub fn open(path: &Path) -> Result<Export, DbFileError> {
        let err = |what| {
            let path = path.to_path_buf();
            move |source| DbFileError::Sqlite { path, what, source }
        };
        warden_datadir::check_private_file(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let uri = |extra: &str| format!("file:{}?mode=ro{extra}", uri_path(path));
        let conn = match Connection::open_with_flags(uri(""), flags).and_then(|c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::CannotOpen) => {
                Connection::open_with_flags(uri("&immutable=1"), flags).map_err(err("opening"))?
            }
            Err(e) => return Err(err("opening")(e)),
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err("setting the busy timeout"))?;
        // The snapshot starts at the first read after BEGIN.
        conn.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
            .map_err(err("starting a read transaction"))?;
        Ok(Export {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The registry's rows.
    pub fn registry(&self) -> Result<RegistryImage, RegistryError> {
        crate::registry::read_image(&self.conn, &|e| RegistryError::Storage {
            location: self.path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// The key-value rows, to `each` (see [`KvRow`]).
    pub fn kv(&self, each: &mut dyn FnMut(KvRow) -> Result<(), KvError>) -> Result<(), KvError> {
        crate::kv::export_rows(&self.conn, each)
    }

    /// The sealed secret rows, by tenant, extension and name, and the key-check row if there
    /// is one.
    pub fn secrets(&self) -> Result<SealedSecrets, SecretError> {
        let err = |e: rusqlite::Error| SecretError::Storage {
            location: self.path.display().to_string(),
            source: Box::new(e),
        };
        let mut st = self
            .conn
            .prepare(
                "SELECT tenant, extension, name, nonce, ciphertext FROM secret_values
                 ORDER BY tenant, extension, name",
            )
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let (t, x, n): (String, String, String) = (
                r.get(0).map_err(err)?,
                r.get(1).map_err(err)?,
                r.get(2).map_err(err)?,
            );
            let id = parse_secret_id(&t, &x, &n).map_err(|m| SecretError::Storage {
                location: self.path.display().to_string(),
                source: m.into(),
            })?;
            out.push((
                id,
                SealedRow {
                    nonce: r.get(3).map_err(err)?,
                    ciphertext: r.get(4).map_err(err)?,
                },
            ));
        }
        let check = self
            .conn
            .query_row(
                "SELECT nonce, check_ciphertext FROM secret_meta WHERE id = 1",
                [],
                |r| {
                    Ok(SealedRow {
                        nonce: r.get(0)?,
                        ciphertext: r.get(1)?,
                    })
                },
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(err(e)),
            })?;
        Ok((out, check))
    }

    /// Where the database is, for messages.
    pub fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// `path` for a `file:` URI: every byte but unreserved ASCII and `/` percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(b) {
            out.push(char::from(*b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_a_uri_would_read() {
        assert_eq!(
            uri_path(Path::new("/d/a b?c#%é/warden.db")),
            "/d/a%20b%3Fc%23%25%C3%A9/warden.db"
        );
    }
}
