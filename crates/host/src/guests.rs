//! The threads guest code runs on: tokio runtimes of their own, apart from the service's. A
//! call starts on the short calls' threads (one per core and one more); one still running
//! after `FREE_RUN` moves to the long calls' threads (one per core), and a call of a busy
//! tenant (one with a call past its free run) starts there. So a request's own work
//! (reading it, checking its key, writing its answer) and the short calls are never queued
//! behind busy guests' time slices on an executor thread; and among the long calls, turns go
//! round the tenants (`warden_runtime::Turns`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;

use warden_runtime::{CallError, CallOutcome, CallReport, FREE_RUN};

pub(crate) struct Guests {
    /// Where every call starts. `None` when the threads could not be started (calls then
    /// run on the caller's), and while being dropped.
    short: Option<tokio::runtime::Runtime>,
    /// Where a call goes once it has run for [`FREE_RUN`], so that busy guests never hold
    /// the threads short calls start on. `None`: long calls stay where they started.
    ///
    /// These threads are not given a lower priority: tried with nice 4 to 10, a quiet
    /// tenant's p99 went from about 10 ms to 100-350 ms under a flood of busy loops, an
    /// inversion on locks the kernel shares between the process's threads (the memory map's:
    /// each instantiation changes it) held by a thread it then ran seldom.
    long: Option<tokio::runtime::Runtime>,
}

impl Guests {
    /// Calls run on the caller's threads.
    pub(crate) fn inline() -> Guests {
        Guests {
            short: None,
            long: None,
        }
    }

    pub(crate) fn start() -> Guests {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // One more than the cores (and turns): while every core runs a busy guest, a thread
        // is left to start the short calls, which need no turn.
        let short = pool("warden-guest", cores + 1);
        let short = match short {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "the guest threads could not be started; guests run on the caller's threads");
                return Guests {
                    short: None,
                    long: None,
                };
            }
        };
        let long = pool("warden-guest-long", cores);
        let long = match long {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(error = %e, "the threads for long calls could not be started; long calls share the cores evenly with short ones");
                None
            }
        };
        Guests {
            short: Some(short),
            long,
        }
    }

    /// Runs `call` on the guests' threads and waits for it without holding this thread. A
    /// call still running after [`FREE_RUN`] of polling moves to the long calls' threads
    /// (between two polls: a Wasmtime call is a `Send` future, polled from any thread); with
    /// `long`, it starts there. If the wait is dropped (the client went away), the call is
    /// stopped too.
    pub(crate) async fn run<T, F>(&self, call: F, long: bool) -> CallOutcome<T>
    where
        F: Future<Output = CallOutcome<T>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(short) = &self.short else {
            return call.await;
        };
        // The caller's span (request id, tenant) and subscriber go with it.
        let call = Box::pin(call.in_current_span().with_current_subscriber());
        if long && let Some(rt) = &self.long {
            return finish(AbortOnDrop(rt.spawn(call))).await;
        }
        let first = FirstRun {
            call: Some(call),
            used: Duration::ZERO,
            movable: self.long.is_some(),
        };
        let mut task = AbortOnDrop(short.spawn(first));
        let call = match (&mut task.0).await {
            Ok(Ran::Done(outcome)) => return outcome,
            Ok(Ran::Long(call)) => call,
            Err(e) if e.is_panic() => return stopped("the call's task panicked"),
            Err(_) => return stopped("the call's task was stopped"),
        };
        let rt = self.long.as_ref().unwrap_or(short);
        finish(AbortOnDrop(rt.spawn(call))).await
    }
}

/// How long a blocking thread of the guests' runtimes idles before it ends (tokio's default
/// is 10 s). Every process call's wait for its program's end on an executor thread hands
/// that thread's work to another (`block_in_place`): a burst of hung-up calls left a hundred
/// such threads idle for 10 s (outside attack, session 39). Under steady load they are reused
/// well within this.
const IDLE_THREAD_LIFE: Duration = Duration::from_secs(1);

/// A runtime of `workers` executor threads named `name`, whose idle blocking threads end
/// after [`IDLE_THREAD_LIFE`].
fn pool(name: &str, workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .thread_keep_alive(IDLE_THREAD_LIFE)
        .enable_all()
        .build()
}

async fn finish<T>(mut task: AbortOnDrop<CallOutcome<T>>) -> CallOutcome<T> {
    match (&mut task.0).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => stopped("the call's task panicked"),
        Err(_) => stopped("the call's task was stopped"),
    }
}

/// A call's first [`FREE_RUN`] of polling: done within it, or handed back (between two
/// polls) to be moved.
struct FirstRun<F> {
    call: Option<Pin<Box<F>>>,
    /// Polling time so far.
    used: Duration,
    /// False when there is nowhere to move it.
    movable: bool,
}

enum Ran<F: Future> {
    Done(F::Output),
    Long(Pin<Box<F>>),
}

impl<F: Future> Future for FirstRun<F> {
    type Output = Ran<F>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ran<F>> {
        let this = self.get_mut();
        let Some(call) = this.call.as_mut() else {
            // Polled after it was handed back: it never is (a finished task is not polled).
            return Poll::Pending;
        };
        let started = Instant::now();
        match call.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Ran::Done(out)),
            Poll::Pending => {
                if !this.movable {
                    return Poll::Pending;
                }
                this.used += started.elapsed();
                match this.call.take() {
                    // Its next poll, on the new task, registers that task's waker.
                    Some(call) if this.used >= FREE_RUN => Poll::Ready(Ran::Long(call)),
                    other => {
                        this.call = other;
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which async code must not do; calls still
        // running are stopped where they are.
        for rt in [self.short.take(), self.long.take()].into_iter().flatten() {
            rt.shutdown_background();
        }
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn stopped<T>(why: &str) -> CallOutcome<T> {
    CallOutcome {
        result: Err(CallError::host(why)),
        report: CallReport::default(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The thread it ends on.
    fn here() -> CallOutcome<String> {
        CallOutcome {
            result: Ok(std::thread::current().name().unwrap_or("").to_string()),
            report: CallReport::default(),
        }
    }

    /// Threads of this process whose name is `name`.
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    #[test]
    fn idle_blocking_threads_end_within_seconds() {
        // The name is this test's alone (at most 15 bytes: what the kernel keeps).
        let name = "wg-idle-test";
        let rt = pool(name, 1).unwrap();
        rt.block_on(async {
            let waits: Vec<_> = (0..8)
                .map(|_| {
                    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(100)))
                })
                .collect();
            for w in waits {
                w.await.unwrap();
            }
        });
        assert!(threads_named(name) >= 9, "{}", threads_named(name));
        // Tokio's default would keep them 10 s.
        let t = Instant::now();
        while threads_named(name) > 1 {
            assert!(
                t.elapsed() < Duration::from_secs(6),
                "{} threads still there",
                threads_named(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_long_call_moves_to_the_long_calls_threads() {
        let guests = Guests::start();
        let short = guests
            .run(
                async {
                    tokio::task::yield_now().await;
                    here()
                },
                false,
            )
            .await;
        assert_eq!(short.result.unwrap(), "warden-guest");
        let long = guests
            .run(
                async {
                    for _ in 0..3 {
                        let t = Instant::now();
                        while t.elapsed() < FREE_RUN {
                            std::hint::spin_loop();
                        }
                        tokio::task::yield_now().await;
                    }
                    here()
                },
                false,
            )
            .await;
        assert_eq!(long.result.unwrap(), "warden-guest-long");
        // A busy tenant's call starts there.
        let busy = guests.run(async { here() }, true).await;
        assert_eq!(busy.result.unwrap(), "warden-guest-long");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_call_moved_while_waiting_is_woken_where_it_went() {
        let guests = Guests::start();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let call = guests.run(
            async move {
                let t = Instant::now();
                while t.elapsed() < FREE_RUN {
                    std::hint::spin_loop();
                }
                // Moved while waiting: only the sender's wake can resume it.
                let n = rx.await.unwrap();
                CallOutcome {
                    result: Ok((n, std::thread::current().name().unwrap_or("").to_string())),
                    report: CallReport::default(),
                }
            },
            false,
        );
        let send = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(7).unwrap();
        };
        let (out, ()) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(call, send) })
                .await
                .unwrap();
        assert_eq!(out.result.unwrap(), (7, "warden-guest-long".to_string()));
    }
}
