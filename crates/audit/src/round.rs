//! One round of the group commit on the files: the head read and checked, a torn or
//! uncommitted tail set aside, the lines written, the head rewritten, the sync. [`Files`] is
//! the [`RoundStore`] of a file log: the writer thread (`commit`) runs its rounds; the log
//! (`log`) opens the files and hands them to the writer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::chain::{ChainError, Encoded, MAX_LINE_BYTES, check_line};
use crate::files::FileLock;
use crate::head::{HEAD_LEN, Head};
use crate::key::AuditKey;
use crate::read::{after_head, walk};
use crate::record::{Event, Outcome, Record};
use crate::store::encode_after;
use crate::store::{Appended, Round, RoundStore};

use crate::error::AuditError;
use crate::files::{LOG_FILE, TORN_FILE};

/// Mode of the log and head files when warden creates them.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Most records one round takes; the rest wait for the next round. With
/// [`MAX_ROUND_BYTES`] it bounds the memory of one write and how long the lock is held.
pub(crate) const MAX_ROUND_RECORDS: usize = 4096;
/// A round stops taking records once its lines reach this many bytes (a call's record is
/// about 400 bytes, the longest line 32 KiB).
pub(crate) const MAX_ROUND_BYTES: usize = 1 << 20;
/// Most bytes of lines one round writes: it stops taking records once it holds at least
/// [`MAX_ROUND_BYTES`], so the last one it took (a line of at most [`MAX_LINE_BYTES`] and its
/// newline) may go past that. What a crash can leave after the head's record is bounded by
/// this and [`MAX_ROUND_RECORDS`] (see `uncommitted_tail` below).
pub(crate) const MAX_ROUND_WRITE: usize = MAX_ROUND_BYTES + MAX_LINE_BYTES;

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_owned();
    move |source| AuditError::Io {
        action,
        path,
        source,
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

/// The files of one log and its key. Every method but [`Files::lock`] and [`Files::sync`]
/// expects the caller to hold the exclusive lock.
pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    pub(crate) log: File,
    pub(crate) log_path: PathBuf,
    pub(crate) head: File,
    pub(crate) head_path: PathBuf,
    pub(crate) key: Option<AuditKey>,
    /// The unkeyed head adopted at open (a key created just now), until it is rewritten.
    pub(crate) adopted: Option<(u64, String)>,
    /// Whether [`RoundStore::begin`] holds the exclusive lock for the next round.
    pub(crate) locked: bool,
    /// The log's length and its last record's hash as this handle's last round left them: a
    /// round that finds the same length and head needs not read the end of the log again.
    /// `None` before the first round and after a round that failed.
    pub(crate) known_end: Mutex<Option<(u64, String)>>,
    /// Failures to inject, for the tests of what each caller is told.
    #[cfg(test)]
    pub(crate) faults: std::sync::Arc<Mutex<crate::log::tests::Faults>>,
}

impl Files {
    /// Takes the exclusive lock on the head file (waits, within a bound, for other processes
    /// and handles).
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
    pub(crate) fn check_at_open(&self, adopt: bool) -> Result<Option<(u64, String)>, AuditError> {
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
    fn round_under_lock<'r>(
        &self,
        records: impl ExactSizeIterator<Item = &'r Record>,
        adopted: impl FnOnce(&Head) -> bool,
    ) -> Round {
        let n = records.len();
        let all = |error: AuditError, dirty: bool, broken: bool| Round {
            results: (0..n).map(|_| Err(error.duplicate())).collect(),
            dirty,
            broken,
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
            Err(e) => return all(e, false, false),
        };
        let mut len = match self.log_len() {
            Ok(len) => len,
            Err(e) => return all(e, false, false),
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
                    Err(f) => return all(f.error, false, f.broken),
                },
                Err(e) => return all(self.chain(e), false, false),
            }
        }

        let mut lines = Vec::new();
        let mut results = Vec::with_capacity(n);
        let (mut seq, mut prev) = (head.seq, head.hash.clone());
        for record in records {
            if lines.len() >= MAX_ROUND_BYTES {
                break;
            }
            match self.encode(seq, &prev, record) {
                Ok(Encoded {
                    seq: next,
                    line,
                    hash,
                }) => {
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
            return Round {
                results,
                dirty,
                broken: false,
            };
        }
        let new_head = Head::new(seq, prev, self.key.as_ref());
        match self.commit(&head, len, &lines, &new_head) {
            Ok(len) => self.remember_end(len, &new_head.hash),
            Err(f) => {
                for result in &mut results {
                    if result.is_ok() {
                        *result = Err(f.error.duplicate());
                    }
                }
                return Round {
                    results,
                    dirty,
                    broken: f.broken,
                };
            }
        }
        Round {
            results,
            dirty: true,
            broken: false,
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

    /// The line of `record` after the record (`prev_seq`, `prev`).
    fn encode(&self, prev_seq: u64, prev: &str, record: &Record) -> Result<Encoded, AuditError> {
        #[cfg(test)]
        if self.fault(|f| f.too_large.as_deref() == Some(record.request_id())) {
            return Err(AuditError::TooLarge {
                len: MAX_LINE_BYTES + 1,
            });
        }
        encode_after(prev_seq, prev, record)
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
            #[cfg(test)]
            if self.fault(|f| std::mem::take(&mut f.fail_rollback)) {
                return Err(Failure {
                    error: io_err("writing", &self.log_path)(source),
                    broken: true,
                });
            }
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
            .encode(head.seq, &head.hash, &record)
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
    fn fault<T>(&self, f: impl FnOnce(&mut crate::log::tests::Faults) -> T) -> T {
        f(&mut self
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl RoundStore for Files {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    /// The files opened again, and the end of the log read again by the next round: what a
    /// failed write or sync left after the head is set aside there, under the lock, as after
    /// a crash.
    fn recover(&mut self) -> Result<(), AuditError> {
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_err("opening", &self.log_path))?;
        let head = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.head_path)
            .map_err(io_err("opening", &self.head_path))?;
        self.log = log;
        self.head = head;
        self.locked = false;
        *self
            .known_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    fn begin(&mut self) -> Result<(), AuditError> {
        if !self.locked {
            crate::files::exclusive(&self.head).map_err(io_err("locking", &self.head_path))?;
            self.locked = true;
        }
        Ok(())
    }

    fn append_round(&mut self, batch: &[&Record]) -> Round {
        // One lock from the head read to the head rewrite: the one `begin` took, or one taken
        // now by a caller that did not.
        let lock = if std::mem::take(&mut self.locked) {
            FileLock::held(&self.head)
        } else {
            match self.lock() {
                Ok(lock) => lock,
                Err(e) => {
                    return Round {
                        results: batch.iter().map(|_| Err(e.duplicate())).collect(),
                        dirty: false,
                        broken: false,
                    };
                }
            }
        };
        // A head without a MAC is accepted only while it is the one adopted at open.
        let adopted = |head: &Head| {
            head.mac.is_none()
                && self
                    .adopted
                    .as_ref()
                    .is_some_and(|(seq, hash)| *seq == head.seq && *hash == head.hash)
        };
        let round = self.round_under_lock(batch.iter().copied(), adopted);
        drop(lock);
        round
    }

    fn sync(&mut self) -> Result<(), AuditError> {
        Files::sync(self)
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
