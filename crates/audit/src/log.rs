//! [`AuditLog`]: the file-backed, append-only, hash-chained store.
//!
//! `DATA/audit/audit.jsonl` holds one canonical JSON record per line, each with the SHA-256 of the
//! one before (`chain.rs`); `audit.head` (fixed 256 bytes, rewritten in place) names the last
//! record's seq and hash, so removals from the end show, and its `flock` serializes appends between
//! processes. `warden audit --verify` walks the whole chain; `AuditLog::open` checks only the end.
//!
//! - Append (group commit, `commit.rs`): each open log has one writer thread. A caller queues its
//!   record and waits; the writer takes every record queued since its last round and, under one
//!   exclusive `flock` of the head, reads the head from the file (another process may have
//!   appended) and checks its MAC, chains the records after it, writes all their lines in **one
//!   `write`**, rewrites the head once, unlocks, and `fdatasync`s the log and the head once. Only
//!   then is each caller answered with its own seq and hash (or its own error), so `append`
//!   still returns only once its record is durable, and N concurrent appends cost one sync, not
//!   N. A record that cannot be encoded fails alone and takes no seq; the others are chained
//!   without it.
//! - A failed or short write (a full disk) is rolled back: the log is cut to its old length and
//!   the old head restored, so the chain stays intact, every caller of that round gets the error,
//!   and a later append can succeed. Only if the rollback or a sync fails is the handle marked
//!   broken (every caller of that round gets the error, every later append fails until a
//!   restart).
//! - Uncommitted tail: a crash (or a failed rollback) during a round can leave, after the record
//!   the head names, what the round's one write had put there before the head was rewritten:
//!   complete lines chained from the head's record, and maybe a last line without a newline that
//!   is a prefix of the record that would follow them (`{"seq":S+1,"prev":"H",…`, trailing NULs
//!   allowed). None of it was acknowledged (that comes after the head and the sync). When the
//!   log, walked from the start, verifies up to the record the head names (seq and hash, head
//!   MAC checked), and what follows is such a tail and no more than one round writes
//!   ([`MAX_ROUND_RECORDS`] lines, [`MAX_ROUND_WRITE`] bytes, plus the partial line), `open` (and
//!   a round that finds one left by another process) appends those bytes, hex-encoded, to
//!   `audit.torn`, cuts the log back to the head's record, and appends a `recovery` record ("a
//!   torn tail of N bytes …" for a partial line alone, "an uncommitted tail of N bytes (K
//!   complete lines … after seq S …" otherwise, "… was set aside at seq S+1"), so the repair is
//!   in the chain and `--verify` passes. The lines are not adopted into the chain: only the head
//!   (with its MAC) says where the log ends, and they carry nothing a writer without the key
//!   could not forge. Anything else (an edited or garbled line, a missing line, a head that does
//!   not match, a tail that does not chain or is longer than a round) is refused as before,
//!   naming the first problem.
//! - Fail closed: when the host cannot store a record (`Inner::write`), it sets a flag; every new
//!   call (rpc, http, and calls between extensions) is then refused with
//!   `CallError::Host("the audit log cannot be written: …")` before it runs. Each refusal tries to
//!   store its own record; once one is stored the flag clears and later calls run again. The call
//!   during which the store failed has already run and keeps its result.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::chain::{ChainError, Encoded, MAX_LINE_BYTES, check_line, encode};
use crate::commit::{MAX_ROUND_BYTES, MAX_ROUND_RECORDS, MAX_ROUND_WRITE, Writer};
use crate::files::FileLock;
use crate::head::{HEAD_LEN, Head};
use crate::key::{AUDIT_KEY_FILE, AuditKey};
use crate::read::{after_head, walk};
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
/// - Appends from all threads go through one writer thread per handle, which commits them in
///   rounds (group commit); between processes (and handles) they are serialized by an
///   exclusive `flock` on `audit.head`, whose contents (not this handle's memory) say where the
///   chain continues; several processes may append to the same log.
/// - [`AuditLog::append`] returns once the record and the head are on disk (`fdatasync`);
///   every append waiting when a round starts shares that round's one write and one sync, so
///   throughput grows with the number of concurrent callers ([`AuditLog::sync_rounds`]).
/// - A round's lines go out with one `write`. A failed or short write (a full disk) is rolled
///   back: the log is cut back to its previous length (and the old head rewritten) before the
///   error is returned to every caller of the round, so the chain stays intact and a later
///   append may succeed. Only when that rollback fails too, or a sync fails (the kernel may
///   have dropped written pages), is the log marked broken: every later append fails with
///   [`AuditError::Broken`] instead of extending a damaged chain. A caller that cannot audit an
///   action should refuse the action.
/// - Dropping the handle stops its writer thread, after it has committed what is queued.
///
/// Crash safety: the lines are written before the head and both are synced before any append
/// of the round returns. A crash (or a failed rollback) after some or all of a round's lines
/// were written but before the head was rewritten leaves an *uncommitted tail* after the record
/// the head names: complete lines, a partial last line (a *torn tail*), or both. That is the
/// one damage that is repaired, by `open` or by the next round: see [`AuditLog::open`]. Until
/// then `verify` reports it like tampering.
pub struct AuditLog {
    writer: Arc<Writer>,
    /// The writer thread; joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.writer.files().dir)
            .field("sync_rounds", &self.sync_rounds())
            .finish_non_exhaustive()
    }
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
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
    /// Opens the log in `dir`, creating `dir` (mode 0700) and the files (mode 0600) if missing,
    /// and starts its writer thread.
    ///
    /// An existing log is checked at its end only: the head file must name the last line, and
    /// the last line must be intact. If not, the whole log is walked to report the first
    /// problem precisely, and the log is not opened: appending to a damaged chain would bury
    /// the damage.
    ///
    /// One damage is repaired, because it is what a crash or a full disk leaves, not an edit:
    /// an uncommitted tail, the lines of an append whose head was never written. That is: the
    /// log verifies from its start up to the record the head names, and after that record come
    /// no more lines than one round of the group commit writes, complete ones that verify and
    /// chain from it, then perhaps a last line without a newline whose bytes are the start of
    /// the record that would follow them. Those bytes are appended to [`TORN_FILE`], the log is
    /// cut back to the head's record, and an [`Event::Recovery`] record saying how many bytes
    /// (and complete lines) were set aside after which sequence number is appended, so the
    /// repair is itself in the chain and `verify` passes. The lines set aside are not adopted:
    /// nobody was told they were stored, and only the head says where the log ends.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with_key(dir, None)
    }

    /// [`AuditLog::open`] with the head kept under a MAC ([`AuditKey`]). An existing head must
    /// carry the key's MAC, unless `created` says the key was created just now (the head of an
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
        let files = Files {
            dir: dir.to_owned(),
            log,
            log_path,
            head,
            head_path,
            key,
            known_end: Mutex::new(None),
            #[cfg(test)]
            faults: std::sync::Mutex::default(),
        };
        let adopted = files.check_at_open(adopt)?;
        let (writer, thread) = Writer::start(files, adopted)?;
        Ok(AuditLog {
            writer,
            thread: Some(thread),
        })
    }

    /// The audit folder.
    pub fn dir(&self) -> &Path {
        &self.writer.files().dir
    }

    /// Appends one record and returns once it is on disk. Also emits a `tracing` event (target
    /// `warden::audit`, level INFO) with the record's main fields.
    ///
    /// The record is handed to this log's writer thread, which commits it together with every
    /// other record queued meanwhile (one write, one sync); the answer is this record's own.
    pub fn append(&self, record: Record) -> Result<Appended, AuditError> {
        let reply = self.writer.submit(record)?;
        let appended = reply.result?;
        emit(&reply.record, Some(appended.seq));
        Ok(appended)
    }

    /// How many times this handle has synced the log and the head: once per round that wrote
    /// something. Below the number of records appended by as much as appends overlap.
    pub fn sync_rounds(&self) -> u64 {
        self.writer.sync_rounds()
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.writer.close();
        if let Some(thread) = self.thread.take() {
            // The writer commits what is queued and ends; a panic there has answered its
            // callers with errors already (their replies were dropped).
            let _ = thread.join();
        }
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

/// What one round did: an answer for each of the first records it was given (fewer than all
/// when the round's bytes reached [`MAX_ROUND_BYTES`]: the rest wait for the next round), and
/// whether it wrote anything that must be synced.
pub(crate) struct Round {
    pub(crate) results: Vec<Result<Appended, AuditError>>,
    pub(crate) dirty: bool,
}

/// The files of one log and its key. Every method but [`Files::lock`] and [`Files::sync`]
/// expects the caller to hold the exclusive lock.
pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    log: File,
    log_path: PathBuf,
    head: File,
    head_path: PathBuf,
    key: Option<AuditKey>,
    /// The log's length and its last record's hash as this handle's last round left them: a
    /// round that finds the same length and head needs not read the end of the log again.
    /// `None` before the first round and after a round that failed.
    known_end: Mutex<Option<(u64, String)>>,
    /// Failures to inject, for the tests of what each caller is told.
    #[cfg(test)]
    pub(crate) faults: std::sync::Mutex<tests::Faults>,
}

impl Files {
    /// Takes the exclusive lock on the head file (waits for other processes and handles).
    pub(crate) fn lock(&self) -> Result<FileLock<'_>, AuditError> {
        FileLock::exclusive(&self.head).map_err(io_err("locking", &self.head_path))
    }

    fn chain(&self, source: ChainError) -> AuditError {
        AuditError::Chain {
            dir: self.dir.clone(),
            source,
        }
    }

    fn log_len(&self) -> Result<u64, AuditError> {
        Ok(self
            .log
            .metadata()
            .map_err(io_err("reading", &self.log_path))?
            .len())
    }

    /// Checks (or creates) the log at open, under the lock, and sets aside an uncommitted tail
    /// ([`uncommitted_tail`]). Returns the unkeyed head adopted by a key created just now, if
    /// any.
    fn check_at_open(&self, adopt: bool) -> Result<Option<(u64, String)>, AuditError> {
        let _lock = self.lock()?;
        let head_len = self
            .head
            .metadata()
            .map_err(io_err("reading", &self.head_path))?
            .len();
        let log_len = self.log_len()?;
        if head_len == 0 && log_len == 0 {
            // A new log.
            let bytes = Head::genesis(self.key.as_ref())
                .encode()
                .map_err(AuditError::Encode)?;
            self.head
                .write_all_at(&bytes, 0)
                .and_then(|()| self.head.sync_all())
                .map_err(io_err("writing", &self.head_path))?;
            self.log
                .sync_all()
                .map_err(io_err("writing", &self.log_path))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing", &self.dir))?;
            tracing::info!(target: "warden::audit", dir = %self.dir.display(), "audit log created");
            return Ok(None);
        }
        let h = Head::read(&self.head, &self.head_path).map_err(|e| self.chain(e))?;
        h.check_mac(self.key.as_ref(), &self.head_path, adopt)
            .map_err(|e| self.chain(e))?;
        let adopted = (self.key.is_some() && h.mac.is_none()).then(|| (h.seq, h.hash.clone()));
        // Intact if the last line is the head's record; else walked from the start, which sets
        // aside an uncommitted tail or names the first problem.
        if !tail_matches(&self.log, log_len, &h)
            && let Some(tail) =
                uncommitted_tail(&self.log_path, log_len, &h).map_err(|e| self.chain(e))?
        {
            self.set_aside(&h, &tail, log_len)
                .map_err(|failure| failure.error)?;
            // The recovery record must be on disk before anything is appended after it.
            self.sync()?;
        }
        Ok(adopted)
    }

    /// One round of the group commit, under the lock: reads and checks the head, checks that the
    /// log ends with the head's record or sets aside an uncommitted tail, chains `records` after
    /// the head, writes their lines with one `write` and the head once. Nothing is synced. `adopted` accepts a head without a MAC.
    ///
    /// A record that cannot be encoded (or is over the line cap) fails alone and takes no seq.
    /// A failure of the head, the tail or the write fails every record: [`AuditError`]s
    /// cannot be cloned, so each caller gets a [`AuditError::duplicate`]. `broken` is set when
    /// the files could not be put back as they were.
    pub(crate) fn append_round<'r>(
        &self,
        records: impl ExactSizeIterator<Item = &'r Record>,
        adopted: impl FnOnce(&Head) -> bool,
        broken: &mut bool,
    ) -> Round {
        let n = records.len();
        let all = |error: AuditError, dirty: bool| Round {
            results: (0..n).map(|_| Err(error.duplicate())).collect(),
            dirty,
        };
        // Under the lock, from the file: another process may have written it. A head without
        // a MAC is accepted only while it is the one this handle adopted at open.
        let mut head = match Head::read(&self.head, &self.head_path)
            .and_then(|h| {
                let adopt = adopted(&h);
                h.check_mac(self.key.as_ref(), &self.head_path, adopt)
                    .map(|()| h)
            })
            .map_err(|e| self.chain(e))
        {
            Ok(head) => head,
            Err(e) => return all(e, false),
        };
        let mut len = match self.log_len() {
            Ok(len) => len,
            Err(e) => return all(e, false),
        };
        // Lines after the head's record (complete or not) are left by a crash or a rollback
        // that failed, here or in another process. Appending after them would bury them in the
        // chain, so they are set aside first, on the same strict conditions as at `open`, or
        // the round fails. The end is read only when the log is not as this handle left it.
        let known = self
            .known_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut dirty = false;
        if known.is_none_or(|(l, h)| l != len || h != head.hash)
            && !tail_matches(&self.log, len, &head)
        {
            match uncommitted_tail(&self.log_path, len, &head) {
                Ok(None) => {}
                Ok(Some(tail)) => match self.set_aside(&head, &tail, len) {
                    Ok(after) => {
                        (head, len) = after;
                        dirty = true;
                    }
                    Err(f) => {
                        *broken |= f.broken;
                        return all(f.error, false);
                    }
                },
                Err(e) => return all(self.chain(e), false),
            }
        }

        let mut lines = Vec::new();
        let mut results = Vec::with_capacity(n);
        let (mut seq, mut prev) = (head.seq, head.hash.clone());
        for record in records {
            if lines.len() >= MAX_ROUND_BYTES {
                break;
            }
            let Some(next) = seq.checked_add(1) else {
                results.push(Err(AuditError::Broken));
                continue;
            };
            match self.encode(next, &prev, record) {
                Ok(Encoded { line, hash }) => {
                    lines.extend_from_slice(&line);
                    results.push(Ok(Appended {
                        seq: next,
                        hash: hash.clone(),
                    }));
                    (seq, prev) = (next, hash);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if lines.is_empty() {
            self.remember_end(len, &head.hash);
            return Round { results, dirty };
        }
        let new_head = Head::new(seq, prev, self.key.as_ref());
        match self.commit(&head, len, &lines, &new_head) {
            Ok(len) => self.remember_end(len, &new_head.hash),
            Err(f) => {
                *broken |= f.broken;
                for result in &mut results {
                    if result.is_ok() {
                        *result = Err(f.error.duplicate());
                    }
                }
                return Round { results, dirty };
            }
        }
        Round {
            results,
            dirty: true,
        }
    }

    /// Notes that the log is `len` bytes long and ends with the record `hash` (see
    /// `known_end`).
    fn remember_end(&self, len: u64, hash: &str) {
        *self
            .known_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((len, hash.to_owned()));
    }

    /// The line of `record` as number `seq` after `prev`.
    fn encode(&self, seq: u64, prev: &str, record: &Record) -> Result<Encoded, AuditError> {
        #[cfg(test)]
        if self.fault(|f| f.too_large.as_deref() == Some(record.request_id())) {
            return Err(AuditError::TooLarge {
                len: MAX_LINE_BYTES + 1,
            });
        }
        let encoded = encode(seq, prev, record).map_err(AuditError::Encode)?;
        if encoded.line.len() > MAX_LINE_BYTES + 1 {
            return Err(AuditError::TooLarge {
                len: encoded.line.len() - 1,
            });
        }
        Ok(encoded)
    }

    /// Appends `lines` (complete, each ending with a newline, chaining from `old`) to a log
    /// that is `len` bytes long and ends with a newline, then rewrites the head as `new`.
    /// Returns the new length. Nothing is synced.
    ///
    /// The lines go out in one `write`, so a full disk usually leaves nothing or a prefix of
    /// them; on any failure the log is cut back to `len` and the old head restored, so the
    /// chain is as before and a later append can succeed.
    fn commit(&self, old: &Head, len: u64, lines: &[u8], new: &Head) -> Result<u64, Failure> {
        let new_head_bytes = new
            .encode()
            .map_err(|e| Failure::clean(AuditError::Encode(e)))?;
        let old_head_bytes = old
            .encode()
            .map_err(|e| Failure::clean(AuditError::Encode(e)))?;
        if let Err(source) = self.write_lines(lines) {
            let broken = self.log.set_len(len).is_err();
            return Err(Failure {
                error: io_err("writing", &self.log_path)(source),
                broken,
            });
        }
        if let Err(source) = self.head.write_all_at(&new_head_bytes, 0) {
            // The head may be half rewritten: put back the old one, then drop the lines.
            let broken = self.head.write_all_at(&old_head_bytes, 0).is_err()
                || self.log.set_len(len).is_err();
            return Err(Failure {
                error: io_err("writing", &self.head_path)(source),
                broken,
            });
        }
        Ok(len + lines.len() as u64)
    }

    /// Moves the uncommitted tail `tail.cut..len` of the log to [`TORN_FILE`], cuts the log at
    /// `tail.cut`, and appends the [`Event::Recovery`] record. `head` names the record just
    /// before the cut. Returns the new head and length.
    fn set_aside(&self, head: &Head, tail: &Tail, len: u64) -> Result<(Head, u64), Failure> {
        let torn_path = self.dir.join(TORN_FILE);
        let cut = tail.cut;
        let n = len - cut;
        let seq = head
            .seq
            .checked_add(1)
            .ok_or(Failure::clean(AuditError::Broken))?;
        let what = match tail.lines {
            // A partial line alone: the message it has always had.
            0 => format!(
                "a torn tail of {n} bytes (an incomplete record {seq}, left by a crash or a full \
                 disk)"
            ),
            lines => format!(
                "an uncommitted tail of {n} bytes ({lines} complete line{s}{partial} after seq \
                 {after}, written by an append that a crash or a failed rollback stopped before \
                 the head named them, so never acknowledged)",
                s = if lines == 1 { "" } else { "s" },
                partial = if tail.partial {
                    " and an incomplete one"
                } else {
                    ""
                },
                after = head.seq,
            ),
        };
        let record = Record::new(Event::Recovery, format!("audit-recovery-{seq}"))
            .with_capability("audit")
            .with_target(LOG_FILE)
            .with_outcome(Outcome::Error)
            .with_message(format!("{what} was set aside at seq {seq} in {TORN_FILE}"));
        let encoded = self
            .encode(seq, &head.hash, &record)
            .map_err(Failure::clean)?;
        let mut bytes = vec![0u8; usize::try_from(n).unwrap_or(usize::MAX)];
        self.log
            .read_exact_at(&mut bytes, cut)
            .map_err(|e| Failure::clean(io_err("reading", &self.log_path)(e)))?;
        let note = serde_json::json!({
            "time": record.time(),
            "after_seq": head.seq,
            "after_hash": head.hash,
            "offset": cut,
            "bytes": n,
            "lines": tail.lines,
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
            .and_then(|()| File::open(&self.dir)?.sync_all())
            .map_err(|e| Failure::clean(io_err("writing", &torn_path)(e)))?;
        self.log
            .set_len(cut)
            .map_err(|e| Failure::clean(io_err("truncating", &self.log_path)(e)))?;
        tracing::warn!(
            target: "warden::audit",
            dir = %self.dir.display(),
            bytes = n,
            lines = tail.lines,
            seq,
            "an uncommitted tail of the audit log was set aside in {TORN_FILE}"
        );
        let new_head = Head::new(seq, encoded.hash, self.key.as_ref());
        let len = self.commit(head, cut, &encoded.line, &new_head)?;
        Ok((new_head, len))
    }

    /// `fdatasync`s the log, then the head. Needs no lock: it makes durable whatever is in the
    /// files, including what another process appended since.
    pub(crate) fn sync(&self) -> Result<(), AuditError> {
        #[cfg(test)]
        if self.fault(|f| std::mem::take(&mut f.fail_sync)) {
            return Err(io_err("syncing", &self.log_path)(
                io::Error::from_raw_os_error(5), // EIO
            ));
        }
        self.log
            .sync_data()
            .map_err(io_err("syncing", &self.log_path))?;
        self.head
            .sync_data()
            .map_err(io_err("syncing", &self.head_path))
    }

    /// Writes `lines` with one `write` (see [`write_once`]).
    fn write_lines(&self, lines: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fault(|f| f.short_write.take()) {
            // What a full disk does: part of the lines is written, then the write fails.
            (&self.log).write_all(&lines[..n.min(lines.len())])?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        write_once(&self.log, lines)
    }

    #[cfg(test)]
    fn fault<T>(&self, f: impl FnOnce(&mut tests::Faults) -> T) -> T {
        f(&mut self
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Writes `lines` with one `write` (retried only if nothing was written), so that concurrent
/// readers and a full disk see all of them or a prefix, never interleaved pieces. A short write
/// is an error: the caller rolls it back.
fn write_once(mut file: &File, lines: &[u8]) -> io::Result<()> {
    loop {
        match file.write(lines) {
            Ok(n) if n == lines.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {} bytes", lines.len()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// An uncommitted tail to set aside: the log from `cut` on.
struct Tail {
    /// Where the record the head names ends.
    cut: u64,
    /// Complete lines after it.
    lines: u64,
    /// Whether a partial line follows them.
    partial: bool,
}

/// Decides whether the log ends in an uncommitted tail that may be set aside, and if so where
/// to cut it. Exactly this is an uncommitted tail (what a crash during a round leaves: some or
/// all of its lines written, the head not yet rewritten, nobody answered):
///
/// - the log, walked and checked from the start, reaches the record the head names (same seq
///   and hash; the caller has checked the head's MAC), every line up to it verifying;
/// - after that record come complete lines, each a valid record chained from the one before
///   (the first from the head's record), no more than one round writes: [`MAX_ROUND_RECORDS`]
///   lines of [`MAX_ROUND_WRITE`] bytes in all;
/// - then perhaps a partial line (no newline), of fewer bytes than a line may hold, that is,
///   ignoring trailing NUL bytes (a crash can leave a file extended but not yet written), the
///   start of the line that would follow the last complete one: `{"seq":S+1,"prev":"H",…` (or
///   only a prefix of that);
/// - and there is something: at least one complete or partial line.
///
/// Returns `Ok(None)` if nothing follows the head's record and the log verifies (it is
/// intact), and the first problem, as [`walk`] names it for the whole file, if the end is
/// anything else: an edited, removed or garbled line, a head naming a record that is not in
/// the log, or after it lines that do not chain or more than one round's worth of them, must
/// still be refused, not cut away.
fn uncommitted_tail(log_path: &Path, len: u64, head: &Head) -> Result<Option<Tail>, ChainError> {
    let open = || {
        File::open(log_path).map_err(|source| ChainError::Io {
            path: log_path.to_owned(),
            source,
        })
    };
    // Names the first problem; `Ok(None)` only if the whole log verifies after all.
    let refuse = || -> Result<Option<Tail>, ChainError> {
        walk(open()?, len, head, log_path)?;
        Ok(None)
    };
    let found = match after_head(
        open()?,
        len,
        head,
        log_path,
        MAX_ROUND_RECORDS as u64,
        MAX_ROUND_WRITE as u64,
    ) {
        Ok(Some(found)) => found,
        Ok(None) | Err(_) => return refuse(),
    };
    if found.lines == 0 && found.partial.is_empty() {
        return refuse();
    }
    if !found.partial.is_empty() {
        let Some(seq) = found.last_seq.checked_add(1) else {
            return refuse();
        };
        let expected = format!(
            "{{\"seq\":{seq},\"prev\":\"{}\",\"record\":{{",
            found.last_hash
        );
        let text = match found.partial.iter().rposition(|&b| b != 0) {
            Some(i) => &found.partial[..=i],
            None => &found.partial[..0],
        };
        let n = text.len().min(expected.len());
        if text[..n] != expected.as_bytes()[..n] {
            return refuse();
        }
    }
    Ok(Some(Tail {
        cut: found.cut,
        lines: found.lines,
        partial: !found.partial.is_empty(),
    }))
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::read::verify;

    /// Failures the next round meets, set by a test.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// The next write of lines stops after this many bytes and fails (ENOSPC).
        pub short_write: Option<usize>,
        /// The next sync fails (EIO).
        pub fail_sync: bool,
        /// Records with this request id fail to encode, as over the line cap.
        pub too_large: Option<String>,
    }

    fn rec(i: u64) -> Record {
        Record::new(Event::Call, format!("req-{i}")).with_message(format!("message {i}"))
    }

    fn faults(log: &AuditLog) -> std::sync::MutexGuard<'_, Faults> {
        log.writer.files().faults.lock().unwrap()
    }

    /// Runs `appends` (one thread each) as one round: the head's lock is held (as another
    /// process would) until all of them are queued, so the writer takes them together.
    fn one_round(
        log: &Arc<AuditLog>,
        records: Vec<Record>,
    ) -> Vec<(Record, Result<Appended, AuditError>)> {
        let rounds = log.sync_rounds();
        let results = one_round_unchecked(log, records);
        assert!(
            log.sync_rounds() <= rounds + 1,
            "one round, at most one sync"
        );
        results
    }

    /// [`one_round`], where the writer may split the records over several rounds.
    fn one_round_unchecked(
        log: &Arc<AuditLog>,
        records: Vec<Record>,
    ) -> Vec<(Record, Result<Appended, AuditError>)> {
        let n = records.len();
        let dir = log.dir().to_owned();
        let other = File::open(dir.join(HEAD_FILE)).unwrap();
        other.lock().unwrap();
        let threads: Vec<_> = records
            .into_iter()
            .map(|r| {
                let log = Arc::clone(log);
                thread::spawn(move || {
                    let result = log.append(r.clone());
                    (r, result)
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.writer.queued() < n {
            assert!(Instant::now() < deadline, "the appends were not queued");
            thread::sleep(Duration::from_millis(1));
        }
        other.unlock().unwrap();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// The stored line of record `seq`.
    fn line(dir: &Path, seq: u64) -> serde_json::Value {
        let text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
        serde_json::from_str(text.lines().nth(seq as usize - 1).unwrap()).unwrap()
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
            faults(&log).short_write = Some(cut);
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

    #[test]
    fn one_round_shares_one_sync_and_answers_each_caller_with_its_own_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = Arc::new(AuditLog::open(&dir).unwrap());
        log.append(rec(0)).unwrap();
        let rounds = log.sync_rounds();
        let results = one_round(&log, (1..=20).map(rec).collect());
        assert_eq!(log.sync_rounds(), rounds + 1);
        let mut seqs = BTreeSet::new();
        for (record, result) in results {
            let a = result.unwrap();
            seqs.insert(a.seq);
            // The seq and hash a caller got are those of the line holding its own record.
            let stored = line(&dir, a.seq);
            assert_eq!(stored["hash"], a.hash.as_str());
            assert_eq!(stored["record"]["request_id"], record.request_id());
        }
        assert_eq!(seqs, (2..=21).collect());
        assert_eq!(verify(&dir).unwrap().records, 21);
    }

    #[test]
    fn a_record_that_cannot_be_written_fails_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = Arc::new(AuditLog::open(&dir).unwrap());
        faults(&log).too_large = Some("req-4".to_owned());
        let results = one_round(&log, (1..=8).map(rec).collect());
        let mut seqs = BTreeSet::new();
        for (record, result) in results {
            if record.request_id() == "req-4" {
                assert!(
                    matches!(result, Err(AuditError::TooLarge { .. })),
                    "{result:?}"
                );
                continue;
            }
            let a = result.unwrap();
            assert_eq!(
                line(&dir, a.seq)["record"]["request_id"],
                record.request_id()
            );
            seqs.insert(a.seq);
        }
        // The others are chained without a gap where the failed one would have been.
        assert_eq!(seqs, (1..=7).collect());
        assert_eq!(verify(&dir).unwrap().records, 7);
        faults(&log).too_large = None;
        assert_eq!(log.append(rec(9)).unwrap().seq, 8);
    }

    #[test]
    fn a_failed_write_fails_every_caller_of_its_round_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = Arc::new(AuditLog::open(&dir).unwrap());
        log.append(rec(0)).unwrap();
        let before = fs::read(dir.join(LOG_FILE)).unwrap();
        faults(&log).short_write = Some(700);
        faults(&log).too_large = Some("req-2".to_owned());
        for (record, result) in one_round(&log, (1..=6).map(rec).collect()) {
            let err = result.unwrap_err();
            if record.request_id() == "req-2" {
                // Its own failure, not the write's.
                assert!(matches!(err, AuditError::TooLarge { .. }), "{err:?}");
            } else {
                let AuditError::Io { source, .. } = &err else {
                    panic!("{err:?}")
                };
                assert_eq!(source.raw_os_error(), Some(28), "{err:?}");
            }
        }
        assert_eq!(fs::read(dir.join(LOG_FILE)).unwrap(), before);
        // Rolled back, not broken: the next round continues the chain.
        faults(&log).too_large = None;
        let results = one_round(&log, (7..=9).map(rec).collect());
        let seqs: BTreeSet<u64> = results.into_iter().map(|(_, r)| r.unwrap().seq).collect();
        assert_eq!(seqs, (2..=4).collect());
        assert_eq!(verify(&dir).unwrap().records, 4);
    }

    #[test]
    fn a_failed_sync_fails_every_caller_of_its_round_and_breaks_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = Arc::new(AuditLog::open(&dir).unwrap());
        log.append(rec(0)).unwrap();
        faults(&log).fail_sync = true;
        let results = one_round(&log, (1..=5).map(rec).collect());
        assert_eq!(results.len(), 5);
        for (_, result) in results {
            let err = result.unwrap_err();
            let AuditError::Io { action, source, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!((*action, source.raw_os_error()), ("syncing", Some(5)));
        }
        // Nothing more is appended through this handle.
        assert!(matches!(log.append(rec(6)), Err(AuditError::Broken)));
        assert!(matches!(log.append(rec(7)), Err(AuditError::Broken)));
    }

    #[test]
    fn a_round_over_the_byte_cap_leaves_the_rest_for_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = Arc::new(AuditLog::open(&dir).unwrap());
        // Records of about 6 KiB, all of one length.
        let big = |i: u64| {
            let text = "x".repeat(1000);
            Record::new(Event::Call, format!("req-{i:04}"))
                .with_tenant(&text)
                .with_extension(&text)
                .with_capability(&text)
                .with_target(&text)
                .with_message(&text)
        };
        let n = 400u64;
        let results = one_round_unchecked(&log, (1..=n).map(big).collect());
        let seqs: BTreeSet<u64> = results.into_iter().map(|(_, r)| r.unwrap().seq).collect();
        assert_eq!(seqs, (1..=n).collect());
        // Each round took records until its lines reached the cap; the rest waited.
        let len = fs::read_to_string(dir.join(LOG_FILE))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .len()
            + 1;
        let per_round = MAX_ROUND_BYTES.div_ceil(len) as u64;
        assert!(per_round < n / 2, "{per_round}");
        assert_eq!(log.sync_rounds(), n.div_ceil(per_round));
        assert_eq!(verify(&dir).unwrap().records, n);
    }

    /// The lines of `records`, chained after the last line of the log in `dir`, as a round
    /// would write them.
    fn chained_after(dir: &Path, records: impl Iterator<Item = Record>) -> Vec<Vec<u8>> {
        let text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let mut seq = last["seq"].as_u64().unwrap();
        let mut prev = last["hash"].as_str().unwrap().to_owned();
        records
            .map(|r| {
                seq += 1;
                let e = encode(seq, &prev, &r).unwrap();
                prev = e.hash;
                e.line
            })
            .collect()
    }

    /// A copy of the log of one record in `src`, then `lines` written after it without the
    /// head (a crash), then opened again.
    fn crash_and_open(
        src: &Path,
        lines: &[Vec<u8>],
    ) -> (tempfile::TempDir, Result<AuditLog, AuditError>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        fs::create_dir(&dir).unwrap();
        for file in [LOG_FILE, HEAD_FILE] {
            fs::copy(src.join(file), dir.join(file)).unwrap();
        }
        let tail = lines.concat();
        OpenOptions::new()
            .append(true)
            .open(dir.join(LOG_FILE))
            .unwrap()
            .write_all(&tail)
            .unwrap();
        let opened = AuditLog::open(&dir);
        if opened.is_ok() {
            assert_eq!(verify(&dir).unwrap().records, 2);
            let note = fs::read_to_string(dir.join(TORN_FILE)).unwrap();
            let note: serde_json::Value = serde_json::from_str(note.trim_end()).unwrap();
            assert_eq!(
                (note["bytes"].as_u64(), note["lines"].as_u64()),
                (Some(tail.len() as u64), Some(lines.len() as u64))
            );
        }
        (tmp, opened)
    }

    fn unrecorded(opened: Result<AuditLog, AuditError>) {
        let err = opened.unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Chain {
                    source: ChainError::Unrecorded {
                        line: 2,
                        head_seq: 1
                    },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_tail_of_as_many_bytes_as_a_round_writes_is_set_aside_and_one_line_more_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        AuditLog::open(&dir).unwrap().append(rec(0)).unwrap();
        let big = |i: u64| {
            let text = "x".repeat(1000);
            rec(i)
                .with_tenant(&text)
                .with_extension(&text)
                .with_capability(&text)
                .with_target(&text)
                .with_message(&text)
        };
        let lines = chained_after(&dir, (1..=400).map(big));
        // The most lines that fit, and how many the largest round of such records writes:
        // records until its lines reach MAX_ROUND_BYTES.
        let mut total = 0;
        let fit = lines
            .iter()
            .take_while(|l| {
                total += l.len();
                total <= MAX_ROUND_WRITE
            })
            .count();
        let mut total = 0;
        let round = lines
            .iter()
            .take_while(|l| {
                let before = total;
                total += l.len();
                before < MAX_ROUND_BYTES
            })
            .count();
        assert!(round <= fit && fit < lines.len(), "{round} {fit}");
        assert!(fit < MAX_ROUND_RECORDS);
        let (_tmp, opened) = crash_and_open(&dir, &lines[..fit]);
        opened.unwrap();
        unrecorded(crash_and_open(&dir, &lines[..=fit]).1);
    }

    #[test]
    fn dropping_the_log_ends_its_writer_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = AuditLog::open(&dir).unwrap();
        log.append(rec(1)).unwrap();
        let writer = Arc::downgrade(&log.writer);
        drop(log);
        // The thread held the other reference; it was joined.
        assert!(writer.upgrade().is_none());
        assert_eq!(verify(&dir).unwrap().records, 1);
    }
}
