//! What a call was allowed and refused, collected while it runs and reported with its result.
//!
//! Nothing is lost silently: repeats of a denial are counted on its entry, and each capability
//! keeps its own [`MAX_DISTINCT_PER_CAPABILITY`] distinct entries (so a flood of one kind
//! cannot crowd out another); past that, entries are counted per capability and reported as
//! one summary entry each. Targets are held whole (up to [`MAX_RAW_BYTES`]) while the call runs
//! and cut only after the report is redacted, so a cut can never leave the start of a secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use warden_manifest::Capability;

use crate::redact::Redactor;
use crate::text::cut;

/// A capability the guest asked for and did not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub capability: Capability,
    /// What it tried to reach, e.g. `scheme://host:port`, `dns:NAME` or an extension id (never
    /// a path, query or body).
    pub target: String,
    /// Why, when more can be said than "not granted" (e.g. "resolves to a non-public address").
    pub reason: Option<String>,
    /// How many times the guest tried this (same capability, target and reason) in the call.
    pub count: u64,
}

/// A capability use that was allowed: recorded once per (capability, target) per call. (Not
/// to be confused with the operator's grant, `warden_manifest::Grant`, which decides it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub capability: Capability,
    pub target: String,
}

/// Distinct denials, and distinct uses, itemized per capability per call.
pub const MAX_DISTINCT_PER_CAPABILITY: usize = 32;
/// Targets and reasons are held up to this many bytes during the call.
pub const MAX_RAW_BYTES: usize = 4096;
/// Targets and reasons are cut to this many bytes for the report (after redaction).
pub const MAX_TARGET_BYTES: usize = 256;
/// The target of a summary entry for what was not itemized.
pub const NOT_ITEMIZED: &str = "(more, not itemized)";

/// One call's record of uses and denials. Cloning shares it (the call's Store and the tasks
/// that run on the call's behalf write to the same ledger), and its [`Witness`].
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    entries: Mutex<Entries>,
    /// The most memory the call's instance held so far: kept here as it grows, so that a call
    /// stopped part-way (its Store dropped unread) still reports it.
    memory_peak: AtomicU64,
}

/// Told before a call first changes something that outlives it (a key-value write, an
/// outgoing request or socket), and awaited: the change is made only once it answers `Ok`.
/// The host's witness writes the call's `call-start` audit record, so that a call the process
/// does not live to finish still leaves a trace of what it may have changed.
#[async_trait::async_trait]
pub trait Witness: Send + Sync {
    /// `Err` (why): the change must not be made, and the capability answers with an error.
    async fn before_change(&self, capability: Capability) -> Result<(), String>;
}

#[derive(Clone, Default)]
struct Witnessed(Option<Arc<dyn Witness>>);

impl std::fmt::Debug for Witnessed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Witnessed"
        } else {
            "Unwitnessed"
        })
    }
}

#[derive(Debug, Default)]
struct Entries {
    denials: Vec<Denial>,
    uses: Vec<Use>,
    /// Limits a capability use ran into (a response cut at its cap), kept like denials.
    limits: Vec<Denial>,
    /// Denials (attempts) and uses not itemized, per capability.
    more_denials: Vec<(Capability, u64)>,
    more_uses: Vec<(Capability, u64)>,
    /// Told before the call's first lasting change. An instance kept between calls has a
    /// ledger of its own: it gets each call's witness for that call ([`Ledger::witness_as`]),
    /// and loses it when its entries are handed over ([`Ledger::move_into`]).
    witness: Witnessed,
}

impl Ledger {
    /// A fresh ledger whose call tells `witness` before its first lasting change.
    pub fn witnessed(witness: Arc<dyn Witness>) -> Ledger {
        Ledger(Arc::new(Shared {
            entries: Mutex::new(Entries {
                witness: Witnessed(Some(witness)),
                ..Entries::default()
            }),
            memory_peak: AtomicU64::new(0),
        }))
    }

    /// Gives this ledger (a kept instance's) the witness of `call`'s ledger, until its entries
    /// are handed over.
    pub fn witness_as(&self, call: &Ledger) {
        if Arc::ptr_eq(&self.0, &call.0) {
            return;
        }
        let witness = call
            .0
            .entries
            .lock()
            .map(|e| e.witness.clone())
            .unwrap_or_default();
        if let Ok(mut e) = self.0.entries.lock() {
            e.witness = witness;
        }
    }

    /// Waits for the call's witness (if any) before a change that outlives the call; `Err`:
    /// the change must not be made. (A poisoned ledger has no witness to ask: refused.)
    pub async fn before_change(&self, capability: Capability) -> Result<(), String> {
        let witness = match self.0.entries.lock() {
            Ok(e) => e.witness.0.clone(),
            Err(_) => return Err("the call's ledger is broken: nothing was changed".into()),
        };
        match witness {
            Some(w) => w.before_change(capability).await,
            None => Ok(()),
        }
    }

    /// Notes that the call's instance holds `bytes` of memory (the peak is kept).
    pub fn note_memory(&self, bytes: u64) {
        self.0.memory_peak.fetch_max(bytes, Ordering::Relaxed);
    }

    /// The most memory noted with [`Ledger::note_memory`] (0 if none was).
    pub fn memory_peak(&self) -> u64 {
        self.0.memory_peak.load(Ordering::Relaxed)
    }

    /// Records a refused capability use.
    pub fn deny(&self, capability: Capability, target: &str, reason: Option<String>) {
        self.deny_times(capability, target, reason, 1);
    }

    /// Records `times` refusals of one kind at once (counted by someone else, e.g. the
    /// sandbox's seccomp supervisor); none if `times` is 0.
    pub fn deny_times(
        &self,
        capability: Capability,
        target: &str,
        reason: Option<String>,
        times: u64,
    ) {
        if times == 0 {
            return;
        }
        let Ok(mut e) = self.0.entries.lock() else {
            return;
        };
        let Entries {
            denials,
            more_denials,
            ..
        } = &mut *e;
        push_times(denials, more_denials, capability, target, reason, times);
    }

    /// Records a limit that a capability use ran into, e.g. an outgoing response cut at the
    /// extension's `max_response_bytes` (the host audits it as a `limit` record).
    pub fn limit(&self, capability: Capability, target: &str, reason: String) {
        let Ok(mut e) = self.0.entries.lock() else {
            return;
        };
        let Entries {
            limits,
            more_denials,
            ..
        } = &mut *e;
        push_times(limits, more_denials, capability, target, Some(reason), 1);
    }

    /// Records an allowed capability use, once per (capability, target).
    pub fn allow(&self, capability: Capability, target: &str) {
        let Ok(mut e) = self.0.entries.lock() else {
            return;
        };
        let target = cut(target, MAX_RAW_BYTES);
        if e.uses
            .iter()
            .any(|g| g.capability == capability && g.target == target)
        {
            return;
        }
        if e.uses.iter().filter(|g| g.capability == capability).count()
            >= MAX_DISTINCT_PER_CAPABILITY
        {
            bump(&mut e.more_uses, capability);
            return;
        }
        e.uses.push(Use { capability, target });
    }

    /// Every denial, then one summary per capability whose distinct denials overflowed.
    pub fn denials(&self) -> Vec<Denial> {
        let Ok(e) = self.0.entries.lock() else {
            return Vec::new();
        };
        let mut out = e.denials.clone();
        for (capability, n) in &e.more_denials {
            out.push(Denial {
                capability: *capability,
                target: NOT_ITEMIZED.to_string(),
                reason: Some(format!(
                    "more than {MAX_DISTINCT_PER_CAPABILITY} distinct refusals of this capability in one call"
                )),
                count: *n,
            });
        }
        out
    }

    /// Every limit hit (beyond the itemized ones they are counted with the denials' summary).
    pub fn limits(&self) -> Vec<Denial> {
        self.0
            .entries
            .lock()
            .map(|e| e.limits.clone())
            .unwrap_or_default()
    }

    /// Every distinct use, then one summary per capability that overflowed.
    pub fn uses(&self) -> Vec<Use> {
        let Ok(e) = self.0.entries.lock() else {
            return Vec::new();
        };
        let mut out = e.uses.clone();
        for (capability, n) in &e.more_uses {
            out.push(Use {
                capability: *capability,
                target: format!("{NOT_ITEMIZED}: {n} more distinct targets"),
            });
        }
        out
    }
}

impl Ledger {
    /// Moves every entry into `to`, leaving this ledger empty: an instance kept between calls
    /// (`[policy.component] warm_calls`) has one ledger of its own, handed over to each call's
    /// after the call.
    pub fn move_into(&self, to: &Ledger) {
        if Arc::ptr_eq(&self.0, &to.0) {
            return;
        }
        to.note_memory(self.memory_peak());
        let Ok(mut from) = self.0.entries.lock() else {
            return;
        };
        let from = std::mem::take(&mut *from);
        let Ok(mut to) = to.0.entries.lock() else {
            return;
        };
        let Entries {
            denials,
            uses,
            limits,
            more_denials,
            more_uses,
            witness: _,
        } = &mut *to;
        for d in from.denials {
            merge(denials, more_denials, d);
        }
        for d in from.limits {
            merge(limits, more_denials, d);
        }
        for u in from.uses {
            if uses.contains(&u) {
                continue;
            }
            if uses.iter().filter(|g| g.capability == u.capability).count()
                >= MAX_DISTINCT_PER_CAPABILITY
            {
                add(more_uses, u.capability, 1);
            } else {
                uses.push(u);
            }
        }
        for (c, n) in from.more_denials {
            add(more_denials, c, n);
        }
        for (c, n) in from.more_uses {
            add(more_uses, c, n);
        }
    }

    /// Whether nothing was recorded (a poisoned lock is not known to be empty).
    fn is_empty(&self) -> bool {
        self.0.entries.lock().is_ok_and(|e| {
            e.denials.is_empty()
                && e.uses.is_empty()
                && e.limits.is_empty()
                && e.more_denials.is_empty()
                && e.more_uses.is_empty()
        })
    }

    /// The entries as the report carries them: redacted of the call's secret values, then cut
    /// to [`MAX_TARGET_BYTES`] (in that order, so a cut never leaves the start of a value).
    pub fn report(&self, redactor: &Redactor) -> (Vec<Denial>, Vec<Use>, Vec<Denial>) {
        // Most calls use nothing recorded here: one lock, and nothing to copy or redact.
        if self.is_empty() {
            return (Vec::new(), Vec::new(), Vec::new());
        }
        let clean = |d: Denial| Denial {
            target: cut(&redactor.text(&d.target), MAX_TARGET_BYTES),
            reason: d.reason.map(|r| cut(&redactor.text(&r), MAX_TARGET_BYTES)),
            ..d
        };
        let denials = self.denials().into_iter().map(clean).collect();
        let limits = self.limits().into_iter().map(clean).collect();
        let uses = self
            .uses()
            .into_iter()
            .map(|g| Use {
                target: cut(&redactor.text(&g.target), MAX_TARGET_BYTES),
                ..g
            })
            .collect();
        (denials, uses, limits)
    }
}

/// Adds one refusal (or limit hit) to `list`: counted on an equal entry, itemized while the
/// capability has fewer than [`MAX_DISTINCT_PER_CAPABILITY`] entries, summarized after that.
/// Adds `times` equal entries: counted on an entry already there, or past the per-capability
/// cap on its summary.
fn push_times(
    list: &mut Vec<Denial>,
    more: &mut Vec<(Capability, u64)>,
    capability: Capability,
    target: &str,
    reason: Option<String>,
    times: u64,
) {
    let target = cut(target, MAX_RAW_BYTES);
    let reason = reason.map(|r| cut(&r, MAX_RAW_BYTES));
    if let Some(d) = list
        .iter_mut()
        .find(|d| d.capability == capability && d.target == target && d.reason == reason)
    {
        d.count = d.count.saturating_add(times);
        return;
    }
    if list.iter().filter(|d| d.capability == capability).count() >= MAX_DISTINCT_PER_CAPABILITY {
        add(more, capability, times);
        return;
    }
    list.push(Denial {
        capability,
        target,
        reason,
        count: times,
    });
}

fn bump(more: &mut Vec<(Capability, u64)>, capability: Capability) {
    add(more, capability, 1);
}

fn add(more: &mut Vec<(Capability, u64)>, capability: Capability, by: u64) {
    match more.iter_mut().find(|(c, _)| *c == capability) {
        Some((_, n)) => *n = n.saturating_add(by),
        None => more.push((capability, by)),
    }
}

/// [`push`] for an entry already made (and counted): counts add up.
fn merge(list: &mut Vec<Denial>, more: &mut Vec<(Capability, u64)>, d: Denial) {
    if let Some(e) = list
        .iter_mut()
        .find(|e| e.capability == d.capability && e.target == d.target && e.reason == d.reason)
    {
        e.count = e.count.saturating_add(d.count);
        return;
    }
    if list.iter().filter(|e| e.capability == d.capability).count() >= MAX_DISTINCT_PER_CAPABILITY {
        add(more, d.capability, d.count);
        return;
    }
    list.push(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_each_capability_keeps_its_own_budget() {
        let ledger = Ledger::default();
        // A flood of distinct secret denials, then the one that matters.
        for i in 0..40 {
            ledger.deny(Capability::Secrets, &format!("NOPE{i}"), None);
        }
        for _ in 0..5 {
            ledger.deny(
                Capability::Network,
                "http://169.254.169.254:80",
                Some("metadata".into()),
            );
        }
        let d = ledger.denials();
        let net: Vec<_> = d
            .iter()
            .filter(|d| d.capability == Capability::Network)
            .collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0].count, 5);
        let secret: Vec<_> = d
            .iter()
            .filter(|d| d.capability == Capability::Secrets)
            .collect();
        assert_eq!(secret.len(), MAX_DISTINCT_PER_CAPABILITY + 1);
        let summary = secret.last().unwrap();
        assert_eq!(summary.target, NOT_ITEMIZED);
        assert_eq!(summary.count, 40 - MAX_DISTINCT_PER_CAPABILITY as u64);
    }

    #[test]
    fn moving_entries_keeps_counts_and_empties_the_source() {
        let (from, to) = (Ledger::default(), Ledger::default());
        to.deny(Capability::Network, "http://a:80", None);
        for _ in 0..3 {
            from.deny(Capability::Network, "http://a:80", None);
        }
        from.allow(Capability::Kv, "b");
        from.limit(Capability::Network, "http://c:80", "cut".into());
        for i in 0..40 {
            from.deny(Capability::Secrets, &format!("S{i}"), None);
        }
        from.move_into(&to);
        from.move_into(&from);
        assert!(from.denials().is_empty() && from.uses().is_empty() && from.limits().is_empty());
        let d = to.denials();
        assert_eq!(d[0].count, 4);
        let summary = d.iter().find(|d| d.target == NOT_ITEMIZED).unwrap();
        assert_eq!(summary.count, 40 - MAX_DISTINCT_PER_CAPABILITY as u64);
        assert_eq!(to.uses().len(), 1);
        assert_eq!(to.limits().len(), 1);
    }

    #[test]
    fn the_memory_peak_is_the_highest_noted_and_moves_with_the_entries() {
        let (from, to) = (Ledger::default(), Ledger::default());
        assert_eq!(to.memory_peak(), 0);
        from.note_memory(300);
        from.note_memory(100);
        to.note_memory(200);
        assert_eq!(from.memory_peak(), 300);
        from.move_into(&to);
        assert_eq!(to.memory_peak(), 300);
    }

    #[test]
    fn uses_of_one_capability_cannot_crowd_out_another() {
        let ledger = Ledger::default();
        for i in 0..100 {
            ledger.allow(Capability::Kv, &format!("bucket{i}"));
        }
        ledger.allow(Capability::Secrets, "API_TOKEN");
        ledger.allow(Capability::Secrets, "API_TOKEN");
        let g = ledger.uses();
        assert_eq!(
            g.iter()
                .filter(|g| g.capability == Capability::Secrets)
                .count(),
            1
        );
        let kv: Vec<_> = g
            .iter()
            .filter(|g| g.capability == Capability::Kv)
            .collect();
        assert_eq!(kv.len(), MAX_DISTINCT_PER_CAPABILITY + 1);
        assert!(kv.last().unwrap().target.contains("68 more"), "{kv:?}");
    }

    #[test]
    fn targets_are_held_whole_until_the_report_cuts_them() {
        let ledger = Ledger::default();
        let long = format!("{}SECRET", "p".repeat(253));
        ledger.deny(Capability::Network, &long, None);
        // Whole here, so redaction sees the value before the report cuts to 256 bytes.
        assert_eq!(ledger.denials()[0].target, long);
        let huge = "x".repeat(10_000);
        ledger.deny(Capability::Network, &huge, None);
        assert_eq!(ledger.denials()[1].target.len(), MAX_RAW_BYTES);
    }
}
