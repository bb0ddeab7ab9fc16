//! The service's logs, on stderr: JSON lines when stderr is not a terminal (a collector reads
//! them), readable text when it is. `WARDEN_LOG` filters them (`tracing` directives such as
//! `debug` or `info,warden::guest=warn`); by default `info`, without the audit records, which
//! are the audit log's (`WARDEN_LOG=info,warden::audit=info` adds them).

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

const DEFAULT: &str = "info,warden::audit=off";

pub fn init() -> Result<()> {
    let directives = std::env::var("WARDEN_LOG").unwrap_or_else(|_| DEFAULT.to_string());
    let filter = EnvFilter::builder()
        .parse(&directives)
        .with_context(|| format!("WARDEN_LOG={directives:?} is not a list of log directives"))?;
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
