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
/// How often a waiting statement tries the lock again.
const BUSY_POLL: Duration = Duration::from_millis(2);

/// SQLite's busy handler: tries again every [`BUSY_POLL`], for about [`BUSY_TIMEOUT`].
/// SQLite's own (`busy_timeout`) sleeps up to 100 ms between tries, and loses the lock to
/// writers that come back sooner: beside two runners committing key-value writes 11 times a
/// second each, `warden uninstall` waited 5 s and failed "database is locked" (outside
/// attack, session 27).
fn busy(tries: i32) -> bool {
    let most = BUSY_TIMEOUT.as_millis() / BUSY_POLL.as_millis();
    if u128::try_from(tries).unwrap_or(u128::MAX) >= most {
        return false;
    }
    std::thread::sleep(BUSY_POLL);
    true
}

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
    conn.busy_handler(Some(busy))
        .map_err(err("setting the busy handler"))?;
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
    // Tables already as they should be (every open but the first) are only read: not behind
    // the write lock every runner's writes take. `schema` writes only what is missing; when
    // it must, the write waits for the lock like any other, and if another connection wrote
    // since this one read, it fails busy and all is done again behind the lock from the start.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    match schema(&tx).and_then(|()| tx.commit()) {
        Ok(()) => return Ok(mode),
        Err(e) if is_busy(&e) => {}
        Err(e) => return Err(e),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::schema;

    /// A connection of its own on `path` that holds the write lock until it is dropped.
    fn writer(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn
    }

    /// Opening a database whose tables are current only reads them: it does not wait behind
    /// the write lock every runner's writes take (outside attack, session 27: an install
    /// failed "database is locked" while opening, beside two busy runners).
    #[test]
    fn a_current_database_opens_while_another_connection_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.db");
        let schemas: [fn(&Transaction<'_>) -> rusqlite::Result<()>; 3] =
            [schema::kv, schema::registry, schema::secrets];
        for s in schemas {
            connect(&path, s).unwrap();
        }
        let held = writer(&path);
        let started = Instant::now();
        for s in schemas {
            connect(&path, s).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(held);
    }

    /// A write waits for the lock, trying often (not SQLite's up to 100 ms apart), and gives
    /// up after about [`BUSY_TIMEOUT`] rather than never.
    #[test]
    fn a_write_waits_for_the_lock_and_gives_up_in_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.db");
        let mut conn = connect(&path, schema::kv).unwrap();
        let held = writer(&path);
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            held.execute_batch("COMMIT").unwrap();
            held
        });
        let started = Instant::now();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let waited = started.elapsed();
        tx.commit().unwrap();
        assert!(
            (Duration::from_millis(280)..Duration::from_millis(1500)).contains(&waited),
            "{waited:?}"
        );
        let held = release.join().unwrap();
        held.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = Instant::now();
        let e = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .err()
            .unwrap();
        assert!(is_busy(&e), "{e}");
        let waited = started.elapsed();
        assert!(
            (BUSY_TIMEOUT..BUSY_TIMEOUT * 3).contains(&waited),
            "{waited:?}"
        );
    }
}
