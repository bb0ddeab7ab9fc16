//! Reading a log back: [`verify`] for the whole chain, [`read`] for listing and following.
//! Both work on any source of stored lines too ([`verify_lines`], [`Reader::from_lines`]), so
//! that a log kept elsewhere than in files is checked by the same code.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::chain::{ChainError, Checked, MAX_LINE_BYTES, Walker, check_line};
use crate::files::{FileLock, HEAD_FILE, LOG_FILE};
use crate::head::Head;
use crate::key::AuditKey;
use crate::record::{Event, Record};

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// The last record's hash ([`crate::GENESIS_HASH`] for an empty log).
    pub last_hash: String,
    /// Whether the head carries a MAC, and whether it was checked against a key.
    pub head_mac: HeadMac,
}

/// What is known of the head's MAC after a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadMac {
    /// Checked against the audit key: the head was written by a holder of the key.
    Checked,
    /// The head has a MAC, but no key was given to check it.
    Unchecked,
    /// The head has no MAC (the log is not keyed): a cut at the end with a rewritten head
    /// cannot be told from a shorter log, except by a checkpoint.
    None,
}

/// The head of a log as its store keeps it, for [`verify_lines`]: the last record's seq and
/// hash ((0, [`crate::GENESIS_HASH`]) for an empty log) and, for a keyed log, the audit key's
/// MAC of them ([`AuditKey::mac`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadView {
    pub seq: u64,
    pub hash: String,
    pub mac: Option<String>,
    /// Names the head in errors: the head file, a database table.
    pub location: PathBuf,
}

impl HeadView {
    /// The head, its fields checked as the head file's are.
    fn to_head(&self) -> Result<Head, ChainError> {
        let head = Head {
            seq: self.seq,
            hash: self.hash.clone(),
            mac: self.mac.clone(),
        };
        head.check_fields(&self.location)?;
        Ok(head)
    }
}

/// [`verify_with`] over any store: checks `head` (its fields, and its MAC with `key`: a head
/// without one is then an error), then walks `lines` from the first record on and compares the
/// end with `head`, showing `seen` each record's (seq, hash) as it is checked.
///
/// `lines` yields each stored line as (the seq it is kept under, its bytes without the
/// newline), in order; a store's own failure is passed through as the error (for instance a
/// [`ChainError::Io`] naming the store). The seq a line is kept under must be its place in the
/// log (1, 2, …) and the seq inside it, so a gap, a duplicate or a row filed under another
/// number is found. The head and the lines must come from one consistent snapshot.
pub fn verify_lines<I, E>(
    head: &HeadView,
    lines: I,
    key: Option<&AuditKey>,
    seen: &mut dyn FnMut(u64, &str),
) -> Result<VerifyReport, ChainError>
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
    E: Into<ChainError>,
{
    let h = head.to_head()?;
    h.check_mac(key, &head.location, false)?;
    walk_checked(&h, lines, key, &mut |l| seen(l.seq, l.hash))
}

/// [`verify_lines`] for a head whose fields and MAC have been checked.
fn walk_checked<I, E>(
    head: &Head,
    lines: I,
    key: Option<&AuditKey>,
    seen: &mut dyn FnMut(StoredLine<'_>),
) -> Result<VerifyReport, ChainError>
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
    E: Into<ChainError>,
{
    let mut report = walk_lines(head, lines, seen)?;
    report.head_mac = match (&head.mac, key) {
        (Some(_), Some(_)) => HeadMac::Checked,
        (Some(_), None) => HeadMac::Unchecked,
        (None, _) => HeadMac::None,
    };
    Ok(report)
}

/// Checks a whole audit log and reports the first problem.
///
/// Every line must be a canonical record whose hash matches, whose `seq` is its line number and
/// whose `prev` is the hash of the line before; the file must end with a newline; and the head
/// file must name the last line. The head and the log's length are read together under a shared
/// lock, so a log that is being appended to verifies up to the last complete append.
pub fn verify(dir: &Path) -> Result<VerifyReport, ChainError> {
    verify_with(dir, None, &mut |_, _| {})
}

/// [`verify`], checking the head's MAC with `key` (a head without one is then an error), and
/// showing `seen` each record's (seq, hash) as it is checked.
pub fn verify_with(
    dir: &Path,
    key: Option<&AuditKey>,
    seen: &mut dyn FnMut(u64, &str),
) -> Result<VerifyReport, ChainError> {
    verify_with_lines(dir, key, &mut |l| seen(l.seq, l.hash))
}

/// One record of a log as it was checked: its seq and hash, its stored line (without the
/// newline) and the record the line holds.
#[derive(Debug, Clone, Copy)]
pub struct StoredLine<'a> {
    pub seq: u64,
    pub hash: &'a str,
    pub line: &'a [u8],
    pub record: &'a Record,
}

/// [`verify_with`], showing `each` every checked line whole: what copies a log to another
/// store (`warden migrate`) takes from it. A line reaches `each` only once it is checked and
/// chained to the one before; the walk may still fail later (a cut end, a replaced head), so
/// keep what `each` was shown only if this returns `Ok`.
pub fn verify_with_lines(
    dir: &Path,
    key: Option<&AuditKey>,
    each: &mut dyn FnMut(StoredLine<'_>),
) -> Result<VerifyReport, ChainError> {
    let log_path = dir.join(LOG_FILE);
    let head_path = dir.join(HEAD_FILE);
    let log = match File::open(&log_path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ChainError::Missing {
                path: dir.to_owned(),
            });
        }
        Err(source) => {
            return Err(ChainError::Io {
                path: log_path,
                source,
            });
        }
    };
    let head_file = match File::open(&head_path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ChainError::HeadMissing { path: head_path });
        }
        Err(source) => {
            return Err(ChainError::Io {
                path: head_path,
                source,
            });
        }
    };
    let (head, len) = {
        let _lock = FileLock::shared(&head_file).map_err(|source| ChainError::Io {
            path: head_path.clone(),
            source,
        })?;
        let head = Head::read(&head_file, &head_path)?;
        head.check_mac(key, &head_path, false)?;
        let len = log
            .metadata()
            .map_err(|source| ChainError::Io {
                path: log_path.clone(),
                source,
            })?
            .len();
        (head, len)
    };
    let lines = FileLines::new(log.take(len), &log_path, true);
    walk_checked(&head, lines, key, each)
}

/// Walks the first `len` bytes of the log and compares the end with `head`.
pub(crate) fn walk(
    log: File,
    len: u64,
    head: &Head,
    log_path: &Path,
) -> Result<VerifyReport, ChainError> {
    let lines = FileLines::new(log.take(len), log_path, true);
    walk_lines(head, lines, &mut |_| {})
}

/// What follows the record the head names, as [`after_head`] found it.
pub(crate) struct AfterHead {
    /// Bytes up to and including the head's record (with its newline): where the log is cut.
    pub cut: u64,
    /// Complete lines after the head's record, each a valid record chained from the one
    /// before it.
    pub lines: u64,
    /// Bytes after the last newline (a partial line), at most [`MAX_LINE_BYTES`].
    pub partial: Vec<u8>,
    /// Sequence number and hash of the last complete line (the head's record when `lines` is
    /// 0): a partial line must be the start of the record after it.
    pub last_seq: u64,
    pub last_hash: String,
}

/// Walks the first `len` bytes of the log, checking every complete line as [`walk`] does, and
/// returns what follows the record `head` names. `None` if the log never reaches a record with
/// the head's seq and hash, or once more than `max_lines` complete lines, or more than
/// `max_bytes` bytes of them, follow it (the walk stops there). A line that does not verify or
/// chain is returned as [`walk`] would name it.
pub(crate) fn after_head(
    log: File,
    len: u64,
    head: &Head,
    log_path: &Path,
    max_lines: u64,
    max_bytes: u64,
) -> Result<Option<AfterHead>, ChainError> {
    let mut lines = Lines::new(log.take(len), log_path);
    let mut walker = Walker::new();
    let mut offset = 0u64;
    // The genesis "record" is the empty log.
    let mut cut = (head.seq == 0 && walker.last_hash == head.hash).then_some(0);
    while let Some(line) = lines.next_line()? {
        walker.next(&line)?;
        offset += line.len() as u64 + 1;
        match cut {
            None if walker.lines == head.seq => {
                if walker.last_hash != head.hash {
                    return Ok(None);
                }
                cut = Some(offset);
            }
            Some(cut) if walker.lines - head.seq > max_lines || offset - cut > max_bytes => {
                return Ok(None);
            }
            None | Some(_) => {}
        }
    }
    let Some(cut) = cut else { return Ok(None) };
    Ok(Some(AfterHead {
        cut,
        lines: walker.lines - head.seq,
        partial: lines.pending,
        last_seq: walker.lines,
        last_hash: walker.last_hash,
    }))
}

/// Walks `lines` from the first record and compares the end with `head` (whose MAC is the
/// caller's business). `head_mac` in the report says only whether the head has a MAC.
fn walk_lines<I, E>(
    head: &Head,
    lines: I,
    seen: &mut dyn FnMut(StoredLine<'_>),
) -> Result<VerifyReport, ChainError>
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
    E: Into<ChainError>,
{
    let mut walker = Walker::new();
    for line in lines {
        let (seq, bytes) = line.map_err(Into::into)?;
        let checked = walker.next_at(seq, &bytes)?;
        seen(StoredLine {
            seq: checked.seq,
            hash: &checked.hash,
            line: &bytes,
            record: &checked.record,
        });
    }
    if walker.lines < head.seq {
        return Err(ChainError::Truncated {
            line: walker.lines + 1,
            log_seq: walker.lines,
            head_seq: head.seq,
        });
    }
    if walker.lines > head.seq {
        return Err(ChainError::Unrecorded {
            line: head.seq + 1,
            head_seq: head.seq,
        });
    }
    if walker.last_hash != head.hash {
        return Err(ChainError::HeadHash {
            line: walker.lines,
            log_hash: walker.last_hash,
            head_hash: head.hash.clone(),
        });
    }
    Ok(VerifyReport {
        records: walker.lines,
        last_hash: walker.last_hash,
        head_mac: if head.mac.is_some() {
            HeadMac::Unchecked
        } else {
            HeadMac::None
        },
    })
}

/// The complete lines of a file as (line number, bytes without the newline). A partial last
/// line is [`ChainError::Torn`] when `torn` is set (a verifier's snapshot); otherwise it waits
/// for its newline, to be returned by a later call (a reader following the file).
struct FileLines<R> {
    lines: Lines<R>,
    torn: bool,
    /// Set once the torn line has been reported.
    ended: bool,
}

impl<R: Read> FileLines<R> {
    fn new(inner: R, path: &Path, torn: bool) -> FileLines<R> {
        FileLines {
            lines: Lines::new(inner, path),
            torn,
            ended: false,
        }
    }
}

impl<R: Read> Iterator for FileLines<R> {
    type Item = Result<(u64, Vec<u8>), ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.lines.next_line() {
            Ok(Some(bytes)) => Some(Ok((self.lines.lines, bytes))),
            Ok(None) if self.torn && !self.ended && !self.lines.pending.is_empty() => {
                self.ended = true;
                Some(Err(ChainError::Torn {
                    line: self.lines.lines + 1,
                }))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// Complete lines of a file that may still be growing.
struct Lines<R> {
    inner: BufReader<R>,
    path: PathBuf,
    /// The start of a line whose newline has not been read yet.
    pending: Vec<u8>,
    /// Complete lines returned so far.
    lines: u64,
}

impl<R: Read> Lines<R> {
    fn new(inner: R, path: &Path) -> Lines<R> {
        Lines {
            inner: BufReader::with_capacity(64 * 1024, inner),
            path: path.to_owned(),
            pending: Vec::new(),
            lines: 0,
        }
    }

    /// The next complete line without its newline, or `None` at the end of what is in the file
    /// now (a partial last line stays pending, to be completed by a later call).
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, ChainError> {
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ChainError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            if buf.is_empty() {
                return Ok(None);
            }
            let (taken, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            self.pending.extend_from_slice(&buf[..taken]);
            self.inner.consume(taken + usize::from(complete));
            if self.pending.len() > MAX_LINE_BYTES {
                return Err(ChainError::TooLong {
                    line: self.lines + 1,
                });
            }
            if complete {
                self.lines += 1;
                return Ok(Some(std::mem::take(&mut self.pending)));
            }
        }
    }
}

/// Which records [`read`] yields. The default yields all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records of this tenant.
    pub tenant: Option<String>,
    /// Only records of this extension id.
    pub extension: Option<String>,
    /// Only records of this event.
    pub event: Option<Event>,
    /// Only records of this request id, and of the calls it made to other extensions
    /// (`ID.1`, `ID.1.2`, ...), and a summary of refusals that names it
    /// ([`Record::folded_requests`]).
    pub request: Option<String>,
    /// Stop after this many matching records.
    pub limit: Option<usize>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        self.tenant.as_deref().is_none_or(|t| r.tenant() == Some(t))
            && self
                .extension
                .as_deref()
                .is_none_or(|x| r.extension() == Some(x))
            && self.event.is_none_or(|e| r.event() == e)
            && self.request.as_deref().is_none_or(|id| {
                within_request(r.request_id(), id)
                    || r.folded_requests().any(|folded| within_request(folded, id))
            })
    }
}

/// Whether `request_id` is `id`'s own, or a nested call's under it (`id.N...`).
fn within_request(request_id: &str, id: &str) -> bool {
    request_id
        .strip_prefix(id)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// A record as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: u64,
    pub hash: String,
    pub record: Record,
    /// The stored JSON line, without its newline. It is canonical (checked), so it holds no
    /// raw control characters.
    pub line: String,
}

/// Stored lines as a [`Reader`] takes them: (seq, bytes without the newline), or the store's
/// failure.
type BoxedLines = Box<dyn Iterator<Item = Result<(u64, Vec<u8>), ChainError>> + Send>;

/// Reads records from the start of a log, checking each line and its link to the line before
/// (as [`verify`] does, but without the head file, so a log being appended to can be read).
///
/// At the current end of the file the iterator returns `None`; calling it again later yields
/// the records appended since, which is how `warden audit --follow` works. After an error it
/// returns `None` for good. [`Reader::from_lines`] reads any other store the same way.
pub struct Reader {
    /// Only ever reached through `&mut self` (`get_mut`, no locking): the mutex makes the
    /// reader `Sync`, as the file reader always was, over lines that are only `Send`.
    lines: Mutex<BoxedLines>,
    /// Checks each line's link to the one before; `None` when lines are checked alone.
    walker: Option<Walker>,
    /// The seq of the last line read (lines checked alone must come in increasing order).
    last_seq: u64,
    /// Lines read and checked so far, matching or not.
    read: u64,
    filter: Filter,
    matched: usize,
    done: bool,
}

/// Opens the log in `dir` for reading with `filter`.
pub fn read(dir: &Path, filter: Filter) -> Result<Reader, ChainError> {
    let path = dir.join(LOG_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ChainError::Missing {
                path: dir.to_owned(),
            });
        }
        Err(source) => return Err(ChainError::Io { path, source }),
    };
    Ok(Reader::from_lines(
        FileLines::new(file, &path, false),
        filter,
    ))
}

impl Reader {
    /// Reads records with `filter` from any source of stored lines: (the seq a line is kept
    /// under, its bytes without the newline), from the first record on, each checked with its
    /// link to the one before as [`read`] checks the file. When `lines` ends the reader returns
    /// `None`; if `lines` yields more later (it polls its store), the reader follows.
    pub fn from_lines<I, E>(lines: I, filter: Filter) -> Reader
    where
        I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
        I::IntoIter: Send + 'static,
        E: Into<ChainError> + 'static,
    {
        Reader::new(lines, filter, Some(Walker::new()))
    }

    /// [`Reader::from_lines`] for lines that are not the whole log from its start (a store
    /// that selects rows by tenant or extension itself): each line is checked alone (canonical,
    /// its hash, its seq the one it is kept under, seqs increasing), not its link to the one
    /// before. Only [`verify_lines`] proves that the chain is whole.
    pub fn unchained<I, E>(lines: I, filter: Filter) -> Reader
    where
        I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
        I::IntoIter: Send + 'static,
        E: Into<ChainError> + 'static,
    {
        Reader::new(lines, filter, None)
    }

    fn new<I, E>(lines: I, filter: Filter, walker: Option<Walker>) -> Reader
    where
        I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
        I::IntoIter: Send + 'static,
        E: Into<ChainError> + 'static,
    {
        Reader {
            lines: Mutex::new(Box::new(lines.into_iter().map(|l| l.map_err(Into::into)))),
            walker,
            last_seq: 0,
            read: 0,
            filter,
            matched: 0,
            done: false,
        }
    }

    /// Records read so far (matching or not).
    pub fn records_read(&self) -> u64 {
        self.read
    }

    /// Checks the line kept under `seq`.
    fn check(&mut self, seq: u64, bytes: &[u8]) -> Result<Checked, ChainError> {
        let checked = match &mut self.walker {
            Some(walker) => walker.next_at(seq, bytes)?,
            None => {
                let expected = self.last_seq.saturating_add(1);
                if seq < expected {
                    return Err(ChainError::Seq {
                        line: seq,
                        expected,
                        found: seq,
                    });
                }
                let checked = check_line(seq, bytes)?;
                if checked.seq != seq {
                    return Err(ChainError::Seq {
                        line: seq,
                        expected: seq,
                        found: checked.seq,
                    });
                }
                checked
            }
        };
        self.last_seq = seq;
        self.read += 1;
        Ok(checked)
    }

    fn fail(&mut self, e: ChainError) -> Option<Result<StoredRecord, ChainError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl Iterator for Reader {
    type Item = Result<StoredRecord, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done || self.filter.limit.is_some_and(|l| self.matched >= l) {
                return None;
            }
            let lines = self.lines.get_mut().unwrap_or_else(PoisonError::into_inner);
            let (seq, bytes) = match lines.next() {
                Some(Ok(line)) => line,
                None => return None,
                Some(Err(e)) => return self.fail(e),
            };
            let checked = match self.check(seq, &bytes) {
                Ok(c) => c,
                Err(e) => return self.fail(e),
            };
            if !self.filter.matches(&checked.record) {
                continue;
            }
            let line = match String::from_utf8(bytes) {
                Ok(line) => line,
                Err(_) => {
                    return self.fail(ChainError::Malformed {
                        line: seq,
                        reason: "not UTF-8".into(),
                    });
                }
            };
            self.matched += 1;
            return Some(Ok(StoredRecord {
                seq: checked.seq,
                hash: checked.hash,
                record: checked.record,
                line,
            }));
        }
    }
}
