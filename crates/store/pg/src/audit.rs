//! The audit log in PostgreSQL (plan 3.4): [`PgRoundStore`], one round of the group commit of
//! a `warden_audit::StoreLog` per transaction, and [`PgAuditSource`], its read side.
//!
//! A round: `SELECT … FROM audit_head FOR UPDATE` (the row lock serializes the rounds of every
//! runner, as the `flock` does for files), the head's MAC checked under the audit key, the
//! records chained in Rust with `encode_after`, one multi-row `INSERT` (the `seq` primary key
//! rules out gaps and duplicates), the head updated with its new MAC, `COMMIT`: one WAL flush
//! for the round, and only then are the callers answered. A runner killed mid-round leaves
//! nothing (PostgreSQL aborts its transaction), so there is no torn tail to set aside.
//!
//! If the `COMMIT` itself fails, its outcome is unknown (the connection may have died after the
//! server committed): the round's last seq is read back, once the head lock can be had, and the
//! round is acknowledged only if the row there is ours. Nothing is retried blindly, so nothing
//! is stored twice.
//!
//! Verification reads the head and every record from one `REPEATABLE READ` snapshot, on a
//! connection of its own, and walks them with `warden_audit::verify_lines`; each row's stored
//! `hash` column must also match the hash computed from its line.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use warden_audit::encode_after;
use warden_audit::{
    Appended, AuditError, AuditKey, AuditSource, ChainError, Filter, GENESIS_HASH, HeadView,
    Reader, Record, Round, RoundStore, VerifyReport, verify_lines,
};

use crate::PgStore;

/// A round stops taking records once its lines reach this many bytes (the rest wait for the
/// next round): a bound on one statement's size and on how long the head lock is held.
const MAX_ROUND_BYTES: usize = 1 << 20;
/// Rows read per query when listing or verifying.
const PAGE: i64 = 10_000;

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The message of `e` with its causes (`tokio_postgres::Error`'s own text is terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Appends the audit records of one runner to the shared chain; drive it with
/// `warden_audit::StoreLog::new(Box::new(store))`.
pub struct PgRoundStore {
    store: PgStore,
    key: Option<Arc<AuditKey>>,
    location: String,
}

impl std::fmt::Debug for PgRoundStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRoundStore")
            .field("location", &self.location)
            .field("keyed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a round (or the open) failed as a whole.
enum Failure {
    /// The head is not one the key wrote: nothing may be appended after it.
    Head(ChainError),
    /// The database: the round was not stored.
    Db(String),
    /// The `COMMIT` failed and reading back could not tell whether it happened.
    Unknown(String),
}

/// The head row as stored.
struct HeadRow {
    seq: u64,
    hash: String,
    mac: Option<String>,
}

fn head_location(store: &PgStore) -> PathBuf {
    PathBuf::from(format!("{} table audit_head", store.location()))
}

/// Checks the head's MAC under `key` (nothing to check without a key).
fn check_head(store: &PgStore, key: Option<&AuditKey>, h: &HeadRow) -> Result<(), ChainError> {
    let Some(key) = key else { return Ok(()) };
    match &h.mac {
        Some(mac) if key.check(h.seq, &h.hash, mac) => Ok(()),
        Some(_) => Err(ChainError::HeadMac {
            path: head_location(store),
        }),
        None => Err(ChainError::HeadUnkeyed {
            path: head_location(store),
        }),
    }
}

async fn read_head(
    c: &impl deadpool_postgres::GenericClient,
    lock: bool,
) -> Result<Option<HeadRow>, tokio_postgres::Error> {
    let sql = if lock {
        "SELECT seq, hash, mac FROM audit_head WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT seq, hash, mac FROM audit_head WHERE id = 1"
    };
    let st = c.prepare_cached(sql).await?;
    match c.query_opt(&st, &[]).await? {
        Some(r) => Ok(Some(HeadRow {
            seq: u64_of(r.try_get(0)?),
            hash: r.try_get(1)?,
            mac: r.try_get(2)?,
        })),
        None => Ok(None),
    }
}

impl PgRoundStore {
    /// The round store of `store`'s audit log under `key` (the same key on every runner):
    /// writes the genesis head if the log is new, and refuses a head that `key` did not write
    /// (another key, or no MAC while a key is in use).
    pub fn open(store: PgStore, key: Option<Arc<AuditKey>>) -> Result<PgRoundStore, AuditError> {
        let location = format!("{} table audit_records", store.location());
        let s = PgRoundStore {
            store,
            key,
            location,
        };
        let (pool, key) = (s.store.pool().clone(), s.key.clone());
        let genesis_mac = key.as_ref().map(|k| k.mac(0, GENESIS_HASH));
        let head = s
            .store
            .run(async move {
                let c = pool.get().await.map_err(|e| chain(&e))?;
                // The first runner writes the genesis head; the others find it.
                c.execute(
                    "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, 0, $1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[&GENESIS_HASH, &genesis_mac],
                )
                .await
                .map_err(|e| chain(&e))?;
                read_head(&c, false).await.map_err(|e| chain(&e))
            })
            .map_err(|e| s.db_error(&chain(&e)))?
            .map_err(|e| s.db_error(&e))?;
        let Some(head) = head else {
            return Err(s.db_error("the audit head row is missing"));
        };
        check_head(&s.store, s.key.as_deref(), &head).map_err(|source| AuditError::Chain {
            dir: PathBuf::from(&s.location),
            source,
        })?;
        Ok(s)
    }

    fn db_error(&self, message: &str) -> AuditError {
        AuditError::Io {
            action: "writing the audit log to",
            path: PathBuf::from(&self.location),
            source: io::Error::other(message.to_owned()),
        }
    }

    fn failure(&self, f: &Failure) -> AuditError {
        match f {
            Failure::Head(e) => AuditError::Chain {
                dir: PathBuf::from(&self.location),
                source: e.duplicate_public(),
            },
            Failure::Db(m) => self.db_error(m),
            Failure::Unknown(m) => self.db_error(&format!(
                "the commit's outcome is unknown ({m}); the records may or may not be stored"
            )),
        }
    }
}

/// `ChainError` is not `Clone`; every caller of a failed round gets an equal one.
trait DuplicatePublic {
    fn duplicate_public(&self) -> ChainError;
}

impl DuplicatePublic for ChainError {
    fn duplicate_public(&self) -> ChainError {
        match self {
            ChainError::HeadMac { path } => ChainError::HeadMac { path: path.clone() },
            ChainError::HeadUnkeyed { path } => ChainError::HeadUnkeyed { path: path.clone() },
            other => ChainError::Io {
                path: PathBuf::new(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// What one round's transaction did: an answer per record taken, and whether it stored any.
type Outcome = (Vec<Result<Appended, AuditError>>, bool);

async fn round(
    store: PgStore,
    key: Option<Arc<AuditKey>>,
    batch: Vec<Record>,
) -> Result<Outcome, Failure> {
    let db = |e: &dyn std::error::Error| Failure::Db(chain(e));
    let mut c = store.pool().get().await.map_err(|e| db(&e))?;
    let tx = c.transaction().await.map_err(|e| db(&e))?;
    let head = read_head(&tx, true)
        .await
        .map_err(|e| db(&e))?
        .ok_or_else(|| Failure::Db("the audit head row is missing".into()))?;
    check_head(&store, key.as_deref(), &head).map_err(Failure::Head)?;

    let (mut seq, mut prev) = (head.seq, head.hash);
    let (mut seqs, mut lines, mut hashes, mut tenants, mut extensions, mut events) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut results = Vec::with_capacity(batch.len());
    let mut bytes = 0;
    for record in &batch {
        if bytes >= MAX_ROUND_BYTES {
            break;
        }
        match encode_after(seq, &prev, record) {
            Ok(e) => {
                let line = String::from_utf8_lossy(e.text()).into_owned();
                bytes += line.len();
                seqs.push(i64_of(e.seq));
                lines.push(line);
                hashes.push(e.hash.clone());
                tenants.push(record.tenant().map(str::to_owned));
                extensions.push(record.extension().map(str::to_owned));
                events.push(record.event().as_str());
                results.push(Ok(Appended {
                    seq: e.seq,
                    hash: e.hash.clone(),
                }));
                (seq, prev) = (e.seq, e.hash);
            }
            // Fails alone and takes no seq.
            Err(e) => results.push(Err(e)),
        }
    }
    if lines.is_empty() {
        return Ok((results, false));
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO audit_records (seq, line, hash, tenant, extension, event)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[])",
        )
        .await
        .map_err(|e| db(&e))?;
    tx.execute(
        &st,
        &[&seqs, &lines, &hashes, &tenants, &extensions, &events],
    )
    .await
    .map_err(|e| db(&e))?;
    let mac = key.as_ref().map(|k| k.mac(seq, &prev));
    let st = tx
        .prepare_cached("UPDATE audit_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1")
        .await
        .map_err(|e| db(&e))?;
    tx.execute(&st, &[&i64_of(seq), &prev, &mac])
        .await
        .map_err(|e| db(&e))?;
    if let Err(e) = tx.commit().await {
        drop(c);
        return match committed(&store, seq, &prev).await {
            Ok(true) => Ok((results, true)),
            Ok(false) => Err(Failure::Db(chain(&e))),
            Err(read_back) => Err(Failure::Unknown(format!("{}; {read_back}", chain(&e)))),
        };
    }
    Ok((results, true))
}

/// Whether the record `seq` with hash `hash` is stored: asked after a `COMMIT` that failed, on
/// another connection, once the head lock is free (so the first transaction has ended).
async fn committed(store: &PgStore, seq: u64, hash: &str) -> Result<bool, String> {
    let mut c = store.pool().get().await.map_err(|e| chain(&e))?;
    let tx = c.transaction().await.map_err(|e| chain(&e))?;
    read_head(&tx, true).await.map_err(|e| chain(&e))?;
    let row = tx
        .query_opt(
            "SELECT hash FROM audit_records WHERE seq = $1",
            &[&i64_of(seq)],
        )
        .await
        .map_err(|e| chain(&e))?;
    let stored: Option<String> = row
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(|e| chain(&e))?;
    Ok(stored.as_deref() == Some(hash))
}

impl RoundStore for PgRoundStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn append_round(&mut self, batch: &[&Record]) -> Round {
        let owned: Vec<Record> = batch.iter().map(|r| (*r).clone()).collect();
        let n = owned.len();
        let outcome = self
            .store
            .run(round(self.store.clone(), self.key.clone(), owned))
            .unwrap_or_else(|e| Err(Failure::Db(chain(&e))));
        match outcome {
            Ok((results, dirty)) => Round {
                results,
                dirty,
                broken: false,
            },
            Err(f) => {
                if let Failure::Unknown(m) = &f {
                    tracing::error!(target: "warden::audit", error = %m, "audit round outcome unknown");
                }
                Round {
                    results: (0..n).map(|_| Err(self.failure(&f))).collect(),
                    dirty: false,
                    // A head the key did not write: nothing more from this writer. A database
                    // failure leaves the chain as it was: the next round starts from the head.
                    broken: matches!(f, Failure::Head(_)),
                }
            }
        }
    }
}

/// The audit log of a [`PgStore`], read back: listing (filtered in SQL), following, verifying.
#[derive(Debug, Clone)]
pub struct PgAuditSource {
    store: PgStore,
}

impl PgAuditSource {
    pub(crate) fn new(store: PgStore) -> PgAuditSource {
        PgAuditSource { store }
    }

    fn io(&self, e: &dyn std::error::Error) -> ChainError {
        ChainError::Io {
            path: PathBuf::from(self.location()),
            source: io::Error::other(chain(e)),
        }
    }
}

/// Stored lines after `after`, a page at a time; at the current end it returns `None`, and
/// asks again when called again (`--follow`).
struct Lines {
    source: PgAuditSource,
    after: u64,
    tenant: Option<String>,
    extension: Option<String>,
    page: VecDeque<(u64, Vec<u8>)>,
}

impl Iterator for Lines {
    type Item = Result<(u64, Vec<u8>), ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() {
            let (pool, after, t, e) = (
                self.source.store.pool().clone(),
                i64_of(self.after),
                self.tenant.clone(),
                self.extension.clone(),
            );
            let rows = self.source.store.run(async move {
                let c = pool.get().await.map_err(|e| chain(&e))?;
                let st = c
                    .prepare_cached(
                        "SELECT seq, line FROM audit_records
                         WHERE seq > $1 AND ($2::text IS NULL OR tenant = $2)
                           AND ($3::text IS NULL OR extension = $3)
                         ORDER BY seq LIMIT $4",
                    )
                    .await
                    .map_err(|e| chain(&e))?;
                let rows = c
                    .query(&st, &[&after, &t, &e, &PAGE])
                    .await
                    .map_err(|e| chain(&e))?;
                rows.iter()
                    .map(|r| {
                        let seq: i64 = r.try_get(0)?;
                        let line: String = r.try_get(1)?;
                        Ok((u64_of(seq), line.into_bytes()))
                    })
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                    .map_err(|e| chain(&e))
            });
            match rows {
                Ok(Ok(rows)) => self.page.extend(rows),
                Ok(Err(m)) => return Some(Err(self.source.io(&io::Error::other(m)))),
                Err(e) => return Some(Err(self.source.io(&e))),
            }
        }
        let (seq, line) = self.page.pop_front()?;
        self.after = seq;
        Some(Ok((seq, line)))
    }
}

impl AuditSource for PgAuditSource {
    fn location(&self) -> String {
        format!("{} table audit_records", self.store.location())
    }

    /// With a tenant or extension, only its rows are read (by SQL), each line checked alone
    /// (`Reader::unchained`); without, the whole chain is read and its links checked too.
    fn read(&self, filter: Filter) -> Result<Reader, ChainError> {
        let lines = Lines {
            source: self.clone(),
            after: 0,
            tenant: filter.tenant.clone(),
            extension: filter.extension.clone(),
            page: VecDeque::new(),
        };
        Ok(if filter.tenant.is_some() || filter.extension.is_some() {
            Reader::unchained(lines, filter)
        } else {
            Reader::from_lines(lines, filter)
        })
    }

    fn verify(
        &self,
        key: Option<&AuditKey>,
        seen: &mut dyn FnMut(u64, &str),
    ) -> Result<VerifyReport, ChainError> {
        let store = self.store.clone();
        // A connection of its own: the snapshot's transaction ends when it closes, however
        // this returns.
        let client = self
            .store
            .run(async move {
                let c = store.dedicated().await?;
                // The walk (and `seen`) runs between pages while the snapshot stays open: give
                // it longer than a pooled session's 10 s before the server ends it.
                c.batch_execute(
                    "SET idle_in_transaction_session_timeout = '5min';
                     BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                )
                .await?;
                let head = match c
                    .query_opt("SELECT seq, hash, mac FROM audit_head WHERE id = 1", &[])
                    .await?
                {
                    Some(r) => Some(HeadRow {
                        seq: u64_of(r.try_get(0)?),
                        hash: r.try_get(1)?,
                        mac: r.try_get(2)?,
                    }),
                    None => None,
                };
                Ok::<_, tokio_postgres::Error>((Arc::new(c), head))
            })
            .map_err(|e| self.io(&e))?
            .map_err(|e| self.io(&e));
        let (client, head) = client?;
        let Some(head) = head else {
            return Err(ChainError::HeadMissing {
                path: head_location(&self.store),
            });
        };
        let view = HeadView {
            seq: head.seq,
            hash: head.hash,
            mac: head.mac,
            location: head_location(&self.store),
        };
        // Each row's stored hash, checked against the one computed from its line as the walk
        // reaches it.
        let stored: RefCell<VecDeque<(u64, String)>> = RefCell::new(VecDeque::new());
        let mismatch: RefCell<Option<ChainError>> = RefCell::new(None);
        let mut after = 0i64;
        let mut page: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut failed = false;
        let lines = std::iter::from_fn(|| {
            if failed {
                return None;
            }
            if page.is_empty() {
                let c = Arc::clone(&client);
                let rows = self.store.run(async move {
                    c.query(
                        "SELECT seq, line, hash, tenant, extension, event FROM audit_records
                         WHERE seq > $1 ORDER BY seq LIMIT $2",
                        &[&after, &PAGE],
                    )
                    .await
                });
                let rows = match rows {
                    Ok(Ok(rows)) => rows,
                    Ok(Err(e)) => {
                        failed = true;
                        return Some(Err(self.io(&e)));
                    }
                    Err(e) => {
                        failed = true;
                        return Some(Err(self.io(&e)));
                    }
                };
                for r in rows {
                    let row = (|| {
                        let seq: i64 = r.try_get(0)?;
                        let line: String = r.try_get(1)?;
                        let hash: String = r.try_get(2)?;
                        let columns: (Option<String>, Option<String>, String) =
                            (r.try_get(3)?, r.try_get(4)?, r.try_get(5)?);
                        Ok::<_, tokio_postgres::Error>((u64_of(seq), line, hash, columns))
                    })();
                    match row {
                        Ok((seq, line, hash, columns)) => {
                            // The columns listings filter on must say what the line says
                            // (outside attack: a record's tenant column changed hid it from
                            // both tenants' listings while the chain verified).
                            if mismatch.borrow().is_none()
                                && let Some(reason) = columns_differ(&line, &columns)
                            {
                                *mismatch.borrow_mut() =
                                    Some(ChainError::Malformed { line: seq, reason });
                            }
                            after = i64_of(seq);
                            stored.borrow_mut().push_back((seq, hash));
                            page.push_back((seq, line.into_bytes()));
                        }
                        Err(e) => {
                            failed = true;
                            return Some(Err(self.io(&e)));
                        }
                    }
                }
            }
            page.pop_front().map(Ok)
        });
        let report = verify_lines(&view, lines, key, &mut |seq, hash| {
            let kept = stored.borrow_mut().pop_front();
            if let Some((s, h)) = kept
                && (s != seq || h != hash)
                && mismatch.borrow().is_none()
            {
                *mismatch.borrow_mut() = Some(ChainError::Hash {
                    line: seq,
                    stored: h,
                    computed: hash.to_owned(),
                });
            }
            seen(seq, hash);
        })?;
        match mismatch.into_inner() {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// Why a row's `tenant`, `extension` and `event` columns do not match its line, if they do
/// not.
fn columns_differ(
    line: &str,
    (tenant, extension, event): &(Option<String>, Option<String>, String),
) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        // The walk reports a line that does not parse.
        Err(_) => return None,
    };
    let record = &v["record"];
    let text = |k: &str| record[k].as_str().map(str::to_owned);
    let expected = (
        text("tenant"),
        text("extension"),
        text("event").unwrap_or_default(),
    );
    (expected != (tenant.clone(), extension.clone(), event.clone())).then(|| {
        "its tenant, extension or event column does not match its line (the row was edited)"
            .to_owned()
    })
}
