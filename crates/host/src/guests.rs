//! The threads guest code runs on: a tokio runtime of its own, one worker per core and one more, apart
//! from the service's. The kernel shares the cores between the two, so a request's own work
//! (reading it, checking its key, writing its answer) is never queued behind guests' time
//! slices on an executor thread; and among the guests, turns go round the tenants
//! (`warden_runtime::Turns`).

use std::future::Future;

use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;

use warden_runtime::{CallError, CallOutcome, CallReport};

pub(crate) struct Guests {
    /// `None` when the threads could not be started (calls then run on the caller's), and
    /// while being dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl Guests {
    pub(crate) fn start() -> Guests {
        // One more than the cores (and turns): while every turn runs a busy guest, a thread
        // is left to start the short calls, which need no turn.
        let workers = std::thread::available_parallelism().map_or(1, usize::from) + 1;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("warden-guest")
            .enable_all()
            .build();
        match rt {
            Ok(rt) => Guests { rt: Some(rt) },
            Err(e) => {
                tracing::warn!(error = %e, "the guest threads could not be started; guests run on the caller's threads");
                Guests { rt: None }
            }
        }
    }

    /// Runs `call` on the guests' threads and waits for it without holding this thread. If
    /// the wait is dropped (the client went away), the call is stopped too.
    pub(crate) async fn run<T, F>(&self, call: F) -> CallOutcome<T>
    where
        F: Future<Output = CallOutcome<T>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(rt) = &self.rt else {
            return call.await;
        };
        // The caller's span (request id, tenant) and subscriber go with it.
        let call = call.in_current_span().with_current_subscriber();
        let mut task = AbortOnDrop(rt.spawn(call));
        match (&mut task.0).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => stopped("the call's task panicked"),
            Err(_) => stopped("the call's task was stopped"),
        }
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which async code must not do; calls still
        // running are stopped where they are.
        if let Some(rt) = self.rt.take() {
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
