//! `warden run`: verify a bundle, load it with the grant and policy, invoke it once.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use warden_host::{Grant, Host, Policy, Stream, TrustBundle};
use warden_runtime::LogLine;

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
    pub config: Option<PathBuf>,
    pub grant: Grant,
    pub invocation: Invocation,
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
    let policy = match &args.config {
        Some(path) => {
            let bytes = read_bounded(path, warden_manifest::strict::MAX_DOCUMENT_BYTES as u64)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8", path.display()))?;
            Policy::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Policy::default(),
    };
    let host = Host::builder()
        .trust(trust)
        .policy(policy)
        .data_dir(&args.data)
        .build()
        .context("starting the host")?;
    let info = host
        .load_file(&args.bundle, args.sig.as_deref(), &args.grant)
        .with_context(|| format!("loading {}", args.bundle.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let terminal = std::io::stdout().is_terminal();
    match args.invocation {
        Invocation::Call { method, input } => {
            let called = runtime.block_on(host.call_detailed(&info.id, &method, &input));
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
                .block_on(host.call_http_detailed(&info.id, req))
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
                    warden_runtime::capture::escape(v.as_bytes())
                ));
            }
            head.push('\n');
            write_out(head.as_bytes(), false)?;
            write_out(resp.body(), terminal)?;
        }
    }
    Ok(())
}

fn show_logs(logs: &[LogLine]) {
    for l in logs {
        let s = match l.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        eprintln!("[extension {s}] {}", l.text);
    }
}

/// Extension output is untrusted: on a terminal, control characters are escaped so it cannot
/// drive the terminal; into a pipe or file it is written as is.
fn write_out(bytes: &[u8], terminal: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if terminal {
        for line in bytes.split(|&b| b == b'\n') {
            writeln!(stdout, "{}", warden_runtime::capture::escape(line))?;
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
