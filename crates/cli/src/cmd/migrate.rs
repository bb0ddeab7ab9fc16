//! `warden migrate --data DIR --config FILE`: see `crate::migrate`.

use std::path::Path;

use anyhow::{Result, anyhow};
use warden_manifest::Storage;

pub fn run(data: &Path, config: &Path, audit_key: Option<&Path>) -> Result<()> {
    let config = crate::storage::read_config(Some(config))?;
    let Storage::Shared(target) = &config.storage else {
        return Err(anyhow!(super::UsageError(
            "the config has no [storage] url: `warden migrate` copies to the shared storage it names"
                .into()
        )));
    };
    let report = crate::migrate::migrate(data, audit_key, target, &mut |step| {
        eprintln!("migrate: {step}");
    })?;
    outln!(
        "migrated {} to {} and {}",
        data.display(),
        target.database,
        target.blobs
    );
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
    if report.same_audit_key {
        outln!("  checkpoints taken on the data dir hold on the copy (the same audit key)");
    } else {
        outln!(
            "  the fleet's audit key is not the data dir's: checkpoints taken on the data dir do \
             not verify against the copy; take a new one (warden audit --checkpoint FILE --config F)"
        );
    }
    outln!("start the runners with this config; the data dir is unchanged");
    Ok(())
}
