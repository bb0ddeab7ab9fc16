//! The service's logs, on stderr: JSON lines when stderr is not a terminal (a collector reads
//! them), readable text when it is. `WARDEN_LOG` filters them (`tracing` directives such as
//! `debug` or `info,warden::guest=warn`); by default `info`, without the audit records, which
//! are the audit log's (`WARDEN_LOG=info,warden::audit=info` adds them). Wasmtime's and
//! hyper's own lines stay at `info` and above (see [`CAPPED`]).

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

const DEFAULT: &str = "info,warden::audit=off";

/// Crates whose debug and trace lines quote what a guest sends (URLs with their query,
/// headers) as is, before warden's redaction of secret values: never below `info`, whatever
/// `WARDEN_LOG` says (red team: a secret in a fetched URL's query reached the log at
/// `trace`).
const CAPPED: [&str; 4] = ["wasmtime=info", "hyper=info", "hyper_util=info", "h2=info"];

pub fn init() -> Result<()> {
    let directives = std::env::var("WARDEN_LOG").unwrap_or_else(|_| DEFAULT.to_string());
    let filter = filter(&directives)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let set = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    // Set once per process; a second call (tests) keeps the first.
    let _ = set;
    Ok(())
}

/// `directives`, with [`CAPPED`] on top: a directive naming a capped crate or one of its
/// modules is dropped first (a more specific directive would win over the cap).
fn filter(directives: &str) -> Result<EnvFilter> {
    let kept: Vec<&str> = directives
        .split(',')
        .filter(|d| {
            let target = d.split(['[', '=']).next().unwrap_or("").trim();
            let is_level = ["trace", "debug", "info", "warn", "error", "off"]
                .iter()
                .any(|l| target.eq_ignore_ascii_case(l));
            is_level
                || !CAPPED
                    .iter()
                    .filter_map(|c| c.split('=').next())
                    .any(|c| target.starts_with(c))
        })
        .collect();
    let directives = kept.join(",");
    let mut filter = EnvFilter::builder()
        .parse(&directives)
        .with_context(|| format!("WARDEN_LOG={directives:?} is not a list of log directives"))?;
    for cap in CAPPED {
        filter = filter.add_directive(cap.parse().context("a built-in log directive")?);
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn wasmtime_and_hyper_stay_at_info_whatever_is_asked() {
        for asked in [
            "trace",
            "wasmtime_wasi_http=trace,trace",
            "trace,hyper=trace",
        ] {
            let buf = Buf::default();
            let out = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(filter(asked).unwrap())
                .with_writer(move || out.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(target: "wasmtime_wasi_http::types", "GET /x?token=s3cret");
                tracing::debug!(target: "hyper::proto", "header: s3cret");
                tracing::info!(target: "wasmtime_wasi_http::types", "info line");
                tracing::trace!(target: "warden::guest", "warden trace line");
            });
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("s3cret"), "{asked}: {text}");
            assert!(text.contains("info line"), "{asked}: {text}");
            assert!(text.contains("warden trace line"), "{asked}: {text}");
        }
        assert!(filter("not a [directive").is_err());
    }
}
