//! The host requests calls may make: a token bucket of one second's worth, refilled at the
//! rate. A call has one of its own unless it shares one ([`crate::Session::sharing`]): the
//! host gives every call of one install the same, so calling again does not start a full
//! bucket (each host request costs the host's own CPU, outside the sandbox's cpu group).
//! A call that shares one first spends [`FREE_PER_CALL`] of its own, so an install whose
//! calls ask little (a key or two each) is never held to the shared rate however fast it is
//! called; the caller's own rate limits bound those.
//!
//! A request costs 1, and 1 more for every [`BYTES_PER_REQUEST`] it or its answer carries: a
//! request of 6 MB costs the host about as much as 400 small ones (outside attack, session
//! 37: 64 such requests a second held the host at 0.75 of a CPU).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::limits::{DEFAULT_MAX_REQUESTS_PER_SECOND, LimitError, MAX_REQUESTS_PER_SECOND_CEILING};

/// What each call that shares a budget may spend before it draws on it.
pub const FREE_PER_CALL: u32 = 64;

/// Bytes of a host request or its answer that cost as much as one more request.
pub const BYTES_PER_REQUEST: usize = 16 * 1024;

/// What a host request of `bytes` (or its answer) costs.
pub fn cost(bytes: usize) -> u32 {
    u32::try_from(bytes / BYTES_PER_REQUEST)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// What an answer of `bytes` costs on top of its request (its request paid the first unit).
pub fn answer_cost(bytes: usize) -> u32 {
    cost(bytes) - 1
}

/// Host requests per second, shared by the calls that hold it.
#[derive(Debug)]
pub struct RequestBudget {
    per_second: u32,
    bucket: Mutex<Bucket>,
}

impl RequestBudget {
    /// A full bucket of `per_second` (1 to [`MAX_REQUESTS_PER_SECOND_CEILING`]).
    pub fn new(per_second: u32) -> Result<RequestBudget, LimitError> {
        if !(1..=MAX_REQUESTS_PER_SECOND_CEILING).contains(&per_second) {
            return Err(LimitError {
                name: "max_requests_per_second",
                min: 1,
                value: per_second.into(),
                ceiling: MAX_REQUESTS_PER_SECOND_CEILING.into(),
            });
        }
        Ok(RequestBudget::full(per_second, Instant::now()))
    }

    /// From a rate already checked (a [`crate::Limits`]'s).
    pub(crate) fn full(per_second: u32, now: Instant) -> RequestBudget {
        RequestBudget {
            per_second,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(per_second),
                last: now,
            }),
        }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Takes `n` tokens if there are that many (none otherwise).
    pub fn take(&self, n: u32) -> bool {
        self.take_at(n, Instant::now())
    }

    /// Takes `n` tokens whether there are or not: what an answer cost once it was sent. A
    /// debt of up to a second's worth is then paid back before the next request is served.
    pub fn charge(&self, n: u32) {
        let floor = -f64::from(self.per_second);
        let mut b = self.refilled(Instant::now());
        b.tokens = (b.tokens - f64::from(n)).max(floor);
    }

    /// [`RequestBudget::take`] at `now`.
    pub(crate) fn take_at(&self, n: u32, now: Instant) -> bool {
        let mut b = self.refilled(now);
        if b.tokens >= f64::from(n) {
            b.tokens -= f64::from(n);
            true
        } else {
            false
        }
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, Bucket> {
        let rate = f64::from(self.per_second);
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        // Calls of several threads may come in a little out of order: time never runs back.
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = b.last.max(now);
        b.tokens = (b.tokens + dt * rate).min(rate);
        b
    }
}

/// One call's spending: its own [`FREE_PER_CALL`] first (when it shares the budget), then
/// the budget.
pub struct CallBudget<'a> {
    free: u32,
    budget: &'a RequestBudget,
}

impl<'a> CallBudget<'a> {
    pub fn new(budget: &'a RequestBudget, free: u32) -> CallBudget<'a> {
        CallBudget { free, budget }
    }

    pub fn per_second(&self) -> u32 {
        self.budget.per_second()
    }

    /// Takes `n`: from the call's own first, the rest from the budget, or nothing.
    pub fn take(&mut self, n: u32) -> bool {
        let own = n.min(self.free);
        if own == n || self.budget.take(n - own) {
            self.free -= own;
            true
        } else {
            false
        }
    }

    /// Takes `n` even into debt (see [`RequestBudget::charge`]).
    pub fn charge(&mut self, n: u32) {
        let own = n.min(self.free);
        self.free -= own;
        if n > own {
            self.budget.charge(n - own);
        }
    }
}

impl Default for RequestBudget {
    /// [`DEFAULT_MAX_REQUESTS_PER_SECOND`].
    fn default() -> RequestBudget {
        RequestBudget::full(DEFAULT_MAX_REQUESTS_PER_SECOND, Instant::now())
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_refills_over_time() {
        let t = Instant::now();
        let b = RequestBudget::full(2, t);
        assert!(b.take_at(1, t));
        assert!(b.take_at(1, t));
        assert!(!b.take_at(1, t));
        assert!(b.take_at(1, t + Duration::from_millis(500)));
        assert!(!b.take_at(1, t + Duration::from_millis(500)));
        // An earlier instant (another thread's) adds nothing.
        assert!(!b.take_at(1, t + Duration::from_millis(100)));
        // Never more than one second's worth, however long it waited.
        let later = t + Duration::from_secs(60);
        assert!(b.take_at(1, later) && b.take_at(1, later) && !b.take_at(1, later));
        // All or nothing.
        assert!(!b.take_at(3, later + Duration::from_secs(60)));
        assert!(b.take_at(2, later + Duration::from_secs(60)));
    }

    #[test]
    fn a_call_spends_its_own_first_and_big_ones_cost_more() {
        assert_eq!((cost(0), cost(16 * 1024 - 1), cost(16 * 1024)), (1, 1, 2));
        assert_eq!(cost(6 << 20), 385);
        assert_eq!(answer_cost(100), 0);
        let shared = RequestBudget::full(10, Instant::now());
        let mut call = CallBudget::new(&shared, 4);
        // 4 of its own, then 6 of the 10 shared.
        assert!(call.take(10));
        assert!(!call.take(5));
        assert!(call.take(4));
        // An answer's cost goes into debt: nothing is left for the next call's shared part.
        call.charge(3);
        let mut next = CallBudget::new(&shared, 4);
        assert!(next.take(4));
        assert!(!next.take(1));
    }

    #[test]
    fn a_rate_outside_its_bounds_is_refused() {
        assert!(RequestBudget::new(0).is_err());
        assert!(RequestBudget::new(MAX_REQUESTS_PER_SECOND_CEILING + 1).is_err());
        assert_eq!(RequestBudget::new(5).map(|b| b.per_second()), Ok(5));
    }
}
