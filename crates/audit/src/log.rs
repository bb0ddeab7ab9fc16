//! [`AuditLog`]: the file-backed, append-only, hash-chained store.
//!
//! `DATA/audit/audit.jsonl` holds one canonical JSON record per line, each with the SHA-256 of the
//! one before (`chain.rs`); `audit.head` (fixed 128 bytes, rewritten in place) names the last
//! record's seq and hash, so removals from the end show, and its `flock` serializes appends between
//! processes. `warden audit --verify` walks the whole chain; `AuditLog::open` checks only the end.
//!
//! - Append: the line goes out in **one `write`**, then the head; both are `fdatasync`ed (group
//!   commit) before `append` returns. A failed or short write (a full disk) is rolled back: the log
//!   is cut to its old length and the old head restored, so the chain stays intact and a later
//!   append can succeed. Only if the rollback or a sync fails is the handle marked broken (every
//!   later append fails until a restart).
//! - Torn tail: a last line without a newline, that is a prefix of the record that would follow the
//!   head (`{"seq":S+1,"prev":"H",…`, trailing NULs allowed), after complete lines that all verify
//!   with the head naming the last one, is what a crash or a failed rollback leaves. `open` (and an
//!   append that finds one left by another process) appends those bytes, hex-encoded, to
//!   `audit.torn`, cuts the log back, and appends a `recovery` record ("a torn tail of N bytes …
//!   was set aside at seq S"), so the repair is in the chain and `--verify` passes. Anything else
//!   (an edited or garbled line, a missing line, a head that does not match, a tail that is not the
//!   next record's start) is refused as before, naming the first problem.
//! - Fail closed: when the host cannot store a record (`Inner::write`), it sets a flag; every new
//!   call (rpc, http, and calls between extensions) is then refused with
//!   `CallError::Host("the audit log cannot be written: …")` before it runs. Each refusal tries to
//!   store its own record; once one is stored the flag clears and later calls run again. The call
//!   during which the store failed has already run and keeps its result.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::chain::{ChainError, MAX_LINE_BYTES, check_line, encode};
use crate::files::FileLock;
use crate::head::{HEAD_LEN, Head};
use crate::key::{AUDIT_KEY_FILE, AuditKey};
use crate::read::walk;
use crate::record::{Event, Outcome, Record};
use crate::sink::{AuditSink, emit};

pub use crate::error::AuditError;
pub use crate::files::{AUDIT_DIR, HEAD_FILE, LOG_FILE, TORN_FILE};

/// Mode of the log and head files when warden creates them.
const FILE_MODE: u32 = 0o600;

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
/// - Each line is written with one `write`. A failed or short write (a full disk) is rolled
///   back: the log is cut back to its previous length (and the old head rewritten) before the
///   error is returned, so the chain stays intact and a later append may succeed. Only when
///   that rollback fails too, or a sync fails (the kernel may have dropped written pages), is
///   the log marked broken: every later append fails with [`AuditError::Broken`] instead of
///   extending a damaged chain. A caller that cannot audit an action should refuse the action.
///
/// Crash safety: the line is written before the head and both are synced before the append
/// returns. A crash (or a failed rollback) in the middle of the line leaves a *torn tail*: a
/// last line without a newline, after the record the head names. That is the one damage that
/// is repaired, by `open` or by the next append: see [`AuditLog::open`]. A crash after the line
/// but before the head leaves the head one record behind; `open` and `verify` report that like
/// tampering, and an operator decides.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    log_path: PathBuf,
    head_path: PathBuf,
    key: Option<AuditKey>,
    /// The unkeyed head adopted at open (a key created just now), until it is rewritten.
    adopted: Option<(u64, String)>,
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
    /// the damage.
    ///
    /// One damage is repaired, because it is what a crash or a full disk leaves, not an edit: a
    /// torn tail. That is: the last line has no newline, its bytes are the start of the record
    /// that would follow the head, every complete line verifies and the head names the last of
    /// them. Its bytes are appended to [`TORN_FILE`], the log is cut back to its last newline,
    /// and an [`Event::Recovery`] record saying how many bytes were set aside at which sequence
    /// number is appended, so the repair is itself in the chain and `verify` passes.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with_key(dir, None)
    }

    /// [`AuditLog::open`] with the head kept under a MAC ([`AuditKey`]). An existing head must
    /// carry the key's MAC, unless `key.1` says the key was created just now (the head of an
    /// older, unkeyed log is then adopted and keyed from the next append).
    pub fn open_keyed(dir: &Path, key: AuditKey, created: bool) -> Result<AuditLog, AuditError> {
        AuditLog::open_with_key(dir, Some((key, created)))
    }

    /// The log of a data dir: `DATA/audit`, keyed by `key_file` (default `DATA/audit.key`,
    /// created on first use). Creates `data` (0700) if missing; refuses one others can write.
    pub fn open_in(data: &Path, key_file: Option<&Path>) -> Result<AuditLog, AuditError> {
        warden_datadir::private_dir(data)?;
        let default = data.join(AUDIT_KEY_FILE);
        let (key, created) = AuditKey::load_or_create(key_file.unwrap_or(&default))?;
        AuditLog::open_keyed(&data.join(AUDIT_DIR), key, created)
    }

    fn open_with_key(dir: &Path, key: Option<(AuditKey, bool)>) -> Result<AuditLog, AuditError> {
        let (key, adopt) = match key {
            Some((k, created)) => (Some(k), created),
            None => (None, false),
        };
        // Created 0700; refused if others can write to it (they could edit the log). Read
        // access for others (a log shipper's group) is the operator's choice, and only warned.
        warden_datadir::private_dir(dir)?;
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
        let mut adopted = None;
        let last = if head_len == 0 && log_len == 0 {
            // A new log.
            let bytes = Head::genesis(key.as_ref())
                .encode()
                .map_err(AuditError::Encode)?;
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
            h.check_mac(key.as_ref(), &head_path, adopt)
                .map_err(chain)?;
            if key.is_some() && h.mac.is_none() {
                adopted = Some((h.seq, h.hash.clone()));
            }
            if tail_matches(&log, log_len, &h) {
                h.seq
            } else if let Some(cut) = torn_tail(&log, &log_path, log_len, &h).map_err(chain)? {
                let files = Files {
                    dir,
                    log: &log,
                    log_path: &log_path,
                    head: &head,
                    head_path: &head_path,
                    key: key.as_ref(),
                };
                let (h, _) = files
                    .set_aside(&h, cut, log_len)
                    .map_err(|failure| failure.error)?;
                // The recovery record must be on disk before anything is appended after it.
                log.sync_data()
                    .map_err(io_err("syncing", &log_path))
                    .and(head.sync_data().map_err(io_err("syncing", &head_path)))?;
                h.seq
            } else {
                // Find and name the first problem.
                let log_for_walk = File::open(&log_path).map_err(io_err("opening", &log_path))?;
                walk(log_for_walk, log_len, &h, &log_path).map_err(chain)?;
                h.seq
            }
        };
        drop(lock);
        Ok(AuditLog {
            dir: dir.to_owned(),
            log_path,
            head_path,
            key,
            adopted,
            log,
            head,
            state: Mutex::new(State {
                written: last,
                broken: false,
            }),
            durable: Mutex::new(last),
        })
    }

    fn adopted(&self, head: &Head) -> bool {
        head.mac.is_none()
            && self
                .adopted
                .as_ref()
                .is_some_and(|(seq, hash)| *seq == head.seq && *hash == head.hash)
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
        let chain = |source| AuditError::Chain {
            dir: self.dir.clone(),
            source,
        };
        let mut head = Head::read(&self.head, &self.head_path).map_err(chain)?;
        // Under the lock, from the file: another process may have written it. A head without
        // a MAC is accepted only while it is the one this handle adopted at open.
        head.check_mac(self.key.as_ref(), &self.head_path, self.adopted(&head))
            .map_err(chain)?;
        let mut len = self
            .log
            .metadata()
            .map_err(io_err("reading", &self.log_path))?
            .len();
        let files = Files {
            dir: &self.dir,
            log: &self.log,
            log_path: &self.log_path,
            head: &self.head,
            head_path: &self.head_path,
            key: self.key.as_ref(),
        };
        // A line not ending in a newline is left by a crash or a rollback that failed (here or
        // in another process). Appending after it would bury a garbled line in the chain, so it
        // is set aside first, on the same strict conditions as at `open`, or the append fails.
        if !ends_with_newline(&self.log, len).map_err(io_err("reading", &self.log_path))? {
            let Some(cut) = torn_tail(&self.log, &self.log_path, len, &head).map_err(chain)? else {
                // Not reached: `torn_tail` names the problem when the tail cannot be set aside.
                return Err(AuditError::Broken);
            };
            (head, len) = files.set_aside(&head, cut, len).map_err(|f| {
                state.broken |= f.broken;
                f.error
            })?;
            state.written = head.seq;
        }
        let (new_head, _) = files.append_locked(&head, len, record).map_err(|f| {
            state.broken |= f.broken;
            f.error
        })?;
        state.written = new_head.seq;
        Ok(Appended {
            seq: new_head.seq,
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

/// An append that failed: why, and whether the files could not be put back as they were (the
/// chain may now be damaged, so nothing more may be appended through this handle).
struct Failure {
    error: AuditError,
    broken: bool,
}

impl Failure {
    fn clean(error: AuditError) -> Failure {
        Failure {
            error,
            broken: false,
        }
    }
}

/// The files of one log, for the steps of an append. The caller holds the exclusive lock.
struct Files<'a> {
    dir: &'a Path,
    log: &'a File,
    log_path: &'a Path,
    head: &'a File,
    head_path: &'a Path,
    key: Option<&'a AuditKey>,
}

impl Files<'_> {
    /// Appends `record` after `head` to a log that is `len` bytes long and ends with a newline,
    /// then rewrites the head. Returns the new head and length. Nothing is synced.
    ///
    /// The line goes out in one `write`, so a full disk usually leaves nothing or a prefix of
    /// it; on any failure the log is cut back to `len` and the old head restored, so the chain
    /// is as before and a later append can succeed.
    fn append_locked(
        &self,
        head: &Head,
        len: u64,
        record: &Record,
    ) -> Result<(Head, u64), Failure> {
        let seq = head
            .seq
            .checked_add(1)
            .ok_or(Failure::clean(AuditError::Broken))?;
        let encoded =
            encode(seq, &head.hash, record).map_err(|e| Failure::clean(AuditError::Encode(e)))?;
        if encoded.line.len() > MAX_LINE_BYTES + 1 {
            return Err(Failure::clean(AuditError::TooLarge {
                len: encoded.line.len() - 1,
            }));
        }
        let new_head = Head::new(seq, encoded.hash, self.key);
        let new_head_bytes = new_head
            .encode()
            .map_err(|e| Failure::clean(AuditError::Encode(e)))?;
        let old_head_bytes = head
            .encode()
            .map_err(|e| Failure::clean(AuditError::Encode(e)))?;
        if let Err(source) = write_once(self.log, &encoded.line) {
            let broken = self.log.set_len(len).is_err();
            return Err(Failure {
                error: io_err("writing", self.log_path)(source),
                broken,
            });
        }
        if let Err(source) = self.head.write_all_at(&new_head_bytes, 0) {
            // The head may be half rewritten: put back the old one, then drop the line.
            let broken = self.head.write_all_at(&old_head_bytes, 0).is_err()
                || self.log.set_len(len).is_err();
            return Err(Failure {
                error: io_err("writing", self.head_path)(source),
                broken,
            });
        }
        Ok((new_head, len + encoded.line.len() as u64))
    }

    /// Moves the torn tail `cut..len` of the log to [`TORN_FILE`], cuts the log at `cut`, and
    /// appends the [`Event::Recovery`] record. `head` names the record just before `cut`.
    fn set_aside(&self, head: &Head, cut: u64, len: u64) -> Result<(Head, u64), Failure> {
        let torn_path = self.dir.join(TORN_FILE);
        let n = len - cut;
        let seq = head.seq.saturating_add(1);
        let record = Record::new(Event::Recovery, format!("audit-recovery-{seq}"))
            .with_capability("audit")
            .with_target(LOG_FILE)
            .with_outcome(Outcome::Error)
            .with_message(format!(
                "a torn tail of {n} bytes (an incomplete record {seq}, left by a crash or a \
                 full disk) was set aside at seq {seq} in {TORN_FILE}"
            ));
        let mut bytes = vec![0u8; usize::try_from(n).unwrap_or(usize::MAX)];
        self.log
            .read_exact_at(&mut bytes, cut)
            .map_err(|e| Failure::clean(io_err("reading", self.log_path)(e)))?;
        let note = serde_json::json!({
            "time": record.time(),
            "after_seq": head.seq,
            "after_hash": head.hash,
            "offset": cut,
            "bytes": n,
            "hex": hex::encode(&bytes),
        });
        let mut line =
            serde_json::to_vec(&note).map_err(|e| Failure::clean(AuditError::Encode(e)))?;
        line.push(b'\n');
        // The bytes are kept (and synced) before they are cut from the log: a crash in between
        // only sets them aside twice.
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(&torn_path)
            .and_then(|mut f| {
                f.write_all(&line)?;
                f.sync_all()
            })
            .and_then(|()| File::open(self.dir)?.sync_all())
            .map_err(|e| Failure::clean(io_err("writing", &torn_path)(e)))?;
        self.log
            .set_len(cut)
            .map_err(|e| Failure::clean(io_err("truncating", self.log_path)(e)))?;
        tracing::warn!(
            target: "warden::audit",
            dir = %self.dir.display(),
            bytes = n,
            seq,
            "a torn tail of the audit log was set aside in {TORN_FILE}"
        );
        self.append_locked(head, cut, &record)
    }
}

/// Writes `line` with one `write` (retried only if nothing was written), so that concurrent
/// readers and a full disk see all of it or a prefix, never interleaved pieces. A short write is
/// an error: the caller rolls it back.
fn write_once(mut file: &File, line: &[u8]) -> io::Result<()> {
    #[cfg(test)]
    if let Some(n) = tests::SHORT_WRITE.take() {
        // What a full disk does: part of the line is written, then the write fails.
        file.write_all(&line[..n.min(line.len())])?;
        return Err(io::Error::from_raw_os_error(28));
    }
    loop {
        match file.write(line) {
            Ok(n) if n == line.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {} bytes", line.len()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// True if the log is empty or its last byte is a newline.
fn ends_with_newline(log: &File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    log.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

/// Decides whether the log ends in a torn tail that may be set aside, and if so returns the
/// length to cut the log back to. Exactly this is a torn tail:
///
/// - the log does not end with a newline, and the bytes after its last newline are fewer than
///   a line may hold;
/// - those bytes, ignoring trailing NUL bytes (a crash can leave a file extended but not yet
///   written), are the start of the line warden would write next: `{"seq":S+1,"prev":"H",…`
///   for the head's S and H (or only a prefix of that);
/// - every complete line before them verifies, and the head names the last of them.
///
/// Returns `Ok(None)` if the log ends with a newline (there is no torn tail), and the first
/// problem, as [`walk`] names it for the whole file, if the tail is anything else: an edited,
/// removed or garbled line must still be refused, not cut away.
fn torn_tail(
    log: &File,
    log_path: &Path,
    len: u64,
    head: &Head,
) -> Result<Option<u64>, ChainError> {
    let io = |source| ChainError::Io {
        path: log_path.to_owned(),
        source,
    };
    if ends_with_newline(log, len).map_err(io)? {
        return Ok(None);
    }
    let refuse = || -> Result<Option<u64>, ChainError> {
        walk(File::open(log_path).map_err(io)?, len, head, log_path)?;
        // Not reached: a log without a final newline never walks cleanly.
        Err(ChainError::Torn { line: head.seq + 1 })
    };
    let start = len.saturating_sub(MAX_LINE_BYTES as u64 + 1);
    let mut buf = vec![
        0u8;
        usize::try_from(len - start)
            .map_err(|_| ChainError::Torn { line: head.seq + 1 })?
    ];
    log.read_exact_at(&mut buf, start).map_err(io)?;
    let cut_in_buf = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if start == 0 => 0,
        // More bytes without a newline than any line warden writes.
        None => return refuse(),
    };
    let partial = &buf[cut_in_buf..];
    let Some(seq) = head.seq.checked_add(1) else {
        return refuse();
    };
    let expected = format!("{{\"seq\":{seq},\"prev\":\"{}\",\"record\":{{", head.hash);
    let text = match partial.iter().rposition(|&b| b != 0) {
        Some(i) => &partial[..=i],
        None => &partial[..0],
    };
    let n = text.len().min(expected.len());
    if text[..n] != expected.as_bytes()[..n] {
        return refuse();
    }
    let cut = start + cut_in_buf as u64;
    match walk(File::open(log_path).map_err(io)?, cut, head, log_path) {
        Ok(_) => Ok(Some(cut)),
        Err(_) => refuse(),
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::read::verify;

    thread_local! {
        /// Makes the next line written on this thread stop after this many bytes and fail.
        pub(super) static SHORT_WRITE: Cell<Option<usize>> = const { Cell::new(None) };
    }

    fn rec(i: u64) -> Record {
        Record::new(Event::Call, format!("req-{i}")).with_message(format!("message {i}"))
    }

    #[test]
    fn a_failed_write_is_rolled_back_and_the_log_stays_usable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = AuditLog::open(&dir).unwrap();
        log.append(rec(1)).unwrap();
        let log_before = fs::read(dir.join(LOG_FILE)).unwrap();
        let head_before = fs::read(dir.join(HEAD_FILE)).unwrap();
        // Nothing written, one byte, part of the line, all of it but the newline.
        for cut in [0, 1, 40, usize::MAX] {
            SHORT_WRITE.set(Some(cut));
            let err = log.append(rec(2)).unwrap_err();
            let AuditError::Io { source, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(source.raw_os_error(), Some(28), "{err:?}");
            // The partial line was cut off again and the head not touched.
            assert_eq!(fs::read(dir.join(LOG_FILE)).unwrap(), log_before, "{cut}");
            assert_eq!(fs::read(dir.join(HEAD_FILE)).unwrap(), head_before);
        }
        // The log is not marked broken: the next append (space freed) continues the chain.
        let a = log.append(rec(2)).unwrap();
        assert_eq!(a.seq, 2);
        let report = verify(&dir).unwrap();
        assert_eq!((report.records, report.last_hash), (2, a.hash));
        assert!(
            !dir.join(TORN_FILE).exists(),
            "nothing needed setting aside"
        );
    }
}
