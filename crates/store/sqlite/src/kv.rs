//! [`KvBackend`] on `DATA/warden.db`, in the `kv_*` tables (`schema.rs`).
//!
//! Durability: WAL with `synchronous=FULL`, so a write acknowledged to the guest has been
//! fsynced and survives a crash or power loss. Writes run in `BEGIN IMMEDIATE` transactions
//! (the quota is read and updated under the database's write lock, so writers from any
//! connection or process cannot race past it). Keys and bucket names are stored as BLOBs and
//! compared byte for byte (no collation, no NUL truncation).
//!
//! The file is created 0600 and refused if group or others may read it
//! ([`crate::prepare_db_file`]). `list-keys` cursors are `seq`, a counter per (tenant,
//! extension) (`kv_usage.seq`) given to each new key, not the table's global rowid, whose gaps
//! would count other tenants' inserts.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use warden_kv::{
    Cancel, EntryRow, KeyPage, KvBackend, KvError, KvOp, KvRow, Quota, Scope, Usage, UsageRow,
    batch_read, entry_bytes, parse_counter,
};

use crate::{file, schema};

/// The SQLite backend. Two connections, each used by one operation at a time: one for writes
/// (and batch reads), one for single reads, which WAL lets read the last commit while a write
/// waits for its fsync; so a read never waits for a write, and is quick enough to run where it
/// is asked (`may_block`).
pub struct SqliteKv {
    conn: Mutex<Connection>,
    reader: Mutex<Connection>,
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> KvError {
    KvError::storage(e)
}

impl SqliteKv {
    /// Opens (creating if needed) the database at `path` and the `kv_*` tables, migrating
    /// tables written by older versions.
    pub fn open(path: &Path) -> Result<SqliteKv, KvError> {
        let conn = file::connect(path, schema::kv).map_err(storage)?;
        let reader = file::connect(path, schema::kv).map_err(storage)?;
        Ok(SqliteKv {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, KvError> {
        self.conn
            .lock()
            .map_err(|_| KvError::storage("connection lock poisoned"))
    }

    fn reader(&self) -> Result<MutexGuard<'_, Connection>, KvError> {
        self.reader
            .lock()
            .map_err(|_| KvError::storage("connection lock poisoned"))
    }

    /// Runs `f` in a write transaction and commits only if it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let out = f(&tx)?;
        tx.commit().map_err(storage)?;
        Ok(out)
    }
}

/// The bytes an entry counts for in the quota (key and value), without reading the value.
fn entry_len(tx: &Connection, s: &Scope, key: &str) -> Result<Option<u64>, KvError> {
    Ok(value_len(tx, s, key)?
        .map(|l| entry_bytes(s.bucket(), key, usize::try_from(l).unwrap_or(usize::MAX))))
}

/// `SELECT what FROM kv_entries` for one key of the scope: its row's value of `what`.
fn by_key<T: rusqlite::types::FromSql>(
    c: &Connection,
    what: &str,
    s: &Scope,
    key: &str,
) -> Result<Option<T>, KvError> {
    let sql = format!(
        "SELECT {what} FROM kv_entries
         WHERE tenant = ?1 AND extension = ?2 AND bucket = ?3 AND key = ?4"
    );
    c.prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row(
                params![
                    s.tenant().as_str(),
                    s.extension().as_str(),
                    s.bucket().as_str().as_bytes(),
                    key.as_bytes()
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(storage)
}

/// The stored value's length, without reading the value.
fn value_len(c: &Connection, s: &Scope, key: &str) -> Result<Option<u64>, KvError> {
    Ok(by_key::<i64>(c, "length(value)", s, key)?.map(|l| u64::try_from(l).unwrap_or(u64::MAX)))
}

fn read(c: &Connection, s: &Scope, key: &str) -> Result<Option<Vec<u8>>, KvError> {
    by_key(c, "value", s, key)
}

fn usage(tx: &Connection, s: &Scope) -> Result<Usage, KvError> {
    let u = tx
        .prepare_cached(
            "SELECT keys, bytes, seq FROM kv_usage WHERE tenant = ?1 AND extension = ?2",
        )
        .and_then(|mut st| {
            st.query_row(params![s.tenant().as_str(), s.extension().as_str()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()
        })
        .map_err(storage)?;
    Ok(u.map_or(Usage::default(), |(k, b, q)| Usage {
        keys: u64::try_from(k).unwrap_or(0),
        bytes: u64::try_from(b).unwrap_or(0),
        seq: u64::try_from(q).unwrap_or(0),
    }))
}

fn save_usage(tx: &Connection, s: &Scope, u: Usage) -> Result<(), KvError> {
    tx.prepare_cached(
        "INSERT INTO kv_usage (tenant, extension, keys, bytes, seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tenant, extension) DO UPDATE
         SET keys = excluded.keys, bytes = excluded.bytes, seq = excluded.seq",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.tenant().as_str(),
            s.extension().as_str(),
            i64::try_from(u.keys).unwrap_or(i64::MAX),
            i64::try_from(u.bytes).unwrap_or(i64::MAX),
            i64::try_from(u.seq).unwrap_or(i64::MAX)
        ])
    })
    .map_err(storage)?;
    Ok(())
}

/// One set inside a write transaction: checks, accounts and writes.
fn put(
    tx: &Connection,
    s: &Scope,
    key: &str,
    value: &[u8],
    quota: &Quota,
    u: Usage,
) -> Result<Usage, KvError> {
    quota.check_key(key)?;
    quota.check_value(value.len())?;
    let old = entry_len(tx, s, key)?;
    let mut u = quota.apply(u, old, Some(entry_bytes(s.bucket(), key, value.len())))?;
    // A new key takes the next number of its (tenant, extension)'s counter, which only grows
    // (under the write lock, so no two keys get the same, and a number freed by a delete is
    // never reused: a listing in progress cannot skip a key inserted after its cursor). A
    // replaced key keeps its place in the listing order.
    if old.is_none() {
        u.seq = u.seq.saturating_add(1);
    }
    tx.prepare_cached(
        "INSERT INTO kv_entries (tenant, extension, bucket, key, value, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant, extension, bucket, key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.tenant().as_str(),
            s.extension().as_str(),
            s.bucket().as_str().as_bytes(),
            key.as_bytes(),
            value,
            i64::try_from(u.seq).unwrap_or(i64::MAX)
        ])
    })
    .map_err(storage)?;
    Ok(u)
}

fn remove(
    tx: &Connection,
    s: &Scope,
    key: &str,
    quota: &Quota,
    u: Usage,
) -> Result<Usage, KvError> {
    let Some(old) = entry_len(tx, s, key)? else {
        return Ok(u);
    };
    tx.prepare_cached(
        "DELETE FROM kv_entries WHERE tenant = ?1 AND extension = ?2 AND bucket = ?3 AND key = ?4",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.tenant().as_str(),
            s.extension().as_str(),
            s.bucket().as_str().as_bytes(),
            key.as_bytes()
        ])
    })
    .map_err(storage)?;
    quota.apply(u, Some(old), None)
}

impl KvBackend for SqliteKv {
    fn may_block(&self, op: KvOp) -> bool {
        // Keys only, on the reader, when no other read holds it.
        op != KvOp::ReadKeys || self.reader.try_lock().is_err()
    }

    fn get_now(
        &self,
        scope: &Scope,
        key: &str,
        max: usize,
    ) -> Option<Result<Option<Vec<u8>>, KvError>> {
        // Not while another read holds the reader; and the length first (SQLite reads it from
        // the record's header), so a large value is left to the blocking pool unread.
        let reader = self.reader.try_lock().ok()?;
        match value_len(&reader, scope, key) {
            Ok(Some(n)) if n > u64::try_from(max).unwrap_or(u64::MAX) => None,
            Ok(Some(_)) => Some(read(&reader, scope, key)),
            Ok(None) => Some(Ok(None)),
            Err(e) => Some(Err(e)),
        }
    }

    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        read(&*self.reader()?, scope, key)
    }

    fn set(&self, scope: &Scope, key: &str, value: &[u8], quota: &Quota) -> Result<(), KvError> {
        self.write(|tx| {
            let u = put(tx, scope, key, value, quota, usage(tx, scope)?)?;
            save_usage(tx, scope, u)
        })
    }

    fn delete(&self, scope: &Scope, key: &str) -> Result<(), KvError> {
        // Deleting only shrinks, so any quota accepts it.
        self.write(|tx| {
            let u = remove(tx, scope, key, &Quota::default(), usage(tx, scope)?)?;
            save_usage(tx, scope, u)
        })
    }

    fn exists(&self, scope: &Scope, key: &str) -> Result<bool, KvError> {
        Ok(by_key::<i64>(&*self.reader()?, "1", scope, key)?.is_some())
    }

    fn list_keys(
        &self,
        scope: &Scope,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        let s = scope;
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, key FROM kv_entries
                 WHERE tenant = ?1 AND extension = ?2 AND bucket = ?3 AND seq > ?4
                 ORDER BY seq LIMIT ?5",
            )
            .map_err(storage)?;
        let after = i64::try_from(cursor.unwrap_or(0)).unwrap_or(i64::MAX);
        let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![
                    s.tenant().as_str(),
                    s.extension().as_str(),
                    s.bucket().as_str().as_bytes(),
                    after,
                    take
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .map_err(storage)?;
        let mut page = KeyPage::default();
        let mut last = 0i64;
        for row in rows {
            let (seq, key) = row.map_err(storage)?;
            if page.keys.len() == limit {
                page.cursor = Some(u64::try_from(last).unwrap_or(0));
                break;
            }
            let key = String::from_utf8(key)
                .map_err(|_| KvError::storage("a stored key is not UTF-8"))?;
            page.keys.push(key);
            last = seq;
        }
        Ok(page)
    }

    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: u64,
        quota: &Quota,
    ) -> Result<u64, KvError> {
        self.write(|tx| {
            let n = parse_counter(read(tx, scope, key)?.as_deref())?
                .checked_add(delta)
                .ok_or(KvError::Overflow)?;
            let u = put(
                tx,
                scope,
                key,
                n.to_string().as_bytes(),
                quota,
                usage(tx, scope)?,
            )?;
            save_usage(tx, scope, u)?;
            Ok(n)
        })
    }

    fn get_many(
        &self,
        scope: &Scope,
        keys: &[String],
        max_bytes: u64,
        cancel: &Cancel,
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let mut conn = self.conn()?;
        // One read transaction: the lengths checked and the values read come from the same
        // snapshot.
        let tx = conn.transaction().map_err(storage)?;
        batch_read(
            keys,
            max_bytes,
            cancel,
            |k| value_len(&tx, scope, k),
            |k| read(&tx, scope, k),
        )
    }

    fn set_many(
        &self,
        scope: &Scope,
        pairs: &[(String, Vec<u8>)],
        quota: &Quota,
        cancel: &Cancel,
    ) -> Result<(), KvError> {
        // A cancelled batch returns before commit: the transaction rolls back, nothing is
        // written (the caller is gone and will never see the result).
        self.write(|tx| {
            let mut u = usage(tx, scope)?;
            for (k, v) in pairs {
                cancel.check()?;
                u = put(tx, scope, k, v, quota, u)?;
            }
            cancel.check()?;
            save_usage(tx, scope, u)
        })
    }

    fn delete_many(&self, scope: &Scope, keys: &[String], cancel: &Cancel) -> Result<(), KvError> {
        self.write(|tx| {
            let mut u = usage(tx, scope)?;
            for k in keys {
                cancel.check()?;
                u = remove(tx, scope, k, &Quota::default(), u)?;
            }
            cancel.check()?;
            save_usage(tx, scope, u)
        })
    }
}

/// Every row `conn` sees (in a read transaction, for a snapshot), in the order [`KvRow`]
/// documents, to `each`; stops at the first error `each` returns.
pub(crate) fn export_rows(
    conn: &Connection,
    each: &mut dyn FnMut(KvRow) -> Result<(), KvError>,
) -> Result<(), KvError> {
    {
        let mut st = conn
            .prepare(
                "SELECT tenant, extension, keys, bytes, seq FROM kv_usage
                     ORDER BY tenant, extension",
            )
            .map_err(storage)?;
        let mut rows = st.query([]).map_err(storage)?;
        while let Some(r) = rows.next().map_err(storage)? {
            each(KvRow::Usage(UsageRow {
                tenant: r.get(0).map_err(storage)?,
                extension: r.get(1).map_err(storage)?,
                keys: r.get(2).map_err(storage)?,
                bytes: r.get(3).map_err(storage)?,
                seq: r.get(4).map_err(storage)?,
            }))?;
        }
        let mut st = conn
            .prepare(
                "SELECT tenant, extension, bucket, key, value, seq FROM kv_entries
                     ORDER BY tenant, extension, bucket, key",
            )
            .map_err(storage)?;
        let mut rows = st.query([]).map_err(storage)?;
        while let Some(r) = rows.next().map_err(storage)? {
            each(KvRow::Entry(EntryRow {
                tenant: r.get(0).map_err(storage)?,
                extension: r.get(1).map_err(storage)?,
                bucket: r.get(2).map_err(storage)?,
                key: r.get(3).map_err(storage)?,
                value: r.get(4).map_err(storage)?,
                seq: r.get(5).map_err(storage)?,
            }))?;
        }
    }
    Ok(())
}
