//! [`KvBackend`] in memory: for hosts without a data dir and for tests. Nothing survives the
//! process. One lock guards everything, so quota checks and writes are atomic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::{
    BucketName, Cancel, ExtensionId, KeyPage, KvBackend, KvError, KvOp, Quota, Scope, TenantName,
    Usage, batch_read, entry_bytes, parse_counter,
};

/// Entries of one bucket: key → (insertion sequence, the cursor order; value).
type Entries = HashMap<String, Entry>;
type Entry = (u64, Vec<u8>);

#[derive(Default)]
struct Store {
    usage: Usage,
    next_seq: u64,
    buckets: HashMap<BucketName, Entries>,
}

/// Every (tenant, extension)'s store.
type Stores = HashMap<(TenantName, ExtensionId), Store>;

/// A key-value store in memory, with the same scoping and quotas as every other backend.
#[derive(Default)]
pub struct MemoryKv {
    stores: Mutex<Stores>,
}

impl MemoryKv {
    pub fn new() -> MemoryKv {
        MemoryKv::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Stores>, KvError> {
        self.stores
            .lock()
            .map_err(|_| KvError::storage("store lock poisoned"))
    }

    fn read<T>(&self, s: &Scope, f: impl FnOnce(Option<&Entries>) -> T) -> Result<T, KvError> {
        let stores = self.lock()?;
        let entries = stores
            .get(&(s.tenant().clone(), s.extension().clone()))
            .and_then(|st| st.buckets.get(s.bucket()));
        Ok(f(entries))
    }

    /// Runs `f` on the scope's store under the lock. Every single write checks its quota
    /// before changing anything; batches undo their own partial work (see `set_many`).
    fn write<T>(
        &self,
        s: &Scope,
        f: impl FnOnce(&mut Store) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let mut stores = self.lock()?;
        f(stores
            .entry((s.tenant().clone(), s.extension().clone()))
            .or_default())
    }
}

fn put(
    st: &mut Store,
    b: &BucketName,
    key: &str,
    value: &[u8],
    quota: &Quota,
) -> Result<(), KvError> {
    quota.check_key(key)?;
    quota.check_value(value.len())?;
    let entries = st.buckets.entry(b.clone()).or_default();
    let old = entries.get(key).map(|(_, v)| entry_bytes(b, key, v.len()));
    st.usage = quota.apply(st.usage, old, Some(entry_bytes(b, key, value.len())))?;
    match entries.get_mut(key) {
        Some((_, v)) => *v = value.to_vec(),
        None => {
            st.next_seq += 1;
            entries.insert(key.to_string(), (st.next_seq, value.to_vec()));
        }
    }
    Ok(())
}

fn remove(st: &mut Store, b: &BucketName, key: &str) -> Result<(), KvError> {
    if let Some((_, v)) = st.buckets.get_mut(b).and_then(|e| e.remove(key)) {
        st.usage = Quota::default().apply(st.usage, Some(entry_bytes(b, key, v.len())), None)?;
    }
    Ok(())
}

impl KvBackend for MemoryKv {
    fn may_block(&self, op: KvOp) -> bool {
        // Batches may copy megabytes under the one lock: not where other calls wait.
        op != KvOp::ReadKeys
    }

    fn get_now(
        &self,
        scope: &Scope,
        key: &str,
        max: usize,
    ) -> Option<Result<Option<Vec<u8>>, KvError>> {
        let found = self.read(scope, |e| match e.and_then(|e| e.get(key)) {
            Some((_, v)) if v.len() > max => None,
            Some((_, v)) => Some(Some(v.clone())),
            None => Some(None),
        });
        found.transpose()
    }

    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.read(scope, |e| {
            e.and_then(|e| e.get(key)).map(|(_, v)| v.clone())
        })
    }

    fn set(&self, scope: &Scope, key: &str, value: &[u8], quota: &Quota) -> Result<(), KvError> {
        self.write(scope, |st| put(st, scope.bucket(), key, value, quota))
    }

    fn delete(&self, scope: &Scope, key: &str) -> Result<(), KvError> {
        self.write(scope, |st| remove(st, scope.bucket(), key))
    }

    fn exists(&self, scope: &Scope, key: &str) -> Result<bool, KvError> {
        self.read(scope, |e| e.is_some_and(|e| e.contains_key(key)))
    }

    fn list_keys(
        &self,
        scope: &Scope,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        self.read(scope, |e| {
            let after = cursor.unwrap_or(0);
            let mut found: Vec<(u64, &String)> = e
                .into_iter()
                .flat_map(|e| e.iter())
                .filter(|(_, (seq, _))| *seq > after)
                .map(|(k, (seq, _))| (*seq, k))
                .collect();
            found.sort_unstable();
            let more = found.len() > limit;
            found.truncate(limit);
            KeyPage {
                cursor: if more {
                    found.last().map(|(s, _)| *s)
                } else {
                    None
                },
                keys: found.into_iter().map(|(_, k)| k.clone()).collect(),
            }
        })
    }

    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: u64,
        quota: &Quota,
    ) -> Result<u64, KvError> {
        self.write(scope, |st| {
            let current = st
                .buckets
                .get(scope.bucket())
                .and_then(|e| e.get(key))
                .map(|(_, v)| v.as_slice());
            let n = parse_counter(current)?
                .checked_add(delta)
                .ok_or(KvError::Overflow)?;
            put(st, scope.bucket(), key, n.to_string().as_bytes(), quota)?;
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
        self.read(scope, |e| {
            let entry = |k: &str| e.and_then(|e| e.get(k)).map(|(_, v)| v);
            batch_read(
                keys,
                max_bytes,
                cancel,
                |k| Ok(entry(k).map(|v| v.len() as u64)),
                |k| Ok(entry(k).cloned()),
            )
        })?
    }

    fn set_many(
        &self,
        scope: &Scope,
        pairs: &[(String, Vec<u8>)],
        quota: &Quota,
        cancel: &Cancel,
    ) -> Result<(), KvError> {
        // Memory work is fast and bounded (1000 pairs under one lock): checked once, before.
        cancel.check()?;
        self.write(scope, |st| {
            let (usage, next_seq) = (st.usage, st.next_seq);
            let mut undo: Vec<(&str, Option<Entry>)> = Vec::new();
            for (k, v) in pairs {
                let before = st
                    .buckets
                    .get(scope.bucket())
                    .and_then(|e| e.get(k))
                    .cloned();
                if let Err(e) = put(st, scope.bucket(), k, v, quota) {
                    // All or nothing: restore what this batch changed, newest first.
                    let entries = st.buckets.entry(scope.bucket().clone()).or_default();
                    for (k, before) in undo.into_iter().rev() {
                        match before {
                            Some(old) => entries.insert(k.to_string(), old),
                            None => entries.remove(k),
                        };
                    }
                    st.usage = usage;
                    st.next_seq = next_seq;
                    return Err(e);
                }
                undo.push((k, before));
            }
            Ok(())
        })
    }

    fn delete_many(&self, scope: &Scope, keys: &[String], cancel: &Cancel) -> Result<(), KvError> {
        cancel.check()?;
        self.write(scope, |st| {
            keys.iter().try_for_each(|k| remove(st, scope.bucket(), k))
        })
    }
}
