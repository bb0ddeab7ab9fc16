//! A host thread that guards a sandbox, ahead of the machine's ordinary threads while it does.
//!
//! The file quota's watch reads what a program wrote as the kernel reports it, and holds the
//! program still when it may be over its quota. Woken by the program's first write while four
//! of the host's threads were busy, it waited up to 10-12 ms for a CPU, and 23-26 MB were
//! written past a 4 MiB quota by then: the slow-folder test failed in 3 of 10 runs, interleaved
//! with 0 of 10 with the watch urgent (0 of 8 more before). Nice -10 did not help (2 of 8
//! failed): it counts only among the host's own threads, and the program is weighed in a group
//! of its own. The lowest real-time priority (`SCHED_FIFO` 1) runs the watch as soon as it is
//! woken. It needs `CAP_SYS_NICE` (or `RLIMIT_RTPRIO`); without it the thread stays as it was.
//!
//! A real-time thread runs before every ordinary one, so this host has at most one per CPU at
//! a time, and the watch's work is paced (its reads at most a fifth of a core, see
//! `warden_runtime`'s quota): ordinary threads keep four fifths of each CPU at worst. Long
//! stretches of it (a walk of the folders) run as ordinary work ([`Urgent::ordinary`]).

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads of this process that are urgent now.
static TAKEN: AtomicUsize = AtomicUsize::new(0);

/// How many threads may be urgent at once: one per CPU this process may use.
fn slots() -> usize {
    static SLOTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// This thread, urgent until dropped (then ordinary again). Not `Send`: the scheduling
/// policy it sets and restores is the thread's own.
#[derive(Debug)]
pub struct Urgent {
    _thread: PhantomData<*const ()>,
}

impl Urgent {
    /// Makes this thread urgent if one of this host's slots is free and the kernel lets it;
    /// else `None`, and the thread is unchanged.
    pub fn here() -> Option<Urgent> {
        TAKEN
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < slots()).then_some(n + 1)
            })
            .ok()?;
        if real_time().is_err() {
            TAKEN.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Urgent {
            _thread: PhantomData,
        })
    }

    /// Runs `work` as an ordinary thread: a long stretch the thread need not be prompt for.
    pub fn ordinary<R>(&self, work: impl FnOnce() -> R) -> R {
        let _ = ordinary();
        let r = work();
        let _ = real_time();
        r
    }
}

impl Drop for Urgent {
    fn drop(&mut self) {
        let _ = ordinary();
        TAKEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether this process may make a thread urgent (tried on a thread of its own).
pub(crate) fn available() -> std::io::Result<()> {
    std::thread::spawn(|| {
        real_time()?;
        ordinary()
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::ErrorKind::Other.into()))
}

/// `SCHED_FIFO` 1 for this thread; not inherited by anything it starts.
fn real_time() -> std::io::Result<()> {
    set(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, 1)
}

/// Back to the ordinary policy (its nice value as it was). The reset-on-fork flag stays: only
/// a privileged thread may clear it, and one allowed real time by `RLIMIT_RTPRIO` alone would
/// otherwise be refused here and stay real-time.
fn ordinary() -> std::io::Result<()> {
    set(libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, 0)
}

fn set(policy: libc::c_int, priority: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is an initialized `sched_param` that lives through the call, which only
    // reads it; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's policy, from `/proc`.
    fn policy() -> i32 {
        let tid = rustix::thread::gettid().as_raw_nonzero();
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // Field 41 of stat (`policy`), counted from the state (field 3).
        fields[41 - 3].parse().unwrap()
    }

    #[test]
    fn a_thread_is_urgent_while_the_guard_lives_and_slots_are_bounded() {
        if available().is_err() {
            // Not permitted here: nothing may change.
            assert!(Urgent::here().is_none());
            assert_eq!(policy(), libc::SCHED_OTHER);
            return;
        }
        std::thread::spawn(|| {
            let urgent = Urgent::here().unwrap();
            assert_eq!(policy(), libc::SCHED_FIFO);
            urgent.ordinary(|| assert_eq!(policy(), libc::SCHED_OTHER));
            assert_eq!(policy(), libc::SCHED_FIFO);
            // No more than the host's slots at once, from any thread.
            let more: Vec<_> = (1..slots()).map(|_| Urgent::here().unwrap()).collect();
            assert!(Urgent::here().is_none());
            assert_eq!(TAKEN.load(Ordering::Acquire), slots());
            drop(more);
            drop(urgent);
            assert_eq!(policy(), libc::SCHED_OTHER);
            assert_eq!(TAKEN.load(Ordering::Acquire), 0);
        })
        .join()
        .unwrap();
    }
}
