//! Captured stdout/stderr of one call: kept up to a cap, the rest counted and dropped. The guest
//! never blocks and never traps because of logging.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use warden_call::output::lines;
use warden_call::{LogLine, Redactor, Stream};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Captured stdout and stderr per call, each (the rest is dropped and counted).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The lines a stream captured, redacted; nothing to redact (the usual case) costs nothing.
pub(crate) fn captured(stream: Stream, capture: &Capture, redactor: &Redactor) -> Vec<LogLine> {
    let (kept, dropped) = capture.take();
    if kept.is_empty() && dropped == 0 {
        return Vec::new();
    }
    lines(stream, &redactor.bytes(&kept, dropped > 0), dropped)
}

/// How much a guest may write in one step; any amount is accepted, this only sizes the permit.
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: u64,
}

/// A capped in-memory sink for one stream of one call.
#[derive(Debug, Clone)]
pub struct Capture {
    cap: usize,
    /// Both streams of the call, made together (one allocation per call, not two).
    bufs: Arc<[Mutex<Buffer>; 2]>,
    /// Which of them this one is.
    which: usize,
}

impl Capture {
    /// Two captures (stdout and stderr), each kept up to `cap`.
    pub fn pair(cap: usize) -> (Capture, Capture) {
        let bufs: Arc<[Mutex<Buffer>; 2]> = Arc::default();
        let one = |which| Capture {
            cap,
            bufs: Arc::clone(&bufs),
            which,
        };
        (one(0), one(1))
    }

    fn buf(&self) -> &Mutex<Buffer> {
        &self.bufs[self.which]
    }

    fn push(&self, bytes: &[u8]) {
        if let Ok(mut b) = self.buf().lock() {
            let room = self.cap.saturating_sub(b.kept.len());
            let take = room.min(bytes.len());
            b.kept.extend_from_slice(&bytes[..take]);
            b.dropped = b.dropped.saturating_add((bytes.len() - take) as u64);
        }
    }

    /// What was kept, and how many bytes were dropped past the cap.
    pub fn take(&self) -> (Vec<u8>, u64) {
        match self.buf().lock() {
            Ok(mut b) => (std::mem::take(&mut b.kept), std::mem::take(&mut b.dropped)),
            Err(_) => (Vec::new(), 0),
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_up_to_cap_and_counts_the_rest() {
        let (mut c, _) = Capture::pair(10);
        c.write(Bytes::from_static(b"hello world, more")).unwrap();
        assert_eq!(c.check_write().unwrap(), WRITE_PERMIT);
        let (kept, dropped) = c.take();
        assert_eq!(kept, b"hello worl");
        assert_eq!(dropped, 7);
    }

    #[test]
    fn the_two_captures_of_a_pair_are_kept_apart() {
        let (mut out, mut err) = Capture::pair(4);
        out.write(Bytes::from_static(b"out!!")).unwrap();
        err.write(Bytes::from_static(b"er")).unwrap();
        assert_eq!(out.take(), (b"out!".to_vec(), 1));
        assert_eq!(err.take(), (b"er".to_vec(), 0));
    }
}
