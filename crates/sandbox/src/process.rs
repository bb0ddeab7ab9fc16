//! The handle of a running sandboxed program: its pipes, kill, wait with a deadline, and a
//! bounded way to run it to the end.
//!
//! The program is the init (pid 1) of its own pid namespace. `SIGKILL` to it (sent through a
//! pidfd, so never to a recycled pid) makes the kernel kill every process in the namespace, and
//! its exit status is only reported once they are all gone: when [`Child::kill`] has been
//! followed by a successful wait, nothing the program started is left, daemonized or not.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{WaitId, WaitIdOptions};

use crate::cgroup::Cgroup;

/// stdin, stdout and stderr of a child, from the host's side.
pub(crate) type Pipes = (
    std::io::PipeWriter,
    std::io::PipeReader,
    std::io::PipeReader,
);

/// How the program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal (`SIGKILL` from a kill, a limit or a call of another architecture,
    /// `SIGSYS` from seccomp where the host has no listener,
    /// `SIGXFSZ`, `SIGXCPU`, ...).
    Signal(i32),
}

/// The result of waiting with a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(Exit),
    /// The deadline passed: the sandbox was killed (the whole pid namespace) and reaped.
    TimedOut,
}

/// Everything [`Child::run`] collected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output past the cap was read and dropped.
    pub truncated: bool,
    /// The most memory the whole sandbox held at once ([`Child::memory_peak`]).
    pub memory_peak: Option<u64>,
    /// The kernel killed a process of it for its memory limit ([`Child::oom_killed`]).
    pub oom_killed: bool,
}

/// What `/proc/PID/stat` says of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `T`, `Z`, ...
    pub state: u8,
    /// User and system CPU time of all its threads, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
}

/// The most tasks of a sandbox [`Child::waited`] reads.
const WAITED_TASKS: usize = 64;
/// The most processes of a sandbox without a cgroup that are found by walking `/proc`.
const TREE_PROCESSES: usize = 4096;

/// The processes of the tree under `first` (itself included) as `/proc` links them, each with
/// its threads; at most `max` processes (a bound on the walk of a tree that changes meanwhile).
/// What cannot be read is left out.
pub fn tree(first: u32, max: usize) -> Vec<(u32, Vec<u32>)> {
    let mut out = Vec::new();
    let mut stack = vec![first];
    while let Some(pid) = stack.pop() {
        if out.len() >= max {
            break;
        }
        let mut threads = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in dir.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                threads.push(tid);
                let children = std::fs::read_to_string(task.path().join("children"));
                stack.extend(
                    children
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        out.push((pid, threads));
    }
    out
}

/// A sandboxed program. Dropping it kills the sandbox and reaps it.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: OwnedFd,
    stdin: Option<std::io::PipeWriter>,
    stdout: Option<std::io::PipeReader>,
    stderr: Option<std::io::PipeReader>,
    exit: Option<Exit>,
    /// The CPU its program was last moved to ([`Child::run_here`]).
    cpu: Option<usize>,
    /// Dropped after the field above it is reaped: a cgroup is removed only once empty.
    cgroup: Option<Cgroup>,
    /// The refusals counted by its seccomp supervisor (see [`crate::notify`]).
    refused: Option<Arc<crate::notify::Refused>>,
}

impl Child {
    pub(crate) fn new(
        pid: i32,
        pidfd: OwnedFd,
        (stdin, stdout, stderr): Pipes,
        cgroup: Option<Cgroup>,
    ) -> Child {
        Child {
            pid,
            pidfd,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
            exit: None,
            cpu: None,
            cgroup,
            refused: None,
        }
    }

    /// With the refusals its seccomp supervisor counts.
    pub(crate) fn supervised(mut self, refused: Arc<crate::notify::Refused>) -> Child {
        self.refused = Some(refused);
        self
    }

    /// The system calls the seccomp allowlist refused the tree since the last time this was
    /// asked (name, times); empty where the kernel gave the host no listener for them.
    pub fn refused(&self) -> Vec<crate::Refusal> {
        self.refused.as_ref().map(|r| r.take()).unwrap_or_default()
    }

    /// Kills the sandbox and returns what it was refused since the last time this was asked,
    /// up to its end: waits (at most `within`) for its last process to end and for the
    /// supervisor to have counted every refusal it read meanwhile. (Right after a kill some
    /// are still being counted: an outside attack found an i386 call made just after the
    /// answer missing from 29 of 40 calls' records, and refusals a grandchild saw answered
    /// missing from 8 of 40.)
    pub fn refused_to_end(&mut self, within: Duration) -> Vec<crate::Refusal> {
        let end = Instant::now() + within;
        let _ = self.kill();
        let _ = self.wait_deadline(end);
        if let Some(r) = &self.refused {
            r.wait_ended(end.saturating_duration_since(Instant::now()));
        }
        self.refused()
    }

    /// Kills the sandbox's tree, waits for its end and removes its cgroup: what dropping it
    /// does, for a caller that chooses where that wait happens (not on an executor's thread).
    /// Its memory and its kills by the kernel are no longer known after this.
    pub fn end(&mut self) {
        if self.exit.is_none() {
            let _ = self.kill();
            self.exit = wait_exit(self.pidfd.as_fd()).ok();
        }
        drop(self.cgroup.take());
    }

    /// Whether the host's seccomp supervisor killed the sandbox for a system call of another
    /// architecture (where the kernel has no listener for it, the kernel kills the process
    /// with `SIGSYS` instead).
    pub fn killed_for_foreign_call(&self) -> bool {
        self.refused.as_ref().is_some_and(|r| r.killed_foreign())
    }

    /// Moves the program (its first process, and what it starts from now on) to the CPU this
    /// thread runs on. A call is a ping-pong of messages with the program, and on a virtual
    /// machine waking it on another, idle vCPU costs tens of microseconds each way (a pipe
    /// round trip measured 57 us across two vCPUs, 6 us on one); on the caller's CPU it runs
    /// while the caller waits. So a call of the program runs on one CPU, as a component's
    /// does. Its threads already running stay where they are; it cannot widen its affinity
    /// again (`sched_setaffinity` is not in the sandbox's allowlist), so the processes and
    /// threads it starts share that CPU (as a component's call has one thread), until the host
    /// spreads them ([`Child::run_anywhere`]).
    pub fn run_here(&mut self) -> std::io::Result<()> {
        let cpu = rustix::thread::sched_getcpu();
        if self.cpu == Some(cpu) || self.exit.is_some() {
            return Ok(());
        }
        // Never `None`: that would be this process.
        let pid = rustix::process::Pid::from_raw(self.pid)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(Some(pid), &set)?;
        self.cpu = Some(cpu);
        Ok(())
    }

    /// Lets every process and thread of the sandbox run on any CPU this thread may use again:
    /// [`Child::run_here`] undone for a call that turned out to be the program's own work
    /// rather than a ping-pong with its caller. A tree held to one CPU waits for that CPU: with
    /// the host's other work there, pinned programs in the shared cpu group got no CPU at all
    /// for seconds (an outside attack's 3 s calls timed out at 20 s; spread over the CPUs, none
    /// did). Without a cgroup, the tree is found through `/proc` ([`tree`]).
    pub fn run_anywhere(&mut self) -> std::io::Result<()> {
        if self.cpu.is_none() || self.exit.is_some() {
            return Ok(());
        }
        self.cpu = None;
        let all = rustix::thread::sched_getaffinity(None)?;
        // A task forked meanwhile has its parent's old set: go again until none is new.
        let mut moved = std::collections::HashSet::new();
        for _ in 0..4 {
            let mut new = false;
            for tid in self.tasks() {
                if moved.insert(tid)
                    && let Some(pid) = rustix::process::Pid::from_raw(tid)
                {
                    new = true;
                    // Gone meanwhile: nothing to move.
                    let _ = rustix::thread::sched_setaffinity(Some(pid), &all);
                }
            }
            if !new {
                break;
            }
        }
        Ok(())
    }

    /// How long the sandbox's tasks alive now (the first 64 of them: each is a file to read)
    /// have waited for a CPU while ready to run, in all (`/proc/TID/schedstat`); `None` where
    /// the kernel does not say.
    pub fn waited(&self) -> Option<Duration> {
        let mut total = 0u64;
        let mut known = false;
        for tid in self.tasks().into_iter().take(WAITED_TASKS) {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/schedstat")) else {
                continue;
            };
            if let Some(ns) = stat
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
            {
                total = total.saturating_add(ns);
                known = true;
            }
        }
        known.then(|| Duration::from_nanos(total))
    }

    /// The thread ids of the sandbox's tasks: its cgroup's, or else those of its processes
    /// found through `/proc` ([`tree`]).
    fn tasks(&self) -> Vec<i32> {
        if let Some(threads) = self.cgroup.as_ref().and_then(Cgroup::threads) {
            return threads;
        }
        let first = u32::try_from(self.pid).unwrap_or_default();
        tree(first, TREE_PROCESSES)
            .into_iter()
            .flat_map(|(_, threads)| threads)
            .filter_map(|tid| i32::try_from(tid).ok())
            .collect()
    }

    /// Whether the whole sandbox can be frozen ([`Child::freeze`]): its cgroup has a freezer.
    pub fn can_freeze(&self) -> bool {
        self.cgroup.as_ref().is_some_and(Cgroup::can_freeze)
    }

    /// Starts freezing every process of the sandbox: unlike `SIGSTOP`, nothing they do (a
    /// timer's `SIGCONT`, a child) lets any of them run until [`Child::thaw`]. Done once
    /// [`Child::frozen`] says so.
    pub fn freeze(&mut self) -> std::io::Result<()> {
        match &self.cgroup {
            Some(cg) if self.exit.is_none() => cg.freeze(),
            _ => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }

    /// Whether every process of the sandbox is frozen, waiting at most `within` for it.
    pub fn frozen(&self, within: Duration) -> bool {
        let Some(cg) = &self.cgroup else { return false };
        let end = Instant::now() + within;
        loop {
            if cg.frozen() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Lets a frozen sandbox run again.
    pub fn thaw(&self) -> std::io::Result<()> {
        match &self.cgroup {
            Some(cg) => cg.thaw(),
            None => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }

    /// The sandbox's freezer, to hold its tree still from elsewhere while this handle is in
    /// use; `None` without one, or once the program has exited.
    pub fn freezer(&self) -> Option<crate::cgroup::Freezer> {
        match &self.cgroup {
            Some(cg) if self.exit.is_none() => cg.freezer(),
            _ => None,
        }
    }

    /// A way to kill the tree without the handle, from a thread that watches it (whoever holds
    /// the handle still reaps it); `None` once it exited.
    pub fn killer(&self) -> Option<Killer> {
        if self.exit.is_some() {
            return None;
        }
        self.pidfd.try_clone().ok().map(Killer)
    }

    /// [`Child::thaw`] for later, without the handle (e.g. once a request is in the pipe).
    pub fn thawer(&self) -> Option<impl FnOnce() + Send + 'static + use<>> {
        self.cgroup.as_ref()?.thawer()
    }

    /// Whether the sandbox has a cgroup of its own ([`Limits::memory`](crate::Limits) and
    /// `pids.max` over the whole tree).
    pub fn in_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    /// The memory the whole sandbox holds now, in bytes: from its cgroup, `None` without one.
    pub fn memory_now(&self) -> Option<u64> {
        self.cgroup.as_ref()?.memory_now()
    }

    /// The most memory the whole sandbox has held at once (since its last
    /// [`Child::reset_memory_peak`]), in bytes: from its cgroup, `None` without one.
    pub fn memory_peak(&self) -> Option<u64> {
        self.cgroup.as_ref()?.memory_peak()
    }

    /// Starts a new [`Child::memory_peak`] at the memory the sandbox holds now (before a
    /// warm process's next call, so that its peak is that call's); `false` where the kernel
    /// cannot (cgroup v2 before Linux 6.12) or without a cgroup.
    pub fn reset_memory_peak(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.reset_memory_peak())
    }

    /// Whether the kernel has killed a process of the sandbox for its memory limit (its
    /// cgroup's; `false` without one).
    pub fn oom_killed(&self) -> bool {
        self.cgroup
            .as_ref()
            .and_then(Cgroup::oom_kills)
            .is_some_and(|n| n > 0)
    }

    /// The program's pid in the host's pid namespace (it is 1 in its own).
    pub fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }
    pub fn take_stdin(&mut self) -> Option<std::io::PipeWriter> {
        self.stdin.take()
    }
    pub fn take_stdout(&mut self) -> Option<std::io::PipeReader> {
        self.stdout.take()
    }
    pub fn take_stderr(&mut self) -> Option<std::io::PipeReader> {
        self.stderr.take()
    }

    /// Kills the whole sandbox (`SIGKILL` to its pid namespace's init). Does not wait.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        let sent =
            match rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL) {
                Ok(()) | Err(Errno::SRCH) => Ok(()),
                Err(e) => Err(e.into()),
            };
        self.thaw_to_die();
        sent
    }

    /// A frozen tree dies only once thawed (cgroup v1); with the kill pending, none of it
    /// runs its own code again.
    fn thaw_to_die(&self) {
        if let Some(cg) = self.cgroup.as_ref().filter(|cg| cg.can_freeze()) {
            let _ = cg.thaw();
        }
    }

    /// The pidfd, for signals (`SIGSTOP` to park a program: every thread of it; what it
    /// started is not stopped, see [`Child::others`]).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether the program is stopped, waiting at most `within` for it to be. `Ok(false)`: it
    /// was not seen stopped in time (or has exited): do not trust it to stay still.
    pub fn stopped(&mut self, within: Duration) -> std::io::Result<bool> {
        if self.exit.is_some() {
            return Ok(false);
        }
        let end = Instant::now() + within;
        loop {
            match self.state() {
                Some(b'T') => return Ok(true),
                None | Some(b'Z' | b'X') => return Ok(false),
                Some(_) if Instant::now() >= end => return Ok(false),
                Some(_) => std::thread::yield_now(),
            }
        }
    }

    /// Lets a stopped program go on (`SIGCONT`).
    pub fn resume(&mut self) -> std::io::Result<()> {
        rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::CONT)?;
        Ok(())
    }

    /// Whether processes other than the program itself live in its sandbox (its children, and
    /// everything orphaned in its namespace, which the kernel reparents to it), given its
    /// number of `threads` ([`Child::stat`]; 1 saves listing them). Call it with the program
    /// stopped, or the answer may be stale at once. `None` if that cannot be read.
    pub fn others(&self, threads: u64) -> Option<bool> {
        // With a cgroup, one count covers the whole tree, wherever its processes hang.
        if let Some(tasks) = self.cgroup.as_ref().and_then(Cgroup::tasks) {
            return Some(tasks > threads);
        }
        let single = |children: Vec<u8>| Some(children.iter().any(|b| !b.is_ascii_whitespace()));
        if threads == 1 {
            // One thread: its own list is the whole answer (one read instead of a listing).
            return single(std::fs::read(format!("/proc/{0}/task/{0}/children", self.pid)).ok()?);
        }
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()?;
        for task in tasks {
            let children = std::fs::read(task.ok()?.path().join("children")).ok()?;
            if children.iter().any(|b| !b.is_ascii_whitespace()) {
                return Some(true);
            }
        }
        Some(false)
    }

    /// The program's state letter from `/proc/PID/stat` (`R`, `S`, `T`, ...).
    fn state(&self) -> Option<u8> {
        self.stat().map(|s| s.state)
    }

    /// The program's state, CPU time and threads, from `/proc/PID/stat`.
    pub fn stat(&self) -> Option<Stat> {
        let stat = std::fs::read(format!("/proc/{}/stat", self.pid)).ok()?;
        // After the command name, which ends at the last `)`: state is the first field, utime
        // and stime the 12th and 13th, the number of threads the 18th.
        let close = stat.iter().rposition(|&b| b == b')')?;
        let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
        let fields: Vec<&str> = rest.split(' ').collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(Stat {
            state: fields.first()?.bytes().next()?,
            cpu_ticks: utime + stime,
            threads: fields.get(17)?.parse().ok()?,
            rss_bytes: fields.get(21)?.parse::<u64>().ok()?.saturating_mul(4096),
        })
    }

    /// The exit status if the program has ended (every process of the sandbox is then gone).
    pub fn try_wait(&mut self) -> std::io::Result<Option<Exit>> {
        if let Some(e) = self.exit {
            return Ok(Some(e));
        }
        self.exit = reap(self.pidfd.as_fd(), WaitIdOptions::NOHANG)?;
        Ok(self.exit)
    }

    /// Waits until the program ends or `deadline` passes; at the deadline the sandbox is
    /// killed and reaped.
    pub fn wait_deadline(&mut self, deadline: Instant) -> std::io::Result<Outcome> {
        loop {
            if let Some(e) = self.try_wait()? {
                return Ok(Outcome::Exited(e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.kill()?;
                self.exit = Some(wait_exit(self.pidfd.as_fd())?);
                return Ok(Outcome::TimedOut);
            }
            // The pidfd becomes readable when the process exits.
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            poll(&mut fds, left)?;
        }
    }

    /// Writes `input` to stdin (then closes it), collects stdout and stderr (each up to `cap`
    /// bytes; more is read and dropped), and waits, all until `deadline`. At the deadline the
    /// sandbox is killed.
    pub fn run(mut self, input: &[u8], deadline: Instant, cap: usize) -> std::io::Result<Output> {
        let mut stdin = self.stdin.take();
        let mut streams = [self.stdout.take(), self.stderr.take()];
        for s in streams.iter().flatten() {
            rustix::io::ioctl_fionbio(s, true)?;
        }
        if let Some(w) = &stdin {
            rustix::io::ioctl_fionbio(w, true)?;
        }
        let mut bufs = [Vec::new(), Vec::new()];
        let mut truncated = false;
        let mut written = 0;
        let mut timed_out = false;
        if input.is_empty() {
            stdin = None;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                timed_out = true;
                break;
            }
            if streams.iter().all(Option::is_none) {
                break;
            }
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            let mut which = Vec::with_capacity(3);
            for (i, s) in streams.iter().enumerate() {
                if let Some(s) = s {
                    fds.push(PollFd::new(s, PollFlags::IN));
                    which.push(i);
                }
            }
            if let Some(w) = &stdin {
                fds.push(PollFd::new(w, PollFlags::OUT));
                which.push(2);
            }
            poll(&mut fds, left)?;
            let ready: Vec<(usize, PollFlags)> = which
                .iter()
                .zip(fds.iter())
                .map(|(&i, f)| (i, f.revents()))
                .collect();
            drop(fds);
            for (i, rev) in ready {
                if rev.is_empty() {
                    continue;
                }
                if i == 2 {
                    if let Some(w) = &mut stdin {
                        match w.write(&input[written..]) {
                            Ok(n) => written += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            // The program closed its stdin: stop feeding it.
                            Err(_) => written = input.len(),
                        }
                    }
                    if written >= input.len() {
                        stdin = None;
                    }
                    continue;
                }
                let mut chunk = [0u8; 16 * 1024];
                if let Some(r) = &mut streams[i] {
                    match r.read(&mut chunk) {
                        Ok(0) => streams[i] = None,
                        Ok(n) => {
                            let room = cap.saturating_sub(bufs[i].len());
                            bufs[i].extend_from_slice(&chunk[..n.min(room)]);
                            truncated |= n > room;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        drop(stdin);
        let outcome = if timed_out {
            self.kill()?;
            self.exit = Some(wait_exit(self.pidfd.as_fd())?);
            Outcome::TimedOut
        } else {
            self.wait_deadline(deadline)?
        };
        let [stdout, stderr] = bufs;
        Ok(Output {
            outcome,
            stdout,
            stderr,
            truncated,
            memory_peak: self.memory_peak(),
            oom_killed: self.oom_killed(),
        })
    }
}

/// Kills a sandbox's tree (see [`Child::killer`]). A tree frozen meanwhile dies once thawed,
/// running none of its own code again.
#[derive(Debug)]
pub struct Killer(OwnedFd);

impl Killer {
    /// `SIGKILL` to the sandbox's init, which takes its whole pid namespace with it. A pidfd:
    /// never a later process that reused the pid.
    pub fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.0, rustix::process::Signal::KILL);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.end();
    }
}

fn poll(fds: &mut [PollFd<'_>], left: Duration) -> std::io::Result<()> {
    match rustix::event::poll(fds, Some(&crate::sys::timespec(left))) {
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn reap(pidfd: BorrowedFd<'_>, extra: WaitIdOptions) -> std::io::Result<Option<Exit>> {
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), WaitIdOptions::EXITED | extra) {
            Ok(Some(st)) => {
                if let Some(c) = st.exit_status() {
                    return Ok(Some(Exit::Code(c)));
                }
                if let Some(s) = st.terminating_signal() {
                    return Ok(Some(Exit::Signal(s)));
                }
                if extra.contains(WaitIdOptions::NOHANG) {
                    return Ok(None);
                }
            }
            Ok(None) => return Ok(None),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks until the process behind `pidfd` has exited, and reaps it.
pub(crate) fn wait_exit(pidfd: BorrowedFd<'_>) -> std::io::Result<Exit> {
    loop {
        if let Some(e) = reap(pidfd, WaitIdOptions::empty())? {
            return Ok(e);
        }
    }
}

/// `SIGKILL` through the pidfd, then reap. Errors are ignored: this runs in `Drop`.
pub(crate) fn kill_and_reap(pidfd: BorrowedFd<'_>) {
    let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
    let _ = wait_exit(pidfd);
}
