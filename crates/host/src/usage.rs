//! What calls used, counted per install for the metrics: denials and limit hits by capability,
//! outgoing bytes and fuel. Labels stay bounded: installs are the operator's, capabilities a
//! fixed set.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use warden_runtime::CallReport;

use warden_manifest::{ExtensionId, TenantName};

/// One install's counts since the host started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallUsage {
    /// Capability uses refused, by capability name (`kv`, `network`, ...).
    pub denials: BTreeMap<&'static str, u64>,
    /// Limits hit, by what was limited: a capability's cap by its name, and `memory`.
    pub limits: BTreeMap<&'static str, u64>,
    /// Outgoing HTTP request and response body bytes.
    pub egress_bytes: u64,
    /// Fuel consumed by metered calls.
    pub fuel: u64,
}

#[derive(Default)]
pub(crate) struct Usage {
    by_install: Mutex<HashMap<(TenantName, ExtensionId), InstallUsage>>,
}

impl Usage {
    pub(crate) fn add(&self, tenant: &TenantName, id: &ExtensionId, report: &CallReport) {
        // Most calls use nothing counted here: they cost no lock.
        if report.denials.is_empty()
            && report.limits.is_empty()
            && !report.memory_limit_hit
            && report.egress_bytes == 0
            && report.fuel.unwrap_or(0) == 0
        {
            return;
        }
        let mut all = self
            .by_install
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let u = all.entry((tenant.clone(), id.clone())).or_default();
        for d in &report.denials {
            *u.denials.entry(d.capability.name()).or_default() += d.count;
        }
        for l in &report.limits {
            *u.limits.entry(l.capability.name()).or_default() += l.count;
        }
        if report.memory_limit_hit {
            *u.limits.entry("memory").or_default() += 1;
        }
        u.egress_bytes += report.egress_bytes;
        u.fuel += report.fuel.unwrap_or(0);
    }

    pub(crate) fn snapshot(&self) -> Vec<(TenantName, ExtensionId, InstallUsage)> {
        let all = self
            .by_install
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = all
            .iter()
            .map(|((t, x), u)| (t.clone(), x.clone(), u.clone()))
            .collect();
        out.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        out
    }
}
