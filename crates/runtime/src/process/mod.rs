//! Process extensions (`kind = "process"`): the bundle's executable, run in the OS sandbox of
//! `warden-sandbox` and spoken to with the JSON-RPC protocol of `warden-process`. A second
//! kind of extension, not a second product: a call takes the same [`CallCaps`], answers the
//! program's host requests with the same views as a component's host interfaces
//! ([`api`]), and reports a [`CallOutcome`] the host audits like any other.
//!
//! Life of a process. [`ProcessCode::unpack`] writes the verified files, read-only, to a
//! folder of their own (one per content hash and host process). [`ProcessInstall::new`] makes
//! one sandbox per install: its profile is the code (read-only at `/bundle`), the install's
//! mounts (the same per-(tenant, extension) folders a component gets), a private `/tmp`, and
//! rlimits from the extension's limits and `[policy.process]`; the kernel is checked there,
//! so a missing feature fails the load. A call takes an idle warm process of that install
//! or spawns one, sends `call`, serves host requests until the answer or the deadline, and
//! then either keeps the process (warm, while it has calls left and nothing went wrong) or
//! kills its whole tree.
//!
//! Warm or not (`[policy.process] warm_calls`): a fresh sandbox per call costs a few
//! milliseconds (namespaces, mounts, `execve`) and keeps nothing between calls, as a
//! component's fresh instance does; a warm process answers in tens of microseconds, and
//! whatever the program keeps in memory survives between calls of that one (tenant,
//! extension), never across tenants or extensions. A warm process is replaced after its
//! calls, on any error of the protocol, a timeout, or an exit.

mod api;
mod quota;
mod refusals;
mod unpack;

pub use refusals::Reporter;

/// A remote extension's callbacks (`kv.*`, `secrets.get`, `invoke`, `log`, `http.fetch`):
/// answered by the very code that answers a process extension's host requests, so with the
/// same grants, checks and records.
pub struct HostRequests(ProcessApi);

impl HostRequests {
    /// One call's answers under `caps`, recorded into `ledger`.
    pub fn new(caps: &CallCaps, max_response: u64, ledger: warden_call::Ledger) -> HostRequests {
        HostRequests(ProcessApi::with_ledger(caps, max_response, ledger))
    }

    /// The requests' API, for [`warden_process::dispatch`].
    pub fn api(&self) -> &dyn warden_process::HostApi {
        &self.0
    }

    /// The `log` lines of the call, redacted.
    pub fn logs(&self) -> Vec<warden_call::LogLine> {
        self.0.logs.lines(&self.0.redactor)
    }

    /// Bytes the call's `http.fetch` requests sent.
    pub fn egress_bytes(&self) -> u64 {
        self.0
            .egress_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;
use warden_bundle::Bundle;
use warden_call::output::lines;
use warden_call::{CallError, CallOutcome, CallReport, Ledger, Redactor, Stream};
use warden_fs::MountDir;
use warden_manifest::{FileLimits, Limits, ProcessPolicy};
use warden_process::{Call, ProtocolError, Reply, RequestBudget, Session};
use warden_sandbox::{
    Access, Child, Exit, Grant, Invocation, Profile, Program, Sandbox, SandboxError, Weakening,
};
use warden_trust::Verified;

use crate::caps::CallCaps;
use crate::error::LoadError;
use crate::outcome::failed;
use api::ProcessApi;
use unpack::Unpacked;

/// A process extension's verified files on disk and how to start its entry.
#[derive(Debug)]
pub struct ProcessCode {
    dir: Unpacked,
    program: Program,
    args: Vec<String>,
}

impl ProcessCode {
    /// Writes the verified files under `root` (see the module docs). The entry is a static
    /// executable, or a script whose `#!` interpreter `policy` lists.
    pub fn unpack(
        bundle: &Verified<Bundle>,
        root: &std::path::Path,
        policy: &ProcessPolicy,
    ) -> Result<Self, LoadError> {
        let bundle = bundle.get();
        let ext = &bundle.manifest().extension;
        let profile_err = |e: warden_sandbox::ProfileError| LoadError::Sandbox(e.into());
        let Some(entry) = ext.entry.file() else {
            return Err(LoadError::Checked(
                "a process extension's entry is a file of its bundle".into(),
            ));
        };
        let entry = entry.as_str().parse().map_err(profile_err)?;
        let program = match interpreter_of(bundle.entry()) {
            None => Program::Binary(entry),
            Some(wanted) if policy.interpreters.contains(&wanted) => Program::Script {
                interpreter: wanted.parse().map_err(profile_err)?,
                script: entry,
            },
            Some(wanted) => {
                return Err(LoadError::ProcessPolicy(format!(
                    "the entry is a script for {:?}, which [policy.process] interpreters does not list",
                    warden_call::text::cut(&wanted, 128)
                )));
            }
        };
        let dir = Unpacked::write(bundle, root).map_err(|e| {
            LoadError::engine(format!("unpacking the bundle under {}", root.display()), e)
        })?;
        Ok(ProcessCode {
            dir,
            program,
            args: ext.args.clone(),
        })
    }

    fn is_script(&self) -> bool {
        matches!(self.program, Program::Script { .. })
    }
}

/// The interpreter a `#!` line names (its first word), if the entry starts with one.
fn interpreter_of(entry: &[u8]) -> Option<String> {
    let rest = entry.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    Some(
        line.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// How often a call's sandbox is looked at for tasks kept waiting for the CPU it was moved to.
const CROWD_CHECK: Duration = Duration::from_millis(20);

/// Spreads the call's program over the CPUs ([`Child::run_anywhere`]) once its tasks waited
/// for a CPU half the time since the last look, or more: the call is then its own work, not a
/// ping-pong with its caller, and one CPU holds it back (see `run_anywhere`). Never ends.
/// Its first look is after [`CROWD_CHECK`]: a short call reads nothing.
async fn spread_when_crowded(child: &mut Child) -> std::convert::Infallible {
    tokio::time::sleep(CROWD_CHECK).await;
    let mut last = child.waited();
    loop {
        tokio::time::sleep(CROWD_CHECK).await;
        let now = child.waited();
        if let (Some(before), Some(after)) = (last, now)
            && after.saturating_sub(before) >= CROWD_CHECK / 2
        {
            let _ = child.run_anywhere();
            return std::future::pending().await;
        }
        last = now;
    }
}

/// Pipes of a running program, seen from the host.
struct Worker {
    child: Child,
    session: Session<pipe::Sender, pipe::Receiver>,
    stderr: pipe::Receiver,
    calls: u32,
    /// What it was started under (`CallCaps::generation`): a warm process of another
    /// generation (a secret rotated or removed since) is not reused.
    generation: u64,
    /// Every secret value a call of this process was handed: a warm process may still hold
    /// them, so each later call's output is redacted of them too.
    seen: Redactor,
    /// When it was parked, and how.
    parked: Option<(Instant, Parked)>,
    /// The ledger of the call it is answering: a call dropped part-way (its caller went
    /// away, its install was removed) still reports the memory the program held.
    answering: Option<Ledger>,
    /// Whether [`Worker::memory_peak`] is the current call's: its first, or one after a reset
    /// of the sandbox's peak. Else a call reports what the program holds ([`Worker::call_memory`]).
    own_peak: bool,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Before its fields: the program is still there to be measured.
        if let Some(ledger) = self.answering.take() {
            ledger.note_memory(self.call_memory());
        }
        // A call whose client went away is dropped where its future was polled, on a guests'
        // executor thread: the program's end is a wait (0.6 ms median, up to 13 ms, in a storm
        // of calls hung up while they ran), and that thread's other calls waited with it.
        let child = &mut self.child;
        waiting(|| child.end());
    }
}

/// Runs `wait` where it holds up no other task: on a thread of a multi-threaded executor,
/// its other tasks move to another thread meanwhile (`block_in_place`). A single-threaded
/// executor cannot lend its thread: `wait` runs there as it would anywhere else.
fn waiting<R>(wait: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|rt| rt.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

/// Sandboxes one tenant's process installs may have being made at once, all together (each
/// install also at most its `max_concurrent_calls`): twice this machine's CPUs, at least 4.
/// Making a sandbox is mostly CPU, so more at once would not make more of them a second,
/// while the CPU the kernel gives each tenant's setups grows with how many it has running:
/// several installs of one tenant cannot multiply what its callers hanging up at once make
/// (outside attack, session 38: 48 in setup for 3 installs of 16, another tenant's calls
/// then up to 505 ms), and a tenant storming takes less of the CPU from another's setups
/// (on 2 CPUs, another tenant's calls made 391 a second alone, 91-113 beside a storm with 16
/// slots per tenant, 113-150 with 4).
pub fn tenant_starting_slots() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    cpus.saturating_mul(2).max(4)
}

/// One of each of `slots` (its install's, then its tenant's: always in this order, so two
/// spawns never wait for each other's).
type Slots = [Option<tokio::sync::OwnedSemaphorePermit>; 2];

/// Runs `spawn` on a blocking thread once it has a slot of each of `slots` (waiting until
/// `deadline` at most). The slots go with the spawn, not with the call: they are held until
/// the caller has what `spawn` made, or, when the caller has gone meanwhile (its client hung
/// up), until that is dropped too (a child killed and cleaned up). So callers hanging up at
/// once cannot have more sandboxes made than their install may have calls (outside attack,
/// session 37: about 510 in setup for an install allowed 16, another tenant's call then
/// waited up to 15 s), nor their tenant more than [`tenant_starting_slots`]. A call dropped
/// while it waits for a slot starts nothing.
async fn in_a_starting_slot<R: Send + 'static>(
    slots: [&Arc<tokio::sync::Semaphore>; 2],
    deadline: Instant,
    spawn: impl FnOnce() -> R + Send + 'static,
) -> Result<Started<R>, tokio::time::error::Elapsed> {
    let mut held: Slots = [None, None];
    for (slot, of) in held.iter_mut().zip(slots) {
        let taken = tokio::time::timeout_at(deadline.into(), Arc::clone(of).acquire_owned());
        // Never closed; should one be, the spawn goes on without it rather than not at all.
        *slot = taken.await?.ok();
    }
    // Returned with the slots after it: a result nobody takes is dropped (on the blocking
    // thread) before its slots are.
    Ok(Started(tokio::task::spawn_blocking(move || {
        (spawn(), held)
    })))
}

/// A spawn under way in its starting slots (see [`in_a_starting_slot`]).
struct Started<R>(tokio::task::JoinHandle<(R, Slots)>);

impl<R> Started<R> {
    /// What the spawn made; its slots are free again.
    async fn made(self) -> Result<R, tokio::task::JoinError> {
        self.0.await.map(|(made, _slots)| made)
    }
}

/// Marks a spawn abandoned when dropped (see [`ProcessInstall::worker`]); a spawn that went
/// through meanwhile is unaffected.
struct Abandon(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a warm process waits for its next call.
#[derive(Clone, Copy, Debug)]
enum Parked {
    /// Its sandbox's cgroup is frozen: nothing of it runs, whatever signals it gets.
    Frozen,
    /// Its init is stopped (`SIGSTOP`, no freezer here), having used this many CPU ticks:
    /// what it starts or signals itself could still run, so that is checked at unparking.
    Stopped { cpu_ticks: u64 },
}

/// How long a warm process may stay parked without a call before it is killed.
pub const PARKED_FOR: Duration = Duration::from_secs(10);

/// How long a killed tree is waited for before its folders are measured anyway.
const KILL_WAIT: Duration = Duration::from_secs(2);

impl Worker {
    fn start(mut child: Child, requests: &Arc<RequestBudget>) -> std::io::Result<Worker> {
        let (Some(i), Some(o), Some(e)) =
            (child.take_stdin(), child.take_stdout(), child.take_stderr())
        else {
            return Err(std::io::Error::other("the program's pipes were taken"));
        };
        let stdin = pipe::Sender::from_owned_fd(OwnedFd::from(i))?;
        let stdout = pipe::Receiver::from_owned_fd(OwnedFd::from(o))?;
        let stderr = pipe::Receiver::from_owned_fd(OwnedFd::from(e))?;
        Ok(Worker {
            child,
            session: Session::new(stdin, stdout).sharing(Arc::clone(requests)),
            stderr,
            calls: 0,
            generation: 0,
            seen: Redactor::default(),
            parked: None,
            answering: None,
            own_peak: true,
        })
    }

    /// Kills the program (a signal: reaped when dropped) and returns what the sandbox refused
    /// it since last asked: it can make no more.
    fn end(&mut self) -> Vec<warden_sandbox::Refusal> {
        let _ = self.child.kill();
        self.child.refused()
    }

    /// The memory of the call it is answering: the sandbox's peak where that is the call's
    /// own (a process's first call, or a warm one's after a reset: Linux 6.12), else what it
    /// holds now (a warm process's peak would be its whole life's: after a 60 MiB call, a
    /// 2 MiB one said 63 MB; outside attack, session 27).
    fn call_memory(&self) -> u64 {
        if self.own_peak {
            self.memory_peak()
        } else {
            self.memory_now()
        }
    }

    /// Whether the program ended without reading any of the call just sent to it: it has
    /// exited, and every byte of the request written is still in its stdin pipe.
    async fn ended_before_the_call(&mut self) -> bool {
        let unread = rustix::io::ioctl_fionread(self.session.stdin()).ok();
        if unread != u64::try_from(self.session.request_written()).ok() {
            return false;
        }
        // Not if the sandbox hit its memory limit or was killed for a foreign system call on
        // the way: that is this call's to report (third outside attack, session 28: a retry
        // hid both).
        self.exit().await.is_some()
            && !self.child.oom_killed()
            && !self.child.killed_for_foreign_call()
    }

    /// The program's exit, waited for a little: an exit closes the pipes a moment before the
    /// kernel reports it. Without holding the executor's thread: a program can end calls
    /// this way at will.
    async fn exit(&mut self) -> Option<Exit> {
        for _ in 0..10 {
            if let Some(exit) = self.child.try_wait().ok().flatten() {
                return Some(exit);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.child.try_wait().ok().flatten()
    }

    /// Before each call of a warm process: its peak from now on is this call's, where the
    /// kernel can reset it.
    fn start_call(&mut self) {
        self.own_peak = self.calls == 0 || self.child.reset_memory_peak();
    }

    /// The peak memory of the sandbox (since its last reset), or of the program (its
    /// sandbox's init) from `/proc` without a cgroup.
    fn memory_peak(&self) -> u64 {
        match self.child.memory_peak() {
            Some(peak) => peak,
            None => self.status_size("VmHWM:"),
        }
    }

    /// The memory the sandbox holds now, or the program without a cgroup.
    fn memory_now(&self) -> u64 {
        match self.child.memory_now() {
            Some(now) => now,
            None => self.status_size("VmRSS:"),
        }
    }

    /// A size in `/proc/PID/status` (`field` with its colon), in bytes; 0 if unread.
    fn status_size(&self, field: &str) -> u64 {
        use std::io::Read;
        // One read of the head of the file (the sizes are in its first kilobyte): this runs
        // on every call of a warm process.
        let mut buf = [0u8; 2048];
        let n = std::fs::File::open(format!("/proc/{}/status", self.child.id()))
            .and_then(|mut f| f.read(&mut buf))
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Puts a warm process aside until its next call: stopped at once (`SIGSTOP`), wherever
    /// it is (what it was still doing after its answer goes on in its next call: its own
    /// business). What it has used of the CPU is noted: a process that runs while parked (it
    /// can have itself continued, e.g. by a timer's `SIGCONT`) is found out at its next call
    /// and replaced, and an idle one is killed after [`PARKED_FOR`]. Nothing here waits: it
    /// runs before the call's answer is handed back. Its resident memory, or `None`: replace it now.
    fn park(&mut self) -> Option<u64> {
        if self.child.can_freeze() {
            // The whole tree at once, children and threads; no signal undoes it.
            self.child.freeze().ok()?;
            self.parked = Some((Instant::now(), Parked::Frozen));
            return Some(self.child.memory_now().unwrap_or(0));
        }
        let (cpu, rss) = match self.child.stat() {
            Some(s) if matches!(s.state, b'R' | b'S' | b'D') => (s.cpu_ticks, s.rss_bytes),
            _ => return None,
        };
        if rustix::process::pidfd_send_signal(self.child.pidfd(), rustix::process::Signal::STOP)
            .is_err()
        {
            return None;
        }
        // A stop reaches the program only: another process of its sandbox (a child, a
        // double-forked daemon, which the program inherits as init of its pid namespace) would
        // run on, writing to its folders, while it is parked. Not kept then (outside attack:
        // 450-650 MB written in the 10 s before the sweep). Checked once the stop has landed:
        // a child being forked as it was sent is on the list by then (second attack: a fork
        // racing the stop won 3 of 4 times when checked at once). A stop that does not land
        // within a few milliseconds: not kept either.
        let sent = Instant::now();
        let threads = loop {
            match self.child.stat() {
                // Its threads now (one made since the first look may have forked).
                Some(s) if s.state == b'T' => break s.threads,
                Some(_) if sent.elapsed() < Duration::from_millis(5) => std::thread::yield_now(),
                _ => return None,
            }
        };
        if self.child.others(threads) != Some(false) {
            return None;
        }
        self.parked = Some((Instant::now(), Parked::Stopped { cpu_ticks: cpu }));
        Some(rss)
    }

    /// Takes a parked process for a call, if it is fit: alive and seen stopped (waiting at
    /// most a few milliseconds, which only a process stuck in the kernel needs), alone in its
    /// sandbox (no child or orphan left running), quiet (nothing sent after its last answer),
    /// then woken. What it wrote to stderr before it stopped joins this call's capture.
    async fn unpark(&mut self, stderr: &mut Vec<u8>, cap: usize, input_len: usize) -> bool {
        let cpu_then = match self.parked.take() {
            None => return false,
            Some((_, Parked::Frozen)) => return self.thaw_for(stderr, cap, input_len).await,
            Some((_, Parked::Stopped { cpu_ticks })) => cpu_ticks,
        };
        // Unmoved: no CPU used since it was parked (a call that comes at once may find the
        // stop not landed yet; the `SIGCONT` below then cancels it).
        let Some(now) = self.child.stat() else {
            return false;
        };
        // (Two ticks of slack: the baseline is read just before the stop lands, and a tick is
        // charged whole to whoever runs when it fires.)
        let still = now.cpu_ticks <= cpu_then + 2 && now.state != b'Z' && now.state != b'X';
        if !still
            || !matches!(self.child.try_wait(), Ok(None))
            || self.child.others(now.threads) != Some(false)
            || !self.session.is_quiet().await
        {
            return false;
        }
        if !self.drain(stderr, cap).await {
            return false;
        }
        // Woken once the request is in its pipe (one wake-up instead of two), unless the
        // request may not fit in the pipe: then now.
        match self.child.pidfd().try_clone_to_owned() {
            Ok(fd) if input_len < 32 * 1024 => {
                self.session.once_sent(move || {
                    let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::CONT);
                });
                true
            }
            _ => self.child.resume().is_ok(),
        }
    }

    /// [`Worker::unpark`] of a frozen process: fit if alive and quiet; thawed once the
    /// request is in its pipe. (Its children and threads are its own business: they were
    /// frozen too. Freezing is asynchronous: a task may finish what it was doing after the
    /// answer, as with a stop, but none can keep running: the kernel freezes each at its next
    /// return to user space, and no signal thaws it.)
    async fn thaw_for(&mut self, stderr: &mut Vec<u8>, cap: usize, input_len: usize) -> bool {
        if !matches!(self.child.try_wait(), Ok(None))
            || !self.session.is_quiet().await
            || !self.drain(stderr, cap).await
        {
            return false;
        }
        // Thawed once the request is in its pipe (one wake-up), unless the request may not
        // fit in the pipe: a frozen program reads nothing, so then now.
        if input_len >= 32 * 1024 {
            return self.child.thaw().is_ok();
        }
        match self.child.thawer() {
            Some(thaw) => {
                self.session.once_sent(thaw);
                true
            }
            None => false,
        }
    }

    /// Reads what is in the stderr pipe now, without waiting. `false`: stderr is closed.
    async fn drain(&mut self, stderr: &mut Vec<u8>, cap: usize) -> bool {
        let mut chunk = [0u8; 8192];
        loop {
            let mut read =
                std::pin::pin!(tokio::io::AsyncReadExt::read(&mut self.stderr, &mut chunk));
            let ready =
                std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
            match ready {
                std::task::Poll::Ready(Ok(n)) if n > 0 => {
                    let room = cap.saturating_sub(stderr.len());
                    stderr.extend_from_slice(&chunk[..n.min(room)]);
                }
                std::task::Poll::Pending => return true,
                // Closed stderr: it is going away.
                _ => return false,
            }
        }
    }

    /// Why the session ended, said with the program's exit when it has exited.
    async fn failure(&mut self, e: &ProtocolError, memory: warden_manifest::ByteSize) -> CallError {
        let exit = self.exit().await;
        // The kernel killed a process of the tree for its cgroup's memory limit.
        if self.child.oom_killed() {
            return CallError::MemoryLimit(memory);
        }
        if self.child.killed_for_foreign_call() {
            return CallError::Trap(
                "the sandbox was killed: the process made a system call of another architecture \
                 (an i386 `int 0x80`, for example), which its seccomp filter forbids"
                    .into(),
            );
        }
        match exit {
            Some(Exit::Code(c)) => CallError::Trap(format!(
                "the process exited with status {c} before answering ({e})"
            )),
            Some(Exit::Signal(s)) => CallError::Trap(format!(
                "the process was killed by signal {s} ({}) before answering",
                signal_name(s)
            )),
            None => match e {
                ProtocolError::RateExceeded { per_second } => CallError::Trap(format!(
                    "the process broke the protocol: {}",
                    warden_process::budget::exceeded(*per_second)
                )),
                e => CallError::Trap(format!("the process broke the protocol: {e}")),
            },
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        6 => "SIGABRT: often an allocation over max_memory",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        24 => "SIGXCPU: its CPU time limit",
        25 => "SIGXFSZ: a file over max_file_bytes",
        31 => "SIGSYS: a system call the sandbox forbids",
        _ => "a signal",
    }
}

/// One install of a process extension: its sandbox and its idle warm processes.
pub struct ProcessInstall {
    code: Arc<ProcessCode>,
    sandbox: Arc<Sandbox>,
    invocation: Invocation,
    protocol: warden_process::Limits,
    /// Host requests all its calls may make (`[policy.process] host_requests_per_second`).
    requests: Arc<RequestBudget>,
    warm_calls: u32,
    idle: Arc<Mutex<Vec<Worker>>>,
    /// Whether a task sweeps `idle` of processes parked longer than [`PARKED_FOR`].
    sweeping: std::sync::atomic::AtomicBool,
    weaker: Option<&'static str>,
    summary: String,
    /// The read-write folders, measured before each call against the file quota.
    writable: Option<quota::Folders>,
    /// Its calls running now (see [`quota::Running`]).
    running: Arc<quota::Running>,
    /// Refusals of its swept processes, for its next call to report.
    unreported: Arc<refusals::Unreported>,
    /// Its sandboxes being made now: at most as many as it may have calls (see
    /// [`in_a_starting_slot`]).
    starting: Arc<tokio::sync::Semaphore>,
    /// Its tenant's, shared by all its process installs ([`tenant_starting_slots`]).
    tenant_starting: Arc<tokio::sync::Semaphore>,
    /// The install's folders: the program owns them (a root host gives them to its uid), so
    /// it could change their mode, which the host's next load would refuse; reset after
    /// every call.
    folders: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for ProcessInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessInstall")
            .field("code", &self.code)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// Frames a program sends: at least 1 MiB, and room for its largest answer in base64.
fn frame_limit(limits: &Limits) -> usize {
    let answer = limits.max_response_bytes.bytes().saturating_mul(4) / 3 + 64 * 1024;
    usize::try_from(answer)
        .unwrap_or(usize::MAX)
        .clamp(1 << 20, warden_process::limits::MAX_FRAME_BYTES_CEILING)
}

impl ProcessInstall {
    /// The sandbox of one install: `code` read-only, `mounts` as granted, limits from
    /// `limits` and `policy`, host requests from `requests` (the install's, which its
    /// reloads keep), its sandboxes made in `tenant_starting` too (its tenant's starting
    /// slots, [`tenant_starting_slots`] of them). Checks the kernel (a missing feature is an
    /// error unless the policy accepts the weaker profile).
    pub fn new(
        code: Arc<ProcessCode>,
        mounts: &[MountDir],
        limits: &Limits,
        policy: &ProcessPolicy,
        files: FileLimits,
        requests: Arc<RequestBudget>,
        tenant_starting: Arc<tokio::sync::Semaphore>,
    ) -> Result<ProcessInstall, LoadError> {
        let writable: Vec<_> = mounts
            .iter()
            .filter(|m| !m.readonly)
            .map(|m| m.host.clone())
            .collect();
        if !writable.is_empty() && !policy.writable_mounts {
            return Err(LoadError::ProcessPolicy(
                "a process extension is granted read-write folders only where [policy.process] \
                 writable_mounts = true (its writes are measured before each call, not charged \
                 one by one); grant its folders read-only or leave them out"
                    .into(),
            ));
        }
        let sandbox_err = |e: warden_sandbox::ProfileError| LoadError::Sandbox(e.into());
        let warm_calls = policy.warm_calls.max(1);
        let cpu = limits.max_execution_time.as_secs_f64().ceil() as u64;
        let rlimits = warden_sandbox::Limits {
            address_space: limits.max_memory.bytes().max(8 << 20),
            // Per process, over all the calls it serves; each call's deadline stops it sooner.
            cpu_seconds: cpu.max(1).saturating_mul(u64::from(warm_calls)) + 1,
            open_files: u64::from(policy.open_files),
            processes: u64::from(policy.processes),
            // With read-write folders, no file outgrows their whole quota in one go (a write
            // is otherwise seen only when it ends).
            file_size: if writable.is_empty() {
                policy.max_file_bytes.bytes()
            } else {
                policy.max_file_bytes.bytes().min(files.max_bytes.bytes())
            },
            // The whole tree, where the sandbox gets a cgroup.
            memory: limits.max_memory.bytes().max(8 << 20),
        };
        let mut builder = Profile::builder(code.dir.path())
            .tmp_size(policy.tmp_size.bytes())
            .limits(rlimits);
        let mut shown = vec![
            "/bundle (read-only)".to_owned(),
            format!("/tmp ({})", policy.tmp_size),
        ];
        for m in mounts {
            let at = m.guest.parse().map_err(sandbox_err)?;
            let access = if m.readonly {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            shown.push(format!(
                "{} ({})",
                m.guest,
                if m.readonly {
                    "read-only"
                } else {
                    "read-write"
                }
            ));
            builder = builder.grant(Grant::new(&m.host, at, access));
        }
        if code.is_script() {
            for p in &policy.interpreter_paths {
                let at = p.parse().map_err(sandbox_err)?;
                shown.push(format!("{p} (read and execute: interpreter)"));
                builder = builder.grant(Grant::new(p, at, Access::ReadExec));
            }
        }
        if policy.accept_no_landlock {
            builder = builder.accept(Weakening::NoLandlock);
        }
        let profile = builder.build().map_err(sandbox_err)?;
        // A root host runs the program as an unprivileged uid: the install's own folders
        // (0700, made by the host) become that uid's, or it could neither read nor write them.
        if let warden_sandbox::IdMapping::FromRoot { program } = profile.ids() {
            for m in mounts {
                std::os::unix::fs::chown(&m.host, Some(program.uid()), Some(program.gid()))
                    .map_err(|e| {
                        LoadError::engine(
                            format!("giving {} to the sandbox's user", m.host.display()),
                            e,
                        )
                    })?;
            }
        }
        let sandbox = Sandbox::new(profile)?;
        let support = Sandbox::check();
        let weaker = (!support.landlock.is_available()).then_some("no-landlock");
        let summary = format!(
            "namespaces user, mount, pid, ipc, uts, cgroup, net (no interface); root: {}, /dev/null, /dev/urandom; {}; seccomp allowlist; rlimits: address space {}, cpu {}s, files {}, processes {}, file size {}; {}; {}",
            shown.join(", "),
            if weaker.is_some() {
                "NO Landlock (weaker profile accepted by the policy)".to_owned()
            } else {
                format!("Landlock ABI {}", support.landlock_abi)
            },
            warden_manifest::ByteSize(rlimits.address_space),
            rlimits.cpu_seconds,
            rlimits.open_files,
            rlimits.processes,
            policy.max_file_bytes,
            if support.cgroup.is_available() {
                format!(
                    "cgroup: {} of memory and {} processes for the whole sandbox",
                    warden_manifest::ByteSize(rlimits.memory),
                    rlimits.processes
                )
            } else {
                "no cgroup (none this process may make: rlimits per process only)".to_owned()
            },
            if warm_calls > 1 {
                format!("warm: one process serves up to {warm_calls} calls")
            } else {
                "a fresh sandbox per call".to_owned()
            }
        );
        let invocation =
            Invocation::new(code.program.clone()).args(code.args.iter().map(String::as_str));
        let protocol = warden_process::Limits::default()
            .with_max_frame_bytes(frame_limit(limits))
            .map_err(|e| LoadError::engine("the protocol's frame limit", e))?;
        Ok(ProcessInstall {
            code,
            sandbox: Arc::new(sandbox),
            invocation,
            protocol,
            requests,
            warm_calls,
            idle: Arc::new(Mutex::new(Vec::new())),
            sweeping: std::sync::atomic::AtomicBool::new(false),
            weaker,
            summary,
            running: Arc::default(),
            unreported: Arc::default(),
            starting: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(limits.max_concurrent_calls.max(1)).unwrap_or(1),
            )),
            tenant_starting,
            writable: (!writable.is_empty()).then_some(quota::Folders {
                roots: writable,
                files,
            }),
            folders: mounts.iter().map(|m| m.host.clone()).collect(),
        })
    }

    /// Starts (once per install) the task that kills processes parked longer than
    /// [`PARKED_FOR`]; it ends with the install.
    fn sweep_later(&self) {
        let unreported = Arc::clone(&self.unreported);
        crate::sweep::sweep_later(
            &self.sweeping,
            &self.idle,
            PARKED_FOR / 4,
            |w: &Worker| w.parked.is_none_or(|(at, _)| at.elapsed() >= PARKED_FOR),
            // Killing is a signal, reaping a wait: off the executor. What it was refused
            // while parked (it may have run, without a freezer) goes to the next call.
            move |mut old: Vec<Worker>| {
                for w in &mut old {
                    unreported.keep(w.end());
                }
                drop(tokio::task::spawn_blocking(move || drop(old)));
            },
        );
    }

    /// Takes the install out of use (unloaded, upgraded, or its host closing): its parked
    /// processes are killed, and what they, and those swept before, were refused after their
    /// last answer goes to `report`, since no call of the install will come to report it;
    /// so does what a process swept later was refused. Calls still running go on, but keep
    /// no process.
    pub fn retire(&self, report: refusals::Reporter) {
        self.unreported.retire(report);
        // Taken once retired: a call that parks its process asks under this lock, so none is
        // parked after this.
        let mut parked = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        let refused = parked.iter_mut().flat_map(Worker::end).collect();
        self.unreported.keep(refused);
        // Killing is a signal, reaping a wait: off the executor where there is one.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(parked))),
            Err(_) => drop(parked),
        }
    }

    /// Puts a parked `worker` with the idle ones, unless the install is retired (asked under
    /// the lock [`ProcessInstall::retire`] takes once retired): then it is handed back.
    fn keep_idle(&self, worker: Worker) -> Option<Worker> {
        let Ok(mut idle) = self.idle.lock() else {
            return Some(worker);
        };
        if self.unreported.retired() {
            return Some(worker);
        }
        idle.push(worker);
        None
    }

    /// The weaker profile every call of this install runs under, if any (to be audited).
    pub fn weaker(&self) -> Option<&'static str> {
        self.weaker
    }

    /// The sandbox profile in one line (for `warden inspect`).
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// A process for one call: a fit parked one of this `generation`, or a new one. `earlier`
    /// gets what a parked one wrote to stderr after its last call.
    /// With `fresh`, always a new one.
    async fn worker(
        &self,
        earlier: &mut Vec<u8>,
        refused: &mut Vec<warden_sandbox::Refusal>,
        (input_len, fresh): (usize, bool),
        generation: u64,
        (deadline, limit): (Instant, Duration),
    ) -> Result<Worker, CallError> {
        while let Some(mut w) = (!fresh)
            .then(|| self.idle.lock().ok().and_then(|mut idle| idle.pop()))
            .flatten()
        {
            let fit = if w.generation == generation {
                tokio::time::timeout_at(
                    deadline.into(),
                    w.unpark(earlier, self.protocol.max_stderr_bytes(), input_len),
                )
                .await
            } else {
                Ok(false)
            };
            // Replaced (or given up at the deadline): one that ran while parked may have been
            // refused meanwhile.
            let mut discard = |mut w: Worker| {
                refused.extend(w.end());
                tokio::task::spawn_blocking(move || drop(w));
            };
            match fit {
                Ok(true) => return Ok(w),
                Ok(false) => discard(w),
                Err(_) => {
                    discard(w);
                    return Err(CallError::Timeout(limit));
                }
            }
            earlier.clear();
        }
        // Not cut at the deadline: a spawn dropped on the way would leave its program to start
        // and be killed with no one to take its refusals. The sandbox lets the program start
        // only before the deadline (`Invocation::until`); one that started just before it
        // meets it in its exchange, and is ended, its refusals taken, as any other.
        let sandbox = Arc::clone(&self.sandbox);
        // Set if this call is dropped while its sandbox is made (its caller went away): a spawn
        // not begun by then is not made, rather than made and killed.
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _abandon = Abandon(Arc::clone(&abandoned));
        let inv = self
            .invocation
            .clone()
            .until(deadline)
            .abandoned_by(Arc::clone(&abandoned));
        // The clone, the child's setup and its report socket: blocking system calls.
        let slots = [&self.starting, &self.tenant_starting];
        let child = in_a_starting_slot(slots, deadline, move || {
            // `ETXTBSY`: a child forked by another thread of this host (any spawn, any
            // library) while the entry was being written still held the write descriptor for
            // the moment before its own exec. It goes away by itself: try again briefly.
            let mut tries = 0;
            loop {
                if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(SandboxError::TimedOut);
                }
                match sandbox.spawn(&inv) {
                    Err(SandboxError::Setup { errno, .. })
                        if errno == rustix::io::Errno::TXTBSY && tries < 20 =>
                    {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    other => return other,
                }
            }
        })
        .await
        .map_err(|_waited| CallError::Timeout(limit))?
        .made()
        .await
        .map_err(|e| CallError::host_caused("starting the process", e))?
        .map_err(|e| match e {
            SandboxError::TimedOut => CallError::Timeout(limit),
            e => CallError::host_caused("starting the process in its sandbox", e),
        })?;
        let mut w = Worker::start(child, &self.requests)
            .map_err(|e| CallError::host_caused("the process's pipes", e))?;
        w.generation = generation;
        Ok(w)
    }

    /// Sends `call {method, input}` to a process of this install, with `caps` answering its
    /// host requests, under `limits`.
    pub async fn call_rpc(
        &self,
        limits: &Limits,
        caps: &CallCaps,
        method: &str,
        input: &[u8],
    ) -> CallOutcome<Vec<u8>> {
        self.call_once(limits, caps, (method, input), Instant::now(), None)
            .await
    }

    /// [`ProcessInstall::call_rpc`] from `started`; `again` (what a warm process that ended
    /// before reading the call wrote to stderr) makes it the call's second try, in a new
    /// process.
    async fn call_once(
        &self,
        limits: &Limits,
        caps: &CallCaps,
        (method, input): (&str, &[u8]),
        started: Instant,
        again: Option<Vec<u8>>,
    ) -> CallOutcome<Vec<u8>> {
        let fresh = again.is_some();
        if input.len() as u64 > limits.max_request_bytes.bytes() {
            return failed(
                started,
                CallError::TooLarge {
                    what: "input",
                    size: input.len() as u64,
                    limit: limits.max_request_bytes,
                },
            );
        }
        let watch = match &self.writable {
            Some(folders) => match folders.begin().await {
                Ok(w) => Some(w),
                Err(e) => return failed(started, e),
            },
            None => None,
        };
        let api = ProcessApi::new(caps, limits.max_response_bytes.bytes());
        let deadline = started + limits.max_execution_time;
        let mut earlier = again.unwrap_or_default();
        let mut refused = Vec::new();
        let mut worker = match self
            .worker(
                &mut earlier,
                &mut refused,
                (input.len(), fresh),
                caps.generation,
                (deadline, limits.max_execution_time),
            )
            .await
        {
            Ok(w) => w,
            Err(e) => {
                // What replaced processes were refused after their last answer is still told.
                refusals::record(&api.ledger, refused, true);
                let (denials, uses, limits) = api.ledger.report(&api.redactor);
                return CallOutcome {
                    result: Err(e),
                    report: CallReport {
                        duration: started.elapsed(),
                        denials,
                        uses,
                        limits,
                        ..CallReport::default()
                    },
                };
            }
        };
        api.redactor.absorb(&worker.seen);
        // A warm process's refusals after its last answer (counted since), and those of
        // parked ones replaced on the way: this call's record says so, rather than the last
        // one's, already written, or none. A new process's, made as it started, are simply
        // this call's.
        let since = worker.child.refused();
        if worker.calls == 0 {
            refusals::record(&api.ledger, since, false);
        } else {
            refused.extend(since);
        }
        refused.extend(self.unreported.take());
        refusals::record(&api.ledger, refused, true);
        let earlier_calls = worker.calls;
        worker.start_call();
        worker.answering = Some(api.ledger.clone());
        // On this thread's CPU: see `Child::run_here`. Only speed depends on it.
        let _ = worker.child.run_here();
        let program = worker.child.id();
        // Only folders that are measured need it (it costs a few allocations per call).
        let watched = self.writable.as_ref().zip(watch).map(|(folders, watch)| {
            let still =
                quota::Still::new(worker.child.freezer(), worker.child.killer(), &self.running);
            (folders, watch, still)
        });
        let still = watched.as_ref().map(|(_, _, still)| still.clone());
        // The watch runs before the program reads the call (see `Watch::start`); its thread
        // not started by the call's deadline is the call's time out.
        let watching = match watched {
            Some((folders, watch, still)) => {
                tokio::time::timeout_at(deadline.into(), watch.start(folders, program, still))
                    .await
                    .unwrap_or(Err(CallError::Timeout(limits.max_execution_time)))
                    .map(Some)
            }
            None => Ok(None),
        };
        let ended = match watching {
            Err(e) => Ended::OverQuota(e),
            Ok(watching) => {
                let watch_quota = async {
                    match watching {
                        Some(w) => w.ended().await,
                        None => std::future::pending().await,
                    }
                };
                let exchange = worker.session.call_capturing(
                    &mut worker.stderr,
                    Call { method, input },
                    &self.protocol,
                    &api,
                    deadline,
                );
                let spread = spread_when_crowded(&mut worker.child);
                tokio::select! {
                    biased;
                    out = exchange => Ended::Answered(out),
                    e = watch_quota => Ended::OverQuota(e),
                    never = spread => match never {},
                }
            }
        };
        // A measure still running holds the tree; it must be thawed by then, not after.
        if let Some(still) = &still {
            still.settled().await;
        }
        // Ended: its report says what it held.
        worker.answering = None;
        worker.calls += 1;
        let ended = match (ended, still.and_then(|s| s.killed())) {
            // Killed for the quota: its exchange may have seen the kill first.
            (Ended::Answered(_), Some(e)) => Ended::OverQuota(e),
            (ended, _) => ended,
        };
        // A warm process that ended itself after its last answer (stopped or frozen on its
        // way out, and woken for this call) did not read this call: it runs in a new process
        // instead, once (outside attack, session 28: it failed, "the process exited with
        // status 0 before answering"). Only if the program can have done nothing with it:
        // nothing of the request read, nothing sent (no host request, no notification: a
        // program can peek at its stdin with `tee` and act through the host, or read the
        // request and pad the pipe with a host answer; second outside attack, session 28),
        // and no folder it could have written to. Else it is the call's failure.
        if let Ended::Answered(out) = &ended
            && matches!(
                out.reply,
                Err(ProtocolError::Closed | ProtocolError::StdinClosed)
            )
            && !worker.session.heard()
            && self.writable.is_none()
            && earlier_calls > 0
            && !fresh
            && worker.ended_before_the_call().await
        {
            let mut stderr = earlier;
            stderr.extend_from_slice(&out.stderr);
            // Killing is a signal, the end a wait: off the executor.
            let refused = tokio::task::spawn_blocking(move || {
                let refused = worker.child.refused_to_end(KILL_WAIT);
                drop(worker);
                refused
            })
            .await
            .unwrap_or_default();
            refusals::record(&api.ledger, refused, true);
            return Box::pin(self.call_once(limits, caps, (method, input), started, Some(stderr)))
                .await;
        }
        let (reply, out_stderr, out_truncated, answered) = match ended {
            Ended::Answered(out) => (Ok(out.reply), out.stderr, out.stderr_truncated, true),
            Ended::OverQuota(e) => (Err(e), Vec::new(), false, false),
        };

        let cap = self.protocol.max_stderr_bytes();
        let stderr_truncated = out_truncated || earlier.len() + out_stderr.len() > cap;
        let mut stderr = earlier;
        stderr.extend_from_slice(
            &out_stderr[..out_stderr.len().min(cap.saturating_sub(stderr.len()))],
        );
        let mut result = match reply {
            Err(quota) => Err(quota),
            Ok(Ok(Reply {
                output: Ok(bytes), ..
            })) if bytes.len() as u64 > limits.max_response_bytes.bytes() => {
                Err(CallError::TooLarge {
                    what: "result",
                    size: bytes.len() as u64,
                    limit: limits.max_response_bytes,
                })
            }
            Ok(Ok(Reply {
                output: Ok(bytes), ..
            })) => Ok(bytes),
            Ok(Ok(Reply { output: Err(e), .. })) => Err(CallError::Extension {
                code: e.name.to_string(),
                message: e.message,
            }),
            Ok(Err(ProtocolError::Deadline)) => Err(CallError::Timeout(limits.max_execution_time)),
            Ok(Err(e)) => Err(worker.failure(&e, limits.max_memory).await),
        };
        // A process of the tree killed for the cgroup's memory limit: the call hit its limit
        // even if the program answered, and the process is not kept (its count would carry
        // over to the next call).
        let oom = worker.child.oom_killed();
        // With read-write folders, only where the tree can be frozen: a stopped program can
        // continue itself (a timer's SIGCONT) and write while no call watches its folders
        // (outside attack: 300 MiB past a 4 MiB quota between two calls).
        let parkable = self.writable.is_none() || worker.child.can_freeze();
        let parked = (answered
            && parkable
            && !oom
            && !worker.session.is_broken()
            && worker.calls < self.warm_calls)
            .then(|| worker.park())
            .flatten();
        // The call's peak, or what the program holds now where its peak would be its whole
        // life's (see `Worker::call_memory`); read before it is killed (without a cgroup it
        // is in /proc).
        let memory_peak = match parked {
            Some(now) if !worker.own_peak => now,
            _ => worker.call_memory(),
        };
        // What the sandbox refused it, as denials of the call: taken once it can make no more
        // (frozen, stopped, or killed now and ended: what it tries after its answer is refused
        // it and counted here, in this call's record); a parked process's later refusals go
        // to its next call.
        let refused = if parked.is_some() {
            worker.child.refused()
        } else {
            // Killing is a signal, the end a wait: off the executor.
            match tokio::task::spawn_blocking(move || {
                let refused = worker.child.refused_to_end(KILL_WAIT);
                (worker, refused)
            })
            .await
            {
                Ok((w, refused)) => {
                    worker = w;
                    refused
                }
                Err(_) => {
                    return failed(
                        started,
                        CallError::host("a killed process could not be reaped"),
                    );
                }
            }
        };
        refusals::record(&api.ledger, refused, false);
        let mut over_quota = !answered;
        if answered && let Some(folders) = &self.writable {
            // What the call left in its folders counts too, measured with the tree still,
            // parked or dead: a program moving files between folders while a walk runs can
            // hide them from it (outside attack: 601 MiB past a 4 MiB quota and the call
            // answered "ok"), not from a walk of a tree that cannot run. A call that answered
            // over the quota fails, and its process is not kept.
            if let Some(e) = folders
                .over_quota(parked.is_some().then_some(program))
                .await
            {
                result = Err(e);
                over_quota = true;
            }
        }
        let keep = parked.is_some() && !over_quota;
        worker.seen.absorb(&api.redactor);
        let unkept = if keep {
            self.keep_idle(worker)
        } else {
            Some(worker)
        };
        match unkept {
            None => self.sweep_later(),
            Some(worker) if over_quota => {
                // Dead before the answer goes out: it must not write on after its call.
                let _ = tokio::task::spawn_blocking(move || drop(worker)).await;
            }
            Some(mut worker) => {
                if keep {
                    // Parked, but its install was retired meanwhile: ended instead, and what
                    // it was refused since its answer reported with the install's retirement.
                    self.unreported.keep(worker.end());
                }
                // Killing is a signal, reaping a wait: off the executor.
                tokio::task::spawn_blocking(move || drop(worker));
            }
        }
        for f in &self.folders {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o700));
        }
        let redactor = &api.redactor;
        let mut logs = lines(
            Stream::Stderr,
            &redactor.bytes(&stderr, stderr_truncated),
            u64::from(stderr_truncated),
        );
        logs.extend(api.logs.lines(redactor));
        let (denials, uses, limit_hits) = api.ledger.report(redactor);
        let memory_limit_hit = oom || matches!(result, Err(CallError::MemoryLimit(_)));
        CallOutcome {
            result: result.map_err(|e| redactor.error(e)),
            report: CallReport {
                duration: started.elapsed(),
                fuel: None,
                memory_peak,
                memory_limit_hit,
                logs,
                denials,
                uses,
                limits: limit_hits,
                egress_bytes: api.egress_bytes.load(std::sync::atomic::Ordering::Relaxed),
                earlier_calls,
            },
        }
    }
}

/// How a call's exchange with its process ended.
enum Ended {
    Answered(warden_process::Output),
    /// The quota's watch ended the call first: the read-write folders went over the quota, or
    /// the watch could not run (the exchange was dropped, or never began).
    OverQuota(CallError),
}

/// What this machine's kernel offers the sandbox, in one line per feature (probed once).
pub fn host_support() -> Vec<String> {
    let s = Sandbox::check();
    let say = |name: &str, f: &warden_sandbox::Feature| match f {
        warden_sandbox::Feature::Available => format!("{name}: available"),
        warden_sandbox::Feature::Missing(why) => format!("{name}: MISSING ({why})"),
    };
    vec![
        say(
            "namespaces (user, mount, pid, ipc, uts, cgroup, net)",
            &s.namespaces,
        ),
        match &s.landlock {
            warden_sandbox::Feature::Available => format!("landlock: ABI {}", s.landlock_abi),
            f => say("landlock", f),
        },
        say("seccomp", &s.seccomp),
        say(
            "seccomp notifications (refused system calls audited)",
            &s.seccomp_notify,
        ),
        say("cgroup (pids, memory) per sandbox", &s.cgroup),
        say("one cpu group for all sandboxes", &s.cpu_group),
        say(
            "the file quota's watch ahead of ordinary threads",
            &s.urgent,
        ),
        say(
            "the host weighed apart from its session's other programs",
            &s.apart,
        ),
        say("sandboxes set up without a copy of the host", &s.in_place),
    ]
}

impl From<SandboxError> for LoadError {
    fn from(e: SandboxError) -> Self {
        LoadError::Sandbox(e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    /// Drops only once `release` says so (or is gone), then says it ended.
    struct Slow {
        release: std::sync::mpsc::Receiver<()>,
        ended: std::sync::mpsc::Sender<()>,
    }

    impl Drop for Slow {
        fn drop(&mut self) {
            let _ = self.release.recv();
            let _ = self.ended.send(());
        }
    }

    #[test]
    fn a_wait_on_an_executor_thread_leaves_that_thread_to_other_tasks() {
        // One executor thread: a task that runs only if the wait does not hold it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (entered, waits) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<u32>();
        rt.spawn(async move {
            let got = waiting(|| {
                let _ = entered.send(());
                released.recv().map(|()| 7)
            });
            let _ = done.send(got.unwrap_or(0));
        });
        waits.recv_timeout(Duration::from_secs(30)).unwrap();
        // Spawned once the wait has begun: it cannot have run before.
        let unstick = release.clone();
        rt.spawn(async move {
            let _ = release.send(());
        });
        let got = finished.recv_timeout(Duration::from_secs(30));
        // Failing, not hanging, when the thread was held: the wait ends either way.
        let _ = unstick.send(());
        assert_eq!(got, Ok(7));
    }

    #[tokio::test]
    async fn a_wait_on_a_single_threaded_executor_runs_in_place() {
        let here = std::thread::current().id();
        assert_eq!(waiting(|| std::thread::current().id()), here);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spawn_keeps_its_starting_slots_after_its_caller_goes() {
        // Two installs of one tenant: one slot each, and one for the tenant.
        let (a, b) = (
            Arc::new(tokio::sync::Semaphore::new(1)),
            Arc::new(tokio::sync::Semaphore::new(1)),
        );
        let tenant = Arc::new(tokio::sync::Semaphore::new(1));
        let far = Instant::now() + Duration::from_secs(30);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (ended, made_dropped) = std::sync::mpsc::channel::<()>();
        let first = in_a_starting_slot([&a, &tenant], far, move || {
            let _ = wait.recv();
            Slow {
                release: released,
                ended,
            }
        })
        .await
        .unwrap();
        // Its caller hung up: the spawn goes on, and keeps its places.
        drop(first);
        assert_eq!((a.available_permits(), tenant.available_permits()), (0, 0));

        // The next call of the install waits for its slot, and gives up at its deadline
        // having started nothing; so does one of the tenant's other install, which has a
        // slot of its own but not the tenant's. One dropped while it waits starts nothing.
        let started = Arc::new(AtomicBool::new(false));
        for install in [&a, &b] {
            let s = Arc::clone(&started);
            let soon = Instant::now() + Duration::from_millis(100);
            let timed_out =
                in_a_starting_slot([install, &tenant], soon, move || s.store(true, SeqCst)).await;
            assert!(
                timed_out.is_err(),
                "a call got a slot held by a spawn under way"
            );
        }
        assert_eq!(b.available_permits(), 1, "a call that gave up kept a slot");
        let s = Arc::clone(&started);
        let queued = in_a_starting_slot([&a, &tenant], far, move || s.store(true, SeqCst));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), queued)
                .await
                .is_err()
        );

        // The spawn returns; what it made, which nobody takes, is being dropped (a child
        // killed and cleaned up): the slots are still held.
        go.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!((a.available_permits(), tenant.available_permits()), (0, 0));

        // Once that is done, they are free again.
        release.send(()).unwrap();
        made_dropped
            .recv_timeout(Duration::from_secs(10))
            .expect("what the spawn made was dropped");
        let since = Instant::now();
        while a.available_permits() == 0 || tenant.available_permits() == 0 {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "the slots were not given back"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            !started.load(SeqCst),
            "a call that never had a slot started"
        );

        // A caller that stays gets what was made, and the slots back.
        let next = in_a_starting_slot([&b, &tenant], far, || 7).await.unwrap();
        assert_eq!(next.made().await.unwrap(), 7);
        assert_eq!((b.available_permits(), tenant.available_permits()), (1, 1));
    }
}
