//! Repeated refusals, recorded once per window. A tenant that floods the service with requests
//! it refuses (over its rate, busy, too large, no such route) would otherwise buy one fsynced
//! audit record per request for free, and fill the disk every tenant's log lives on. The first
//! refusal of a kind (tenant, extension, code) is recorded alone and awaited, as before; the
//! next ones within [`WINDOW`] are only counted, and one summary record per kind and window
//! says how many there were, between which request ids. Nothing is lost: the summaries are
//! written by a thread every window and when the host closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use warden_audit::{AuditSink, Event, Outcome, Record};

/// How long repeats of a refusal are counted before their summary is written.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);

/// Kinds kept apart per tenant at most; past this, the tenant's refusals of one code for
/// extensions not yet seen share one kind (an id in a refused request is the client's
/// choice). Per tenant, so that one tenant's flood of made-up ids costs it at most this many
/// records a second and leaves every other tenant's refusals as detailed as before.
const MAX_KINDS_PER_TENANT: usize = 16;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Kind {
    tenant: Option<String>,
    extension: Option<String>,
    event: Event,
    outcome: Outcome,
    code: String,
}

struct Repeats {
    since: SystemTime,
    opened: Instant,
    /// The request whose record was written alone, or that the last summary ended with.
    first: String,
    last: String,
    count: u64,
    message: Option<String>,
    /// The repeats' request ids, as many as the summary can name
    /// ([`warden_audit::MAX_FOLDED_BYTES`]), and their bytes with a space each.
    folded: Vec<String>,
    folded_bytes: usize,
}

impl Repeats {
    fn fold(&mut self, request_id: &str) {
        self.count += 1;
        self.last = request_id.to_owned();
        let bytes = request_id.len() + 1;
        if self.folded_bytes + bytes <= warden_audit::MAX_FOLDED_BYTES {
            self.folded_bytes += bytes;
            self.folded.push(request_id.to_owned());
        }
    }
}

pub(crate) struct Refusals {
    audit: Arc<dyn AuditSink>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    kinds: HashMap<Kind, Repeats>,
    /// Kinds naming an extension, per tenant.
    per_tenant: HashMap<Option<String>, usize>,
}

impl Refusals {
    pub(crate) fn new(audit: Arc<dyn AuditSink>) -> Refusals {
        Refusals {
            audit,
            open: Mutex::new(Open::default()),
        }
    }

    /// Notes the refusal `record` (of error `code`): returns it when it is to be stored now
    /// (the first of its kind in a window), `None` when it was counted into a summary.
    pub(crate) fn note(&self, code: &str, record: Record) -> Option<Record> {
        let mut kind = Kind {
            tenant: record.tenant().map(str::to_owned),
            extension: record.extension().map(str::to_owned),
            event: record.event(),
            outcome: record.outcome(),
            code: code.to_owned(),
        };
        let mut guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let open = &mut *guard;
        if kind.extension.is_some() && !open.kinds.contains_key(&kind) {
            let named = open.per_tenant.entry(kind.tenant.clone()).or_default();
            if *named >= MAX_KINDS_PER_TENANT {
                kind.extension = None;
            } else {
                *named += 1;
            }
        }
        match open.kinds.get_mut(&kind) {
            Some(repeats) => {
                repeats.fold(record.request_id());
                None
            }
            None => {
                open.kinds.insert(
                    kind,
                    Repeats {
                        since: SystemTime::now(),
                        opened: Instant::now(),
                        first: record.request_id().to_owned(),
                        last: record.request_id().to_owned(),
                        count: 0,
                        message: record.message().map(str::to_owned),
                        folded: Vec::new(),
                        folded_bytes: 0,
                    },
                );
                Some(record)
            }
        }
    }

    /// The summaries of windows that are over (all of them when `all`): a kind with repeats
    /// starts a new window counted from its last request; a kind without any is forgotten,
    /// so that its next refusal is recorded alone again.
    fn due(&self, all: bool) -> Vec<Record> {
        let now = Instant::now();
        let mut guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let Open { kinds, per_tenant } = &mut *guard;
        let mut out = Vec::new();
        kinds.retain(|kind, repeats| {
            let keep = if !all && now.duration_since(repeats.opened) < WINDOW {
                true
            } else if repeats.count == 0 {
                false
            } else {
                out.push(summary(kind, repeats));
                repeats.since = SystemTime::now();
                repeats.opened = now;
                repeats.first.clone_from(&repeats.last);
                repeats.count = 0;
                repeats.folded.clear();
                repeats.folded_bytes = 0;
                !all
            };
            if !keep
                && kind.extension.is_some()
                && let Some(n) = per_tenant.get_mut(&kind.tenant)
            {
                *n = n.saturating_sub(1);
            }
            keep
        });
        per_tenant.retain(|_, n| *n > 0);
        out
    }

    /// Writes the summaries that are due, together (one commit, not one per summary: a
    /// thousand kinds a second must not cost a thousand syncs); if they could not be stored,
    /// the error and the summaries, for the host to keep. Blocks this thread until they are.
    pub(crate) fn flush(&self, all: bool) -> Result<(), Unflushed> {
        let due = self.due(all);
        if due.is_empty() {
            return Ok(());
        }
        let kept = due.clone();
        block_on(self.audit.append_all(due)).map_err(|error| Unflushed {
            error,
            records: kept,
        })
    }
}

/// Summaries [`Refusals::flush`] could not store.
#[derive(Debug)]
pub(crate) struct Unflushed {
    pub(crate) error: warden_audit::AuditError,
    pub(crate) records: Vec<Record>,
}

impl Drop for Refusals {
    fn drop(&mut self) {
        if let Err(u) = self.flush(true) {
            tracing::error!(target: "warden::audit", error = %u.error, lost = u.records.len(), "the summary of repeated refusals could not be stored");
        }
    }
}

/// Runs `fut` to its end on this thread (no executor: the flusher thread and `Drop`, which
/// may run inside one, only wait for the audit writer's answer).
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn summary(kind: &Kind, r: &Repeats) -> Record {
    // Each repeat can be found by its own id (`warden audit --request ID`): as many as fit.
    let mut record = Record::new(kind.event, &r.last)
        .with_outcome(kind.outcome)
        .with_folded_requests(r.folded.iter().map(String::as_str));
    if let Some(t) = &kind.tenant {
        record = record.with_tenant(t);
    }
    if let Some(x) = &kind.extension {
        record = record.with_extension(x);
    }
    let like = match &r.message {
        Some(m) => format!(" ({m})"),
        None => String::new(),
    };
    let since = warden_audit::format_time(r.since);
    let extensions = if kind.extension.is_none() && kind.tenant.is_some() {
        " for several extensions"
    } else {
        ""
    };
    record.with_message(format!(
        "{n} more refusal{s} ({code}){extensions} like request {first}{like} since {since}; the last was this request{named}",
        named = if r.folded.len() as u64 == r.count {
            String::new()
        } else {
            format!(
                "; the target names the first {} (the others were not kept)",
                r.folded.len()
            )
        },
        n = r.count,
        s = if r.count == 1 { "" } else { "s" },
        code = kind.code,
        first = r.first,
    ))
}

/// Calls `tick` every half window on a thread of its own while it answers true (the host
/// lives): it writes the summaries that are due.
pub(crate) fn start_flusher(mut tick: impl FnMut() -> bool + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("warden-refusals".into())
        .spawn(move || {
            loop {
                std::thread::sleep(WINDOW / 2);
                if !tick() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        // Summaries are then written when the host closes.
        tracing::warn!(error = %e, "the thread that records repeated refusals could not be started");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use warden_audit::MemoryAudit;

    fn refused(id: &str, ext: &str) -> Record {
        Record::new(Event::Call, id)
            .with_tenant("acme")
            .with_extension(ext)
            .with_outcome(Outcome::Busy)
            .with_message("over the rate")
    }

    #[test]
    fn the_first_is_kept_repeats_are_summed() {
        let audit = Arc::new(MemoryAudit::new());
        let r = Refusals::new(audit.clone());
        assert!(r.note("rate-limited", refused("r1", "x")).is_some());
        for i in 2..=100 {
            assert!(
                r.note("rate-limited", refused(&format!("r{i}"), "x"))
                    .is_none()
            );
        }
        // Another code, another extension: each recorded alone.
        assert!(r.note("busy", refused("b1", "x")).is_some());
        assert!(r.note("rate-limited", refused("y1", "y")).is_some());
        // Not yet due.
        assert!(r.due(false).is_empty());
        let all = r.due(true);
        assert_eq!(all.len(), 1, "only the kind with repeats has a summary");
        let s = &all[0];
        assert_eq!(s.request_id(), "r100");
        assert_eq!(s.tenant(), Some("acme"));
        assert_eq!(s.extension(), Some("x"));
        assert_eq!(s.outcome(), Outcome::Busy);
        let m = s.message().unwrap();
        assert!(
            m.starts_with("99 more refusals (rate-limited) like request r1 (over the rate)"),
            "{m}"
        );
        // Each repeat is found by its own id; the first has its own record.
        assert_eq!(s.folded_requests().count(), 99);
        let by = |id: &str| warden_audit::Filter {
            request: Some(id.to_owned()),
            ..Default::default()
        };
        assert!(by("r2").matches(s) && by("r57").matches(s) && by("r100").matches(s));
        assert!(!by("r1").matches(s) && !by("r5").matches(&s.clone().with_target("r5")));
        // Forgotten after the final flush: the next is recorded alone again.
        assert!(r.note("rate-limited", refused("r101", "x")).is_some());
    }

    #[test]
    fn a_flood_names_as_many_repeats_as_one_field_holds() {
        let audit = Arc::new(MemoryAudit::new());
        let r = Refusals::new(audit.clone());
        let id = |i: u32| format!("{i:032x}");
        assert!(r.note("rate-limited", refused(&id(0), "x")).is_some());
        for i in 1..=1000 {
            assert!(r.note("rate-limited", refused(&id(i), "x")).is_none());
        }
        let all = r.due(true);
        let named: Vec<_> = all[0].folded_requests().collect();
        // 33 bytes an id with its space: 30 fit in the 1014 bytes after the prefix.
        assert_eq!(named.len(), 30);
        assert_eq!(named[0], id(1));
        assert_eq!(named[29], id(30));
        assert!(all[0].target().unwrap().len() <= warden_audit::MAX_FIELD_BYTES);
        let m = all[0].message().unwrap();
        assert!(m.contains("the target names the first 30"), "{m}");
        // The last is the summary's own.
        assert_eq!(all[0].request_id(), id(1000));
    }

    #[test]
    fn a_window_over_is_summed_and_counting_goes_on() {
        let audit = Arc::new(MemoryAudit::new());
        let r = Refusals::new(audit.clone());
        assert!(r.note("busy", refused("a", "x")).is_some());
        assert!(r.note("busy", refused("b", "x")).is_none());
        std::thread::sleep(WINDOW + Duration::from_millis(20));
        r.flush(false).unwrap();
        assert_eq!(audit.len(), 1);
        // The kind stays open: more repeats are counted, not written alone.
        assert!(r.note("busy", refused("c", "x")).is_none());
        std::thread::sleep(WINDOW + Duration::from_millis(20));
        r.flush(false).unwrap();
        let records = audit.take();
        assert_eq!(records.len(), 2);
        assert!(
            records[1]
                .message()
                .unwrap()
                .starts_with("1 more refusal (busy) like request b")
        );
        // A quiet window forgets the kind.
        std::thread::sleep(WINDOW + Duration::from_millis(20));
        r.flush(false).unwrap();
        assert!(audit.is_empty());
        assert!(r.note("busy", refused("d", "x")).is_some());
    }

    #[test]
    fn chosen_ids_cannot_grow_the_table_nor_strip_other_tenants() {
        let audit = Arc::new(MemoryAudit::new());
        let r = Refusals::new(audit.clone());
        let mut alone = 0;
        for i in 0..5000 {
            if r.note("not-found", refused(&format!("r{i}"), &format!("ext{i}")))
                .is_some()
            {
                alone += 1;
            }
        }
        assert_eq!(
            alone,
            MAX_KINDS_PER_TENANT + 1,
            "past the cap, new ids share one kind"
        );
        // Another tenant's refusals keep their own kinds.
        for i in 0..MAX_KINDS_PER_TENANT {
            let other = Record::new(Event::Call, format!("o{i}"))
                .with_tenant("other")
                .with_extension(format!("x{i}"))
                .with_outcome(Outcome::Invalid);
            assert!(r.note("not-found", other).is_some());
        }
        let all = r.due(true);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].extension(), None);
        let m = all[0].message().unwrap();
        assert!(m.contains("for several extensions"), "{m}");
        let n = 5000 - MAX_KINDS_PER_TENANT - 1;
        assert!(m.starts_with(&format!("{n} more")), "{m}");
        // The final flush forgot every kind: the tenant's cap is free again.
        assert!(r.note("not-found", refused("z", "ext-z")).is_some());
        drop(r);
    }

    #[test]
    fn dropping_writes_what_is_counted() {
        let audit = Arc::new(MemoryAudit::new());
        let r = Refusals::new(audit.clone());
        assert!(r.note("busy", refused("a", "x")).is_some());
        assert!(r.note("busy", refused("b", "x")).is_none());
        drop(r);
        assert_eq!(audit.len(), 1);
    }
}
