//! One call path for both worlds: look the install up, pass the audit gate, check the request,
//! take a permit (`max_concurrent_calls`; none free within `[policy] busy_wait` = `busy`), give
//! the call its capabilities, run it in a fresh instance (stopped if its install is taken away
//! meanwhile), and audit what it did.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use warden_call::HostFailure;
use warden_manifest::{ExtensionId, TenantName};
use warden_runtime::{CallCaps, CallError, CallOutcome, CallReport};

use crate::error::{CallFailure, Called};
use crate::host::Inner;
use crate::installed::{Code, ExtensionInfo, Loaded, Retired};
use crate::invoke::{HostInvoker, Via};
use crate::tenant::Tenant;

impl Tenant<'_> {
    /// Calls an rpc extension's `method` with `input`, in a fresh instance, with its limits.
    /// The answer carries the request id of the call's audit record and the guest's output.
    pub async fn call(
        &self,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
    ) -> Result<Called<Vec<u8>>, CallFailure> {
        self.inner
            .call_rpc(&self.name, id, method, input, self.via(None))
            .await
    }

    /// [`Tenant::call`], recorded under `request_id` (from [`Host::new_request_id`], or the
    /// caller's own: a service that has already told its client the id).
    pub async fn call_as(
        &self,
        request_id: String,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
    ) -> Result<Called<Vec<u8>>, CallFailure> {
        self.inner
            .call_rpc(&self.name, id, method, input, self.via(Some(request_id)))
            .await
    }

    /// Sends an HTTP request to an http extension, in a fresh instance, with its limits (or,
    /// to a remote extension, proxied to its origin).
    pub async fn call_http(
        &self,
        id: &ExtensionId,
        request: http::Request<Bytes>,
    ) -> Result<Called<http::Response<Bytes>>, CallFailure> {
        self.http(id, request, self.via(None)).await
    }

    /// [`Tenant::call_http`], recorded under `request_id` (see [`Tenant::call_as`]).
    pub async fn call_http_as(
        &self,
        request_id: String,
        id: &ExtensionId,
        request: http::Request<Bytes>,
    ) -> Result<Called<http::Response<Bytes>>, CallFailure> {
        self.http(id, request, self.via(Some(request_id))).await
    }

    /// How this view's calls are reached: at the top, under `request_id` (or a new one).
    fn via(&self, request_id: Option<String>) -> Via {
        Via {
            request_id,
            busy_wait: self.busy_wait,
            ..Via::default()
        }
    }

    async fn http(
        &self,
        id: &ExtensionId,
        request: http::Request<Bytes>,
        via: Via,
    ) -> Result<Called<http::Response<Bytes>>, CallFailure> {
        let ext = self.inner.lookup(&self.name, id)?;
        self.inner.http_on(Entry::Waits(ext), request, via).await
    }

    /// A slot of the install `id` ([`Slot`]), free now or within the view's wait (as a call
    /// waits), for a call recorded under `request_id` whose input is not read yet; the caller
    /// has just read the registry (or the install was loaded from it). A refusal (busy,
    /// uninstalled meanwhile) is audited under `request_id`; one by the audit gate as the
    /// gate's are. A wait dropped part-way is not: its caller knows why (the service audits
    /// each request its client leaves before its call runs, whatever it waited for).
    pub async fn slot_as(&self, request_id: String, id: &ExtensionId) -> Result<Slot, CallFailure> {
        let inner = self.inner;
        let ext = inner.lookup(&self.name, id)?;
        inner.audit_gate(&ext).await?;
        let wait = self.busy_wait.unwrap_or(inner.policy.busy_wait);
        let since = Instant::now();
        match inner.permit(&ext, wait).await {
            Ok(permit) => Ok(Slot {
                inner: Arc::clone(inner),
                ext,
                permit,
                request_id,
                taken: Instant::now(),
                with: None,
            }),
            Err(e) => Err(inner.refuse(&ext, request_id, e, since).await),
        }
    }
}

/// A slot of one install's calls (`max_concurrent_calls`), taken before the call's input is
/// read ([`Tenant::slot_as`]): a service reads a request's body only once its call can run,
/// so that requests waiting for a slot hold no body (red team, session 18: waiters held a
/// tenant's whole share of the body budget). Dropped unused, the slot is free again.
pub struct Slot {
    inner: Arc<Inner>,
    ext: Arc<Loaded>,
    /// What the caller holds for the call's length besides ([`Slot::holding`]), given back
    /// just before the slot (fields are dropped in this order).
    with: Option<Box<dyn Send + Sync>>,
    permit: tokio::sync::OwnedSemaphorePermit,
    request_id: String,
    /// When the install was last known to be the one served: when the slot was taken (its
    /// taker read the registry just before).
    taken: std::time::Instant,
}

/// How long a [`Slot`] may be held before its call reads the registry again (another
/// runner may have changed the install meanwhile); shorter holds, the common case, cost no
/// read: the install was read just before the slot was taken.
const RECHECK_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

impl Slot {
    /// Holds `guard` (a service's own slot, say) as long as the call, and gives it back just
    /// before this slot: so that whoever gets this slot next finds the other free too.
    pub fn holding(mut self, guard: impl Send + Sync + 'static) -> Slot {
        self.with = Some(Box::new(guard));
        self
    }

    /// The install's info, as the slot was taken on it.
    pub fn info(&self) -> &ExtensionInfo {
        &self.ext.info
    }

    /// [`Tenant::call_as`] in this slot, on the install it was taken on.
    pub async fn call(self, method: &str, input: &[u8]) -> Result<Called<Vec<u8>>, CallFailure> {
        let (inner, via) = (Arc::clone(&self.inner), self.via());
        inner.rpc_on(Entry::Holds(self), method, input, via).await
    }

    /// [`Tenant::call_http_as`] in this slot, on the install it was taken on.
    pub async fn call_http(
        self,
        request: http::Request<Bytes>,
    ) -> Result<Called<http::Response<Bytes>>, CallFailure> {
        let (inner, via) = (Arc::clone(&self.inner), self.via());
        inner.http_on(Entry::Holds(self), request, via).await
    }

    fn via(&self) -> Via {
        Via {
            request_id: Some(self.request_id.clone()),
            ..Via::default()
        }
    }
}

/// What a host knows of an install a call waited on ([`Inner::standing`]).
enum Standing {
    /// It may run: still the one served, or loaded again as it was.
    Served,
    /// It may not: uninstalled, no longer trusted, or replaced by another bundle or grant.
    Gone(CallError),
    /// Replaced, and nothing is loaded now: the registry says (else refused as this says).
    Unknown(CallError),
}

/// How a call gets its slot: it waits for one, or holds one already.
enum Entry {
    Waits(Arc<Loaded>),
    Holds(Slot),
}

impl Entry {
    fn ext(&self) -> &Arc<Loaded> {
        match self {
            Entry::Waits(ext) => ext,
            Entry::Holds(slot) => &slot.ext,
        }
    }
}

impl Inner {
    /// An HTTP request to an install, with its slot or to wait for one.
    async fn http_on(
        self: &Arc<Self>,
        entry: Entry,
        request: http::Request<Bytes>,
        via: Via,
    ) -> Result<Called<http::Response<Bytes>>, CallFailure> {
        let runtime = Arc::clone(&self.runtime);
        let answers_http = |ext: &Loaded| match ext.code {
            Code::Component(_) => Ok(()),
            Code::Process(_) => Err(CallError::Invalid(
                "a process extension answers calls to its methods, not HTTP requests".into(),
            )),
            Code::Extism(_) => Err(CallError::Invalid(
                "an Extism plug-in answers calls to its exports, not HTTP requests".into(),
            )),
            Code::Remote(_) => Ok(()),
        };
        self.run(entry, via, answers_http, |ext, caps| async move {
            let limits = ext.info.effective.limits;
            match &ext.code {
                Code::Component(p) => {
                    p.call_http(&runtime, &limits, &caps, ext.warm.as_ref(), request)
                        .await
                }
                Code::Remote(r) => r.call_http(&limits, &caps, request).await,
                Code::Process(_) | Code::Extism(_) => unreachable_http(),
            }
        })
        .await
    }
}

/// Checked before the call runs (`answers_http`), so never reached; an outcome all the same.
fn unreachable_http() -> CallOutcome<http::Response<Bytes>> {
    CallOutcome {
        result: Err(CallError::Invalid(
            "this extension answers calls to its methods, not HTTP requests".into(),
        )),
        report: CallReport::default(),
    }
}

impl crate::Host {
    /// A new request id, unique in this host (see [`Tenant::call_as`]).
    pub fn new_request_id(&self) -> String {
        self.inner.ids.next()
    }
}

impl Inner {
    /// This call's capabilities: the install's, plus an invoker that knows how the call was
    /// reached when the install may call other extensions.
    fn caps_for(
        self: &Arc<Self>,
        ext: &Arc<Loaded>,
        mut via: Via,
        id: &str,
        start: Arc<crate::audit::CallStart>,
    ) -> CallCaps {
        let mut caps = ext.caps.clone();
        caps.redactor = via.redactor.clone();
        // Its own record (the install's caps are shared by all its calls), whose start is
        // recorded before its first lasting change.
        caps.ledger = warden_call::Ledger::witnessed(start);
        if !via.chain.is_empty() {
            // Called by another extension: polled inside its caller's turn, so it takes none
            // of its own (waiting for one there could wait for ever on the caller's).
            caps.own_turns = false;
        }
        if !ext.info.effective.calls.is_empty() {
            // The calls it makes to other extensions are recorded under its id.
            via.request_id = Some(id.to_owned());
            caps.invoker = Some(Arc::new(HostInvoker::new(
                Arc::downgrade(self),
                Arc::clone(ext),
                via,
            )));
        }
        caps
    }

    /// An rpc call; `via` says how it was reached (default: a top-level call).
    pub(crate) async fn call_rpc(
        self: &Arc<Self>,
        tenant: &TenantName,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
        via: Via,
    ) -> Result<Called<Vec<u8>>, CallFailure> {
        let ext = self.lookup(tenant, id)?;
        self.rpc_on(Entry::Waits(ext), method, input, via).await
    }

    /// An rpc call on an install, with its slot or to wait for one.
    async fn rpc_on(
        self: &Arc<Self>,
        entry: Entry,
        method: &str,
        input: &[u8],
        via: Via,
    ) -> Result<Called<Vec<u8>>, CallFailure> {
        // The name is chosen by the caller; from another extension it may carry that
        // extension's secret values: redact before quoting (quoting escapes characters, which
        // would hide a value from the redactor).
        let redactor = via.redactor.clone();
        let known = |ext: &Loaded| {
            if ext.methods.is_empty() || ext.methods.iter().any(|m| m == method) {
                Ok(())
            } else {
                let shown = match &redactor {
                    Some(r) => r.text(method),
                    None => method.to_string(),
                };
                Err(CallError::Invalid(format!(
                    "{} has no method {shown:?}",
                    ext.info.id
                )))
            }
        };
        let runtime = Arc::clone(&self.runtime);
        let (method, input) = (method.to_owned(), input.to_vec());
        self.run(entry, via, known, |ext, caps| async move {
            let limits = ext.info.effective.limits;
            match &ext.code {
                Code::Component(p) => {
                    p.call_rpc(&runtime, &limits, &caps, ext.warm.as_ref(), &method, &input)
                        .await
                }
                Code::Process(p) => p.call_rpc(&limits, &caps, &method, &input).await,
                Code::Extism(p) => {
                    p.call_rpc(&runtime, &limits, &caps, None, &method, &input)
                        .await
                }
                Code::Remote(r) => r.call_rpc(&limits, &caps, &method, &input).await,
            }
        })
        .await
    }

    /// The one call path: audit gate, the request's own check, a permit, this call's
    /// capabilities, the call itself, and its audit records.
    async fn run<T, F, Fut>(
        self: &Arc<Self>,
        entry: Entry,
        via: Via,
        check: impl FnOnce(&Loaded) -> Result<(), CallError>,
        call: F,
    ) -> Result<Called<T>, CallFailure>
    where
        F: FnOnce(Arc<Loaded>, CallCaps) -> Fut,
        Fut: Future<Output = CallOutcome<T>> + Send + 'static,
        T: Send + 'static,
    {
        let since = Instant::now();
        let ext = Arc::clone(entry.ext());
        self.audit_gate(&ext).await?;
        let id = via.request_id.clone().unwrap_or_else(|| self.ids.next());
        if let Err(e) = check(&ext) {
            return Err(self.refuse(&ext, id, e, since).await);
        }
        // Until `unfinished` below takes over: dropped meanwhile, the call is recorded as one
        // its caller left before it ran.
        let pending = Pending {
            inner: self,
            ext: &ext,
            id: &id,
            since,
            settled: false,
        };
        // Given back in this order when the call ends: what the caller holds with the slot,
        // then the slot.
        let _held = match entry {
            Entry::Holds(slot) => {
                // Changed while the input was read: refused as a waiter would be.
                if let Err(e) = self.still_holds(&slot).await {
                    pending.settle();
                    return Err(self.refuse(&ext, id, e, since).await);
                }
                (slot.with, slot.permit)
            }
            Entry::Waits(_) => {
                let wait = via.busy_wait.unwrap_or(self.policy.busy_wait);
                match self.permit(&ext, wait).await {
                    Ok(p) => (None, p),
                    Err(e) => {
                        pending.settle();
                        return Err(self.refuse(&ext, id, e, since).await);
                    }
                }
            }
        };
        let top_level = via.chain.is_empty();
        let (via, generation) = self.with_secret_values(&ext, via).await;
        pending.settle();
        let start = Arc::new(crate::audit::CallStart::new(self, &ext, &id));
        let mut caps = self.caps_for(&ext, via, &id, Arc::clone(&start));
        caps.generation = generation;
        // One redactor for the call and for its record when it is dropped (made here when
        // the caller gave none, rather than one in each).
        let redactor = caps.redactor.get_or_insert_with(Default::default).clone();
        let ledger = (caps.ledger.clone(), redactor);
        // Dropped before the call ends (its caller went away: the call is stopped with it),
        // this still leaves the call's record: also while its start is being recorded, so
        // that a `call-start` is never left alone by a caller that hung up.
        let mut unfinished = Unfinished {
            inner: Arc::clone(self),
            ext: Arc::clone(&ext),
            id,
            settled: false,
            ledger,
            started: since,
            dropped: None,
        };
        if let Err(refused) = self.witness_first(&ext, &start, &unfinished.id).await {
            // Nothing ran, and the audit log failed: as the audit gate's refusals.
            unfinished.settle();
            return Err(refused);
        }
        // A busy tenant's call waits its turn from the start, on the long calls' threads.
        let busy = caps.share().is_some_and(warden_runtime::Share::busy);
        // Boxed once here: the call's future is several kilobytes (Wasmtime's instantiation
        // and call futures inside), and unboxed it was copied whole at each `.await` it passes
        // through on its way down (`Guests::run`, the timeout, ...), on every call.
        // Allocated before the future is made, so that it is made in place: `Box::pin(call(..))`
        // made it on the stack and copied all 13 KB of it (an eighth of the host layer's time
        // per call, by perf).
        let call = Box::into_pin(Box::write(Box::new_uninit(), call(Arc::clone(&ext), caps)));
        // A stopped call's record waits (briefly) until the call is dropped where it runs,
        // where its drop says more: a process reads its sandbox's memory peak, a kept
        // instance hands over its ledger. Other calls have told all as they went.
        let (tell, dropped) = if matches!(ext.code, Code::Process(_)) || ext.warm.is_some() {
            let (tell, dropped) = tokio::sync::oneshot::channel();
            (Some(tell), Some(dropped))
        } else {
            (None, None)
        };
        unfinished.dropped = dropped;
        let call = Told { call, _tell: tell };
        // A call from another extension runs inside its caller's task (and turn).
        let running = async {
            if top_level {
                self.guests.run(call, busy).await
            } else {
                call.await
            }
        };
        let outcome = match unless_stopped(&ext, running).await {
            Some(outcome) => outcome,
            // Uninstalled: stopped at once (dropped, as when its caller goes away).
            None => {
                let why = ext
                    .retired
                    .borrow()
                    .refusal(&ext.info.id, "ran: it was stopped");
                let why = why.unwrap_or_else(|| CallError::host("the call was stopped"));
                unfinished.stopped_once_dropped(why).await
            }
        };
        let id = unfinished.settle();
        self.finish(&ext, id, outcome).await
    }

    fn lookup(&self, tenant: &TenantName, id: &ExtensionId) -> Result<Arc<Loaded>, CallFailure> {
        self.get(tenant, id).ok_or_else(|| CallFailure {
            request_id: String::new(),
            error: CallError::Invalid(format!("no extension {id} is loaded")),
            logs: Vec::new(),
        })
    }

    /// `via` with a redactor that knows every value of the install's granted secrets, not only
    /// those the call reads: a value read by an earlier call and kept (in the key-value store,
    /// a file, a warm process's memory) must not come out of this one's logs and errors either.
    /// The values it was granted before (rotated or removed since) too, as long as this
    /// host runs.
    ///
    /// Also returns a fingerprint of the values now (0 without secrets): an instance kept
    /// between calls under other values may hold a rotated or removed one, and is not reused
    /// (`CallCaps::generation`).
    async fn with_secret_values(&self, ext: &Loaded, mut via: Via) -> (Via, u64) {
        let Some(access) = ext.caps.secrets.clone() else {
            return (via, 0);
        };
        let (values, generation) = if access.granted.is_empty() {
            (Vec::new(), 0)
        } else {
            tokio::task::spawn_blocking(move || {
                use std::hash::{Hash, Hasher};
                // In memory only, never shown: a change detector, not a digest of secrets.
                let mut h = std::hash::DefaultHasher::new();
                let mut values = Vec::new();
                for name in access.granted.iter() {
                    let value = access.source.get(name).ok().flatten();
                    name.as_str().hash(&mut h);
                    value.as_ref().map(|v| v.expose()).hash(&mut h);
                    values.extend(value);
                }
                (values, h.finish())
            })
            .await
            .unwrap_or_default()
        };
        let key = (ext.info.tenant.clone(), ext.info.id.clone());
        let mut history = self
            .secret_history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let known = history.entry(key).or_default();
        for v in values {
            if !known.iter().any(|k| k.expose() == v.expose()) {
                if known.len() >= crate::host::SECRET_HISTORY {
                    known.remove(0);
                }
                known.push(v);
            }
        }
        if !known.is_empty() {
            let redactor = via.redactor.take().unwrap_or_default();
            for v in known.iter() {
                redactor.add(v.expose());
            }
            via.redactor = Some(redactor);
        }
        (via, generation)
    }

    /// A slot of the extension's `max_concurrent_calls`, free now or within `wait` (the
    /// policy's `busy_wait`, or what is left of it; first come, first served), or why not
    /// (`busy`). A call that waited runs only if its install is still the one served
    /// ([`Inner::still_served`]); one retired meanwhile wakes its waiters at once.
    async fn permit(
        self: &Arc<Self>,
        ext: &Arc<Loaded>,
        wait: std::time::Duration,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, CallError> {
        let permits = Arc::clone(&ext.permits);
        if let Ok(p) = permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let busy = || {
            let limit = ext.info.effective.limits.max_concurrent_calls;
            CallError::Busy(format!(
                "{} already has {limit} calls in flight",
                ext.info.id
            ))
        };
        let mut closing = self.closing.subscribe();
        if wait.is_zero() || *closing.borrow() {
            return Err(busy());
        }
        let mut retired = ext.retired.subscribe();
        let waited = tokio::select! {
            p = tokio::time::timeout(wait, permits.acquire_owned()) => {
                p.ok().and_then(Result::ok)
            }
            _ = closing.wait_for(|c| *c) => {
                return Err(CallError::Busy("the host is shutting down".into()));
            }
            // Woken to be refused below.
            _ = retired.wait_for(|r| *r != Retired::No) => None,
        };
        let Some(p) = waited else {
            // No slot: refused, as not there (or no longer trusted) if that is why it woke.
            let why = ext
                .retired
                .borrow()
                .refusal(&ext.info.id, "waited for a slot");
            if let Some(why) = why {
                return Err(why);
            }
            // Waited out: an uninstall made by another process on the same storage may not
            // have reached this one yet; asked now (by one waiter at a time), so that the call
            // is refused as not there rather than busy (outside attack, session 27: 12 waiting
            // calls got 429 while `warden uninstall`'s commit waited on a slow disk).
            if !ext.may_ask_registry() {
                return Err(busy());
            }
            return Err(match self.still_served(ext, "waited for a slot").await {
                Err(gone @ CallError::Uninstalled(_)) => gone,
                _ => busy(),
            });
        };
        self.still_served(ext, "waited for a slot").await?;
        Ok(p)
    }

    /// Whether a call may run in `slot`, taken before its input was read: as for a waiter
    /// ([`Inner::still_served`]), not if its install was uninstalled, upgraded, granted
    /// otherwise or verified again meanwhile (red team: a body sent 20 s after a grant was
    /// taken away still ran under it), nor once the host is shutting down. The registry is
    /// read again only for a slot held longer than [`RECHECK_AFTER`].
    async fn still_holds(self: &Arc<Self>, slot: &Slot) -> Result<(), CallError> {
        let when = "waited for its input";
        if *self.closing.borrow() {
            return Err(CallError::Busy("the host is shutting down".into()));
        }
        if slot.taken.elapsed() > RECHECK_AFTER {
            return self.still_served(&slot.ext, when).await;
        }
        match self.standing(&slot.ext, when) {
            Standing::Served => Ok(()),
            Standing::Gone(refused) => Err(refused),
            Standing::Unknown(_) => self.still_served(&slot.ext, when).await,
        }
    }

    /// What this process knows of `ext` now (for a call that waited on it).
    fn standing(&self, ext: &Loaded, when: &str) -> Standing {
        // The watch's lock is not held while the installs' is taken.
        let (refused, replaced) = {
            let retired = ext.retired.borrow();
            let Some(refused) = retired.refusal(&ext.info.id, when) else {
                return Standing::Served;
            };
            (refused, *retired == Retired::Replaced)
        };
        if !replaced {
            return Standing::Gone(refused);
        }
        // Replaced by the same bundle and grant (a trust reload that still accepts it loads
        // it again): the same install, still served.
        match self.get(&ext.info.tenant, &ext.info.id) {
            Some(now) if now.info.same_install(&ext.info) => Standing::Served,
            Some(_) => Standing::Gone(refused),
            None => Standing::Unknown(refused),
        }
    }

    /// Whether a call that waited for a slot and got one may still run on `ext`: not if its install was
    /// uninstalled (refused as not there), or upgraded, granted otherwise or no longer trusted
    /// (busy: a new try runs on the new record) meanwhile, by this process or, for one loaded
    /// from the registry, by another (a runner of the same fleet). One loaded again as it was
    /// (a trust reload that still accepts it) still serves.
    async fn still_served(
        self: &Arc<Self>,
        ext: &Arc<Loaded>,
        when: &str,
    ) -> Result<(), CallError> {
        let id = &ext.info.id;
        let unknown = match self.standing(ext, when) {
            Standing::Gone(refused) => return Err(refused),
            Standing::Served => None,
            Standing::Unknown(refused) => Some(refused),
        };
        let (Some((registry, _)), true) = (&self.registry, ext.installed) else {
            // Nothing loaded now and no registry to ask: not known to be the same.
            return unknown.map_or(Ok(()), Err);
        };
        let registry = Arc::clone(registry);
        let (tenant, extension) = (ext.info.tenant.clone(), id.clone());
        let install =
            tokio::task::spawn_blocking(move || registry.install(&tenant, &extension)).await;
        match install {
            Ok(Ok(Some(i)))
                if i.content_hash == ext.info.content_hash && i.grant == ext.info.grant =>
            {
                Ok(())
            }
            Ok(Ok(Some(_))) => Err(CallError::Busy(format!(
                "{id} was replaced while the call {when}"
            ))),
            Ok(Ok(None)) => {
                Tenant::new(self, ext.info.tenant.clone()).withdraw_record(ext);
                Err(CallError::Uninstalled(format!(
                    "{id} was uninstalled while the call {when}"
                )))
            }
            Ok(Err(e)) => Err(CallError::Unavailable(HostFailure::caused(
                "the registry cannot be read",
                e,
            ))),
            Err(_) => Err(CallError::host("the registry could not be read")),
        }
    }
}

/// `running` to its end, or `None` once `ext` is retired so that its calls stop (before it
/// starts, or while it waits). The retirement is watched only from the call's first wait: most
/// calls end in their first poll, and a call is stopped only between polls anyway.
async fn unless_stopped<F: Future>(ext: &Arc<Loaded>, running: F) -> Option<F::Output> {
    type Watch = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    if ext.retired.borrow().stops_calls() {
        return None;
    }
    let mut running = std::pin::pin!(running);
    let mut stop: Option<Watch> = None;
    std::future::poll_fn(|cx| {
        use std::task::Poll;
        if let Some(stop) = stop.as_mut()
            && stop.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        if let Poll::Ready(out) = running.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if stop.is_none() {
            // Sees a retirement made since the check above too: `wait_for` reads the value
            // first.
            let mut retired = ext.retired.subscribe();
            let mut watch: Watch = Box::pin(async move {
                let _ = retired.wait_for(Retired::stops_calls).await;
            });
            if watch.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            stop = Some(watch);
        }
        Poll::Pending
    })
    .await
}

/// A call under way; if it is dropped before it ends, its record is written all the same (on
/// the runtime, as the caller is gone), saying it was stopped.
struct Unfinished {
    inner: Arc<Inner>,
    ext: Arc<Loaded>,
    id: String,
    /// Recorded by the call path itself (it ended, or was refused): nothing to do at drop.
    settled: bool,
    /// The call's ledger and redactor: what it did until it was stopped is recorded too (red
    /// team, session 16: a remote that read a secret and wrote to key-value left no trace).
    ledger: (warden_call::Ledger, warden_call::Redactor),
    /// When the host took the call up: a stopped call's duration is counted from here.
    started: Instant,
    /// Closed once the call's future is dropped where it runs (see [`Told`]), for calls
    /// whose drop adds to their report.
    dropped: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// How long a stopped call's record waits for the call to be dropped where it runs (a task
/// of the guests' runtimes, aborted: dropped there soon after).
const DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Unfinished {
    /// The call path records the call from here on; its id, given back.
    fn settle(&mut self) -> String {
        self.settled = true;
        std::mem::take(&mut self.id)
    }

    /// The outcome of the call stopped now by `error`, with what it did until then, once its
    /// future is dropped (or [`DROP_WAIT`] has passed).
    async fn stopped_once_dropped<T>(&mut self, error: CallError) -> CallOutcome<T> {
        // How long it ran: to its stop, not to the end of its drop.
        let duration = self.started.elapsed();
        if let Some(dropped) = self.dropped.take() {
            let _ = tokio::time::timeout(DROP_WAIT, dropped).await;
        }
        stopped(&self.ledger, duration, error)
    }
}

/// A call taken up but not running yet: waiting for its install's slot, checked again after
/// its input arrived, reading its secrets. Dropped before it is settled (its caller went
/// away, or the call of another extension that made it was stopped), it leaves a record
/// saying so (`Inner::left_before_running`): nothing ran, but the call was on its way
/// (outside attack, session 28: such a call left no record at all). Borrows only, so that
/// calls pay nothing for it but a flag.
struct Pending<'a> {
    inner: &'a Arc<Inner>,
    ext: &'a Arc<Loaded>,
    id: &'a str,
    since: Instant,
    settled: bool,
}

impl Pending<'_> {
    /// Refused (and audited so), or running (and recorded by [`Unfinished`] from now on).
    fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (inner, ext) = (Arc::clone(self.inner), Arc::clone(self.ext));
        let (id, since) = (self.id.to_owned(), self.since);
        // Why, as of the drop (not of when its record is written).
        let cut_off = self.inner.orphans.were_cut_off();
        self.inner
            .orphans
            .spawn(async move { inner.left_before_running(&ext, &id, since, cut_off).await });
    }
}

/// The outcome of a call stopped by `error` after `duration`, with what it did until then.
fn stopped<T>(
    (ledger, redactor): &(warden_call::Ledger, warden_call::Redactor),
    duration: std::time::Duration,
    error: CallError,
) -> CallOutcome<T> {
    let (denials, uses, limits) = ledger.report(redactor);
    CallOutcome {
        result: Err(error),
        report: CallReport {
            duration,
            memory_peak: ledger.memory_peak(),
            denials,
            uses,
            limits,
            ..CallReport::default()
        },
    }
}

/// A call's future and, dropped after it, the sender whose closing tells its
/// [`Unfinished`] that it is gone (fields drop in order).
struct Told<F> {
    call: std::pin::Pin<Box<F>>,
    _tell: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<F: Future> Future for Told<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.call.as_mut().poll(cx)
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let id = std::mem::take(&mut self.id);
        let (inner, ext) = (Arc::clone(&self.inner), Arc::clone(&self.ext));
        let (ledger, dropped) = (self.ledger.clone(), self.dropped.take());
        let duration = self.started.elapsed();
        let why = if self.inner.orphans.were_cut_off() {
            "the service's shutdown grace ran out before the call ended: it was stopped"
        } else {
            "the caller went away before the call ended: it was stopped"
        };
        self.inner.orphans.spawn(async move {
            if let Some(dropped) = dropped {
                let _ = tokio::time::timeout(DROP_WAIT, dropped).await;
            }
            let error = CallError::host(why);
            let _ = inner
                .finish(&ext, id, stopped::<()>(&ledger, duration, error))
                .await;
        });
    }
}
