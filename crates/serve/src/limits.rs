//! The service's own limits (the extension's come from its manifest and the policy): sizes of
//! the request head, time for each phase, and each tenant's rate and concurrency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warden_host::TenantName;
use warden_registry::{Rate, Seat, SharedSeats};

use crate::error::ApiError;
use crate::rate::TenantRate;

/// The service's limits: `[policy.gateway]` of the operator's policy.
pub type ServiceLimits = warden_manifest::GatewayLimits;

/// The checks on the request head hyper does not make itself.
pub(crate) fn check_head(l: &ServiceLimits, request: &Request) -> Result<(), ApiError> {
    let max_uri = usize::try_from(l.max_uri_bytes.bytes()).unwrap_or(usize::MAX);
    let max_header_bytes = usize::try_from(l.max_header_bytes.bytes()).unwrap_or(usize::MAX);
    let max_headers = l.max_headers as usize;
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > max_uri {
        return Err(ApiError::new(
            http::StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!(
                "the request target is {uri} bytes, over the limit of {}",
                max_uri
            ),
        ));
    }
    let bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > max_header_bytes || request.headers().len() > max_headers {
        return Err(ApiError::new(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "the request has {} headers of {bytes} bytes, over the limits of {} headers and {} bytes",
                request.headers().len(),
                max_headers,
                max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// Each tenant's rate ([`TenantRate`]: this process's, or shared by every runner) and
/// concurrency (per runner).
pub(crate) struct TenantLimiter {
    rate: TenantRate,
    concurrency: u32,
    /// How long a request over the tenant's concurrency waits for a slot (`[policy]
    /// busy_wait`, as a call over its extension's waits in the host).
    busy_wait: Duration,
    slots: Mutex<HashMap<TenantName, Arc<Semaphore>>>,
    /// The seats the runners on this data dir share: a call in flight holds one of its
    /// tenant's there too, so that they hold `tenant_concurrency` between them.
    shared: Option<Arc<dyn SharedSeats>>,
    /// Set when the service starts to drain ([`TenantLimiter::drain`]).
    draining: tokio::sync::watch::Sender<bool>,
}

impl TenantLimiter {
    pub(crate) fn new(
        l: &ServiceLimits,
        busy_wait: Duration,
        sharing: &crate::Sharing,
    ) -> TenantLimiter {
        let rate = Rate {
            per_second: l.tenant_rate,
            burst: l.tenant_burst,
        };
        TenantLimiter {
            rate: TenantRate::new(rate, sharing),
            concurrency: l.tenant_concurrency,
            busy_wait,
            slots: Mutex::new(HashMap::new()),
            shared: match sharing {
                crate::Sharing::DataDir { seats, .. } => Some(Arc::clone(seats)),
                crate::Sharing::Alone | crate::Sharing::Fleet(_) => None,
            },
            draining: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Refuses every request waiting for its rate or a slot (503, shutting down), now and
    /// from now on: nothing that has not started may start during the drain.
    pub(crate) fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// Admits one request of `tenant` by its rate, at once or once a token comes within
    /// `busy_wait`, or says why not (429 with `retry-after`; 503 when a shared rate cannot be
    /// checked or the service drains). What it returns says what is left of `busy_wait` for
    /// the slots of the extension and of the tenant (the request waits `busy_wait` in all).
    pub(crate) async fn admit(&self, tenant: &TenantName) -> Result<Admitted, ApiError> {
        let until = Instant::now() + self.busy_wait;
        self.draining_or(async {
            self.rate
                .take(tenant, until.saturating_duration_since(Instant::now()))
                .await
        })
        .await?;
        Ok(Admitted { until, seat: None })
    }

    /// One of `tenant`'s requests in flight, free now or within what is left of its wait,
    /// held by `admitted` for the request's life; or why not (429 `busy`, 503 when the
    /// service drains). The gateway's order of the two slots is `Service::slots`'.
    pub(crate) async fn seat(
        &self,
        tenant: &TenantName,
        admitted: &mut Admitted,
    ) -> Result<(), ApiError> {
        let slots = self.slots_of(tenant);
        let got = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if self.busy_wait.is_zero() => None,
            Err(_) => {
                let until = admitted.until;
                self.draining_or(async {
                    Ok(tokio::time::timeout_at(until.into(), slots.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok))
                })
                .await?
            }
        };
        let busy = || {
            ApiError::limited(
                "busy",
                format!(
                    "tenant {tenant} already has {} calls in flight",
                    self.concurrency
                ),
            )
        };
        let slot = got.ok_or_else(busy)?;
        // Then a seat of those the data dir's runners share, looked for again until the wait
        // ends (held by other processes, they are not woken for).
        let shared = match &self.shared {
            None => None,
            Some(seats) => {
                let until = admitted.until;
                let mut pause = Duration::from_millis(1);
                let seat = self
                    .draining_or(async {
                        loop {
                            match seats.try_take(tenant, self.concurrency) {
                                Ok(Some(seat)) => return Ok(Some(seat)),
                                Ok(None) if Instant::now() + pause <= until => {
                                    tokio::time::sleep(pause).await;
                                    pause = (pause * 2).min(Duration::from_millis(10));
                                }
                                Ok(None) => return Ok(None),
                                Err(e) => return Err(unavailable(tenant, &e)),
                            }
                        }
                    })
                    .await?;
                Some(seat.ok_or_else(busy)?)
            }
        };
        admitted.seat = Some(TenantSeat {
            _shared: shared,
            _here: slot,
        });
        Ok(())
    }

    /// [`TenantLimiter::seat`] if one of `tenant`'s slots is free now, without waiting.
    pub(crate) fn try_seat(&self, tenant: &TenantName, admitted: &mut Admitted) -> bool {
        let Ok(slot) = self.slots_of(tenant).try_acquire_owned() else {
            return false;
        };
        let shared = match &self.shared {
            None => None,
            // A failure is met again, and answered, by the wait of `seat`.
            Some(seats) => match seats.try_take(tenant, self.concurrency) {
                Ok(Some(seat)) => Some(seat),
                Ok(None) | Err(_) => return false,
            },
        };
        admitted.seat = Some(TenantSeat {
            _shared: shared,
            _here: slot,
        });
        true
    }

    fn slots_of(&self, tenant: &TenantName) -> Arc<Semaphore> {
        let mut all = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            all.entry(tenant.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency as usize))),
        )
    }

    /// `wait`, unless the service drains first (503).
    async fn draining_or<T>(
        &self,
        wait: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let mut draining = self.draining.subscribe();
        tokio::select! {
            biased;
            _ = draining.wait_for(|d| *d) => {
                Err(ApiError::unavailable("the service is shutting down"))
            }
            done = wait => done,
        }
    }
}

/// A request let in by its tenant's rate ([`TenantLimiter::admit`]): when its wait for slots
/// ends, and its tenant's slot once it has one ([`TenantLimiter::seat`]), held for the
/// request's life.
pub(crate) struct Admitted {
    until: Instant,
    seat: Option<TenantSeat>,
}

/// One of a tenant's calls in flight: this runner's slot, and the seat of the data dir's
/// runners (given back first: fields drop in order).
pub(crate) struct TenantSeat {
    _shared: Option<Seat>,
    _here: OwnedSemaphorePermit,
}

/// A shared seat that could not be looked for (503, as a rate that cannot be checked).
fn unavailable(tenant: &TenantName, e: &warden_registry::RegistryError) -> ApiError {
    // The cause names the data dir: for the operator's log only.
    static LOG: crate::sparse::Sparse = crate::sparse::Sparse::new();
    if let Some(skipped) = LOG.now() {
        tracing::warn!(%tenant, error = %warden_call::text::chain(e), skipped, "a tenant's calls in flight could not be counted");
    }
    ApiError::unavailable(format!(
        "tenant {tenant}'s calls in flight cannot be counted now (the service's log says why)"
    ))
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("until", &self.until)
            .field("seated", &self.seat.is_some())
            .finish()
    }
}

impl Admitted {
    /// The tenant's slot it holds, handed over (to be held with the call's).
    pub(crate) fn seat_taken(&mut self) -> Option<TenantSeat> {
        self.seat.take()
    }

    /// What is left of the request's wait for slots.
    pub(crate) fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
}

/// The process's budget of request body bytes held in memory at once, every request together
/// (`max_buffered_bytes`): each request holds a share ([`BodyHold`]) that grows as its body
/// arrives and is given back when the request ends.
pub(crate) struct BodyBudget {
    cap: u64,
    held: AtomicU64,
    /// Bytes held per tenant: one tenant holds at most half the budget, so that its slow
    /// bodies cannot refuse every other tenant's (and the operator's) requests.
    by_tenant: std::sync::Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>,
}

impl BodyBudget {
    pub(crate) fn new(cap: u64) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            cap,
            held: AtomicU64::new(0),
            by_tenant: std::sync::Mutex::default(),
        })
    }

    /// An empty share for one request of the operator (admin and runner APIs).
    pub(crate) fn hold(self: &Arc<Self>) -> BodyHold {
        BodyHold {
            budget: Arc::clone(self),
            tenant: None,
            held: 0,
        }
    }

    /// An empty share for one request of `tenant`.
    pub(crate) fn hold_for(self: &Arc<Self>, tenant: &str) -> BodyHold {
        let mut all = self
            .by_tenant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Counters of tenants holding nothing are dropped as the table grows (tenants are
        // the operator's, but a counter per tenant ever seen need not stay).
        if all.len() >= 1024 {
            all.retain(|_, held| held.load(Ordering::Acquire) > 0 || Arc::strong_count(held) > 1);
        }
        let counter = Arc::clone(all.entry(tenant.to_owned()).or_default());
        BodyHold {
            budget: Arc::clone(self),
            tenant: Some(counter),
            held: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

/// One request's share of the [`BodyBudget`]; given back when dropped (the request ended).
pub(crate) struct BodyHold {
    budget: Arc<BodyBudget>,
    /// The tenant's own count, when the request is a tenant's.
    tenant: Option<Arc<AtomicU64>>,
    held: u64,
}

impl BodyHold {
    /// Grows this request's share to `total` bytes, or refuses (503, `retry-after`) when the
    /// process would then hold more than its budget. The share never shrinks before the end.
    pub(crate) fn grow_to(&mut self, total: u64) -> Result<(), ApiError> {
        let more = total.saturating_sub(self.held);
        if more == 0 {
            return Ok(());
        }
        let cap = self.budget.cap;
        if let Some(mine) = &self.tenant {
            let half = cap / 2;
            mine.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(more).filter(|n| *n <= half)
            })
            .map_err(|_| {
                ApiError::unavailable(format!(
                    "this tenant's requests hold as much body as one tenant may ({half} bytes, \
                     half of max_buffered_bytes); try again"
                ))
            })?;
        }
        let global = self
            .budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(more).filter(|n| *n <= cap)
            });
        if global.is_err() {
            if let Some(mine) = &self.tenant {
                mine.fetch_sub(more, Ordering::AcqRel);
            }
            return Err(ApiError::unavailable(format!(
                "the service holds as many request bodies as it may ({cap} bytes, \
                 max_buffered_bytes); try again"
            )));
        }
        self.held = total;
        Ok(())
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.held, Ordering::AcqRel);
        if let Some(mine) = &self.tenant {
            mine.fetch_sub(self.held, Ordering::AcqRel);
        }
    }
}

/// The `Content-Length` a request declares, if it declares one that parses.
pub(crate) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a request body whole: at most `max` bytes (else `too_large`), within `timeout`
/// (else 408), each byte counted in `hold` before it is kept (else 503). A declared length
/// over `max` is refused before any byte is read; a declared length is not reserved (red team:
/// idle connections declaring 32 MiB each held the whole budget without sending a byte), the
/// share grows with the bytes that arrive.
pub(crate) async fn read_body(
    body: axum::body::Body,
    declared: Option<u64>,
    max: u64,
    timeout: std::time::Duration,
    hold: &mut BodyHold,
    too_large: impl Fn() -> ApiError,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    if let Some(n) = declared {
        // Room for a small body at once; a large one grows as it arrives.
        buf.reserve(usize::try_from(n.min(64 << 10)).unwrap_or(0));
    }
    let mut body = body;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if connection_closed(&e) {
                    ApiError::client_gone(format!(
                        "its connection closed while its body arrived: {e}"
                    ))
                } else {
                    ApiError::malformed(format!("the request body could not be read: {e}"))
                }
            })?;
            if let Ok(data) = frame.into_data() {
                let total = (buf.len() as u64).saturating_add(data.len() as u64);
                if total > max {
                    return Err(too_large());
                }
                hold.grow_to(total)?;
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::new(
            http::StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            format!("the request body did not arrive within {timeout:?}"),
        )),
        Ok(r) => r.map(|()| buf.freeze()),
    }
}

/// Whether reading a body failed because the client's connection closed (or was reset)
/// before the body was whole, rather than for a malformed body.
fn connection_closed(e: &axum::Error) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            return true;
        }
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            )
        }) {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    impl TenantLimiter {
        /// Admitted by rate and seated, as the gateway does with no extension slot between.
        async fn seated(&self, tenant: &TenantName) -> Result<Admitted, ApiError> {
            let mut admitted = self.admit(tenant).await?;
            self.seat(tenant, &mut admitted).await?;
            Ok(admitted)
        }
    }

    /// A request over the tenant's concurrency waits for a slot up to `busy_wait`: it is
    /// admitted when one frees in time, refused (429 `busy`) when none does, and at once
    /// when the wait is 0; another tenant is never held up.
    #[tokio::test]
    async fn a_request_over_the_tenants_concurrency_waits_a_bounded_time() {
        let l = ServiceLimits {
            tenant_concurrency: 1,
            ..ServiceLimits::default()
        };
        let (a, b): (TenantName, TenantName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let limiter = Arc::new(TenantLimiter::new(
            &l,
            Duration::from_millis(300),
            &crate::Sharing::Alone,
        ));
        let first = limiter.seated(&a).await.unwrap();
        assert!(
            first.left() > Duration::from_millis(250),
            "{:?}",
            first.left()
        );
        // Another tenant has slots of its own.
        drop(limiter.seated(&b).await.unwrap());
        let waiting = {
            let (limiter, a) = (Arc::clone(&limiter), a.clone());
            tokio::spawn(async move { limiter.seated(&a).await.map(|a| a.left()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it waits for the slot");
        drop(first);
        // What it waited is taken from what the extension's slot may wait.
        let left = waiting.await.unwrap().unwrap();
        assert!(
            left > Duration::ZERO && left <= Duration::from_millis(260),
            "{left:?}"
        );

        let held = limiter.seated(&a).await.unwrap();
        let t = std::time::Instant::now();
        let e = limiter.seated(&a).await.unwrap_err();
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            (e.status.as_u16(), e.code, e.retry_after),
            (429, "busy", Some(1))
        );

        // A drain refuses the requests waiting then (503), and those after.
        let waiting = {
            let (limiter, a) = (Arc::clone(&limiter), a.clone());
            tokio::spawn(async move { limiter.seated(&a).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        limiter.drain();
        let e = waiting.await.unwrap().unwrap_err();
        assert_eq!(e.status.as_u16(), 503, "{}", e.message);
        assert_eq!(limiter.seated(&b).await.unwrap_err().status.as_u16(), 503);

        let at_once = TenantLimiter::new(&l, Duration::ZERO, &crate::Sharing::Alone);
        let _held_too = at_once.seated(&a).await.unwrap();
        let t = std::time::Instant::now();
        assert_eq!(at_once.seated(&a).await.unwrap_err().status.as_u16(), 429);
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        drop(held);
    }

    /// Seats counted in memory, for limiters standing in for runners on one data dir.
    #[derive(Default)]
    struct CountedSeats(Arc<std::sync::atomic::AtomicU32>);

    struct CountedSeat(Arc<std::sync::atomic::AtomicU32>);

    impl Drop for CountedSeat {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl SharedSeats for CountedSeats {
        fn try_take(
            &self,
            _: &TenantName,
            of: u32,
        ) -> Result<Option<Seat>, warden_registry::RegistryError> {
            let taken = self
                .0
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < of).then_some(n + 1)
                });
            Ok(taken
                .is_ok()
                .then(|| Box::new(CountedSeat(Arc::clone(&self.0))) as Seat))
        }
    }

    /// Two runners on one data dir hold the tenant's concurrency between them: one's request
    /// waits (up to `busy_wait`) for the seat the other's holds, without a slot of its own
    /// runner being full, and gets it once given back; the fast path (`try_seat`) takes none
    /// that is held elsewhere.
    #[tokio::test]
    async fn runners_on_one_data_dir_hold_the_tenants_concurrency_between_them() {
        let l = ServiceLimits {
            tenant_concurrency: 1,
            ..ServiceLimits::default()
        };
        let sharing = crate::Sharing::DataDir {
            rate: Arc::new(warden_registry::MemoryRateLeases::default()),
            seats: Arc::new(CountedSeats::default()),
        };
        let a: TenantName = "a".parse().unwrap();
        let one = TenantLimiter::new(&l, Duration::from_millis(300), &sharing);
        let two = Arc::new(TenantLimiter::new(&l, Duration::from_millis(300), &sharing));
        let held = one.seated(&a).await.unwrap();
        let mut fast = two.admit(&a).await.unwrap();
        assert!(!two.try_seat(&a, &mut fast));
        let waiting = {
            let (two, a) = (Arc::clone(&two), a.clone());
            tokio::spawn(async move { two.seated(&a).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "it waits for the seat held elsewhere"
        );
        drop(held);
        waiting.await.unwrap().unwrap();
        // Held elsewhere for longer than the wait: refused, busy.
        let _held = one.seated(&a).await.unwrap();
        let e = two.seated(&a).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "busy"));
    }

    /// Shares add up to the budget and no further; a dropped share is given back.
    #[test]
    fn the_body_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.hold();
        let mut b = budget.hold();
        a.grow_to(60).unwrap();
        a.grow_to(50).unwrap(); // never shrinks
        let e = b.grow_to(41).unwrap_err();
        assert_eq!((e.status.as_u16(), e.retry_after), (503, Some(1)));
        b.grow_to(40).unwrap();
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        b.grow_to(100).unwrap();
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    /// One tenant holds at most half the budget: the rest stays for the others.
    #[test]
    fn a_tenant_holds_at_most_half_the_budget() {
        let budget = BodyBudget::new(100);
        let mut a1 = budget.hold_for("a");
        let mut a2 = budget.hold_for("a");
        a1.grow_to(30).unwrap();
        let e = a2.grow_to(21).unwrap_err();
        assert_eq!(e.status.as_u16(), 503);
        assert!(e.message.contains("one tenant"), "{}", e.message);
        a2.grow_to(20).unwrap();
        let mut b = budget.hold_for("b");
        b.grow_to(50).unwrap();
        assert_eq!(budget.held(), 100);
        // Full: a refused growth takes nothing from the tenant's count.
        let mut c = budget.hold_for("c");
        assert!(c.grow_to(1).is_err());
        drop((a1, a2));
        c.grow_to(50).unwrap();
        drop((b, c));
        assert_eq!(budget.held(), 0);
    }
}
