//! Memory freed after a burst of requests is given back to the system. glibc keeps what its
//! per-thread arenas freed for reuse: RSS went from 29 to 112 MB during a 2,000-connection
//! flood and stayed at 100 MB after it (red team, session 18); one `malloc_trim` took it to
//! 45 MB (in 21 ms). The service trims at most every [`EVERY`], after requests came, at a
//! moment none is in flight: a trim locks each arena in turn, and requests would wait for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Service;

/// How often a service that answered requests gives freed memory back.
const EVERY: Duration = Duration::from_secs(10);

/// How often it looks for a moment with no request in flight.
const LOOK: Duration = Duration::from_millis(100);

impl Service {
    /// Gives memory freed by the requests answered since the last time back to the system,
    /// at most every [`EVERY`] and when no request is in flight, on the blocking pool (a
    /// trim walks every arena). Stops with the service.
    pub fn give_back_memory(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen = 0;
            loop {
                tick.tick().await;
                let Some(s) = me.upgrade() else { return };
                if s.entered.load(Ordering::Relaxed) == seen || !s.quiet_within(EVERY).await {
                    continue;
                }
                // Read after the wait for a quiet moment: what came meanwhile is trimmed now.
                seen = s.entered.load(Ordering::Relaxed);
                drop(s);
                let trimmed = tokio::task::spawn_blocking(|| {
                    let started = Instant::now();
                    let freed = warden_sandbox::release_free_memory();
                    (freed, started.elapsed())
                })
                .await;
                match trimmed {
                    Ok((freed, took)) => {
                        tracing::debug!(freed, ?took, "freed memory given back to the system")
                    }
                    Err(_) => return,
                }
                // The next trim a whole period after this one, however late this one was.
                tick.reset();
            }
        });
    }
}

impl Service {
    /// Whether no request is in flight now or at a look within `wait`.
    async fn quiet_within(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(LOOK).await;
        }
        true
    }
}
