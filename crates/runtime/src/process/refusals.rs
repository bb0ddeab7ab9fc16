//! The sandbox's refused system calls, as denials of the calls that get to report them.

use std::sync::{Mutex, PoisonError};

use warden_call::Ledger;
use warden_sandbox::Refusal;

/// Refusals of processes of an install that no call reported: made by a warm process while it
/// was parked (no freezer: it can continue itself) before it was swept. The install's next
/// call reports them (its ledger merges and caps them). Bounded: only calls start processes,
/// and each call takes what is kept, so at most the parked processes' refusals wait here.
#[derive(Debug, Default)]
pub(crate) struct Unreported(Mutex<Vec<Refusal>>);

impl Unreported {
    pub(crate) fn keep(&self, refusals: Vec<Refusal>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(refusals);
    }

    pub(crate) fn take(&self) -> Vec<Refusal> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Records `refusals` as denials (capability `system`) in `ledger`; `earlier`: made by a
/// process of the install after its previous answer, not during this call.
pub(crate) fn record(ledger: &Ledger, refusals: Vec<Refusal>, earlier: bool) {
    let when = if earlier {
        ", to a process of this install after its previous answer"
    } else {
        ""
    };
    for r in refusals {
        let reason = if r.killed {
            format!(
                "never run: the sandbox was killed for it by the host's seccomp supervisor{when}"
            )
        } else {
            format!("refused by the sandbox's seccomp filter (EPERM){when}")
        };
        ledger.deny_times(
            warden_manifest::Capability::System,
            &r.call,
            Some(reason),
            r.times,
        );
    }
}
