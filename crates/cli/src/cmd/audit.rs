//! `warden audit`: list, follow or verify the audit log in `DATA/audit`.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use warden_audit::{ChainError, Filter, Reader, StoredRecord};

/// How often `--follow` looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `warden audit [--data DIR] [--tenant NAME] [--follow] [--verify] [--json]`.
///
/// `--verify` checks the whole chain and prints a summary (the other flags do not apply).
/// Otherwise records are listed oldest first, one per line: readable by default, the stored
/// JSON lines with `--json`. `--follow` keeps printing records as they are appended (until
/// Ctrl-C), and waits for the log to appear if there is none yet.
pub fn run(
    data: &Path,
    tenant: Option<&str>,
    follow: bool,
    verify: bool,
    json: bool,
) -> Result<()> {
    let dir = data.join("audit");
    if verify {
        let report = warden_audit::verify(&dir)
            .with_context(|| format!("audit log in {} failed verification", dir.display()))?;
        println!(
            "audit log ok: {} records, last hash {}",
            report.records, report.last_hash
        );
        return Ok(());
    }

    let filter = Filter {
        tenant: tenant.map(str::to_owned),
        ..Filter::default()
    };
    let mut reader = open(&dir, filter, follow)?;
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        for item in &mut reader {
            let stored =
                item.with_context(|| format!("reading the audit log in {}", dir.display()))?;
            let written = if json {
                writeln!(out, "{}", stored.line)
            } else {
                writeln!(out, "{}", human(&stored))
            };
            if !keep_writing(written)? {
                return Ok(());
            }
        }
        if !keep_writing(out.flush())? || !follow {
            return Ok(());
        }
        thread::sleep(FOLLOW_POLL);
    }
}

/// Opens the log; with `follow`, waits for it to be created.
fn open(dir: &Path, filter: Filter, follow: bool) -> Result<Reader> {
    loop {
        match warden_audit::read(dir, filter.clone()) {
            Err(ChainError::Missing { .. }) if follow => thread::sleep(FOLLOW_POLL),
            other => {
                return other
                    .with_context(|| format!("reading the audit log in {}", dir.display()));
            }
        }
    }
}

/// `Ok(false)` when the reader went away (`warden audit | head`): stop quietly.
fn keep_writing(result: io::Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

/// One record on one line. Every text field was escaped when it was stored and is checked again
/// when read, so nothing here can reach the terminal as a control character.
fn human(stored: &StoredRecord) -> String {
    let r = &stored.record;
    let mut line = format!("{} #{} {} {}", r.time(), stored.seq, r.event(), r.outcome());
    match (r.extension(), r.version()) {
        (Some(ext), Some(v)) => line.push_str(&format!(" {ext}@{v}")),
        (Some(ext), None) => line.push_str(&format!(" {ext}")),
        (None, _) => {}
    }
    if let Some(t) = r.tenant() {
        line.push_str(&format!(" tenant={t}"));
    }
    line.push_str(&format!(" req={}", r.request_id()));
    if let Some(ms) = r.duration_ms() {
        line.push_str(&format!(" {ms}ms"));
    }
    if let Some(c) = r.capability() {
        line.push_str(&format!(" cap={c}"));
    }
    if let Some(t) = r.target() {
        line.push_str(&format!(" target={t}"));
    }
    if let Some(d) = r.decision() {
        line.push_str(&format!(" {d}"));
    }
    if let Some(f) = r.fuel() {
        line.push_str(&format!(" fuel={f}"));
    }
    if let Some(m) = r.memory_peak_bytes() {
        line.push_str(&format!(" mem={m}B"));
    }
    if let Some(e) = r.egress_bytes() {
        line.push_str(&format!(" egress={e}B"));
    }
    if let Some(m) = r.message() {
        line.push_str(&format!(" | {m}"));
    }
    line
}
