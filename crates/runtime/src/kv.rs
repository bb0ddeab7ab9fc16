//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` (wit/deps/keyvalue): a store private to
//! the call's (tenant, extension), on the host's [`KvBackend`].
//!
//! `open` is where the grant is checked: without one it returns `access-denied` and records a
//! denial (target: the bucket name); with one it records a grant once per bucket. Every bucket
//! the guest opens is scoped by the host (tenant and extension come from [`KvAccess`], never
//! from the guest), and the backend keeps each part of the scope in its own column. Key and
//! value sizes are checked before the backend is called; quotas are enforced by the backend in
//! the write's transaction. A refusal for a limit is an `other` error the guest sees plus a
//! denial in the audit. Backend calls run on tokio's blocking pool (SQLite fsyncs), except
//! those the backend says are quick (`KvBackend::may_block`, `get_now`: a read of keys, or of
//! a value of at most [`GET_NOW_BYTES`], not waiting for another read), which run where they
//! are asked: the pool's thread hops cost more than such a read.
//!
//! Host memory per call: a `get-many` answer is capped at [`Quota::max_read_bytes`] (checked
//! from stored lengths before any value is read, duplicates deduplicated for reading but
//! counted for the answer), so a guest cannot make the host hold far more than its own limits.
//! A blocking job whose call has gone (time-out) is told so through a [`Cancel`] flag, which
//! batch operations check between keys.

use std::sync::Arc;

use warden_call::{Ledger, Withheld};
use warden_kv::{
    BucketName, Cancel, GET_NOW_BYTES, KvBackend, KvError, KvOp, LIST_PAGE_KEYS, MAX_BATCH_KEYS,
    Quota, Scope,
};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use warden_call::Capability;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use store::Error;

use warden_kv::KvAccess;

/// An open bucket: the scope it was opened with (only a granted `open` creates one).
pub struct Bucket {
    access: KvAccess,
    scope: Arc<Scope>,
}

/// What `wasi:keyvalue` may touch of a call: the install's key-value grant (none: every
/// `open` denied), the call's resource table (open buckets) and its ledger.
pub(crate) struct KvView<'a> {
    pub(crate) access: Option<&'a KvAccess>,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) ledger: &'a Ledger,
    pub(crate) withheld: Withheld,
    /// Set when an operation was refused for a quota (a process is told `limit`).
    pub(crate) quota_hit: bool,
}

struct Keyvalue;

impl HasData for Keyvalue {
    type Data<'a> = KvView<'a>;
}

/// Links `wasi:keyvalue`, with `view` giving each call's grant, table and ledger.
pub(crate) fn add_to_linker<T: Send + 'static>(
    l: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    bindings::Imports::add_to_linker::<T, Keyvalue>(l, view)
}

/// Cancels its flag when dropped: the future awaiting a blocking job is dropped when the call
/// times out or is cancelled, and the job (which tokio cannot stop) then sees the flag.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs a backend operation on the blocking pool: SQLite may wait on fsync or a lock. `f`
/// gets a flag that is set once this future is dropped (the call is gone).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce(&Cancel) -> Result<T, KvError> + Send + 'static,
) -> Result<T, KvError> {
    let guard = CancelOnDrop(Cancel::new());
    let cancel = guard.0.clone();
    let result = tokio::task::spawn_blocking(move || f(&cancel))
        .await
        .unwrap_or_else(|e| Err(KvError::storage(e)));
    drop(guard);
    result
}

impl KvView<'_> {
    fn bucket(&mut self, b: &Resource<Bucket>) -> wasmtime::Result<(KvAccess, Arc<Scope>)> {
        let bucket = self.table.get(b)?;
        Ok((bucket.access.clone(), Arc::clone(&bucket.scope)))
    }

    /// What the guest sees for a failed operation; limits are also recorded as ledger.
    fn kv_error(&self, scope: &Scope, e: KvError) -> Error {
        match e {
            // Only when the call is gone, so nobody sees it; mapped for completeness.
            KvError::Cancelled => Error::Other("cancelled".into()),
            KvError::Storage(failure) => {
                let detail = warden_call::text::chain(&failure);
                // The detail may name host paths: the operator's log gets it, the guest not.
                tracing::warn!(target: "warden::kv", tenant = %scope.tenant(), extension = %scope.extension(), "key-value storage error: {detail}");
                Error::Other("storage error".into())
            }
            e => {
                if e.is_quota() {
                    self.ledger
                        .deny(Capability::Kv, scope.bucket().as_str(), Some(e.to_string()));
                }
                Error::Other(e.to_string())
            }
        }
    }

    /// Runs `op` for the bucket `b` (on the blocking pool if the backend may block), mapping
    /// errors for the guest. Each `op` checks sizes against the quota before it touches the
    /// backend.
    async fn kv_op<T: Send + 'static>(
        &mut self,
        b: &Resource<Bucket>,
        kind: KvOp,
        op: impl FnOnce(&dyn KvBackend, &Scope, &Quota, &Cancel) -> Result<T, KvError> + Send + 'static,
    ) -> wasmtime::Result<Result<T, Error>> {
        let (access, scope) = self.bucket(b)?;
        Ok(self.run_on(access, scope, kind, op).await)
    }

    /// `op` on the bucket's store, its errors mapped: the body of [`KvView::kv_op`] and
    /// [`KvView::kv_change`].
    async fn run_on<T: Send + 'static>(
        &mut self,
        access: KvAccess,
        scope: Arc<Scope>,
        kind: KvOp,
        op: impl FnOnce(&dyn KvBackend, &Scope, &Quota, &Cancel) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, Error> {
        let result = if access.backend().may_block(kind) {
            let s = Arc::clone(&scope);
            blocking(move |c| op(access.backend(), &s, access.quota(), c)).await
        } else {
            op(access.backend(), &scope, access.quota(), &Cancel::new())
        };
        self.answer(&scope, result)
    }

    /// [`KvView::kv_op`] for an operation that changes the store: the call's witness is told
    /// first (its start is recorded before anything is written), and if it refuses, nothing is.
    async fn kv_change<T: Send + 'static>(
        &mut self,
        b: &Resource<Bucket>,
        op: impl FnOnce(&dyn KvBackend, &Scope, &Quota, &Cancel) -> Result<T, KvError> + Send + 'static,
    ) -> wasmtime::Result<Result<T, Error>> {
        let (access, scope) = self.bucket(b)?;
        if let Err(why) = self.ledger.before_change(Capability::Kv).await {
            return Ok(Err(Error::Other(why)));
        }
        Ok(self.run_on(access, scope, KvOp::Other, op).await)
    }

    /// A value for the guest, or its error mapped (limits also recorded as ledger).
    fn answer<T>(&mut self, scope: &Scope, result: Result<T, KvError>) -> Result<T, Error> {
        result.map_err(|e| {
            self.quota_hit |= e.is_quota();
            self.kv_error(scope, e)
        })
    }
}

fn check_keys<'a>(
    q: &Quota,
    keys: impl ExactSizeIterator<Item = &'a String>,
) -> Result<(), KvError> {
    if keys.len() > MAX_BATCH_KEYS {
        return Err(KvError::BatchTooLarge {
            max: MAX_BATCH_KEYS,
        });
    }
    keys.into_iter().try_for_each(|k| q.check_key(k))
}

impl store::Host for KvView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        let Some(access) = self.access.cloned() else {
            self.ledger.deny(
                Capability::Kv,
                &identifier,
                Some(self.withheld.reason(Capability::Kv)),
            );
            return Ok(Err(Error::AccessDenied));
        };
        let Ok(name) = BucketName::new(&identifier) else {
            return Ok(Err(Error::NoSuchStore));
        };
        self.ledger.allow(Capability::Kv, name.as_str());
        let scope = access.scope(name);
        let bucket = Bucket {
            access,
            scope: Arc::new(scope),
        };
        Ok(Ok(self.table.push(bucket)?))
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (access, scope) = self.bucket(&b)?;
        let now = access
            .quota()
            .check_key(&key)
            .map(|()| access.backend().get_now(&scope, &key, GET_NOW_BYTES))
            .transpose();
        if let Some(result) = now {
            return Ok(self.answer(&scope, result.and_then(|r| r)));
        }
        self.kv_op(&b, KvOp::Other, move |kv, s, _, _| kv.get(s, &key))
            .await
    }

    async fn set(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.kv_change(&b, move |kv, s, q, _| {
            q.check_key(&key)?;
            q.check_value(value.len())?;
            kv.set(s, &key, &value, q)
        })
        .await
    }

    async fn delete(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.kv_change(&b, move |kv, s, q, _| {
            q.check_key(&key)?;
            kv.delete(s, &key)
        })
        .await
    }

    async fn exists(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        self.kv_op(&b, KvOp::ReadKeys, move |kv, s, q, _| {
            q.check_key(&key)?;
            kv.exists(s, &key)
        })
        .await
    }

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, Error>> {
        let page = self
            .kv_op(&b, KvOp::ReadKeys, move |kv, s, _, _| {
                kv.list_keys(s, cursor, LIST_PAGE_KEYS)
            })
            .await?;
        Ok(page.map(|p| store::KeyResponse {
            keys: p.keys,
            cursor: p.cursor,
        }))
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        self.kv_change(&b, move |kv, s, q, _| {
            q.check_key(&key)?;
            kv.increment(s, &key, delta, q)
        })
        .await
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, Error>> {
        self.kv_op(&b, KvOp::Other, move |kv, s, q, c| {
            check_keys(q, keys.iter())?;
            let values = kv.get_many(s, &keys, q.max_read_bytes(), c)?;
            Ok(keys
                .into_iter()
                .zip(values)
                .map(|(k, v)| v.map(|v| (k, v)))
                .collect())
        })
        .await
    }

    async fn set_many(
        &mut self,
        b: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.kv_change(&b, move |kv, s, q, c| {
            check_keys(q, key_values.iter().map(|(k, _)| k))?;
            key_values
                .iter()
                .try_for_each(|(_, v)| q.check_value(v.len()))?;
            kv.set_many(s, &key_values, q, c)
        })
        .await
    }

    async fn delete_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.kv_change(&b, move |kv, s, q, c| {
            check_keys(q, keys.iter())?;
            kv.delete_many(s, &keys, c)
        })
        .await
    }
}

/// Why a process extension's `kv.*` request failed, as the component sees it: `access-denied`
/// (with the reason the denial was recorded with), `no-such-store`, or another error.
pub(crate) enum KvRefusal {
    Denied(String),
    NoSuchStore,
    Limit(String),
    Other(String),
}

/// A process extension's `kv.*` requests: each opens the bucket (the grant check and its
/// record, exactly as a component's `open`), does one operation through the same bucket
/// methods, and closes it.
impl KvView<'_> {
    async fn opened(&mut self, bucket: String) -> Result<Resource<Bucket>, KvRefusal> {
        match store::Host::open(self, bucket).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(Error::AccessDenied)) => {
                Err(KvRefusal::Denied(self.withheld.reason(Capability::Kv)))
            }
            Ok(Err(Error::NoSuchStore)) => Err(KvRefusal::NoSuchStore),
            Ok(Err(Error::Other(m))) => Err(KvRefusal::Other(m)),
            Err(e) => Err(KvRefusal::Other(e.to_string())),
        }
    }

    async fn closed<T>(
        &mut self,
        b: Resource<Bucket>,
        r: wasmtime::Result<Result<T, Error>>,
    ) -> Result<T, KvRefusal> {
        let _ = self.table.delete(b);
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Error::AccessDenied)) => {
                Err(KvRefusal::Denied(self.withheld.reason(Capability::Kv)))
            }
            Ok(Err(Error::NoSuchStore)) => Err(KvRefusal::NoSuchStore),
            Ok(Err(Error::Other(m))) if self.quota_hit => Err(KvRefusal::Limit(m)),
            Ok(Err(Error::Other(m))) => Err(KvRefusal::Other(m)),
            Err(e) => Err(KvRefusal::Other(e.to_string())),
        }
    }

    pub(crate) async fn get_one(
        &mut self,
        bucket: String,
        key: String,
    ) -> Result<Option<Vec<u8>>, KvRefusal> {
        let b = self.opened(bucket).await?;
        let r = store::HostBucket::get(self, Resource::new_borrow(b.rep()), key).await;
        self.closed(b, r).await
    }

    pub(crate) async fn set_one(
        &mut self,
        bucket: String,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvRefusal> {
        let b = self.opened(bucket).await?;
        let r = store::HostBucket::set(self, Resource::new_borrow(b.rep()), key, value).await;
        self.closed(b, r).await
    }

    pub(crate) async fn delete_one(
        &mut self,
        bucket: String,
        key: String,
    ) -> Result<(), KvRefusal> {
        let b = self.opened(bucket).await?;
        let r = store::HostBucket::delete(self, Resource::new_borrow(b.rep()), key).await;
        self.closed(b, r).await
    }

    pub(crate) async fn increment_one(
        &mut self,
        bucket: String,
        key: String,
        delta: u64,
    ) -> Result<u64, KvRefusal> {
        let b = self.opened(bucket).await?;
        let r = atomics::Host::increment(self, Resource::new_borrow(b.rep()), key, delta).await;
        self.closed(b, r).await
    }

    pub(crate) async fn list_page(
        &mut self,
        bucket: String,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>), KvRefusal> {
        let b = self.opened(bucket).await?;
        let r = store::HostBucket::list_keys(self, Resource::new_borrow(b.rep()), cursor).await;
        self.closed(b, r).await.map(|p| (p.keys, p.cursor))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// When the future awaiting a blocking job is dropped (the call timed out), the job's
    /// flag is set, so a batch stops at its next key instead of running to the end.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_dropped_call_cancels_its_blocking_job() {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (seen_tx, seen_rx) = mpsc::channel();
        let job = blocking(move |c: &Cancel| {
            let c = c.clone();
            let _ = started_tx.send(());
            while !c.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = seen_tx.send(());
            Err::<(), _>(KvError::Cancelled)
        });
        let mut job = Box::pin(job);
        tokio::select! {
            _ = &mut job => panic!("the job cannot end before it is cancelled"),
            r = started_rx => r.unwrap(),
        }
        drop(job);
        // Generous bound so a broken flag fails the test instead of hanging it.
        let seen =
            tokio::task::spawn_blocking(move || seen_rx.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap();
        assert!(seen.is_ok(), "the blocking job never saw the cancellation");
    }
}
