//! The sandbox's refused system calls, as denials of the calls that get to report them.

use std::sync::{Arc, Mutex, PoisonError};

use warden_call::{Denial, Ledger};
use warden_sandbox::Refusal;

/// Refusals of processes of an install that no call reported: made by a warm process while it
/// was parked (no freezer: it can continue itself) before it was swept. The install's next
/// call reports them (its ledger merges and caps them). Bounded: only calls start processes,
/// and each call takes what is kept, so at most the parked processes' refusals wait here.
/// Once the install is retired no call will come: they go to its retirement's reporter then.
#[derive(Default)]
pub(crate) struct Unreported(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    refusals: Vec<Refusal>,
    reporter: Option<Reporter>,
}

/// Takes denials no call of a retired install can report (see [`Unreported`]).
pub type Reporter = Arc<dyn Fn(Vec<Denial>) + Send + Sync>;

impl std::fmt::Debug for Unreported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unreported").finish_non_exhaustive()
    }
}

impl Unreported {
    pub(crate) fn keep(&self, refusals: Vec<Refusal>) {
        if refusals.is_empty() {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match kept.reporter.clone() {
            Some(report) => {
                drop(kept);
                report(denials(refusals, RETIRED));
            }
            None => kept.refusals.extend(refusals),
        }
    }

    pub(crate) fn take(&self) -> Vec<Refusal> {
        std::mem::take(
            &mut self
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .refusals,
        )
    }

    /// Whether [`Unreported::retire`] was called: the install keeps no process any more.
    pub(crate) fn retired(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reporter
            .is_some()
    }

    /// From now on what is kept goes to `report`, with what was kept until now.
    pub(crate) fn retire(&self, report: Reporter) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting = std::mem::take(&mut kept.refusals);
        kept.reporter = Some(Arc::clone(&report));
        drop(kept);
        if !waiting.is_empty() {
            report(denials(waiting, RETIRED));
        }
    }
}

/// Said of refusals reported at an install's retirement.
const RETIRED: &str = ", to a process of this install after its last answer (it was then ended \
                       with its install: unloaded, upgraded or the host closing)";

/// Records `refusals` as denials (capability `system`) in `ledger`; `earlier`: made by a
/// process of the install after its previous answer, not during this call.
pub(crate) fn record(ledger: &Ledger, refusals: Vec<Refusal>, earlier: bool) {
    let when = if earlier {
        ", to a process of this install after its previous answer"
    } else {
        ""
    };
    for d in denials(refusals, when) {
        ledger.deny_times(d.capability, &d.target, d.reason, d.count);
    }
}

/// `refusals` as denials of capability `system`; `when` ends their reason.
fn denials(refusals: Vec<Refusal>, when: &str) -> Vec<Denial> {
    refusals
        .into_iter()
        .map(|r| {
            let reason = if r.killed {
                format!(
                    "never run: the sandbox was killed for it by the host's seccomp supervisor{when}"
                )
            } else {
                format!("refused by the sandbox's seccomp filter (EPERM){when}")
            };
            Denial {
                capability: warden_manifest::Capability::System,
                target: r.call,
                reason: Some(reason),
                count: r.times,
            }
        })
        .collect()
}
