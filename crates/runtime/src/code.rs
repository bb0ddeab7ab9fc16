//! Where a component's native code comes from: the code cache (`warden-codecache`: entries
//! under a MAC, loaded only from bytes verified in memory) or a compile, and what the engine
//! counts of both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::world::WorldKind;

/// Where a prepared component's native code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// Loaded from the code cache, its MAC checked: nothing was compiled.
    Cache,
    /// Compiled for this load (and stored in the code cache, if the runtime has one).
    Compiled {
        /// The cache held an entry for this component that was not loaded, and why.
        rejected: Option<CacheRejection>,
    },
}

/// A code cache entry that was found and not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRejection {
    /// The entry and the reason, one line.
    pub message: Arc<str>,
    /// Its MAC did not match: someone other than this host wrote it (worth an alert).
    pub tampering: bool,
}

impl From<&warden_codecache::Rejected> for CacheRejection {
    fn from(r: &warden_codecache::Rejected) -> Self {
        CacheRejection {
            message: Arc::from(r.to_string()),
            tampering: r.reason.is_tampering(),
        }
    }
}

/// What an engine's loads did with compiled code, counted since the engine started (shared by
/// the runtimes that share the engine).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CodeStats {
    /// Components compiled (in this process or in its compile child).
    pub compiled: u64,
    /// Components loaded from the code cache.
    pub cache_hits: u64,
    /// Cache entries found and not loaded (see [`CacheRejection`]).
    pub cache_rejected: u64,
    /// Cache entries written.
    pub stored: u64,
    /// Cache entries that could not be written (the compiled component was used all the same).
    pub store_failed: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    compiled: AtomicU64,
    cache_hits: AtomicU64,
    cache_rejected: AtomicU64,
    stored: AtomicU64,
    store_failed: AtomicU64,
}

impl Counters {
    pub(crate) fn compiled(&self) {
        self.compiled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.cache_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stored(&self, ok: bool) {
        let n = if ok { &self.stored } else { &self.store_failed };
        n.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> CodeStats {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CodeStats {
            compiled: n(&self.compiled),
            cache_hits: n(&self.cache_hits),
            cache_rejected: n(&self.cache_rejected),
            stored: n(&self.stored),
            store_failed: n(&self.store_failed),
        }
    }
}

/// The world of compiled code loaded from the cache, by the pre-compile check's own rule
/// (`precheck::world_of`) over its top-level instance exports: the bytes are not read again.
pub(crate) fn world_of(component: &Component, engine: &Engine) -> Option<WorldKind> {
    let ty = component.component_type();
    let instances: Vec<&str> = ty
        .exports(engine)
        .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name)
        .collect();
    crate::precheck::world_of(instances.into_iter())
}
