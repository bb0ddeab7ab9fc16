//! Fair shares of the CPU between tenants: a call's guest code runs only while the call holds
//! a [`Turn`], and there are as many turns as cores. A guest gives its turn back every time it
//! stops (at each epoch tick, where it yields, and whenever it waits for the host), and when
//! turns are short they go round the tenants waiting, one call per tenant in turn, instead of
//! to whoever asked first. So a tenant that floods the service with busy loops gets at most the
//! share of the CPU the other busy tenants get, and a quiet tenant's call runs at the next
//! tick, not after every queued loop has had its slice.
//!
//! A call's first [`FREE_RUN`] of running needs no turn: the many short calls of a service
//! never queue; what a busy tenant floods with is long calls, and those wait their turn. A
//! tenant with a call past its free run is busy, and its new calls get no free run: they wait
//! their turn from the start ([`Share::busy`]), so a flood of long calls cannot live off free
//! runs either.
//! Without contention a turn costs one uncontended lock to take and one to give back.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The turns of one process.
pub struct Turns {
    state: Mutex<State>,
    /// Calls past their free run, of any share (the sum of `State::long`): while none is,
    /// no share is busy, and asking costs no lock.
    long_calls: AtomicUsize,
}

struct State {
    free: usize,
    /// Calls waiting, by share (tenant), oldest first.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// Shares with calls waiting, in the order they are served.
    ring: VecDeque<Arc<str>>,
    /// Calls past their free run, by share: those shares are busy.
    long: HashMap<Arc<str>, usize>,
}

/// A call's share and the turns it takes them from.
#[derive(Clone)]
pub struct Share {
    pub turns: Arc<Turns>,
    /// Calls with the same key share one place in the round (the tenant).
    pub key: Arc<str>,
}

impl Share {
    /// Whether a call of this share is past its free run: its next calls get none.
    pub fn busy(&self) -> bool {
        self.turns.long_calls.load(Ordering::Acquire) > 0
            && self.turns.state().long.contains_key(&self.key)
    }

    /// Marks one call of this share as long until the mark is dropped.
    fn mark_long(&self) -> LongMark<'_> {
        let mut st = self.turns.state();
        *st.long.entry(Arc::clone(&self.key)).or_default() += 1;
        self.turns.long_calls.fetch_add(1, Ordering::Release);
        LongMark(self)
    }
}

/// One call of a share past its free run.
struct LongMark<'a>(&'a Share);

impl Drop for LongMark<'_> {
    fn drop(&mut self) {
        let mut st = self.0.turns.state();
        if let Some(n) = st.long.get_mut(&self.0.key) {
            *n -= 1;
            self.0.turns.long_calls.fetch_sub(1, Ordering::Release);
            if *n == 0 {
                st.long.remove(&self.0.key);
            }
        }
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Share").field(&self.key).finish()
    }
}

impl Turns {
    /// `slots` turns (at least one): the cores guest code may use at once.
    pub fn new(slots: usize) -> Arc<Turns> {
        Arc::new(Turns {
            state: Mutex::new(State {
                free: slots.max(1),
                waiting: HashMap::new(),
                ring: VecDeque::new(),
                long: HashMap::new(),
            }),
            long_calls: AtomicUsize::new(0),
        })
    }

    /// One turn per core but one (and at least one): long calls never hold every core, so
    /// the service's own work (reading requests, short calls, writing answers, syncing the
    /// audit log) always finds one. On a virtual machine this matters twice: with every vCPU
    /// busy, the hypervisor's disk emulation competes with them, and an `fdatasync` that takes
    /// 0.14 ms took 8-20 ms (measured on a 2-vCPU VM with two busy loops, even at nice 19), and
    /// every answer waits for its audit record's sync.
    pub fn per_core() -> Arc<Turns> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Turns::new(cores.saturating_sub(1))
    }

    /// The state is counts and queues, whole between statements: a poisoned lock is used as is.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn for `key`.
    pub async fn take(self: &Arc<Self>, key: &Arc<str>) -> Turn {
        let rx = {
            let mut st = self.state();
            // Free and nobody queued before us: ours.
            if st.free > 0 && st.ring.is_empty() {
                st.free -= 1;
                return Turn(Arc::clone(self));
            }
            let (tx, rx) = oneshot::channel();
            let queue = st.waiting.entry(Arc::clone(key)).or_default();
            queue.push_back(tx);
            if queue.len() == 1 {
                st.ring.push_back(Arc::clone(key));
            }
            rx
        };
        let mut wait = Waiting {
            rx: Some(rx),
            turns: self,
        };
        if let Some(rx) = wait.rx.as_mut() {
            // The sender is only dropped by `Turns` itself being dropped, which the caller's
            // `Arc` prevents; either way the call goes on.
            let _ = rx.await;
        }
        wait.rx = None;
        Turn(Arc::clone(self))
    }

    /// Gives a turn back: to the next share in the round, or to the free ones.
    fn give_back(&self) {
        let mut st = self.state();
        while let Some(key) = st.ring.pop_front() {
            let Some(queue) = st.waiting.get_mut(&key) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                st.waiting.remove(&key);
            } else {
                st.ring.push_back(key);
            }
            // A waiter that gave up (its call was dropped) is skipped.
            if let Some(tx) = next
                && tx.send(()).is_ok()
            {
                return;
            }
        }
        st.free += 1;
    }

    /// Whether a call is waiting for a turn.
    #[cfg(test)]
    fn contended(&self) -> bool {
        !self.state().ring.is_empty()
    }
}

/// A turn to run guest code; given back when dropped.
pub struct Turn(Arc<Turns>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// A wait for a turn that may be dropped (its call cancelled) after the turn was handed to
/// it: then the turn is given back, not lost.
struct Waiting<'a> {
    rx: Option<oneshot::Receiver<()>>,
    turns: &'a Arc<Turns>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // Closed first, so no turn can arrive after the check.
            rx.close();
            if rx.try_recv().is_ok() {
                self.turns.give_back();
            }
        }
    }
}

/// Time a call's polls may take before it needs turns: a short call (a typical request, well
/// under this) never waits behind the busy ones; a long one waits its turn from here on.
pub const FREE_RUN: Duration = Duration::from_millis(2);

/// Runs `fut` holding a turn of `share` while it is polled, and none while it waits: every
/// time it stops, the turn goes back and the next poll waits for one again. Its first
/// [`FREE_RUN`] of polling needs no turn, unless its share is busy.
pub async fn fairly<F: Future>(share: Option<&Share>, fut: F) -> F::Output {
    let Some(share) = share else {
        return fut.await;
    };
    let mut fut = pin!(fut);
    // A call of a busy share waits for turns from the start, but makes its share busy (and
    // so keeps it busy) only once it runs past its own free run: short calls of a share that
    // is never quiet kept it busy for ever (a single tenant under steady load, busy once a
    // poll of one call was preempted past 2 ms, then had every call queue for the one turn
    // of a 2-core machine).
    let busy = share.busy();
    let mut used = Duration::ZERO;
    let mut long = None;
    loop {
        let turn = if used < FREE_RUN && !busy {
            None
        } else {
            if long.is_none() && used >= FREE_RUN {
                long = Some(share.mark_long());
            }
            Some(share.turns.take(&share.key).await)
        };
        let started = Instant::now();
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        drop(turn);
        match polled {
            // Done: how long this poll took no longer matters (most calls end in their first).
            Poll::Ready(out) => return out,
            // Stop here without a turn: the future registered this task's waker, so what it
            // waits for (or its own yield) wakes the task, which then queues for a turn again.
            Poll::Pending => {
                used += started.elapsed();
                let mut stopped = false;
                std::future::poll_fn(|_| {
                    if stopped {
                        Poll::Ready(())
                    } else {
                        stopped = true;
                        Poll::Pending
                    }
                })
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A call of `share` that runs past its free run for ever, on a task of its own.
    fn endless(share: &Share) -> tokio::task::JoinHandle<()> {
        let share = share.clone();
        tokio::spawn(async move {
            fairly(Some(&share), async {
                loop {
                    std::thread::sleep(FREE_RUN);
                    tokio::task::yield_now().await;
                }
            })
            .await
        })
    }

    fn share(turns: &Arc<Turns>, key: &str) -> Share {
        Share {
            turns: Arc::clone(turns),
            key: Arc::from(key),
        }
    }

    #[tokio::test]
    async fn turns_go_round_the_tenants_not_to_the_first_in_line() {
        let turns = Turns::new(1);
        let held = turns.take(&Arc::from("a")).await;
        // Tenant a queues five calls, then tenant b one.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, key) in ["a", "a", "a", "a", "a", "b"].into_iter().enumerate() {
            let (turns, order) = (Arc::clone(&turns), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _t = turns.take(&Arc::from(key)).await;
                order.lock().unwrap().push(format!("{key}{i}"));
            }));
            tokio::task::yield_now().await;
        }
        assert!(turns.contended());
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // b is served second, after one of a's, not sixth.
        assert_eq!(
            order[..2],
            ["a0".to_string(), "b5".to_string()],
            "{order:?}"
        );
        assert!(!turns.contended());
        // Every turn came back: one free.
        let _one = turns.take(&Arc::from("c")).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), turns.take(&Arc::from("c")))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_cancelled_wait_loses_no_turn() {
        let turns = Turns::new(1);
        let held = turns.take(&Arc::from("a")).await;
        let waiter = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move {
                let _t = turns.take(&Arc::from("b")).await;
                std::future::pending::<()>().await;
            })
        };
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        // The turn b would have had is free again.
        tokio::time::timeout(Duration::from_secs(1), turns.take(&Arc::from("a")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_short_call_runs_without_waiting_for_a_turn() {
        let turns = Turns::new(1);
        let _busy = turns.take(&Arc::from("a")).await;
        let s = share(&turns, "b");
        // Every turn is held, yet a call that stops (yields) a few times runs to its end.
        let done = tokio::time::timeout(
            Duration::from_millis(500),
            fairly(Some(&s), async {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                7
            }),
        )
        .await;
        assert_eq!(done.ok(), Some(7));
        // One that keeps running past its free time waits for a turn.
        let long = tokio::time::timeout(
            Duration::from_millis(200),
            fairly(Some(&s), async {
                loop {
                    std::thread::sleep(FREE_RUN);
                    tokio::task::yield_now().await;
                }
            }),
        )
        .await;
        assert!(long.is_err());
    }

    #[tokio::test]
    async fn a_busy_share_gets_no_free_run() {
        let turns = Turns::new(1);
        let _held = turns.take(&Arc::from("other")).await;
        let a = share(&turns, "a");
        let b = share(&turns, "b");
        // One of a's calls runs past its free run and waits for the only turn.
        let long = endless(&a);
        while !a.busy() {
            tokio::task::yield_now().await;
        }
        assert!(!b.busy());
        // a's next call, however short, waits for a turn; b's runs at once.
        let short = || async {
            tokio::task::yield_now().await;
            1
        };
        let waited =
            tokio::time::timeout(Duration::from_millis(100), fairly(Some(&a), short())).await;
        assert!(waited.is_err());
        let ran = tokio::time::timeout(Duration::from_millis(500), fairly(Some(&b), short())).await;
        assert_eq!(ran.ok(), Some(1));
        // Once a's long call is gone, a is not busy any more.
        long.abort();
        let _ = long.await;
        assert!(!a.busy());
        let ran = tokio::time::timeout(Duration::from_millis(500), fairly(Some(&a), short())).await;
        assert_eq!(ran.ok(), Some(1));
    }

    #[tokio::test]
    async fn a_busy_shares_short_calls_do_not_keep_it_busy() {
        let turns = Turns::new(1);
        let a = share(&turns, "a");
        let long = endless(&a);
        while !a.busy() {
            tokio::task::yield_now().await;
        }
        // A short call of a, started while a is busy, that then waits (holding no turn).
        let (go, wait) = oneshot::channel::<()>();
        let short = {
            let a = a.clone();
            tokio::spawn(async move {
                fairly(Some(&a), async {
                    tokio::task::yield_now().await;
                    let _ = wait.await;
                    2
                })
                .await
            })
        };
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        long.abort();
        let _ = long.await;
        // Only the long call made a busy: with it gone, a is not, though the short call is
        // still in flight.
        assert!(!short.is_finished());
        assert!(!a.busy());
        go.send(()).unwrap();
        assert_eq!(short.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_waiting_call_holds_no_turn() {
        let turns = Turns::new(1);
        let s = share(&turns, "a");
        let slept = AtomicUsize::new(0);
        let sleeper = fairly(Some(&s), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            slept.fetch_add(1, Ordering::SeqCst);
        });
        let other = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            // Taken while the sleeper sleeps: it does not hold the only turn.
            let t = tokio::time::timeout(Duration::from_millis(100), turns.take(&Arc::from("b")))
                .await
                .is_ok();
            assert_eq!(slept.load(Ordering::SeqCst), 0);
            t
        };
        let ((), got) = tokio::join!(sleeper, other);
        assert!(got);
    }
}
