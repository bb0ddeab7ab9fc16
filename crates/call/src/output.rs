//! Guest output as the host reports it: lines of stdout, stderr and `wasi:logging`, escaped so
//! they cannot forge log lines or terminal sequences.

use crate::text::escape;

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

#[cfg(test)]
mod tests {
    use super::*;

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
