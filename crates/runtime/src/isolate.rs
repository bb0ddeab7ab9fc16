//! Compiling in a child process: the hard bound on what one compile may cost.
//!
//! Cranelift cannot be stopped part-way, and the pre-compile check's shape limits still admit
//! components that compile for minutes (23 straight-line bodies of 1 MiB: 113 s, 461 MiB), or
//! whose validation alone compares deep types for minutes (a shared component instantiated
//! thousands of times with 131k-node tuple types). So, when the embedder names a program that
//! runs [`child_main`], everything that reads the component's code, the pre-compile check
//! (with its validation) included, runs first in a child process built from the same
//! settings. The child caps its own writable memory (`RLIMIT_DATA`: past it Cranelift's
//! allocations fail and the child ends) and CPU time, and the parent kills it at the
//! wall-clock limit.
//!
//! Extism plug-ins (core modules) go the same way, with `kind=module`: the child runs the
//! plug-in's own check (`crate::extism::check`) and `Engine::precompile_module`.
//!
//! The child answers on its standard output: what it compiled on one line (`rpc` or `http`:
//! a component's world; `module`), then the compiled code (`Engine::precompile_component`), at most
//! [`warden_codecache::MAX_ENTRY_BYTES`]. The parent never compiles these bytes again: it
//! seals them with the code cache's MAC, loads its in-memory copy through the code cache's
//! one checked path, and stores them ([`warden_codecache::CodeCache::admit`]). The child is
//! this very program, reached over pipes only the parent holds; it never touches the cache.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::error::LoadError;
pub use crate::settings::Isolation;
use crate::settings::{RuntimeConfig, engine_config};
use crate::world::WorldKind;

/// Exit codes of the child, read by the parent.
const EXIT_REFUSED: i32 = 1;
const EXIT_SETUP: i32 = 3;
const EXIT_MEMORY: i32 = 4;
/// Refused by the pre-compile check (before compiling).
const EXIT_CHECKED: i32 = 5;

/// What the parent keeps of the child's standard error (its refusal message).
const STDERR_KEPT: u64 = 16 << 10;
/// The most the parent reads of the child's answer: the world's line and the compiled code.
const ANSWER_KEPT: u64 = warden_codecache::MAX_ENTRY_BYTES + 16;
/// How often the parent looks whether the child has ended.
const POLL: Duration = Duration::from_millis(5);

/// What the child compiled: a component (of this world), or a core module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compiled {
    Component(WorldKind),
    Module,
}

impl Compiled {
    fn word(self) -> &'static str {
        match self {
            Compiled::Component(WorldKind::Rpc) => "rpc",
            Compiled::Component(WorldKind::Http) => "http",
            Compiled::Module => "module",
        }
    }
}

/// Checks and compiles `bytes` in the child, within `iso`'s limits (a component, or with
/// `module` an Extism plug-in's core module); returns what it compiled and its code (not yet
/// checked by Wasmtime: see [`warden_codecache`]).
pub(crate) fn compile(
    iso: &Isolation,
    cfg: &RuntimeConfig,
    bytes: &[u8],
    module: bool,
) -> Result<(Compiled, Vec<u8>), LoadError> {
    let mut cmd = Command::new(&iso.program);
    cmd.args(&iso.args);
    if module {
        cmd.arg("kind=module");
    }
    cmd.arg(format!("max-memory={}", cfg.max_memory))
        .arg(format!("data-limit={}", iso.max_memory))
        // A backstop should the parent die without killing it: CPU seconds over all threads.
        .arg(format!(
            "cpu-limit={}",
            iso.max_time
                .as_secs()
                .saturating_add(1)
                .saturating_mul(cfg.compile_threads.max(1) as u64)
        ));
    // Nothing of the host's environment reaches the child, except how many threads compile.
    cmd.env_clear()
        .env("RAYON_NUM_THREADS", cfg.compile_threads.max(1).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        LoadError::engine(
            format!("starting the compile process {}", iso.program.display()),
            e,
        )
    })?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let started = Instant::now();
    let (status, timed_out, message, answer) = std::thread::scope(|s| {
        // The child reads all its input before compiling; if it ends early the write fails,
        // which its exit status explains.
        s.spawn(move || {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(bytes);
            }
        });
        let reader = s.spawn(move || kept(stderr));
        let answer = s.spawn(move || read_capped(stdout, ANSWER_KEPT));
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= iso.max_time => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait();
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(e);
                }
            }
        };
        let message = reader.join().unwrap_or_default();
        let answer = answer.join().unwrap_or((Vec::new(), true));
        (status, timed_out, message, answer)
    });
    let status = status.map_err(|e| LoadError::engine("waiting for the compile process", e))?;
    judge(iso, status, timed_out, message)?;
    let (answer, whole) = answer;
    if !whole {
        return Err(LoadError::Compile(
            format!(
                "its compiled code is larger than {} MiB",
                warden_codecache::MAX_ENTRY_BYTES >> 20
            )
            .into(),
        ));
    }
    answered(answer)
}

/// The child's answer: `rpc`, `http` or `module`, a newline, the compiled code.
fn answered(mut answer: Vec<u8>) -> Result<(Compiled, Vec<u8>), LoadError> {
    let world = |n: usize| match &answer[..n] {
        b"rpc" => Some(Compiled::Component(WorldKind::Rpc)),
        b"http" => Some(Compiled::Component(WorldKind::Http)),
        b"module" => Some(Compiled::Module),
        _ => None,
    };
    let line = answer.iter().take(8).position(|&b| b == b'\n');
    let Some((kind, n)) = line.and_then(|n| Some((world(n)?, n))) else {
        let start = String::from_utf8_lossy(&answer[..answer.len().min(16)]).into_owned();
        return Err(LoadError::Engine {
            what: format!("the compile process answered {start:?}, not a world"),
            source: None,
        });
    };
    let code = answer.split_off(n + 1);
    Ok((kind, code))
}

/// At most `cap` bytes of what a child wrote on `pipe` (the rest is drained, so the child
/// never blocks on a full pipe), and whether that was all of it.
fn read_capped(pipe: Option<impl Read>, cap: u64) -> (Vec<u8>, bool) {
    let Some(mut rest) = pipe else {
        return (Vec::new(), true);
    };
    let mut kept = Vec::new();
    let _ = (&mut rest).take(cap).read_to_end(&mut kept);
    let more = std::io::copy(&mut rest, &mut std::io::sink()).unwrap_or(0);
    (kept, more == 0)
}

/// The start of what a child wrote on `pipe` (the rest is drained, so the child never blocks
/// on a full pipe), as trimmed text.
fn kept(pipe: Option<impl Read>) -> String {
    let Some(mut rest) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut rest).take(STDERR_KEPT).read_to_end(&mut kept);
    let _ = std::io::copy(&mut rest, &mut std::io::sink());
    String::from_utf8_lossy(&kept).trim().to_owned()
}

/// What the child's end means.
fn judge(
    iso: &Isolation,
    status: ExitStatus,
    timed_out: bool,
    message: String,
) -> Result<(), LoadError> {
    let over = |limit: &'static str, max: String| Err(LoadError::OverCompileLimit { limit, max });
    let time = || format!("{:?}", iso.max_time);
    let memory = || format!("{} MiB", iso.max_memory >> 20);
    if timed_out || status.signal() == Some(SIGXCPU) {
        return over("max_time", time());
    }
    if status.code() == Some(EXIT_MEMORY)
        // Rust's allocation failure aborts after saying so.
        || (status.signal() == Some(SIGABRT) && message.contains("memory allocation"))
    {
        return over("max_memory", memory());
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(EXIT_REFUSED) => Err(LoadError::Compile(message.into())),
        Some(EXIT_CHECKED) => Err(LoadError::Checked(message)),
        Some(EXIT_SETUP) => Err(LoadError::Engine {
            what: format!("the compile process could not start its engine: {message}"),
            source: None,
        }),
        // A crash while compiling these bytes (a panic, a signal) is about the component.
        _ => Err(LoadError::Compile(
            format!("the compile process ended with {status}: {message}").into(),
        )),
    }
}

const SIGABRT: i32 = 6;
const SIGXCPU: i32 = 24;

/// The child: reads a component on `input`, checks it and compiles it with the engine the
/// arguments describe, writes its world (one line) and compiled code to `out`, and returns
/// the exit code the parent reads. What went wrong is written to `err`, one line.
pub fn child_main(
    args: &[OsString],
    input: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let (code, text) = match child(args, input) {
        Ok((kind, compiled)) => {
            let written = writeln!(out, "{}", kind.word())
                .and_then(|()| out.write_all(&compiled))
                .and_then(|()| out.flush());
            return match written {
                Ok(()) => 0,
                Err(_) => EXIT_SETUP,
            };
        }
        Err(Failure::Setup(t)) => (EXIT_SETUP, t),
        Err(Failure::Checked(t)) => (EXIT_CHECKED, t),
        Err(Failure::Refused(t)) if out_of_memory(&t) => (EXIT_MEMORY, t),
        Err(Failure::Refused(t)) => (EXIT_REFUSED, t),
    };
    let _ = writeln!(err, "{text}");
    code
}

enum Failure {
    Setup(String),
    Checked(String),
    Refused(String),
}

fn out_of_memory(text: &str) -> bool {
    text.contains("Cannot allocate memory") || text.contains("out of memory")
}

fn child(args: &[OsString], input: &mut dyn Read) -> Result<(Compiled, Vec<u8>), Failure> {
    // One instance slot: the child never instantiates, and the pool's sizes are no part of
    // the compiled code (nor of the engine's fingerprint), so the child reserves no pool to
    // speak of.
    let mut cfg = RuntimeConfig {
        max_instances: 1,
        ..RuntimeConfig::default()
    };
    let (mut data_limit, mut cpu_limit, mut module) = (None, None, false);
    for arg in args {
        let arg = arg
            .to_str()
            .ok_or_else(|| Failure::Setup(format!("argument {arg:?} is not UTF-8")))?;
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| Failure::Setup(format!("argument {arg:?} is not KEY=VALUE")))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| Failure::Setup(format!("{key}: {value:?} is not a number")))
        };
        match key {
            "max-memory" => cfg.max_memory = number()?,
            "data-limit" => data_limit = Some(number()?),
            "cpu-limit" => cpu_limit = Some(number()?),
            "kind" if value == "module" => module = true,
            _ => return Err(Failure::Setup(format!("unknown argument {key:?}"))),
        }
    }
    let limit = |resource, value: Option<u64>, what: &str| -> Result<(), Failure> {
        let Some(v) = value else {
            return Err(Failure::Setup(format!("no {what} given")));
        };
        rustix::process::setrlimit(
            resource,
            rustix::process::Rlimit {
                current: Some(v),
                maximum: Some(v),
            },
        )
        .map_err(|e| Failure::Setup(format!("setting the {what}: {e}")))
    };
    // Limits first, so that nothing the component makes the compiler do escapes them.
    limit(rustix::process::Resource::Data, data_limit, "memory limit")?;
    limit(rustix::process::Resource::Cpu, cpu_limit, "CPU time limit")?;
    // Ends with the parent (a host killed while compiling leaves no compile running).
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Setup(format!("reading the component: {e}")))?;
    let kind = if module {
        crate::extism::check::check(&bytes).map_err(|e| Failure::Checked(e.to_string()))?;
        Compiled::Module
    } else {
        Compiled::Component(
            crate::precheck::check(&bytes).map_err(|e| Failure::Checked(e.to_string()))?,
        )
    };
    let config = engine_config(&cfg).map_err(|e| Failure::Setup(warden_call::text::chain(&e)))?;
    let engine =
        Engine::new(&config).map_err(|e| Failure::Setup(format!("creating the engine: {e:#}")))?;
    let compiled = match kind {
        Compiled::Module => engine.precompile_module(&bytes),
        Compiled::Component(_) => engine.precompile_component(&bytes),
    }
    .map_err(|e| Failure::Refused(format!("{e:#}")))?;
    Ok((kind, compiled))
}
