//! The host's side of the allowlist's refusals (`SECCOMP_RET_USER_NOTIF`, see
//! [`crate::seccomp::notifying`]): a thread per sandbox answers each refused system call
//! `EPERM`, as the kernel would, and counts it by name, so that the call's audit record says
//! what the program tried (`ptrace`, `mount`, a socket other than `AF_UNIX`, ...). Past
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

/// The refusals of one sandbox not yet taken, by system call number.
#[derive(Debug, Default)]
pub(crate) struct Refused(Mutex<BTreeMap<i64, u64>>);

impl Refused {
    /// Every refusal since the last take: (system call, times), the calls known by name
    /// first (so that made-up numbers cannot push them out of the audit's itemized list).
    pub(crate) fn take(&self) -> Vec<(String, u64)> {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        let mut taken: Vec<_> = taken.into_iter().collect();
        taken.sort_by_key(|(nr, _)| (!crate::seccomp::named(*nr), *nr));
        taken
            .into_iter()
            .map(|(nr, n)| (crate::seccomp::syscall_name(nr).into_owned(), n))
            .collect()
    }

    fn note(&self, nr: i64) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(nr).or_default();
        *n = n.saturating_add(1);
    }
}

/// Starts the thread that answers `listener`'s notifications.
pub(crate) fn supervise(listener: OwnedFd) -> std::io::Result<Arc<Refused>> {
    let refused = Arc::new(Refused::default());
    let counts = Arc::clone(&refused);
    std::thread::Builder::new()
        .name("warden-seccomp".into())
        .spawn(move || answer(&listener, &counts))?;
    Ok(refused)
}

fn answer(listener: &OwnedFd, refused: &Refused) {
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
        refused.note(i64::from(req.data.nr));
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
