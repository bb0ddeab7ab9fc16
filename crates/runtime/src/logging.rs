//! `wasi:logging/logging@0.1.0-draft`: `log(level, context, message)` captured into the call's
//! logs (like stdout/stderr: kept up to a cap in count and bytes, the rest counted and
//! dropped), then redacted and escaped when the call reports. Never blocks, never traps.

use std::sync::Mutex;

use warden_call::text::{cut, escape};
use warden_call::{LogLevel, LogLine, Redactor, Stream};

use wasmtime::component::{HasData, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/logging",
        world: "wasi:logging/imports",
    });
}

use bindings::wasi::logging::logging;

/// Log messages kept per call; the rest are counted.
pub const MAX_LOG_MESSAGES: usize = 1_000;
/// Bytes of context and message kept per call (as for stdout and stderr).
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// A context longer than this is cut when reported: it names a group of messages, not content.
/// It is kept whole (within [`MAX_LOG_BYTES`]) until the call's values are redacted, and cut only
/// then, so a cut can never leave the start of a secret.
const MAX_CONTEXT_BYTES: usize = 256;

#[derive(Debug, Default)]
struct Kept {
    messages: Vec<(LogLevel, Vec<u8>, Vec<u8>)>,
    bytes: usize,
    dropped_messages: u64,
    dropped_bytes: u64,
}

/// One call's `wasi:logging` messages. Owned by the call's state (nothing shares it), so
/// making one allocates nothing until a message is kept.
#[derive(Debug, Default)]
pub(crate) struct LogCapture {
    kept: Mutex<Kept>,
}

impl LogCapture {
    pub(crate) fn push(&self, level: LogLevel, context: &str, message: &str) {
        let Ok(mut k) = self.kept.lock() else { return };
        let context = context.as_bytes();
        let size = context.len() + message.len();
        if k.messages.len() >= MAX_LOG_MESSAGES || k.bytes + size > MAX_LOG_BYTES {
            k.dropped_messages += 1;
            k.dropped_bytes = k.dropped_bytes.saturating_add(size as u64);
            return;
        }
        k.bytes += size;
        k.messages
            .push((level, context.to_vec(), message.as_bytes().to_vec()));
    }

    /// The messages as log lines: redacted (a value split across consecutive messages is
    /// found too), then escaped, then a line saying how much was dropped.
    pub(crate) fn lines(&self, redactor: &Redactor) -> Vec<LogLine> {
        let Ok(mut k) = self.kept.lock() else {
            return Vec::new();
        };
        let k = std::mem::take(&mut *k);
        // Most calls log nothing: no redaction passes (each takes the redactor's lock).
        if k.messages.is_empty() && k.dropped_messages == 0 {
            return Vec::new();
        }
        let contexts: Vec<&[u8]> = k.messages.iter().map(|m| m.1.as_slice()).collect();
        let messages: Vec<&[u8]> = k.messages.iter().map(|m| m.2.as_slice()).collect();
        let contexts = redactor.parts(&contexts);
        let messages = redactor.parts(&messages);
        let mut out: Vec<LogLine> = k
            .messages
            .iter()
            .zip(contexts.iter().zip(&messages))
            .map(|((level, raw, _), (context, message))| LogLine {
                stream: Stream::Log(*level),
                context: Some(escape(&cut_context(redactor, raw, context))),
                text: escape(message),
            })
            .collect();
        if k.dropped_messages > 0 {
            out.push(LogLine {
                stream: Stream::Log(LogLevel::Warn),
                context: None,
                text: format!(
                    "[{} more log messages ({} bytes) dropped: log cap reached]",
                    k.dropped_messages, k.dropped_bytes
                ),
            });
        }
        out
    }
}

/// The context as reported: `redacted` (the whole context, redacted with its neighbours) if it
/// fits, otherwise `raw` cut to [`MAX_CONTEXT_BYTES`] and redacted with the rule of every cut:
/// a tail of any length that starts a value is redacted too.
fn cut_context(redactor: &Redactor, raw: &[u8], redacted: &[u8]) -> Vec<u8> {
    if raw.len() <= MAX_CONTEXT_BYTES {
        return redacted.to_vec();
    }
    // Contexts come from `&str`: cut at a character boundary.
    let text = String::from_utf8_lossy(raw);
    redactor.bytes(cut(&text, MAX_CONTEXT_BYTES).as_bytes(), true)
}

impl From<logging::Level> for LogLevel {
    fn from(l: logging::Level) -> Self {
        match l {
            logging::Level::Trace => LogLevel::Trace,
            logging::Level::Debug => LogLevel::Debug,
            logging::Level::Info => LogLevel::Info,
            logging::Level::Warn => LogLevel::Warn,
            logging::Level::Error => LogLevel::Error,
            logging::Level::Critical => LogLevel::Critical,
        }
    }
}

/// What `wasi:logging` may touch of a call: its log capture, nothing else.
pub(crate) struct LoggingView<'a> {
    pub(crate) logs: &'a LogCapture,
}

impl logging::Host for LoggingView<'_> {
    fn log(&mut self, level: logging::Level, context: String, message: String) {
        self.logs.push(level.into(), &context, &message);
    }
}

struct Logging;

impl HasData for Logging {
    type Data<'a> = LoggingView<'a>;
}

/// Links `wasi:logging/logging`, with `view` giving each call's capture.
pub(crate) fn add_to_linker<T: Send + 'static>(
    l: &mut Linker<T>,
    view: fn(&mut T) -> LoggingView<'_>,
) -> wasmtime::Result<()> {
    logging::add_to_linker::<T, Logging>(l, view)
}
