//! The host's side of the allowlist's refusals (`SECCOMP_RET_USER_NOTIF`, see
//! [`crate::seccomp::notifying`]): a thread per sandbox answers each refused system call
//! `EPERM`, as the kernel would, and counts it by name, so that the call's audit record says
//! what the program tried (`ptrace`, `mount`, a socket other than `AF_UNIX`, ...). A system
//! call of another architecture (an `int 0x80` i386 call) is not answered: the thread kills
//! the whole sandbox, as the kernel would have killed the process, and counts it too. Past
//! [`FREE_PER_SECOND`] refusals in a second, answers go one per [`FLOOD_WAIT`]: a program that
//! loops on a refused call pays for its flood in time, not the host in CPU. The count is kept
//! per [`crate::Sandbox`] (an install's), over all its programs: several calls flooding at
//! once get no more answers than one. Notifications are
//! still read (and counted) as they come meanwhile: only their answers wait. Unlike the
//! kernel's own answer, the wait for the host's can be interrupted by a signal before the
//! host has read it: a handler without `SA_RESTART` then sees `EINTR` (with it, the call is
//! made, and counted, again). The filter asks the kernel to wait unkillably once the host
//! has read it (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, where the kernel has it). The thread ends
//! when the last process of the sandbox does (the listener hangs up).
#![allow(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

/// Refusals answered at once per second; past that each waits [`FLOOD_WAIT`]. A refusal costs
/// the host about 10 µs (read, count, answer, and the wake-ups between), outside the sandboxes'
/// cpu group: at most about 2,000 a second is a fiftieth of a core per [`crate::Sandbox`]
/// (before, per program: 8 calls flooding at once cost 0.17-0.20 of a core). (With 10,000
/// and 100 µs, an outside attack's program looping on `ptrace` got 15,000 answers a second,
/// 0.15 of a core of the host's each; eight such calls took 0.75 of a core from every tenant.)
const FREE_PER_SECOND: u32 = 1_000;
const FLOOD_WAIT: Duration = Duration::from_millis(1);

/// Distinct system calls counted apart that [`crate::seccomp::syscall_name`] does not know by
/// name; past these, the rest are counted together: a program making up numbers cannot grow
/// the host's memory or the audit record.
const MAX_UNNAMED: usize = 32;

/// A system call the sandbox's seccomp filter refused, as the audit names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub call: String,
    pub times: u64,
    /// Not answered `EPERM`: the sandbox was killed for it (a call of another architecture).
    pub killed: bool,
}

/// The refusals of one sandbox not yet taken, and whether its supervisor has ended.
#[derive(Debug, Default)]
pub(crate) struct Refused(Mutex<Counts>, Condvar);

#[derive(Debug, Default)]
struct Counts {
    /// By (architecture, system call number).
    calls: BTreeMap<(u32, i64), u64>,
    unnamed: usize,
    /// Refusals of calls past [`MAX_UNNAMED`] unnamed ones.
    others: u64,
    /// The supervisor ended: every refusal of the sandbox is counted.
    ended: bool,
    /// Whether a call of another architecture had the sandbox killed.
    foreign: bool,
}

impl Refused {
    /// Every refusal since the last take: the calls of another architecture first (each
    /// killed the sandbox), then those known by name (so that made-up numbers cannot push
    /// either out of the audit's itemized list), then the rest.
    pub(crate) fn take(&self) -> Vec<Refusal> {
        let (calls, others) = {
            let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            counts.unnamed = 0;
            (
                std::mem::take(&mut counts.calls),
                std::mem::take(&mut counts.others),
            )
        };
        let mut calls: Vec<_> = calls.into_iter().collect();
        calls.sort_by_key(|((arch, nr), _)| {
            (*arch == NATIVE, !crate::seccomp::named(*nr), *arch, *nr)
        });
        let mut out: Vec<_> = calls
            .into_iter()
            .map(|((arch, nr), times)| Refusal {
                call: describe(arch, nr),
                times,
                killed: arch != NATIVE,
            })
            .collect();
        if others > 0 {
            out.push(Refusal {
                call: "other system calls".to_owned(),
                times: others,
                killed: false,
            });
        }
        out
    }

    /// Waits at most `within` for the supervisor to end (after the sandbox's last process
    /// did, once it has read and counted every refusal); whether it has.
    pub(crate) fn wait_ended(&self, within: Duration) -> bool {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (counts, _) = self
            .1
            .wait_timeout_while(counts, within, |c| !c.ended)
            .unwrap_or_else(PoisonError::into_inner);
        counts.ended
    }

    fn end(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).ended = true;
        self.1.notify_all();
    }

    /// Whether the sandbox was killed for a system call of another architecture.
    pub(crate) fn killed_foreign(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .foreign
    }

    fn note(&self, arch: u32, nr: i64) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Counts {
            calls,
            unnamed,
            others,
            foreign,
            ended: _,
        } = &mut *counts;
        *foreign |= arch != NATIVE;
        let key = (arch, nr);
        // A call of another architecture is always kept apart (it killed the sandbox; made-up
        // numbers before it must not fold it away).
        let apart = arch != NATIVE || crate::seccomp::named(nr);
        if !apart && !calls.contains_key(&key) {
            if *unnamed >= MAX_UNNAMED {
                *others = others.saturating_add(1);
                return;
            }
            *unnamed += 1;
        }
        let n = calls.entry(key).or_default();
        *n = n.saturating_add(1);
    }
}

/// `AUDIT_ARCH_X86_64`, the only architecture the allowlist lets through.
const NATIVE: u32 = 0xC000_003E;
const I386: u32 = 0x4000_0003;

/// A refused call as the audit names it.
fn describe(arch: u32, nr: i64) -> String {
    match arch {
        NATIVE => crate::seccomp::syscall_name(nr).into_owned(),
        I386 => format!("i386 system call {nr} (another architecture: the sandbox was killed)"),
        _ => format!(
            "system call {nr} of architecture {arch:#x} (another architecture: the sandbox was \
             killed)"
        ),
    }
}

/// Starts the thread that answers `listener`'s notifications; `init` is the sandbox's first
/// process (a pidfd), killed with all of the sandbox for a call of another architecture.
pub(crate) fn supervise(
    listener: OwnedFd,
    init: OwnedFd,
    brake: Arc<Brake>,
) -> std::io::Result<Arc<Refused>> {
    let refused = Arc::new(Refused::default());
    let counts = Arc::clone(&refused);
    std::thread::Builder::new()
        .name("warden-seccomp".into())
        .spawn(move || {
            let _end = KillOnEnd(&init, &counts);
            answer(&listener, &init, &counts, &brake);
        })?;
    Ok(refused)
}

/// Kills the sandbox when its supervisor ends, however it ends (an error of `poll` or of the
/// listener, a panic), before the listener closes: the program's refused calls would
/// otherwise be answered `ENOSYS` by the kernel, unaudited, and a call of another
/// architecture let through. After the listener's hang-up no task of the sandbox is left,
/// and this kills nothing.
/// (And says the supervisor ended, to whoever waits for the last refusals.)
struct KillOnEnd<'a>(&'a OwnedFd, &'a Refused);

impl Drop for KillOnEnd<'_> {
    fn drop(&mut self) {
        kill(self.0);
        self.1.end();
    }
}

/// Kills the sandbox: its init, through its pidfd (its death ends the pid namespace).
fn kill(init: &OwnedFd) {
    let _ = rustix::process::pidfd_send_signal(init, rustix::process::Signal::KILL);
}

fn answer(listener: &OwnedFd, init: &OwnedFd, refused: &Refused, brake: &Brake) {
    // Read, counted, and waiting for their answer (at most one per task of the sandbox:
    // each waits for its own).
    let mut due: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        // Each notification is read as soon as it comes, even while the brake holds answers
        // back: read, it is counted, and its task can no longer be interrupted by a signal
        // (outside attack: with the thread asleep between answers under a flood, a call of
        // another architecture cut by a signal after 30 µs went unread, unkilled, unrecorded).
        let wait = due
            .front()
            .map(|&(_, at)| crate::sys::timespec(at.saturating_duration_since(Instant::now())));
        let mut ready = match poll(listener, wait.as_ref()) {
            Ok(r) => r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        };
        // All that are waiting read first, then answered: a call is read after at most one
        // round of the others', not after each has been answered and made its next.
        while ready.contains(PollFlags::IN) {
            match receive(listener) {
                Received::Call { id, arch, nr } => {
                    refused.note(arch, nr);
                    if arch != NATIVE {
                        // Never answered: the caller waits until the sandbox's end, which
                        // this is (its init's death ends the pid namespace).
                        kill(init);
                    } else {
                        due.push_back((id, brake.next()));
                    }
                }
                Received::Gone => {}
                Received::Closed => return,
            }
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            ready = poll(listener, Some(&zero)).unwrap_or(PollFlags::empty());
        }
        // No task of the sandbox left: none waits for an answer.
        if ready.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
            return;
        }
        let now = Instant::now();
        while let Some(&(id, _)) = due.front().filter(|&&(_, at)| at <= now) {
            due.pop_front();
            refuse(listener, id);
        }
    }
}

fn poll(
    listener: &OwnedFd,
    wait: Option<&rustix::event::Timespec>,
) -> rustix::io::Result<PollFlags> {
    let mut pfd = [PollFd::new(listener, PollFlags::IN)];
    rustix::event::poll(&mut pfd, wait)?;
    Ok(pfd[0].revents())
}

/// When answers may go: at once up to [`FREE_PER_SECOND`] in a second, then one per
/// [`FLOOD_WAIT`].
/// When the next refusal may be answered, for all the programs of one sandbox.
#[derive(Debug)]
pub(crate) struct Brake(Mutex<BrakeState>);

#[derive(Debug)]
struct BrakeState {
    second: Instant,
    in_second: u32,
    next: Instant,
}

impl Default for Brake {
    fn default() -> Brake {
        let now = Instant::now();
        Brake(Mutex::new(BrakeState {
            second: now,
            in_second: 0,
            next: now,
        }))
    }
}

impl Brake {
    fn next(&self) -> Instant {
        let now = Instant::now();
        let mut b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(b.second) >= Duration::from_secs(1) {
            b.second = now;
            b.in_second = 0;
        }
        b.in_second = b.in_second.saturating_add(1);
        if b.in_second <= FREE_PER_SECOND {
            return now;
        }
        b.next = b.next.max(now) + FLOOD_WAIT;
        b.next
    }
}

enum Received {
    Call {
        id: u64,
        arch: u32,
        nr: i64,
    },
    /// Interrupted, or its caller died before it was read.
    Gone,
    /// The listener fails: the sandbox is over.
    Closed,
}

fn receive(listener: &OwnedFd) -> Received {
    // SAFETY: seccomp_notif is plain integers, for which all zeroes is a valid value (and
    // the kernel requires it zeroed).
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the listener is a seccomp notification descriptor and `req` the struct of
    // the size NOTIF_RECV's number encodes; the kernel writes only into it.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req as *mut libc::seccomp_notif,
        )
    };
    if r < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR | libc::ENOENT) => Received::Gone,
            _ => Received::Closed,
        };
    }
    Received::Call {
        id: req.id,
        arch: req.data.arch,
        nr: i64::from(req.data.nr),
    }
}

/// Answers notification `id` `EPERM`.
fn refuse(listener: &OwnedFd, id: u64) {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -libc::EPERM,
        flags: 0,
    };
    // SAFETY: the listener is a seccomp notification descriptor and `resp` the struct
    // NOTIF_SEND reads; it fails harmlessly (ENOENT) if the caller died meanwhile.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &resp as *const libc::seccomp_notif_resp,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervisor that cannot read its listener (here not a listener at all: its reads
    /// fail) ends, and takes the sandbox (here a `sleep`) with it.
    #[test]
    fn a_supervisor_that_fails_kills_the_sandbox() {
        use std::os::unix::process::ExitStatusExt;
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(i32::try_from(sleeper.id()).unwrap()).unwrap();
        let init = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        let (not_a_listener, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"x").unwrap();
        supervise(not_a_listener, init, Arc::default()).unwrap();
        assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn made_up_numbers_are_counted_together_past_a_few_and_named_calls_stay_apart() {
        let refused = Refused::default();
        for nr in 1000..1040 {
            refused.note(NATIVE, nr);
        }
        refused.note(NATIVE, 1000);
        refused.note(NATIVE, libc::SYS_ptrace);
        refused.note(NATIVE, libc::SYS_mount);
        let taken: Vec<_> = refused
            .take()
            .into_iter()
            .map(|r| (r.call, r.times))
            .collect();
        // Named first, then the first 32 numbers apart (1000 twice), then the rest together.
        assert_eq!(taken.len(), 2 + MAX_UNNAMED + 1, "{taken:?}");
        assert_eq!(taken[0], ("ptrace".to_owned(), 1));
        assert_eq!(taken[1], ("mount".to_owned(), 1));
        assert_eq!(taken[2], ("system call 1000".to_owned(), 2));
        assert_eq!(taken.last(), Some(&("other system calls".to_owned(), 8)));
        assert!(!refused.killed_foreign());
        // Taken: counted afresh. Calls of another architecture come first, before any name,
        // and past any number of made-up ones.
        for nr in 2000..2040 {
            refused.note(NATIVE, nr);
        }
        refused.note(NATIVE, libc::SYS_ptrace);
        refused.note(I386, 20);
        refused.note(0x1234, 7);
        assert!(refused.killed_foreign());
        let taken = refused.take();
        assert_eq!(taken.len(), 3 + MAX_UNNAMED + 1, "{taken:?}");
        assert_eq!(
            taken[..3]
                .iter()
                .map(|r| (r.call.as_str(), r.killed))
                .collect::<Vec<_>>(),
            [
                (
                    "system call 7 of architecture 0x1234 (another architecture: the sandbox \
                     was killed)",
                    true
                ),
                (
                    "i386 system call 20 (another architecture: the sandbox was killed)",
                    true
                ),
                ("ptrace", false),
            ]
        );
    }
}
