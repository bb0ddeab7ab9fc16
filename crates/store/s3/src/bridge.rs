//! The private runtime the synchronous `BlobStore` methods run their S3 requests on.
//!
//! A call spawns its future on this runtime and waits for the answer on a std channel. Unlike
//! `Handle::block_on`, that never panics, whoever calls: `main`, a plain thread, or a
//! `spawn_blocking` task of another runtime. (Called from an async worker of another runtime
//! it would only stall that worker for the request's time; the host calls storage from
//! blocking threads.)

use std::future::Future;
use std::io;
use std::sync::mpsc;

use tokio::runtime::{Builder, Runtime};

/// Worker threads: S3 requests mostly wait on the network, and blobs are read rarely (install
/// and load) and then served from the local copy.
const WORKERS: usize = 2;

pub(crate) struct Bridge {
    /// Always `Some` until dropped (taken in `drop`).
    runtime: Option<Runtime>,
}

impl Bridge {
    pub(crate) fn new() -> io::Result<Bridge> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("warden-s3")
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Bridge {
            runtime: Some(runtime),
        })
    }

    /// Runs `fut` on the private runtime and waits for its output; `None` if the task ended
    /// without one (it panicked, or the runtime is shutting down).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let runtime = self.runtime.as_ref()?;
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The receiver is gone only if the caller is gone: nothing to tell.
            let _ = tx.send(fut.await);
        });
        rx.recv().ok()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks stop, which panics when the last handle
        // on the store is dropped inside another runtime's async context: stop in the
        // background instead (requests still in flight are abandoned; nobody waits for them).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
