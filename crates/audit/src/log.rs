//! [`AuditLog`]: the file-backed, append-only, hash-chained store.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, FileExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::chain::{ChainError, MAX_LINE_BYTES, check_line, encode};
use crate::head::{HEAD_LEN, Head};
use crate::read::walk;
use crate::record::Record;
use crate::sink::{AuditSink, emit};

/// The log file inside the audit folder: one record per line.
pub const LOG_FILE: &str = "audit.jsonl";
/// The head file inside the audit folder: sequence number and hash of the last record.
pub const HEAD_FILE: &str = "audit.head";

/// Mode of the audit folder when warden creates it.
const DIR_MODE: u32 = 0o700;
/// Mode of the log and head files when warden creates them.
const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the audit log in {} is damaged; run `warden audit --verify`", dir.display())]
    Chain {
        dir: PathBuf,
        #[source]
        source: ChainError,
    },
    #[error("encoding an audit record")]
    Encode(#[source] serde_json::Error),
    #[error("an audit record of {len} bytes is over the line cap of {max} bytes", max = MAX_LINE_BYTES)]
    TooLarge { len: usize },
    #[error(
        "the audit log is unusable after an earlier write failure; no more records are accepted"
    )]
    Broken,
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number (1 for the first record), which is also its line number.
    pub seq: u64,
    /// Its hash: lowercase hex SHA-256, the `prev` of the next record.
    pub hash: String,
}

/// An append-only audit log in one folder: `audit.jsonl` and `audit.head`.
///
/// - Appends are serialized within the process by a mutex and between processes by an
///   exclusive `flock` on `audit.head`, whose contents (not this handle's memory) say where the
///   chain continues; several processes may append to the same log.
/// - [`AuditLog::append`] returns once the record and the head are on disk (`fdatasync`);
///   concurrent appends share one sync (group commit).
/// - A failed write or sync may leave a partial line, so it marks the log broken: every later
///   append fails with [`AuditError::Broken`] instead of extending a damaged chain. A caller
///   that cannot audit an action should refuse the action.
///
/// Crash safety: the line is written before the head and both are synced before the append
/// returns. A crash between the two can leave the head one record behind or ahead of the log;
/// `open` and `verify` then report it like tampering, and an operator decides.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    log_path: PathBuf,
    head_path: PathBuf,
    log: File,
    head: File,
    state: Mutex<State>,
    /// The highest sequence number known to be synced.
    durable: Mutex<u64>,
}

#[derive(Debug)]
struct State {
    /// The highest sequence number this process wrote.
    written: u64,
    broken: bool,
}

/// Unlocks a file lock when dropped.
pub(crate) struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File) -> io::Result<FileLock<'a>> {
        file.lock()?;
        Ok(FileLock(file))
    }
    pub(crate) fn shared(file: &'a File) -> io::Result<FileLock<'a>> {
        file.lock_shared()?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an error here leaves nothing to do.
        let _ = self.0.unlock();
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_owned();
    move |source| AuditError::Io {
        action,
        path,
        source,
    }
}

/// Warns (it is the operator's folder, not ours to change) when group or others have access.
fn warn_if_open_to_others(path: &Path, meta: &fs::Metadata) {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            target: "warden::audit",
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "audit log is accessible to group or others"
        );
    }
}

impl AuditLog {
    /// Opens the log in `dir`, creating `dir` (mode 0700) and the files (mode 0600) if missing.
    ///
    /// An existing log is checked at its end only: the head file must name the last line, and
    /// the last line must be intact. If not, the whole log is walked to report the first
    /// problem precisely, and the log is not opened: appending to a damaged chain would bury
    /// the damage. Nothing is ever repaired.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_err("creating", dir))?;
        let meta = fs::metadata(dir).map_err(io_err("reading", dir))?;
        warn_if_open_to_others(dir, &meta);

        let head_path = dir.join(HEAD_FILE);
        let log_path = dir.join(LOG_FILE);
        let head = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&head_path)
            .map_err(io_err("opening", &head_path))?;
        let lock = FileLock::exclusive(&head).map_err(io_err("locking", &head_path))?;
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(&log_path)
            .map_err(io_err("opening", &log_path))?;
        for (path, file) in [(&log_path, &log), (&head_path, &head)] {
            let meta = file.metadata().map_err(io_err("reading", path))?;
            warn_if_open_to_others(path, &meta);
        }
        let chain = |source| AuditError::Chain {
            dir: dir.to_owned(),
            source,
        };

        let head_len = head
            .metadata()
            .map_err(io_err("reading", &head_path))?
            .len();
        let log_len = log.metadata().map_err(io_err("reading", &log_path))?.len();
        let last = if head_len == 0 && log_len == 0 {
            // A new log.
            let bytes = Head::genesis().encode().map_err(AuditError::Encode)?;
            head.write_all_at(&bytes, 0)
                .and_then(|()| head.sync_all())
                .map_err(io_err("writing", &head_path))?;
            log.sync_all().map_err(io_err("writing", &log_path))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing", dir))?;
            tracing::info!(target: "warden::audit", dir = %dir.display(), "audit log created");
            0
        } else {
            let h = Head::read(&head, &head_path).map_err(chain)?;
            if !tail_matches(&log, log_len, &h) {
                // Find and name the first problem.
                let log_for_walk = File::open(&log_path).map_err(io_err("opening", &log_path))?;
                walk(log_for_walk, log_len, &h, &log_path).map_err(chain)?;
            }
            h.seq
        };
        drop(lock);
        Ok(AuditLog {
            dir: dir.to_owned(),
            log_path,
            head_path,
            log,
            head,
            state: Mutex::new(State {
                written: last,
                broken: false,
            }),
            durable: Mutex::new(last),
        })
    }

    /// The audit folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record and returns once it is on disk. Also emits a `tracing` event (target
    /// `warden::audit`, level INFO) with the record's main fields.
    pub fn append(&self, record: Record) -> Result<Appended, AuditError> {
        let appended = self.write(&record)?;
        self.sync(appended.seq)?;
        emit(&record, Some(appended.seq));
        Ok(appended)
    }

    fn write(&self, record: &Record) -> Result<Appended, AuditError> {
        let mut state = self.state.lock().map_err(|_| AuditError::Broken)?;
        if state.broken {
            return Err(AuditError::Broken);
        }
        let _lock = FileLock::exclusive(&self.head).map_err(io_err("locking", &self.head_path))?;
        let head = Head::read(&self.head, &self.head_path).map_err(|source| AuditError::Chain {
            dir: self.dir.clone(),
            source,
        })?;
        let seq = head.seq.checked_add(1).ok_or(AuditError::Broken)?;
        let encoded = encode(seq, &head.hash, record).map_err(AuditError::Encode)?;
        if encoded.line.len() > MAX_LINE_BYTES + 1 {
            return Err(AuditError::TooLarge {
                len: encoded.line.len() - 1,
            });
        }
        let new_head = Head {
            seq,
            hash: encoded.hash,
        };
        let new_head_bytes = new_head.encode().map_err(AuditError::Encode)?;
        if let Err(source) = (&self.log).write_all(&encoded.line) {
            state.broken = true;
            return Err(io_err("writing", &self.log_path)(source));
        }
        if let Err(source) = self.head.write_all_at(&new_head_bytes, 0) {
            state.broken = true;
            return Err(io_err("writing", &self.head_path)(source));
        }
        state.written = seq;
        Ok(Appended {
            seq,
            hash: new_head.hash,
        })
    }

    /// Makes sure everything up to `seq` is on disk, syncing at most once for all the appends
    /// that are waiting.
    fn sync(&self, seq: u64) -> Result<(), AuditError> {
        // Lock order: `durable`, then `state` (`write` never takes `durable`).
        let mut durable = self.durable.lock().map_err(|_| AuditError::Broken)?;
        if *durable >= seq {
            return Ok(());
        }
        let target = self.state.lock().map_err(|_| AuditError::Broken)?.written;
        let synced = self
            .log
            .sync_data()
            .map_err(io_err("syncing", &self.log_path))
            .and_then(|()| {
                self.head
                    .sync_data()
                    .map_err(io_err("syncing", &self.head_path))
            });
        if let Err(e) = synced {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing written
            // since the last good sync can be trusted to be there.
            if let Ok(mut state) = self.state.lock() {
                state.broken = true;
            }
            return Err(e);
        }
        *durable = target;
        Ok(())
    }
}

impl AuditSink for AuditLog {
    fn append(&self, record: Record) -> Result<(), AuditError> {
        AuditLog::append(self, record).map(|_| ())
    }
}

/// True if the log's last line is intact and is the record the head names. Reads only the end
/// of the file.
fn tail_matches(log: &File, len: u64, head: &Head) -> bool {
    if head.seq == 0 {
        return len == 0;
    }
    let start = len.saturating_sub(MAX_LINE_BYTES as u64 + 2);
    let Ok(size) = usize::try_from(len - start) else {
        return false;
    };
    let mut buf = vec![0u8; size];
    if log.read_exact_at(&mut buf, start).is_err() {
        return false;
    }
    let Some(body) = buf.strip_suffix(b"\n") else {
        return false;
    };
    let line = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None if start == 0 => body,
        None => return false,
    };
    check_line(head.seq, line).is_ok_and(|c| c.seq == head.seq && c.hash == head.hash)
}

const _: () = assert!(HEAD_LEN > 103, "the head file must fit the longest head");
