//! The host's side of the allowlist's refusals (`SECCOMP_RET_USER_NOTIF`, see
//! [`crate::seccomp::notifying`]): a thread per sandbox answers each refused system call
//! `EPERM`, as the kernel would, and counts it by name, so that the call's audit record says
//! what the program tried (`ptrace`, `mount`, a socket other than `AF_UNIX`, ...). A system
//! call of another architecture (an `int 0x80` i386 call) is not answered: the thread kills
//! the whole sandbox, as the kernel would have killed the process, and counts it too. Past
//! [`FREE_PER_SECOND`] refusals in a second, each answer waits [`FLOOD_WAIT`]: a program that
//! loops on a refused call pays for its flood in time, not the host in CPU. Unlike the
//! kernel's own answer, the wait for the host's can be interrupted by a signal before the
//! host has read it: a handler without `SA_RESTART` then sees `EINTR` (with it, the call is
//! made, and counted, again). The filter asks the kernel to wait unkillably once the host
//! has read it (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, where the kernel has it). The thread ends
//! when the last process of the sandbox does (the listener hangs up).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

/// Refusals answered at once per second; past that each waits [`FLOOD_WAIT`] (a refusal costs
/// the host a few microseconds: at most about a tenth of a core per sandbox).
const FREE_PER_SECOND: u32 = 10_000;
const FLOOD_WAIT: Duration = Duration::from_micros(100);

/// Distinct system calls counted apart that [`crate::seccomp::syscall_name`] does not know by
/// name; past these, the rest are counted together: a program making up numbers cannot grow
/// the host's memory or the audit record.
const MAX_UNNAMED: usize = 32;

/// The refusals of one sandbox not yet taken.
#[derive(Debug, Default)]
pub(crate) struct Refused(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// By (architecture, system call number).
    calls: BTreeMap<(u32, i64), u64>,
    unnamed: usize,
    /// Refusals of calls past [`MAX_UNNAMED`] unnamed ones.
    others: u64,
    /// Whether a call of another architecture had the sandbox killed.
    foreign: bool,
}

impl Refused {
    /// Every refusal since the last take: (system call, times), the calls known by name
    /// first (so that made-up numbers cannot push them out of the audit's itemized list).
    pub(crate) fn take(&self) -> Vec<(String, u64)> {
        let taken = {
            let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            counts.unnamed = 0;
            (
                std::mem::take(&mut counts.calls),
                std::mem::take(&mut counts.others),
            )
        };
        let (calls, others) = taken;
        let mut calls: Vec<_> = calls.into_iter().collect();
        calls.sort_by_key(|((arch, nr), _)| {
            (
                *arch != NATIVE || !crate::seccomp::named(*nr),
                *arch != NATIVE,
                *arch,
                *nr,
            )
        });
        let mut out: Vec<_> = calls
            .into_iter()
            .map(|((arch, nr), n)| (describe(arch, nr), n))
            .collect();
        if others > 0 {
            out.push(("other system calls".to_owned(), others));
        }
        out
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
        } = &mut *counts;
        *foreign |= arch != NATIVE;
        let key = (arch, nr);
        let named = arch == NATIVE && crate::seccomp::named(nr);
        if !named && !calls.contains_key(&key) {
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
pub(crate) fn supervise(listener: OwnedFd, init: OwnedFd) -> std::io::Result<Arc<Refused>> {
    let refused = Arc::new(Refused::default());
    let counts = Arc::clone(&refused);
    std::thread::Builder::new()
        .name("warden-seccomp".into())
        .spawn(move || answer(&listener, &init, &counts))?;
    Ok(refused)
}

fn answer(listener: &OwnedFd, init: &OwnedFd, refused: &Refused) {
    let mut second = Instant::now();
    let mut in_second = 0u32;
    loop {
        let mut pfd = [PollFd::new(listener, PollFlags::IN)];
        match rustix::event::poll(&mut pfd, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        let ready = pfd[0].revents();
        if !ready.contains(PollFlags::IN) {
            if ready.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                return;
            }
            continue;
        }
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
            match std::io::Error::last_os_error().raw_os_error() {
                // Interrupted, or the caller died before it was read.
                Some(libc::EINTR | libc::ENOENT) => continue,
                _ => return,
            }
        }
        refused.note(req.data.arch, i64::from(req.data.nr));
        if req.data.arch != NATIVE {
            // Never answered: the caller waits until the sandbox's end, which this is (its
            // init's death ends the pid namespace).
            let _ = rustix::process::pidfd_send_signal(init, rustix::process::Signal::KILL);
            continue;
        }
        if second.elapsed() >= Duration::from_secs(1) {
            second = Instant::now();
            in_second = 0;
        }
        in_second = in_second.saturating_add(1);
        if in_second > FREE_PER_SECOND {
            std::thread::sleep(FLOOD_WAIT);
        }
        let resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: -libc::EPERM,
            flags: 0,
        };
        // SAFETY: as above, with the response struct NOTIF_SEND reads; it fails harmlessly
        // (ENOENT) if the caller died meanwhile.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &resp as *const libc::seccomp_notif_resp,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_numbers_are_counted_together_past_a_few_and_named_calls_stay_apart() {
        let refused = Refused::default();
        for nr in 1000..1040 {
            refused.note(NATIVE, nr);
        }
        refused.note(NATIVE, 1000);
        refused.note(NATIVE, libc::SYS_ptrace);
        refused.note(NATIVE, libc::SYS_mount);
        let taken = refused.take();
        // Named first, then the first 32 numbers apart (1000 twice), then the rest together.
        assert_eq!(taken.len(), 2 + MAX_UNNAMED + 1, "{taken:?}");
        assert_eq!(taken[0], ("ptrace".to_owned(), 1));
        assert_eq!(taken[1], ("mount".to_owned(), 1));
        assert_eq!(taken[2], ("system call 1000".to_owned(), 2));
        assert_eq!(taken.last(), Some(&("other system calls".to_owned(), 8)));
        assert!(!refused.killed_foreign());
        // Taken: counted afresh.
        refused.note(I386, 20);
        refused.note(0x1234, 7);
        assert!(refused.killed_foreign());
        assert_eq!(
            refused.take(),
            [
                (
                    "system call 7 of architecture 0x1234 (another architecture: the sandbox \
                     was killed)"
                        .to_owned(),
                    1
                ),
                (
                    "i386 system call 20 (another architecture: the sandbox was killed)".to_owned(),
                    1
                ),
            ]
        );
    }
}
