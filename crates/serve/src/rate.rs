//! Each tenant's request rate, by this process ([`TenantRate::Local`], governor's keyed GCRA:
//! the embedded default), with the bucket the runners on its data dir share checked after it
//! ([`Sharing::DataDir`]), or by the bucket every runner of a fleet shares
//! ([`TenantRate::Shared`]).
//!
//! Shared: a runner keeps a few tokens per tenant, leased from the tenant's one bucket in the
//! storage ([`RateLeases`]) about 50 ms of rate at a time, and leases again in the background
//! when half are used, so a request rarely waits on the storage. A request that finds none
//! waits at most [`LEASE_WAIT`] (1 s) for a lease in flight. Tokens unused for [`KEEP`] go back.
//! The bucket lends at most rate × time + burst to the whole fleet, so runners never admit
//! more than the limit; they admit less by at most the tokens they hold (a few batches).
//! A storage that cannot be reached is 503, not 429: the limit is not what refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use warden_host::TenantName;
use warden_registry::{Rate, RateLeases, SharedSeats};

use crate::error::ApiError;

/// Longest wait of a request for a lease in flight before it is refused. Generous: a lease
/// only waits on the storage (a new runner's first one opens a connection), and a request
/// refused for a slow storage would be told it is over a rate it is not over.
const LEASE_WAIT: Duration = Duration::from_secs(1);
/// How long a runner does not ask a storage that failed a lease again.
const RETRY_FAILED: Duration = Duration::from_millis(50);
/// Tokens held this long without use go back to the shared bucket.
const KEEP: Duration = Duration::from_millis(200);

/// What a runner shares with the other runners on its storage: each tenant's rate, and its
/// calls in flight.
#[derive(Clone)]
pub enum Sharing {
    /// Nothing: kept in this process alone (tests; an embedder with one process on its
    /// storage).
    Alone,
    /// The runners on one data dir: a bucket per tenant (asked with
    /// [`RateLeases::lease_now`], `None` meaning its lock is held elsewhere), taken from once
    /// this runner's own limiter admits, and seats per tenant, one held by each call in flight besides this
    /// runner's slot. Together they admit `tenant_rate` and hold `tenant_concurrency`, not
    /// each.
    DataDir {
        rate: Arc<dyn RateLeases>,
        seats: Arc<dyn SharedSeats>,
    },
    /// A fleet's runners: a bucket per tenant, leased ahead in batches (calls in flight are
    /// counted per runner).
    Fleet(Arc<dyn RateLeases>),
}

pub(crate) enum TenantRate {
    Local(LocalRate),
    Shared(Arc<SharedRate>),
}

/// Governor's keyed limiter, and per tenant the queue of its requests waiting for a token: they
/// are admitted in the order they came (a tokio mutex is fair), not by who wakes first.
pub(crate) struct LocalRate {
    limiter: DefaultKeyedRateLimiter<TenantName>,
    queues: Mutex<HashMap<TenantName, Arc<tokio::sync::Mutex<()>>>>,
    /// The data dir's buckets, and the rate they are kept at.
    data_dir: Option<(Arc<dyn RateLeases>, Rate)>,
}

impl LocalRate {
    fn queue(&self, tenant: &TenantName) -> Arc<tokio::sync::Mutex<()>> {
        let mut all = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        // Looked up before the name is copied for a new entry: this runs on every request.
        if let Some(q) = all.get(tenant) {
            return Arc::clone(q);
        }
        if all.len() >= MAX_IDLE_QUEUES {
            // Tenants nobody waits for hold nothing.
            all.retain(|_, q| Arc::strong_count(q) > 1);
        }
        Arc::clone(all.entry(tenant.clone()).or_default())
    }

    /// Takes a token, waiting at most until `until` behind the requests that came first.
    async fn take(&self, tenant: &TenantName, until: Instant) -> Taken {
        let queue = self.queue(tenant);
        // Nobody waiting: a token now, or the head of the queue. Else behind those waiting.
        let _head = match queue.try_lock() {
            Ok(head) => {
                if self.limiter.check_key(tenant).is_ok() {
                    return self.data_dir_token(tenant, until).await;
                }
                head
            }
            Err(_) => match tokio::time::timeout_at(until.into(), queue.lock()).await {
                Ok(head) => head,
                Err(_) => return Taken::Over,
            },
        };
        loop {
            let Err(not_until) = self.limiter.check_key(tenant) else {
                // Still the head of the queue while it waits for the data dir's token.
                return self.data_dir_token(tenant, until).await;
            };
            let next = not_until.wait_time_from(governor::clock::Clock::now(self.limiter.clock()));
            if next > until.saturating_duration_since(Instant::now()) {
                return Taken::Over;
            }
            tokio::time::sleep(next).await;
        }
    }

    /// A token of the bucket the runners on the data dir share, once this runner's own
    /// limiter admitted the request: waited for until `until` as that one's are. A runner
    /// alone on its data dir always finds one (the bucket refills as its limiter does). The
    /// bucket's lock, which the other runners hold for microseconds, is looked at again 1 ms
    /// apart, on no thread: within `until` (but [`LOCKED_MIN`] at least, so that a request
    /// with no wait is not refused for a neighbour's microsecond) and [`LOCKED_MAX`] at most. A
    /// lock held longer (a stopped `warden` process) is 503, within the request's wait
    /// (outside attack, session 40: 200 ms under load, a blocking thread held by each request
    /// meanwhile).
    async fn data_dir_token(&self, tenant: &TenantName, until: Instant) -> Taken {
        let Some((buckets, rate)) = &self.data_dir else {
            return Taken::Yes;
        };
        // A fraction of a token's time between looks: the bucket says only "none yet".
        let pause = Duration::from_secs_f64(0.125 / f64::from(rate.per_second.get()))
            .max(Duration::from_millis(1));
        let now = Instant::now();
        let locked_until = until.clamp(now + LOCKED_MIN, now + LOCKED_MAX);
        loop {
            match buckets.lease_now(tenant, 1, *rate) {
                Some(Ok(n)) if n > 0 => return Taken::Yes,
                Some(Ok(_)) if Instant::now() + pause <= until => tokio::time::sleep(pause).await,
                Some(Ok(_)) => return Taken::Over,
                Some(Err(e)) => {
                    static LOG: crate::sparse::Sparse = crate::sparse::Sparse::new();
                    if let Some(skipped) = LOG.now() {
                        let e = warden_call::text::chain(&e);
                        tracing::warn!(%tenant, error = %e, skipped, "a tenant's request rate could not be checked");
                    }
                    return Taken::Unreachable;
                }
                None if Instant::now() < locked_until => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                None => {
                    static LOG: crate::sparse::Sparse = crate::sparse::Sparse::new();
                    if let Some(skipped) = LOG.now() {
                        tracing::warn!(
                            %tenant,
                            waited_ms = now.elapsed().as_millis() as u64,
                            skipped,
                            "a tenant's request rate could not be checked: another process holds its bucket's lock (a stopped or stuck `warden` process?)"
                        );
                    }
                    return Taken::Unreachable;
                }
            }
        }
    }
}

/// The least and the most a request waits for a data dir bucket's lock that another process
/// holds (see `LocalRate::data_dir_token`).
const LOCKED_MIN: Duration = Duration::from_millis(5);
const LOCKED_MAX: Duration = Duration::from_millis(100);

/// Queues kept before those of tenants nobody waits for are dropped.
const MAX_IDLE_QUEUES: usize = 1024;

impl TenantRate {
    pub(crate) fn new(rate: Rate, sharing: &Sharing) -> TenantRate {
        let local = |data_dir| {
            TenantRate::Local(LocalRate {
                limiter: RateLimiter::keyed(
                    Quota::per_second(rate.per_second).allow_burst(rate.burst),
                ),
                queues: Mutex::default(),
                data_dir,
            })
        };
        match sharing {
            Sharing::Alone => local(None),
            Sharing::DataDir { rate: buckets, .. } => local(Some((Arc::clone(buckets), rate))),
            Sharing::Fleet(leases) => {
                TenantRate::Shared(SharedRate::start(Arc::clone(leases), rate))
            }
        }
    }

    /// Takes one of `tenant`'s tokens, or says why not (429 over the rate, 503 when the
    /// shared bucket cannot be reached).
    pub(crate) async fn take(&self, tenant: &TenantName, wait: Duration) -> Result<(), ApiError> {
        let over = || {
            ApiError::limited(
                "rate-limited",
                format!("tenant {tenant} is over its request rate"),
            )
        };
        // Over the rate: waits for a token while one comes within `wait` (`[policy]
        // busy_wait`), as a call over its concurrency waits for a slot, so that a flood is
        // answered at the rate instead of as fast as refusals go; first come, first served.
        let taken = match self {
            TenantRate::Local(r) => r.take(tenant, Instant::now() + wait).await,
            TenantRate::Shared(s) => s.take(tenant).await,
        };
        match taken {
            Taken::Yes => Ok(()),
            Taken::Over => Err(over()),
            // The cause names the storage (a path, a server): in the operator's log only
            // (written where it was met).
            Taken::Unreachable => Err(ApiError::unavailable(format!(
                "tenant {tenant}'s request rate cannot be checked now (the service's log says why)"
            ))),
        }
    }
}

pub(crate) struct SharedRate {
    leases: Arc<dyn RateLeases>,
    rate: Rate,
    /// Tokens per lease: 50 ms of rate, at least one.
    batch: u32,
    tenants: Mutex<HashMap<TenantName, Arc<Local>>>,
}

/// This runner's tokens of one tenant.
#[derive(Default)]
struct Local {
    state: Mutex<State>,
    leased: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    tokens: u32,
    leasing: bool,
    /// When tokens last came (for giving unused ones back).
    since: Option<Instant>,
    /// An empty bucket is not asked again before this (it refills at the rate).
    not_before: Option<Instant>,
    /// The last lease's failure, until one works.
    failed: Option<String>,
}

pub(crate) enum Taken {
    Yes,
    Over,
    /// The storage failed (said in the log where it was met).
    Unreachable,
}

impl SharedRate {
    pub(crate) fn start(leases: Arc<dyn RateLeases>, rate: Rate) -> Arc<SharedRate> {
        let batch = rate.per_second.get().div_ceil(20).max(1);
        let shared = Arc::new(SharedRate {
            leases,
            rate,
            batch,
            tenants: Mutex::default(),
        });
        // Without a runtime (unit tests of other parts) nothing is given back early; the
        // bucket still refills at its rate.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(give_back_unused(Arc::downgrade(&shared)));
        }
        shared
    }

    fn local(&self, tenant: &TenantName) -> Arc<Local> {
        let mut all = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(all.entry(tenant.clone()).or_default())
    }

    pub(crate) async fn take(self: &Arc<Self>, tenant: &TenantName) -> Taken {
        let local = self.local(tenant);
        let until = Instant::now() + LEASE_WAIT;
        loop {
            // Registered before the state is read, so a lease landing in between still wakes it.
            let leased = local.leased.notified();
            tokio::pin!(leased);
            leased.as_mut().enable();
            {
                let mut st = local.state.lock().unwrap_or_else(PoisonError::into_inner);
                if st.tokens > 0 {
                    st.tokens -= 1;
                    if st.tokens <= self.batch / 2 {
                        self.lease(tenant, &local, &mut st);
                    }
                    return Taken::Yes;
                }
                // None left here: another lease, unless the bucket was just found empty (over
                // the rate) or the storage failing. A lease is one batch: more requests at once
                // than a batch wait for the next one, not refused (CI: 12 requests at once, on a
                // bucket with a burst of 200, had 7 refused "over its rate").
                if !self.lease(tenant, &local, &mut st) && !st.leasing {
                    return match &st.failed {
                        Some(_) => Taken::Unreachable,
                        None => Taken::Over,
                    };
                }
            }
            if tokio::time::timeout_at(until.into(), leased).await.is_err() {
                let mut st = local.state.lock().unwrap_or_else(PoisonError::into_inner);
                if st.tokens > 0 {
                    st.tokens -= 1;
                    return Taken::Yes;
                }
                return match &st.failed {
                    Some(_) => Taken::Unreachable,
                    None => Taken::Over,
                };
            }
        }
    }

    /// Starts a lease in the background unless one is in flight or the bucket was just found
    /// empty; true if one started.
    fn lease(self: &Arc<Self>, tenant: &TenantName, local: &Arc<Local>, st: &mut State) -> bool {
        if st.leasing || st.not_before.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        st.leasing = true;
        let (shared, tenant, local) = (Arc::clone(self), tenant.clone(), Arc::clone(local));
        // The storage's calls are blocking ones.
        tokio::task::spawn_blocking(move || {
            let got = shared.leases.lease(&tenant, shared.batch, shared.rate);
            let mut st = local.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.leasing = false;
            match got {
                Ok(n) => {
                    st.failed = None;
                    st.tokens = st.tokens.saturating_add(n);
                    st.since = Some(Instant::now());
                    st.not_before = (n == 0).then(|| {
                        Instant::now()
                            + shared.refill_time(shared.batch.min(shared.rate.burst.get()))
                    });
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "a rate lease failed");
                    st.failed = Some(warden_call::text::chain(&e));
                    // Not again at once: a storage that is down is not asked by every request.
                    st.not_before = Some(Instant::now() + RETRY_FAILED);
                }
            }
            drop(st);
            local.leased.notify_waiters();
        });
        true
    }

    /// How long the shared bucket takes to refill `n` tokens.
    fn refill_time(&self, n: u32) -> Duration {
        Duration::from_secs_f64(f64::from(n) / f64::from(self.rate.per_second.get()))
    }

    /// Gives back the tokens held unused for [`KEEP`]; drops tenants with nothing held.
    fn give_back_unused(&self) {
        let now = Instant::now();
        let mut back = Vec::new();
        {
            let mut all = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            all.retain(|tenant, local| {
                let mut st = local.state.lock().unwrap_or_else(PoisonError::into_inner);
                let stale = st.since.is_none_or(|t| now.duration_since(t) >= KEEP);
                if st.tokens > 0 && stale {
                    back.push((tenant.clone(), st.tokens));
                    st.tokens = 0;
                }
                // Kept while it holds tokens, leases, or is in use.
                st.tokens > 0 || st.leasing || !stale || Arc::strong_count(local) > 1
            });
        }
        for (tenant, n) in back {
            if let Err(e) = self.leases.give_back(&tenant, n, self.rate) {
                tracing::warn!(%tenant, error = %e, "unused rate tokens could not be given back");
            }
        }
    }
}

async fn give_back_unused(shared: Weak<SharedRate>) {
    let mut tick = tokio::time::interval(KEEP / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        if tokio::task::spawn_blocking(move || s.give_back_unused())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use warden_registry::{MemoryRateLeases, RegistryError};

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    /// Seats never taken (these tests are of the rate alone).
    struct NoSeats;

    impl SharedSeats for NoSeats {
        fn try_take(
            &self,
            _: &TenantName,
            _: u32,
        ) -> Result<Option<warden_registry::Seat>, RegistryError> {
            Ok(Some(Box::new(())))
        }
    }

    /// A runner on its own, and one alone on its data dir's buckets (which must never refuse
    /// what its own limiter admits).
    fn alone() -> [Sharing; 2] {
        [
            Sharing::Alone,
            Sharing::DataDir {
                rate: Arc::new(MemoryRateLeases::default()),
                seats: Arc::new(NoSeats),
            },
        ]
    }

    /// Over its rate, a request waits for the next token while it comes within the wait it
    /// is given, and is refused once it would not; with no wait it is refused at once.
    #[tokio::test]
    async fn a_request_over_the_rate_waits_for_a_token_a_bounded_time() {
        for sharing in alone() {
            waits_for_a_token_a_bounded_time(sharing).await;
        }
    }

    async fn waits_for_a_token_a_bounded_time(sharing: Sharing) {
        let r = TenantRate::new(rate(10, 1), &sharing);
        let t: TenantName = "acme".parse().unwrap();
        r.take(&t, Duration::ZERO).await.unwrap();
        let e = r.take(&t, Duration::ZERO).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "rate-limited"));
        // The next token comes within 100 ms.
        let start = Instant::now();
        r.take(&t, Duration::from_millis(500)).await.unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_millis(400),
            "{waited:?}"
        );
        // A wait shorter than the next token's is not waited at all.
        let start = Instant::now();
        assert!(r.take(&t, Duration::from_millis(20)).await.is_err());
        assert!(
            start.elapsed() < Duration::from_millis(20),
            "{:?}",
            start.elapsed()
        );
    }

    /// Requests waiting for a token are admitted in the order they came, each once its token
    /// comes (none barges ahead, none is refused while its wait lasts).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_for_a_token_are_admitted_first_come_first_served() {
        for sharing in alone() {
            first_come_first_served(sharing).await;
        }
    }

    async fn first_come_first_served(sharing: Sharing) {
        let r = Arc::new(TenantRate::new(rate(20, 1), &sharing));
        let t: TenantName = "acme".parse().unwrap();
        r.take(&t, Duration::ZERO).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..6 {
            let (r, t, order) = (Arc::clone(&r), t.clone(), Arc::clone(&order));
            waiters.push(tokio::spawn(async move {
                r.take(&t, Duration::from_secs(3)).await.unwrap();
                order.lock().unwrap().push(n);
            }));
            // Each comes a little after the one before, all before the next token.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
        // A newcomer while one waits goes behind it: with a short wait it is refused.
        let head = {
            let (r, t) = (Arc::clone(&r), t.clone());
            tokio::spawn(async move { r.take(&t, Duration::from_secs(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(r.take(&t, Duration::from_millis(10)).await.is_err());
        head.await.unwrap().unwrap();
    }

    /// A bucket whose lock another process keeps (a stopped `warden`): the request is 503
    /// within its own wait (5 ms at least, 100 ms at most), and no thread waits on the lock
    /// meanwhile (outside attack, session 40: 200 ms under load, on a blocking thread each).
    #[tokio::test]
    async fn a_bucket_locked_elsewhere_is_503_within_the_requests_wait() {
        /// Every look finds the lock held.
        #[derive(Default)]
        struct Held {
            looks: AtomicU32,
            blocking: AtomicU32,
        }
        impl RateLeases for Held {
            fn lease(&self, _: &TenantName, _: u32, _: Rate) -> Result<u32, RegistryError> {
                self.blocking.fetch_add(1, Ordering::SeqCst);
                Ok(0)
            }
            fn give_back(&self, _: &TenantName, _: u32, _: Rate) -> Result<(), RegistryError> {
                Ok(())
            }
            fn lease_now(
                &self,
                _: &TenantName,
                _: u32,
                _: Rate,
            ) -> Option<Result<u32, RegistryError>> {
                self.looks.fetch_add(1, Ordering::SeqCst);
                None
            }
        }
        let held = Arc::new(Held::default());
        let r = TenantRate::new(
            rate(100, 100),
            &Sharing::DataDir {
                rate: held.clone(),
                seats: Arc::new(NoSeats),
            },
        );
        let t: TenantName = "acme".parse().unwrap();
        for (wait, least, most) in [
            (Duration::ZERO, 5, 60),
            (Duration::from_millis(40), 40, 100),
            (Duration::from_secs(2), 100, 250),
        ] {
            let start = Instant::now();
            let e = r.take(&t, wait).await.unwrap_err();
            let took = start.elapsed();
            assert_eq!((e.status.as_u16(), e.code), (503, "unavailable"));
            assert!(
                took >= Duration::from_millis(least) && took < Duration::from_millis(most),
                "{wait:?}: {took:?}"
            );
        }
        assert!(held.looks.load(Ordering::SeqCst) > 3);
        assert_eq!(held.blocking.load(Ordering::SeqCst), 0);
    }

    /// Two runners on one data dir's buckets admit the tenant's burst between them, not each;
    /// then, with a wait, one token per refill between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_runners_on_one_data_dir_admit_the_rate_between_them() {
        let buckets: Arc<dyn RateLeases> = Arc::new(MemoryRateLeases::default());
        let runners: Vec<TenantRate> = (0..2)
            .map(|_| {
                TenantRate::new(
                    rate(5, 10),
                    &Sharing::DataDir {
                        rate: Arc::clone(&buckets),
                        seats: Arc::new(NoSeats),
                    },
                )
            })
            .collect();
        let t: TenantName = "acme".parse().unwrap();
        let mut admitted = [0; 2];
        for n in 0..40 {
            if runners[n % 2].take(&t, Duration::ZERO).await.is_ok() {
                admitted[n % 2] += 1;
            }
        }
        // Each alone would admit its burst of 10.
        let all = admitted[0] + admitted[1];
        assert!((10..=11).contains(&all), "{admitted:?}");
        assert!(admitted[0] >= 4 && admitted[1] >= 4, "{admitted:?}");
        // Waiting: the next tokens come at 5 a second between both (each alone: its own 5).
        let start = Instant::now();
        let mut waited = 0;
        while start.elapsed() < Duration::from_millis(1000) {
            for r in &runners {
                if r.take(&t, Duration::from_millis(300)).await.is_ok() {
                    waited += 1;
                }
            }
        }
        assert!(
            (3..=7).contains(&waited),
            "{waited} in {:?}",
            start.elapsed()
        );
    }

    /// Three runners on one shared bucket, offered three times the rate for 4 s: together
    /// they admit the rate × time + burst within 10 %, as the fleet's limit must hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_runners_on_one_bucket_hold_the_rate_together() {
        let leases: Arc<dyn RateLeases> = Arc::new(MemoryRateLeases::default());
        let r = rate(50, 10);
        let runners: Vec<_> = (0..3)
            .map(|_| TenantRate::new(r, &Sharing::Fleet(Arc::clone(&leases))))
            .collect();
        let t: TenantName = "acme".parse().unwrap();
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / 150));
        let (mut admitted, mut refused, mut i) = (0u32, 0u32, 0usize);
        while start.elapsed() < Duration::from_secs(4) {
            tick.tick().await;
            match runners[i % 3].take(&t, Duration::ZERO).await {
                Ok(()) => admitted += 1,
                Err(e) => {
                    assert_eq!((e.status.as_u16(), e.code), (429, "rate-limited"));
                    refused += 1;
                }
            }
            i += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let expected = 50.0 * secs + 10.0;
        let off = (f64::from(admitted) - expected).abs() / expected;
        eprintln!(
            "shared rate: admitted {admitted}, refused {refused} in {secs:.2}s; expected {expected:.0}"
        );
        assert!(
            off <= 0.10,
            "admitted {admitted} of {} in {secs:.2}s, expected {expected:.0} (off by {:.1}%)",
            admitted + refused,
            off * 100.0
        );
    }

    /// A shared bucket that cannot be reached refuses with 503 (not 429) and is not asked by
    /// every request; it admits again once it answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_bucket_is_503_and_asked_sparingly() {
        struct Down {
            down: AtomicBool,
            asked: AtomicU32,
            inner: MemoryRateLeases,
        }
        impl RateLeases for Down {
            fn lease(&self, t: &TenantName, want: u32, r: Rate) -> Result<u32, RegistryError> {
                self.asked.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err(RegistryError::Storage {
                        location: "at postgres://db/w".into(),
                        source: "connection refused".into(),
                    });
                }
                self.inner.lease(t, want, r)
            }
            fn give_back(&self, t: &TenantName, n: u32, r: Rate) -> Result<(), RegistryError> {
                self.inner.give_back(t, n, r)
            }
        }
        let store = Arc::new(Down {
            down: AtomicBool::new(true),
            asked: AtomicU32::new(0),
            inner: MemoryRateLeases::default(),
        });
        let rate_ = TenantRate::new(
            rate(100, 100),
            &Sharing::Fleet(store.clone() as Arc<dyn RateLeases>),
        );
        let t: TenantName = "acme".parse().unwrap();
        for _ in 0..200 {
            let e = rate_.take(&t, Duration::ZERO).await.unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code, e.retry_after),
                (503, "unavailable", Some(1))
            );
            // The cause is the operator's (the log's), not the client's.
            assert!(
                e.message.contains("cannot be checked now") && !e.message.contains("refused"),
                "{}",
                e.message
            );
        }
        // 200 refusals cost a lease per RETRY_FAILED of them, not one each.
        let asked = store.asked.load(Ordering::SeqCst);
        assert!(asked < 200, "asked {asked} times");
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(RETRY_FAILED * 2).await;
        rate_.take(&t, Duration::ZERO).await.unwrap();
    }

    /// More requests at once than a lease's batch are all admitted while the bucket has
    /// tokens: those the first lease did not cover wait for the next, not refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_requests_at_once_than_a_batch_wait_for_the_next_lease() {
        let leases: Arc<dyn RateLeases> = Arc::new(MemoryRateLeases::default());
        // A batch of 5 (50 ms of 100 a second); a burst of 200.
        let rate_ = Arc::new(TenantRate::new(rate(100, 200), &Sharing::Fleet(leases)));
        let t: TenantName = "acme".parse().unwrap();
        let all: Vec<_> = (0..40)
            .map(|_| {
                let (rate_, t) = (Arc::clone(&rate_), t.clone());
                tokio::spawn(async move { rate_.take(&t, Duration::ZERO).await })
            })
            .collect();
        for one in all {
            one.await.unwrap().unwrap();
        }
        // Over the burst, the bucket says no: refused, not kept waiting.
        let mut refused = 0;
        for _ in 0..400 {
            if rate_.take(&t, Duration::ZERO).await.is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0);
    }

    /// Tokens a runner leased but did not use go back to the bucket for the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unused_tokens_go_back() {
        #[derive(Default)]
        struct Counting {
            back: AtomicU32,
            inner: MemoryRateLeases,
        }
        impl RateLeases for Counting {
            fn lease(&self, t: &TenantName, want: u32, r: Rate) -> Result<u32, RegistryError> {
                self.inner.lease(t, want, r)
            }
            fn give_back(&self, t: &TenantName, n: u32, r: Rate) -> Result<(), RegistryError> {
                self.back.fetch_add(n, Ordering::SeqCst);
                self.inner.give_back(t, n, r)
            }
        }
        let leases = Arc::new(Counting::default());
        let a = TenantRate::new(
            rate(200, 20),
            &Sharing::Fleet(leases.clone() as Arc<dyn RateLeases>),
        );
        let t: TenantName = "acme".parse().unwrap();
        a.take(&t, Duration::ZERO).await.unwrap();
        // One batch (10) leased, one used: the other 9 go back once held for KEEP.
        tokio::time::sleep(KEEP * 3).await;
        assert_eq!(leases.back.load(Ordering::SeqCst), 9);
    }
}
