//! One install's connections to its remote: kept for the next call and bounded in number.
//!
//! Every connection, busy or idle, holds one of the pool's slots, so an install never has more
//! than its `max_connections` open to its remote, whatever its calls and their callers do. A
//! JSON-RPC connection (HTTP/1.1) carries one call at a time and goes back to the idle list
//! when its answer was read whole; a gRPC connection (HTTP/2) is shared by the calls in
//! flight. A connection is reused only for the address it was opened to (the host checks the
//! address at every call) and for at most [`IDLE_FOR`] after its last use; one the server
//! closed is dropped. A call that finds every slot taken first closes an idle connection to
//! another address, then waits (within its own deadline) for a connection to come back or a
//! slot to free.
//!
//! A pool belongs to one client ([`crate::Remote`]), so one TLS identity: a connection made
//! with one install's client certificate never carries another's calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long an unused connection is kept.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(30);
/// How often a call waiting for a connection looks again unprompted.
const RECHECK: Duration = Duration::from_millis(100);

/// The task that drives a connection and the slot it holds; dropping it closes the connection
/// and tells waiting calls its slot is free.
pub(crate) struct Held {
    pub(crate) addr: SocketAddr,
    pub(crate) driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
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

/// What a call gets: a connection to reuse, or a slot to open one in.
pub(crate) enum Got<C> {
    Reuse(C),
    Slot(Slot),
}

/// A slot for a connection about to be opened.
pub(crate) struct Slot {
    permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
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
            slot: Some(self.permit),
            freed: self.freed,
        }
    }
}

pub(crate) struct Pool {
    slots: Arc<Semaphore>,
    freed: Arc<Notify>,
    idle: Mutex<Vec<(H1, Instant)>>,
    shared: Mutex<Option<(Arc<H2>, Instant)>>,
    /// Held while a gRPC connection is looked for and, if need be, opened: calls that start
    /// together share the one the first opens instead of each opening its own.
    opening: tokio::sync::Mutex<()>,
}

impl Pool {
    pub(crate) fn new(max_connections: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            freed: Arc::new(Notify::new()),
            idle: Mutex::default(),
            shared: Mutex::default(),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// An idle JSON-RPC connection to `addr`, or a slot for a new one.
    pub(crate) async fn h1(&self, addr: SocketAddr) -> Got<H1> {
        self.get(addr, |pool| pool.take_h1(addr)).await
    }

    /// The shared gRPC connection to `addr`, or a slot for a new one (then [`Pool::share`]
    /// before the guard is dropped).
    pub(crate) async fn h2(
        &self,
        addr: SocketAddr,
    ) -> (Got<Arc<H2>>, tokio::sync::MutexGuard<'_, ()>) {
        let guard = self.opening.lock().await;
        (self.get(addr, |pool| pool.take_h2(addr)).await, guard)
    }

    async fn get<C>(&self, addr: SocketAddr, reuse: impl Fn(&Pool) -> Option<C>) -> Got<C> {
        loop {
            // Listening before looking, so that a slot freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(c) = reuse(self) {
                return Got::Reuse(c);
            }
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return Got::Slot(Slot {
                    permit,
                    freed: Arc::clone(&self.freed),
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
    pub(crate) fn put_h1(&self, conn: H1) {
        if conn.sender.is_closed() {
            return;
        }
        self.idle().push((conn, Instant::now()));
        self.freed.notify_waiters();
    }

    /// Makes `conn` the connection the next gRPC calls share.
    pub(crate) fn share(&self, conn: &Arc<H2>) {
        *self.shared() = Some((Arc::clone(conn), Instant::now()));
    }

    fn take_h1(&self, addr: SocketAddr) -> Option<H1> {
        let mut idle = self.idle();
        idle.retain(|(c, since)| !c.sender.is_closed() && since.elapsed() < IDLE_FOR);
        let at = idle
            .iter()
            .rposition(|(c, _)| c.held.addr == addr && c.sender.is_ready())?;
        Some(idle.swap_remove(at).0)
    }

    fn take_h2(&self, addr: SocketAddr) -> Option<Arc<H2>> {
        let mut shared = self.shared();
        let (conn, since) = shared.as_mut()?;
        if conn.held.addr != addr || conn.sender.is_closed() || since.elapsed() >= IDLE_FOR {
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
        idle.retain(|(c, since)| !c.sender.is_closed() && since.elapsed() < IDLE_FOR);
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

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(H1, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Option<(Arc<H2>, Instant)>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
