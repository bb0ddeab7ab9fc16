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
use std::fs::{self, OpenOptions};

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::commit::Writer;
use crate::key::{AUDIT_KEY_FILE, AuditKey};
use crate::record::Record;
use crate::round::{FILE_MODE, Files, io_err};
use crate::sink::AuditSink;
pub use crate::store::Appended;

pub use crate::error::AuditError;
pub use crate::files::{AUDIT_DIR, HEAD_FILE, LOG_FILE, TORN_FILE};

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
    /// The writer thread, which owns the files; joined on drop.
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
    /// The files' injected failures, reachable by the tests once the files are the thread's.
    #[cfg(test)]
    faults: Arc<Mutex<tests::Faults>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("sync_rounds", &self.sync_rounds())
            .finish_non_exhaustive()
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
        #[cfg(test)]
        let faults = Arc::<Mutex<tests::Faults>>::default();
        let mut files = Files {
            dir: dir.to_owned(),
            log,
            log_path,
            head,
            head_path,
            key,
            adopted: None,
            locked: false,
            known_end: Mutex::new(None),
            #[cfg(test)]
            faults: Arc::clone(&faults),
        };
        files.adopted = files.check_at_open(adopt)?;
        let (writer, thread) = Writer::start(Box::new(files), dir.to_owned())?;
        Ok(AuditLog {
            writer,
            thread: Some(thread),
            dir: dir.to_owned(),
            #[cfg(test)]
            faults,
        })
    }

    /// The audit folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record and returns once it is on disk. Also emits a `tracing` event (target
    /// `warden::audit`, level INFO) with the record's main fields.
    ///
    /// The record is handed to this log's writer thread, which commits it together with every
    /// other record queued meanwhile (one write, one sync); the answer is this record's own.
    pub fn append(&self, record: Record) -> Result<Appended, AuditError> {
        self.writer.append(record)
    }

    /// How many times this handle has synced the log and the head: once per round that wrote
    /// something. Below the number of records appended by as much as appends overlap.
    pub fn sync_rounds(&self) -> u64 {
        self.writer.sync_rounds()
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // The writer commits what is queued and ends.
        self.writer.stop(self.thread.take());
    }
}

impl AuditSink for AuditLog {
    fn append(&self, record: Record) -> Result<(), AuditError> {
        AuditLog::append(self, record).map(|_| ())
    }

    fn append_all(&self, records: Vec<Record>) -> crate::sink::Pending {
        self.writer.append_all(records)
    }

    fn settle(&self, within: std::time::Duration) -> Result<(), AuditError> {
        self.writer.settle(within)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::chain::{ChainError, encode};
    use crate::read::verify;
    use crate::record::Event;
    use crate::round::{MAX_ROUND_BYTES, MAX_ROUND_RECORDS, MAX_ROUND_WRITE};
    use std::fs::File;
    use std::io::Write as _;

    /// Failures the next round meets, set by a test.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// The next write of lines stops after this many bytes and fails (ENOSPC).
        pub short_write: Option<usize>,
        /// The next sync fails (EIO).
        pub fail_sync: bool,
        /// Records with this request id fail to encode, as over the line cap.
        pub too_large: Option<String>,
        /// The next failed write is not cut back (as when the file cannot be changed at all).
        pub fail_rollback: bool,
    }

    fn rec(i: u64) -> Record {
        Record::new(Event::Call, format!("req-{i}")).with_message(format!("message {i}"))
    }

    fn faults(log: &AuditLog) -> std::sync::MutexGuard<'_, Faults> {
        log.faults.lock().unwrap()
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

    /// A write that could not be undone (the file could not be changed at all for a moment)
    /// breaks the log for that round only: the next round sets aside what it left after the
    /// head, as after a crash, and the chain goes on (outside attack: a log made immutable
    /// for a moment kept every call refused until a restart).
    #[test]
    fn a_write_that_could_not_be_undone_is_set_aside_by_the_next_round() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = Arc::new(AuditLog::open(&dir).unwrap());
        log.append(rec(0)).unwrap();
        {
            let mut f = faults(&log);
            f.short_write = Some(40);
            f.fail_rollback = true;
        }
        assert!(log.append(rec(1)).is_err());
        // The 40 bytes are still at the end of the log; the next append sets them aside.
        let a = log.append(rec(2)).unwrap();
        assert_eq!(a.seq, 3, "a recovery record, then this one");
        let report = verify(&dir).unwrap();
        assert_eq!(report.records, 3);
        assert!(
            fs::read_to_string(dir.join(TORN_FILE))
                .unwrap()
                .contains("\"bytes\":40")
        );
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
