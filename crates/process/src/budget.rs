//! The host requests calls may make: a token bucket of one second's worth, refilled at the
//! rate. A call has one of its own unless it shares one ([`crate::Session::sharing`]): the
//! host gives every call of one install the same, so calling again does not start a full
//! bucket (each host request costs the host's own CPU, outside the sandbox's cpu group).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::limits::{DEFAULT_MAX_REQUESTS_PER_SECOND, LimitError, MAX_REQUESTS_PER_SECOND_CEILING};

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

    /// Takes one request's token, if there is one.
    pub fn take(&self) -> bool {
        self.take_at(Instant::now())
    }

    /// [`RequestBudget::take`] at `now`.
    pub(crate) fn take_at(&self, now: Instant) -> bool {
        let rate = f64::from(self.per_second);
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        // Calls of several threads may come in a little out of order: time never runs back.
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = b.last.max(now);
        b.tokens = (b.tokens + dt * rate).min(rate);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
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
        assert!(b.take_at(t));
        assert!(b.take_at(t));
        assert!(!b.take_at(t));
        assert!(b.take_at(t + Duration::from_millis(500)));
        assert!(!b.take_at(t + Duration::from_millis(500)));
        // An earlier instant (another thread's) adds nothing.
        assert!(!b.take_at(t + Duration::from_millis(100)));
        // Never more than one second's worth, however long it waited.
        let later = t + Duration::from_secs(60);
        assert!(b.take_at(later) && b.take_at(later) && !b.take_at(later));
    }

    #[test]
    fn a_rate_outside_its_bounds_is_refused() {
        assert!(RequestBudget::new(0).is_err());
        assert!(RequestBudget::new(MAX_REQUESTS_PER_SECOND_CEILING + 1).is_err());
        assert_eq!(RequestBudget::new(5).map(|b| b.per_second()), Ok(5));
    }
}
