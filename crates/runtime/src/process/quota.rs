//! The file quota of a process extension's read-write folders. The kernel cannot hold a
//! bind-mounted folder to a byte quota, so the folders are measured: before each call, while
//! it runs, and after it. During a call a measure runs as soon as what the kernel reports
//! (inotify, [`warden_fs::growth`]) may have taken the folders over the quota, and on a clock
//! besides (for what it cannot see). No file can outgrow the whole quota in one go either: the
//! sandbox's `RLIMIT_FSIZE` is at most the quota's bytes where it has read-write folders.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_call::CallError;
use warden_fs::growth::{Growth, Since};
use warden_manifest::policy::FileLimits;

/// How often the folders are measured while a call runs when nothing says they grew: a pause
/// of four times the last measure, at least this and at most [`CLOCK_MAX`] (so a folder that
/// takes over 125 ms to measure costs more than a fifth of a core while its call runs; its
/// entries are bounded by `max_entries`).
const CLOCK_MIN: Duration = Duration::from_millis(20);
const CLOCK_MAX: Duration = Duration::from_millis(500);
/// The least time between the end of one measure and the start of the next when growth
/// calls for it: four times the last measure's time, and at least this. So a program that
/// keeps calling for measures costs the host at most a fifth of a core, and itself the time
/// its tree is held still.
const GAP_MIN: Duration = Duration::from_millis(1);
/// A trigger the watch cannot size (a removal, a name gone) holds the tree at once when the
/// measure would otherwise wait longer than this.
const EARLY_HOLD: Duration = Duration::from_millis(2);
/// How long the watch lets events gather before it reads them again, at most: less when what
/// it read so far would take the folders over the quota sooner (see [`Pace`]).
const BATCH: Duration = Duration::from_millis(2);
/// The least time between two reads of the events, and at least four times the last read's
/// time: reads cost the host at most a fifth of a core, as measures do.
const BATCH_MIN: Duration = Duration::from_micros(100);
/// Bytes a second one program may write into the page cache, for [`Pace`] before it has seen a
/// rate (about 3 GB/s on this 2-vCPU VM).
const WRITE_RATE: f64 = 4e9;
/// How long a measure waits for the whole tree to be frozen before it walks anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(50);

/// The read-write folders of an install and their quota.
#[derive(Clone, Debug)]
pub(super) struct Folders {
    pub roots: Vec<PathBuf>,
    pub files: FileLimits,
}

/// What the folders held at a measure.
#[derive(Clone, Copy, Debug, Default)]
struct Measured {
    bytes: u64,
    entries: u64,
    /// Files the sandbox's processes deleted but keep open.
    held_files: u64,
    /// The host ran short of descriptors or memory: not measured, and not the folders' fault.
    host: Option<rustix::io::Errno>,
}

impl Folders {
    /// Blocking: the folders measured now; with `program`, what the processes of its sandbox
    /// hold in files they deleted counts too. With `held`, a tree held still by a measure
    /// during a call, killed there if the folders are over the quota. With `growth`, the
    /// files the tree holds under names that are gone are watched from then on (still held).
    fn measure(
        &self,
        program: Option<u32>,
        held: Option<&mut Held<'_>>,
        growth: Option<&mut Growth>,
    ) -> Measured {
        let mut host = None;
        let (bytes, entries) = self.roots.iter().fold((0u64, 0u64), |(b, e), r| {
            let u = warden_fs::quota::try_walk_consistent(r, self.files.max_entries)
                .unwrap_or_else(|errno| {
                    host = Some(errno);
                    warden_fs::quota::Usage::default()
                });
            (b.saturating_add(u.bytes), e.saturating_add(u.entries))
        });
        let deleted = program.map(|p| held_deleted(p, &self.roots));
        let m = Measured {
            bytes: bytes.saturating_add(deleted.as_ref().map_or(0, |d| d.bytes)),
            entries,
            held_files: deleted.as_ref().map_or(0, |d| d.files),
            host: host.or(deleted.as_ref().and_then(|d| d.host)),
        };
        if let (Some(d), Some(g)) = (deleted, growth) {
            for path in &d.gone {
                g.watch_file(path);
            }
        }
        // Over: killed where it stands, still frozen, not after the way back to the call
        // (outside attack: a writer thawed after the measure that found it 1 MiB over went on
        // to 45-62 MiB before the call's end killed it).
        if let (Some(h), Some(e)) = (held, self.over(m)) {
            h.kill(e);
        }
        m
    }

    fn over(&self, m: Measured) -> Option<CallError> {
        let f = self.files;
        // The quota cannot be kept: the call stops, as the host's failure (outside attack: a
        // host out of descriptors failed its tenants' calls as over their quota).
        if let Some(errno) = m.host {
            return Some(CallError::host_caused(
                "the read-write folders could not be measured: the host is short of resources",
                std::io::Error::from(errno),
            ));
        }
        if m.bytes == u64::MAX {
            return Some(CallError::Quota(format!(
                "the read-write folders could not be measured (unreadable, nested deeper than \
                 128 folders, or changed under every walk); [policy.files] allows {} in {}",
                f.max_bytes, f.max_entries
            )));
        }
        (m.bytes > f.max_bytes.bytes() || m.entries > f.max_entries).then(|| {
            CallError::Quota(format!(
                "the read-write folders hold {} bytes in {} entries; [policy.files] allows {} in {}",
                m.bytes, m.entries, f.max_bytes, f.max_entries
            ))
        })
    }

    /// The quota's error if the folders are over it now (see [`Folders::measure`]).
    pub async fn over_quota(&self, program: Option<u32>) -> Option<CallError> {
        let folders = self.clone();
        let m = tokio::task::spawn_blocking(move || folders.measure(program, None, None))
            .await
            .unwrap_or(FULL);
        self.over(m)
    }

    /// Before a call: the folders watched, then measured; the quota's error if they are over
    /// it already. Without an inotify instance (the kernel's per-user limit) the watch runs
    /// on its clock only.
    pub async fn begin(&self) -> Result<Watch, CallError> {
        let folders = self.clone();
        let (growth, base) = tokio::task::spawn_blocking(move || {
            let growth = Growth::watch(&folders.roots, folders.files.max_entries).ok();
            (growth, folders.measure(None, None, None))
        })
        .await
        .unwrap_or((None, FULL));
        match self.over(base) {
            Some(e) => Err(e),
            None => Ok(Watch { growth, base }),
        }
    }
}

/// A measure that could not be taken: over any quota.
const FULL: Measured = Measured {
    bytes: u64::MAX,
    entries: u64::MAX,
    held_files: 0,
    host: None,
};

/// The quota's watch over one call: what the last measure found, and what grew since.
pub(super) struct Watch {
    growth: Option<Growth>,
    base: Measured,
}

/// What a wait of the watch ended with.
enum Woken {
    /// The call ended.
    Stop,
    /// Its time ran out.
    Time,
    /// Events are queued.
    Events,
}

impl Watch {
    /// Starts the watch on a thread of the blocking pool and returns once that thread runs:
    /// the call's request must not reach the program before (outside attack under load: a
    /// watch whose thread started 100 ms after the program let it write 26-32 MB past a 4 MiB
    /// quota unread; the events were queued, but nothing read them). The watch then ends (with
    /// the quota's error) once the folders are over the quota, measured when growth may have
    /// taken them over (or something was deleted, or is held deleted, or the watch cannot
    /// see), and on a clock. With a freezer, each measure holds the tree still (see
    /// [`Still`]). It runs until the returned [`Watching`] is dropped.
    pub async fn start(
        self,
        folders: &Folders,
        program: u32,
        still: Still,
    ) -> Result<Watching, CallError> {
        let (stop, stopper) = match std::io::pipe() {
            Ok(p) => p,
            // Unwatched, a call could write far past the quota: it does not run.
            Err(e) => return Err(CallError::host_caused("the file quota's watch", e)),
        };
        let folders = folders.clone();
        let (running, started) = tokio::sync::oneshot::channel();
        let task = tokio::task::spawn_blocking(move || {
            // Before the call reaches the program: woken by its writes, the watch runs at once
            // where the host may let it (see `warden_sandbox::Urgent`).
            let urgent = warden_sandbox::Urgent::here();
            let _ = running.send(());
            self.watch(&folders, program, &still, &stop, urgent.as_ref())
        });
        // Dropped before the thread ran: the pipe closes, and the thread ends when it runs.
        let watching = Watching {
            task,
            _stopper: stopper,
        };
        match started.await {
            Ok(()) => Ok(watching),
            Err(_) => Err(CallError::host("the file quota's watch did not start")),
        }
    }

    fn watch(
        mut self,
        folders: &Folders,
        program: u32,
        still: &Still,
        stop: &std::io::PipeReader,
        urgent: Option<&warden_sandbox::Urgent>,
    ) -> Option<CallError> {
        let max = folders.files;
        let mut took = Duration::ZERO;
        loop {
            let ended = Instant::now();
            let gap = (took * 4).max(GAP_MIN);
            let clock = ended + (took * 4).clamp(CLOCK_MIN, CLOCK_MAX);
            // What calls for a measure before the clock: growth that may be over the quota
            // (`over`), or what the watch cannot see (a removal, a name gone, too much at once).
            let mut over = false;
            let mut early = false;
            // Files deleted and held open grow where no event shows them, unless each is
            // watched by itself (with the watch: see `Growth::watch_file`).
            let watching = self.growth.is_some() || self.base.held_files == 0;
            if watching {
                let mut pace = Pace {
                    last: ended,
                    read: Since::default(),
                };
                loop {
                    match wait(stop, self.growth.as_ref(), clock) {
                        Woken::Stop => return None,
                        Woken::Time => break,
                        Woken::Events => {
                            let Some(g) = self.growth.as_mut() else { break };
                            let read_at = Instant::now();
                            let since = g.read();
                            over = self.base.bytes.saturating_add(since.bytes)
                                > max.max_bytes.bytes()
                                || self.base.entries.saturating_add(since.entries)
                                    > max.max_entries;
                            early = over || since.blind || since.removed;
                            if early {
                                break;
                            }
                            // Events read in batches: their lookups cost the host, not the program.
                            let took = read_at.elapsed();
                            let pause = pace.pause(read_at, took, since, self.base, max);
                            if let Woken::Stop = wait(stop, None, Instant::now() + pause) {
                                return None;
                            }
                        }
                    }
                }
            }
            // Held still at once when growth may be over the quota, or when what the watch
            // cannot see would otherwise run free for long (a folder slow to measure): the
            // program then waits for the host's rate, not the host for it (outside attacks:
            // with a folder of 850 folders, 60-80 ms of writing between the trigger and the
            // measure, 49-108 MB past a 4 MiB quota). Without a freezer it runs on meanwhile,
            // and the pause after growth over the quota is one measure's time.
            let at_once = over
                || (early && (ended + gap).saturating_duration_since(Instant::now()) > EARLY_HOLD);
            let mut held = if at_once {
                // Over the quota maybe, by any call of the install: all of them held still
                // while it is measured, not only this one. Only by an urgent watch: an
                // ordinary one can be put off between taking another call's lock and freezing
                // its tree, and that call's own watch, waiting for the lock, could not freeze
                // it either meanwhile.
                let held = still.hold(over && urgent.is_some())?;
                let until = if held.frozen.is_some() || !over {
                    ended + gap
                } else {
                    ended + took.max(GAP_MIN)
                };
                if let Woken::Stop = wait(stop, None, until) {
                    return None;
                }
                held
            } else {
                if let Woken::Stop = wait(stop, None, ended + gap) {
                    return None;
                }
                still.hold(false)?
            };
            // The walk's time, not the freeze's (waited for asleep): what the host spends.
            let started = Instant::now();
            // The walk, with the tree held still, need not be prompt: as an ordinary thread.
            let mut walk = || folders.measure(Some(program), Some(&mut held), self.growth.as_mut());
            let m = match urgent {
                Some(u) => u.ordinary(walk),
                None => walk(),
            };
            took = started.elapsed();
            drop(held);
            if let Some(e) = folders.over(m) {
                return Some(e);
            }
            self.base = m;
            if let Some(g) = self.growth.as_mut() {
                g.rebase();
            }
        }
    }
}

/// How fast the folders grew between the watch's reads of the events, to pause no longer than
/// half the time they would then take to go over the quota, at that rate or at
/// [`WRITE_RATE`]: a fixed pause of [`BATCH`] let a program writing about 3 GB/s go 4-6 MiB
/// past a 4 MiB quota (median of 10 runs; 2 MiB with a pause of 200 µs), the quota filled
/// before the next read.
struct Pace {
    /// When the events were last read (or the folders last measured), and what they said.
    last: Instant,
    read: Since,
}

impl Pace {
    /// The pause before the next read, given the read that began at `now`, `took` that long
    /// and found `since`.
    fn pause(
        &mut self,
        now: Instant,
        took: Duration,
        since: Since,
        base: Measured,
        max: FileLimits,
    ) -> Duration {
        let between = now.saturating_duration_since(self.last).as_secs_f64();
        // The time left at the rate of the last interval, for bytes and for entries.
        let left = |used: u64, grown: u64, limit: u64| {
            (grown > 0).then(|| limit.saturating_sub(used) as f64 * between / grown as f64)
        };
        let used = base.bytes.saturating_add(since.bytes);
        let bytes = left(
            used,
            since.bytes.saturating_sub(self.read.bytes),
            max.max_bytes.bytes(),
        );
        let entries = left(
            base.entries.saturating_add(since.entries),
            since.entries.saturating_sub(self.read.entries),
            max.max_entries,
        );
        (self.last, self.read) = (now, since);
        let fastest = max.max_bytes.bytes().saturating_sub(used) as f64 / WRITE_RATE;
        let soonest = [bytes, entries]
            .into_iter()
            .flatten()
            .fold(fastest, f64::min);
        let pause = Duration::try_from_secs_f64(soonest / 2.0).map_or(BATCH, |d| d.min(BATCH));
        pause.max((took * 4).max(BATCH_MIN))
    }
}

/// A watch that runs (see [`Watch::start`]); dropped, its thread sees its pipe close and ends.
pub(super) struct Watching {
    task: tokio::task::JoinHandle<Option<CallError>>,
    _stopper: std::io::PipeWriter,
}

impl Watching {
    /// The quota's error, once the folders are over it.
    pub async fn ended(mut self) -> CallError {
        match (&mut self.task).await {
            Ok(Some(e)) => e,
            // Only while the call ends: the thread saw its pipe close.
            Ok(None) => std::future::pending().await,
            Err(_) => CallError::host("the file quota's watch ended"),
        }
    }
}

/// Waits until `until`, the call's end (`stop` closed), or events of `growth`.
fn wait(stop: &std::io::PipeReader, growth: Option<&Growth>, until: Instant) -> Woken {
    use rustix::event::{PollFd, PollFlags, Timespec};
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Woken::Time;
        }
        let timeout = Timespec {
            tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = vec![PollFd::new(stop, PollFlags::IN)];
        if let Some(g) = growth {
            fds.push(PollFd::from_borrowed_fd(g.fd(), PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            // The pipe is never written: any event on it is its close.
            Ok(_) if !fds[0].revents().is_empty() => return Woken::Stop,
            Ok(_) => return Woken::Events,
            // Nothing to wait with: the clock's turn.
            Err(_) => {
                std::thread::sleep(left);
                return Woken::Time;
            }
        }
    }
}

/// Holds a sandbox's tree still (frozen) while its folders are measured during a call: a
/// program that moves files between folders as a walk runs hides them from it (outside
/// attack: 601 MiB past a 4 MiB quota within one call), and a tree that cannot run moves
/// nothing. Without a freezer the measure runs beside the program. The lock makes whoever
/// parks or kills the tree after the call wait for a measure in flight, whose thaw would
/// otherwise let a parked tree run.
#[derive(Clone)]
pub(super) struct Still {
    stop: Arc<Stop>,
    running: Arc<Running>,
}

/// How a measure holds and stops a call's tree: this call's own, or another's of the same
/// install.
struct Stop {
    freezer: Option<warden_sandbox::Freezer>,
    killer: Option<warden_sandbox::Killer>,
    /// Why a measure killed the tree: the call's error, whatever its exchange saw (the kill
    /// may end it first).
    killed: Mutex<Option<CallError>>,
    /// Held by a measure that holds the tree still (its own call's or another's), and
    /// whether the call ended: no measure starts after [`Still::settled`].
    lock: Arc<tokio::sync::Mutex<bool>>,
}

impl Stop {
    fn kill(&self, why: &CallError) {
        if let Ok(mut killed) = self.killed.lock() {
            killed.get_or_insert_with(|| why.clone());
        }
        if let Some(k) = &self.killer {
            k.kill();
        }
    }
}

/// The calls of one install running now. They share its folders, so a measure that finds
/// them over the quota stops every one (each would fail at its own next measure, writing
/// on meanwhile: four calls at once left up to 30 MB past a 4 MiB quota).
#[derive(Default)]
pub(super) struct Running(Mutex<Vec<Arc<Stop>>>);

/// A measure in progress: the tree frozen (if it could be) and the lock held until dropped;
/// with the other calls of the install it could hold too.
struct Held<'a> {
    frozen: Option<&'a warden_sandbox::Freezer>,
    still: &'a Still,
    _lock: tokio::sync::MutexGuard<'a, bool>,
    others: Vec<(warden_sandbox::Freezer, tokio::sync::OwnedMutexGuard<bool>)>,
}

impl Still {
    /// A call of the install whose calls are `running`, its tree frozen with `freezer` and
    /// killed with `killer` where it has them.
    pub fn new(
        freezer: Option<warden_sandbox::Freezer>,
        killer: Option<warden_sandbox::Killer>,
        running: &Arc<Running>,
    ) -> Still {
        let stop = Arc::new(Stop {
            freezer,
            killer,
            killed: Mutex::default(),
            lock: Arc::default(),
        });
        if let Ok(mut calls) = running.0.lock() {
            // Calls that ended hold theirs no more.
            calls.retain(|s| Arc::strong_count(s) > 1);
            calls.push(Arc::clone(&stop));
        }
        Still {
            stop,
            running: Arc::clone(running),
        }
    }

    /// Blocking: for a thread of the blocking pool. A freeze that has not landed within
    /// [`FREEZE_WAIT`] still stands while the walk runs: a task held in the kernel (a write
    /// throttled by the disk, an `fsync`) finishes that operation but starts no other, so
    /// nothing moves files in step with the walk (outside attack: threads in long disk writes
    /// kept the tree from ever being frozen, and a walk given up to run beside the program let
    /// 600 MiB hide again). A write the kill cannot interrupt would land after the call over
    /// the quota ended: direct I/O, which waits for the disk uninterruptibly, is refused in the
    /// sandbox for that (`warden_sandbox::seccomp`; 99-132 MiB past a 4 MiB quota before); a
    /// buffered write stops at `SIGKILL` between pages.
    ///
    /// With `others`, the install's other calls running in this process are held too (each
    /// that has a freezer and whose lock is free: one whose lock is taken is held by a
    /// measure already, or ending). Their folders are this call's: with several writers at
    /// once, each wrote on while another's measure ran, until its own watch ran too (outside
    /// attack, session 35: 4 writers beside 4 busy loops went up to 59 MiB past a 4 MiB
    /// quota). Their locks are only tried, never waited for, so two measures cannot wait for
    /// each other.
    fn hold(&self, others: bool) -> Option<Held<'_>> {
        let lock = self.stop.lock.blocking_lock();
        if *lock {
            return None;
        }
        let mut held = Vec::new();
        if others {
            let calls = self.running.0.lock().map(|c| c.clone()).unwrap_or_default();
            for other in calls.iter().filter(|c| !Arc::ptr_eq(c, &self.stop)) {
                let Some(f) = &other.freezer else { continue };
                let Ok(guard) = Arc::clone(&other.lock).try_lock_owned() else {
                    continue;
                };
                // Asked only: the kernel stops them while this one's freeze is waited for.
                if !*guard && f.freeze(Duration::ZERO).is_ok() {
                    held.push((f.clone(), guard));
                }
            }
        }
        let frozen = self
            .stop
            .freezer
            .as_ref()
            .filter(|f| f.freeze(FREEZE_WAIT).is_ok());
        Some(Held {
            frozen,
            still: self,
            _lock: lock,
            others: held,
        })
    }

    /// The quota's error if a measure killed the tree.
    pub fn killed(&self) -> Option<CallError> {
        self.stop.killed.lock().ok()?.clone()
    }

    /// Waits for a measure in flight to end (its tree thawed), off the executor if it must,
    /// and lets none start after.
    pub async fn settled(&self) {
        if let Ok(mut calls) = self.running.0.lock() {
            calls.retain(|s| !Arc::ptr_eq(s, &self.stop));
        }
        *self.stop.lock.lock().await = true;
    }
}

impl Held<'_> {
    /// Kills the tree and leaves it frozen: it dies when whoever holds its handle thaws it to
    /// reap it, and runs none of its own code before.
    fn kill(&mut self, why: CallError) {
        self.still.stop.kill(&why);
        if let Ok(calls) = self.still.running.0.lock() {
            for other in calls.iter() {
                other.kill(&why);
            }
        }
        self.frozen = None;
        // Killed frozen as well; their locks go now.
        self.others.clear();
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.frozen {
            let _ = f.thaw();
        }
        // Thawed before their locks go: whoever parks one after its call waits for the lock.
        for (f, _lock) in &self.others {
            let _ = f.thaw();
        }
    }
}

/// What the tree holds open of files on the folders' file systems, apart from the folders.
struct HeldDeleted {
    /// Bytes of the files deleted (no link left) and kept open.
    bytes: u64,
    /// How many such files.
    files: u64,
    /// `/proc/PID/fd/N` of every file open under a name that is gone (at most [`MAX_GONE`]).
    gone: Vec<String>,
    /// The host was short of descriptors or memory to read a process's: not all was seen.
    host: Option<rustix::io::Errno>,
}

/// Files held open under names that are gone, watched by themselves, at most.
const MAX_GONE: usize = 256;

/// Bytes (and how many files) of the regular files on the file systems of `roots` that the
/// processes of the sandbox whose program is `program` keep open after deleting them: no
/// folder lists them any more, yet they hold the disk (outside attack: 1 GiB held for a call
/// whose folder measured 8 KiB). The tree is followed from the program, init of its pid
/// namespace, so orphans are in it. What cannot be read is left out. Files kept only as
/// memory mappings count too ([`mapped_deleted`]).
fn held_deleted(program: u32, roots: &[PathBuf]) -> HeldDeleted {
    use std::os::unix::fs::MetadataExt;
    let devs: Vec<u64> = roots
        .iter()
        .filter_map(|r| std::fs::metadata(r).ok().map(|m| m.dev()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut mapped = std::collections::HashMap::new();
    let mut host = None;
    let mut held = 0u64;
    let mut gone = Vec::new();
    // The tree is bounded by `processes`; 4096 bounds a walk of a changing one.
    for (pid, _) in warden_sandbox::tree(program, 4096) {
        let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            Err(e) => {
                // The host's shortage is not the program's absence: the measure is not taken.
                host = host.or(short(&e));
                continue;
            }
        };
        for fd in fds.flatten() {
            let Ok(m) = std::fs::metadata(fd.path()) else {
                continue;
            };
            // Opened under a name that is gone (the file may still have another): its writes
            // reach no folder's watch.
            if m.is_file()
                && devs.contains(&m.dev())
                && gone.len() < MAX_GONE
                && std::fs::read_link(fd.path())
                    .is_ok_and(|l| l.as_os_str().as_encoded_bytes().ends_with(b" (deleted)"))
            {
                gone.push(fd.path().to_string_lossy().into_owned());
            }
            if m.is_file()
                && m.nlink() == 0
                && devs.contains(&m.dev())
                && seen.insert((m.dev(), m.ino()))
            {
                held = held.saturating_add(m.len().max(m.blocks().saturating_mul(512)));
            }
        }
        host = host.or(mapped_deleted(pid, &devs, &mut mapped));
    }
    // Mapped only (no descriptor open on them, or they would be in `seen`).
    for ((dev, ino), bytes) in mapped {
        if seen.insert((dev, ino)) {
            held = held.saturating_add(bytes);
        }
    }
    HeldDeleted {
        bytes: held,
        files: seen.len() as u64,
        gone,
        host,
    }
}

/// Adds to `mapped` the files on the devices `devs` that process `pid` maps under a name that
/// is gone, by (device, inode): a program can create a file, map it, close and delete it, and
/// fill it through the mapping, which no descriptor and no folder shows (nor any inotify
/// event), and hold the disk until it ends. Where this host may read the mapping's file
/// (`/proc/PID/map_files`: root), its real size, if no link is left; elsewhere the end of its
/// furthest mapping, which bounds what the mappings can write (a name deleted while another
/// link stays then counts twice: the measure errs on the side of the quota).
fn mapped_deleted(
    pid: u32,
    devs: &[u64],
    mapped: &mut std::collections::HashMap<(u64, u64), u64>,
) -> Option<rustix::io::Errno> {
    use std::os::unix::fs::MetadataExt;
    let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(maps) => maps,
        Err(e) => return short(&e),
    };
    for line in maps.lines().filter(|l| l.ends_with(" (deleted)")) {
        // start-end perms offset major:minor inode path
        let mut f = line.split_whitespace();
        let (Some(range), Some(_), Some(offset), Some(dev), Some(ino)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let hex = |t: &str| u64::from_str_radix(t, 16).ok();
        let (Some((start, end)), Some(offset), Some((major, minor)), Ok(ino)) = (
            range
                .split_once('-')
                .and_then(|(a, b)| Some((hex(a)?, hex(b)?))),
            hex(offset),
            dev.split_once(':')
                .and_then(|(a, b)| Some((hex(a)?, hex(b)?))),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        let dev = makedev(major, minor);
        if !devs.contains(&dev) {
            continue;
        }
        let bytes = match std::fs::metadata(format!("/proc/{pid}/map_files/{range}")) {
            Ok(m) if m.ino() == ino => {
                if m.nlink() > 0 {
                    continue;
                }
                m.len().max(m.blocks().saturating_mul(512))
            }
            _ => offset.saturating_add(end.saturating_sub(start)),
        };
        let held = mapped.entry((dev, ino)).or_default();
        *held = (*held).max(bytes);
    }
    None
}

/// `e`, if it is the host's shortage of descriptors or memory.
fn short(e: &std::io::Error) -> Option<rustix::io::Errno> {
    rustix::io::Errno::from_io_error(e).filter(|e| warden_fs::quota::host_short(*e))
}

/// A device number as `stat` gives it, from the major and minor `/proc/PID/maps` shows.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The pause before the next read of the events: the whole batch while the folders are
    /// far from the quota at the rate they grow (or could), half the time left when near, and
    /// never below [`BATCH_MIN`].
    #[test]
    fn reads_come_sooner_as_growth_nears_the_quota() {
        const MIB: u64 = 1 << 20;
        let limits = |mib| FileLimits {
            max_bytes: warden_manifest::ByteSize::mib(mib),
            max_entries: 100,
        };
        let base = Measured::default();
        let grown = |bytes, entries| Since {
            bytes,
            entries,
            ..Since::default()
        };
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let pause = |since: Since, max| {
            let mut pace = Pace {
                last: t0,
                read: Since::default(),
            };
            pace.pause(ms(1), Duration::ZERO, since, base, max)
        };
        // A large quota, nothing grown or slowly: 4 KiB a millisecond leaves about a minute.
        assert_eq!(pause(grown(0, 0), limits(256)), BATCH);
        assert_eq!(pause(grown(4 << 10, 0), limits(256)), BATCH);
        // 200 MiB in a millisecond with 56 MiB left: over in about a quarter of one.
        let near = pause(grown(200 * MIB, 0), limits(256));
        assert!(
            near < Duration::from_micros(200) && near >= BATCH_MIN,
            "{near:?}"
        );
        // A small quota is near from the start: 4 MiB fill in a millisecond at [`WRITE_RATE`].
        let small = pause(grown(0, 0), limits(4));
        assert!(
            small <= Duration::from_micros(600) && small >= BATCH_MIN,
            "{small:?}"
        );
        // Entries count as bytes do: 90 of 100 made in a millisecond.
        let entries = pause(grown(0, 90), limits(256));
        assert!(entries < BATCH && entries >= BATCH_MIN, "{entries:?}");
        // At the quota: the least pause.
        assert_eq!(pause(grown(4 * MIB, 0), limits(4)), BATCH_MIN);
        // The rate is the last interval's: growth read before counts from that read.
        let mut pace = Pace {
            last: t0,
            read: Since::default(),
        };
        let max = limits(256);
        let first = pace.pause(ms(10), Duration::ZERO, grown(200 * MIB, 0), base, max);
        assert!(first < BATCH, "{first:?}");
        let still = pace.pause(ms(15), Duration::ZERO, grown(200 * MIB, 0), base, max);
        assert_eq!(still, BATCH);
        // A read that took long makes the pause at least four times as long.
        let slow = pace.pause(ms(20), BATCH, grown(200 * MIB, 0), base, max);
        assert_eq!(slow, BATCH * 4);
    }

    #[test]
    fn device_numbers_of_maps_match_stat() {
        use std::os::unix::fs::MetadataExt;
        // This test's own executable: mapped, and on a real device.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let dev = std::fs::metadata(&exe).unwrap().dev();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.ends_with(exe.to_str().unwrap()))
            .unwrap();
        let (major, minor) = line
            .split_whitespace()
            .nth(3)
            .unwrap()
            .split_once(':')
            .unwrap();
        let (major, minor) = (
            u64::from_str_radix(major, 16).unwrap(),
            u64::from_str_radix(minor, 16).unwrap(),
        );
        assert_eq!(makedev(major, minor), dev);
        // Majors and minors past 8 bits go to the high bits, as glibc's `makedev` puts them.
        assert_eq!(makedev(0x103, 0x10_0005), 0x1_0001_0305);
    }
}
