//! `warden migrate --data DIR --config FILE`: see `crate::migrate`.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use warden_manifest::Storage;

use crate::migrate::Mode;

/// Most bytes of a checkpoints file (as `warden audit --verify --checkpoints` reads it).
const MAX_CHECKPOINTS_BYTES: u64 = 64 << 20;

pub fn run(
    data: &Path,
    config: &Path,
    audit_key: Option<&Path>,
    checkpoints: Option<&Path>,
    check_only: bool,
) -> Result<()> {
    let config = crate::storage::read_config(Some(config))?;
    let Storage::Shared(target) = &config.storage else {
        return Err(anyhow!(super::UsageError(
            "the config has no [storage] url: `warden migrate` copies to the shared storage it names"
                .into()
        )));
    };
    let checkpoints = checkpoints
        .map(|file| {
            let bytes = crate::files::read_bounded(file, MAX_CHECKPOINTS_BYTES)?;
            String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", file.display()))
        })
        .transpose()?;
    let mode = if check_only { Mode::Check } else { Mode::Copy };
    let report = crate::migrate::migrate(
        data,
        audit_key,
        checkpoints.as_deref(),
        target,
        mode,
        &mut |step| eprintln!("migrate: {step}"),
    )?;
    match mode {
        Mode::Copy => outln!(
            "migrated {} to {} and {}",
            data.display(),
            target.database,
            target.blobs
        ),
        Mode::Check => outln!(
            "the copy in {} and {} holds what {} holds",
            target.database,
            target.blobs,
            data.display()
        ),
    }
    outln!(
        "  blobs: {} ({} bytes), each read back and its hash checked",
        report.blobs,
        report.blob_bytes
    );
    for (table, source, copy) in &report.tables {
        outln!("  {table}: {source} rows in the source, {copy} in the copy");
    }
    outln!(
        "  audit: {} records, chain verified on both sides, last hash {}",
        report.audit_records,
        report.audit_last_hash
    );
    if report.checkpoints > 0 {
        outln!(
            "  the source held its {} checkpoints before the copy",
            report.checkpoints
        );
    }
    if report.same_audit_key {
        outln!("  checkpoints taken on the data dir hold on the copy (the same audit key)");
    } else {
        outln!(
            "  the fleet's audit key is not the data dir's: checkpoints taken on the data dir do \
             not verify against the copy; take a new one (warden audit --checkpoint FILE --config F)"
        );
    }
    if mode == Mode::Copy {
        outln!("start the runners with this config; the data dir is unchanged");
    }
    Ok(())
}
