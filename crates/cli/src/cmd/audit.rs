//! `warden audit`: list, follow or verify the audit log in `DATA/audit`, through its
//! [`AuditSource`] (the commands do not depend on where the log is stored).

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use warden_audit::{
    AUDIT_KEY_FILE, AuditKey, AuditSource, ChainError, Filter, HeadMac, Reader, StoredRecord,
    checkpoint,
};

/// How often `--follow` looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `warden audit [--data DIR] [--tenant NAME] [--request ID] [--follow] [--json]`: the
/// records `filter` keeps, oldest first, one per line: readable by default, the stored JSON
/// lines with `--json`. `--follow` keeps printing records as they are appended (until
/// Ctrl-C), and waits for the log to appear if there is none yet.
pub fn run(source: &dyn AuditSource, filter: Filter, follow: bool, json: bool) -> Result<()> {
    let mut reader = open(source, filter, follow)?;
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        for item in &mut reader {
            let stored =
                item.with_context(|| format!("reading the audit log in {}", source.location()))?;
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

/// Most bytes of a checkpoints file read by `--verify --checkpoints` (a line is under 300).
const MAX_CHECKPOINTS_BYTES: u64 = 64 << 20;

/// The audit key to verify with: the one given (it must exist), or `DATA/audit.key` if there
/// is one. Never creates a key.
pub(crate) fn key(data: &Path, given: Option<&Path>) -> Result<Option<AuditKey>> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let p = data.join(AUDIT_KEY_FILE);
            if p.symlink_metadata().is_err() {
                return Ok(None);
            }
            p
        }
    };
    let key = AuditKey::load(&path)
        .with_context(|| format!("reading the audit key {}", path.display()))?;
    Ok(Some(key))
}

/// `warden audit --verify [--checkpoints FILE]`: checks the whole chain, the head's MAC when
/// there is a key, and every checkpoint in FILE; prints a summary.
pub fn verify(
    source: &dyn AuditSource,
    data: &Path,
    key_file: Option<&Path>,
    checkpoints: Option<&Path>,
) -> Result<()> {
    let key = key(data, key_file)?;
    // Not taken for tampering: a log that could not be locked was not checked at all.
    let failed = |e: anyhow::Error| -> anyhow::Error {
        if super::busy(&e) {
            e.context(format!(
                "audit log in {} not verified: another process held its lock (try again)",
                source.location()
            ))
        } else {
            e.context(format!(
                "audit log in {} failed verification",
                source.location()
            ))
        }
    };
    let (report, held) = match checkpoints {
        Some(file) => {
            let bytes = crate::files::read_bounded(file, MAX_CHECKPOINTS_BYTES)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8", file.display()))?;
            let r = checkpoint::check_from(source, key.as_ref(), &text)
                .map_err(|e| failed(e.into()))?;
            (r.log, Some((r.checkpoints, r.macs_checked)))
        }
        None => (
            source
                .verify(key.as_ref(), &mut |_, _| {})
                .map_err(|e| failed(e.into()))?,
            None,
        ),
    };
    outln!(
        "audit log ok: {} records, last hash {}",
        report.records,
        report.last_hash
    );
    match report.head_mac {
        HeadMac::Checked => outln!("head: MAC checked with the audit key"),
        HeadMac::Unchecked => outln!(
            "head: has a MAC, NOT checked (no audit key: give --audit-key); records cut from the end would not show"
        ),
        HeadMac::None => outln!(
            "head: no MAC (the log is not keyed); records cut from the end would not show without a checkpoint"
        ),
    }
    if let Some((n, macs)) = held {
        outln!("checkpoints: {n} hold ({macs} with their MAC checked)");
    }
    Ok(())
}

/// `warden audit --checkpoint FILE|-`: verifies the log, then appends (and fsyncs) one
/// checkpoint line to FILE, or prints it.
pub fn checkpoint(
    source: &dyn AuditSource,
    data: &Path,
    key_file: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let key = key(data, key_file)?;
    let cp = checkpoint::take_from(source, key.as_ref())
        .with_context(|| format!("audit log in {} failed verification", source.location()))?;
    let line = format!("{}\n", cp.to_line());
    if out == Path::new("-") {
        out!("{line}");
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    outln!(
        "checkpoint: record {} (hash {}) appended to {}",
        cp.seq,
        cp.hash,
        out.display()
    );
    Ok(())
}

/// Opens the log; with `follow`, waits for it to be created.
fn open(source: &dyn AuditSource, filter: Filter, follow: bool) -> Result<Reader> {
    loop {
        match source.read(filter.clone()) {
            Err(ChainError::Missing { .. }) if follow => thread::sleep(FOLLOW_POLL),
            other => {
                return other
                    .with_context(|| format!("reading the audit log in {}", source.location()));
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
