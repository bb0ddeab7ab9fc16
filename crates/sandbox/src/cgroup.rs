//! A cgroup per sandbox, where the kernel lets this process make one: `pids.max` bounds the
//! whole tree's processes and threads, and the memory limit its resident memory, page cache,
//! tmpfs pages and kernel memory included (what `RLIMIT_AS`, counted per process and blind to
//! shared and anonymous files, does not see).
//!
//! Two layouts are found ([`Root::find`]):
//! - cgroup v1 (a root host, or one given the hierarchies): the `pids` and `memory` hierarchies,
//!   each under this process's own cgroup in it, writable;
//! - cgroup v2: a folder whose `cgroup.subtree_control` enables `pids` and `memory` and that this
//!   process may write: its own cgroup when it is the root, else its parent (systemd's
//!   `Delegate=pids memory` with `DelegateSubgroup=`, which puts the service one level down).
//!
//! Where the `cpu` controller is there too (v1's `cpu` hierarchy, or v2's `cpu` offered beside
//! pids and memory), the sandboxes also share one cpu group: all of one host's sandboxes
//! together weigh, when the CPU is contended, as much as one scheduling entity beside them
//! (the host's session's autogroup in the root group, or its sibling cgroup in v2; in a v1
//! cpu group of the host's own, one of the host's threads), and each sandbox as much as
//! another. (Twice that weight was tried: outside attacks then had one tenant's calls, near
//! their file quota and waking often, hold `/healthz` up to 1.4-2.9 s, against 39 ms at the
//! default weight and 290-370 ms where each sandbox was a session.)
//! Without it each sandbox is a session of its own (`setsid`), and where the kernel groups
//! sessions (`kernel.sched_autogroup_enabled`) each weighs as much as the whole host: eight
//! busy sandboxes left the host's threads a ninth of the CPU (outside attack: eight calls
//! at once wrote up to 70 MiB past a 4 MiB file quota, its watch thread starved).
//!
//! Each host process makes `warden-<pid>` there and one numbered folder per sandbox in it. The
//! child is moved in by the parent before it is released, so its program never runs outside.
//! A sandbox's folder is removed once its init is reaped; what cannot be removed at once is
//! retried at the next spawn, and folders of host processes that are gone are removed when the
//! root is found.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where this process's sandboxes get their cgroups.
#[derive(Debug)]
pub(crate) struct Root {
    version: Version,
    /// `warden-<pid>` in each hierarchy: v1 pids then memory; v2 one.
    bases: Vec<PathBuf>,
    /// Where v1 sandboxes are frozen: this host's folder in the cgroup v2 hierarchy mounted
    /// beside v1 ("hybrid"), where it is writable. (v2 sandboxes freeze in their one folder.
    /// v1's own freezer is not used: a task it froze ignores `SIGKILL` until thawed, so a host
    /// that died with sandboxes parked would leave them for ever.)
    freezer: Option<PathBuf>,
    /// Where v1 sandboxes share their cpu group: this host's folder in the `cpu` hierarchy,
    /// where it is writable. (v2 sandboxes share theirs in their one folder, where `cpu` is
    /// offered: see `weighed`.)
    cpu: Option<PathBuf>,
    /// Whether sandboxes are weighed in a cpu group of their own (v1 or v2).
    weighed: bool,
    /// Locks on the bases, held while this process lives: how a later host tells a dead
    /// host's folders from a live one's, whatever pid namespace either runs in.
    _locks: Vec<File>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// One sandbox's cgroup; removed when dropped (after its processes are gone).
#[derive(Debug)]
pub(crate) struct Cgroup {
    version: Version,
    dirs: Vec<PathBuf>,
    /// The file that freezes the tree: v1 `freezer.state`, v2 `cgroup.freeze`. Files read or
    /// written on every warm call are kept open: opening a cgroup file costs more than using it.
    freeze: Option<Arc<File>>,
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    usage: Option<File>,
    /// `pids.current`.
    pids: Option<File>,
    /// `memory.oom_control` (v1) or `memory.events` (v2), read after every call.
    events: Option<File>,
    /// `memory.max_usage_in_bytes` (v1) or `memory.peak` (v2), open for writing where it may
    /// be: a reset through this handle starts a new peak for its later reads (v2: Linux 6.12).
    peak: Option<File>,
}

/// Where [`root`] keeps what it found, and [`remove_own_folders`] looks.
static ROOT: std::sync::OnceLock<(Result<Root, String>, Vec<String>)> = std::sync::OnceLock::new();

/// This process's root, found once (with the notes of the search).
pub(crate) fn root() -> &'static (Result<Root, String>, Vec<String>) {
    ROOT.get_or_init(|| {
        let mut notes = Vec::new();
        let r = Root::find(&mut notes);
        (r, notes)
    })
}

/// Folders that could not be removed yet (a process of the tree still dying).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl Root {
    /// Finds a place for sandboxes' cgroups; `Err` says why there is none.
    pub(crate) fn find(notes: &mut Vec<String>) -> Result<Root, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let mounts = Mount::parse(&mountinfo);
        let v2 = match v2_base(&own, &mounts, notes) {
            Ok(dir) => return Root::make(Version::V2, vec![dir], None, None, notes),
            Err(why) => why,
        };
        let v1 = match v1_bases(&own, &mounts) {
            Ok(dirs) => {
                // The freezer is optional: without it warm processes are parked by signal.
                let freezer = v2_own(&own, &mounts).filter(|d| writable(d));
                match &freezer {
                    Some(f) => notes.push(format!("freezing in cgroup v2 at {}", f.display())),
                    None => notes.push("no writable cgroup v2 folder to freeze in".to_owned()),
                }
                let cpu = v1_dir("cpu", &own, &mounts);
                if let Err(why) = &cpu {
                    notes.push(format!("no cpu group for sandboxes: {why}"));
                }
                return Root::make(Version::V1, dirs, cpu.ok(), freezer, notes);
            }
            Err(why) => why,
        };
        Err(format!("cgroup v2: {v2}; cgroup v1: {v1}"))
    }

    /// This host's folders under `parents` (the required hierarchies), `cpu` and `freezer`
    /// (optional, v1: one that cannot be made is a note in `notes`, and the sandboxes go
    /// without it, not without their limits).
    fn make(
        version: Version,
        parents: Vec<PathBuf>,
        cpu: Option<PathBuf>,
        freezer: Option<PathBuf>,
        notes: &mut Vec<String>,
    ) -> Result<Root, String> {
        // The pid alone is not unique: hosts in other pid namespaces may share the hierarchy.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("warden-{}-{nonce:x}", std::process::id());
        let mut locks = Vec::new();
        let mut base_in = |parent: &PathBuf| -> Result<PathBuf, String> {
            let (base, lock) = locked_base(parent, &name)?;
            locks.push(lock);
            Ok(base)
        };
        let bases = parents
            .iter()
            .map(&mut base_in)
            .collect::<Result<Vec<_>, _>>()?;
        let mut optional = |parent: Option<PathBuf>, what: &str| {
            let made = base_in(&parent?);
            made.map_err(|why| notes.push(format!("no {what}: {why}")))
                .ok()
        };
        let cpu = optional(cpu, "cpu group for sandboxes");
        let freezer = optional(freezer, "freezer");
        let mut weighed = cpu.is_some();
        if version == Version::V2 {
            for base in &bases {
                std::fs::write(base.join("cgroup.subtree_control"), "+pids +memory")
                    .map_err(|e| format!("enabling pids and memory in {}: {e}", base.display()))?;
                // Optional: where the parent does not offer it, sandboxes are weighed as
                // sessions (see the module's comment).
                weighed = enabled(base, "cgroup.controllers")
                    .iter()
                    .any(|c| c == "cpu")
                    && std::fs::write(base.join("cgroup.subtree_control"), "+cpu").is_ok();
            }
        }
        Ok(Root {
            version,
            bases,
            weighed,
            cpu,
            freezer,
            _locks: locks,
        })
    }

    /// For reports: the version and the folders.
    pub(crate) fn describe(&self) -> String {
        let dirs: Vec<String> = self.bases.iter().map(|b| b.display().to_string()).collect();
        let v = match self.version {
            Version::V1 => "v1 (pids, memory)",
            Version::V2 => "v2",
        };
        let freezer = match (&self.freezer, self.version) {
            (Some(f), _) => format!("; frozen in cgroup v2 under {}", f.display()),
            (None, Version::V2) => "; frozen in place".to_owned(),
            (None, Version::V1) => "; no freezer".to_owned(),
        };
        let cpu = match (&self.cpu, self.weighed) {
            (Some(c), _) => format!("; one cpu group for all sandboxes under {}", c.display()),
            (None, true) => "; one cpu group for all sandboxes in place".to_owned(),
            (None, false) => "; no cpu group: each sandbox is weighed as a session".to_owned(),
        };
        format!("{v} under {}{freezer}{cpu}", dirs.join(", "))
    }

    /// Whether all sandboxes of this host share one cpu group (see the module's comment).
    pub(crate) fn weighed(&self) -> bool {
        self.weighed
    }

    /// A fresh cgroup for one sandbox with its limits set; the caller moves the child in with
    /// [`Cgroup::enter`] before releasing it.
    pub(crate) fn create(&self, processes: u64, memory: u64) -> std::io::Result<Cgroup> {
        static N: AtomicU64 = AtomicU64::new(0);
        retry_pending();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut cg = Cgroup {
            version: self.version,
            dirs: Vec::with_capacity(self.bases.len() + 1),
            freeze: None,
            usage: None,
            pids: None,
            events: None,
            peak: None,
        };
        for base in self.bases.iter().chain(&self.cpu).chain(&self.freezer) {
            let dir = base.join(n.to_string());
            std::fs::create_dir(&dir)?;
            cg.dirs.push(dir);
        }
        let (usage, events, peak) = match self.version {
            Version::V1 => (
                "memory.usage_in_bytes",
                "memory.oom_control",
                "memory.max_usage_in_bytes",
            ),
            Version::V2 => ("memory.current", "memory.events", "memory.peak"),
        };
        let open = |name: &str, write: bool| {
            cg.dirs.iter().find_map(|d| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(d.join(name))
                    .ok()
            })
        };
        let (freeze, usage, pids) = (
            open("cgroup.freeze", true).map(Arc::new),
            open(usage, false),
            open("pids.current", false),
        );
        (cg.freeze, cg.usage, cg.pids) = (freeze, usage, pids);
        cg.events = open(events, false);
        cg.peak = open(peak, true).or_else(|| open(peak, false));
        let first = |name: &str| cg.dirs.iter().find(|d| d.join(name).exists());
        let pids = first("pids.max").ok_or_else(|| missing("pids.max"))?;
        std::fs::write(pids.join("pids.max"), processes.to_string())?;
        match self.version {
            Version::V2 => {
                let dir = &cg.dirs[0];
                std::fs::write(dir.join("memory.max"), memory.to_string())?;
                // Swap would let the tree hold more than the limit; absent without swap.
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            }
            Version::V1 => {
                let dir = first("memory.limit_in_bytes").ok_or_else(|| missing("memory"))?;
                std::fs::write(dir.join("memory.limit_in_bytes"), memory.to_string())?;
                // memory + swap no more than memory alone; absent without swap accounting.
                let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), memory.to_string());
            }
        }
        Ok(cg)
    }
}

/// This host's folder `name-N` under `parent`, made and locked (after removing dead hosts'
/// folders there). No lock on the parent (anyone may read, so lock, a cgroup folder: a user
/// holding it would hang every host). Instead: make the folder, lock it, and check it is still
/// there; a host cleaning up at the same moment may take a fresh folder for a dead host's
/// before it is locked: then try again under another name.
fn locked_base(parent: &Path, name: &str) -> Result<(PathBuf, File), String> {
    remove_dead_hosts(parent);
    for attempt in 0..8 {
        let base = parent.join(format!("{name}-{attempt}"));
        if std::fs::create_dir(&base).is_err() {
            continue;
        }
        let Ok(lock) = File::open(&base) else {
            continue;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
            && base.is_dir()
        {
            return Ok((base, lock));
        }
    }
    Err(format!(
        "could not make and lock a folder of {} (8 tries)",
        parent.display()
    ))
}

fn frozen_in(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        std::fs::read_to_string(d.join("cgroup.events"))
            .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
    })
}

/// A sandbox's freezer held apart from its [`crate::Child`], so that its tree can be held
/// still from another thread while the child is in use (its folders measured during a call).
#[derive(Debug, Clone)]
pub struct Freezer {
    file: Arc<File>,
    dirs: Vec<PathBuf>,
}

impl Freezer {
    /// Asks the kernel to freeze the tree: from then on no task of it returns to its own code
    /// until [`Freezer::thaw`], even one that is not frozen yet (busy in the kernel: a long
    /// disk write). Then waits at most `within` for every task to be frozen, and says whether
    /// they were; the request stands either way.
    pub fn freeze(&self, within: std::time::Duration) -> std::io::Result<bool> {
        self.file.write_at(b"1", 0)?;
        let asked = std::time::Instant::now();
        loop {
            if frozen_in(&self.dirs) {
                return Ok(true);
            }
            if asked.elapsed() >= within {
                return Ok(false);
            }
            // Most freezes land within microseconds; a tree busy in the kernel may take
            // milliseconds, waited for asleep (the host's CPU is not its to spend).
            if asked.elapsed() < std::time::Duration::from_micros(200) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// Lets the tree run again.
    pub fn thaw(&self) -> std::io::Result<()> {
        thaw_file(&self.file)
    }
}

fn thaw_file(f: &File) -> std::io::Result<()> {
    f.write_at(b"0", 0).map(drop)
}

/// A number read from the start of an open cgroup file.
fn read_number(f: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

fn missing(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("the cgroup has no {what}"),
    )
}

impl Cgroup {
    /// Moves process `pid` (the sandbox's init, not yet released) into this cgroup.
    pub(crate) fn enter(&self, pid: i32) -> std::io::Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the tree can be frozen (then nothing in it runs, whatever signals it gets).
    pub(crate) fn can_freeze(&self) -> bool {
        self.freeze.is_some()
    }

    /// Starts freezing the tree; [`Cgroup::frozen`] says when it is done.
    pub(crate) fn freeze(&self) -> std::io::Result<()> {
        let f = self.freeze.as_ref().ok_or_else(|| missing("freezer"))?;
        f.write_at(b"1", 0).map(drop)
    }

    /// Lets the tree run again.
    pub(crate) fn thaw(&self) -> std::io::Result<()> {
        thaw_file(self.freeze.as_ref().ok_or_else(|| missing("freezer"))?)
    }

    /// The freezer apart from the handle.
    pub(crate) fn freezer(&self) -> Option<Freezer> {
        Some(Freezer {
            file: Arc::clone(self.freeze.as_ref()?),
            dirs: self.dirs.clone(),
        })
    }

    /// A way to thaw the tree later without the handle (after the next request is sent).
    pub(crate) fn thawer(&self) -> Option<impl FnOnce() + Send + 'static + use<>> {
        let f = Arc::clone(self.freeze.as_ref()?);
        Some(move || {
            let _ = thaw_file(&f);
        })
    }

    /// Whether every task of the tree is frozen now.
    pub(crate) fn frozen(&self) -> bool {
        frozen_in(&self.dirs)
    }

    /// The thread ids of every task in the cgroup now (v1 `tasks`, v2 `cgroup.threads`).
    pub(crate) fn threads(&self) -> Option<Vec<i32>> {
        let dir = self.dirs.first()?;
        let file = match self.version {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.threads",
        };
        let list = std::fs::read_to_string(dir.join(file)).ok()?;
        Some(list.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Tasks (processes and threads) in the cgroup now.
    pub(crate) fn tasks(&self) -> Option<u64> {
        read_number(self.pids.as_ref()?)
    }

    /// The memory the tree holds now.
    pub(crate) fn memory_now(&self) -> Option<u64> {
        read_number(self.usage.as_ref()?)
    }

    /// The most memory the tree has held at once, in bytes (v2 needs Linux 5.19).
    /// Since the last [`Cgroup::reset_memory_peak`] that worked, if any.
    pub(crate) fn memory_peak(&self) -> Option<u64> {
        read_number(self.peak.as_ref()?)
    }

    /// Starts a new peak at the memory held now, for [`Cgroup::memory_peak`]; `false` where
    /// the kernel cannot (cgroup v2 before Linux 6.12: the file is read-only).
    pub(crate) fn reset_memory_peak(&self) -> bool {
        let Some(f) = self.peak.as_ref() else {
            return false;
        };
        let reset: &[u8] = match self.version {
            Version::V1 => b"0",
            Version::V2 => b"reset",
        };
        f.write_at(reset, 0).is_ok()
    }

    /// How many times the kernel killed a process of the tree for the memory limit.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let mut buf = [0u8; 512];
        let n = self.events.as_ref()?.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n])
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.dirs.drain(..) {
            // The tree's last processes can take a moment to leave the cgroup after its init
            // is reaped (EBUSY meanwhile).
            let mut removed = false;
            for _ in 0..5 {
                if std::fs::remove_dir(&dir).is_ok() {
                    removed = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            if !removed {
                let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
                pending.push(dir);
            }
        }
    }
}

/// Removes this process's folders, where its sandboxes' cgroups are made, as far as they are
/// empty: for a process that is exiting, once its sandboxes are gone. (The next host to start
/// under the same parents would remove them too, but until then each process that made a
/// sandbox left its folders behind.) A sandbox asked for after this is refused: its cgroup
/// cannot be made.
pub fn remove_own_folders() {
    let Some((Ok(root), _)) = ROOT.get() else {
        return;
    };
    retry_pending();
    for dir in root.bases.iter().chain(&root.cpu).chain(&root.freezer) {
        let _ = std::fs::remove_dir(dir);
    }
}

fn retry_pending() {
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    pending.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
}

/// Removes the folders of hosts that are gone (their lock is free), with whatever is left in
/// them: processes that did not die with their host (a frozen one cannot) are killed, thawed
/// and waited for.
fn remove_dead_hosts(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("warden-"))
        {
            continue;
        }
        let Ok(lock) = File::open(e.path()) else {
            continue;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // its host lives
        }
        if let Ok(children) = std::fs::read_dir(e.path()) {
            for c in children.flatten() {
                if c.file_type().is_ok_and(|t| t.is_dir()) {
                    empty_and_remove(&c.path());
                }
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

/// Kills every process of a leftover sandbox cgroup, thaws it, and removes it once empty
/// (waiting at most about 100 ms).
fn empty_and_remove(dir: &Path) {
    for _ in 0..100 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
        let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A cgroup file system mounted here: v1 with its controllers, or v2.
struct Mount {
    /// The cgroup path of the mount's root (not `/` inside some containers).
    root: String,
    at: String,
    v2: bool,
    controllers: Vec<String>,
}

impl Mount {
    fn parse(mountinfo: &str) -> Vec<Mount> {
        mountinfo
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mut left = left.split(' ');
                let root = left.nth(3)?.to_owned();
                let at = left.next()?.to_owned();
                let mut right = right.split(' ');
                let fstype = right.next()?;
                let options = right.nth(1).unwrap_or("");
                match fstype {
                    "cgroup2" => Some(Mount {
                        root,
                        at,
                        v2: true,
                        controllers: Vec::new(),
                    }),
                    "cgroup" => Some(Mount {
                        root,
                        at,
                        v2: false,
                        controllers: options.split(',').map(str::to_owned).collect(),
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// This mount's folder for cgroup path `path`, if the mount shows it.
    fn dir(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            let rel = path.strip_prefix(self.root.as_str())?;
            if !(rel.is_empty() || rel.starts_with('/')) {
                return None; // `/outerx` is not below `/outer`
            }
            rel
        };
        let rel = rel.trim_start_matches('/');
        Some(Path::new(&self.at).join(rel))
    }
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

fn enabled(dir: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// This process's folder in the cgroup v2 hierarchy, if one is mounted.
/// This process's path in the cgroup v2 hierarchy, from its `/proc/self/cgroup` text.
pub(crate) fn v2_path(own: &str) -> Option<&str> {
    own.lines().find_map(|l| l.strip_prefix("0::"))
}

/// This process's path in the v1 hierarchy that has `controller`, from its `/proc/self/cgroup`
/// text.
pub(crate) fn v1_path<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_id, names, path) = (f.next()?, f.next()?, f.next()?);
        names.split(',').any(|n| n == controller).then_some(path)
    })
}

fn v2_own(own: &str, mounts: &[Mount]) -> Option<PathBuf> {
    let path = v2_path(own)?;
    mounts
        .iter()
        .find(|m| m.v2)?
        .dir(path)
        .filter(|d| d.is_dir())
}

fn v2_base(own: &str, mounts: &[Mount], notes: &mut Vec<String>) -> Result<PathBuf, String> {
    let path = v2_path(own).ok_or("this process has no cgroup v2 path")?;
    let mount = mounts
        .iter()
        .find(|m| m.v2)
        .ok_or("no cgroup2 file system is mounted")?;
    let dir = mount
        .dir(path)
        .ok_or_else(|| format!("the cgroup2 mount does not show {path}"))?;
    notes.push(format!("cgroup v2: {}", dir.display()));
    let offered = enabled(&dir, "cgroup.controllers");
    if !["pids", "memory"]
        .iter()
        .all(|c| offered.iter().any(|o| o == c))
    {
        return Err(format!(
            "{} offers [{}], not pids and memory (bound to cgroup v1, or not delegated)",
            dir.display(),
            offered.join(" ")
        ));
    }
    // Processes may live only in leaves (except the root), so sandboxes go where pids and
    // memory are already enabled for children: here if this is the root, else the parent.
    let candidates = if path == "/" {
        vec![dir.clone()]
    } else {
        dir.parent().map(Path::to_path_buf).into_iter().collect()
    };
    for c in candidates {
        let sub = enabled(&c, "cgroup.subtree_control");
        let has = |x: &str| sub.iter().any(|s| s == x);
        if has("pids") && has("memory") && writable(&c) {
            return Ok(c);
        }
    }
    Err(format!(
        "no writable folder at or above {} enables pids and memory for its children (delegate them with a subgroup for warden itself)",
        dir.display()
    ))
}

fn v1_bases(own: &str, mounts: &[Mount]) -> Result<Vec<PathBuf>, String> {
    ["pids", "memory"]
        .into_iter()
        .map(|c| v1_dir(c, own, mounts))
        .collect()
}

/// This process's folder in v1 hierarchy `controller`, if writable.
fn v1_dir(controller: &str, own: &str, mounts: &[Mount]) -> Result<PathBuf, String> {
    {
        let path = v1_path(own, controller).ok_or_else(|| format!("no {controller} hierarchy"))?;
        let mount = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
            .ok_or_else(|| format!("the {controller} hierarchy is not mounted"))?;
        let dir = mount
            .dir(path)
            .filter(|d| d.is_dir())
            .ok_or_else(|| format!("the {controller} mount does not show {path}"))?;
        if !writable(&dir) {
            return Err(format!("{} is not writable", dir.display()));
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 /outer /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn an_optional_folder_that_cannot_be_made_is_a_note_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let parents = ["pids", "memory"].map(|c| dir.path().join(c));
        for p in &parents {
            std::fs::create_dir(p).unwrap();
        }
        // A file where the hierarchy's folder should be: nothing can be made in it.
        let blocked = dir.path().join("cpu");
        std::fs::write(&blocked, "").unwrap();
        let mut notes = Vec::new();
        let root = Root::make(
            Version::V1,
            parents.to_vec(),
            Some(blocked.clone()),
            Some(blocked),
            &mut notes,
        )
        .unwrap();
        assert_eq!(root.bases.len(), 2);
        assert!(root.bases.iter().all(|b| b.is_dir()));
        assert!(root.cpu.is_none() && root.freezer.is_none() && !root.weighed());
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("no cpu group for sandboxes: "),
            "{notes:?}"
        );
        assert!(notes[1].starts_with("no freezer: "), "{notes:?}");
        // A required one is still a failure.
        let mut notes = Vec::new();
        let none = Root::make(
            Version::V1,
            vec![dir.path().join("cpu")],
            None,
            None,
            &mut notes,
        );
        assert!(none.is_err());
    }

    #[test]
    fn mounts_are_parsed_with_their_roots_and_controllers() {
        let m = Mount::parse(MOUNTINFO);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].controllers, ["rw", "memory"]);
        assert_eq!(
            m[0].dir("/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b"))
        );
        // A mount of a subtree shows only paths below its root.
        assert_eq!(
            m[1].dir("/outer/x"),
            Some(PathBuf::from("/sys/fs/cgroup/pids/x"))
        );
        assert_eq!(m[1].dir("/elsewhere"), None);
        assert_eq!(m[1].dir("/outerx"), None);
        assert!(m[2].v2);
    }
}
