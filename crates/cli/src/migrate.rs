//! `warden migrate`: an embedded data dir (SQLite, blob files, audit files) copied to the
//! shared storage its `[storage]` names (PostgreSQL and S3), then checked against its source,
//! so that an operator who outgrows one machine keeps everything.
//!
//! The order makes a failure at any step harmless:
//! 1. The source must not be in use (no process has its files open), its audit log must
//!    verify under its key (chain, head, the head's MAC, and `--checkpoints` if given), and the
//!    target must be empty: a copy never merges into a fleet's data.
//! 2. Every published bundle's blob is read (its hash checked) and uploaded. Blobs are
//!    content-addressed: uploading one again is harmless.
//! 3. One PostgreSQL transaction takes everything else, read from one read-only snapshot of
//!    the source database: the registry, the key-value rows (sequence numbers and usage kept),
//!    the secrets (opened with the data dir's key and sealed again under the fleet's, in this
//!    process: PostgreSQL never sees a plaintext), and the audit log's lines verbatim as they
//!    are checked, with a head MACed under the fleet's audit key. The row counts are compared
//!    before the commit, and the source must be unchanged and unused since the start.
//!    Anything wrong: rollback, nothing written.
//! 4. After the commit, everything is read back through the paths runners use and compared:
//!    the registry whole, a digest of every key-value row, every secret's value, the audit
//!    chain (same records, same last hash, the head's MAC), and every blob downloaded afresh.
//!    [`Mode::Check`] runs this step alone, on a copy made before.
//!
//! The source is only read (opened read-only; a read-only mount works). The compile cache is
//! not copied: each runner keeps its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use warden_audit::{AUDIT_KEY_FILE, AuditKey, AuditSource as _, FileAuditSource, HeadMac};
use warden_kv::{KvError, KvRow};
use warden_manifest::SharedStorage;
use warden_registry::{BlobStore as _, Registry as _, RegistryImage};
use warden_secrets::{
    MemoryRows, SealedRow, SecretId, SecretKey, SecretRows as _, SecretStore, SecretValue,
};
use warden_store_pg::{AuditRow, PgImport, PgStore};
use warden_store_s3::S3Blobs;
use warden_store_sqlite::{DB_FILE, Export, FileBlobs};

/// Rows per statement while copying, and bytes: whichever comes first.
const BATCH_ROWS: usize = 1000;
const BATCH_BYTES: usize = 32 << 20;

/// Copy and check, or only check a copy made before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Copy,
    Check,
}

/// What a migration copied and checked.
#[derive(Debug)]
pub struct Report {
    /// Blobs (one per publication) and their bytes.
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Rows per table: (table, in the source, in the target).
    pub tables: Vec<(&'static str, u64, u64)>,
    /// The audit chain as verified on both sides.
    pub audit_records: u64,
    pub audit_last_hash: String,
    /// Checkpoints of the source's log that held before the copy.
    pub checkpoints: usize,
    /// Whether the fleet's audit key is the data dir's: checkpoints taken on the data dir
    /// (MACed under its key) verify against the copy only then.
    pub same_audit_key: bool,
}

/// Progress, for the command to show.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// What the source holds, as the copy must hold it.
struct Expected {
    image: RegistryImage,
    kv: KvSummary,
    secrets: Vec<(SecretId, SecretValue)>,
    audit_records: u64,
    audit_last_hash: String,
}

/// Copies the embedded storage of `data` (its audit log under `audit_key`, default
/// `DATA/audit.key`) to `target`, or checks a copy made before. See the module docs.
pub fn migrate(
    data: &Path,
    audit_key: Option<&Path>,
    checkpoints: Option<&str>,
    target: &SharedStorage,
    mode: Mode,
    progress: Progress<'_>,
) -> Result<Report> {
    let source = Source::open(data, audit_key)?;
    source.refuse_if_in_use()?;
    let before = source.fingerprint()?;
    let held = match checkpoints {
        Some(text) => {
            progress("checking the audit log against the checkpoints");
            warden_audit::checkpoint::check_from(&source.audit, Some(&source.audit_key), text)
                .with_context(|| {
                    format!(
                        "the audit log in {} does not hold the checkpoints: nothing was copied",
                        source.audit.location()
                    )
                })?
                .checkpoints
        }
        None => 0,
    };
    let image = source.export.registry().context("reading the registry")?;

    progress(&format!("connecting to {}", target.database));
    let pg = PgStore::connect(target.database.expose())
        .with_context(|| format!("connecting to {}", target.database))?;
    crate::storage::warn_if_clear(&pg);
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
    let secrets = source.secrets()?;

    let (blob_bytes, counts, expected) = match mode {
        Mode::Copy => {
            if let Some((table, _)) = pg.counts()?.into_iter().find(|(_, n)| *n > 0) {
                bail!(
                    "{} is not empty (table {table} has rows): `warden migrate` copies into an \
                     empty database only; nothing was written",
                    target.database
                );
            }
            let bytes = copy_blobs(&source, &image, target, progress)
                .context("copying the blobs; nothing was written to the database")?;
            let keys = (&fleet_secret_key, &fleet_audit_key);
            let (counts, expected) = copy(&source, &before, &pg, image, secrets, keys, progress)?;
            (bytes, counts, expected)
        }
        Mode::Check => {
            let report = source.verify_audit()?;
            let mut kv = KvDigest::default();
            source.export.kv(&mut |row| {
                kv.add(&row);
                Ok(())
            })?;
            let expected = Expected {
                image,
                kv: kv.finish(),
                secrets,
                audit_records: report.records,
                audit_last_hash: report.last_hash,
            };
            let bytes = blob_bytes(&source, &expected.image)?;
            (bytes, pg.counts()?, expected)
        }
    };
    let after_commit = match mode {
        Mode::Copy => {
            "the copy was committed, but checking it failed (run `warden migrate --check` \
                       to check it again; to start over, drop the database)"
        }
        Mode::Check => "the copy differs from the source",
    };
    if mode == Mode::Copy {
        progress("checking the copy");
    }
    check(&pg, target, &fleet_secret_key, &fleet_audit_key, &expected).context(after_commit)?;
    let tables = compare_counts(&expected.counts(), &counts).context(after_commit)?;
    Ok(Report {
        blobs: expected.image.published.len(),
        blob_bytes,
        tables,
        audit_records: expected.audit_records,
        audit_last_hash: expected.audit_last_hash,
        checkpoints: held,
        same_audit_key: {
            let probe = warden_audit::GENESIS_HASH;
            source.audit_key.mac(0, probe) == fleet_audit_key.mac(0, probe)
        },
    })
}

impl Expected {
    fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = self
            .image
            .counts()
            .iter()
            .map(|(t, n)| (*t, *n as u64))
            .collect();
        out.extend([
            ("kv_usage", self.kv.usage),
            ("kv_entries", self.kv.entries),
            ("secret_values", self.secrets.len() as u64),
            ("audit_records", self.audit_records),
        ]);
        out
    }
}

/// Step 3: everything but the blobs, in one transaction. Returns the copy's row counts as
/// committed, and what it must hold.
fn copy(
    source: &Source,
    before: &[Option<(u64, SystemTime)>],
    pg: &PgStore,
    image: RegistryImage,
    secrets: Vec<(SecretId, SecretValue)>,
    (fleet_secret_key, fleet_audit_key): (&SecretKey, &AuditKey),
    progress: Progress<'_>,
) -> Result<(Vec<(&'static str, u64)>, Expected)> {
    let import = pg.import()?;
    progress("copying the registry");
    import.registry(&image)?;
    progress("copying the key-value rows");
    let kv = copy_kv(source, &import)?;
    progress("sealing the secrets again under the fleet's key");
    copy_secrets(&secrets, fleet_secret_key, &import)?;
    progress("copying the audit log");
    let audit = source.copy_audit(&import)?;
    import.audit_head(
        audit.records,
        &audit.last_hash,
        Some(fleet_audit_key.mac(audit.records, &audit.last_hash)),
    )?;
    let expected = Expected {
        image,
        kv,
        secrets,
        audit_records: audit.records,
        audit_last_hash: audit.last_hash,
    };
    let counts = import.counts()?;
    compare_counts(&expected.counts(), &counts).context("nothing was written")?;
    source.refuse_if_in_use()?;
    if source.fingerprint()? != before {
        bail!(
            "{} changed while it was being copied (is a runner or a command still using it?): \
             nothing was written; stop everything that uses it and run `warden migrate` again",
            source.data.display()
        );
    }
    progress("committing");
    import.commit()?;
    Ok((counts, expected))
}

/// Step 4: the copy read back through the runners' paths, compared with `expected`.
fn check(
    pg: &PgStore,
    target: &SharedStorage,
    fleet_secret_key: &SecretKey,
    fleet_audit_key: &AuditKey,
    expected: &Expected,
) -> Result<()> {
    if pg.registry().image()? != expected.image {
        bail!("its registry differs from the source's");
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
    if copied_kv != expected.kv {
        bail!("its key-value data differs from the source's");
    }
    if !expected.secrets.is_empty() {
        let secrets = SecretStore::new(Arc::new(pg.secret_rows()), fleet_secret_key)
            .context("opening its secrets with the fleet's secret key")?;
        for ((t, e, n), value) in &expected.secrets {
            let got = secrets.get(t, e, n)?;
            if got.as_ref().map(SecretValue::expose) != Some(value.expose()) {
                bail!("secret {n} of {t}/{e} differs from the source's");
            }
        }
    }
    let report = pg
        .audit_source()
        .verify(Some(fleet_audit_key), &mut |_, _| {})
        .context("its audit log does not verify under the fleet's audit key")?;
    if (report.records, &report.last_hash) != (expected.audit_records, &expected.audit_last_hash) {
        bail!(
            "its audit log has {} records ending in {}, the source's {} ending in {}",
            report.records,
            report.last_hash,
            expected.audit_records,
            expected.audit_last_hash
        );
    }
    let fresh = tempfile::tempdir().context("a temporary folder")?;
    let reread = S3Blobs::open(&target.blobs, fresh.path())?;
    for p in &expected.image.published {
        if reread.get(&p.content_hash)?.is_none() {
            bail!(
                "the bundle of {} {} is missing from {}",
                p.id,
                p.version,
                target.blobs
            );
        }
    }
    Ok(())
}

/// The embedded storage of a data dir, opened to be read.
struct Source {
    data: PathBuf,
    export: Export,
    blobs: FileBlobs,
    audit: FileAuditSource,
    audit_key: AuditKey,
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
        let audit = FileAuditSource::in_data_dir(data);
        if !audit.dir.join(warden_audit::HEAD_FILE).exists() {
            bail!(
                "{} has no audit log ({} has no {}): a data dir's history is part of what is \
                 copied, and it is missing",
                data.display(),
                audit.dir.display(),
                warden_audit::HEAD_FILE
            );
        }
        // The key is required: without it a log cut at its end with a rewritten head would
        // verify, and be carried over under the fleet's key as genuine.
        let key_path = audit_key.map_or_else(|| data.join(AUDIT_KEY_FILE), Path::to_path_buf);
        let audit_key = AuditKey::load(&key_path).with_context(|| {
            format!(
                "reading the audit key {} (give the key the data dir's log was written with \
                 with --audit-key)",
                key_path.display()
            )
        })?;
        Ok(Source {
            data: data.to_path_buf(),
            export: Export::open(&db)?,
            blobs: FileBlobs::reader(data),
            audit,
            audit_key,
        })
    }

    /// The files whose every change a write to the storage makes.
    fn files(&self) -> [PathBuf; 4] {
        [
            self.data.join(DB_FILE),
            self.data.join(format!("{DB_FILE}-wal")),
            self.audit.dir.join(warden_audit::LOG_FILE),
            self.audit.dir.join(warden_audit::HEAD_FILE),
        ]
    }

    /// Size and modification time of [`Source::files`].
    fn fingerprint(&self) -> Result<Vec<Option<(u64, SystemTime)>>> {
        self.files()
            .iter()
            .map(|p| match std::fs::metadata(p) {
                Ok(m) => Ok(Some((m.len(), m.modified()?))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
            })
            .collect()
    }

    /// Refuses while another process has the database or the audit log open (a runner still
    /// serving the data dir would go on writing to it, and what it wrote would be lost to the
    /// copy). Sees the processes this user may inspect (all of them as root; a runner in
    /// another PID namespace only from its parent's).
    fn refuse_if_in_use(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        // By device and inode, not by path: a runner may reach the same files through a bind
        // mount or in a mount namespace of its own (a container).
        let files: Vec<(u64, u64)> = self
            .files()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        if let Some((pid, name)) = open_elsewhere(&files) {
            bail!(
                "{} is in use by process {pid} ({name}): stop every runner and command that uses \
                 it, then run `warden migrate` again; nothing was written",
                self.data.display()
            );
        }
        Ok(())
    }

    /// The secrets, opened with the data dir's key.
    fn secrets(&self) -> Result<Vec<(SecretId, SecretValue)>> {
        let (rows, check) = self.export.secrets()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let key_path = self.data.join(warden_secrets::KEY_FILE);
        let key = SecretKey::load(&key_path).with_context(|| {
            format!(
                "{} secrets are stored but their key {} cannot be read",
                rows.len(),
                key_path.display()
            )
        })?;
        let Some(check) = check else {
            bail!(
                "{} holds secrets but no key-check row: it is damaged",
                self.export.location()
            );
        };
        // In memory: the source is never written.
        let staging = Arc::new(MemoryRows::new());
        staging.key_check(&check)?;
        for ((t, e, n), row) in &rows {
            staging.put(t, e, n, row)?;
        }
        let from = SecretStore::new(staging, &key).with_context(|| {
            format!(
                "opening the secrets of {} with {}",
                self.export.location(),
                key_path.display()
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, _) in rows {
            let (t, e, n) = &id;
            let Some(value) = from.get(t, e, n)? else {
                bail!("secret {n} of {t}/{e} could not be read");
            };
            out.push((id, value));
        }
        Ok(out)
    }

    /// The audit log verified under the key, the head's MAC checked.
    fn verify_audit(&self) -> Result<warden_audit::VerifyReport> {
        let report = self
            .audit
            .verify(Some(&self.audit_key), &mut |_, _| {})
            .with_context(|| format!("verifying the audit log in {}", self.audit.location()))?;
        mac_checked(&report)?;
        Ok(report)
    }

    /// Verifies the audit log (chain, head and its MAC) and copies its lines as they are
    /// checked.
    fn copy_audit(&self, import: &PgImport) -> Result<AuditCopy> {
        let mut batch: Vec<AuditRow> = Vec::with_capacity(BATCH_ROWS);
        let mut failed: Option<anyhow::Error> = None;
        let report =
            warden_audit::verify_with_lines(&self.audit.dir, Some(&self.audit_key), &mut |l| {
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
                if batch.len() >= BATCH_ROWS
                    && let Err(e) = import.audit(std::mem::take(&mut batch))
                {
                    failed = Some(e.into());
                }
            })
            .with_context(|| format!("verifying the audit log in {}", self.audit.location()))?;
        mac_checked(&report)?;
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

fn mac_checked(report: &warden_audit::VerifyReport) -> Result<()> {
    match report.head_mac {
        HeadMac::Checked => Ok(()),
        HeadMac::Unchecked | HeadMac::None => bail!(
            "the audit log's head carries no MAC to check under the audit key: its end cannot \
             be trusted; nothing was copied"
        ),
    }
}

/// A process other than this one with one of `files` (device, inode) open: its pid and name.
fn open_elsewhere(files: &[(u64, u64)]) -> Option<(u32, String)> {
    use std::os::unix::fs::MetadataExt as _;
    let me = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes of other users are not readable (without root): skipped.
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            // `stat` through /proc/PID/fd/N reaches the open file itself, wherever it was
            // opened from.
            if let Ok(m) = std::fs::metadata(fd.path())
                && files.contains(&(m.dev(), m.ino()))
            {
                let name = std::fs::read_to_string(p.path().join("comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                return Some((pid, name));
            }
        }
    }
    None
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
) -> Result<u64> {
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
        let blob = source_blob(source, p)?;
        s3.put(&blob)?;
        bytes += blob.len() as u64;
    }
    Ok(bytes)
}

/// The bytes of the source's blobs, each read and checked.
fn blob_bytes(source: &Source, image: &RegistryImage) -> Result<u64> {
    let mut bytes = 0u64;
    for p in &image.published {
        bytes += source_blob(source, p)?.len() as u64;
    }
    Ok(bytes)
}

fn source_blob(source: &Source, p: &warden_registry::Published) -> Result<Vec<u8>> {
    match source.blobs.get(&p.content_hash)? {
        Some(blob) => Ok(blob),
        None => bail!(
            "{} {} ({}) is published but its bundle is missing from {}: the data dir is damaged",
            p.id,
            p.version,
            p.content_hash,
            source.data.join(warden_store_sqlite::BLOBS_DIR).display()
        ),
    }
}

/// Streams the key-value rows into the copy, keeping their digest.
fn copy_kv(source: &Source, import: &PgImport) -> Result<KvSummary> {
    let mut digest = KvDigest::default();
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut bytes = 0usize;
    source.export.kv(&mut |row| {
        digest.add(&row);
        if let KvRow::Entry(e) = &row {
            bytes += e.key.len() + e.value.len() + e.bucket.len();
        }
        batch.push(row);
        if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
            bytes = 0;
            import
                .kv(std::mem::take(&mut batch))
                .map_err(KvError::storage)?;
        }
        Ok(())
    })?;
    import.kv(batch)?;
    Ok(digest.finish())
}

/// Seals every secret again under the fleet's key, in memory, and copies the sealed rows. A
/// database a runner started on already holds the fleet's key-check row: the key must be the
/// one it checks (nothing is written to find out).
fn copy_secrets(
    secrets: &[(SecretId, SecretValue)],
    fleet: &SecretKey,
    import: &PgImport,
) -> Result<()> {
    let staging = Arc::new(MemoryRows::new());
    if let Some(existing) = import.secret_check()? {
        staging.key_check(&existing)?;
    }
    let to = SecretStore::new(staging.clone(), fleet)
        .context("the fleet's secret key is not the one the database was started with")?;
    if secrets.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(secrets.len());
    for (id, value) in secrets {
        let (t, e, n) = id;
        to.put(t, e, n, value)?;
        let Some(sealed) = staging.get(t, e, n)? else {
            bail!("secret {n} of {t}/{e} could not be sealed again");
        };
        rows.push((id.clone(), sealed));
    }
    // The check row `to` holds (what is proposed here is ignored: the first row stays).
    let check = staging.key_check(&SealedRow {
        nonce: Vec::new(),
        ciphertext: Vec::new(),
    })?;
    import.secrets(rows, check)?;
    Ok(())
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
            bail!("table {table}: {want} rows in the source, {got} in the copy");
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
