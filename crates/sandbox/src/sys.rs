//! The raw system calls no maintained crate wraps (or wraps with allocation): `clone` into
//! the host's memory, signal dispositions, `close_range`, the two Landlock calls the child makes itself, `execve`, `_exit`, the
//! feature probes, and `poll`'s timeout from a duration. Every function here is async-signal-safe: no allocation, no lock.
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

use std::ffi::{CStr, c_char};
use std::os::fd::RawFd;

use rustix::io::Errno;

/// Bytes of stack a child gets between `clone` and `execve` (it makes system calls only, with
/// a few small buffers); a guard page below it.
const CHILD_STACK_BYTES: usize = 256 * 1024;

/// The stack a child runs on while it shares this process's memory ([`vfork_into`]): mapped
/// once per spawner thread and used by one child at a time, unmapped when dropped.
pub(crate) struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    pub(crate) fn new() -> Result<ChildStack, Errno> {
        let len = CHILD_STACK_BYTES;
        // SAFETY: a new private anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::from_raw_os_error(errno()));
        }
        let stack = ChildStack { base, len };
        // The lowest page faults instead of running into whatever is mapped below.
        // SAFETY: the first page of the mapping just made, which nothing uses yet.
        if unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) } != 0 {
            return Err(Errno::from_raw_os_error(errno()));
        }
        Ok(stack)
    }

    /// The highest address (stacks grow down), 16-byte aligned as the mapping is.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no child runs on it (each has exec'd or exited
        // before `vfork_into` returned).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// `clone(CLONE_VM | CLONE_VFORK | CLONE_PARENT_SETTID | flags)`, as `posix_spawn` does: the
/// child runs `entry(arg)` on `stack`, in this process's memory, and this thread waits until
/// it has called `execve` or exited. So nothing of the host is copied (a fork copied its page
/// tables, then paid a copy-on-write fault for each page any thread of the host wrote before
/// the child's `execve`: a third of the host's CPU for each process call). Its pid in this
/// pid namespace is in `tid` before it runs; returned once it has exec'd or exited.
///
/// # Safety
/// `entry` must do only async-signal-safe work and end in `execve` or [`exit`]: it runs
/// beside the host's other threads, in their memory, while they hold whatever locks they
/// hold. It may use this thread's thread-local storage (`errno`): this thread waits. `arg`
/// must be valid for `entry` until this returns.
pub(crate) unsafe fn vfork_into(
    flags: u64,
    stack: &ChildStack,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    tid: &std::sync::atomic::AtomicI32,
) -> Result<i32, Errno> {
    let flags = libc::c_int::try_from(flags).map_err(|_| Errno::INVAL)?
        | libc::CLONE_VM
        | libc::CLONE_VFORK
        | libc::CLONE_PARENT_SETTID
        | libc::SIGCHLD;
    // SAFETY: `stack` is mapped and unused (one child at a time per stack, and the last one
    // has exec'd or exited); `tid` is a valid pid_t slot for the kernel to write; the caller
    // upholds the contract on `entry` and `arg`.
    let r = unsafe { libc::clone(entry, stack.top(), flags, arg, tid.as_ptr()) };
    if r > 0 {
        Ok(r)
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

/// `rt_sigaction(sig, SIG_DFL)` without libc's wrapper (which refuses glibc's own signals).
fn default_raw(sig: libc::c_int) -> Result<(), Errno> {
    /// The kernel's `struct sigaction` on x86-64 and aarch64: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: `default` is the kernel's struct for this architecture, alive for the call;
    // the old action is not asked for (null); the size is the kernel's sigset_t's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &default as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

/// `struct clone_args` (linux/sched.h), the size of `CLONE_ARGS_SIZE_VER2`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3(flags | CLONE_PARENT_SETTID)` without `CLONE_VM`: a fork into new namespaces whose
/// child continues on a copy of this thread's stack (`None` there; the child's pid here). Its
/// pid is in `tid` before it runs, as with [`vfork_into`]. For kernels where a child sharing
/// the host's memory would take the host with it if it dumped core (before 5.16).
///
/// # Safety
/// The caller must, in the child (`None`), do only async-signal-safe work (no allocation, no
/// lock another thread may have held at the time of the call) and end with `execve` or
/// [`exit`]: the child is a copy of a multi-threaded process in which only the calling thread
/// exists.
pub(crate) unsafe fn fork_into(
    flags: u64,
    tid: &std::sync::atomic::AtomicI32,
) -> Result<Option<i32>, Errno> {
    let args = CloneArgs {
        flags: flags | libc::CLONE_PARENT_SETTID as u64,
        parent_tid: tid.as_ptr() as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; no CLONE_VM and no stack, so the
    // child gets its own copy of the address space and returns here like fork(2); the caller
    // upholds the child-side contract above. `tid` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => Ok(None),
        r if r > 0 => i32::try_from(r).map(Some).map_err(|_| Errno::INVAL),
        _ => Err(Errno::from_raw_os_error(errno())),
    }
}

/// Blocks every signal on this thread: a child made by [`vfork_into`] inherits the mask, so
/// none of the host's handlers (which would run in the host's memory) can run in it before
/// it has set every disposition back to the default ([`default_signals`]).
pub(crate) fn block_signals() -> Result<(), Errno> {
    // SAFETY: `all` is a sigset_t filled by sigfillset before use; pthread_sigmask only
    // changes this thread's mask.
    let r = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut())
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(r))
    }
}

/// In the child: every signal the host catches goes back to its default action (one it
/// ignores stays ignored, as across any `execve`), then none is blocked. No allocation.
pub(crate) fn default_signals() -> Result<(), Errno> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // glibc's own (its cancellation and set*id signals, handled in the host), which its
        // `sigaction` will not touch: set through the system call itself (review, session
        // 37). Only sent to the host's own threads, never to this process; reset all the same.
        if (32..libc::SIGRTMIN()).contains(&sig) {
            default_raw(sig)?;
            continue;
        }
        // SAFETY: `old` is written by sigaction; `dfl` is a zeroed sigaction with SIG_DFL.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                return Err(Errno::from_raw_os_error(errno()));
            }
            if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(sig, &dfl, std::ptr::null_mut()) != 0 {
                    return Err(Errno::from_raw_os_error(errno()));
                }
            }
        }
    }
    // SAFETY: an empty set, initialised by sigemptyset; only this process's mask changes.
    let r = unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut())
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: every descriptor from `first` on is closed by
/// the coming `execve`, atomically, whatever the host had open.
pub(crate) fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes integers only; with CLOSE_RANGE_CLOEXEC it closes nothing now.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

/// `struct landlock_path_beneath_attr` (packed, linux/landlock.h).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;

/// `landlock_add_rule(ruleset, PATH_BENEATH, {access, dir})`: the one rule that cannot be made
/// before the fork, for the child's own tmpfs at `/tmp`. The ruleset was built by the
/// `landlock` crate in the parent.
pub(crate) fn landlock_add_path_rule(ruleset: RawFd, dir: RawFd, access: u64) -> Result<(), Errno> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: dir,
    };
    // SAFETY: `attr` is a valid landlock_path_beneath_attr for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

/// `landlock_restrict_self(ruleset, 0)`. Needs no_new_privs first.
pub(crate) fn landlock_restrict_self(ruleset: RawFd) -> Result<(), Errno> {
    // SAFETY: integers only.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

/// The Landlock ABI version, or a negative errno when Landlock is missing or disabled.
pub(crate) fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a null attribute with size 0 and the VERSION flag only queries the ABI.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r >= 0 {
        r as i32
    } else {
        errno().saturating_neg()
    }
}

/// Whether seccomp filter mode exists and can kill a process (`SECCOMP_GET_ACTION_AVAIL`).
pub(crate) fn seccomp_filter_available() -> std::io::Result<()> {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
    let action: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    // SAFETY: `action` is a valid u32 for the duration of the call; the call changes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the kernel has seccomp's user notifications (`SECCOMP_RET_USER_NOTIF` and a
/// listener: Linux 5.0), by asking their sizes (`SECCOMP_GET_NOTIF_SIZES`, of the same release).
pub(crate) fn seccomp_notify_available() -> std::io::Result<()> {
    const SECCOMP_GET_NOTIF_SIZES: libc::c_uint = 3;
    let mut sizes = [0u16; 3];
    // SAFETY: `sizes` is the kernel's `struct seccomp_notif_sizes` (three u16), writable for
    // the call; the call changes nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_NOTIF_SIZES,
            0,
            sizes.as_mut_ptr(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Closes every descriptor from 3 on but those in `keep`, now (no allocation: `keep` is
/// sorted in place).
pub(crate) fn close_all_except(keep: &mut [RawFd]) -> Result<(), Errno> {
    keep.sort_unstable();
    let mut first: u32 = 3;
    for &k in keep.iter() {
        let k = u32::try_from(k).map_err(|_| Errno::BADF)?;
        if k >= first {
            if k > first {
                close_range(first, k.saturating_sub(1))?;
            }
            first = k.saturating_add(1);
        }
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes integers only; the caller no longer uses what it closes.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

/// Closes every descriptor from 3 on but `keep`, now (not at execve).
pub(crate) fn close_all_but(keep: RawFd) -> Result<(), Errno> {
    close_all_except(&mut [keep])
}

/// Installs the seccomp program `prog` with a listener for its `SECCOMP_RET_USER_NOTIF`
/// answers (`SECCOMP_FILTER_FLAG_NEW_LISTENER`; `no_new_privs` must be set), and returns the
/// listener (close-on-exec). No allocation: it runs in the child between fork and execve.
pub(crate) fn seccomp_with_listener(prog: &[seccompiler::sock_filter]) -> Result<RawFd, Errno> {
    let len = u16::try_from(prog.len()).map_err(|_| Errno::INVAL)?;
    let fprog = libc::sock_fprog {
        len,
        // seccompiler's sock_filter is the kernel's struct (code, jt, jf, k), as libc's is.
        filter: prog.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // Once the host has read a notification, only a fatal signal ends the wait (Linux 5.19);
    // without that flag, any signal could.
    const WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;
    let install = |flags: libc::c_ulong| {
        // SAFETY: `fprog` points at `prog` (alive for the call, of the layout the kernel
        // reads); the kernel copies the program and writes nothing through the pointer.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    let mut r = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | WAIT_KILLABLE_RECV);
    if r < 0 && errno() == libc::EINVAL {
        r = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER);
    }
    if r < 0 {
        Err(Errno::from_raw_os_error(errno()))
    } else {
        RawFd::try_from(r).map_err(|_| Errno::BADF)
    }
}

/// `execve`; returns only on failure.
///
/// # Safety
/// `argv` and `envp` must be null-terminated arrays of pointers to NUL-terminated strings that
/// stay valid for the call.
pub(crate) unsafe fn execve(
    path: &CStr,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Errno {
    // SAFETY: the caller guarantees argv and envp; path is NUL-terminated.
    unsafe { libc::execve(path.as_ptr(), argv, envp) };
    Errno::from_raw_os_error(errno())
}

/// `_exit(code)`: no atexit handlers, no stdio flush, nothing the copy of the host must not run.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// `d` as `poll`'s timeout (the longest there is if it does not fit).
pub(crate) fn timespec(d: std::time::Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}
