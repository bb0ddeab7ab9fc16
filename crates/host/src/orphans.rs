//! The audit records of calls and requests dropped part-way (their caller went away, or the
//! service stopped them at the end of its shutdown grace): written on the runtime after the
//! drop, and counted until written, so that a service that stops can wait for them before it
//! exits (outside attack, session 28: requests cut off by the end of the grace left no record).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Orphans {
    pending: Arc<Pending>,
    /// Set when the service stops the calls still running at the end of its grace: their
    /// records say so, not that their caller went away.
    cut_off: AtomicBool,
}

#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts one record until it is written (or its task is dropped).
struct Counted(Arc<Pending>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Orphans {
    /// Writes `record` on the current runtime, counted until it is written; nothing without
    /// a runtime (as before: there is nowhere to write it from).
    pub(crate) fn spawn(&self, record: impl Future<Output = ()> + Send + 'static) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(Arc::clone(&self.pending));
        runtime.spawn(async move {
            let _counted = counted;
            record.await;
        });
    }

    /// Waits until every record spawned so far is written, for at most `within`; how many are
    /// still unwritten then.
    pub(crate) async fn settle(&self, within: Duration) -> usize {
        let pending = &self.pending;
        let all = async {
            loop {
                let idle = pending.idle.notified();
                if pending.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(within, all).await;
        pending.count.load(Ordering::Acquire)
    }

    pub(crate) fn cut_off(&self) {
        self.cut_off.store(true, Ordering::Release);
    }

    pub(crate) fn were_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Acquire)
    }
}
