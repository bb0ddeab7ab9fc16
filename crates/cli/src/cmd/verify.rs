use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use warden_audit::{AuditLog, Event, Outcome, Record};
use warden_bundle::{Bundle, BundleLimits};
use warden_trust::{Envelope, TrustBundle, verify};

use crate::describe;

/// The default data dir, whose audit log records failures only if it already exists.
const DEFAULT_DATA: &str = "./warden-data";

pub fn run(
    bundle_path: &Path,
    trust_path: &Path,
    sig: Option<PathBuf>,
    data: Option<&Path>,
    config: Option<&Path>,
    audit_key: Option<&Path>,
) -> Result<()> {
    let config = crate::storage::read_config(config)?;
    let sig = sig.unwrap_or_else(|| super::default_sig(bundle_path));
    let trust = TrustBundle::read_file(trust_path)
        .with_context(|| format!("reading trust bundle {}", trust_path.display()))?;
    let verified = (|| -> Result<_> {
        let envelope = Envelope::read_file(&sig)
            .with_context(|| format!("reading signature {}", sig.display()))?;
        let bundle = Bundle::read_file(bundle_path, &BundleLimits::default())
            .with_context(|| format!("reading bundle {}", bundle_path.display()))?;
        verify(bundle, &envelope, &trust)
            .with_context(|| format!("verification of {} failed", bundle_path.display()))
    })();
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            record_failure(bundle_path, data, &config, audit_key, &e);
            return Err(e);
        }
    };
    let m = verified.manifest();
    let e = &m.extension;
    outln!("verified: {} {}", e.id, e.version);
    outln!("publisher: {}", e.publisher);
    outln!("content hash: {}", verified.content_hash());
    for s in verified.signers() {
        outln!("signed by: {s}");
    }
    outln!("signed at: {}", verified.statement().signed_at());
    outln!("kind: {} (entry {})", describe::kind(m), e.entry);
    outln!("permissions requested:");
    for line in describe::permissions(&m.permissions) {
        outln!("  - {line}");
    }
    Ok(())
}

/// Appends a `verification-failure` record to the audit log: the shared one of `[storage]`,
/// or the data dir's (the one given, or the default one if it exists). The verification error
/// is what the command reports; a record that cannot be written adds a warning.
fn record_failure(
    bundle: &Path,
    data: Option<&Path>,
    config: &warden_manifest::Config,
    audit_key: Option<&Path>,
    error: &anyhow::Error,
) {
    let record = Record::new(
        Event::VerificationFailure,
        format!("verify-{}", std::process::id()),
    )
    .with_target(bundle.display())
    .with_outcome(Outcome::Denied)
    .with_message(format!("{error:#}"));
    match crate::storage::shared_audit_sink(config) {
        Ok(None) => {}
        Ok(Some(log)) => {
            if let Err(e) = log.append(record) {
                eprintln!(
                    "warning: the failure could not be recorded in the shared audit log: {}",
                    warden_audit::sanitize(&e.to_string())
                );
            }
            return;
        }
        Err(e) => {
            eprintln!(
                "warning: the failure could not be recorded: {}",
                warden_audit::sanitize(&format!("{e:#}"))
            );
            return;
        }
    }
    let dir = match data {
        Some(d) => d.to_path_buf(),
        None if Path::new(DEFAULT_DATA).join("audit").is_dir() => PathBuf::from(DEFAULT_DATA),
        None => return,
    };
    if let Err(e) = AuditLog::open_in(&dir, audit_key).and_then(|log| log.append(record).map(drop))
    {
        eprintln!(
            "warning: the failure could not be recorded in {}: {}",
            dir.join("audit").display(),
            warden_audit::sanitize(&e.to_string())
        );
    }
}
