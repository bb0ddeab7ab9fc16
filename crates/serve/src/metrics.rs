//! Prometheus metrics in the text format. Labels are bounded: routes are the service's
//! route names, and tenant/extension pairs come only from calls that reached an install.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), Counts>>,
    calls: Mutex<BTreeMap<(String, String, &'static str), Counts>>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    n: u64,
    seconds: f64,
}

/// The route family of a path (never the path itself: labels stay few).
pub(crate) fn route_of(path: &str) -> &'static str {
    if path.starts_with("/api/ext/") {
        "gateway"
    } else if path == "/v1/execute" {
        "execute"
    } else if path.starts_with("/v1/admin/") {
        "admin"
    } else if path.starts_with("/ext-ui/") {
        "ui"
    } else if path == "/metrics" {
        "metrics"
    } else if path == "/healthz" || path == "/readyz" {
        "health"
    } else {
        "other"
    }
}

impl Metrics {
    pub(crate) fn request(&self, route: &'static str, status: u16, took: Duration) {
        let mut m = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let c = m.entry((route, status)).or_default();
        c.n += 1;
        c.seconds += took.as_secs_f64();
    }

    /// One finished call of an installed extension (`outcome`: ok or an error code).
    pub(crate) fn call(
        &self,
        tenant: &str,
        extension: &str,
        outcome: &'static str,
        took: Duration,
    ) {
        let mut m = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let c = m
            .entry((tenant.to_string(), extension.to_string(), outcome))
            .or_default();
        c.n += 1;
        c.seconds += took.as_secs_f64();
    }

    pub(crate) fn render(&self, in_flight: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP warden_http_requests_total Requests answered, by route and status.\n# TYPE warden_http_requests_total counter\n");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((route, status), c) in &requests {
            let _ = writeln!(
                out,
                "warden_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                c.n
            );
        }
        out.push_str("# HELP warden_http_request_seconds_sum Time spent answering, by route and status.\n# TYPE warden_http_request_seconds_sum counter\n");
        for ((route, status), c) in &requests {
            let _ = writeln!(
                out,
                "warden_http_request_seconds_sum{{route=\"{route}\",status=\"{status}\"}} {}",
                c.seconds
            );
        }
        out.push_str("# HELP warden_calls_total Extension calls, by tenant, extension and outcome.\n# TYPE warden_calls_total counter\n");
        let calls = self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((t, e, o), c) in &calls {
            let _ = writeln!(
                out,
                "warden_calls_total{{tenant=\"{t}\",extension=\"{e}\",outcome=\"{o}\"}} {}",
                c.n
            );
        }
        out.push_str("# HELP warden_call_seconds_sum Time in extension calls.\n# TYPE warden_call_seconds_sum counter\n");
        for ((t, e, o), c) in &calls {
            let _ = writeln!(
                out,
                "warden_call_seconds_sum{{tenant=\"{t}\",extension=\"{e}\",outcome=\"{o}\"}} {}",
                c.seconds
            );
        }
        out.push_str("# HELP warden_requests_in_flight Requests being answered now.\n# TYPE warden_requests_in_flight gauge\n");
        let _ = writeln!(out, "warden_requests_in_flight {in_flight}");
        out
    }
}
