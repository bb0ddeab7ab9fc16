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
    /// Call durations per (tenant, extension), whatever the outcome.
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
}

/// Upper bounds of the call duration buckets, in seconds (the last bucket is `+Inf`).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Calls at or under each bound (not cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Outcomes (error codes) that are a limit of the install, and the limit's name.
fn limit_of(outcome: &str) -> Option<&'static str> {
    match outcome {
        "timeout" => Some("time"),
        "memory-limit" => Some("memory"),
        "fuel-exhausted" => Some("fuel"),
        // An input or output over the install's cap (the call's `too-large`).
        "too-large" | "response-too-large" => Some("size"),
        "quota-exceeded" => Some("quota"),
        "busy" => Some("concurrency"),
        _ => None,
    }
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
        drop(m);
        self.durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((tenant.to_string(), extension.to_string()))
            .or_default()
            .observe(took.as_secs_f64());
    }

    pub(crate) fn render(&self, in_flight: usize, host: &warden_host::Host) -> String {
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
        out.push_str("# HELP warden_call_duration_seconds Duration of extension calls, by tenant and extension.\n# TYPE warden_call_duration_seconds histogram\n");
        let durations = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((t, e), h) in &durations {
            let mut below = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                below += n;
                let _ = writeln!(
                    out,
                    "warden_call_duration_seconds_bucket{{tenant=\"{t}\",extension=\"{e}\",le=\"{bound}\"}} {below}"
                );
            }
            let labels = format!("tenant=\"{t}\",extension=\"{e}\"");
            let _ = writeln!(
                out,
                "warden_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\nwarden_call_duration_seconds_sum{{{labels}}} {}\nwarden_call_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
        // Timeouts and other limits that ended a call, then limits hit inside calls.
        out.push_str("# HELP warden_timeouts_total Calls stopped at their time limit.\n# TYPE warden_timeouts_total counter\n");
        for ((t, e, o), c) in &calls {
            if *o == "timeout" {
                let _ = writeln!(
                    out,
                    "warden_timeouts_total{{tenant=\"{t}\",extension=\"{e}\"}} {}",
                    c.n
                );
            }
        }
        let usage = host.usage();
        let mut limits: BTreeMap<(String, String, &'static str), u64> = BTreeMap::new();
        for ((t, e, o), c) in &calls {
            if let Some(limit) = limit_of(o) {
                *limits.entry((t.clone(), e.clone(), limit)).or_default() += c.n;
            }
        }
        for (t, e, u) in &usage {
            for (what, n) in &u.limits {
                // A memory limit that ended the call is counted by its outcome already.
                if *what != "memory" {
                    *limits
                        .entry((t.to_string(), e.to_string(), what))
                        .or_default() += n;
                }
            }
        }
        out.push_str("# HELP warden_limit_hits_total Limits reached (time, memory, fuel, concurrency, response size, a capability's cap), by tenant and extension.\n# TYPE warden_limit_hits_total counter\n");
        for ((t, e, what), n) in &limits {
            let _ = writeln!(
                out,
                "warden_limit_hits_total{{tenant=\"{t}\",extension=\"{e}\",limit=\"{what}\"}} {n}"
            );
        }
        out.push_str("# HELP warden_denials_total Capability uses refused, by tenant, extension and capability.\n# TYPE warden_denials_total counter\n");
        for (t, e, u) in &usage {
            for (capability, n) in &u.denials {
                let _ = writeln!(
                    out,
                    "warden_denials_total{{tenant=\"{t}\",extension=\"{e}\",capability=\"{capability}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP warden_egress_bytes_total Outgoing HTTP body bytes (requests and responses), by tenant and extension.\n# TYPE warden_egress_bytes_total counter\n");
        for (t, e, u) in &usage {
            let _ = writeln!(
                out,
                "warden_egress_bytes_total{{tenant=\"{t}\",extension=\"{e}\"}} {}",
                u.egress_bytes
            );
        }
        out.push_str("# HELP warden_fuel_consumed_total Fuel used by metered calls.\n# TYPE warden_fuel_consumed_total counter\n");
        for (t, e, u) in &usage {
            let _ = writeln!(
                out,
                "warden_fuel_consumed_total{{tenant=\"{t}\",extension=\"{e}\"}} {}",
                u.fuel
            );
        }
        let pool = host.pool_usage();
        out.push_str("# HELP warden_instance_pool_instances Component instances live in the pool.\n# TYPE warden_instance_pool_instances gauge\n");
        let _ = writeln!(out, "warden_instance_pool_instances {}", pool.instances);
        out.push_str("# HELP warden_instance_pool_capacity Component instances the pool can hold.\n# TYPE warden_instance_pool_capacity gauge\n");
        let _ = writeln!(out, "warden_instance_pool_capacity {}", pool.capacity);
        out.push_str("# HELP warden_instance_pool_plugins Extism plug-in instances live in the pool.\n# TYPE warden_instance_pool_plugins gauge\n");
        let _ = writeln!(out, "warden_instance_pool_plugins {}", pool.plugins);
        out.push_str("# HELP warden_prepared_components Components compiled and pre-linked in memory (installed or loaded ones; others are forgotten).\n# TYPE warden_prepared_components gauge\n");
        let _ = writeln!(
            out,
            "warden_prepared_components {}",
            host.prepared_components()
        );
        let code = host.code_stats();
        out.push_str("# HELP warden_compiles_total Components compiled (at publish and install; on a call only when not cached).\n# TYPE warden_compiles_total counter\n");
        let _ = writeln!(out, "warden_compiles_total {}", code.compiled);
        out.push_str("# HELP warden_code_cache_hits_total Components loaded compiled from the code cache.\n# TYPE warden_code_cache_hits_total counter\n");
        let _ = writeln!(out, "warden_code_cache_hits_total {}", code.cache_hits);
        out.push_str("# HELP warden_code_cache_rejected_total Code cache entries not loaded (failed their MAC or check) and compiled again.\n# TYPE warden_code_cache_rejected_total counter\n");
        let _ = writeln!(
            out,
            "warden_code_cache_rejected_total {}",
            code.cache_rejected
        );
        out.push_str("# HELP warden_audit_healthy 1 while audit records can be stored (calls are refused otherwise).\n# TYPE warden_audit_healthy gauge\n");
        let _ = writeln!(
            out,
            "warden_audit_healthy {}",
            u8::from(host.audit_healthy())
        );
        out.push_str("# HELP warden_requests_in_flight Requests being answered now.\n# TYPE warden_requests_in_flight gauge\n");
        let _ = writeln!(out, "warden_requests_in_flight {in_flight}");
        out
    }
}
