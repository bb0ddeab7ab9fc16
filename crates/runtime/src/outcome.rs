//! What every kind of call shares before it runs: the fuel of an unmetered call, and the
//! outcome of a call refused before it started.

use std::time::Instant;

use warden_call::{CallError, CallOutcome, CallReport};

/// Fuel given to a call whose extension sets no fuel limit: fuel is always on in the engine
/// (so limits can be per extension), and this is effectively unlimited.
pub(crate) const UNMETERED_FUEL: u64 = u64::MAX / 2;

/// A call that ended with `e` before its extension ran.
pub(crate) fn failed<T>(started: Instant, e: CallError) -> CallOutcome<T> {
    CallOutcome {
        result: Err(e),
        report: CallReport {
            duration: started.elapsed(),
            ..CallReport::default()
        },
    }
}
