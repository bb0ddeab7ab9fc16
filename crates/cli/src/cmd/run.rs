//! `warden run`: verify a bundle, load it with the grant and policy, invoke it once.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use warden_call::LogLine;
use warden_host::{Grant, Host, SecretName, SecretValue, TenantName, TrustBundle};

use crate::files::read_bounded;

/// What to send.
pub enum Invocation {
    Call {
        method: String,
        input: Vec<u8>,
    },
    Http {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

pub struct RunArgs {
    pub bundle: PathBuf,
    pub trust: PathBuf,
    pub sig: Option<PathBuf>,
    pub data: PathBuf,
    pub audit_key: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub grant: Grant,
    /// `--secret` values for this run only: never written to the data dir, never echoed.
    pub secrets: Vec<(SecretName, SecretValue)>,
    /// `--client-cert`, `--client-key` (PEM text), for a remote extension, this run only.
    pub client_identity: Option<(String, String)>,
    pub invocation: Invocation,
}

/// The most bytes of a client certificate chain or key file read.
const MAX_PEM_BYTES: u64 = 64 << 10;

/// Reads `--client-cert` and `--client-key` (PEM files, bounded).
pub fn read_identity(cert: &std::path::Path, key: &std::path::Path) -> Result<(String, String)> {
    let text = |p: &std::path::Path, what: &str| -> Result<String> {
        let bytes =
            read_bounded(p, MAX_PEM_BYTES).with_context(|| format!("{what} {}", p.display()))?;
        String::from_utf8(bytes).map_err(|_| anyhow!("{what} {}: not PEM text", p.display()))
    };
    Ok((text(cert, "--client-cert")?, text(key, "--client-key")?))
}

/// A mistake in the command line (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The run was stopped by a signal (`SIGINT`, `SIGTERM`) during its call: the call was stopped
/// (its record says so, once stored). Exit code 128 + the signal's number, as a shell reports a
/// process the signal killed.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted(pub &'static str, pub u8);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}: the call was stopped", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Watches for `SIGINT` and `SIGTERM` from before the call until the process ends, on a task of
/// `runtime` (not the thread that runs the call: that one may be held while a dropped call's
/// program dies or its records wait for the log). The first signal is reported to the call
/// ([`unless_interrupted`]); a second ends the process at once, as `kill -9` would (the audit
/// log recovers from a write cut short; the last records may be lost, and the message says
/// so). A signal this process was started ignoring (a script's background job's `SIGINT`)
/// stays ignored, as it was before warden listened for it.
fn watch_interrupts(
    runtime: &tokio::runtime::Runtime,
) -> tokio::sync::watch::Receiver<Option<Interrupted>> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let (tx, rx) = tokio::sync::watch::channel(None);
    // Listening from now on: registered here, not when the task first runs.
    let _in = runtime.enter();
    let listen = |kind: SignalKind| {
        let ignored = started_ignoring(kind.as_raw_value());
        (!ignored).then(|| signal(kind).ok()).flatten()
    };
    async fn next(s: &mut Option<Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let (mut int, mut term) = (
        listen(SignalKind::interrupt()),
        listen(SignalKind::terminate()),
    );
    runtime.spawn(async move {
        loop {
            let got = tokio::select! {
                () = next(&mut int) => Interrupted("SIGINT", 2),
                () = next(&mut term) => Interrupted("SIGTERM", 15),
            };
            if tx.borrow().is_some() {
                eprintln!(
                    "error: interrupted again by {}: exiting without waiting for the last audit records, which may be lost",
                    got.0
                );
                std::process::exit(128 + i32::from(got.1));
            }
            tx.send_replace(Some(got));
        }
    });
    rx
}

/// Runs `call` unless a first signal comes ([`watch_interrupts`]): then `call` is dropped where
/// it is (its program killed, its record written as a stopped call's) and the signal is the
/// result. A call that has ended is its own result, even if a signal came meanwhile.
async fn unless_interrupted<F: std::future::Future>(
    signals: &mut tokio::sync::watch::Receiver<Option<Interrupted>>,
    call: F,
) -> Result<F::Output, Interrupted> {
    let mut call = std::pin::pin!(call);
    tokio::select! {
        biased;
        out = &mut call => return Ok(out),
        got = signals.wait_for(Option::is_some) => {
            if let Some(signal) = got.ok().and_then(|g| *g) {
                return Err(signal);
            }
        }
    }
    // The watch ended (its runtime is going): the call goes on.
    Ok(call.await)
}

/// Stores the run's last records: those of a call stopped by a signal (written on the
/// runtime: waited for, at most [`STOPPED_RECORDS_WAIT`]), a warm process's refusals after its
/// answer, refusals counted but not yet summed up; then waits as long again for the records
/// already given to the log (a stopped call's, dropped while it committed). Each wait is long
/// only while another process holds the audit log locked; a second signal meanwhile ends the
/// process ([`watch_interrupts`]). What could not be stored by then is lost with the process:
/// the error says so.
fn close(runtime: &tokio::runtime::Runtime, host: &Host) -> Result<()> {
    let unwritten = runtime.block_on(host.settle_records(STOPPED_RECORDS_WAIT));
    let mut problems = Vec::new();
    if unwritten > 0 {
        problems.push(format!(
            "{unwritten} record(s) of calls stopped part-way were not written within {} s",
            STOPPED_RECORDS_WAIT.as_secs()
        ));
    }
    if let Err(e) = host.close() {
        problems.push(warden_call::text::chain(&e));
    }
    if let Err(e) = host.settle_audit(STOPPED_RECORDS_WAIT) {
        problems.push(warden_call::text::chain(&e));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// Whether signal number `signal` is ignored now (`SigIgn` in /proc/self/status), before
/// this process listens for it.
fn started_ignoring(signal: i32) -> bool {
    let Some(bit) = u32::try_from(signal).ok().and_then(|s| s.checked_sub(1)) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|mask| mask.checked_shr(bit).is_some_and(|m| m & 1 == 1))
}

/// How long the records of a call stopped by a signal may take to be written before exiting.
const STOPPED_RECORDS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Parses `--secret NAME=VALUE` or `NAME=@FILE` (a regular file of at most
/// [`warden_secrets::MAX_SECRET_BYTES`]; one trailing newline is dropped, as `echo` adds one).
/// Errors never quote the value, nor a name that failed to parse (it may be a value typed in
/// the wrong place).
pub fn parse_secret(arg: &str) -> Result<(SecretName, SecretValue)> {
    let usage = |m: &str| anyhow!(UsageError(format!("--secret {m}")));
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| usage("takes NAME=VALUE or NAME=@FILE"))?;
    let name: SecretName = name.parse().map_err(|_| {
        usage("NAME (before '=') must be 1 to 128 characters of A-Z, a-z, 0-9 and '_'")
    })?;
    let value = match value.strip_prefix('@') {
        Some(path) => {
            let mut bytes = read_bounded(
                std::path::Path::new(path),
                warden_secrets::MAX_SECRET_BYTES as u64 + 2,
            )
            .with_context(|| format!("--secret {name}"))?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            SecretValue::from_bytes(bytes)
        }
        None => SecretValue::new(value.to_string()),
    }
    .map_err(|e| usage(&format!("{name}: {e}")))?;
    Ok((name, value))
}

/// A request body or input file is read whole; this bounds it before the extension's own limit.
const MAX_BODY_FILE_BYTES: u64 = 256 << 20;

/// Reads `@FILE` (bounded, regular files only) or takes the text as given.
pub fn read_arg_or_file(value: &str) -> Result<Vec<u8>> {
    match value.strip_prefix('@') {
        Some(path) => read_bounded(std::path::Path::new(path), MAX_BODY_FILE_BYTES),
        None => Ok(value.as_bytes().to_vec()),
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let trust = TrustBundle::read_file(&args.trust)
        .with_context(|| format!("reading trust bundle {}", args.trust.display()))?;
    let config = crate::storage::read_config(args.config.as_deref())?;
    let opened = crate::storage::open(
        &config,
        &args.data,
        args.audit_key.as_deref(),
        crate::storage::Use::Command,
    )?;
    let builder = opened.apply(
        super::compile_in_child(Host::builder())
            .trust(trust)
            .policy(config.policy),
        &args.data,
        args.audit_key.as_deref(),
    );
    let host = builder.build().context("starting the host")?;
    let tenant = host.default_tenant();
    if let Some((cert, key)) = &args.client_identity {
        // Taken at load: set before it, for the bundle's id.
        let id =
            warden_bundle::Bundle::read_file(&args.bundle, &warden_bundle::BundleLimits::default())
                .with_context(|| format!("reading {}", args.bundle.display()))?
                .manifest()
                .extension
                .id
                .clone();
        tenant
            .set_transient_client_identity(&id, cert, key)
            .context("--client-cert")?;
    }
    let ticker =
        crate::ticker::Ticker::start(format!("verifying and compiling {}", args.bundle.display()));
    let info = tenant
        .load_file(&args.bundle, args.sig.as_deref(), &args.grant)
        .with_context(|| format!("loading {}", args.bundle.display()))?;
    drop(ticker);
    if !args.secrets.is_empty() {
        give_secrets(&host, &args.bundle, &info.id, args.secrets)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let terminal = std::io::stdout().is_terminal();
    let mut signals = watch_interrupts(&runtime);
    let done = invoke(
        &runtime,
        &mut signals,
        &tenant,
        &info.id,
        args.invocation,
        terminal,
    );
    let closed = close(&runtime, &host);
    // Its sandbox ended with the host: the folders its cgroup was made in go too.
    drop(tenant);
    drop(host);
    drop(runtime);
    warden_host::remove_sandbox_folders();
    // Records that could not be stored are said to be lost, whatever else went wrong.
    match (done, closed) {
        (done, Ok(())) => done,
        (Ok(()), Err(e)) => Err(
            e.context("the last audit records were not stored (they are lost with this process)")
        ),
        (Err(e), Err(c)) => Err(e.context(format!(
            "the last audit records were not stored (they are lost with this process): {c}"
        ))),
    }
}

/// Makes the run's one call and writes what it answered.
fn invoke(
    runtime: &tokio::runtime::Runtime,
    signals: &mut tokio::sync::watch::Receiver<Option<Interrupted>>,
    tenant: &warden_host::Tenant,
    id: &warden_host::ExtensionId,
    invocation: Invocation,
    terminal: bool,
) -> Result<()> {
    match invocation {
        Invocation::Call { method, input } => {
            let called = runtime.block_on(unless_interrupted(
                signals,
                tenant.call(id, &method, &input),
            ))?;
            let called = called.map_err(|f| {
                show_logs(&f.logs);
                anyhow!(f)
            })?;
            show_logs(&called.logs);
            write_out(&called.value, terminal)?;
        }
        Invocation::Http {
            method,
            path,
            headers,
            body,
        } => {
            let mut req = http::Request::builder()
                .method(method.as_str())
                .uri(path.as_str());
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req
                .body(Bytes::from(body))
                .context("building the HTTP request")?;
            let called = runtime
                .block_on(unless_interrupted(signals, tenant.call_http(id, req)))?
                .map_err(|f| {
                    show_logs(&f.logs);
                    anyhow!(f)
                })?;
            show_logs(&called.logs);
            let resp = called.value;
            let mut head = format!("{:?} {}\n", resp.version(), resp.status());
            for (k, v) in resp.headers() {
                head.push_str(&format!(
                    "{k}: {}\n",
                    warden_call::text::escape(v.as_bytes())
                ));
            }
            head.push('\n');
            write_out(head.as_bytes(), false)?;
            write_out(resp.body(), terminal)?;
        }
    }
    Ok(())
}

/// Hands the `--secret` values to the loaded extension for this run. A name its manifest does
/// not declare is a usage error naming only the name; a declared but ungranted one is passed
/// on and denied at call time like any other (and audited).
fn give_secrets(
    host: &Host,
    bundle: &std::path::Path,
    id: &warden_host::ExtensionId,
    secrets: Vec<(SecretName, SecretValue)>,
) -> Result<()> {
    // The verified bundle stays inside the host; its manifest's names are read again here,
    // only to check the command line (the runtime enforces the grant either way).
    let declared =
        warden_bundle::Bundle::read_file(bundle, &warden_bundle::BundleLimits::default())
            .with_context(|| format!("reading {}", bundle.display()))?
            .manifest()
            .permissions
            .secrets
            .clone();
    let tenant = host.tenant(&TenantName::default_tenant());
    for (name, value) in secrets {
        if !declared.contains(&name) {
            return Err(anyhow!(UsageError(format!(
                "--secret {name}: {id} does not declare a secret named {name} (permissions.secrets)"
            ))));
        }
        tenant.put_transient_secret(id, &name, value)?;
    }
    Ok(())
}

fn show_logs(logs: &[LogLine]) {
    for l in logs {
        let s = l.stream.label();
        match &l.context {
            Some(c) if !c.is_empty() => eprintln!("[extension {s}] {c}: {}", l.text),
            _ => eprintln!("[extension {s}] {}", l.text),
        }
    }
}

/// Extension output is untrusted: on a terminal, control characters are escaped so it cannot
/// drive the terminal; into a pipe or file it is written as is.
fn write_out(bytes: &[u8], terminal: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if terminal {
        for line in bytes.split(|&b| b == b'\n') {
            writeln!(stdout, "{}", warden_call::text::escape(line))?;
        }
    } else {
        stdout.write_all(bytes)?;
        if !bytes.ends_with(b"\n") && !bytes.is_empty() {
            stdout.write_all(b"\n")?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Parses `"METHOD PATH"`.
pub fn parse_http(spec: &str) -> Result<(String, String)> {
    let (m, p) = spec
        .split_once(' ')
        .ok_or_else(|| anyhow!("--http takes \"METHOD PATH\", e.g. \"GET /hello\""))?;
    let m = m.trim();
    let p = p.trim();
    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        bail!("--http method {m:?} must be an upper-case HTTP method such as GET");
    }
    if !p.starts_with('/') {
        bail!("--http path {p:?} must start with '/'");
    }
    Ok((m.to_string(), p.to_string()))
}

/// Parses `K:V`.
pub fn parse_header(h: &str) -> Result<(String, String)> {
    let (k, v) = h
        .split_once(':')
        .ok_or_else(|| anyhow!("--header takes K:V, got {h:?}"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}
