//! The host requests calls may make: a token bucket of one second's worth, refilled at the
//! rate. A call has one of its own unless it shares one ([`crate::Session::sharing`]): the
//! host gives every call of one install the same, so calling again does not start a full
//! bucket (each host request costs the host's own CPU, outside the sandbox's cpu group).
//! A call that shares one makes its first [`FREE_PER_CALL`] requests on its own, so an
//! install whose calls ask little (a key or two each) is never held to the shared rate however
//! fast it is called; the caller's own rate limits bound those.
//!
//! Bytes are never free: every [`BYTES_PER_REQUEST`] a request or its answer carries costs
//! one more, from the budget (a request of 6 MB costs the host about as much as 400 small
//! ones; outside attack, session 37: 64 such requests a second held the host at 0.75 of a
//! CPU). An answer's cost is known once it is made: it is taken even into debt, and no
//! request is served while the budget is in debt (outside attack, session 37: two answers of
//! 933 KB per call went through for free when the call's own 64 paid for them).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::limits::{DEFAULT_MAX_REQUESTS_PER_SECOND, LimitError, MAX_REQUESTS_PER_SECOND_CEILING};

/// Requests each call that shares a budget makes before it draws on it.
pub const FREE_PER_CALL: u32 = 64;

/// Bytes of a host request or its answer that cost as much as one more request.
pub const BYTES_PER_REQUEST: usize = 16 * 1024;

/// What a call that ran out of its install's budget is told (a process's trap, a remote's).
pub fn exceeded(per_second: u32) -> String {
    format!(
        "more than {per_second} host requests per second, counted over all calls of this \
         extension for this tenant (past each call's first {FREE_PER_CALL}; every 16 KiB of a \
         request or its answer counts as one more)"
    )
}

/// What the bytes of a request or an answer cost, on top of the request itself.
pub fn size_cost(bytes: usize) -> u32 {
    u32::try_from(bytes / BYTES_PER_REQUEST).unwrap_or(u32::MAX)
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

    /// Takes `n` tokens if there are that many (none otherwise; with none, whether the budget
    /// is out of debt).
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

/// One call's spending: its first [`FREE_PER_CALL`] requests (when it shares the budget) on
/// its own, every byte and every later request from the budget.
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

    /// A request of `bytes`: served, or refused (nothing taken) when the budget has not
    /// enough, or is in debt.
    pub fn request(&mut self, bytes: usize) -> bool {
        let own = u32::from(self.free > 0);
        // Even one of the call's own (nothing to take) waits while the budget is in debt:
        // `take(0)` fails then.
        if self.budget.take((1 - own).saturating_add(size_cost(bytes))) {
            self.free -= own;
            true
        } else {
            false
        }
    }

    /// An answer of `bytes`, sent: its bytes taken even into debt.
    pub fn answered(&mut self, bytes: usize) {
        let n = size_cost(bytes);
        if n > 0 {
            self.budget.charge(n);
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
    fn a_call_makes_its_first_requests_on_its_own_but_pays_for_bytes() {
        assert_eq!(
            (size_cost(0), size_cost(16 * 1024 - 1), size_cost(16 * 1024)),
            (0, 0, 1)
        );
        assert_eq!(size_cost(6 << 20), 384);
        let shared = RequestBudget::full(10, Instant::now());
        let mut call = CallBudget::new(&shared, 2);
        // 2 of its own, then 1 each from the 10 shared.
        for _ in 0..5 {
            assert!(call.request(100));
        }
        // 7 left: a request of 112 KiB costs 1 + 7.
        assert!(!call.request(7 * 16 * 1024));
        assert!(call.request(6 * 16 * 1024));
        assert!(!call.request(0));
        // An answer's bytes go into debt: no request is served until it is paid back, even
        // a new call's own.
        let mut next = CallBudget::new(&shared, 2);
        next.answered(3 * 16 * 1024);
        assert!(!next.request(0));
    }

    #[test]
    fn a_rate_outside_its_bounds_is_refused() {
        assert!(RequestBudget::new(0).is_err());
        assert!(RequestBudget::new(MAX_REQUESTS_PER_SECOND_CEILING + 1).is_err());
        assert_eq!(RequestBudget::new(5).map(|b| b.per_second()), Ok(5));
    }
}
