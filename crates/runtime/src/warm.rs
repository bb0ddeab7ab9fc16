//! Instances kept between calls of one install, when the operator's policy accepts it
//! (`[policy.component] warm_calls`; off by default: every call gets a fresh instance).
//!
//! Why: a language runtime's start (CPython's, SpiderMonkey's) costs more than the call itself,
//! and a kept instance pays it once instead of on every call. The price is isolation between
//! calls: what the guest keeps in its memory survives into the next calls. So the pool is per
//! install (one tenant's install of one bundle with one grant): its instances never answer
//! another tenant, another extension or another grant, and they die with the install.
//!
//! An instance goes back to the pool only after a call that ended cleanly (an answer, or the
//! guest's own error) without its memory ever hitting the limit, and only until it has
//! answered `warm_calls` calls. Idle instances are dropped after [`IDLE_FOR`]; all of them
//! together hold at most a quarter of the engine's instance slots, and one tenant's at most a
//! sixteenth (see `Runtime::idle_slot`), so kept instances never starve fresh calls
//! of other installs, and one tenant's never take every place.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{IdleSlot, Runtime};
use crate::live::Live;

/// How long an idle instance is kept.
pub const IDLE_FOR: Duration = Duration::from_secs(10);

/// The installs whose kept instances share one place in the engine (a tenant's): cloned into
/// each of its installs' [`WarmInstances`].
#[derive(Debug, Clone, Default)]
pub struct WarmGroup(Arc<AtomicU64>);

/// One install's kept instances.
pub struct WarmInstances {
    calls: u32,
    /// Idle instances of this install's group (its tenant's), see `Runtime::idle_slot`.
    group: Arc<AtomicU64>,
    idle: Arc<Mutex<Vec<Kept>>>,
    /// Whether a task sweeps `idle` of instances kept longer than [`IDLE_FOR`].
    sweeping: AtomicBool,
}

struct Kept {
    live: Live,
    since: Instant,
    _slot: IdleSlot,
}

impl std::fmt::Debug for WarmInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmInstances")
            .field("calls", &self.calls)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl WarmInstances {
    /// The pool of an install whose instances may answer `calls` calls each, counted in
    /// `group` (one per tenant); `None` when `calls` is 0 or 1 (a
    /// fresh instance per call).
    pub fn new(calls: u32, group: &WarmGroup) -> Option<WarmInstances> {
        (calls > 1).then(|| WarmInstances {
            calls,
            group: Arc::clone(&group.0),
            idle: Arc::default(),
            sweeping: AtomicBool::new(false),
        })
    }

    /// Instances kept now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }

    /// The most recently kept instance that has not expired, made under `generation` (see
    /// `CallCaps::generation`); the others of an older generation are dropped.
    pub(crate) fn take(&self, generation: u64) -> Option<Live> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|k| k.live.generation == generation);
        while let Some(k) = idle.pop() {
            if k.since.elapsed() < IDLE_FOR {
                return Some(k.live);
            }
        }
        None
    }

    /// Keeps an instance that ended a call cleanly, unless it has answered its calls or the
    /// engine's share for kept instances is taken.
    pub(crate) fn put(&self, rt: &Runtime, live: Live) {
        if live.served >= self.calls {
            return;
        }
        let Some(slot) = rt.idle_slot(&self.group) else {
            return;
        };
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Kept {
                live,
                since: Instant::now(),
                _slot: slot,
            });
        }
        self.sweep_later();
    }

    /// Starts (once per install) the task that drops instances idle longer than
    /// [`IDLE_FOR`]; it ends with the install.
    fn sweep_later(&self) {
        crate::sweep::sweep_later(
            &self.sweeping,
            &self.idle,
            IDLE_FOR / 4,
            |k: &Kept| k.since.elapsed() >= IDLE_FOR,
            drop,
        );
    }
}
