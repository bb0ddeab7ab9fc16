//! The seccomp-bpf filters, compiled once per [`Sandbox`](crate::Sandbox) with `seccompiler`.
//!
//! Four filters are installed; the kernel runs all and keeps the most restrictive answer (for
//! two refusals, the allowlist's). In the order of this list (the allowlist is installed last
//! since it refuses `seccomp(2)`). The first three let calls of other architectures through:
//! the allowlist refuses them all (4).
//!
//! 1. **`clone3`, `openat2` → `ENOSYS`.** Both take their flags in memory that BPF cannot
//!    read: `clone3` could not be checked for namespace flags, `openat2` for `O_DIRECT` (3).
//!    `ENOSYS` says "this kernel has no such call": glibc falls back to `clone`, programs to
//!    `openat`, whose flags the filters check.
//! 2. **`fallocate` → `EOPNOTSUPP`.** It reserves disk space without writing it, in one call,
//!    and with `FALLOC_FL_KEEP_SIZE` past `RLIMIT_FSIZE`: a program filled a read-write
//!    folder's whole file system (1 GiB past a 4 MiB quota) faster than any measure could
//!    stop it (outside attack). `EOPNOTSUPP` makes glibc's `posix_fallocate` write the zeros
//!    itself, which the file-size limit and the quota's watch bound.
//! 3. **`O_DIRECT` → `EINVAL`**: `open` (flags in argument 1) and `openat` (argument 2) with
//!    `O_DIRECT`, and `fcntl(fd, F_SETFL, flags)` with `O_DIRECT` in the flags. A direct write
//!    waits for the disk uninterruptibly: the cgroup freezer cannot hold its task and
//!    `SIGKILL` does not stop it, so the writes in flight when a call went over its quota
//!    all landed (outside attack: 99-132 MiB past a 4 MiB quota, once per call). A buffered
//!    write stops between pages at `SIGKILL` and is bounded by `RLIMIT_FSIZE`. `EINVAL` is
//!    what a file system without direct I/O answers (tmpfs before Linux 6.6), so a program
//!    that handles those falls back to buffered I/O here too. Linux AIO (`io_setup`,
//!    `io_submit`) and io_uring, the other ways to queue direct writes, are off the
//!    allowlist; `preadv2`/`pwritev2` have no flag that makes a write direct; descriptors
//!    come from no one outside the sandbox but its three pipes. (`pipe2(O_DIRECT)`, a packet
//!    pipe with no disk behind it, is left alone.)
//! 4. **The allowlist.** Its first instructions (emitted by `seccompiler`) compare
//!    `seccomp_data.arch` with `AUDIT_ARCH_X86_64` and **kill the process** on any other
//!    architecture (an `int 0x80` i386 call, for example): a foreign-ABI call is never a mistake
//!    a correct program makes. Where the kernel gives a listener, the call goes to the host's
//!    supervisor instead, which never answers it: it kills the whole sandbox and counts the
//!    call for the audit record. Then every system call number not in [`ALLOWED`] (or allowed only
//!    with conditions that do not hold) gets **`EPERM`**: from the host's supervisor, which
//!    counts it for the call's audit record, where the kernel gives a listener ([`notifying`],
//!    `crate::notify`), from the kernel otherwise. x32 calls (number with bit
//!    `0x40000000`) carry the x86-64 arch value but never equal an allowed number, so they are
//!    refused too, whether or not the kernel has the x32 ABI. `EPERM` rather than a kill for the
//!    rest: programs and their runtimes probe features (io_uring, userfaultfd, ...) and fall
//!    back when refused, the refusal is visible to the program's own error handling, and a
//!    refused call has no effect either way.
//!
//! Refused outright (not in the allowlist): `ptrace`, `process_vm_readv/writev`, `mount`,
//! `umount2`, `pivot_root`, `chroot`, `bpf`, `keyctl`, `add_key`, `request_key`,
//! `io_uring_setup/enter/register`, `io_setup`, `io_submit` and the rest of Linux AIO,
//! `perf_event_open`, `kexec_load`, `kexec_file_load`, `userfaultfd`, `unshare`, `setns`,
//! `init_module`, `finit_module`, `delete_module`, the `set*id` family, `setgroups`, `capset`,
//! `mknod`, `chown` and kin, `pidfd_*`, `kcmp`, `personality`, `open_by_handle_at`, System V
//! IPC, `reboot`, clocks, `syslog`, `memfd_create` (its pages count against no rlimit: until a
//! memory cgroup bounds the tree, an anonymous file is host memory out of every limit; and it
//! is a way to run code from memory), ...
//! Allowed with conditions: `clone` without any `CLONE_NEW*` flag; `socket` for `AF_UNIX` only;
//! `ioctl` except `TIOCSTI` and `TIOCLINUX`; `prctl` except `PR_SET_PDEATHSIG` (so the
//! namespace's init cannot undo dying with the host) and `PR_SET_SECCOMP`; `open`, `openat` and `fcntl` as (3) says.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// An error compiling the filters (a bug in this crate, never a property of the program).
#[derive(Debug, thiserror::Error)]
#[error("compiling the seccomp filter: {0}")]
pub struct FilterError(String);

/// System calls allowed without conditions.
pub const ALLOWED: &[i64] = &[
    // I/O on descriptors the program has.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_fcntl, // F_SETFL with O_DIRECT: refused by the third filter
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    // Paths (Landlock and the mounts decide what they reach; `O_DIRECT` is refused by the
    // third filter, `openat2` answered ENOSYS by the first).
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_creat,
    libc::SYS_stat,
    libc::SYS_fstat,
    libc::SYS_lstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_truncate,
    libc::SYS_utimensat,
    libc::SYS_umask,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_msync,
    libc::SYS_mincore,
    libc::SYS_membarrier,
    // Signals and time.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigsuspend,
    libc::SYS_sigaltstack,
    libc::SYS_kill,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_pause,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    // The kernel restarts a sleep or a timed wait interrupted by a stop (the freezer, every
    // quota measure) with it: refused, every such call failed with EPERM (red team).
    libc::SYS_restart_syscall,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_time,
    libc::SYS_alarm,
    libc::SYS_setitimer,
    libc::SYS_getitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    // Processes and threads (clone is allowed below, with conditions).
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getpgrp,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_arch_prctl,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getpriority,
    libc::SYS_getrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_getrandom,
    // Waiting on descriptors.
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_select,
    libc::SYS_pselect6,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    // Local sockets (socket itself is AF_UNIX only, below; the net namespace has no interface).
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
];

/// Namespace flags `clone` may not carry (`CLONE_NEWTIME` is `CSIGNAL`'s bit in `clone`, so it
/// is not listed; it is only valid in `clone3` and `unshare`, both refused).
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, FilterError> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| FilterError(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, FilterError> {
    SeccompRule::new(conds).map_err(|e| FilterError(e.to_string()))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, FilterError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
        .map_err(|e| FilterError(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| FilterError(e.to_string()))
}

/// The four filters, in the order they are installed (the allowlist last, as it refuses
/// `seccomp(2)` itself).
pub(crate) fn filters() -> Result<[BpfProgram; 4], FilterError> {
    use SeccompCmpArgLen::{Dword, Qword};
    let mut allow: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    allow.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            Qword,
            SeccompCmpOp::MaskedEq(CLONE_NS_FLAGS),
            0,
        )?])?],
    );
    // clone3 and openat2 pass the allowlist and are answered ENOSYS by the first filter;
    // fallocate, EOPNOTSUPP by the second.
    for nr in [libc::SYS_clone3, libc::SYS_openat2, libc::SYS_fallocate] {
        allow.insert(nr, Vec::new());
    }
    allow.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(
            0,
            Dword,
            SeccompCmpOp::Eq,
            libc::AF_UNIX as u64,
        )?])?],
    );
    allow.insert(
        libc::SYS_ioctl,
        vec![rule(
            vec![
                cond(1, Dword, SeccompCmpOp::Ne, libc::TIOCSTI),
                cond(1, Dword, SeccompCmpOp::Ne, libc::TIOCLINUX),
            ]
            .into_iter()
            .collect::<Result<_, _>>()?,
        )?],
    );
    // Nor PR_SET_SECCOMP: a filter of the program's own answering errno would outrank the
    // allowlist's notification, and hide its refusals from the audit (outside attack).
    allow.insert(
        libc::SYS_prctl,
        vec![rule(vec![
            cond(0, Dword, SeccompCmpOp::Ne, libc::PR_SET_PDEATHSIG as u64)?,
            cond(0, Dword, SeccompCmpOp::Ne, libc::PR_SET_SECCOMP as u64)?,
        ])?],
    );
    // Advice, reading extended attributes or capabilities, and memory protection keys change
    // nothing outside the program, and ordinary programs call them (glibc's posix_fadvise in
    // loops, Python's shutil.copy2, Node's start-up): refusing them made each a trip to the
    // host's supervisor (outside attack: 80x slower) and noise in every call's record.
    for nr in [
        libc::SYS_capget,
        libc::SYS_pkey_alloc,
        libc::SYS_pkey_free,
        libc::SYS_pkey_mprotect,
        libc::SYS_fadvise64,
        libc::SYS_getxattr,
        libc::SYS_lgetxattr,
        libc::SYS_fgetxattr,
        libc::SYS_listxattr,
        libc::SYS_llistxattr,
        libc::SYS_flistxattr,
    ] {
        allow.insert(nr, Vec::new());
    }
    let allowlist = compile(
        allow,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )?;
    // The flags are an `int` (`open`, `openat`) or read as one (`fcntl`'s argument): the low
    // 32 bits, whatever the caller left in the high ones.
    let direct = |arg: u8| {
        cond(
            arg,
            Dword,
            SeccompCmpOp::MaskedEq(libc::O_DIRECT as u64),
            libc::O_DIRECT as u64,
        )
    };
    let o_direct = BTreeMap::from([
        (libc::SYS_open, vec![rule(vec![direct(1)?])?]),
        (libc::SYS_openat, vec![rule(vec![direct(2)?])?]),
        (
            libc::SYS_fcntl,
            vec![rule(vec![
                cond(1, Dword, SeccompCmpOp::Eq, libc::F_SETFL as u64)?,
                direct(2)?,
            ])?],
        ),
    ]);
    let answer = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| {
        compile(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
        )
        .map(|p| other_architectures_pass(&p))
    };
    let calls = |nrs: &[i64]| nrs.iter().map(|&nr| (nr, Vec::new())).collect();
    Ok([
        answer(calls(&[libc::SYS_clone3, libc::SYS_openat2]), libc::ENOSYS)?,
        answer(calls(&[libc::SYS_fallocate]), libc::EOPNOTSUPP)?,
        answer(o_direct, libc::EINVAL)?,
        allowlist,
    ])
}

/// `prog` without its architecture check's kill: a call of another architecture passes it,
/// for the allowlist, installed with it, to kill (or send to the host, which kills the whole
/// sandbox: a kill here would outrank the allowlist's notification, and go unaudited). The
/// check is `seccompiler`'s first three instructions (load the architecture, compare, kill).
fn other_architectures_pass(prog: &BpfProgram) -> BpfProgram {
    prog.iter()
        .map(|i| {
            let mut i = i.clone();
            if i.code == (libc::BPF_RET | libc::BPF_K) as u16
                && i.k == libc::SECCOMP_RET_KILL_PROCESS
            {
                i.k = libc::SECCOMP_RET_ALLOW;
            }
            i
        })
        .collect()
}

/// The allowlist (the last of [`filters`]) with its refusals sent to the host instead of
/// answered `EPERM` by the kernel: `SECCOMP_RET_USER_NOTIF`, answered `EPERM` by the host's
/// supervisor ([`crate::notify`]), which counts each for the call's audit record. Its only
/// `EPERM` answers are the refusals (its other answers are allow and kill).
pub(crate) fn notifying(allowlist: &BpfProgram) -> BpfProgram {
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    allowlist
        .iter()
        .map(|i| {
            let mut i = i.clone();
            // The refusals, and the kill of a call of another architecture (the only kill
            // the allowlist has): the host's supervisor kills the whole sandbox for it.
            if i.code == RET_K && (i.k == eperm || i.k == libc::SECCOMP_RET_KILL_PROCESS) {
                i.k = libc::SECCOMP_RET_USER_NOTIF;
            }
            i
        })
        .collect()
}

/// Whether [`syscall_name`] knows `nr` by name.
pub(crate) fn named(nr: i64) -> bool {
    known(nr).is_some()
}

/// The name of an x86-64 system call the allowlist refuses, for the audit record: the ones a
/// program tries to break out with by name, others by number.
pub fn syscall_name(nr: i64) -> std::borrow::Cow<'static, str> {
    match known(nr) {
        Some(name) => std::borrow::Cow::Borrowed(name),
        None if nr > 0 && nr & 0x4000_0000 != 0 => {
            std::borrow::Cow::Owned(format!("x32 system call {}", nr & !0x4000_0000))
        }
        None => std::borrow::Cow::Owned(format!("system call {nr}")),
    }
}

/// The name of a refused system call a program tries to break out with.
fn known(nr: i64) -> Option<&'static str> {
    const NAMED: &[(i64, &str)] = &[
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_process_vm_readv, "process_vm_readv"),
        (libc::SYS_process_vm_writev, "process_vm_writev"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_umount2, "umount2"),
        (libc::SYS_pivot_root, "pivot_root"),
        (libc::SYS_chroot, "chroot"),
        (libc::SYS_bpf, "bpf"),
        (libc::SYS_keyctl, "keyctl"),
        (libc::SYS_add_key, "add_key"),
        (libc::SYS_request_key, "request_key"),
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_io_uring_enter, "io_uring_enter"),
        (libc::SYS_io_uring_register, "io_uring_register"),
        (libc::SYS_io_setup, "io_setup"),
        (libc::SYS_io_submit, "io_submit"),
        (libc::SYS_perf_event_open, "perf_event_open"),
        (libc::SYS_kexec_load, "kexec_load"),
        (libc::SYS_kexec_file_load, "kexec_file_load"),
        (libc::SYS_userfaultfd, "userfaultfd"),
        (libc::SYS_unshare, "unshare"),
        (libc::SYS_setns, "setns"),
        (libc::SYS_clone, "clone (with namespace flags)"),
        (libc::SYS_socket, "socket (other than AF_UNIX)"),
        (libc::SYS_ioctl, "ioctl (TIOCSTI or TIOCLINUX)"),
        (
            libc::SYS_prctl,
            "prctl (PR_SET_PDEATHSIG or PR_SET_SECCOMP)",
        ),
        (libc::SYS_init_module, "init_module"),
        (libc::SYS_finit_module, "finit_module"),
        (libc::SYS_delete_module, "delete_module"),
        (libc::SYS_setuid, "setuid"),
        (libc::SYS_setgid, "setgid"),
        (libc::SYS_setresuid, "setresuid"),
        (libc::SYS_setresgid, "setresgid"),
        (libc::SYS_setgroups, "setgroups"),
        (libc::SYS_capset, "capset"),
        (libc::SYS_mknod, "mknod"),
        (libc::SYS_mknodat, "mknodat"),
        (libc::SYS_chown, "chown"),
        (libc::SYS_fchown, "fchown"),
        (libc::SYS_fchownat, "fchownat"),
        (libc::SYS_lchown, "lchown"),
        (libc::SYS_pidfd_open, "pidfd_open"),
        (libc::SYS_pidfd_getfd, "pidfd_getfd"),
        (libc::SYS_pidfd_send_signal, "pidfd_send_signal"),
        (libc::SYS_kcmp, "kcmp"),
        (libc::SYS_personality, "personality"),
        (libc::SYS_open_by_handle_at, "open_by_handle_at"),
        (libc::SYS_reboot, "reboot"),
        (libc::SYS_syslog, "syslog"),
        (libc::SYS_memfd_create, "memfd_create"),
        (libc::SYS_seccomp, "seccomp"),
        (libc::SYS_inotify_init, "inotify_init"),
        (libc::SYS_inotify_init1, "inotify_init1"),
        (libc::SYS_fanotify_init, "fanotify_init"),
        (libc::SYS_shmget, "shmget"),
        (libc::SYS_msgget, "msgget"),
        (libc::SYS_semget, "semget"),
        (libc::SYS_quotactl, "quotactl"),
        (libc::SYS_clock_settime, "clock_settime"),
        (libc::SYS_settimeofday, "settimeofday"),
        (libc::SYS_sethostname, "sethostname"),
        (libc::SYS_vmsplice, "vmsplice"),
        (libc::SYS_swapon, "swapon"),
        (libc::SYS_acct, "acct"),
    ];
    NAMED.iter().find(|(n, _)| *n == nr).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn compiles_and_refuses_the_listed_calls() {
        let filters = filters().unwrap();
        assert!(filters.iter().all(|f| !f.is_empty()));
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_io_setup,
            libc::SYS_io_submit,
            libc::SYS_io_getevents,
            libc::SYS_openat2,
            libc::SYS_perf_event_open,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_userfaultfd,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_process_vm_readv,
            libc::SYS_setuid,
            libc::SYS_capset,
        ] {
            assert!(!ALLOWED.contains(&nr), "{nr} is allowed");
        }
    }

    #[test]
    fn the_notifying_allowlist_differs_only_in_its_refusals() {
        let filters = filters().unwrap();
        let plain = &filters[3];
        let notifying = notifying(plain);
        assert_eq!(plain.len(), notifying.len());
        let changed: Vec<_> = plain
            .iter()
            .zip(&notifying)
            .filter(|(a, b)| a.k != b.k)
            .collect();
        assert!(!changed.is_empty());
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for (a, b) in &changed {
            assert!(
                a.k == eperm || a.k == libc::SECCOMP_RET_KILL_PROCESS,
                "{:#x}",
                a.k
            );
            assert_eq!(b.k, libc::SECCOMP_RET_USER_NOTIF);
            assert_eq!((a.code, a.jt, a.jf), (b.code, b.jt, b.jf));
        }
        // One kill in the plain allowlist, the architecture check's, third after loading
        // the architecture and comparing it; the notifying one kills nothing itself.
        let kills = |p: &BpfProgram| {
            p.iter()
                .enumerate()
                .filter(|(_, i)| i.k == libc::SECCOMP_RET_KILL_PROCESS)
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(kills(plain), [2]);
        // The others have no kill of their own to outrank the allowlist's notification.
        for f in &filters[..3] {
            assert!(kills(f).is_empty());
            assert_eq!(f[1].k, 0xC000_003E);
            assert_eq!(f[2].k, libc::SECCOMP_RET_ALLOW);
        }
        assert_eq!(
            plain[1].k, 0xC000_003E,
            "the comparison with AUDIT_ARCH_X86_64"
        );
        assert!(kills(&notifying).is_empty());
        assert_eq!(syscall_name(libc::SYS_ptrace), "ptrace");
        assert_eq!(syscall_name(0x4000_0000 | 39), "x32 system call 39");
    }
}
