//! The operator's policy (`--config FILE`, section `[policy]`): ceilings and network exceptions.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use ipnet::IpNet;

use crate::capability::Capability;
use crate::limits::{Limits, Profile};
use crate::strict::{Document, TomlError};
use crate::units::{ByteSize, Span};

/// What the operator allows on this host. Built with [`Policy::default`] or [`Policy::parse`].
///
/// Defaults: profile `standard`; ceilings equal to the `relaxed` preset (256MiB, 30s, 64 calls,
/// 32MiB request/response), no fuel ceiling; every capability may be granted; no non-public
/// network may be reached (`allow_networks` empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Profile for manifests that name none.
    pub profile: Profile,
    /// Ceilings: a manifest asking for more is refused, not clamped.
    pub ceiling: Ceiling,
    /// Capabilities that may be granted at all on this host.
    pub capabilities: Vec<Capability>,
    /// Non-public ranges an allowed host may still resolve to.
    pub allow_networks: Vec<IpNet>,
    /// Key-value quota of each (tenant, extension) (`[policy.kv]`).
    pub kv: KvLimits,
    /// File quota of each (tenant, extension)'s read-write mounts (`[policy.files]`).
    pub files: FileLimits,
    /// What compiling one component may cost (`[policy.compile]`).
    pub compile: CompileLimits,
    /// The runner service's own limits (`[policy.gateway]`).
    pub gateway: GatewayLimits,
    /// How components run (`[policy.component]`).
    pub component: ComponentPolicy,
    /// How process extensions run (`[policy.process]`).
    pub process: ProcessPolicy,
    /// Which remote extensions may be reached (`[policy.remote]`).
    pub remote: RemotePolicy,
    /// How long a call over its extension's `max_concurrent_calls` (and, through the runner
    /// service, a request over its tenant's `tenant_concurrency`) waits for a slot before it
    /// is refused as busy (`[policy] busy_wait`, default 100ms, at most 10s; `"0s"` refuses at
    /// once). Waiting costs nothing but the request held, while a refusal answered at once
    /// is sent again at once: a tenant flooding one extension with 16 connections had
    /// 15,000 refusals a second made, and a quiet tenant's latency went up fourfold with the
    /// CPU they took (`scripts/noisy-neighbour.sh`); waiting, it had 200 a second. A burst
    /// just over the cap is served instead of refused.
    pub busy_wait: Duration,
}

/// Longest `[policy] busy_wait`: a call's slot is for calls, not for queues.
pub const MAX_BUSY_WAIT: Duration = Duration::from_secs(10);

/// Where remote extensions (`kind = "remote"`) may be reached from this host.
/// `[policy.remote]`: `allowed_hosts = ["ext.vendor.example", "*.vendor.example:8443"]` (the
/// manifest's syntax, without a scheme). A remote extension whose endpoint no entry admits is
/// refused at load; its name must then resolve to a public address, or one in the policy's
/// `allow_networks`. Empty by default: no remote extension runs until the operator names
/// where.
///
/// `max_connections` (default 8, at least 1): connections one install keeps to its remote at
/// once, busy or idle. An idle one is reused by the install's next call (for at most 30 s);
/// a call that finds every one busy waits for one within its time limit.
///
/// `host_requests_per_second` (default 1000): host requests the calls of one install may make
/// together, as for process extensions (`[policy.process]`); besides, at most 1000 in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePolicy {
    pub allowed_hosts: Vec<crate::host::AllowedHost>,
    pub max_connections: u32,
    pub host_requests_per_second: u32,
}

impl RemotePolicy {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
}

/// Host requests per second of one install's calls together, unless the policy says.
pub const DEFAULT_HOST_REQUESTS_PER_SECOND: u32 = 1000;

/// `host_requests_per_second`: 1 to a million.
fn host_requests_per_second(v: &crate::strict::Value<'_, '_>) -> Result<u32, TomlError> {
    u32::try_from(v.as_u64()?)
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| v.error("between 1 and 1000000"))
}

impl Default for RemotePolicy {
    fn default() -> RemotePolicy {
        RemotePolicy {
            allowed_hosts: Vec::new(),
            max_connections: RemotePolicy::DEFAULT_MAX_CONNECTIONS,
            host_requests_per_second: DEFAULT_HOST_REQUESTS_PER_SECOND,
        }
    }
}

/// How components (and nothing else) run on this host. `[policy.component]`:
///
/// - `warm_calls` (default 0): calls one instance serves before it is dropped. 0 or 1 makes a
///   fresh instance for every call (SPEC: nothing survives a call but what granted
///   capabilities keep). More is a weaker isolation profile the operator accepts for speed
///   (a language runtime's start, e.g. CPython's, then happens once per instance, not per
///   call): an instance that answered a call may answer the next calls of the same (tenant,
///   install), never another's, so whatever the guest keeps in its memory survives them
///   (within that pair only). It is dropped after that many calls, after any fault (a trap,
///   a limit, a time-out, an exit, a memory growth refused), after 10 s without a call, and
///   with its install (uninstall, upgrade, a grant or trust change). Every call it answers
///   after its first says so in its audit record.
/// - `warm_extensions` (required with `warm_calls`): the extension ids it applies to, or
///   `["*"]` for every component. Named, because not every component can answer twice: one
///   made by componentize-js in the `addEventListener('fetch')` style fails every call after
///   its first (StarlingMonkey issue 247); one that exports `incomingHandler` itself does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentPolicy {
    pub warm_calls: u32,
    pub warm_extensions: WarmScope,
}

/// Which components `[policy.component] warm_calls` applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WarmScope {
    #[default]
    None,
    All,
    Only(Vec<crate::ExtensionId>),
}

impl ComponentPolicy {
    /// The calls one instance of `id` may answer: 1 (a fresh instance per call) unless the
    /// policy keeps instances of this extension.
    pub fn warm_calls_for(&self, id: &crate::ExtensionId) -> u32 {
        let named = match &self.warm_extensions {
            WarmScope::None => false,
            WarmScope::All => true,
            WarmScope::Only(ids) => ids.contains(id),
        };
        if named { self.warm_calls.max(1) } else { 1 }
    }
}

/// How process extensions (`kind = "process"`) run on this host. `[policy.process]`:
///
/// - `warm_calls` (default 0): calls one sandboxed process serves before it is replaced. 0 or 1
///   spawns a fresh sandbox for every call (nothing survives a call, as with a component);
///   more keeps one warm process per (tenant, extension) per concurrent call, never shared
///   with another tenant or extension, replaced after that many calls or any fault. State the
///   program keeps in its memory between calls then survives them (within that pair only).
///   Between calls it is frozen with its sandbox's cgroup (or, without a freezer, stopped and
///   taken back only if still stopped, unmoved and alone in its sandbox); after 10 s without a
///   call it is killed.
/// - `processes` (8), `open_files` (64): each sandbox's `RLIMIT_NPROC` (and its cgroup's
///   `pids.max`) and `RLIMIT_NOFILE`. `max_memory` bounds each process's address space and,
///   where the sandbox has a cgroup, the whole tree's memory; without one a sandbox holds at
///   most `processes` times that.
/// - `max_file_bytes` (64MiB): the largest file a program may write (`RLIMIT_FSIZE`; with
///   read-write folders, at most `[policy.files] max_bytes`).
/// - `tmp_size` (8MiB): the private `/tmp` of each sandbox.
/// - `host_requests_per_second` (1000): host requests (`kv.get`, `log`, ...) the calls of one
///   install may make together, with a burst of one second's worth. Each is served by the
///   host's own threads, outside the sandbox's cpu group, so a call that runs out is ended
///   (a trap) and calling again does not refill it.
/// - `writable_mounts` (default false): whether a process may be granted read-write folders.
///   A component's writes are charged to the file quota one by one; a process writes through
///   the kernel, so its folders are measured before each call instead (a call over the quota
///   is refused), during it (a call that goes over is killed) and after it, and one call can
///   overshoot by what it writes before a measure sees it (the host measures as soon as an
///   inotify watch reports growth that may pass the quota; each file at most the quota;
///   direct I/O is refused in the sandbox, so no write outlives the kill).
///   Off unless the operator accepts that.
/// - `interpreters = ["/usr/bin/python3"]` (default none): the interpreters a script entry
///   (`#!/usr/bin/python3` on its first line, the path exactly as listed) may name; any other
///   entry must be a static executable. `interpreter_paths = ["/usr", "/lib", "/lib64"]`: the
///   host folders made visible (read and execute, never write) in the sandbox of every script,
///   so its interpreter and libraries load.
/// - `weaker = ["no-landlock"]`: accept running without Landlock where the kernel has none
///   (every call is then audited as running under the weaker profile). Empty by default: a
///   missing kernel feature fails the load.
///
/// The address space of each process is the extension's `max_memory`; its CPU time is its
/// `max_execution_time` rounded up to whole seconds (per process; the call's deadline stops
/// the whole tree anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPolicy {
    pub warm_calls: u32,
    pub processes: u32,
    pub open_files: u32,
    pub max_file_bytes: ByteSize,
    pub tmp_size: ByteSize,
    pub host_requests_per_second: u32,
    pub writable_mounts: bool,
    pub interpreters: Vec<String>,
    pub interpreter_paths: Vec<String>,
    pub accept_no_landlock: bool,
}

impl Default for ProcessPolicy {
    fn default() -> Self {
        ProcessPolicy {
            warm_calls: 0,
            processes: 8,
            open_files: 64,
            max_file_bytes: ByteSize::mib(64),
            tmp_size: ByteSize::mib(8),
            host_requests_per_second: DEFAULT_HOST_REQUESTS_PER_SECOND,
            writable_mounts: false,
            interpreters: Vec::new(),
            interpreter_paths: Vec::new(),
            accept_no_landlock: false,
        }
    }
}

/// The runner service's own limits (an extension's come from its manifest and the ceilings):
/// sizes of the request head, time for each phase, and each tenant's rate and concurrency.
/// `[policy.gateway]`; defaults are written on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Longest request target (path and query). Default 8 KiB; longer is 414.
    pub max_uri_bytes: ByteSize,
    /// Most request headers. Default 64; more is 431.
    pub max_headers: u32,
    /// Largest sum of header names and values. Default 16 KiB; larger is 431.
    pub max_header_bytes: ByteSize,
    /// Time for a client to send the request head. Default 10s; the connection is closed.
    pub header_timeout: Duration,
    /// Time for a client to send the body. Default 30s; longer is 408.
    pub body_timeout: Duration,
    /// Requests per second each tenant may make, and the burst above it. Default 100/s,
    /// burst 200; over is 429.
    pub tenant_rate: NonZeroU32,
    pub tenant_burst: NonZeroU32,
    /// Calls each tenant may have in flight, all its extensions together. Default 64; more
    /// is 429 (each extension's own cap is its `max_concurrent_calls`).
    pub tenant_concurrency: u32,
    /// Largest admin request (a bundle being published). Default 300 MiB.
    pub max_admin_body: ByteSize,
    /// How long a shutdown waits for calls in flight. Default 30s.
    pub shutdown_grace: Duration,
    /// Request body bytes the whole process holds in memory at once, every request together
    /// (gateway, runner and admin bodies are read whole before the call). Default 256 MiB;
    /// a request that would go over is refused with 503 and `retry-after`, and its share is
    /// given back when it ends. Without it, 64 connections of 32 MiB bodies were all held at
    /// once. A body larger than this can never be taken.
    pub max_buffered_bytes: ByteSize,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            max_uri_bytes: ByteSize::kib(8),
            max_headers: 64,
            max_header_bytes: ByteSize::kib(16),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            tenant_rate: NonZeroU32::MIN.saturating_add(99),
            tenant_burst: NonZeroU32::MIN.saturating_add(199),
            tenant_concurrency: 64,
            max_admin_body: ByteSize::mib(300),
            shutdown_grace: Duration::from_secs(30),
            max_buffered_bytes: ByteSize::mib(256),
        }
    }
}

/// What compiling one component may cost, when the host compiles in a child process (the
/// `warden` binary does): wall-clock time and writable memory of that process. A component
/// over either is refused and its compile stopped. `[policy.compile]`: `max_time`,
/// `max_memory`.
///
/// Defaults: 120s and 2GiB: a componentize-py hello (18 MB) compiles in 14-47 s with 400-460
/// MiB on 2 cores, so real components fit with room, and a compile bomb costs at most this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    pub max_time: Duration,
    pub max_memory: ByteSize,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_time: Duration::from_secs(120),
            max_memory: ByteSize::gib(2),
        }
    }
}

/// The quota of each (tenant, extension)'s read-write mounts, all of them together: bytes of
/// disk (a file counts at the larger of its length and its allocated blocks) and entries
/// (files, folders, links). `[policy.files]`: `max_bytes`, `max_entries`.
///
/// Defaults: 256MiB and 10000 entries: room for an extension's working files, while one
/// extension cannot fill the disk the host's audit log and database live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    pub max_bytes: ByteSize,
    pub max_entries: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_bytes: ByteSize::mib(256),
            max_entries: 10_000,
        }
    }
}

/// The key-value quota of each (tenant, extension), across its buckets; an entry counts as its
/// key's bytes plus its value's bytes. `[policy.kv]`: `max_key_bytes`, `max_value_bytes`,
/// `max_keys`, `max_total_bytes`.
///
/// Defaults: 1KiB keys, 1MiB values, 10000 keys, 64MiB in all: enough for state and caches,
/// small enough that one extension cannot fill the host's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    pub max_key_bytes: ByteSize,
    pub max_value_bytes: ByteSize,
    pub max_keys: u64,
    pub max_total_bytes: ByteSize,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_key_bytes: ByteSize::kib(1),
            max_value_bytes: ByteSize::mib(1),
            max_keys: 10_000,
            max_total_bytes: ByteSize::mib(64),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    pub max_memory: ByteSize,
    pub max_execution_time: Duration,
    pub max_concurrent_calls: u32,
    /// `None`: no ceiling on fuel (and fuel metering may be off).
    pub max_fuel: Option<NonZeroU64>,
    pub max_request_bytes: ByteSize,
    pub max_response_bytes: ByteSize,
}

impl Default for Policy {
    fn default() -> Self {
        let r = Profile::Relaxed.preset();
        Policy {
            profile: Profile::Standard,
            ceiling: Ceiling {
                max_memory: r.max_memory,
                max_execution_time: r.max_execution_time,
                max_concurrent_calls: r.max_concurrent_calls,
                max_fuel: None,
                max_request_bytes: r.max_request_bytes,
                max_response_bytes: r.max_response_bytes,
            },
            capabilities: Capability::ALL.to_vec(),
            allow_networks: Vec::new(),
            kv: KvLimits::default(),
            compile: CompileLimits::default(),
            gateway: GatewayLimits::default(),
            files: FileLimits::default(),
            component: ComponentPolicy::default(),
            process: ProcessPolicy::default(),
            remote: RemotePolicy::default(),
            busy_wait: Duration::from_millis(100),
        }
    }
}

/// A limit above the operator's ceiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits.{limit} = {requested} is above the operator's ceiling of {ceiling}")]
pub struct CeilingError {
    pub limit: &'static str,
    pub requested: String,
    pub ceiling: String,
}

impl Ceiling {
    /// Refuses (never clamps) limits above the ceiling, naming the first one.
    pub fn check(&self, l: &Limits) -> Result<(), CeilingError> {
        let over = |limit, requested: String, ceiling: String| {
            Err(CeilingError {
                limit,
                requested,
                ceiling,
            })
        };
        if l.max_memory > self.max_memory {
            return over(
                "max_memory",
                l.max_memory.to_string(),
                self.max_memory.to_string(),
            );
        }
        if l.max_execution_time > self.max_execution_time {
            return over(
                "max_execution_time",
                Span(l.max_execution_time).to_string(),
                Span(self.max_execution_time).to_string(),
            );
        }
        if l.max_concurrent_calls > self.max_concurrent_calls {
            return over(
                "max_concurrent_calls",
                l.max_concurrent_calls.to_string(),
                self.max_concurrent_calls.to_string(),
            );
        }
        if let Some(cap) = self.max_fuel {
            match l.max_fuel {
                Some(f) if f <= cap => {}
                Some(f) => return over("max_fuel", f.to_string(), cap.to_string()),
                None => return over("max_fuel", "0 (unmetered)".into(), cap.to_string()),
            }
        }
        if l.max_request_bytes > self.max_request_bytes {
            return over(
                "max_request_bytes",
                l.max_request_bytes.to_string(),
                self.max_request_bytes.to_string(),
            );
        }
        if l.max_response_bytes > self.max_response_bytes {
            return over(
                "max_response_bytes",
                l.max_response_bytes.to_string(),
                self.max_response_bytes.to_string(),
            );
        }
        Ok(())
    }
}

impl Policy {
    /// Parses an operator config that has only `[policy]` (see [`crate::Config`] for the
    /// whole file); unknown keys are errors.
    pub fn parse(text: &str) -> Result<Policy, TomlError> {
        let doc = Document::parse(text)?;
        let root = doc.root();
        let p = match root.get("policy") {
            Some(v) => parse_policy(&v.as_table()?)?,
            None => Policy::default(),
        };
        root.finish()?;
        Ok(p)
    }
}

/// `[policy]`.
pub(crate) fn parse_policy(t: &crate::strict::Table<'_, '_>) -> Result<Policy, TomlError> {
    let mut p = Policy::default();
    {
        {
            if let Some(v) = t.get("profile") {
                p.profile = v.parse()?;
            }
            if let Some(v) = t.get("max_memory") {
                p.ceiling.max_memory = v.parse()?;
            }
            if let Some(v) = t.get("max_execution_time") {
                p.ceiling.max_execution_time = v.parse::<Span>()?.as_duration();
            }
            if let Some(v) = t.get("max_concurrent_calls") {
                p.ceiling.max_concurrent_calls =
                    u32::try_from(v.as_u64()?).map_err(|_| v.error("too large"))?;
            }
            if let Some(v) = t.get("max_fuel") {
                p.ceiling.max_fuel = NonZeroU64::new(v.as_u64()?);
            }
            if let Some(v) = t.get("max_request_bytes") {
                p.ceiling.max_request_bytes = v.parse()?;
            }
            if let Some(v) = t.get("max_response_bytes") {
                p.ceiling.max_response_bytes = v.parse()?;
            }
            if let Some(v) = t.get("capabilities") {
                p.capabilities = v.parse_list()?;
            }
            if let Some(v) = t.get("allow_networks") {
                let mut nets: Vec<IpNet> = Vec::new();
                for item in v.as_array()? {
                    let net: IpNet = item.parse()?;
                    if net != net.trunc() {
                        return Err(item.error(format!(
                            "{net} has host bits set; did you mean {}?",
                            net.trunc()
                        )));
                    }
                    nets.push(net);
                }
                p.allow_networks = nets;
            }
            if let Some(v) = t.get("busy_wait") {
                let d = v.parse::<Span>()?.as_duration();
                if d > MAX_BUSY_WAIT {
                    return Err(v.error("must be at most 10s"));
                }
                p.busy_wait = d;
            }
            if let Some(v) = t.get("kv") {
                let kv = v.as_table()?;
                if let Some(v) = kv.get("max_key_bytes") {
                    p.kv.max_key_bytes = v.parse()?;
                }
                if let Some(v) = kv.get("max_value_bytes") {
                    p.kv.max_value_bytes = v.parse()?;
                }
                if let Some(v) = kv.get("max_keys") {
                    p.kv.max_keys = v.as_u64()?;
                }
                if let Some(v) = kv.get("max_total_bytes") {
                    p.kv.max_total_bytes = v.parse()?;
                }
                kv.finish_ref()?;
            }
            if let Some(v) = t.get("files") {
                let files = v.as_table()?;
                if let Some(v) = files.get("max_bytes") {
                    p.files.max_bytes = v.parse()?;
                }
                if let Some(v) = files.get("max_entries") {
                    p.files.max_entries = v.as_u64()?;
                }
                files.finish_ref()?;
            }
            if let Some(v) = t.get("compile") {
                let compile = v.as_table()?;
                if let Some(v) = compile.get("max_time") {
                    p.compile.max_time = v.parse::<Span>()?.as_duration();
                    if p.compile.max_time < Duration::from_secs(1) {
                        return Err(v.error(
                            "at least 1s: a shorter limit refuses every component, even a tiny one",
                        ));
                    }
                }
                if let Some(v) = compile.get("max_memory") {
                    p.compile.max_memory = v.parse()?;
                    if p.compile.max_memory < ByteSize::mib(64) {
                        return Err(v.error(
                            "at least 64MiB: the compiler itself needs that much before it reads a component",
                        ));
                    }
                }
                compile.finish_ref()?;
            }
            if let Some(v) = t.get("gateway") {
                p.gateway = parse_gateway(&v.as_table()?)?;
            }
            if let Some(v) = t.get("component") {
                let c = v.as_table()?;
                let calls = c.get("warm_calls");
                if let Some(v) = &calls {
                    p.component.warm_calls =
                        u32::try_from(v.as_u64()?).map_err(|_| v.error("too large"))?;
                }
                let named = c.get("warm_extensions");
                if let Some(v) = &named {
                    let items = v.as_array()?;
                    p.component.warm_extensions = if items.len() == 1
                        && items.first().and_then(|i| i.as_str().ok()) == Some("*")
                    {
                        WarmScope::All
                    } else {
                        WarmScope::Only(v.parse_list()?)
                    };
                }
                match (&calls, &named) {
                    (Some(v), None) if p.component.warm_calls > 1 => {
                        return Err(v.error(
                            "name the extensions it applies to in warm_extensions (or [\"*\"])",
                        ));
                    }
                    (_, Some(v)) if p.component.warm_calls <= 1 => {
                        return Err(v.error("has no effect without warm_calls of 2 or more"));
                    }
                    _ => {}
                }
                c.finish_ref()?;
            }
            if let Some(v) = t.get("process") {
                p.process = parse_process(&v.as_table()?)?;
            }
            if let Some(v) = t.get("remote") {
                let r = v.as_table()?;
                if let Some(hosts) = r.get("allowed_hosts") {
                    for item in hosts.as_array()? {
                        let h: crate::host::AllowedHost = item.parse()?;
                        if h.scheme.is_some() {
                            return Err(item.error(
                                "name the host (and port) only: remote endpoints are https:// \
                                 or grpcs://",
                            ));
                        }
                        p.remote.allowed_hosts.push(h);
                    }
                }
                if let Some(v) = r.get("host_requests_per_second") {
                    p.remote.host_requests_per_second = host_requests_per_second(&v)?;
                }
                if let Some(v) = r.get("max_connections") {
                    let n = v.as_u64()?;
                    if n == 0 {
                        return Err(v.error("at least 1: a remote needs a connection"));
                    }
                    p.remote.max_connections = u32::try_from(n)
                        .ok()
                        .filter(|n| *n <= 1024)
                        .ok_or_else(|| v.error("at most 1024"))?;
                }
                r.finish_ref()?;
            }
            t.finish_ref()?;
        }
    }
    Ok(p)
}

/// `[policy.process]`.
fn parse_process(t: &crate::strict::Table<'_, '_>) -> Result<ProcessPolicy, TomlError> {
    let mut p = ProcessPolicy::default();
    let count = |v: &crate::strict::Value<'_, '_>, min: u64, why: &str| -> Result<u32, TomlError> {
        let n = v.as_u64()?;
        if n < min {
            return Err(v.error(why));
        }
        u32::try_from(n).map_err(|_| v.error("too large"))
    };
    if let Some(v) = t.get("warm_calls") {
        p.warm_calls = count(&v, 0, "")?;
    }
    if let Some(v) = t.get("processes") {
        p.processes = count(&v, 1, "at least 1: the program itself is one")?;
    }
    if let Some(v) = t.get("open_files") {
        p.open_files = count(&v, 4, "at least 4: stdin, stdout and stderr take 3")?;
    }
    if let Some(v) = t.get("max_file_bytes") {
        p.max_file_bytes = v.parse()?;
    }
    if let Some(v) = t.get("tmp_size") {
        p.tmp_size = v.parse()?;
        if p.tmp_size > ByteSize::gib(1) {
            return Err(v.error("at most 1GiB: /tmp is memory the host holds"));
        }
    }
    if let Some(v) = t.get("host_requests_per_second") {
        p.host_requests_per_second = host_requests_per_second(&v)?;
    }
    if let Some(v) = t.get("writable_mounts") {
        p.writable_mounts = v.as_bool()?;
    }
    let absolute = |v: &crate::strict::Value<'_, '_>| -> Result<Vec<String>, TomlError> {
        let mut out = Vec::new();
        for item in v.as_array()? {
            let s = item.as_str()?;
            let clean = s.starts_with('/')
                && s.len() > 1
                && s.len() <= 256
                && !s.ends_with('/')
                && s.split('/')
                    .skip(1)
                    .all(|c| !c.is_empty() && c != "." && c != "..")
                && !s.bytes().any(|b| b.is_ascii_control() || b == b' ');
            if !clean {
                return Err(
                    item.error("an absolute path without `.`, `..`, spaces or a trailing /")
                );
            }
            out.push(s.to_owned());
        }
        Ok(out)
    };
    if let Some(v) = t.get("interpreters") {
        p.interpreters = absolute(&v)?;
    }
    if let Some(v) = t.get("interpreter_paths") {
        p.interpreter_paths = absolute(&v)?;
    }
    if let Some(v) = t.get("weaker") {
        for item in v.as_array()? {
            match item.as_str()? {
                "no-landlock" => p.accept_no_landlock = true,
                _ => return Err(item.error("the only weaker profile is \"no-landlock\"")),
            }
        }
    }
    t.finish_ref()?;
    Ok(p)
}

/// `[policy.gateway]`.
fn parse_gateway(t: &crate::strict::Table<'_, '_>) -> Result<GatewayLimits, TomlError> {
    let mut g = GatewayLimits::default();
    let positive = |v: &crate::strict::Value<'_, '_>| -> Result<NonZeroU32, TomlError> {
        u32::try_from(v.as_u64()?)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| v.error("must be 1 or more (and fit in 32 bits)"))
    };
    let time = |v: &crate::strict::Value<'_, '_>| -> Result<Duration, TomlError> {
        let d = v.parse::<Span>()?.as_duration();
        if d.is_zero() {
            return Err(v.error("must be more than 0s"));
        }
        Ok(d)
    };
    if let Some(v) = t.get("max_uri_bytes") {
        g.max_uri_bytes = v.parse()?;
    }
    if let Some(v) = t.get("max_headers") {
        g.max_headers = positive(&v)?.get();
    }
    if let Some(v) = t.get("max_header_bytes") {
        g.max_header_bytes = v.parse()?;
    }
    if let Some(v) = t.get("header_timeout") {
        g.header_timeout = time(&v)?;
    }
    if let Some(v) = t.get("body_timeout") {
        g.body_timeout = time(&v)?;
    }
    if let Some(v) = t.get("tenant_rate") {
        g.tenant_rate = positive(&v)?;
    }
    if let Some(v) = t.get("tenant_burst") {
        g.tenant_burst = positive(&v)?;
    }
    if let Some(v) = t.get("tenant_concurrency") {
        g.tenant_concurrency = positive(&v)?.get();
    }
    if let Some(v) = t.get("max_admin_body") {
        g.max_admin_body = v.parse()?;
    }
    if let Some(v) = t.get("shutdown_grace") {
        g.shutdown_grace = v.parse::<Span>()?.as_duration();
    }
    if let Some(v) = t.get("max_buffered_bytes") {
        g.max_buffered_bytes = v.parse()?;
        if g.max_buffered_bytes.bytes() == 0 {
            return Err(v.error("must be more than 0 bytes"));
        }
    }
    t.finish_ref()?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_section() {
        assert_eq!(Policy::default().process, ProcessPolicy::default());
        let p = Policy::parse(
            "[policy.process]\nwarm_calls = 100\nprocesses = 8\nopen_files = 16\nmax_file_bytes = \"1MiB\"\ntmp_size = \"2MiB\"\nhost_requests_per_second = 50\nweaker = [\"no-landlock\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.process,
            ProcessPolicy {
                warm_calls: 100,
                processes: 8,
                open_files: 16,
                max_file_bytes: ByteSize::mib(1),
                tmp_size: ByteSize::mib(2),
                host_requests_per_second: 50,
                writable_mounts: false,
                interpreters: Vec::new(),
                interpreter_paths: Vec::new(),
                accept_no_landlock: true,
            }
        );
        for (bad, key) in [
            ("weaker = [\"no-seccomp\"]", "policy.process.weaker"),
            ("open_files = 3", "policy.process.open_files"),
            ("processes = 0", "policy.process.processes"),
            ("tmp_size = \"2GiB\"", "policy.process.tmp_size"),
            (
                "host_requests_per_second = 0",
                "policy.process.host_requests_per_second",
            ),
            (
                "host_requests_per_second = 1000001",
                "policy.process.host_requests_per_second",
            ),
            ("warm = 1", "policy.process.warm"),
            (
                "interpreters = [\"python3\"]",
                "policy.process.interpreters",
            ),
            (
                "interpreter_paths = [\"/usr/../etc\"]",
                "policy.process.interpreter_paths",
            ),
        ] {
            let e = Policy::parse(&format!("[policy.process]\n{bad}\n")).unwrap_err();
            assert!(e.key.starts_with(key), "{bad}: {e:?}");
        }
    }

    #[test]
    fn components_get_a_fresh_instance_per_call_unless_the_operator_says_otherwise() {
        let id = |s: &str| s.parse::<crate::ExtensionId>().unwrap();
        let (a, b) = (id("acme.a"), id("acme.b"));
        assert_eq!(Policy::default().component.warm_calls_for(&a), 1);
        let p =
            Policy::parse("[policy.component]\nwarm_calls = 50\nwarm_extensions = [\"acme.a\"]\n")
                .unwrap();
        assert_eq!(p.component.warm_calls_for(&a), 50);
        assert_eq!(p.component.warm_calls_for(&b), 1);
        let p = Policy::parse("[policy.component]\nwarm_calls = 5\nwarm_extensions = [\"*\"]\n")
            .unwrap();
        assert_eq!(p.component.warm_calls_for(&b), 5);
        for (bad, key) in [
            ("warm_calls = -1", "policy.component.warm_calls"),
            ("warm_calls = \"50\"", "policy.component.warm_calls"),
            ("warm_calls = 4294967296", "policy.component.warm_calls"),
            ("warm_calls = 5", "policy.component.warm_calls"),
            (
                "warm_extensions = [\"*\"]",
                "policy.component.warm_extensions",
            ),
            (
                "warm_calls = 5\nwarm_extensions = [\"not an id\"]",
                "policy.component.warm_extensions",
            ),
            (
                "warm_calls = 5\nwarm_extensions = [\"*\", \"acme.a\"]",
                "policy.component.warm_extensions",
            ),
            ("warm = 5", "policy.component.warm"),
        ] {
            let e = Policy::parse(&format!("[policy.component]\n{bad}\n")).unwrap_err();
            assert!(e.key.starts_with(key), "{bad}: {e:?}");
        }
    }

    #[test]
    fn remote_connections_are_bounded() {
        assert_eq!(Policy::default().remote.max_connections, 8);
        let p =
            Policy::parse("[policy.remote]\nmax_connections = 2\nhost_requests_per_second = 7\n")
                .unwrap();
        assert_eq!(p.remote.max_connections, 2);
        assert_eq!(p.remote.host_requests_per_second, 7);
        assert_eq!(Policy::default().remote.host_requests_per_second, 1000);
        for bad in ["0", "1000001", "-1"] {
            let e = Policy::parse(&format!(
                "[policy.remote]\nhost_requests_per_second = {bad}\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, "policy.remote.host_requests_per_second", "{bad}");
        }
        for (bad, says) in [
            ("0", "at least 1"),
            ("1025", "at most 1024"),
            ("-1", ""),
            ("\"8\"", ""),
        ] {
            let e =
                Policy::parse(&format!("[policy.remote]\nmax_connections = {bad}\n")).unwrap_err();
            assert_eq!(e.key, "policy.remote.max_connections", "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_busy_call_waits_a_bounded_time() {
        assert_eq!(Policy::default().busy_wait, Duration::from_millis(100));
        let p = Policy::parse("[policy]\nbusy_wait = \"2s\"\n").unwrap();
        assert_eq!(p.busy_wait, Duration::from_secs(2));
        let p = Policy::parse("[policy]\nbusy_wait = \"0s\"\n").unwrap();
        assert_eq!(p.busy_wait, Duration::ZERO);
        for (bad, says) in [("\"11s\"", "at most 10s"), ("100", ""), ("\"soon\"", "")] {
            let e = Policy::parse(&format!("[policy]\nbusy_wait = {bad}\n")).unwrap_err();
            assert_eq!(e.key, "policy.busy_wait", "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn spec_example() {
        let p = Policy::parse(
            r#"[policy]
profile = "standard"
max_memory = "256MiB"
max_execution_time = "30s"
max_concurrent_calls = 64
allow_networks = ["10.20.0.0/16"]
"#,
        )
        .unwrap();
        assert_eq!(p.ceiling.max_memory, ByteSize::mib(256));
        assert_eq!(
            p.allow_networks,
            vec!["10.20.0.0/16".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn errors() {
        let e = Policy::parse("[policy]\nmax_memroy = \"1MiB\"\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("policy.max_memroy", 2));
        let e = Policy::parse("[policy]\nallow_networks = [\"10.20.0.1/16\"]\n").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        let e = Policy::parse("[policy]\nallow_networks = [\"10.20.0.0/33\"]\n").unwrap_err();
        assert_eq!(e.key, "policy.allow_networks[0]");
        assert!(Policy::parse("[server]\n").is_err());
        assert!(Policy::parse("[policy]\ncapabilities = [\"root\"]\n").is_err());
        assert_eq!(Policy::parse("").unwrap(), Policy::default());
    }

    #[test]
    fn kv_quota() {
        let p = Policy::parse(
            "[policy.kv]\nmax_key_bytes = \"256B\"\nmax_value_bytes = \"64KiB\"\nmax_keys = 100\nmax_total_bytes = \"1MiB\"\n",
        )
        .unwrap();
        assert_eq!(
            p.kv,
            KvLimits {
                max_key_bytes: ByteSize(256),
                max_value_bytes: ByteSize::kib(64),
                max_keys: 100,
                max_total_bytes: ByteSize::mib(1),
            }
        );
        let p = Policy::parse("[policy.kv]\nmax_keys = 5\n").unwrap();
        assert_eq!(p.kv.max_value_bytes, KvLimits::default().max_value_bytes);
        let e = Policy::parse("[policy.kv]\nmax_kyes = 5\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("policy.kv.max_kyes", 2));
        let e = Policy::parse("[policy.kv]\nmax_keys = \"many\"\n").unwrap_err();
        assert_eq!(e.key, "policy.kv.max_keys");
        assert!(Policy::parse("[policy.kv]\nmax_value_bytes = \"1 lot\"\n").is_err());
        assert!(Policy::parse("[policy]\nkv = 1\n").is_err());
    }

    #[test]
    fn file_quota() {
        let p = Policy::parse("[policy.files]\nmax_bytes = \"1MiB\"\nmax_entries = 50\n").unwrap();
        assert_eq!(
            p.files,
            FileLimits {
                max_bytes: ByteSize::mib(1),
                max_entries: 50,
            }
        );
        let p = Policy::parse("[policy.files]\nmax_entries = 5\n").unwrap();
        assert_eq!(p.files.max_bytes, FileLimits::default().max_bytes);
        assert_eq!(Policy::default().files.max_bytes, ByteSize::mib(256));
        assert_eq!(Policy::default().files.max_entries, 10_000);
        let e = Policy::parse("[policy.files]\nmax_byte = \"1MiB\"\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("policy.files.max_byte", 2));
        let e = Policy::parse("[policy.files]\nmax_entries = \"many\"\n").unwrap_err();
        assert_eq!(e.key, "policy.files.max_entries");
        assert!(Policy::parse("[policy.files]\nmax_bytes = \"1 lot\"\n").is_err());
        assert!(Policy::parse("[policy]\nfiles = 1\n").is_err());
    }

    #[test]
    fn compile_limits() {
        let p = Policy::parse("[policy.compile]\nmax_time = \"5s\"\nmax_memory = \"512MiB\"\n")
            .unwrap();
        assert_eq!(
            p.compile,
            CompileLimits {
                max_time: Duration::from_secs(5),
                max_memory: ByteSize::mib(512),
            }
        );
        assert_eq!(Policy::default().compile.max_time, Duration::from_secs(120));
        assert_eq!(Policy::default().compile.max_memory, ByteSize::gib(2));
        let e = Policy::parse("[policy.compile]\nmax_tmie = \"5s\"\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("policy.compile.max_tmie", 2));
        assert!(Policy::parse("[policy.compile]\nmax_time = \"soon\"\n").is_err());
        assert!(Policy::parse("[policy.compile]\nmax_memory = 5\n").is_err());
        let e = Policy::parse("[policy.compile]\nmax_time = \"0s\"\n").unwrap_err();
        assert!(e.to_string().contains("at least 1s"), "{e}");
        let e = Policy::parse("[policy.compile]\nmax_memory = \"1MiB\"\n").unwrap_err();
        assert!(e.to_string().contains("at least 64MiB"), "{e}");
    }

    #[test]
    fn gateway_limits() {
        let p = Policy::parse(
            "[policy.gateway]\nbody_timeout = \"2s\"\ntenant_rate = 5\ntenant_burst = 1\nmax_uri_bytes = \"1KiB\"\n",
        )
        .unwrap();
        assert_eq!(p.gateway.body_timeout, Duration::from_secs(2));
        assert_eq!(p.gateway.tenant_rate.get(), 5);
        assert_eq!(p.gateway.tenant_burst.get(), 1);
        assert_eq!(p.gateway.max_uri_bytes, ByteSize::kib(1));
        assert_eq!(p.gateway.max_headers, 64);
        assert!(Policy::parse("[policy.gateway]\ntenant_rate = 0\n").is_err());
        assert!(Policy::parse("[policy.gateway]\nbody_timeout = \"0s\"\n").is_err());
        let e = Policy::parse("[policy.gateway]\nrate = 5\n").unwrap_err();
        assert_eq!(e.key, "policy.gateway.rate");
    }
}
