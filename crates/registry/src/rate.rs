//! [`RateLeases`]: each tenant's request rate as one token bucket that every runner draws from,
//! so that a limit of R requests a second holds for the fleet, not R per runner. A runner
//! leases a few tokens at a time and gives back what it did not use; the bucket is timed by
//! the storage's clock alone, so the runners' clocks do not matter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use warden_manifest::TenantName;

use crate::store::RegistryError;

/// A tenant's rate: `per_second` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// The shared buckets. A bucket starts full (`burst` tokens).
pub trait RateLeases: Send + Sync {
    /// Takes up to `want` whole tokens from `tenant`'s bucket now; returns how many it took
    /// (0 when the bucket is empty).
    fn lease(&self, tenant: &TenantName, want: u32, rate: Rate) -> Result<u32, RegistryError>;

    /// Puts `n` tokens leased but not used back (the bucket still holds at most `burst`).
    fn give_back(&self, tenant: &TenantName, n: u32, rate: Rate) -> Result<(), RegistryError>;

    /// [`RateLeases::lease`] if it can be answered without waiting for anything (another
    /// holder of a lock, the network); `None` if not. A store that always waits says `None`.
    fn lease_now(
        &self,
        _tenant: &TenantName,
        _want: u32,
        _rate: Rate,
    ) -> Option<Result<u32, RegistryError>> {
        None
    }
}

/// A seat of [`SharedSeats`], held until dropped.
pub type Seat = Box<dyn Send + Sync>;

/// Each tenant's calls in flight, counted by every process that shares this storage: at most
/// `of` seats are held at once, whoever holds them, and a process that ends gives its own back.
pub trait SharedSeats: Send + Sync {
    /// One of `tenant`'s `of` seats if one is free now (never waits), held until the returned
    /// [`Seat`] is dropped; `None` if all are held.
    fn try_take(&self, tenant: &TenantName, of: u32) -> Result<Option<Seat>, RegistryError>;
}

/// Buckets in this process's memory: one runner, or runners sharing this value (tests).
#[derive(Debug, Default)]
pub struct MemoryRateLeases {
    buckets: Mutex<HashMap<TenantName, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refilled up to now.
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + f64::from(rate.per_second.get()) * elapsed)
            .min(f64::from(rate.burst.get()));
        self.at = now;
    }
}

impl MemoryRateLeases {
    fn with<T>(&self, tenant: &TenantName, rate: Rate, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut all = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let bucket = all.entry(tenant.clone()).or_insert(Bucket {
            tokens: f64::from(rate.burst.get()),
            at: now,
        });
        bucket.refill(rate, now);
        f(bucket)
    }
}

impl RateLeases for MemoryRateLeases {
    fn lease(&self, tenant: &TenantName, want: u32, rate: Rate) -> Result<u32, RegistryError> {
        Ok(self.with(tenant, rate, |b| {
            // Whole tokens only: the fraction stays for the next lease.
            let granted = b.tokens.floor().min(f64::from(want));
            b.tokens -= granted;
            granted as u32
        }))
    }

    fn give_back(&self, tenant: &TenantName, n: u32, rate: Rate) -> Result<(), RegistryError> {
        self.with(tenant, rate, |b| {
            b.tokens = (b.tokens + f64::from(n)).min(f64::from(rate.burst.get()));
        });
        Ok(())
    }

    /// Never waits (but for this process's other threads, for as long as a lease takes).
    fn lease_now(
        &self,
        tenant: &TenantName,
        want: u32,
        rate: Rate,
    ) -> Option<Result<u32, RegistryError>> {
        Some(self.lease(tenant, want, rate))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn a_bucket_starts_full_lends_whole_tokens_and_refills_at_its_rate() {
        let leases = MemoryRateLeases::default();
        let t: TenantName = "acme".parse().unwrap();
        let r = rate(50, 10);
        assert_eq!(leases.lease(&t, 5, r).unwrap(), 5);
        assert_eq!(leases.lease(&t, 5, r).unwrap(), 5);
        assert!(leases.lease(&t, 5, r).unwrap() <= 1);
        std::thread::sleep(std::time::Duration::from_millis(100));
        // 100 ms of 50/s is 5 tokens (a little more on a slow machine, never past the burst).
        let got = leases.lease(&t, 10, r).unwrap();
        assert!((4..=10).contains(&got), "{got}");
        // Given back, capped at the burst.
        leases.give_back(&t, 100, r).unwrap();
        assert_eq!(leases.lease(&t, 100, r).unwrap(), 10);
        // Tenants do not share.
        let other: TenantName = "other".parse().unwrap();
        assert_eq!(leases.lease(&other, 10, r).unwrap(), 10);
    }
}
