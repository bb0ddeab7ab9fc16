//! A body wrapper that counts the bytes passing through, cuts the stream at a cap (with an
//! error, never by buffering), and optionally fails when no data arrives for too long.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::Error;

pub(crate) struct Metered<B> {
    inner: B,
    /// Bytes of this call's egress (shared by every request of the call).
    counter: Arc<AtomicU64>,
    seen: u64,
    cap: u64,
    /// The error for a body over `cap`.
    over: fn(u64) -> Error,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Keeps the request's concurrency slot taken while the body is alive.
    _slot: Option<Arc<OwnedSemaphorePermit>>,
    /// Told once when the body is cut at `cap` (the call's ledger records the limit).
    on_cut: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
    done: bool,
}

impl<B> Metered<B> {
    pub(crate) fn new(inner: B, counter: Arc<AtomicU64>, cap: u64, over: fn(u64) -> Error) -> Self {
        Metered {
            inner,
            counter,
            seen: 0,
            cap,
            over,
            idle: None,
            _slot: None,
            on_cut: None,
            done: false,
        }
    }

    /// Calls `f` with the cap when the body is cut at it.
    pub(crate) fn on_cut(mut self, f: impl FnOnce(u64) + Send + Sync + 'static) -> Self {
        self.on_cut = Some(Box::new(f));
        self
    }

    /// Fails the body with `ConnectionReadTimeout` when no frame arrives for `timeout`.
    pub(crate) fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle = Some((timeout, Box::pin(tokio::time::sleep(timeout))));
        self
    }

    pub(crate) fn hold(mut self, slot: Arc<OwnedSemaphorePermit>) -> Self {
        self._slot = Some(slot);
        self
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.seen = this.seen.saturating_add(n);
                    if this.seen > this.cap {
                        this.done = true;
                        if let Some(f) = this.on_cut.take() {
                            f(this.cap);
                        }
                        return Poll::Ready(Some(Err((this.over)(this.cap))));
                    }
                    this.counter.fetch_add(n, Ordering::Relaxed);
                }
                if let Some((timeout, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(Instant::now() + *timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((_, sleep)) = &mut this.idle
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
