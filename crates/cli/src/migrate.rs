//! `warden migrate`: an embedded data dir (SQLite, blob files, audit files) copied to the
//! shared storage its `[storage]` names (PostgreSQL and S3), then checked against its source,
//! so that an operator who outgrows one machine keeps everything.
//!
//! The order makes a failure at any step harmless:
//! 1. The target must be empty (a copy never merges into a fleet's data).
//! 2. Every published bundle's blob is read (its hash checked) and uploaded. Blobs are
//!    content-addressed: uploading one again is harmless.
//! 3. One PostgreSQL transaction takes everything else: the registry, the key-value rows
//!    (sequence numbers and usage kept), the secrets (opened with the data dir's key and
//!    sealed again under the fleet's, in this process: PostgreSQL never sees a plaintext), and
//!    the audit log's lines verbatim after its chain and head were checked, with a head MACed
//!    under the fleet's audit key. The row counts are compared before the commit, and the
//!    source's files must not have changed since the start (a runner still serving it would
//!    lose what it wrote meanwhile). Anything wrong: rollback, nothing written.
//! 4. After the commit, everything is read back through the paths runners use and compared:
//!    the registry whole, a digest of every key-value row, every secret's value, the audit
//!    chain (same records, same last hash, the head's MAC), and every blob downloaded afresh.
//!
//! The source is only read. The compile cache is not copied: each runner keeps its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use warden_audit::{AUDIT_KEY_FILE, AuditKey, AuditSource as _, FileAuditSource};
use warden_kv::{KvError, KvRow};
use warden_manifest::SharedStorage;
use warden_registry::{BlobStore as _, Registry as _, RegistryImage};
use warden_secrets::{MemoryRows, SealedRow, SecretKey, SecretRows as _, SecretStore};
use warden_store_pg::{AuditRow, PgImport, PgStore};
use warden_store_s3::S3Blobs;
use warden_store_sqlite::{DB_FILE, FileBlobs, SqliteKv, SqliteRegistry, SqliteSecretRows};

/// Rows per statement while copying.
const BATCH: usize = 1000;

/// What a migration copied and checked.
#[derive(Debug)]
pub struct Report {
    /// Blobs uploaded (one per publication) and their bytes.
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Rows per table: (table, in the source, in the target).
    pub tables: Vec<(&'static str, u64, u64)>,
    /// The audit chain as verified on both sides.
    pub audit_records: u64,
    pub audit_last_hash: String,
    /// Whether the fleet's audit key is the data dir's: checkpoints taken on the data dir
    /// (MACed under its key) verify against the copy only then.
    pub same_audit_key: bool,
}

/// Progress, for the command to show.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Copies the embedded storage of `data` (its audit log under `audit_key`, default
/// `DATA/audit.key`) to `target`. See the module docs.
pub fn migrate(
    data: &Path,
    audit_key: Option<&Path>,
    target: &SharedStorage,
    progress: Progress<'_>,
) -> Result<Report> {
    let source = Source::open(data, audit_key)?;
    let before = source.fingerprint()?;
    let image = source.registry.image().context("reading the registry")?;

    progress(&format!("connecting to {}", target.database));
    let pg = PgStore::connect(target.database.expose())
        .with_context(|| format!("connecting to {}", target.database))?;
    if let Some((table, _)) = pg.counts()?.into_iter().find(|(_, n)| *n > 0) {
        bail!(
            "{} is not empty (table {table} has rows): `warden migrate` copies into an empty \
             database only; nothing was written",
            target.database
        );
    }
    let fleet_audit_key = AuditKey::load(&target.audit_key_file).with_context(|| {
        format!(
            "reading the audit key {} ([storage] audit_key_file)",
            target.audit_key_file.display()
        )
    })?;
    let fleet_secret_key = SecretKey::load(&target.secret_key_file).with_context(|| {
        format!(
            "reading the secret key {} ([storage] secret_key_file)",
            target.secret_key_file.display()
        )
    })?;
    // Checks the fleet's key against the database (a runner may have started on it already).
    let target_secrets = SecretStore::new(Arc::new(pg.secret_rows()), &fleet_secret_key)
        .with_context(|| format!("opening the secrets in {}", pg.location()))?;

    // 2. Blobs.
    let (blobs, blob_bytes) = copy_blobs(&source, &image, target, progress)
        .context("copying the blobs; nothing was written to the database")?;

    // 3. Everything else, in one transaction.
    let import = pg.import()?;
    progress("copying the registry");
    import.registry(&image)?;
    progress("copying the key-value rows");
    let kv = copy_kv(&source.kv, &import)?;
    progress("sealing the secrets again under the fleet's key");
    let secrets = copy_secrets(&source, &fleet_secret_key, &import)?;
    progress("copying the audit log");
    let audit = source.audit_lines(&import)?;
    import.audit_head(
        audit.records,
        &audit.last_hash,
        Some(fleet_audit_key.mac(audit.records, &audit.last_hash)),
    )?;
    let mut expected: Vec<(&'static str, u64)> = image
        .counts()
        .iter()
        .map(|(t, n)| (*t, *n as u64))
        .collect();
    expected.extend([
        ("kv_usage", kv.usage),
        ("kv_entries", kv.entries),
        ("secret_values", secrets.len() as u64),
        ("audit_records", audit.records),
    ]);
    let copied = import.counts()?;
    let tables = compare_counts(&expected, &copied)?;
    if source.fingerprint()? != before {
        bail!(
            "{} changed while it was being copied (is a runner or a command still using it?): \
             nothing was written; stop everything that uses it and run `warden migrate` again",
            data.display()
        );
    }
    progress("committing");
    import.commit()?;

    // 4. Read back through the runners' paths.
    progress("checking the copy");
    let after_commit = |what: &str| {
        format!(
            "the copy was committed but its {what} differs from the source; drop the database \
             and run `warden migrate` again"
        )
    };
    if pg.registry().image()? != image {
        bail!(after_commit("registry"));
    }
    let digest = Arc::new(std::sync::Mutex::new(KvDigest::default()));
    let d = Arc::clone(&digest);
    pg.kv().export(move |row| {
        d.lock()
            .map_err(|_| KvError::storage("digest lock poisoned"))?
            .add(&row);
        Ok(())
    })?;
    let copied_kv = std::mem::take(
        &mut *digest
            .lock()
            .map_err(|_| anyhow::anyhow!("digest lock poisoned"))?,
    )
    .finish();
    if copied_kv != kv {
        bail!(after_commit("key-value data"));
    }
    for (id, value) in &secrets {
        let (t, e, n) = id;
        let got = target_secrets.get(t, e, n)?;
        if got.as_ref().map(|v| v.expose()) != Some(value.expose()) {
            bail!(after_commit("secrets"));
        }
    }
    let report = pg
        .audit_source()
        .verify(Some(&fleet_audit_key), &mut |_, _| {})
        .context(after_commit("audit log"))?;
    if (report.records, &report.last_hash) != (audit.records, &audit.last_hash) {
        bail!(after_commit("audit log"));
    }
    let fresh = tempfile::tempdir().context("a temporary folder")?;
    let reread = S3Blobs::open(&target.blobs, fresh.path())?;
    for p in &image.published {
        if reread.get(&p.content_hash)?.is_none() {
            bail!(after_commit("blobs"));
        }
    }
    Ok(Report {
        blobs,
        blob_bytes,
        tables,
        audit_records: audit.records,
        audit_last_hash: audit.last_hash,
        same_audit_key: source.audit_key.as_ref().is_some_and(|k| {
            let probe = warden_audit::GENESIS_HASH;
            k.mac(0, probe) == fleet_audit_key.mac(0, probe)
        }),
    })
}

/// The embedded storage of a data dir, opened to be read.
struct Source {
    data: PathBuf,
    registry: SqliteRegistry,
    kv: SqliteKv,
    secret_rows: Arc<SqliteSecretRows>,
    blobs: FileBlobs,
    audit: FileAuditSource,
    audit_key: Option<AuditKey>,
}

impl Source {
    fn open(data: &Path, audit_key: Option<&Path>) -> Result<Source> {
        let db = data.join(DB_FILE);
        if !db.is_file() {
            bail!(
                "{} holds no embedded storage (no {DB_FILE}): nothing to migrate",
                data.display()
            );
        }
        let key_path = audit_key.map_or_else(|| data.join(AUDIT_KEY_FILE), Path::to_path_buf);
        let audit_key = match AuditKey::load(&key_path) {
            Ok(k) => Some(k),
            // An audit log written before keys (or none at all): checked without one.
            Err(_) if audit_key.is_none() && !key_path.exists() => None,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the audit key {}", key_path.display()));
            }
        };
        Ok(Source {
            data: data.to_path_buf(),
            registry: SqliteRegistry::open(&db)?,
            kv: SqliteKv::open(&db)?,
            secret_rows: Arc::new(SqliteSecretRows::open(&db)?),
            blobs: FileBlobs::open(data)?,
            audit: FileAuditSource::in_data_dir(data),
            audit_key,
        })
    }

    /// Size and modification time of the files every write to the storage changes.
    fn fingerprint(&self) -> Result<Vec<Option<(u64, SystemTime)>>> {
        let audit = &self.audit.dir;
        [
            self.data.join(DB_FILE),
            self.data.join(format!("{DB_FILE}-wal")),
            audit.join(warden_audit::LOG_FILE),
            audit.join(warden_audit::HEAD_FILE),
        ]
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => Ok(Some((m.len(), m.modified()?))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        })
        .collect()
    }

    /// Verifies the audit log (chain, head and its MAC) and copies its lines as they are
    /// checked. An empty data dir's log may not exist yet: nothing to copy then.
    fn audit_lines(&self, import: &PgImport) -> Result<AuditCopy> {
        if !self.audit.dir.join(warden_audit::HEAD_FILE).exists()
            && !self.audit.dir.join(warden_audit::LOG_FILE).exists()
        {
            return Ok(AuditCopy {
                records: 0,
                last_hash: warden_audit::GENESIS_HASH.to_owned(),
            });
        }
        let mut batch: Vec<AuditRow> = Vec::with_capacity(BATCH);
        let mut failed: Option<anyhow::Error> = None;
        let report =
            warden_audit::verify_with_lines(&self.audit.dir, self.audit_key.as_ref(), &mut |l| {
                if failed.is_some() {
                    return;
                }
                batch.push(AuditRow {
                    seq: l.seq,
                    line: String::from_utf8_lossy(l.line).into_owned(),
                    hash: l.hash.to_owned(),
                    tenant: l.record.tenant().map(str::to_owned),
                    extension: l.record.extension().map(str::to_owned),
                    event: l.record.event().as_str().to_owned(),
                });
                if batch.len() >= BATCH
                    && let Err(e) = import.audit(std::mem::take(&mut batch))
                {
                    failed = Some(e.into());
                }
            })
            .with_context(|| format!("verifying the audit log in {}", self.audit.location()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !batch.is_empty() {
            import.audit(batch)?;
        }
        Ok(AuditCopy {
            records: report.records,
            last_hash: report.last_hash,
        })
    }
}

struct AuditCopy {
    records: u64,
    last_hash: String,
}

fn copy_blobs(
    source: &Source,
    image: &RegistryImage,
    target: &SharedStorage,
    progress: Progress<'_>,
) -> Result<(usize, u64)> {
    progress(&format!(
        "uploading {} blobs to {}",
        image.published.len(),
        target.blobs
    ));
    // Its local copies are thrown away: the runners keep their own.
    let scratch = tempfile::tempdir().context("a temporary folder")?;
    let s3 = S3Blobs::open(&target.blobs, scratch.path())?;
    let mut bytes = 0u64;
    for p in &image.published {
        let Some(blob) = source.blobs.get(&p.content_hash)? else {
            bail!(
                "{} {} ({}) is published but its bundle is missing from {}: the data dir is \
                 damaged; nothing was written to the database",
                p.id,
                p.version,
                p.content_hash,
                source.data.join(warden_store_sqlite::BLOBS_DIR).display()
            );
        };
        s3.put(&blob)?;
        bytes += blob.len() as u64;
    }
    Ok((image.published.len(), bytes))
}

/// Streams the key-value rows into the copy, keeping their digest.
fn copy_kv(kv: &SqliteKv, import: &PgImport) -> Result<KvSummary> {
    let mut digest = KvDigest::default();
    let mut batch = Vec::with_capacity(BATCH);
    kv.export(&mut |row| {
        digest.add(&row);
        batch.push(row);
        if batch.len() >= BATCH {
            import
                .kv(std::mem::take(&mut batch))
                .map_err(KvError::storage)?;
        }
        Ok(())
    })?;
    import.kv(batch)?;
    Ok(digest.finish())
}

type SecretCopy = Vec<(warden_secrets::SecretId, warden_secrets::SecretValue)>;

/// Opens every secret with the data dir's key and seals it again under the fleet's, in
/// memory, then copies the sealed rows. Returns the values, to compare the copy with.
fn copy_secrets(source: &Source, fleet: &SecretKey, import: &PgImport) -> Result<SecretCopy> {
    let ids = source.secret_rows.identities()?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let key_path = source.data.join(warden_secrets::KEY_FILE);
    let key = SecretKey::load(&key_path).with_context(|| {
        format!(
            "{} secrets are stored but their key {} cannot be read",
            ids.len(),
            key_path.display()
        )
    })?;
    let from = SecretStore::new(source.secret_rows.clone(), &key)?;
    let staging = Arc::new(MemoryRows::new());
    let to = SecretStore::new(staging.clone(), fleet)?;
    let mut values = Vec::with_capacity(ids.len());
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let (t, e, n) = &id;
        let Some(value) = from.get(t, e, n)? else {
            bail!("secret {n} of {t}/{e} vanished while being copied");
        };
        to.put(t, e, n, &value)?;
        let Some(sealed) = staging.get(t, e, n)? else {
            bail!("secret {n} of {t}/{e} could not be sealed again");
        };
        rows.push((id.clone(), sealed));
        values.push((id, value));
    }
    // The check row `to` wrote (what is proposed here is ignored: the first row stays).
    let check = staging.key_check(&SealedRow {
        nonce: Vec::new(),
        ciphertext: Vec::new(),
    })?;
    import.secrets(rows, check)?;
    Ok(values)
}

fn compare_counts(
    expected: &[(&'static str, u64)],
    copied: &[(&'static str, u64)],
) -> Result<Vec<(&'static str, u64, u64)>> {
    let mut out = Vec::new();
    for (table, want) in expected {
        let got = copied
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, n)| *n);
        if got != *want {
            bail!(
                "table {table}: {want} rows in the source, {got} in the copy; nothing was written"
            );
        }
        out.push((*table, *want, got));
    }
    Ok(out)
}

/// A digest of key-value rows in export order, and their counts.
#[derive(Default)]
struct KvDigest {
    usage: u64,
    entries: u64,
    sha: Sha256,
}

/// What [`KvDigest`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KvSummary {
    usage: u64,
    entries: u64,
    hash: [u8; 32],
}

impl KvDigest {
    fn add(&mut self, row: &KvRow) {
        // Every field length-prefixed: no two row sequences hash alike.
        let mut field = |b: &[u8]| {
            self.sha.update((b.len() as u64).to_be_bytes());
            self.sha.update(b);
        };
        match row {
            KvRow::Usage(u) => {
                field(b"usage");
                field(u.tenant.as_bytes());
                field(u.extension.as_bytes());
                for n in [u.keys, u.bytes, u.seq] {
                    field(&n.to_be_bytes());
                }
                self.usage += 1;
            }
            KvRow::Entry(e) => {
                field(b"entry");
                field(e.tenant.as_bytes());
                field(e.extension.as_bytes());
                field(&e.bucket);
                field(&e.key);
                field(&e.value);
                field(&e.seq.to_be_bytes());
                self.entries += 1;
            }
        }
    }

    fn finish(self) -> KvSummary {
        KvSummary {
            usage: self.usage,
            entries: self.entries,
            hash: self.sha.finalize().into(),
        }
    }
}
