//! The budget one (tenant, extension)'s file quota keeps on disk, shared by every [`FsQuota`]
//! on the same folder: in this process, in other processes, later in other runners on the
//! same data dir. See the module docs of [`crate::quota`] for the design; this is the
//! mechanism: the budget file, its format and its transactions, and the leases that say which
//! processes are still alive.
//!
//! [`FsQuota`]: super::FsQuota

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_datadir::{LOCK_WAIT, LockKind, lock_within};

use super::Usage;

/// How long a transaction waits for another process's at most: they take microseconds, and
/// the caller is a call with its own time limit (outside attack, session 30: two 5 s waits ran
/// a call with a 1 s limit for 10 s). A quota waits less if its calls' limit is shorter.
pub(super) const LEDGER_WAIT: Duration = Duration::from_secs(1);

/// How long a transaction waits once a wait of the quota's ran out, until the ledger is taken
/// again: long enough for the microseconds a live holder keeps it, short enough that a
/// stopped holder costs each call next to nothing.
const STALLED_WAIT: Duration = Duration::from_millis(10);

/// Whether a quota's last wait for its ledger ran out. Then its next transactions wait only
/// [`STALLED_WAIT`] (and fail: growth refused, fails closed) until one takes the lock: every
/// transaction waiting its whole bound made the calls of one install queue on each other, one
/// bound each (outside attack, session 30: four calls with a 1 s limit answered after 2.7 to
/// 10 s, each write two transactions).
#[derive(Debug, Default)]
pub(super) struct Patience {
    stalled: AtomicBool,
}

impl Patience {
    /// How long the next transaction waits, given the quota's full wait.
    fn wait(&self, full: Duration) -> Duration {
        if self.stalled.load(Ordering::Relaxed) {
            STALLED_WAIT.min(full)
        } else {
            full
        }
    }
}

/// The budget file inside the budget folder.
pub(super) const BUDGET_FILE: &str = "budget";
/// Leases are named `lease-...` inside the leases folder.
const LEASE_PREFIX: &str = "lease-";
/// The first line of every budget file: its format.
const MAGIC: &str = "warden-fs-quota 2";
/// A budget file longer than this is damaged (a real one holds a few hundred bytes: one
/// in-flight line per live quota with writes in flight).
const MAX_STATE_BYTES: usize = 64 * 1024;
/// Leases looked at when a process takes its lease (old dead ones are removed); more are left
/// for the next process.
const MAX_SWEEP: usize = 1024;

/// What the budget file holds. Everything a charge, a settle or a walk needs to agree on across
/// processes; read and written whole under the file's exclusive lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct State {
    /// Measured at the last walk plus everything charged since (by any quota on the folder).
    pub used: Usage,
    /// When the last walk finished (Unix nanoseconds, wall clock).
    pub walked: u64,
    /// An operation that may free space succeeded since the last walk.
    pub freed: bool,
    /// A charge was refused since the last walk.
    pub exhausted: bool,
    /// The id of the next walk claimed.
    pub next: u64,
    /// The walk under way, if any.
    pub walk: Option<Walk>,
    /// Charged and not yet known to be on disk, per owner (a lease name): what a walk may miss.
    /// Owners with nothing in flight are left out.
    pub flights: BTreeMap<String, Usage>,
    /// Renames and hard links begun on the folder, ever (a walk whose claim saw another number
    /// ran while one moved things, and may have missed them: its result is discarded).
    pub renames: u64,
    /// Renames and hard links under way, per owner: no walk is claimed while any runs.
    pub moving: BTreeMap<String, u64>,
    /// Files deleted (or replaced by a rename) while they may still be open: their bytes
    /// (`.1`) stay counted until `.0` (Unix nanoseconds), when every call that may hold them
    /// has ended (a walk cannot see them).
    pub holds: Vec<(u64, u64)>,
    /// How long each live quota's calls may run, in nanoseconds, per owner: a file deleted
    /// while open is held for the longest of them, since any of their calls may be the one
    /// holding it (red team, session 16: held for the deleting install's own limit, a file
    /// kept open by a longer call of another version went uncounted).
    pub limits: BTreeMap<String, u64>,
}

/// A claimed walk: the quota (lease) that runs it, when, and what was charged that it may or may
/// not see: everything in flight when it was claimed, plus every charge since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Walk {
    pub id: u64,
    pub owner: String,
    pub started: u64,
    pub during: Usage,
    /// [`State::renames`] when the walk was claimed.
    pub renames: u64,
}

pub(super) fn plus(a: Usage, b: Usage) -> Usage {
    Usage {
        bytes: a.bytes.saturating_add(b.bytes),
        entries: a.entries.saturating_add(b.entries),
    }
}

pub(super) fn minus(a: Usage, b: Usage) -> Usage {
    Usage {
        bytes: a.bytes.saturating_sub(b.bytes),
        entries: a.entries.saturating_sub(b.entries),
    }
}

/// Now, in Unix nanoseconds (0 before 1970, saturated after 2554).
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Time since `t` (Unix nanoseconds); `Duration::MAX` if the clock went back since, so that a
/// clock set back never stops walks.
pub(super) fn since(t: u64) -> Duration {
    now()
        .checked_sub(t)
        .map(Duration::from_nanos)
        .unwrap_or(Duration::MAX)
}

impl State {
    /// A budget measured now at `used`, with `mine` in flight for `me`.
    pub fn fresh(used: Usage, me: &str, mine: Usage) -> State {
        let mut s = State {
            used,
            walked: now(),
            // Walk ids stay unique across rebuilds: a claim made before one never matches after.
            next: now(),
            ..State::default()
        };
        s.add_flight(me, mine);
        s
    }

    pub fn add_flight(&mut self, owner: &str, cost: Usage) {
        if cost == Usage::default() {
            return;
        }
        let f = self.flights.entry(owner.to_string()).or_default();
        *f = plus(*f, cost);
    }

    pub fn sub_flight(&mut self, owner: &str, cost: Usage) {
        if let Some(f) = self.flights.get_mut(owner) {
            *f = minus(*f, cost);
            if *f == Usage::default() {
                self.flights.remove(owner);
            }
        }
    }

    /// A rename (or hard link) by `owner` begins: walks claimed before it are void, and none is
    /// claimed until it ends.
    pub fn begin_move(&mut self, owner: &str) {
        self.renames = self.renames.wrapping_add(1);
        *self.moving.entry(owner.to_string()).or_default() += 1;
    }

    pub fn end_move(&mut self, owner: &str) {
        if let Some(n) = self.moving.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.moving.remove(owner);
            }
        }
    }

    /// Drops holds that have expired; `true` if any did (the space may be counted free now).
    pub fn expire_holds(&mut self) -> bool {
        let now = now();
        let before = self.holds.len();
        self.holds.retain(|(until, _)| *until > now);
        self.holds.len() != before
    }

    /// Bytes held for deleted files that may still be open.
    pub fn held(&self) -> u64 {
        self.holds
            .iter()
            .fold(0u64, |a, (_, b)| a.saturating_add(*b))
    }

    /// Everything in flight, of every owner.
    pub fn in_flight(&self) -> Usage {
        self.flights
            .values()
            .fold(Usage::default(), |a, f| plus(a, *f))
    }

    /// The budget file's text: one field per line, then a checksum of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        let _ = writeln!(s, "{MAGIC}");
        let _ = writeln!(s, "used {} {}", self.used.bytes, self.used.entries);
        let _ = writeln!(s, "walked {}", self.walked);
        let _ = writeln!(s, "freed {}", u8::from(self.freed));
        let _ = writeln!(s, "exhausted {}", u8::from(self.exhausted));
        let _ = writeln!(s, "next {}", self.next);
        let _ = writeln!(s, "renames {}", self.renames);
        if let Some(w) = &self.walk {
            let _ = writeln!(
                s,
                "walk {} {} {} {} {} {}",
                w.id, w.owner, w.started, w.during.bytes, w.during.entries, w.renames
            );
        }
        for (owner, f) in &self.flights {
            let _ = writeln!(s, "flight {owner} {} {}", f.bytes, f.entries);
        }
        for (owner, n) in &self.moving {
            let _ = writeln!(s, "moving {owner} {n}");
        }
        for (until, bytes) in &self.holds {
            let _ = writeln!(s, "hold {until} {bytes}");
        }
        for (owner, ns) in &self.limits {
            let _ = writeln!(s, "limit {owner} {ns}");
        }
        let sum = checksum(s.as_bytes());
        let _ = writeln!(s, "sum {sum:016x}");
        s.into_bytes()
    }

    /// Reads a budget file's text; `None` if it is anything but exactly what [`encode`] writes,
    /// then spaces (a shorter state is written over a longer one padded, not truncated): empty,
    /// torn by a crash mid-write, edited, or of another format.
    ///
    /// [`encode`]: State::encode
    pub fn parse(bytes: &[u8]) -> Option<State> {
        let text = std::str::from_utf8(bytes).ok()?.trim_end_matches(' ');
        let body_end = text.rfind("sum ")?;
        let (body, tail) = text.split_at(body_end);
        let sum = tail.strip_prefix("sum ")?.strip_suffix('\n')?;
        if sum.len() != 16 || u64::from_str_radix(sum, 16).ok()? != checksum(body.as_bytes()) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let [b, e] = fields(lines.next()?, "used")?;
        let [walked] = fields(lines.next()?, "walked")?;
        let [freed] = fields(lines.next()?, "freed")?;
        let [exhausted] = fields(lines.next()?, "exhausted")?;
        let [next] = fields(lines.next()?, "next")?;
        let [renames] = fields(lines.next()?, "renames")?;
        let mut s = State {
            used: Usage {
                bytes: number(b)?,
                entries: number(e)?,
            },
            walked: number(walked)?,
            freed: flag(freed)?,
            exhausted: flag(exhausted)?,
            next: number(next)?,
            walk: None,
            flights: BTreeMap::new(),
            renames: number(renames)?,
            moving: BTreeMap::new(),
            holds: Vec::new(),
            limits: BTreeMap::new(),
        };
        for line in lines {
            let (kind, rest) = line.split_once(' ')?;
            match kind {
                "limit" => {
                    let [owner, ns] = fields(rest, "")?;
                    let owner = owner_name(owner)?;
                    let in_order = s.limits.keys().next_back().is_none_or(|k| *k < owner);
                    if !in_order {
                        return None;
                    }
                    s.limits.insert(owner, number(ns)?);
                }
                _ if !s.limits.is_empty() => return None,
                "walk" if s.walk.is_none() && s.flights.is_empty() && s.moving.is_empty() => {
                    let [id, owner, started, b, e, r] = fields(rest, "")?;
                    s.walk = Some(Walk {
                        id: number(id)?,
                        owner: owner_name(owner)?,
                        started: number(started)?,
                        during: Usage {
                            bytes: number(b)?,
                            entries: number(e)?,
                        },
                        renames: number(r)?,
                    });
                }
                "moving" if s.holds.is_empty() => {
                    let [owner, n] = fields(rest, "")?;
                    let owner = owner_name(owner)?;
                    let n = number(n)?;
                    let in_order = s.moving.keys().next_back().is_none_or(|k| *k < owner);
                    if !in_order || n == 0 {
                        return None;
                    }
                    s.moving.insert(owner, n);
                }
                "hold" => {
                    let [until, bytes] = fields(rest, "")?;
                    s.holds.push((number(until)?, number(bytes)?));
                }
                "flight" if s.moving.is_empty() && s.holds.is_empty() => {
                    let [owner, b, e] = fields(rest, "")?;
                    let owner = owner_name(owner)?;
                    let f = Usage {
                        bytes: number(b)?,
                        entries: number(e)?,
                    };
                    // Sorted, unique, never empty: as written.
                    let in_order = s.flights.keys().next_back().is_none_or(|k| *k < owner);
                    if !in_order || f == Usage::default() {
                        return None;
                    }
                    s.flights.insert(owner, f);
                }
                _ => return None,
            }
        }
        Some(s)
    }
}

/// The `N` space-separated fields of `line` after its `name` (none if `name` is empty), or
/// `None` if it has another name or another number of fields.
fn fields<'a, const N: usize>(line: &'a str, name: &str) -> Option<[&'a str; N]> {
    let mut parts = line.split(' ');
    if !name.is_empty() && parts.next()? != name {
        return None;
    }
    let mut out = [""; N];
    for slot in &mut out {
        *slot = parts.next()?;
    }
    parts.next().is_none().then_some(out)
}

/// A decimal `u64` with no sign, no leading zeros and no spaces, as `Display` writes it.
fn number(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

fn flag(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// A lease name as this module makes them: `lease-` then ASCII digits, letters and `-`. Never a
/// path: it is joined to the leases folder, and a dead process's lease is removed.
fn lease_name(s: &str) -> Option<&str> {
    let rest = s.strip_prefix(LEASE_PREFIX)?;
    let ok = !rest.is_empty()
        && rest.len() <= 64
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(s)
}

/// The lease of an owner token `<lease>.<n>`.
fn owner_lease(owner: &str) -> Option<&str> {
    let (lease, n) = owner.split_once('.')?;
    number(n)?;
    lease_name(lease)
}

/// An owner token as [`owner_token`] makes them.
fn owner_name(s: &str) -> Option<String> {
    owner_lease(s).map(|_| s.to_string())
}

/// FNV-1a over 64-bit words (then the tail's bytes), with the length: enough to tell a torn or
/// hand-edited file from one [`State::encode`] wrote (not a defence against forgery: the file
/// is the host's own, 0600 in a 0700 folder).
fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    for b in words.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
    }
    h
}

/// Names a file or folder of the budget in an error by its last two components
/// (`files.quota/budget`), never the host's absolute path.
fn shown(path: &Path) -> String {
    let mut parts = path.iter().rev().take(2).collect::<Vec<_>>();
    parts.reverse();
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn failed(what: &str, path: &Path, e: &io::Error) -> String {
    format!("{what} {}: {e}", shown(path))
}

/// Runs `f` on the state in the budget file `path` under its lock (exclusive, or shared for a
/// read), and writes what `f` left back if it changed (exclusive only). `f` sees `None` if the
/// file is new, empty or damaged; it may put a state in its place. The file is opened for each
/// transaction (created 0600 if missing, in its folder, created 0700 if missing), so a quota
/// holds no descriptor between calls, and always reaches the file that is at `path` now. The
/// lock is waited for up to `full`, or less if `patience` says an earlier wait ran out.
pub(super) fn transact<R>(
    path: &Path,
    exclusive: bool,
    patience: &Patience,
    full: Duration,
    f: impl FnOnce(&mut Option<State>) -> R,
) -> Result<R, String> {
    let open = || warden_datadir::open_shared(path);
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Its folder is gone (an operator reset the install): made again.
            if let Some(dir) = path.parent() {
                crate::private_dir(dir).map_err(|e| e.to_string())?;
            }
            open()
        }
        r => r,
    }
    .map_err(|e| failed("opening", path, &e))?;
    // Released when `file` closes, at the end of this transaction. Waited for within a bound:
    // a process stopped inside its transaction fails this write, rather than hanging it.
    let kind = if exclusive {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    };
    let locked = lock_within(&file, kind, patience.wait(full), "the quota's ledger");
    patience.stalled.store(
        matches!(&locked, Err(e) if e.kind() == io::ErrorKind::TimedOut),
        Ordering::Relaxed,
    );
    locked.map_err(|e| failed("locking", path, &e))?;
    let raw = read_all(&file).map_err(|e| failed("reading", path, &e))?;
    let mut state = State::parse(&raw);
    let r = f(&mut state);
    if exclusive && let Some(s) = &state {
        let mut new = s.encode();
        // Padded to the old length rather than truncated: one system call fewer.
        if new.len() < raw.len() {
            new.resize(raw.len(), b' ');
        }
        if new != raw {
            file.write_all_at(&new, 0)
                .map_err(|e| failed("writing", path, &e))?;
        }
    }
    Ok(r)
}

/// A file in the leases folder (`DATA/quota-leases/`) that this process holds an exclusive
/// `flock` on for as long as any of its quotas on that data dir lives. The kernel releases the
/// lock when the process ends, however it ends: a lease that can be locked is a dead process's.
/// One per process and folder, whatever the number of installs: one descriptor in all.
pub(super) struct Lease {
    dir: PathBuf,
    name: String,
    /// Held (locked) for the life of the lease; never read.
    _file: File,
}

/// A lease left by a dead process is removed once this old (a lease is locked microseconds
/// after it is created: younger, it may be one being made).
const LEASE_REMOVE_AGE: Duration = Duration::from_secs(60);

/// The leases this process holds, by folder.
static LEASES: Mutex<Vec<Weak<Lease>>> = Mutex::new(Vec::new());

impl Lease {
    /// This process's lease in `dir`, taken (and dead processes' old leases there removed) on
    /// first use.
    pub fn take(dir: &Path) -> Result<Arc<Lease>, String> {
        let mut all = LEASES
            .lock()
            .map_err(|_| "the lease registry's lock is poisoned".to_string())?;
        all.retain(|w| w.strong_count() > 0);
        if let Some(l) = all.iter().filter_map(Weak::upgrade).find(|l| l.dir == dir) {
            return Ok(l);
        }
        crate::private_dir(dir).map_err(|e| e.to_string())?;
        let lease = Arc::new(new_lease(dir)?);
        lease.sweep();
        all.push(Arc::downgrade(&lease));
        Ok(lease)
    }

    /// Whether the quota `owner` (a token `<lease>.<n>`) may still be alive: its lease is held.
    /// A lease that is missing, or that can be locked (its holder is gone), is dead. Anything
    /// else (an error opening it) counts as alive: what it has in flight stays counted.
    pub fn alive(&self, owner: &str) -> bool {
        let Some(lease) = owner_lease(owner) else {
            return false;
        };
        if lease == self.name {
            return true;
        }
        let path = self.dir.join(lease);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
            Err(_) => return true,
        };
        match f.try_lock() {
            Ok(()) => {
                remove_if_old(&path, &f);
                false
            }
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(_)) => true,
        }
    }

    /// Removes the old leases of dead processes.
    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten().take(MAX_SWEEP) {
            let name = entry.file_name();
            if let Some(name) = name.to_str()
                && name != self.name
                && lease_name(name).is_some()
                && let Ok(f) = File::open(entry.path())
                && f.try_lock().is_ok()
            {
                remove_if_old(&entry.path(), &f);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Its own: the lock is released when the file closes, right after.
        let _ = fs::remove_file(self.dir.join(&self.name));
    }
}

/// Removes the unlocked lease `f` at `path` if it is older than [`LEASE_REMOVE_AGE`].
fn remove_if_old(path: &Path, f: &File) {
    let old = f
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= LEASE_REMOVE_AGE);
    if old {
        let _ = fs::remove_file(path);
    }
}

/// Creates and locks a new lease file in `dir`.
fn new_lease(dir: &Path) -> Result<Lease, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{LEASE_PREFIX}{}-{n}-{:x}",
            std::process::id(),
            now() & 0xffff_ffff
        );
        let path = dir.join(&name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                // Another process's sweep may hold it for an instant.
                return match lock_within(&f, LockKind::Exclusive, LOCK_WAIT, "a new lease") {
                    Ok(()) => Ok(Lease {
                        dir: dir.to_path_buf(),
                        name,
                        _file: f,
                    }),
                    Err(e) => {
                        let _ = fs::remove_file(&path);
                        Err(format!("locking {}: {e}", shown(&path)))
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(failed("creating", &path, &e)),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no free name"));
    Err(failed("creating", &dir.join(LEASE_PREFIX), &e))
}

/// A new token for one quota of this process: `<lease>.<n>`.
pub(super) fn owner_token(lease: &Lease) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}.{}", lease.name, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The whole file, up to [`MAX_STATE_BYTES`] (one byte more marks it as damaged). A read
/// shorter than asked is the end of a regular file: one `pread` in the usual case.
fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    loop {
        let n = match file.read_at(&mut buf[len..], len as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        len += n;
        if len < buf.len() || buf.len() > MAX_STATE_BYTES {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process stopped inside its transaction (holding the ledger's lock) fails this one
    /// after the lock's bound, with nothing written, rather than hanging it.
    #[test]
    fn a_ledger_held_by_a_stopped_process_fails_the_transaction_not_hangs_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BUDGET_FILE);
        let held = File::create(&path).unwrap();
        held.lock().unwrap();
        let ran = AtomicBool::new(false);
        let patience = Patience::default();
        let full = Duration::from_millis(300);
        let txn = || {
            transact(&path, true, &patience, full, |_| {
                ran.store(true, Ordering::Relaxed)
            })
        };
        let e = txn().unwrap_err();
        assert!(
            e.contains("held the lock on the quota's ledger for 0.3 s"),
            "{e}"
        );
        assert!(!ran.load(Ordering::Relaxed));
        // Still held: the next transactions wait only a moment.
        for _ in 0..3 {
            let e = txn().unwrap_err();
            assert!(e.contains("for 0.01 s"), "{e}");
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        held.unlock().unwrap();
        txn().unwrap();
        assert!(ran.load(Ordering::Relaxed));
        // Taken again: a later holder is waited for the whole bound once more.
        held.lock().unwrap();
        let e = txn().unwrap_err();
        assert!(e.contains("for 0.3 s"), "{e}");
    }

    #[test]
    fn the_state_round_trips_and_anything_else_is_damaged() {
        let mut s = State::fresh(
            Usage {
                bytes: 10,
                entries: 2,
            },
            "lease-1-0-a.0",
            Usage {
                bytes: 4096,
                entries: 1,
            },
        );
        s.walk = Some(Walk {
            id: 3,
            owner: "lease-2-5-ff.3".into(),
            started: 7,
            during: Usage {
                bytes: 1,
                entries: 0,
            },
            renames: 4,
        });
        s.add_flight(
            "lease-9-1-b.1",
            Usage {
                bytes: 5,
                entries: 0,
            },
        );
        s.begin_move("lease-1-0-a.0");
        s.begin_move("lease-1-0-a.0");
        s.begin_move("lease-9-1-b.1");
        s.end_move("lease-9-1-b.1");
        assert_eq!(s.renames, 3);
        assert_eq!(s.moving.len(), 1);
        s.holds.push((99, 4096));
        s.limits.insert("lease-1-0-a.0".into(), 31_000_000_000);
        s.limits.insert("lease-9-1-b.1".into(), 2_000_000_000);
        let bytes = s.encode();
        assert_eq!(State::parse(&bytes), Some(s.clone()));
        let mut padded = bytes.clone();
        padded.extend_from_slice(b"    ");
        assert_eq!(State::parse(&padded), Some(s.clone()));
        // Empty, cut short, one byte changed, a path for an owner: damaged.
        assert_eq!(State::parse(b""), None);
        assert_eq!(State::parse(&bytes[..bytes.len() - 1]), None);
        for i in 0..bytes.len() - 1 {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert_eq!(State::parse(&b), None, "byte {i}");
        }
        let text = String::from_utf8(bytes).unwrap();
        let body = &text[..text.rfind("sum ").unwrap()];
        let evil = body.replace("lease-9-1-b.1", "lease-../../x.1");
        let evil = format!("{evil}sum {:016x}\n", checksum(evil.as_bytes()));
        assert_eq!(State::parse(evil.as_bytes()), None);
        // Settled to nothing: the entry goes.
        s.sub_flight(
            "lease-9-1-b.1",
            Usage {
                bytes: 9,
                entries: 0,
            },
        );
        assert!(!s.flights.contains_key("lease-9-1-b.1"));
    }
}
