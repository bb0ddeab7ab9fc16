//! [`KvBackend`] on PostgreSQL: the `kv_entries` and `kv_usage` tables.
//!
//! Every write is one READ COMMITTED transaction that first locks the (tenant, extension)'s
//! `kv_usage` row (an upsert that returns it: the row is created on the first write, and the
//! upsert takes the same row lock as `SELECT … FOR UPDATE`). That lock is the scope's write lock
//! on every runner: entries of a (tenant, extension) change only under it, and each statement
//! after it sees every write committed before it was granted, so [`Quota::apply`] runs on exact
//! numbers, as under SQLite's `BEGIN IMMEDIATE`. Two scopes never wait for each other.
//! Batches are all or nothing: a refusal, a failure or a cancellation returns before the
//! commit, and the transaction rolls back when its connection goes back to the pool.
//!
//! Keys and buckets are `bytea`, compared byte for byte. `list-keys` cursors are the per
//! (tenant, extension) `seq` of `kv_usage`, which only grows.

use std::collections::HashMap;

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::IsolationLevel;
use warden_kv::{
    Cancel, EntryRow, KeyPage, KvBackend, KvError, KvRow, Quota, Scope, Usage, UsageRow,
    batch_read, entry_bytes, parse_counter,
};

use crate::PgStore;

/// The key-value backend of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgKv {
    store: PgStore,
}

fn storage(e: impl Into<crate::BoxError>) -> KvError {
    KvError::storage(e)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A scope as owned column values, to move into the runtime.
#[derive(Clone)]
struct Cols {
    tenant: String,
    extension: String,
    bucket: Vec<u8>,
    scope: Scope,
}

impl Cols {
    fn of(s: &Scope) -> Cols {
        Cols {
            tenant: s.tenant().as_str().to_owned(),
            extension: s.extension().as_str().to_owned(),
            bucket: s.bucket().as_str().as_bytes().to_vec(),
            scope: s.clone(),
        }
    }
}

impl PgKv {
    pub(crate) fn new(store: PgStore) -> PgKv {
        PgKv { store }
    }

    /// Runs `f` on the store's runtime; a stopped runtime is a storage error.
    fn run<T, F>(&self, f: F) -> Result<T, KvError>
    where
        F: Future<Output = Result<T, KvError>> + Send + 'static,
        T: Send + 'static,
    {
        self.store.run(f).map_err(storage)?
    }

    fn client(&self) -> impl Future<Output = Result<Object, KvError>> + Send + 'static {
        let pool = self.store.pool().clone();
        async move { pool.get().await.map_err(storage) }
    }

    /// Every row, from one snapshot, in the order [`KvRow`] documents, to `each` (run on the
    /// store's runtime, so it must not block long); stops at the first error `each` returns.
    pub fn export<F>(&self, mut each: F) -> Result<(), KvError>
    where
        F: FnMut(KvRow) -> Result<(), KvError> + Send + 'static,
    {
        let client = self.client();
        self.run(async move {
            let mut c = client.await?;
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(storage)?;
            for r in tx
                .query(
                    "SELECT tenant, extension, keys, bytes, seq FROM kv_usage
                     ORDER BY tenant, extension",
                    &[],
                )
                .await
                .map_err(storage)?
            {
                each(KvRow::Usage(UsageRow {
                    tenant: r.try_get(0).map_err(storage)?,
                    extension: r.try_get(1).map_err(storage)?,
                    keys: r.try_get(2).map_err(storage)?,
                    bytes: r.try_get(3).map_err(storage)?,
                    seq: r.try_get(4).map_err(storage)?,
                }))?;
            }
            // By pages, each after the last row of the one before (the snapshot holds still);
            // small ones, since a value may be large: at most 64 values held at once.
            // The first page has no row before it ($1 false).
            let mut after: (bool, String, String, Vec<u8>, Vec<u8>) = Default::default();
            loop {
                let (started, t, x, b, k) = &after;
                let rows = tx
                    .query(
                        "SELECT tenant, extension, bucket, key, value, seq FROM kv_entries
                         WHERE NOT $1 OR (tenant, extension, bucket, key) > ($2, $3, $4, $5)
                         ORDER BY tenant, extension, bucket, key LIMIT 64",
                        &[started, t, x, b, k],
                    )
                    .await
                    .map_err(storage)?;
                let Some(last) = rows.last() else { break };
                after = (
                    true,
                    last.try_get(0).map_err(storage)?,
                    last.try_get(1).map_err(storage)?,
                    last.try_get(2).map_err(storage)?,
                    last.try_get(3).map_err(storage)?,
                );
                for r in rows {
                    each(KvRow::Entry(EntryRow {
                        tenant: r.try_get(0).map_err(storage)?,
                        extension: r.try_get(1).map_err(storage)?,
                        bucket: r.try_get(2).map_err(storage)?,
                        key: r.try_get(3).map_err(storage)?,
                        value: r.try_get(4).map_err(storage)?,
                        seq: r.try_get(5).map_err(storage)?,
                    }))?;
                }
            }
            tx.commit().await.map_err(storage)?;
            Ok(())
        })
    }
}

/// Locks the scope's usage row (creating it) and returns the usage: the write lock.
async fn lock_usage(tx: &Transaction<'_>, c: &Cols) -> Result<Usage, KvError> {
    let st = tx
        .prepare_cached(
            "INSERT INTO kv_usage AS u (tenant, extension, keys, bytes, seq)
             VALUES ($1, $2, 0, 0, 0)
             ON CONFLICT (tenant, extension) DO UPDATE SET keys = u.keys
             RETURNING keys, bytes, seq",
        )
        .await
        .map_err(storage)?;
    let row = tx
        .query_one(&st, &[&c.tenant, &c.extension])
        .await
        .map_err(storage)?;
    Ok(Usage {
        keys: u64_of(row.try_get(0).map_err(storage)?),
        bytes: u64_of(row.try_get(1).map_err(storage)?),
        seq: u64_of(row.try_get(2).map_err(storage)?),
    })
}

async fn save_usage(tx: &Transaction<'_>, c: &Cols, u: Usage) -> Result<(), KvError> {
    let st = tx
        .prepare_cached(
            "UPDATE kv_usage SET keys = $3, bytes = $4, seq = $5
             WHERE tenant = $1 AND extension = $2",
        )
        .await
        .map_err(storage)?;
    tx.execute(
        &st,
        &[
            &c.tenant,
            &c.extension,
            &i64_of(u.keys),
            &i64_of(u.bytes),
            &i64_of(u.seq),
        ],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// The stored values' lengths of `keys` (absent keys are not in the map), without the values.
async fn lengths(
    c: &impl deadpool_postgres::GenericClient,
    cols: &Cols,
    keys: &[&[u8]],
) -> Result<HashMap<Vec<u8>, u64>, KvError> {
    let st = c
        .prepare_cached(
            "SELECT key, octet_length(value) FROM kv_entries
             WHERE tenant = $1 AND extension = $2 AND bucket = $3 AND key = ANY($4)",
        )
        .await
        .map_err(storage)?;
    let rows = c
        .query(&st, &[&cols.tenant, &cols.extension, &cols.bucket, &keys])
        .await
        .map_err(storage)?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let key: Vec<u8> = r.try_get(0).map_err(storage)?;
        let len: i32 = r.try_get(1).map_err(storage)?;
        out.insert(key, u64::try_from(len).unwrap_or(0));
    }
    Ok(out)
}

async fn read_one(
    c: &impl deadpool_postgres::GenericClient,
    cols: &Cols,
    key: &[u8],
) -> Result<Option<Vec<u8>>, KvError> {
    let st = c
        .prepare_cached(
            "SELECT value FROM kv_entries
             WHERE tenant = $1 AND extension = $2 AND bucket = $3 AND key = $4",
        )
        .await
        .map_err(storage)?;
    c.query_opt(&st, &[&cols.tenant, &cols.extension, &cols.bucket, &key])
        .await
        .map_err(storage)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(storage)
}

/// Each key once, in first-seen order.
fn distinct<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    keys.filter(|k| seen.insert(*k)).collect()
}

fn bytes<'a>(keys: &[&'a str]) -> Vec<&'a [u8]> {
    keys.iter().map(|k| k.as_bytes()).collect()
}

/// Sets `pairs` in order inside a write transaction that holds the usage lock with usage `u`:
/// checks and accounts each (a duplicate key replaces the value its earlier pair set), then
/// writes them with one statement. Returns the new usage, which the caller saves.
async fn put_all(
    tx: &Transaction<'_>,
    c: &Cols,
    pairs: &[(String, Vec<u8>)],
    quota: &Quota,
    cancel: &Cancel,
    mut u: Usage,
) -> Result<Usage, KvError> {
    let wanted = distinct(pairs.iter().map(|(k, _)| k.as_str()));
    let stored = lengths(tx, c, &bytes(&wanted)).await?;
    // The entry bytes of each key as the batch has left it so far.
    let mut now: HashMap<&str, u64> = HashMap::new();
    // Each distinct key once, in first-set order: (key, index of its last value, its seq if new).
    let mut order: Vec<(&str, usize, i64)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        cancel.check()?;
        quota.check_key(k)?;
        quota.check_value(v.len())?;
        let old = match now.get(k.as_str()) {
            Some(b) => Some(*b),
            None => stored.get(k.as_bytes()).map(|l| {
                entry_bytes(
                    c.scope.bucket(),
                    k,
                    usize::try_from(*l).unwrap_or(usize::MAX),
                )
            }),
        };
        let new = entry_bytes(c.scope.bucket(), k, v.len());
        u = quota.apply(u, old, Some(new))?;
        // A new key takes the next number of its scope's counter (never reused); a replaced
        // key keeps its place in the listing order.
        let seq = if old.is_none() {
            u.seq = u.seq.saturating_add(1);
            i64_of(u.seq)
        } else {
            0
        };
        now.insert(k, new);
        match at.get(k.as_str()) {
            Some(&j) => {
                if let Some(o) = order.get_mut(j) {
                    o.1 = i;
                }
            }
            None => {
                at.insert(k, order.len());
                order.push((k, i, seq));
            }
        }
    }
    cancel.check()?;
    let keys: Vec<&[u8]> = order.iter().map(|(k, _, _)| k.as_bytes()).collect();
    let values: Vec<&[u8]> = order
        .iter()
        .map(|(_, i, _)| pairs.get(*i).map_or(&[][..], |(_, v)| v.as_slice()))
        .collect();
    let seqs: Vec<i64> = order.iter().map(|(_, _, s)| *s).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO kv_entries (tenant, extension, bucket, key, value, seq)
             SELECT $1, $2, $3, k, v, s FROM unnest($4::bytea[], $5::bytea[], $6::bigint[]) AS x (k, v, s)
             ON CONFLICT (tenant, extension, bucket, key) DO UPDATE SET value = excluded.value",
        )
        .await
        .map_err(storage)?;
    tx.execute(
        &st,
        &[&c.tenant, &c.extension, &c.bucket, &keys, &values, &seqs],
    )
    .await
    .map_err(storage)?;
    Ok(u)
}

/// Deletes `keys` inside a write transaction holding the usage lock; returns the new usage.
async fn delete_all(
    tx: &Transaction<'_>,
    c: &Cols,
    keys: &[String],
    cancel: &Cancel,
    mut u: Usage,
) -> Result<Usage, KvError> {
    let wanted = distinct(keys.iter().map(String::as_str));
    let stored = lengths(tx, c, &bytes(&wanted)).await?;
    let mut gone: Vec<&[u8]> = Vec::new();
    for k in wanted {
        cancel.check()?;
        if let Some(len) = stored.get(k.as_bytes()) {
            let old = entry_bytes(
                c.scope.bucket(),
                k,
                usize::try_from(*len).unwrap_or(usize::MAX),
            );
            // Deleting only shrinks, so any quota accepts it.
            u = Quota::default().apply(u, Some(old), None)?;
            gone.push(k.as_bytes());
        }
    }
    cancel.check()?;
    if !gone.is_empty() {
        let st = tx
            .prepare_cached(
                "DELETE FROM kv_entries
                 WHERE tenant = $1 AND extension = $2 AND bucket = $3 AND key = ANY($4)",
            )
            .await
            .map_err(storage)?;
        tx.execute(&st, &[&c.tenant, &c.extension, &c.bucket, &gone])
            .await
            .map_err(storage)?;
    }
    Ok(u)
}

impl KvBackend for PgKv {
    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (c, key, client) = (Cols::of(scope), key.to_owned(), self.client());
        self.run(async move { read_one(&client.await?, &c, key.as_bytes()).await })
    }

    fn set(&self, scope: &Scope, key: &str, value: &[u8], quota: &Quota) -> Result<(), KvError> {
        self.set_many(
            scope,
            &[(key.to_owned(), value.to_vec())],
            quota,
            &Cancel::new(),
        )
    }

    fn delete(&self, scope: &Scope, key: &str) -> Result<(), KvError> {
        self.delete_many(scope, &[key.to_owned()], &Cancel::new())
    }

    fn exists(&self, scope: &Scope, key: &str) -> Result<bool, KvError> {
        let (c, key, client) = (Cols::of(scope), key.to_owned(), self.client());
        self.run(async move {
            let client = client.await?;
            let st = client
                .prepare_cached(
                    "SELECT 1 FROM kv_entries
                     WHERE tenant = $1 AND extension = $2 AND bucket = $3 AND key = $4",
                )
                .await
                .map_err(storage)?;
            let row = client
                .query_opt(&st, &[&c.tenant, &c.extension, &c.bucket, &key.as_bytes()])
                .await
                .map_err(storage)?;
            Ok(row.is_some())
        })
    }

    fn list_keys(
        &self,
        scope: &Scope,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        let (c, client) = (Cols::of(scope), self.client());
        let after = i64_of(cursor.unwrap_or(0));
        let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.run(async move {
            let client = client.await?;
            let st = client
                .prepare_cached(
                    "SELECT seq, key FROM kv_entries
                     WHERE tenant = $1 AND extension = $2 AND bucket = $3 AND seq > $4
                     ORDER BY seq LIMIT $5",
                )
                .await
                .map_err(storage)?;
            let rows = client
                .query(&st, &[&c.tenant, &c.extension, &c.bucket, &after, &take])
                .await
                .map_err(storage)?;
            let mut page = KeyPage::default();
            let mut last = 0i64;
            for row in rows {
                if page.keys.len() == limit {
                    page.cursor = Some(u64_of(last));
                    break;
                }
                let seq: i64 = row.try_get(0).map_err(storage)?;
                let key: Vec<u8> = row.try_get(1).map_err(storage)?;
                let key = String::from_utf8(key)
                    .map_err(|_| KvError::storage("a stored key is not UTF-8"))?;
                page.keys.push(key);
                last = seq;
            }
            Ok(page)
        })
    }

    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: u64,
        quota: &Quota,
    ) -> Result<u64, KvError> {
        let (c, key, quota, client) = (Cols::of(scope), key.to_owned(), *quota, self.client());
        self.run(async move {
            let mut client = client.await?;
            let tx = client.transaction().await.map_err(storage)?;
            let u = lock_usage(&tx, &c).await?;
            // Read under the lock: no other writer of the scope can change it before commit.
            let n = parse_counter(read_one(&tx, &c, key.as_bytes()).await?.as_deref())?
                .checked_add(delta)
                .ok_or(KvError::Overflow)?;
            let pairs = [(key, n.to_string().into_bytes())];
            let u = put_all(&tx, &c, &pairs, &quota, &Cancel::new(), u).await?;
            save_usage(&tx, &c, u).await?;
            tx.commit().await.map_err(storage)?;
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
        let (c, keys, cancel, client) = (
            Cols::of(scope),
            keys.to_vec(),
            cancel.clone(),
            self.client(),
        );
        self.run(async move {
            let mut client = client.await?;
            // One snapshot: the lengths checked and the values read are the same rows.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(storage)?;
            let wanted = distinct(keys.iter().map(String::as_str));
            let lens = lengths(&tx, &c, &bytes(&wanted)).await?;
            let len = |k: &str| Ok(lens.get(k.as_bytes()).copied());
            // Sizes first, from the lengths only: an answer over `max_bytes` is refused before
            // a byte of it is read.
            batch_read(&keys, max_bytes, &cancel, len, |_| Ok(None))?;
            let present: Vec<&[u8]> = wanted
                .iter()
                .map(|k| k.as_bytes())
                .filter(|k| lens.contains_key(*k))
                .collect();
            let mut values = HashMap::new();
            if !present.is_empty() {
                let st = tx
                    .prepare_cached(
                        "SELECT key, value FROM kv_entries
                         WHERE tenant = $1 AND extension = $2 AND bucket = $3 AND key = ANY($4)",
                    )
                    .await
                    .map_err(storage)?;
                for r in tx
                    .query(&st, &[&c.tenant, &c.extension, &c.bucket, &present])
                    .await
                    .map_err(storage)?
                {
                    let k: Vec<u8> = r.try_get(0).map_err(storage)?;
                    let v: Vec<u8> = r.try_get(1).map_err(storage)?;
                    values.insert(k, v);
                }
            }
            let out = batch_read(&keys, max_bytes, &cancel, len, |k| {
                Ok(values.remove(k.as_bytes()))
            })?;
            tx.commit().await.map_err(storage)?;
            Ok(out)
        })
    }

    fn set_many(
        &self,
        scope: &Scope,
        pairs: &[(String, Vec<u8>)],
        quota: &Quota,
        cancel: &Cancel,
    ) -> Result<(), KvError> {
        // Refused before any round trip when a key or value is over its limit.
        for (k, v) in pairs {
            quota.check_key(k)?;
            quota.check_value(v.len())?;
        }
        cancel.check()?;
        let (c, pairs, quota, cancel, client) = (
            Cols::of(scope),
            pairs.to_vec(),
            *quota,
            cancel.clone(),
            self.client(),
        );
        self.run(async move {
            let mut client = client.await?;
            let tx = client.transaction().await.map_err(storage)?;
            let u = lock_usage(&tx, &c).await?;
            let u = put_all(&tx, &c, &pairs, &quota, &cancel, u).await?;
            save_usage(&tx, &c, u).await?;
            // The caller gone, nothing is written (it would never see the answer).
            cancel.check()?;
            tx.commit().await.map_err(storage)
        })
    }

    fn delete_many(&self, scope: &Scope, keys: &[String], cancel: &Cancel) -> Result<(), KvError> {
        cancel.check()?;
        let (c, keys, cancel, client) = (
            Cols::of(scope),
            keys.to_vec(),
            cancel.clone(),
            self.client(),
        );
        self.run(async move {
            let mut client = client.await?;
            let tx = client.transaction().await.map_err(storage)?;
            let u = lock_usage(&tx, &c).await?;
            let u = delete_all(&tx, &c, &keys, &cancel, u).await?;
            save_usage(&tx, &c, u).await?;
            cancel.check()?;
            tx.commit().await.map_err(storage)
        })
    }
}
