//! The one sweeper of idle things kept per install (warm processes, kept instances): a task
//! that drops what waited too long, so an install nobody calls any more does not hold them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts, once per `started` flag, a task that every `period` takes the entries of `idle`
/// that `expired` says are and hands them to `discard`; it ends when `idle` is dropped (with
/// its install). Without a tokio runtime nothing starts (and the next call tries again).
pub(crate) fn sweep_later<T: Send + 'static>(
    started: &AtomicBool,
    idle: &Arc<Mutex<Vec<T>>>,
    period: Duration,
    expired: fn(&T) -> bool,
    discard: impl Fn(Vec<T>) + Send + 'static,
) {
    if started.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        started.store(false, Ordering::Release);
        return;
    };
    let idle = Arc::downgrade(idle);
    rt.spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(idle) = idle.upgrade() else { return };
            let old: Vec<T> = match idle.lock() {
                Ok(mut list) => {
                    let (old, fresh): (Vec<T>, Vec<T>) = list.drain(..).partition(expired);
                    *list = fresh;
                    old
                }
                Err(_) => return,
            };
            if !old.is_empty() {
                discard(old);
            }
        }
    });
}
