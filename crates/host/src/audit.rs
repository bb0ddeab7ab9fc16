//! The audit trail of calls: one record per use and denial, then the call's own record; and
//! failing closed when records cannot be stored (see [`Inner::audit_gate`]).
//!
//! Records are written after the call. A call that ran but whose records could not be stored
//! (the disk filled, the database restarted) keeps them in memory, as do the refusals of
//! requests and changes while the log cannot be written, up to
//! [`MAX_UNSTORED`](crate::unstored::MAX_UNSTORED) (and 16 MiB)
//! records, and they are stored first, after a [`Event::Recovery`] record saying so, as soon
//! as records can be stored again: its trail is late, not lost (unless the process ends
//! before). Its caller gets `host-error` (502, no `retry-after`): the call ran, and a retry
//! would run it again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError, Weak};
use std::time::Instant;

use tokio::sync::watch;

use warden_audit::{Event, Outcome, Record};
use warden_call::{Capability, HostFailure, Witness};
use warden_runtime::{CallError, CallOutcome, CallReport, Denial, ErrorCode};

use crate::error::{CallFailure, Called, HostError};
use crate::host::Inner;
use crate::installed::{Code, Loaded};

/// The kind under which calls and requests their callers left before they ran are counted
/// with refusals (the host's `Pending`, the service's gateway guard).
pub const CLIENT_GONE: &str = "client-gone";

/// The kind under which calls and requests stopped before they ran, at the end of a
/// service's shutdown grace, are counted (never with those their clients left).
pub const CUT_OFF: &str = "cut-off";

impl Inner {
    /// A call refused before it ran, from async code: one audit record, awaited without
    /// holding an executor thread.
    /// `since`: when the call was taken up (its record's duration is how long it waited).
    pub(crate) async fn refuse(
        &self,
        ext: &Loaded,
        id: String,
        error: CallError,
        since: Instant,
    ) -> CallFailure {
        let waited = CallReport {
            duration: since.elapsed(),
            ..CallReport::default()
        };
        let record = call_record(ext, &id, &waited, Err(&error), &warden_audit::Stamp::now());
        self.refusal(error.code().as_str(), record).await;
        CallFailure {
            request_id: id,
            error,
            logs: Vec::new(),
        }
    }

    /// Audits a call its caller left before it ran (see `call::Pending`), or that the end of
    /// the shutdown grace stopped then (`cut_off`): nothing ran, and it is counted with others
    /// of its kind (`client-gone`, `cut-off`) as refusals are.
    pub(crate) async fn left_before_running(
        &self,
        ext: &Loaded,
        id: &str,
        since: Instant,
        cut_off: bool,
    ) {
        let record = ext
            .record
            .renew_at(Event::Call, id, &warden_audit::Stamp::now())
            .with_outcome(Outcome::Error)
            .with_duration(since.elapsed())
            .with_message(if cut_off {
                "the service's shutdown grace ran out before the call ran: nothing ran"
            } else {
                "the caller went away before the call ran: nothing ran"
            });
        self.refusal(if cut_off { CUT_OFF } else { CLIENT_GONE }, record)
            .await;
    }

    /// Audits a finished call (each grant and denial in it, then the call: one batch, stored
    /// together while the caller awaits) and logs the guest's output.
    pub(crate) async fn finish<T>(
        &self,
        ext: &Loaded,
        id: String,
        outcome: CallOutcome<T>,
    ) -> Result<Called<T>, CallFailure> {
        let report = outcome.report;
        self.usage.add(&ext.info.tenant, &ext.info.id, &report);
        for line in &report.logs {
            tracing::info!(target: "warden::guest", request_id = %id, tenant = %ext.info.tenant, extension = %ext.info.id, stream = line.stream.label(), context = line.context.as_deref().unwrap_or(""), "{}", line.text);
        }
        let result = outcome.result.as_ref().map(|_| ());
        // One stamp for the batch; made again (the same) only if they cannot be stored now,
        // rather than copied for that case on every call.
        let stamp = warden_audit::Stamp::now();
        let records = || call_records(ext, &id, &report, result, &stamp);
        // Kept if they cannot be stored now (see the module docs): kept before the host is
        // marked closed, so the probe that opens it again finds them.
        if let Err(e) = self.audit.append_all(records()).await {
            let kept = records();
            self.lock_unstored().keep(kept);
            tracing::error!(
                target: "warden::audit",
                "could not write the records of a call that ran (kept, to be written late): {}",
                warden_call::text::chain(&e)
            );
            self.audit_broke(e);
            // The call ran, but its trail is late: its result is not handed out as a success,
            // and the host is closed until records can be stored. Not `unavailable` (503,
            // retry-after): a client retrying would run the call twice.
            return Err(CallFailure {
                request_id: id,
                error: CallError::Host(self.audit_failure(
                    "the call ran, but its audit records could not be written yet (they are kept \
                     and written once the audit log works again); its result is withheld, and a \
                     retry would run it again",
                )),
                logs: report.logs,
            });
        }
        match outcome.result {
            Ok(value) => Ok(Called {
                value,
                request_id: id,
                logs: report.logs,
            }),
            Err(error) => Err(CallFailure {
                request_id: id,
                error,
                logs: report.logs,
            }),
        }
    }

    /// Records a refusal (of error `code`): the first of its kind in a window is stored now
    /// and awaited, repeats are counted into one summary (see `refusals.rs`). False if it
    /// could not be stored (it is kept, and stored late).
    pub(crate) async fn refusal(&self, code: &str, record: Record) -> bool {
        match self.refusals.note(code, record) {
            // The log failed and no probe has opened the host since: kept for the probe, not
            // written now (each write would first wait for the log's lock, 5 s while another
            // process holds it: outside attack, session 31, a refusal answered after 10 s).
            Some(record) if self.audit_failed.load(Ordering::Acquire) => {
                self.lock_unstored().keep(vec![record]);
                false
            }
            Some(record) => self.write_all(vec![record]).await,
            None => true,
        }
    }

    /// For a host that stops: the records kept while the log could not be written are stored
    /// now if they can be (the probe that stores them otherwise waits for a next request,
    /// which may never come). Returns how many are lost with the process (still kept, or
    /// dropped past the bounds), for its owner to say so: they were only logged, and a
    /// `warden run` or a service's shutdown said nothing of them (outside attack, session 41).
    pub(crate) fn store_kept_before_closing(self: &Arc<Self>) -> u64 {
        if !self.lock_unstored().pending() {
            return 0;
        }
        // A probe under way (a request's) holds the turn while it waits for the log's lock:
        // waited for, within that bound, then this one tries too.
        let until = Instant::now() + PROBE_WAIT;
        let turn = loop {
            if let Some(turn) = ProbeTurn::take(self) {
                break Some(turn);
            }
            if Instant::now() >= until {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        if let Some(_turn) = turn
            && self.lock_unstored().pending()
        {
            match crate::refusals::block_on(self.store_unstored()) {
                Ok(()) => self.reopen(),
                Err(e) => tracing::error!(
                    target: "warden::audit",
                    kept = self.lock_unstored().len(),
                    "the records kept while the audit log could not be written are lost as the host closes: {}",
                    warden_call::text::chain(&e)
                ),
            }
        }
        self.lock_unstored().lost()
    }

    /// Before an operator's change (tenant, publish, install, uninstall, secret, trust): a host
    /// that could not store a record since is closed to changes as to calls (outside attack:
    /// with the log unwritable, uninstalls and new tenants were made and answered 503 with no
    /// record of them). As for calls, the refused change's record is the probe: stored, the
    /// host is open again for the next one.
    pub(crate) fn change_gate(self: &Arc<Self>, refusal: Record) -> Result<(), HostError> {
        if !self.audit_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let refusal = refusal
            .with_outcome(Outcome::Error)
            .with_message("refused: the audit log could not be written");
        // On a blocking thread (the admin API's, or a CLI's): waiting here holds no executor,
        // and nothing drops the probe part-way. Not spawned: the thread may be a
        // single-threaded runtime's, which would then never run it.
        let probed = ProbeTurn::take(self)
            .map(|_turn| crate::refusals::block_on(self.probe_held(refusal.clone())));
        if probed.is_none() {
            // Another probe is under way: this refusal is recorded if it can be.
            crate::refusals::block_on(self.write_all(vec![refusal]));
        }
        Err(HostError::AuditClosed)
    }

    /// Finds out whether records can be stored again: stores the kept records (after their
    /// marker), then `probe`, the record of the refusal that probes; opens the host if all
    /// were stored. One probe at a time: `None` (nothing done) while another is under way.
    /// Each store waits up to the audit log's lock bound, so one probe, not every refused
    /// request, waits for it, and stores the kept records once (outside attack, session 30:
    /// with another process holding the audit lock, each refused request waited 5 s on a
    /// service thread, and `/healthz` stalled with them; two probes stored the marker twice).
    async fn probe(self: &Arc<Self>, probe: Record) -> Option<bool> {
        let turn = ProbeTurn::take(self)?;
        // Run to its end even when the request that probes is dropped (its client left): the
        // turn is given back only once none of the probe's appends is still queued, or the
        // next probe would store the kept records' marker again (outside attack, session
        // 30: 32 waiting clients, 32 markers).
        let inner = Arc::clone(self);
        let work = async move {
            let _turn = turn;
            inner.probe_held(probe).await
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(work).await.ok(),
            Err(_) => Some(work.await),
        }
    }

    /// [`Inner::probe`]'s work, with its turn held.
    async fn probe_held(&self, probe: Record) -> bool {
        let kept = probe.clone();
        let stored = match self.store_unstored().await {
            Ok(()) => self.audit.append_all(vec![probe]).await,
            Err(e) => Err(e),
        };
        match stored {
            // A failure recorded after the check (by a concurrent call) sets the flag again
            // when its own `write` fails, so clearing it here cannot hide a later failure for
            // more than the calls already past the gate.
            Ok(()) => {
                self.reopen();
                true
            }
            Err(e) => {
                // The refusal that probed is kept with the others, stored late.
                self.lock_unstored().keep(vec![kept]);
                self.audit_broke(e);
                false
            }
        }
    }

    /// Opens the host again after a probe was stored; unless a call that failed meanwhile
    /// kept records after the probe stored the kept ones: the next call probes again.
    fn reopen(&self) {
        self.audit_failed.store(false, Ordering::Release);
        if !self.lock_unstored().is_empty() {
            self.audit_failed.store(true, Ordering::Release);
        }
    }

    fn lock_unstored(&self) -> std::sync::MutexGuard<'_, crate::unstored::Unstored> {
        self.unstored.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the kept records (see the module docs), after their marker,
    /// one by one; those not stored stay kept. Called only while the host is closed, by the
    /// probe that may open it.
    async fn store_unstored(&self) -> Result<(), warden_audit::AuditError> {
        if !self.lock_unstored().pending() {
            return Ok(());
        }
        // One marker for the records it counts, even if storing them takes several tries.
        let marker = self.lock_unstored().marker();
        if let Some(marker) = marker {
            self.audit.append_all(vec![marker]).await?;
            self.lock_unstored().marker_stored();
        }
        loop {
            let Some(next) = self.lock_unstored().next() else {
                return Ok(());
            };
            if let Err(e) = self.audit.append_all(vec![next.clone()]).await {
                self.lock_unstored().put_back(next);
                return Err(e);
            }
        }
    }

    /// Stores the record of an operator's change; one that cannot be stored closes the host to
    /// calls and changes until one can (see [`Inner::change_gate`]).
    pub(crate) fn record_change(&self, record: Record) -> Result<(), HostError> {
        // Stamped when the change has been made (committed), not when it was asked for: a
        // commit can wait seconds on a slow disk, and the time says when it took effect.
        let record = record.stamped_now();
        let kept = record.clone();
        match self.audit.append(record) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(
                    target: "warden::audit",
                    "could not write the record of a change (kept, to be written late): {}",
                    warden_call::text::chain(&e)
                );
                // The change was made: its record is kept with those of calls that ran.
                self.lock_unstored().keep(vec![kept]);
                self.audit_broke(e);
                Err(HostError::AuditClosed)
            }
        }
    }

    /// Where a retired process install's leftover denials go (see
    /// `warden_runtime::ProcessInstall::retire`): recorded under one request id of their own,
    /// `ext`'s identity on each. The sink is held, not the host: a call still running on the
    /// install may outlive the host, and what its process is refused is still written.
    pub(crate) fn leftovers(self: &Arc<Self>, ext: &Loaded) -> warden_runtime::process::Reporter {
        let host = Arc::downgrade(self);
        let audit = Arc::clone(&self.audit);
        let base = ext.record.clone();
        let id = self.ids.next();
        Arc::new(move |denials: Vec<Denial>| {
            let at = warden_audit::Stamp::now();
            let records = denials
                .iter()
                .map(|d| denial_record(base.renew_at(Event::Denial, &id, &at), d))
                .collect();
            // Blocks this thread for the commit: a retirement is rare, and may be the last
            // thing a closing host does.
            if let Err(e) = crate::refusals::block_on(audit.append_all(records)) {
                match host.upgrade() {
                    Some(host) => host.write_failed(e),
                    None => tracing::error!(
                        target: "warden::audit",
                        "could not write the refusals of a retired install: {}",
                        warden_call::text::chain(&e)
                    ),
                }
            }
        })
    }

    /// Summaries of repeated refusals could not be stored: kept, to be stored late, and the
    /// host closes as for any record.
    pub(crate) fn refusals_unstored(&self, unflushed: crate::refusals::Unflushed) {
        tracing::error!(
            target: "warden::audit",
            "could not write the summary of repeated refusals (kept, to be written late): {}",
            warden_call::text::chain(&unflushed.error)
        );
        self.lock_unstored().keep(unflushed.records);
        self.audit_broke(unflushed.error);
    }

    /// Stores `records` in order, awaiting their commit; false if any could not be stored:
    /// they are kept, to be stored late, and the host is closed (no further call may run
    /// without an audit trail, see `audit_gate`). Outside attack, session 30: three in four
    /// requests refused while the log could not be written left no record at all.
    async fn write_all(&self, records: Vec<Record>) -> bool {
        let kept = records.clone();
        match self.audit.append_all(records).await {
            Ok(()) => true,
            Err(e) => {
                self.lock_unstored().keep(kept);
                self.write_failed(e);
                false
            }
        }
    }

    fn write_failed(&self, e: warden_audit::AuditError) {
        tracing::error!(
            target: "warden::audit",
            "could not write an audit record: {}",
            warden_call::text::chain(&e)
        );
        self.audit_broke(e);
    }

    fn audit_broke(&self, e: warden_audit::AuditError) {
        *self
            .audit_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(e));
        self.audit_failed.store(true, Ordering::Release);
    }

    /// `what`, caused by the audit failure that closed the host.
    fn audit_failure(&self, what: &str) -> HostFailure {
        match self
            .audit_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            Some(e) => HostFailure::caused(what, SharedAuditError(e)),
            None => HostFailure::new(what),
        }
    }

    /// Fail closed: after an audit record could not be stored, every new call is refused with
    /// `CallError::Unavailable`. A refusal probes ([`Inner::probe`]: stores its own record);
    /// when that works the store is healthy again and later calls run (this one stays
    /// refused: it was already recorded as refused). One atomic load when healthy.
    pub(crate) async fn audit_gate(self: &Arc<Self>, ext: &Loaded) -> Result<(), CallFailure> {
        if !self.audit_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        // Nothing ran: the client may try again (503), once records can be stored.
        let error = CallError::Unavailable(self.audit_failure("the audit log cannot be written"));
        let id = self.ids.next();
        let record = refused_record(ext, &id, &error);
        if self.probe(record.clone()).await.is_none() {
            // Another request probes: this one is refused at once, counted with the refusals
            // of its kind (recorded once they can be).
            self.refusal(error.code().as_str(), record).await;
        }
        Err(CallFailure {
            request_id: id,
            error,
            logs: Vec::new(),
        })
    }
}

/// The one probe's turn ([`Inner::probe`]), given back when dropped.
struct ProbeTurn(Arc<Inner>);

/// How long a closing host waits for a probe under way: the audit log's lock bound (5 s), and
/// a second.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

impl ProbeTurn {
    fn take(inner: &Arc<Inner>) -> Option<ProbeTurn> {
        (!inner.probing.swap(true, Ordering::AcqRel)).then(|| ProbeTurn(Arc::clone(inner)))
    }
}

impl Drop for ProbeTurn {
    fn drop(&mut self) {
        self.0.probing.store(false, Ordering::Release);
    }
}

/// A call's witness (`warden_call::Witness`): its `call-start` record, stored once and awaited
/// before the call's first change that outlives it. So a call the process does not live to
/// finish (`kill -9`, a power loss) is on the trail with what it may have changed; its `call`
/// record follows when it ends.
pub(crate) struct CallStart {
    inner: Weak<Inner>,
    ext: Arc<Loaded>,
    id: String,
    /// Once the record is on its way: whether it was stored (`None` until known).
    stored: OnceLock<watch::Receiver<Option<Result<(), String>>>>,
}

impl CallStart {
    pub(crate) fn new(inner: &Arc<Inner>, ext: &Arc<Loaded>, id: &str) -> CallStart {
        CallStart {
            inner: Arc::downgrade(inner),
            ext: Arc::clone(ext),
            id: id.to_owned(),
            stored: OnceLock::new(),
        }
    }

    /// What a call of `ext` may change without asking the host first, and so must be
    /// witnessed before it starts: files in a read-write folder (a process writes them itself,
    /// a component in many ways), or the remote end of a remote extension (the call itself).
    pub(crate) fn needed_first(ext: &Loaded) -> Option<Capability> {
        match &ext.code {
            Code::Remote(_) => Some(Capability::Network),
            _ if ext.caps.mounts.iter().any(|m| !m.readonly) => Some(Capability::Filesystem),
            _ => None,
        }
    }

    /// Queues the record now (so it comes before any record of the call's end) and stores it
    /// from a task of its own: a change whose wait is dropped (a guest's request cancelled
    /// while it waited) cannot have it written twice (outside attack: up to 142 in one call).
    fn begin(&self, capability: Capability) -> watch::Receiver<Option<Result<(), String>>> {
        let (tx, rx) = watch::channel(None);
        let (Some(inner), Ok(runtime)) =
            (self.inner.upgrade(), tokio::runtime::Handle::try_current())
        else {
            let _ = tx.send(Some(Err(
                "the host is shutting down: nothing was changed".into()
            )));
            return rx;
        };
        let record = base_record(&self.ext, Event::CallStart, &self.id)
            .with_capability(capability)
            .with_outcome(Outcome::Ok)
            .with_message(format!(
                "the call is about to change what outlives it ({}); its call record follows",
                capability.name()
            ));
        let pending = inner.audit.append_all(vec![record]);
        runtime.spawn(async move {
            let stored = match pending.await {
                Ok(()) => Ok(()),
                Err(e) => {
                    inner.write_failed(e);
                    Err(NOT_STORED.to_owned())
                }
            };
            let _ = tx.send(Some(stored));
        });
        rx
    }
}

const NOT_STORED: &str =
    "the call's start could not be written to the audit log: nothing was changed";

#[async_trait::async_trait]
impl Witness for CallStart {
    async fn before_change(&self, capability: Capability) -> Result<(), String> {
        let mut stored = self.stored.get_or_init(|| self.begin(capability)).clone();
        match stored.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or_else(|| Err(NOT_STORED.to_owned())),
            Err(_) => Err(NOT_STORED.to_owned()),
        }
    }
}

impl Inner {
    /// Witnesses the start of a call that may change things without asking (see
    /// [`CallStart::needed_first`]) before it runs; refused (nothing ran, 503) if its record
    /// cannot be stored.
    pub(crate) async fn witness_first(
        &self,
        ext: &Loaded,
        start: &CallStart,
        id: &str,
    ) -> Result<(), CallFailure> {
        let Some(capability) = CallStart::needed_first(ext) else {
            return Ok(());
        };
        if start.before_change(capability).await.is_ok() {
            return Ok(());
        }
        let error = CallError::Unavailable(self.audit_failure("the audit log cannot be written"));
        // The refusal is kept with the records waiting for the log, not written now: the
        // write just failed (after the log's lock wait, when another process holds it), and
        // the next request probes. Outside attack, session 31: such refusals left no record.
        self.lock_unstored()
            .keep(vec![refused_record(ext, id, &error)]);
        // Closed already by the failed write; again, in case a probe opened it since: kept
        // records are stored by the next probe.
        self.audit_failed.store(true, Ordering::Release);
        Err(CallFailure {
            request_id: id.to_owned(),
            error,
            logs: Vec::new(),
        })
    }
}

/// A finished call's records, all stamped `at`: each grant and denial in it, each limit it
/// hit, then the call's own record.
fn call_records(
    ext: &Loaded,
    id: &str,
    report: &CallReport,
    result: Result<(), &CallError>,
    at: &warden_audit::Stamp,
) -> Vec<Record> {
    let base = |event| ext.record.renew_at(event, id, at);
    let mut records =
        Vec::with_capacity(2 + report.uses.len() + report.denials.len() + report.limits.len());
    for used in &report.uses {
        records.push(
            base(Event::Grant)
                .with_capability(used.capability)
                .with_target(&used.target)
                .with_decision(warden_audit::Decision::Allow)
                .with_outcome(Outcome::Ok),
        );
    }
    for denial in &report.denials {
        records.push(denial_record(base(Event::Denial), denial));
    }
    for hit in &report.limits {
        let r = base(Event::Limit)
            .with_capability(hit.capability)
            .with_target(&hit.target)
            .with_outcome(Outcome::TooLarge);
        records.push(counted(r, hit));
    }
    records.push(call_record(ext, id, report, result, at));
    // A guest that coped with a refused allocation still hit its limit: audit that too.
    if report.memory_limit_hit && !matches!(result, Err(CallError::MemoryLimit(_))) {
        records.push(
            base(Event::Limit)
                .with_outcome(Outcome::MemoryLimit)
                .with_memory_peak_bytes(report.memory_peak)
                .with_message(format!(
                    "memory limit of {} reached",
                    ext.info.effective.limits.max_memory
                )),
        );
    }
    records
}

/// The record of a call refused before it ran (`error`), stamped now.
fn refused_record(ext: &Loaded, id: &str, error: &CallError) -> Record {
    let nothing = CallReport::default();
    call_record(ext, id, &nothing, Err(error), &warden_audit::Stamp::now())
}

fn denial_record(base: Record, denial: &Denial) -> Record {
    let r = base
        .with_capability(denial.capability)
        .with_target(&denial.target)
        .with_decision(warden_audit::Decision::Deny)
        .with_outcome(Outcome::Denied);
    counted(r, denial)
}

/// One record per distinct refusal or limit hit; repeats are counted on it.
fn counted(r: Record, entry: &Denial) -> Record {
    match (&entry.reason, entry.count) {
        (Some(reason), 1) => r.with_message(reason),
        (Some(reason), n) => r.with_message(format!("{reason} ({n} attempts)")),
        (None, 1) => r,
        (None, n) => r.with_message(format!("{n} attempts")),
    }
}

fn base_record(ext: &Loaded, event: Event, request_id: &str) -> Record {
    ext.record.renew(event, request_id)
}

fn call_record(
    ext: &Loaded,
    request_id: &str,
    report: &CallReport,
    result: Result<(), &CallError>,
    at: &warden_audit::Stamp,
) -> Record {
    let (event, outcome) = match result {
        Ok(()) => (Event::Call, Outcome::Ok),
        Err(e) => {
            let code = e.code();
            let event = if code.is_limit() {
                Event::Limit
            } else {
                Event::Call
            };
            (event, outcome_of(code))
        }
    };
    let mut r = ext
        .record
        .renew_at(event, request_id, at)
        .with_outcome(outcome)
        .with_duration(report.duration)
        .with_memory_peak_bytes(report.memory_peak);
    if let Some(f) = report.fuel {
        r = r.with_fuel(f);
    }
    if report.egress_bytes > 0 {
        r = r.with_egress_bytes(report.egress_bytes);
    }
    if let Err(e) = result {
        r = r.with_error(e);
    }
    let mut notes = Vec::new();
    if let Some(w) = ext.code.weaker() {
        // Every call under a weaker sandbox says so, where the operator reads calls.
        notes.push(format!(
            "ran under the weaker sandbox profile {w:?} (accepted by [policy.process] weaker)"
        ));
    }
    if report.earlier_calls > 0 {
        // State of earlier calls may have reached this one: said where the operator reads it.
        let policy = match ext.code {
            Code::Process(_) => "[policy.process]",
            _ => "[policy.component]",
        };
        notes.push(format!(
            "ran in an instance kept from {} earlier call(s) of this install (accepted by \
             {policy} warm_calls)",
            report.earlier_calls
        ));
    }
    if !notes.is_empty() {
        let note = notes.join("; ");
        r = match result {
            Ok(()) => r.with_message(note),
            Err(e) => r.with_message(format!("{}; {note}", warden_call::text::chain(e))),
        };
    }
    r
}

/// The one mapping from a call's error code to an audit outcome.
fn outcome_of(code: ErrorCode) -> Outcome {
    match code {
        ErrorCode::Extension | ErrorCode::Remote | ErrorCode::Host | ErrorCode::Unavailable => {
            Outcome::Error
        }
        ErrorCode::Timeout => Outcome::Timeout,
        ErrorCode::MemoryLimit => Outcome::MemoryLimit,
        ErrorCode::FuelExhausted => Outcome::FuelExhausted,
        ErrorCode::TooLarge => Outcome::TooLarge,
        ErrorCode::Busy => Outcome::Busy,
        ErrorCode::Trap => Outcome::Trap,
        ErrorCode::Invalid | ErrorCode::Uninstalled => Outcome::Invalid,
        ErrorCode::Untrusted => Outcome::Denied,
    }
}

/// An audit failure shared by every call it refuses (the error itself is not `Clone`).
#[derive(Debug)]
struct SharedAuditError(Arc<warden_audit::AuditError>);

impl std::fmt::Display for SharedAuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedAuditError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}
