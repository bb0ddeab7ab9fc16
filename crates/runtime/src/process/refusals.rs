//! The sandbox's refused system calls, as denials of the calls that get to report them.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use warden_call::Ledger;
use warden_sandbox::Refusal;

/// Distinct refusals kept for a later call; past these, the rest are counted together.
const MAX_KEPT: usize = 64;

/// Refusals of processes of an install that no call reported: made by a warm process while it
/// was parked (no freezer: it can continue itself) before it was swept. The install's next
/// call reports them.
#[derive(Debug, Default)]
pub(crate) struct Unreported(Mutex<BTreeMap<(String, bool), u64>>);

impl Unreported {
    pub(crate) fn keep(&self, refusals: Vec<Refusal>) {
        if refusals.is_empty() {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for r in refusals {
            let key = if kept.len() < MAX_KEPT || kept.contains_key(&(r.call.clone(), r.killed)) {
                (r.call, r.killed)
            } else {
                ("other system calls".to_owned(), false)
            };
            let n = kept.entry(key).or_default();
            *n = n.saturating_add(r.times);
        }
    }

    pub(crate) fn take(&self) -> Vec<Refusal> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
            .into_iter()
            .map(|((call, killed), times)| Refusal {
                call,
                times,
                killed,
            })
            .collect()
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
