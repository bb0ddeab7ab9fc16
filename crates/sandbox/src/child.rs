//! The child, between `clone` and `execve`.
//!
//! It runs in the host's memory, beside the host's other threads (its spawner thread waits:
//! [`crate::sys::vfork_into`]), which may hold the allocator's lock, stdio's lock or any
//! other. So this code only makes system calls (rustix's raw backend and [`crate::sys`]),
//! writes nothing but its own stack, and reads only data the parent prepared: paths as `CString`s, `argv`/`envp` pointer arrays, the compiled
//! seccomp programs, the Landlock ruleset's descriptor. It never allocates, never formats,
//! never panics on purpose, and ends in `execve` or `_exit`. A failure is reported to the parent
//! as 8 bytes (step, errno) on a close-on-exec socket; a successful `execve` closes it. On the
//! same socket it sends its seccomp listener, and waits for the parent's answer ([`HELD`])
//! before it starts the program.
#![allow(unsafe_code)]
// Runs in the host's memory between clone and execve: a panic there would unwind or abort
// in the host's heap (review, session 37).
#![deny(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::ffi::{CString, c_char};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Resource, Rlimit};
use seccompiler::BpfProgram;

use crate::profile::{IdMapping, SANDBOX_GID, SANDBOX_UID};
use crate::sys;

/// The steps of the child, in order; the number is what the child reports on failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Signals = 1,
    Started,
    DeathSignal,
    WaitForParent,
    MountPrivate,
    MountStage,
    PivotRoot,
    MountPoints,
    BindMount,
    BindRemount,
    MountTmp,
    LandlockTmpRule,
    DetachOldRoot,
    RemountRootReadOnly,
    Hostname,
    NewSession,
    DropIdentity,
    ParentGone,
    Rlimits,
    Stdio,
    CloseFds,
    NoNewPrivs,
    Landlock,
    Seccomp,
    Exec,
}

impl Step {
    const ALL: [Step; 25] = [
        Step::Signals,
        Step::Started,
        Step::DeathSignal,
        Step::WaitForParent,
        Step::MountPrivate,
        Step::MountStage,
        Step::PivotRoot,
        Step::MountPoints,
        Step::BindMount,
        Step::BindRemount,
        Step::MountTmp,
        Step::LandlockTmpRule,
        Step::DetachOldRoot,
        Step::RemountRootReadOnly,
        Step::Hostname,
        Step::NewSession,
        Step::DropIdentity,
        Step::ParentGone,
        Step::Rlimits,
        Step::Stdio,
        Step::CloseFds,
        Step::NoNewPrivs,
        Step::Landlock,
        Step::Seccomp,
        Step::Exec,
    ];
    pub(crate) fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == n)
    }
    pub fn name(self) -> &'static str {
        match self {
            Step::Signals => "reset the host's signal handlers",
            Step::Started => "tell the host it started",
            Step::DeathSignal => "set the parent-death signal",
            Step::WaitForParent => "wait for the id maps",
            Step::MountPrivate => "make mounts private",
            Step::MountStage => "mount the new root's tmpfs",
            Step::PivotRoot => "pivot_root",
            Step::MountPoints => "create mount points",
            Step::BindMount => "bind mount",
            Step::BindRemount => "remount a bind mount",
            Step::MountTmp => "mount /tmp",
            Step::LandlockTmpRule => "add the Landlock rule for /tmp",
            Step::DetachOldRoot => "detach the old root",
            Step::RemountRootReadOnly => "remount / read-only",
            Step::Hostname => "set the host name",
            Step::NewSession => "setsid",
            Step::DropIdentity => "drop to the sandbox uid/gid",
            Step::ParentGone => "the host died during setup",
            Step::Rlimits => "set rlimits",
            Step::Stdio => "set up stdin/stdout/stderr",
            Step::CloseFds => "close inherited descriptors",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Landlock => "enforce Landlock",
            Step::Seccomp => "install the seccomp filter",
            Step::Exec => "execve",
        }
    }
}

/// A bind mount: source under `/oldroot`, target in the new root, then a remount with `flags`
/// (always including `MS_BIND`).
pub(crate) struct Bind {
    pub(crate) src: CString,
    pub(crate) dst: CString,
    pub(crate) flags: MountFlags,
}

/// What is the same for every spawn of one sandbox.
pub(crate) struct Layout {
    /// The host folder the new root's tmpfs is mounted on before `pivot_root` (the bundle's:
    /// it exists, and `pivot_root` moves the tmpfs away so the folder shows again under
    /// `/oldroot`).
    pub(crate) stage: CString,
    /// Folders to create in the new root, parents first.
    pub(crate) dirs: Vec<CString>,
    /// Empty files to create as mount points for device nodes.
    pub(crate) files: Vec<CString>,
    pub(crate) binds: Vec<Bind>,
    pub(crate) tmp_options: CString,
    pub(crate) rlimits: Vec<(Resource, u64)>,
    pub(crate) ids: IdMapping,
    pub(crate) seccomp: [BpfProgram; 4],
    /// The last of them with its refusals sent to the host (see [`crate::notify`]).
    pub(crate) seccomp_notify: Option<BpfProgram>,
    /// Landlock rights on `/tmp` (0 when Landlock is not used).
    pub(crate) tmp_access: u64,
}

/// The program to run, with `argv`/`envp` as the null-terminated pointer arrays `execve` takes.
pub(crate) struct Exec {
    pub(crate) path: CString,
    pub(crate) _strings: Vec<CString>,
    pub(crate) argv: Vec<*const c_char>,
    pub(crate) envp: Vec<*const c_char>,
}

/// Descriptors the child uses (raw numbers valid in the child, all close-on-exec in the parent).
pub(crate) struct ChildFds {
    /// Pipe ends that become 0, 1, 2 (absent in a dry run). Never below 3.
    pub(crate) stdio: Option<[RawFd; 3]>,
    /// Read end of the sync pipe: one byte when the id maps are written, HUP if the host died.
    pub(crate) sync: RawFd,
    /// The child's end of the report socket (failures and the seccomp listener out, the
    /// host's [`HELD`] in).
    pub(crate) report: RawFd,
    /// The Landlock ruleset (a duplicate of the one the parent built for this spawn).
    pub(crate) landlock: Option<RawFd>,
}

impl ChildFds {
    /// Every descriptor above, once or more.
    fn all(&self) -> [RawFd; 6] {
        let [a, b, c] = self.stdio.unwrap_or([self.sync; 3]);
        [
            self.sync,
            self.report,
            self.landlock.unwrap_or(self.sync),
            a,
            b,
            c,
        ]
    }
}

/// One spawn: shared layout, descriptors, and the program (`None` for a dry run, which exits
/// with 0 where it would exec).
pub(crate) struct Plan {
    pub(crate) layout: Arc<Layout>,
    pub(crate) fds: ChildFds,
    pub(crate) exec: Option<Exec>,
}

// SAFETY: the raw pointers in `Exec` point into `Exec::_strings`, owned by the same value and
// never mutated; a Plan is only read, by the spawner thread and by the child (in this memory,
// while the spawner thread waits).
unsafe impl Send for Plan {}
// SAFETY: as above; nothing in a Plan has interior mutability.
unsafe impl Sync for Plan {}

/// A descriptor the child uses.
fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // SAFETY: every descriptor in a Plan stays open in the child until execve or _exit, or
    // until after its last use: the child first closes only what is not in its Plan, and
    // closes all but the report socket only just before
    // it makes the seccomp listener, once it is done with the others (before, close_range
    // only marks them close-on-exec).
    unsafe { BorrowedFd::borrow_raw(raw) }
}

type Fail = (Step, Errno);

fn at<T>(step: Step, r: Result<T, Errno>) -> Result<T, Fail> {
    r.map_err(|e| (step, e))
}

/// The child's entry: runs the steps, then `execve`; reports the failing step otherwise.
pub(crate) fn run(plan: &Plan) -> ! {
    let (step, errno) = match setup(plan) {
        Ok(()) => match &plan.exec {
            // SAFETY: argv and envp are null-terminated arrays into `_strings`, alive here.
            Some(e) => (Step::Exec, unsafe {
                sys::execve(&e.path, e.argv.as_ptr(), e.envp.as_ptr())
            }),
            None => sys::exit(0),
        },
        Err(f) => f,
    };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(step as u32).to_le_bytes());
    msg[4..].copy_from_slice(&errno.raw_os_error().to_le_bytes());
    let _ = rustix::io::write(fd(plan.fds.report), &msg);
    sys::exit(127)
}

fn setup(plan: &Plan) -> Result<(), Fail> {
    use rustix::process as p;
    use rustix::thread as t;
    let l = &*plan.layout;

    // The host's handlers would run in the host's memory: none may run here. Every signal is
    // blocked until they are gone (the spawner thread's mask).
    at(Step::Signals, sys::default_signals())?;
    // The host takes this child's pid (written by the kernel before it ran) once told.
    at(
        Step::Started,
        rustix::io::write(fd(plan.fds.report), &[STARTED]).map(drop),
    )?;
    // Die with the host from the first instruction on (re-armed after the uid change below,
    // which clears it).
    at(
        Step::DeathSignal,
        p::set_parent_process_death_signal(Some(p::Signal::KILL)),
    )?;
    // The death signal comes only if the host dies from now on. Dead already, it is told by
    // EOF on the sync pipe, once no copy of the pipe's write end is left: this child's, and
    // those of children forked beside it, each holding the others' (outside attack: a child
    // forked just before the host was killed waited for ever, holding copies of all the
    // host's descriptors, its listening socket and audit log included). So every inherited
    // descriptor but this child's own goes now.
    at(Step::CloseFds, sys::close_all_except(&mut plan.fds.all()))?;
    // The parent writes our uid/gid maps, then one byte. EOF: the parent gave up or died.
    let mut b = [0u8; 1];
    match rustix::io::retry_on_intr(|| rustix::io::read(fd(plan.fds.sync), &mut b)) {
        Ok(1) => {}
        Ok(_) => sys::exit(0),
        Err(e) => return Err((Step::WaitForParent, e)),
    }

    // The mount namespace: nothing propagates back to the host.
    at(
        Step::MountPrivate,
        rustix::mount::mount_change(
            c"/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        ),
    )?;
    at(
        Step::MountStage,
        rustix::mount::mount(
            c"tmpfs",
            l.stage.as_c_str(),
            c"tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"size=1m,nr_inodes=256,mode=0755",
        ),
    )?;
    at(Step::PivotRoot, p::chdir(l.stage.as_c_str()))?;
    at(
        Step::PivotRoot,
        rustix::fs::mkdir(c"oldroot", Mode::from_bits_truncate(0o700)),
    )?;
    at(Step::PivotRoot, p::pivot_root(c".", c"oldroot"))?;
    at(Step::PivotRoot, p::chdir(c"/"))?;

    for d in &l.dirs {
        at(
            Step::MountPoints,
            rustix::fs::mkdir(d.as_c_str(), Mode::from_bits_truncate(0o755)),
        )?;
    }
    for f in &l.files {
        let file = at(
            Step::MountPoints,
            rustix::fs::open(
                f.as_c_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_bits_truncate(0o644),
            ),
        )?;
        drop(file);
    }
    for bind in &l.binds {
        at(
            Step::BindMount,
            rustix::mount::mount_bind(bind.src.as_c_str(), bind.dst.as_c_str()),
        )?;
        at(
            Step::BindRemount,
            rustix::mount::mount_remount(bind.dst.as_c_str(), bind.flags, c""),
        )?;
    }
    at(
        Step::MountTmp,
        rustix::mount::mount(
            c"tmpfs",
            c"/tmp",
            c"tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            l.tmp_options.as_c_str(),
        ),
    )?;
    if let Some(ruleset) = plan.fds.landlock {
        let tmp = at(
            Step::LandlockTmpRule,
            rustix::fs::open(
                c"/tmp",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
        )?;
        use std::os::fd::AsRawFd;
        at(
            Step::LandlockTmpRule,
            sys::landlock_add_path_rule(ruleset, tmp.as_raw_fd(), l.tmp_access),
        )?;
        drop(tmp);
    }
    at(
        Step::DetachOldRoot,
        rustix::mount::unmount(c"/oldroot", UnmountFlags::DETACH),
    )?;
    at(Step::DetachOldRoot, rustix::fs::rmdir(c"/oldroot"))?;
    at(
        Step::RemountRootReadOnly,
        rustix::mount::mount_remount(
            c"/",
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            c"",
        ),
    )?;
    at(Step::RemountRootReadOnly, p::chdir(c"/"))?;
    at(Step::Hostname, rustix::system::sethostname(b"warden"))?;
    // No controlling terminal; the program's own session (so TIOCSTI has nothing to reach).
    at(Step::NewSession, p::setsid())?;

    // Leave namespace root: after this the process holds no capability, even in its namespace.
    if let IdMapping::FromRoot { .. } = l.ids {
        at(Step::DropIdentity, t::set_thread_groups(&[]))?;
    }
    let gid = p::Gid::from_raw(SANDBOX_GID);
    let uid = p::Uid::from_raw(SANDBOX_UID);
    at(Step::DropIdentity, t::set_thread_res_gid(gid, gid, gid))?;
    at(Step::DropIdentity, t::set_thread_res_uid(uid, uid, uid))?;
    at(
        Step::DropIdentity,
        t::set_capabilities(
            None,
            t::CapabilitySets {
                effective: t::CapabilitySet::empty(),
                permitted: t::CapabilitySet::empty(),
                inheritable: t::CapabilitySet::empty(),
            },
        ),
    )?;
    at(Step::DropIdentity, t::clear_ambient_capability_set())?;

    // The uid change cleared the death signal: re-arm it, then make sure the host did not die
    // in between (the sync pipe's write end closes with the host).
    at(
        Step::DeathSignal,
        p::set_parent_process_death_signal(Some(p::Signal::KILL)),
    )?;
    let mut pfd = [rustix::event::PollFd::from_borrowed_fd(
        fd(plan.fds.sync),
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    at(Step::ParentGone, rustix::event::poll(&mut pfd, Some(&zero)))?;
    if pfd[0].revents().contains(rustix::event::PollFlags::HUP) {
        return Err((Step::ParentGone, Errno::SRCH));
    }

    for &(res, v) in &l.rlimits {
        at(
            Step::Rlimits,
            p::setrlimit(
                res,
                Rlimit {
                    current: Some(v),
                    maximum: Some(v),
                },
            ),
        )?;
    }

    if let Some(stdio) = plan.fds.stdio {
        for (target, src) in stdio.into_iter().enumerate() {
            // The parent made every source >= 3, so no dup2 here overwrites a later source;
            // dup2 clears close-on-exec on the new descriptor.
            let mut new = unsafe_owned(target as RawFd);
            let r = rustix::io::dup2(fd(src), &mut new);
            std::mem::forget(new);
            at(Step::Stdio, r)?;
        }
    }
    // Everything else (the host's descriptors, inherited or leaked, our pipes, the ruleset)
    // closes at execve.
    at(Step::CloseFds, sys::cloexec_from(3))?;

    at(Step::NoNewPrivs, t::set_no_new_privs(true))?;
    if let Some(ruleset) = plan.fds.landlock {
        at(Step::Landlock, sys::landlock_restrict_self(ruleset))?;
    }
    // The allowlist goes last: it refuses seccomp(2) itself. A program's refusals go to the
    // host, which counts them for the audit (`crate::notify`); where the kernel cannot give
    // a listener, the kernel answers them alone.
    let [first @ .., allowlist] = &l.seccomp;
    for prog in first {
        apply(prog)?;
    }
    match (&plan.exec, &l.seccomp_notify) {
        (Some(_), Some(notifying)) => {
            // Only the report socket is needed from here (close-on-exec: its end tells the
            // host the program started; before, a failure is written to it): nothing else
            // open, so that the listener's descriptor is within `RLIMIT_NOFILE`, however
            // many the host holds.
            let report = plan.fds.report;
            at(Step::Seccomp, sys::close_all_but(report))?;
            let listener = at(Step::Seccomp, sys::seccomp_with_listener(notifying))?;
            // Installed: the host must get the listener, or the program's refused calls
            // would wait for an answer that never comes.
            at(Step::Seccomp, send_listener(report, listener))?;
            // ... and the program starts only once the host says it holds it: a listener
            // lost in transit (the host at its descriptor limit) would otherwise leave the
            // program running unsupervised, its refusals unaudited, until the host kills it.
            at(Step::Seccomp, listener_held(report))
        }
        _ => apply(allowlist),
    }
}

/// The child's first byte on its report socket: it exists.
pub(crate) const STARTED: u8 = b'S';

/// The first byte the child sends on its report socket when it sends the seccomp listener
/// with it (a failure report is 8 bytes after it).
pub(crate) const LISTENER: u8 = b'L';

/// Sends `listener` to the host on the report socket (`SCM_RIGHTS`), without allocating.
pub(crate) fn send_listener(report: RawFd, listener: RawFd) -> Result<(), Errno> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    // The listener stays open until execve closes it (close-on-exec), as the Plan's do.
    let fds = [fd(listener)];
    if !ancillary.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Errno::NOMEM);
    }
    rustix::net::sendmsg(
        fd(report),
        &[std::io::IoSlice::new(&[LISTENER])],
        &mut ancillary,
        SendFlags::empty(),
    )
    .map(drop)
}

/// The byte the host answers on the report socket once it holds the seccomp listener.
pub(crate) const HELD: u8 = b'H';

/// Waits for the host's [`HELD`]: anything else (the host closed the socket, or it is
/// killing the child) fails the step, and the program never starts.
pub(crate) fn listener_held(report: RawFd) -> Result<(), Errno> {
    let mut b = [0u8; 1];
    match rustix::io::retry_on_intr(|| rustix::io::read(fd(report), &mut b)) {
        Ok(1) if b[0] == HELD => Ok(()),
        Ok(_) => Err(Errno::PIPE),
        Err(e) => Err(e),
    }
}

/// seccompiler's apply_filter: prctl + seccomp(2) on a borrowed program, no allocation.
fn apply(prog: &BpfProgram) -> Result<(), (Step, Errno)> {
    seccompiler::apply_filter(prog).map_err(|e| {
        let errno = match e {
            seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => {
                Errno::from_raw_os_error(io.raw_os_error().unwrap_or(libc::EINVAL))
            }
            _ => Errno::INVAL,
        };
        (Step::Seccomp, errno)
    })
}

/// An `OwnedFd` for a descriptor number that may or may not be open, for `dup2`'s target; the
/// caller forgets it (it is never closed through this value).
fn unsafe_owned(raw: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the value is only passed to dup2 as its target and then forgotten, so it never
    // closes anything; a number in 0..=2 is a valid descriptor value.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) }
}
