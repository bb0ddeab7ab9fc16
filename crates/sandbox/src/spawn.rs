//! The parent's side of a spawn: everything prepared before the clone, the clone itself on a
//! spawner thread, the id maps, and the child's report.

use std::ffi::{CString, c_char};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::time::Instant;

use rustix::io::Errno;
use rustix::mount::MountFlags;
use rustix::process::Resource;

use crate::child::{Bind, ChildFds, Exec, Layout, Plan, Step};
use crate::process::Child;
use crate::profile::{
    Access, BUNDLE_AT, BundlePath, IdMapping, Profile, ProfileError, SANDBOX_GID, SANDBOX_UID,
    SandboxPath, TMP_INODES, Weakening,
};
use crate::rules::{Rights, RulesError};
use crate::seccomp::FilterError;
use crate::support::{Feature, MissingFeature, Support};
use crate::sys;

/// The namespaces every sandboxed program gets.
const NAMESPACES: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWNET) as u64;

/// The most arguments or environment variables one invocation may pass.
pub const MAX_ARGS: usize = 256;

/// Why a sandbox could not be made or a program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Missing(#[from] MissingFeature),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("argument or environment value contains a NUL byte")]
    Nul,
    #[error("environment variable name {0:?} is not [A-Za-z_][A-Za-z0-9_]*")]
    EnvName(String),
    #[error("more than {MAX_ARGS} arguments or environment variables")]
    TooManyArgs,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the sandbox setup failed at step \"{}\": {errno}", step.name())]
    Setup { step: Step, errno: Errno },
    #[error("the sandboxed child ended during setup without a report")]
    ChildVanished,
    /// The invocation's deadline passed before its program could start: it never ran.
    #[error("the deadline passed while the sandbox was being set up (the program never started)")]
    TimedOut,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { what, source }
}

fn ioe(what: &'static str) -> impl FnOnce(Errno) -> SandboxError {
    move |e| SandboxError::Io {
        what,
        source: e.into(),
    }
}

/// What to run: a binary of the bundle, or a script with an interpreter the profile makes
/// visible (in the bundle, or in a [`Access::ReadExec`] grant).
#[derive(Clone, Debug)]
pub enum Program {
    Binary(BundlePath),
    Script {
        /// The interpreter's path in the sandbox (for example `/usr/bin/python3` with `/usr`
        /// granted read-exec).
        interpreter: InterpreterPath,
        script: BundlePath,
    },
}

/// An absolute path in the sandbox to an interpreter: under `/bundle` or a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterpreterPath(String);

impl std::str::FromStr for InterpreterPath {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, ProfileError> {
        if let Some(rest) = s.strip_prefix(&format!("{BUNDLE_AT}/")) {
            rest.parse::<BundlePath>()?;
        } else {
            s.parse::<SandboxPath>()?;
        }
        Ok(InterpreterPath(s.to_owned()))
    }
}

/// One run of a program: arguments and the whole environment (nothing of the host's is
/// passed).
#[derive(Clone, Debug)]
pub struct Invocation {
    program: Program,
    args: Vec<String>,
    env: Vec<(String, String)>,
    deadline: Option<Instant>,
    abandoned: Option<Arc<AtomicBool>>,
}

impl Invocation {
    pub fn new(program: Program) -> Invocation {
        Invocation {
            program,
            args: Vec::new(),
            env: Vec::new(),
            deadline: None,
            abandoned: None,
        }
    }
    /// The caller sets `abandoned` once it no longer wants the program (its own caller went
    /// away): a spawn not begun by then is not made (outside attack, session 37: clients
    /// that hung up at once left 510 sandboxes being set up for an install allowed 16, and
    /// another tenant's call waited 15 s behind them).
    pub fn abandoned_by(mut self, abandoned: Arc<AtomicBool>) -> Self {
        self.abandoned = Some(abandoned);
        self
    }
    /// The program must start by `deadline`, or not at all ([`SandboxError::TimedOut`]): a
    /// call whose time ran out while its sandbox was set up must not have a program run on
    /// with no one to report what it does (outside attack: 140 of 200 calls timed out at
    /// 8 ms started their program after their call had ended, its refusals recorded by
    /// none). Checked last before the program is let go, where the kernel has seccomp
    /// notifications.
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    fn exec(&self) -> Result<Exec, SandboxError> {
        if self.args.len() > MAX_ARGS || self.env.len() > MAX_ARGS {
            return Err(SandboxError::TooManyArgs);
        }
        let cs = |s: &str| CString::new(s).map_err(|_| SandboxError::Nul);
        let (path, mut strings) = match &self.program {
            Program::Binary(p) => {
                let path = cs(&p.in_sandbox())?;
                (path.clone(), vec![path])
            }
            Program::Script {
                interpreter,
                script,
            } => {
                let path = cs(&interpreter.0)?;
                (path.clone(), vec![path, cs(&script.in_sandbox())?])
            }
        };
        for a in &self.args {
            strings.push(cs(a)?);
        }
        let argc = strings.len();
        for (k, v) in &self.env {
            let mut b = k.bytes();
            let ok = b
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !ok {
                return Err(SandboxError::EnvName(k.chars().take(64).collect()));
            }
            strings.push(cs(&format!("{k}={v}"))?);
        }
        let mut argv: Vec<*const c_char> = strings[..argc].iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = strings[argc..].iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(Exec {
            path,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// A checked profile with everything that is the same for each spawn prepared: mount plan,
/// rlimits, compiled seccomp filters. Cheap to share (`Arc` inside); spawn as often as needed.
#[derive(Clone)]
pub struct Sandbox {
    profile: Arc<Profile>,
    layout: Arc<Layout>,
    rights: Option<Rights>,
    /// How fast the refusals of all its programs are answered (see [`crate::notify`]).
    brake: Arc<crate::notify::Brake>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("profile", &self.profile)
            .field("landlock", &self.rights.map(|r| r.abi))
            .finish()
    }
}

fn cpath(p: &Path) -> Result<CString, SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SandboxError::Nul)
}

fn oldroot(p: &Path) -> Result<CString, SandboxError> {
    let mut s = b"/oldroot".to_vec();
    use std::os::unix::ffi::OsStrExt;
    s.extend_from_slice(p.as_os_str().as_bytes());
    CString::new(s).map_err(|_| SandboxError::Nul)
}

impl Sandbox {
    /// Checks the kernel ([`Sandbox::check`]) against the profile, then prepares it. A missing
    /// feature is an error naming it, unless the profile accepts the matching [`Weakening`].
    pub fn new(profile: Profile) -> Result<Sandbox, SandboxError> {
        let support = probed();
        let no_landlock = profile.accepts(Weakening::NoLandlock);
        support.require(no_landlock)?;
        Sandbox::prepare(profile, support)
    }

    fn prepare(profile: Profile, support: &Support) -> Result<Sandbox, SandboxError> {
        let rights = support
            .landlock
            .is_available()
            .then(|| Rights::new(support.landlock_abi));
        let mut dirs = vec![
            c"/bundle".to_owned(),
            c"/dev".to_owned(),
            c"/tmp".to_owned(),
        ];
        let files = vec![c"/dev/null".to_owned(), c"/dev/urandom".to_owned()];
        let mut binds = Vec::new();
        let bundle_locked = crate::profile::locked_flags(&profile.bundle)?;
        binds.push(Bind {
            src: oldroot(&profile.bundle)?,
            dst: c"/bundle".to_owned(),
            flags: MountFlags::BIND
                | MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | (bundle_locked - MountFlags::RDONLY),
        });
        for dev in ["/dev/null", "/dev/urandom"] {
            let locked = crate::profile::locked_flags(Path::new(dev))?;
            binds.push(Bind {
                src: oldroot(Path::new(dev))?,
                dst: cpath(Path::new(dev))?,
                flags: MountFlags::BIND
                    | MountFlags::NOSUID
                    | MountFlags::NOEXEC
                    | (locked - MountFlags::RDONLY),
            });
        }
        for g in &profile.grants {
            let mut acc = String::new();
            for c in g.at.as_str().trim_start_matches('/').split('/') {
                acc.push('/');
                acc.push_str(c);
                let d = CString::new(acc.as_str()).map_err(|_| SandboxError::Nul)?;
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
            let mut flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV | g.locked;
            match g.access {
                Access::ReadOnly => flags |= MountFlags::RDONLY | MountFlags::NOEXEC,
                Access::ReadWrite => flags |= MountFlags::NOEXEC,
                Access::ReadExec => flags |= MountFlags::RDONLY,
            }
            binds.push(Bind {
                src: oldroot(&g.host)?,
                dst: CString::new(g.at.as_str()).map_err(|_| SandboxError::Nul)?,
                flags,
            });
        }
        let l = profile.limits;
        let filters = crate::seccomp::filters()?;
        let layout = Layout {
            stage: cpath(&profile.bundle)?,
            dirs,
            files,
            binds,
            tmp_options: CString::new(format!(
                "size={},nr_inodes={TMP_INODES},mode=1777",
                profile.tmp_size
            ))
            .map_err(|_| SandboxError::Nul)?,
            rlimits: vec![
                (Resource::As, l.address_space),
                (Resource::Cpu, l.cpu_seconds),
                (Resource::Nofile, l.open_files),
                (Resource::Nproc, l.processes),
                (Resource::Fsize, l.file_size),
                (Resource::Core, 0),
            ],
            ids: profile.ids,
            // Where the kernel has them, a sandbox whose child cannot get a listener fails to
            // start, rather than run with its refusals unaudited (outside attack: a host
            // holding enough descriptors made the child's fail, EMFILE, and every refusal
            // went unrecorded).
            seccomp_notify: support
                .seccomp_notify
                .is_available()
                .then(|| crate::seccomp::notifying(&filters[3])),
            seccomp: filters,
            tmp_access: rights.map_or(0, |r| r.write().bits()),
        };
        Ok(Sandbox {
            profile: Arc::new(profile),
            layout: Arc::new(layout),
            rights,
            brake: Arc::default(),
        })
    }

    /// What the kernel offers (probed once per process): the same report [`Sandbox::new`]
    /// checks a profile against.
    pub fn check() -> &'static Support {
        probed()
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Starts `inv` in a fresh sandbox. Returns once the program has been exec'd (or with the
    /// step that failed). The returned [`Child`] kills the whole sandbox when dropped.
    pub fn spawn(&self, inv: &Invocation) -> Result<Child, SandboxError> {
        let exec = inv.exec()?;
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let stdio = [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ];
        let (started, refused) = self.start(
            Some(stdio),
            Some(exec),
            (inv.deadline, inv.abandoned.clone()),
        )?;
        drop((stdin_r, stdout_w, stderr_w));
        let (pid, pidfd, cgroup) = started.into_parts().ok_or(SandboxError::ChildVanished)?;
        let child = Child::new(
            pid,
            pidfd,
            (stdin_w.into(), stdout_r.into(), stderr_r.into()),
            cgroup,
        );
        Ok(match refused {
            Some(refused) => child.supervised(refused),
            None => child,
        })
    }

    /// Forks the child, writes its id maps, releases it and reads its report; with the
    /// child's seccomp listener, starts the thread that answers it (see [`crate::notify`])
    /// before the child may start its program, and returns its count of refusals.
    fn start(
        &self,
        stdio: Option<[i32; 3]>,
        exec: Option<Exec>,
        (deadline, abandoned): (Option<Instant>, Option<Arc<AtomicBool>>),
    ) -> Result<(Started, Option<Arc<crate::notify::Refused>>), SandboxError> {
        let needs_listener = exec.is_some() && self.layout.seccomp_notify.is_some();
        let (sync_r, sync_w) = pipe()?;
        // A socket, not a pipe: the child sends its seccomp listener on it.
        let (report_r, report_w) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(ioe("creating a socket pair"))?;
        let (report_r, report_w) = (raise(report_r)?, raise(report_w)?);
        let ruleset = match self.rights {
            Some(r) => Some(crate::rules::build(&self.profile, r)?),
            None => None,
        };
        let ruleset = ruleset.map(raise).transpose()?;
        let plan = Arc::new(Plan {
            layout: self.layout.clone(),
            fds: ChildFds {
                stdio,
                sync: sync_r.as_raw_fd(),
                report: report_w.as_raw_fd(),
                landlock: ruleset.as_ref().map(|f| f.as_raw_fd()),
            },
            exec,
        });
        // Made before the clone so that a failure costs no child; the child enters it before
        // it is released, so its program never runs outside.
        // Abandoned meanwhile (its call's client went away while it waited for a thread):
        // nothing more is made for it (outside attack, session 37: 5,851 of 7,202 calls hung
        // up at once still made their cgroup).
        let gone = || abandoned.as_ref().is_some_and(|a| a.load(Ordering::SeqCst));
        if gone() {
            return Err(SandboxError::TimedOut);
        }
        let cgroup = match (&crate::cgroup::root().0, &plan.exec) {
            (Ok(root), Some(_)) => {
                let l = self.profile.limits;
                Some(
                    root.create(l.processes, l.memory)
                        .map_err(io("making the sandbox's cgroup"))?,
                )
            }
            _ => None,
        };
        if gone() {
            return Err(SandboxError::TimedOut);
        }
        let tid = Arc::new(AtomicI32::new(0));
        // Set by this thread when it gives up, or by whoever abandoned the invocation.
        let cancelled = abandoned.unwrap_or_default();
        let taken = Arc::new(AtomicBool::new(false));
        let (reply, made) = mpsc::channel();
        to_spawner(Job {
            plan,
            open: (sync_r, report_w, ruleset),
            tid: Arc::clone(&tid),
            cancelled: Arc::clone(&cancelled),
            taken: Arc::clone(&taken),
            reply,
        })?;
        let guard = match read_started(&report_r, deadline) {
            // Its pid was written before it ran.
            Ok(First::Started) => {
                taken.store(true, Ordering::SeqCst);
                started(tid.load(Ordering::SeqCst), cgroup)?
            }
            other => {
                // No child, one that failed or ended at once, or none started by the deadline
                // (every spawner busy): none is made now, and one made already ends at its
                // pipes' end of file (its spawner then reaps it).
                cancelled.store(true, Ordering::SeqCst);
                drop(sync_w);
                let reaped = || match made.recv() {
                    Ok(Ok(pid)) => {
                        taken.store(true, Ordering::SeqCst);
                        started(pid, None).map(drop)
                    }
                    Ok(Err(e)) => Err(ioe("clone into new namespaces")(e)),
                    Err(_) => Err(SandboxError::Io {
                        what: "the spawner threads are gone",
                        source: std::io::ErrorKind::BrokenPipe.into(),
                    }),
                };
                return Err(match other {
                    Ok(First::TimedOut) => SandboxError::TimedOut,
                    Ok(First::Failed(step, errno)) => {
                        reaped()?;
                        SandboxError::Setup { step, errno }
                    }
                    Ok(First::Ended) | Err(_) => match reaped() {
                        Ok(()) => SandboxError::ChildVanished,
                        Err(e) => e,
                    },
                    Ok(First::Started) => SandboxError::ChildVanished,
                });
            }
        };
        let pid = guard.pid;
        if let Some(cg) = &guard.cgroup {
            cg.enter(pid)
                .map_err(io("moving the child into its cgroup"))?;
        }
        // First in line for the kernel's OOM killer (inherited by all it starts; only
        // CAP_SYS_RESOURCE could lower it): where the host itself runs under a memory limit
        // that holds its sandboxes too, a tenant's tree goes before the host does.
        std::fs::write(format!("/proc/{pid}/oom_score_adj"), "1000")
            .map_err(io("raising the child's oom_score_adj"))?;
        write_id_maps(pid, self.profile.ids)?;
        let mut sync_w = std::fs::File::from(sync_w);
        sync_w.write_all(&[1]).map_err(io("releasing the child"))?;
        let reading = |e| match e {
            Errno::TIMEDOUT => SandboxError::TimedOut,
            e => ioe(
                "reading the child's report (and its seccomp listener, for the audit of its refused calls)",
            )(e),
        };
        let (mut report, listener) = read_report(&report_r, None, deadline).map_err(reading)?;
        // Held: its answers start now, and only then may the child start its program (it
        // waits for `HELD`): a program never runs with its refused calls answered by no one
        // (outside attack: a host at its own descriptor limit lost the listener in transit,
        // or could not start this thread, and the program ran on unsupervised).
        let refused = match (listener, &guard.pidfd) {
            (Some(listener), Some(pidfd)) => {
                let supervising = "starting the seccomp supervisor";
                let init = pidfd.try_clone().map_err(io(supervising))?;
                let refused = crate::notify::supervise(listener, init, Arc::clone(&self.brake))
                    .map_err(io(supervising))?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    // Dropping the guard kills the child, still waiting for `HELD`.
                    return Err(SandboxError::TimedOut);
                }
                let reading = |e| match e {
                    Errno::TIMEDOUT => SandboxError::TimedOut,
                    e => ioe("reading the child's report after its seccomp listener")(e),
                };
                let (rest, _) =
                    read_report(&report_r, Some(crate::child::HELD), deadline).map_err(reading)?;
                report.extend(rest);
                Some(refused)
            }
            _ => None,
        };
        drop(sync_w);
        if report.first() == Some(&crate::child::LISTENER) {
            report.remove(0);
        }
        match report.len() {
            // Where the kernel has notifications, a child without a listener never got to
            // start its program (it waits for `HELD`); refused all the same.
            0 if needs_listener && refused.is_none() => Err(SandboxError::Io {
                what: "receiving the sandbox's seccomp listener (its refused calls could not \
                       be audited)",
                source: Errno::BADMSG.into(),
            }),
            0 => Ok((guard, refused)),
            _ => match failure(&report) {
                Some((step, errno)) => {
                    drop(guard);
                    Err(SandboxError::Setup { step, errno })
                }
                None => Err(SandboxError::ChildVanished),
            },
        }
    }
}

/// The child's first word.
enum First {
    /// It exists ([`crate::child::STARTED`]).
    Started,
    /// It failed before (a step and errno, as its report says).
    Failed(Step, Errno),
    /// End of file: no child was made, or it ended.
    Ended,
    /// Nothing by the deadline.
    TimedOut,
}

/// A failure report: 8 bytes, the step and the errno.
fn failure(report: &[u8]) -> Option<(Step, Errno)> {
    let (step, errno) = report.split_first_chunk::<4>()?;
    let errno: [u8; 4] = errno.try_into().ok()?;
    let step = Step::from_u32(u32::from_le_bytes(*step)).unwrap_or(Step::Exec);
    Some((step, Errno::from_raw_os_error(i32::from_le_bytes(errno))))
}

/// Whether `fd` has something to read before `until` (none: wait as long as it takes).
fn readable(fd: &OwnedFd, until: Option<Instant>) -> Result<bool, Errno> {
    loop {
        let left = until.map(|u| crate::sys::timespec(u.saturating_duration_since(Instant::now())));
        let mut pfd = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        match rustix::event::poll(&mut pfd, left.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits (until `until`) for the child's first byte, or its failure report.
fn read_started(report: &OwnedFd, until: Option<Instant>) -> Result<First, Errno> {
    if !readable(report, until)? {
        return Ok(First::TimedOut);
    }
    let mut b = [0u8; 8];
    let n = rustix::io::retry_on_intr(|| rustix::io::read(report, &mut b[..1]))?;
    if n == 0 {
        return Ok(First::Ended);
    }
    if b[0] == crate::child::STARTED {
        return Ok(First::Started);
    }
    // A failure before it: the rest of its 8 bytes were written with the first.
    let mut got = 1;
    while got < b.len() {
        match rustix::io::retry_on_intr(|| rustix::io::read(report, &mut b[got..]))? {
            0 => break,
            n => got += n,
        }
    }
    Ok(match failure(&b[..got]) {
        Some((step, errno)) => First::Failed(step, errno),
        None => First::Ended,
    })
}

/// The guard of the child `pid` (this process's own, not reaped: its pid cannot have been
/// reused), through a pidfd. Without one (this process at its descriptor limit) it is killed
/// and reaped by pid.
fn started(pid: i32, cgroup: Option<crate::cgroup::Cgroup>) -> Result<Started, SandboxError> {
    let Some(id) = rustix::process::Pid::from_raw(pid) else {
        return Err(SandboxError::ChildVanished);
    };
    match rustix::process::pidfd_open(id, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => Ok(Started {
            pid,
            pidfd: Some(pidfd),
            cgroup,
        }),
        Err(e) => {
            let _ = rustix::process::kill_process(id, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(id), rustix::process::WaitOptions::empty());
            Err(ioe("opening a pidfd for the sandbox's process")(e))
        }
    }
}

/// The child's report (up to 9 bytes: the listener's mark, a failure's step and errno) until
/// it closes at execve, or until it sent its seccomp listener (returned with the bytes so
/// far); first sending `answer`, if any.
fn read_report(
    report: &OwnedFd,
    answer: Option<u8>,
    until: Option<Instant>,
) -> Result<(Vec<u8>, Option<OwnedFd>), Errno> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    if let Some(byte) = answer {
        // No SIGPIPE for a child already gone: an error, and the child is killed.
        rustix::io::retry_on_intr(|| {
            rustix::net::send(report, &[byte], rustix::net::SendFlags::NOSIGNAL)
        })?;
    }
    let mut bytes = Vec::with_capacity(9);
    loop {
        let mut buf = [0u8; 16];
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        // A child stuck in its setup (stopped, or in a mount of a hung file system) is given
        // up at the deadline, and killed.
        if until.is_some() && !readable(report, until)? {
            return Err(Errno::TIMEDOUT);
        }
        let got = match rustix::net::recvmsg(
            report,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => got,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        };
        let mut listener = None;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    listener.get_or_insert(fd);
                }
            }
        }
        // A descriptor the kernel could not give this process (at its own `RLIMIT_NOFILE`):
        // dropped, with the byte it came with delivered alone. The child waits for an answer
        // it never gets, and is killed.
        if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) && listener.is_none() {
            return Err(Errno::MFILE);
        }
        bytes.extend_from_slice(&buf[..got.bytes.min(buf.len())]);
        // The listener's mark without it (and without CTRUNC, which the kernel sets for any
        // descriptor it could not give): the child waits for an answer all the same; refused.
        if answer.is_none() && listener.is_none() && bytes.first() == Some(&crate::child::LISTENER)
        {
            return Err(Errno::BADMSG);
        }
        if listener.is_some() || got.bytes == 0 || bytes.len() > 9 {
            return Ok((bytes, listener));
        }
    }
}

/// A child between its clone and the caller's [`Child`]: killed and reaped if dropped (then its
/// cgroup removed).
struct Started {
    pid: i32,
    pidfd: Option<OwnedFd>,
    cgroup: Option<crate::cgroup::Cgroup>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(fd) = self.pidfd.take() {
            crate::process::kill_and_reap(fd.as_fd());
        }
    }
}

impl Started {
    fn into_parts(mut self) -> Option<(i32, OwnedFd, Option<crate::cgroup::Cgroup>)> {
        let cgroup = self.cgroup.take();
        self.pidfd.take().map(|fd| (self.pid, fd, cgroup))
    }
}

/// Pipes for the child: close-on-exec in this process, and never 0, 1 or 2 (so the child's
/// `dup2` onto 0..=2 cannot overwrite one of its own sources).
fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(ioe("creating a pipe"))?;
    Ok((raise(r)?, raise(w)?))
}

fn raise(fd: OwnedFd) -> Result<OwnedFd, SandboxError> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(ioe("moving a descriptor above 2"))
}

/// Writes the uid/gid maps of the child's user namespace (see [`IdMapping`]).
fn write_id_maps(pid: i32, ids: IdMapping) -> Result<(), SandboxError> {
    let w = |file: &str, s: &str| {
        std::fs::write(format!("/proc/{pid}/{file}"), s).map_err(io(match file {
            "setgroups" => "writing /proc/PID/setgroups",
            "uid_map" => "writing /proc/PID/uid_map",
            _ => "writing /proc/PID/gid_map",
        }))
    };
    match ids {
        IdMapping::Unprivileged { uid, gid } => {
            w("setgroups", "deny")?;
            w("uid_map", &format!("{SANDBOX_UID} {uid} 1\n"))?;
            w("gid_map", &format!("{SANDBOX_GID} {gid} 1\n"))?;
        }
        IdMapping::FromRoot { program } => {
            w(
                "uid_map",
                &format!("0 0 1\n{SANDBOX_UID} {} 1\n", program.uid()),
            )?;
            w(
                "gid_map",
                &format!("0 0 1\n{SANDBOX_GID} {} 1\n", program.gid()),
            )?;
        }
    }
    Ok(())
}

struct Job {
    plan: Arc<Plan>,
    /// The descriptors of the plan the child must find open (its ends of the sync pipe and
    /// the report socket, the Landlock ruleset): closed once it has exec'd or exited, so
    /// that the report socket's end of file then tells the host so.
    open: (OwnedFd, OwnedFd, Option<OwnedFd>),
    /// Where the kernel writes the child's pid before it runs.
    tid: Arc<AtomicI32>,
    /// Set by a caller that gave up before the child said it exists (or whose invocation was
    /// abandoned): no child is made for a job not begun.
    cancelled: Arc<AtomicBool>,
    /// Set by the caller once it has taken the child's pid (and so reaps it).
    taken: Arc<AtomicBool>,
    reply: mpsc::Sender<Result<i32, Errno>>,
}

/// Spawner threads at most. Each waits for its child until its `execve`, so a child stuck
/// before it (stopped, or in a mount of a hung file system) holds its thread: another is
/// started whenever no thread is free for a job (review, session 37: with a fixed two, two
/// stopped children stopped every spawn of the host).
const MAX_SPAWNERS: usize = 64;

/// The spawner threads and their queue.
struct Spawners {
    tx: mpsc::Sender<Job>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// Threads waiting for a job, and jobs no thread has taken yet.
    idle: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    started: usize,
}

/// Sends `job` to a spawner thread: threads that live as long as the process. The
/// parent-death signal fires when the *thread* that made the child exits, so a pool thread
/// that may be retired would kill sandboxes at random; these tie them to the process. Each
/// waits for its child until its `execve` ([`sys::vfork_into`]), so the host's side of the
/// setup (id maps, cgroup, report) runs on the caller's thread meanwhile.
fn to_spawner(job: Job) -> Result<(), SandboxError> {
    static SPAWNERS: Mutex<Option<Spawners>> = Mutex::new(None);
    let mut pool = SPAWNERS.lock().unwrap_or_else(PoisonError::into_inner);
    let pool = pool.get_or_insert_with(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        Spawners {
            tx,
            rx: Arc::new(Mutex::new(rx)),
            idle: Arc::default(),
            queued: Arc::default(),
            started: 0,
        }
    });
    let queued = pool.queued.fetch_add(1, Ordering::SeqCst) + 1;
    if pool.idle.load(Ordering::SeqCst) < queued && pool.started < MAX_SPAWNERS {
        let (rx, idle, waiting) = (
            Arc::clone(&pool.rx),
            Arc::clone(&pool.idle),
            Arc::clone(&pool.queued),
        );
        match std::thread::Builder::new()
            .name("warden-sandbox-spawner".to_owned())
            .spawn(move || serve_spawns(&rx, &idle, &waiting))
        {
            Ok(_) => pool.started += 1,
            // The threads there are take it in turn.
            Err(_) if pool.started > 0 => {}
            Err(e) => {
                pool.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(io("starting a spawner thread")(e));
            }
        }
    }
    pool.tx.send(job).map_err(|_| SandboxError::Io {
        what: "the spawner threads are gone",
        source: std::io::ErrorKind::BrokenPipe.into(),
    })
}

/// A spawner thread's life: with every signal blocked (its children inherit the mask until
/// they reset the host's handlers), one stack for its children, one job at a time.
fn serve_spawns(jobs: &Mutex<mpsc::Receiver<Job>>, idle: &AtomicUsize, queued: &AtomicUsize) {
    let blocked = sys::block_signals();
    let mut stack = None;
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(job) = job else { return };
        queued.fetch_sub(1, Ordering::SeqCst);
        // Its caller gave up waiting: no child.
        if job.cancelled.load(Ordering::SeqCst) {
            let _ = job.reply.send(Err(Errno::CANCELED));
            continue;
        }
        if stack.is_none() {
            stack = sys::ChildStack::new().ok();
        }
        // The child's change of uid, in this memory, makes the whole process not dumpable
        // (the kernel's flag is the memory's): set back as it was once it has exec'd.
        let dumpable = rustix::process::dumpable_behavior().ok();
        let r = match (blocked, &stack) {
            (Ok(()), Some(s)) => clone_child(&job.plan, s, &job.tid),
            (Err(e), _) => Err(e),
            (_, None) => Err(Errno::NOMEM),
        };
        if let Some(was) = dumpable
            && rustix::process::dumpable_behavior().ok() != Some(was)
        {
            let _ = rustix::process::set_dumpable_behavior(was);
        }
        // Answered before the report socket's end closes: its caller, waiting for that end of
        // file, is still there to take the answer, unless it gave up.
        let unanswered = job.reply.send(r).err();
        drop(job.open);
        if let (Some(std::sync::mpsc::SendError(Ok(pid))), false) =
            (unanswered, job.taken.load(Ordering::SeqCst))
        {
            // Its caller gave up before the child said it exists, and so never took its pid:
            // the child ends at its pipes' end of file, before its program, and is reaped
            // here. (One whose pid was taken is its caller's to reap: reaped here too, its
            // pid could be another child's by then.)
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            }
        }
    }
}

/// The child's start: [`crate::child::run`] on the plan `arg` points to.
#[allow(unsafe_code)]
extern "C" fn child_entry(arg: *mut std::ffi::c_void) -> std::ffi::c_int {
    // SAFETY: `arg` is the `Plan` of `clone_child`, alive until the child has exec'd or
    // exited (its spawner thread holds it and waits).
    let plan = unsafe { &*(arg as *const Plan) };
    crate::child::run(plan)
}

#[allow(unsafe_code)]
fn clone_child(plan: &Plan, stack: &sys::ChildStack, tid: &AtomicI32) -> Result<i32, Errno> {
    if !in_host_memory() {
        // SAFETY: the child branch runs only `child::run`, which makes system calls on data
        // prepared in `plan` (no allocation, no lock) and ends in execve or _exit.
        return match unsafe { sys::fork_into(NAMESPACES, tid) }? {
            None => crate::child::run(plan),
            Some(pid) => Ok(pid),
        };
    }
    let arg = plan as *const Plan as *mut std::ffi::c_void;
    // SAFETY: the child runs only `child::run`, which makes system calls on data prepared in
    // `plan` (no allocation, no lock, nothing written outside its stack) and ends in execve
    // or _exit; `plan` outlives the call, which returns once the child has done either.
    unsafe { sys::vfork_into(NAMESPACES, stack, child_entry, arg, tid) }
}

/// Whether children set up in the host's memory ([`sys::vfork_into`]): on Linux 5.16 and
/// later. Before, a child that dumped core there (a fault in its setup) took every process
/// sharing its memory with it, the host included (review, session 37); they are forked there
/// ([`sys::fork_into`]), as they are where `WARDEN_SANDBOX_SPAWN=fork` says so.
fn in_host_memory() -> bool {
    static SHARES: OnceLock<bool> = OnceLock::new();
    *SHARES.get_or_init(|| crate::support::spawn_in_place().is_ok())
}

/// The kernel's report, namespaces included, probed once per process (the answer does not
/// change while it runs).
pub(crate) fn probed() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let mut s = Support::kernel();
        s.namespaces = match dry_run(&s) {
            Ok(()) => Feature::Available,
            Err(e) => Feature::Missing(format!("dry run of the sandbox setup: {e}")),
        };
        s
    })
}

/// The namespace probe of [`Sandbox::check`]: the whole setup, exiting where it would exec,
/// with a folder that exists already as the bundle (read-only, as a bundle is; the child runs
/// nothing from it). Not a folder made for the probe: one a killed process could not remove
/// was left behind for good, hundreds of them under a test that killed processes (session
/// 30). The temporary folder first; where it cannot be a bundle (`TMPDIR` empty, `/`, a file,
/// `/dev`: outside attack, session 30), `/tmp`, then this program's own folder. The first
/// failure is the one reported.
fn dry_run(support: &Support) -> Result<(), SandboxError> {
    let mut candidates = vec![std::env::temp_dir(), PathBuf::from("/tmp")];
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.to_path_buf());
    }
    dry_run_any(&candidates, support)
}

/// The dry run in the first of `candidates` where it passes; else the first failure.
fn dry_run_any(candidates: &[PathBuf], support: &Support) -> Result<(), SandboxError> {
    let mut first = None;
    for dir in candidates {
        match dry_run_in(dir, support) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or(SandboxError::ChildVanished))
}

fn dry_run_in(dir: &Path, support: &Support) -> Result<(), SandboxError> {
    let profile = Profile::builder(dir)
        .accept(Weakening::NoLandlock)
        .build()?;
    let sandbox = Sandbox::prepare(profile, support)?;
    let (started, _) = sandbox.start(None, None, (None, None))?;
    let (_pid, pidfd, _cgroup) = started.into_parts().ok_or(SandboxError::ChildVanished)?;
    let status = crate::process::wait_exit(pidfd.as_fd()).map_err(io("waiting for the dry run"))?;
    match status {
        crate::process::Exit::Code(0) => Ok(()),
        _ => Err(SandboxError::ChildVanished),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::{HELD, LISTENER, listener_held, send_listener};

    /// A socket pair whose reads give up after 5 s: a lost answer fails a test, not hangs it.
    fn pair() -> (OwnedFd, OwnedFd) {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        for end in [&a, &b] {
            rustix::net::sockopt::set_socket_timeout(
                end,
                rustix::net::sockopt::Timeout::Recv,
                Some(std::time::Duration::from_secs(5)),
            )
            .unwrap();
        }
        (a, b)
    }

    /// The child's side, on a thread: sends a descriptor as its listener, waits for the
    /// host's answer, then closes its end (as execve would).
    fn as_child(report: OwnedFd) -> std::thread::JoinHandle<Result<(), Errno>> {
        std::thread::spawn(move || {
            let listener = std::fs::File::open("/dev/null").unwrap();
            send_listener(report.as_raw_fd(), listener.as_raw_fd())?;
            listener_held(report.as_raw_fd())
        })
    }

    /// The probe's dry run passes on a kernel where sandboxes start (every test here needs
    /// one), with nothing made for it that a killed process would leave behind.
    #[test]
    fn the_dry_run_passes_on_the_temporary_folder() {
        dry_run(&Support::kernel()).unwrap();
    }

    /// Folders that cannot be a bundle are passed over (a hostile `TMPDIR`); the first
    /// failure is reported when none can.
    #[test]
    fn the_dry_run_passes_over_folders_that_cannot_be_a_bundle() {
        let support = Support::kernel();
        let bad: Vec<PathBuf> = ["", "/", "/proc/self/status", "/no/such/folder"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let mut some_good = bad.clone();
        some_good.push(std::env::temp_dir());
        dry_run_any(&some_good, &support).unwrap();
        let e = dry_run_any(&bad, &support).unwrap_err();
        assert!(e.to_string().contains("bundle"), "{e}");
    }

    /// The host takes the listener while the child waits, and the child goes on only once
    /// the host answers (after it started the listener's supervisor).
    #[test]
    fn the_child_goes_on_once_the_host_holds_its_listener() {
        let (host, report) = pair();
        let child = as_child(report);
        let (bytes, listener) = read_report(&host, None, None).unwrap();
        assert_eq!(bytes, [LISTENER]);
        assert!(listener.is_some());
        // Not answered yet: the child still waits.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!child.is_finished());
        let (rest, again) = read_report(&host, Some(HELD), None).unwrap();
        assert_eq!((rest.len(), again.is_none()), (0, true));
        assert_eq!(child.join().unwrap(), Ok(()));
    }

    /// A failure after the answer (the program could not be exec'd) reaches the host as the
    /// 8 bytes of any failure; and a mark without a listener is refused, not waited on.
    #[test]
    fn the_host_reads_a_failure_after_its_answer_and_refuses_a_mark_alone() {
        let (host, report) = pair();
        let child = std::thread::spawn(move || {
            let listener = std::fs::File::open("/dev/null").unwrap();
            send_listener(report.as_raw_fd(), listener.as_raw_fd()).unwrap();
            listener_held(report.as_raw_fd()).unwrap();
            rustix::io::write(&report, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        });
        let (_, listener) = read_report(&host, None, None).unwrap();
        assert!(listener.is_some());
        let (rest, _) = read_report(&host, Some(HELD), None).unwrap();
        assert_eq!(rest, [1, 2, 3, 4, 5, 6, 7, 8]);
        child.join().unwrap();

        let (host, report) = pair();
        rustix::io::write(&report, &[LISTENER]).unwrap();
        assert_eq!(read_report(&host, None, None).unwrap_err(), Errno::BADMSG);
    }

    /// A host that did not get the listener (or could not supervise it) never answers, and
    /// kills the child; a wrong answer is no answer either: the child's wait fails, and its
    /// program is never started.
    #[test]
    fn the_child_does_not_go_on_without_the_hosts_answer() {
        let (host, report) = pair();
        let child = as_child(report);
        let (bytes, _) = read_report(&host, None, None).unwrap();
        assert_eq!(bytes, [LISTENER]);
        drop(host);
        assert_eq!(child.join().unwrap(), Err(Errno::PIPE));

        let (host, report) = pair();
        let child = as_child(report);
        let (bytes, _) = read_report(&host, None, None).unwrap();
        assert_eq!(bytes, [LISTENER]);
        rustix::io::write(&host, b"X").unwrap();
        assert_eq!(child.join().unwrap(), Err(Errno::PIPE));
    }
}
