//! The OS sandbox for process extensions (Linux, x86-64): runs one native program — a static
//! binary of the bundle, or a script with an interpreter the profile makes visible — with only
//! its stdin, stdout and stderr pipes to the host, and kills the whole process tree on timeout,
//! on drop and when the host dies.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use warden_sandbox::{Access, Grant, Invocation, Limits, Profile, Program, Sandbox};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let profile = Profile::builder("/srv/warden/bundles/abc")          // read-only at /bundle
//!     .grant(Grant::new("/srv/warden/data/t1/ext", "/data".parse()?, Access::ReadWrite))
//!     .tmp_size(8 << 20)
//!     .limits(Limits { processes: 16, ..Limits::default() })
//!     .build()?;                                    // paths checked and canonicalized here
//! let sandbox = Sandbox::new(profile)?;             // kernel checked, seccomp compiled here
//! let child = sandbox.spawn(
//!     &Invocation::new(Program::Binary("bin/ext".parse()?)).arg("--stdio").env("LANG", "C"),
//! )?;
//! let out = child.run(b"request", Instant::now() + Duration::from_secs(5), 1 << 20)?;
//! # let _ = out; Ok(()) }
//! ```
//!
//! # Layers, and what each stops
//!
//! | layer | stops |
//! |---|---|
//! | user namespace, program uid [`SANDBOX_UID`] (not 0) | any capability after `execve`; the host's root (a root host runs programs as [`DEFAULT_ROOT_HOST_IDS`] or ids it picks) |
//! | pid namespace, program is its init | seeing or signalling host processes; `/proc/<host pid>`; a daemonized grandchild outliving the program (the kernel kills the namespace with its init) |
//! | mount namespace, `pivot_root` onto a read-only tmpfs, old root detached | every host path except the bundle (ro), the grants, `/dev/null`, `/dev/urandom`, the private `/tmp` (size and inode capped); no `/proc`, no `/sys` |
//! | net namespace (no interface up) | any network, loopback included |
//! | ipc, uts, cgroup namespaces | host System V IPC and POSIX queues; host name; cgroup paths |
//! | Landlock (ABI ≥ 1; TCP from 4; scopes from 6) | file access beyond the rules even through a mount mistake; TCP bind/connect; signals and abstract sockets out of the domain |
//! | seccomp-bpf ([`seccomp`]) | foreign-arch calls (the whole sandbox killed by the host's supervisor, and audited; killed by the kernel where there is no listener), x32 numbers and every call off the allowlist (`EPERM`): ptrace, mount, bpf, keyctl, io_uring, Linux AIO, kexec, userfaultfd, unshare/setns, namespace flags on clone, ...; answered as unsupported: `clone3` and `openat2` (`ENOSYS`), `fallocate` (`EOPNOTSUPP`), `O_DIRECT` (`EINVAL`: writes the freezer and `SIGKILL` cannot stop) |
//! | a cgroup per sandbox, where available ([`Limits::memory`], `pids.max`, cgroup v2's freezer) | memory held by the whole tree, shared or anonymous files and `/tmp` included; processes and threads of the whole tree; anything of a parked tree running ([`Child::freeze`]) |
//! | `oom_score_adj` 1000 | the kernel's OOM killer taking the host before a sandbox |
//! | rlimits ([`Limits`]) | fork bombs (`RLIMIT_NPROC`, counted per user namespace), fd exhaustion, memory bombs (`RLIMIT_AS`), huge files (`RLIMIT_FSIZE` and the tmpfs cap), CPU spin; core dumps (0) |
//! | `PR_SET_NO_NEW_PRIVS`, `nosuid` mounts | set-uid and file capabilities |
//! | empty environment, `close_range(3.., CLOEXEC)` | `LD_PRELOAD` and every host variable; leaked host descriptors |
//! | `PR_SET_PDEATHSIG(SIGKILL)` on the init, forked from a thread that lives as long as the process; `prctl(PR_SET_PDEATHSIG)` refused by seccomp | the sandbox outliving the host |
//!
//! # Order of steps
//!
//! In the parent (any thread, ordinary code): the profile was checked and canonicalized when
//! built; [`Sandbox::new`] probed the kernel ([`Sandbox::check`]) and compiled the seccomp
//! filters and the mount plan once. Each spawn builds the `argv`/`envp` arrays and a fresh
//! Landlock ruleset (with the `landlock` crate), creates its pipes (close-on-exec, above fd 2),
//! and asks a spawner thread to `clone` into new user, mount, pid, ipc, uts, cgroup and net
//! namespaces, as `posix_spawn` does (`CLONE_VM | CLONE_VFORK`: the child runs on a stack of
//! its own in the host's memory, and its spawner thread waits until its `execve`; nothing of
//! the host is copied, where a fork's page tables and copy-on-write faults cost a third of the
//! host's CPU per process call). On Linux before 5.16 (where a child that dumped core there
//! would take the host with it), or with `WARDEN_SANDBOX_SPAWN=fork`, it is forked instead.
//! Spawner threads are started as needed (up to 64), so a child stuck before its `execve`
//! holds only its own; the caller gives up at its deadline. Once the child says it exists,
//! the caller's thread opens a
//! pidfd for it, writes its `uid_map`/`gid_map` (and `setgroups` deny when unprivileged),
//! sends it one byte, and reads its report socket: EOF means the program was exec'd, 8 bytes
//! name the failed step and errno.
//!
//! In the child (`src/child.rs`, system calls only, on data prepared above — it shares the
//! memory of a multi-threaded process, so no allocation, no lock, no write but to its stack):
//! 1. every handler of the host's back to its default, then no signal blocked (the spawner
//!    thread blocks them all, so none runs in the host's memory); one byte to the parent.
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`; wait for the parent's byte (EOF: exit).
//! 3. mounts private (recursive); a small tmpfs on the bundle's own folder; `pivot_root` into
//!    it, old root at `/oldroot`.
//! 4. mount points; bind `/oldroot/<bundle>` at `/bundle` then remount `ro,nosuid,nodev`
//!    (keeping the source's locked flags); `/dev/null`, `/dev/urandom` (`nosuid,noexec`);
//!    grants (`nosuid,nodev`, `ro`/`noexec` by [`Access`]); `/tmp` tmpfs
//!    (`size=,nr_inodes=,nosuid,nodev,noexec`) and its Landlock rule.
//! 5. detach and remove `/oldroot`; remount `/` read-only; `chdir("/")`; host name; `setsid`.
//! 6. a root host's child clears its groups; `setresgid`/`setresuid` to
//!    [`SANDBOX_GID`]/[`SANDBOX_UID`]; all capability sets and the ambient set emptied.
//! 7. `PR_SET_PDEATHSIG` again (the uid change cleared it); exit if the host died meanwhile.
//! 8. rlimits; `dup2` the pipes onto 0, 1, 2; `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`.
//! 9. `PR_SET_NO_NEW_PRIVS`; `landlock_restrict_self`; the four seccomp filters.
//! 10. `execve` with the caller's environment only.
//!
//! # Not done in this version
//!
//! The capability bounding set is not cleared (no_new_privs and a non-zero uid already make
//! `execve` grant nothing). Cgroups are used where this process may make them (see
//! [`Support::cgroup`] and `src/cgroup.rs`), not required: an unprivileged host without a
//! delegated cgroup v2 relies on the rlimits alone.
#![deny(clippy::undocumented_unsafe_blocks)]

mod cgroup;
mod child;
mod memory;
mod notify;
mod process;
mod profile;
mod rules;
pub mod seccomp;
mod spawn;
mod support;
mod sys;
mod urgent;

pub use cgroup::{Freezer, remove_own_folders};
pub use child::Step;
pub use memory::release_free_memory;
pub use notify::Refusal;
pub use process::{Child, Exit, Killer, Outcome, Output, Stat, tree};
pub use profile::{
    Access, BUNDLE_AT, BundlePath, DEFAULT_ROOT_HOST_IDS, DEFAULT_TMP_SIZE, Grant, HostIds,
    IdMapping, Limits, MAX_GRANTS, MAX_TMP_SIZE, Profile, ProfileBuilder, ProfileError,
    SANDBOX_GID, SANDBOX_UID, SandboxPath, TMP_AT, TMP_INODES, Weakening,
};
pub use rules::RulesError;
pub use seccomp::FilterError;
pub use spawn::{InterpreterPath, Invocation, MAX_ARGS, Program, Sandbox, SandboxError};
pub use support::{Feature, MissingFeature, Support};
pub use urgent::Urgent;
