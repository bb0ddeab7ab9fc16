//! The raw system calls no maintained crate wraps (or wraps with allocation): `clone3`,
//! `close_range`, the two Landlock calls the child makes itself, `execve`, `_exit`, and the
//! feature probes. Every function here is async-signal-safe: no allocation, no lock.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use rustix::io::Errno;

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

/// What `clone3` returned in this process.
pub(crate) enum Forked {
    /// The parent: the child's pid (in the host's pid namespace) and a pidfd for it.
    Parent { pid: i32, pidfd: OwnedFd },
    /// The child: a copy of the calling thread only, in its new namespaces.
    Child,
}

/// `clone3(flags | CLONE_PIDFD)` without `CLONE_VM`: a fork into new namespaces whose child
/// continues on a copy of this thread's stack.
///
/// # Safety
/// The caller must, in the [`Forked::Child`] branch, do only async-signal-safe work (no
/// allocation, no lock another thread may have held at the time of the call) and end with
/// `execve` or [`exit`]: the child is a copy of a multi-threaded process in which only the
/// calling thread exists.
pub(crate) unsafe fn clone3(flags: u64) -> Result<Forked, Errno> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; no CLONE_VM and no stack, so the
    // child gets its own copy of the address space and returns here like fork(2); the caller
    // upholds the child-side contract above. `pidfd` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => Ok(Forked::Child),
        r if r > 0 => Ok(Forked::Parent {
            pid: r as i32,
            // SAFETY: with CLONE_PIDFD the kernel stored a new, owned descriptor in `pidfd`.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
        _ => Err(Errno::from_raw_os_error(errno())),
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
    if r >= 0 { r as i32 } else { -errno() }
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
                close_range(first, k - 1)?;
            }
            first = k + 1;
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
