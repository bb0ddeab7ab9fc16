//! Captured stdout/stderr of one call: kept up to a cap, the rest counted and dropped. The guest
//! never blocks and never traps because of logging.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

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
    buf: Arc<Mutex<Buffer>>,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            cap,
            buf: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        if let Ok(mut b) = self.buf.lock() {
            let room = self.cap.saturating_sub(b.kept.len());
            let take = room.min(bytes.len());
            b.kept.extend_from_slice(&bytes[..take]);
            b.dropped = b.dropped.saturating_add((bytes.len() - take) as u64);
        }
    }

    /// What was kept, and how many bytes were dropped past the cap.
    pub fn take(&self) -> (Vec<u8>, u64) {
        match self.buf.lock() {
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

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// `wasi:logging`, with the level the guest gave.
    Log(LogLevel),
}

impl Stream {
    /// `stdout`, `stderr`, or `log` followed by the level (`log:info`).
    pub fn label(&self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log(l) => l.label(),
        }
    }
}

/// A `wasi:logging` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub fn label(&self) -> &'static str {
        match self {
            LogLevel::Trace => "log:trace",
            LogLevel::Debug => "log:debug",
            LogLevel::Info => "log:info",
            LogLevel::Warn => "log:warn",
            LogLevel::Error => "log:error",
            LogLevel::Critical => "log:critical",
        }
    }
}

/// One line of guest output, escaped so it cannot forge log lines or terminal sequences, with
/// secret values handed to the call redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    /// `wasi:logging` only: the context the guest gave (escaped, capped).
    pub context: Option<String>,
    pub text: String,
}

/// Splits captured bytes into escaped lines; invalid UTF-8 and control characters are escaped.
pub fn lines(stream: Stream, bytes: &[u8], dropped: u64) -> Vec<LogLine> {
    let mut out: Vec<LogLine> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| LogLine {
            stream,
            context: None,
            text: escape(l),
        })
        .collect();
    if dropped > 0 {
        out.push(LogLine {
            stream,
            context: None,
            text: format!("[{dropped} more bytes dropped: output cap reached]"),
        });
    }
    out
}

/// Escapes control characters (including ESC, CR, NUL), invisible and bidi-reordering
/// characters (as the audit log does), and invalid UTF-8.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c != '\\' && warden_audit::needs_escape(c) {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_up_to_cap_and_counts_the_rest() {
        let mut c = Capture::new(10);
        c.write(Bytes::from_static(b"hello world, more")).unwrap();
        assert_eq!(c.check_write().unwrap(), WRITE_PERMIT);
        let (kept, dropped) = c.take();
        assert_eq!(kept, b"hello worl");
        assert_eq!(dropped, 7);
    }

    #[test]
    fn lines_are_escaped() {
        let l = lines(Stream::Stdout, b"ok\n\x1b[31mred\r\nbad \xff\n\n", 3);
        let texts: Vec<&str> = l.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "ok",
                "\\u{1b}[31mred\\r",
                "bad \\xff",
                "[3 more bytes dropped: output cap reached]"
            ]
        );
    }
}
