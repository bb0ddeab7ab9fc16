//! Creating, checking and connecting to `DATA/warden.db` so that only the host's user can read
//! it: it holds every tenant's key-value data in clear and the secrets' ciphertexts. Both
//! stores open their connection through [`connect`], so both check the file the same way.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use warden_datadir::{DataDirError, check_private_file, private_file};

/// How long a statement waits for another connection's write lock (the other store, another
/// host on the same data folder) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database file cannot be used. Keeps the cause.
#[derive(Debug, thiserror::Error)]
pub enum DbFileError {
    /// The file (or its `-wal` or `-shm`) is missing, odd, or open to other users.
    #[error(transparent)]
    File(#[from] DataDirError),
    #[error("{}: {what}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: cannot use WAL (journal mode {mode})", path.display())]
    NoWal { path: PathBuf, mode: String },
}

/// Creates `path` with mode 0600 if it does not exist, whatever the umask or the folder's
/// mode; refuses an existing file (or its `-wal`/`-shm`) that is not a regular file or that
/// group or others may access, as `secret.key` is refused, instead of silently fixing it: its
/// contents may already have been read, and the operator should know (`chmod 600 warden.db*`).
///
/// SQLite creates `-wal` and `-shm` with the mode of the database file, so a 0600 database
/// gives 0600 companions.
pub fn prepare_db_file(path: &Path) -> Result<(), DbFileError> {
    private_file(path)?;
    for p in [suffixed(path, "-wal"), suffixed(path, "-shm")] {
        match check_private_file(&p) {
            Err(DataDirError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A connection to the database at `path` for one store: the file checked
/// ([`prepare_db_file`]), a busy timeout, WAL (so one store's connection reads while the
/// other's writes) with `synchronous=FULL` (an acknowledged write has been fsynced), and that
/// store's tables created or migrated by `schema` in a write transaction.
pub(crate) fn connect(
    path: &Path,
    schema: fn(&Transaction<'_>) -> rusqlite::Result<()>,
) -> Result<Connection, DbFileError> {
    let err = |what| {
        let path = path.to_path_buf();
        move |source| DbFileError::Sqlite { path, what, source }
    };
    prepare_db_file(path)?;
    let mut conn = Connection::open(path).map_err(err("opening"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(err("setting the busy timeout"))?;
    // Switching a new database to WAL can fail with "locked" without waiting when another
    // connection (the other store, another host) does the same at that moment: retry.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mode = loop {
        match setup(&mut conn, schema) {
            Ok(mode) => break mode,
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(err("preparing the database")(e)),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbFileError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(conn)
}

/// WAL, fsync on every commit, and the tables; returns the journal mode now in effect.
fn setup(
    conn: &mut Connection,
    schema: fn(&Transaction<'_>) -> rusqlite::Result<()>,
) -> Result<String, rusqlite::Error> {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    schema(&tx)?;
    tx.commit()?;
    Ok(mode)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
