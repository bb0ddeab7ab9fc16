//! One install's connections to its remote: kept for the next call and bounded in number.
//!
//! Every connection, busy or idle, holds one of the pool's slots, so an install never has more
//! than its `max_connections` open to its remote, whatever its calls and their callers do. A
//! JSON-RPC connection (HTTP/1.1) carries one call at a time and goes back to the idle list
//! when its answer was read whole and valid; a gRPC connection (HTTP/2) is shared by the calls
//! in flight, and forgotten (left to the calls still on it) as soon as a call on it fails or
//! times out. A connection is reused only for the address it was opened to (the host checks
//! the address at every call); an idle one is closed [`IDLE_FOR`] after its last use (a sweep
//! runs while any is idle), and one the server closed is dropped. A call that finds every slot
//! taken first closes an idle connection to another address, then waits (within its own
//! deadline) for a connection to come back or a slot to free.
//!
//! A pool belongs to one install, and lives as long as it: when the install's client
//! certificate changes, its client ([`crate::Remote`]) is made anew on the same pool as a new
//! generation. Connections of an older generation are closed when idle and never given out
//! again, and a call of an older client that asks the pool for a connection is told it is
//! stale ([`Got::Stale`]): so no call made after the change goes out with the old certificate,
//! and the old and new clients together hold no more than the limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long an unused connection is kept.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(30);
/// How often a call waiting for a connection looks again unprompted.
const RECHECK: Duration = Duration::from_millis(100);
/// How often idle connections are looked at while there are any (at most).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The task that drives a connection and the slot it holds; dropping it closes the connection
/// and tells waiting calls its slot is free.
pub(crate) struct Held {
    pub(crate) addr: SocketAddr,
    pub(crate) driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    /// The client generation that opened it.
    generation: u64,
    slot: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.driver.abort();
        // The slot first, then the news: a woken call must find it free.
        drop(self.slot.take());
        self.freed.notify_waiters();
    }
}

/// A JSON-RPC connection.
pub(crate) struct H1 {
    pub(crate) sender: http1::SendRequest<Full<Bytes>>,
    pub(crate) held: Held,
}

/// A gRPC connection, shared by the calls in flight on it.
pub(crate) struct H2 {
    pub(crate) sender: http2::SendRequest<tonic::body::Body>,
    pub(crate) held: Held,
}

/// What a call gets: a connection to reuse, a slot to open one in, or word that its client is
/// no longer the install's (its certificate changed): it must start again with the new one.
pub(crate) enum Got<C> {
    Reuse(C),
    Slot(Slot),
    Stale,
}

/// A slot for a connection about to be opened.
pub(crate) struct Slot {
    permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
    generation: u64,
}

impl Slot {
    /// The slot, now held by the connection to `addr` that `driver` drives.
    pub(crate) fn hold(
        self,
        addr: SocketAddr,
        driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ) -> Held {
        Held {
            addr,
            driver,
            generation: self.generation,
            slot: Some(self.permit),
            freed: self.freed,
        }
    }
}

pub(crate) struct Pool {
    slots: Arc<Semaphore>,
    freed: Arc<Notify>,
    /// The generation of the install's current client.
    generation: AtomicU64,
    idle: Mutex<Vec<(H1, Instant)>>,
    /// The shared gRPC connection and when it was last used.
    shared: Mutex<Option<(Arc<H2>, Instant)>>,
    /// Held while a gRPC connection is looked for and, if need be, opened: calls that start
    /// together share the one the first opens instead of each opening its own.
    opening: tokio::sync::Mutex<()>,
    /// A sweep of idle connections is scheduled.
    sweeping: AtomicBool,
    /// How long an unused connection is kept ([`IDLE_FOR`] unless told otherwise).
    idle_for: Duration,
}

impl Pool {
    pub(crate) fn new(max_connections: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            freed: Arc::new(Notify::new()),
            generation: AtomicU64::new(0),
            idle: Mutex::default(),
            shared: Mutex::default(),
            opening: tokio::sync::Mutex::new(()),
            sweeping: AtomicBool::new(false),
            idle_for: IDLE_FOR,
        }
    }

    /// Unused connections kept `d` (instead of [`IDLE_FOR`]).
    pub(crate) fn with_idle_for(mut self, d: Duration) -> Pool {
        self.idle_for = d;
        self
    }

    /// A new client generation: the connections of the older ones are closed when idle and
    /// never given out again. Returns the new generation.
    pub(crate) fn next_generation(&self) -> u64 {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.idle().clear();
        *self.shared() = None;
        self.freed.notify_waiters();
        g
    }

    fn current(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// An idle JSON-RPC connection to `addr`, or a slot for a new one, for a client of
    /// `generation`.
    pub(crate) async fn h1(&self, addr: SocketAddr, generation: u64) -> Got<H1> {
        self.get(addr, generation, |pool| pool.take_h1(addr)).await
    }

    /// The shared gRPC connection to `addr`, or a slot for a new one (then [`Pool::share`]
    /// before the guard is dropped).
    pub(crate) async fn h2(
        &self,
        addr: SocketAddr,
        generation: u64,
    ) -> (Got<Arc<H2>>, tokio::sync::MutexGuard<'_, ()>) {
        let guard = self.opening.lock().await;
        (
            self.get(addr, generation, |pool| pool.take_h2(addr)).await,
            guard,
        )
    }

    async fn get<C>(
        &self,
        addr: SocketAddr,
        generation: u64,
        reuse: impl Fn(&Pool) -> Option<C>,
    ) -> Got<C> {
        loop {
            // Listening before looking, so that a slot freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if generation != self.current() {
                return Got::Stale;
            }
            if let Some(c) = reuse(self) {
                return Got::Reuse(c);
            }
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return Got::Slot(Slot {
                    permit,
                    freed: Arc::clone(&self.freed),
                    generation,
                });
            }
            if self.close_one_idle(addr) {
                continue;
            }
            // Woken when a connection comes back or a slot frees; and looking again now and
            // then, for a connection that became ready or closed without telling.
            let _ = tokio::time::timeout(RECHECK, freed).await;
        }
    }

    /// Puts a JSON-RPC connection whose answer was read whole back for the next call.
    pub(crate) fn put_h1(self: &Arc<Self>, conn: H1) {
        if conn.sender.is_closed() || conn.held.generation != self.current() {
            return;
        }
        self.idle().push((conn, Instant::now()));
        self.freed.notify_waiters();
        self.sweep_later();
    }

    /// Makes `conn` the connection the next gRPC calls share.
    pub(crate) fn share(self: &Arc<Self>, conn: &Arc<H2>) {
        if conn.held.generation != self.current() {
            return;
        }
        *self.shared() = Some((Arc::clone(conn), Instant::now()));
        self.sweep_later();
    }

    /// A call on `conn` failed or timed out: the next calls open another (the ones on it
    /// keep it until they end).
    pub(crate) fn forget_h2(&self, conn: &Arc<H2>) {
        let mut shared = self.shared();
        if shared.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, conn)) {
            *shared = None;
        }
    }

    fn take_h1(&self, addr: SocketAddr) -> Option<H1> {
        let mut idle = self.idle();
        idle.retain(|(c, since)| !c.sender.is_closed() && since.elapsed() < self.idle_for);
        let at = idle
            .iter()
            .rposition(|(c, _)| c.held.addr == addr && c.sender.is_ready())?;
        Some(idle.swap_remove(at).0)
    }

    fn take_h2(&self, addr: SocketAddr) -> Option<Arc<H2>> {
        let mut shared = self.shared();
        let (conn, since) = shared.as_mut()?;
        if conn.held.addr != addr || conn.sender.is_closed() || since.elapsed() >= self.idle_for {
            // Calls in flight on it keep it until they end.
            *shared = None;
            return None;
        }
        *since = Instant::now();
        Some(Arc::clone(conn))
    }

    /// Closes an idle connection that the call to `addr` cannot use (to another address,
    /// closed, or kept too long), so that its slot frees; whether there was one.
    fn close_one_idle(&self, addr: SocketAddr) -> bool {
        let mut idle = self.idle();
        let before = idle.len();
        idle.retain(|(c, since)| !c.sender.is_closed() && since.elapsed() < self.idle_for);
        if idle.len() < before {
            return true;
        }
        if let Some(at) = idle.iter().position(|(c, _)| c.held.addr != addr) {
            idle.swap_remove(at);
            return true;
        }
        drop(idle);
        // The shared gRPC connection, if no call is on it.
        let mut shared = self.shared();
        if shared
            .as_ref()
            .is_some_and(|(c, _)| Arc::strong_count(c) == 1 && c.held.addr != addr)
        {
            *shared = None;
            return true;
        }
        false
    }

    /// Closes the connections idle for [`IDLE_FOR`] or closed by the server; whether any
    /// connection is left to look at later.
    fn sweep(&self) -> bool {
        let mut idle = self.idle();
        idle.retain(|(c, since)| !c.sender.is_closed() && since.elapsed() < self.idle_for);
        let left = !idle.is_empty();
        drop(idle);
        let mut shared = self.shared();
        if shared.as_ref().is_some_and(|(c, since)| {
            c.sender.is_closed() || (Arc::strong_count(c) == 1 && since.elapsed() >= self.idle_for)
        }) {
            *shared = None;
        }
        left || shared.is_some()
    }

    /// Schedules a sweep (one task at a time, while any connection is kept; it ends with the
    /// pool).
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let every = match pool.upgrade() {
                    Some(p) => SWEEP_EVERY
                        .min(p.idle_for / 2)
                        .max(Duration::from_millis(10)),
                    None => return,
                };
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                if pool.sweep() {
                    continue;
                }
                pool.sweeping.store(false, Ordering::SeqCst);
                // A connection kept between the sweep and now: sweep on.
                if !pool.sweep() || pool.sweeping.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        });
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(H1, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Option<(Arc<H2>, Instant)>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
