//! Remote extensions (`kind = "remote"`): an install's client (`warden_remote::Remote`) and
//! the egress rules every call of it passes first.
//!
//! At load: the operator's `[policy.remote]` must admit the endpoint's host and port (else the
//! load is refused, naming the endpoint), the bundle's CA file (if any) must read, and the
//! install's client certificate (`Tenant::set_client_identity`, kept encrypted with the
//! secrets under [`CLIENT_IDENTITY`]) is taken. At each call: the name is resolved with the
//! host's resolver (recorded as a use, `dns:NAME`), the first address that is public or in the
//! policy's `allow_networks` is taken (else a denial), the connection is recorded as a use
//! (`remote:ENDPOINT`), and a refused server key is recorded as a denial with the keys the
//! server presented. Everything the call did is in its report, as for any extension.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use warden_bundle::Bundle;
use warden_call::{CallError, CallOutcome, CallReport, Capability, Ledger};
use warden_manifest::{Limits, Policy, RemoteEndpoint, RequestHost, Scheme, SecretName};
use warden_net::Resolver;
use warden_remote::{CallLimits, ClientIdentity, Remote, RemoteError};
use warden_runtime::CallCaps;

use crate::error::HostError;

/// The secret name under which an install's client certificate and key are kept (PEM, the
/// certificates then the key). Manifests may not name secrets `WARDEN_*`.
pub const CLIENT_IDENTITY: &str = "WARDEN_CLIENT_IDENTITY";

/// How long a name lookup may take, within the call's deadline.
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn identity_name() -> Result<SecretName, HostError> {
    CLIENT_IDENTITY
        .parse()
        .map_err(|e| HostError::Remote(format!("{CLIENT_IDENTITY}: {e}")))
}

/// A remote install: its client and where it may connect.
pub(crate) struct RemoteInstall {
    remote: Remote,
    allow_networks: Arc<[ipnet::IpNet]>,
    resolver: Arc<dyn Resolver>,
}

impl RemoteInstall {
    pub(crate) fn new(
        bundle: &Bundle,
        identity: Option<&ClientIdentity>,
        policy: &Policy,
        resolver: Arc<dyn Resolver>,
    ) -> Result<RemoteInstall, HostError> {
        let manifest = bundle.manifest();
        let Some((endpoint, options)) = manifest
            .extension
            .entry
            .remote()
            .zip(manifest.remote.as_ref())
        else {
            return Err(HostError::Remote(
                "the bundle is not a remote extension's".into(),
            ));
        };
        admitted(endpoint, policy)?;
        let ca = options.ca.as_ref().map(|_| bundle.entry());
        let remote = Remote::new(endpoint, &options.pins, ca, identity)
            .map_err(|e| HostError::Remote(e.to_string()))?;
        Ok(RemoteInstall {
            remote,
            allow_networks: policy.allow_networks.clone().into(),
            resolver,
        })
    }

    pub(crate) async fn call_rpc(
        &self,
        limits: &Limits,
        caps: &CallCaps,
        method: &str,
        input: &[u8],
    ) -> CallOutcome<Vec<u8>> {
        let started = Instant::now();
        let ledger = Ledger::default();
        let result = if input.len() as u64 > limits.max_request_bytes.bytes() {
            Err(CallError::TooLarge {
                what: "input",
                size: input.len() as u64,
                limit: limits.max_request_bytes,
            })
        } else {
            let call = self.call(&ledger, limits, method, input);
            match tokio::time::timeout(limits.max_execution_time, call).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout(limits.max_execution_time)),
            }
        };
        let redactor = caps.redactor.clone().unwrap_or_default();
        let (denials, uses, limit_hits) = ledger.report(&redactor);
        CallOutcome {
            result,
            report: CallReport {
                duration: started.elapsed(),
                egress_bytes: input.len() as u64,
                denials,
                uses,
                limits: limit_hits,
                ..CallReport::default()
            },
        }
    }

    async fn call(
        &self,
        ledger: &Ledger,
        limits: &Limits,
        method: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let endpoint = self.remote.endpoint();
        let target = format!("remote:{endpoint}");
        let addr = self.address(ledger, endpoint, &target).await?;
        ledger.allow(Capability::Network, &target);
        let call_limits = CallLimits {
            timeout: limits.max_execution_time,
            max_response: limits.max_response_bytes.bytes(),
        };
        match self.remote.call(addr, method, input, &call_limits).await {
            Ok(out) => Ok(out),
            Err(e) => Err(self.failed(ledger, &target, e, limits)),
        }
    }

    /// The address to connect to: the endpoint's IP, or the first address its name resolves
    /// to that is public or in the policy's `allow_networks`.
    async fn address(
        &self,
        ledger: &Ledger,
        endpoint: &RemoteEndpoint,
        target: &str,
    ) -> Result<SocketAddr, CallError> {
        let deny = |reason: String| {
            ledger.deny(Capability::Network, target, Some(reason.clone()));
            CallError::Remote(format!("{endpoint}: {reason}"))
        };
        let ips = match &endpoint.host {
            RequestHost::Ip(ip) => vec![*ip],
            RequestHost::Name(name) => {
                ledger.allow(Capability::Network, &format!("dns:{name}"));
                match tokio::time::timeout(DNS_TIMEOUT, self.resolver.lookup(name)).await {
                    Ok(Ok(ips)) => ips,
                    Ok(Err(_)) | Err(_) => {
                        return Err(CallError::Remote(format!(
                            "{endpoint}: the name could not be resolved"
                        )));
                    }
                }
            }
        };
        match warden_net::choose(&ips, &self.allow_networks) {
            Ok(ip) => Ok(SocketAddr::new(ip, endpoint.port)),
            Err(reason) => Err(deny(reason)),
        }
    }

    /// The call's error for what the client said; a refused server key is also a denial.
    fn failed(&self, ledger: &Ledger, target: &str, e: RemoteError, limits: &Limits) -> CallError {
        match e {
            RemoteError::Timeout(_) => CallError::Timeout(limits.max_execution_time),
            RemoteError::TooLarge { .. } => {
                ledger.limit(
                    Capability::Network,
                    target,
                    format!("the answer is over {}", limits.max_response_bytes),
                );
                CallError::TooLarge {
                    what: "result",
                    size: limits.max_response_bytes.bytes().saturating_add(1),
                    limit: limits.max_response_bytes,
                }
            }
            RemoteError::Extension { code, message } => CallError::Extension { code, message },
            RemoteError::Pin(pin) => {
                ledger.deny(Capability::Network, target, Some(pin.to_string()));
                CallError::Remote(pin.to_string())
            }
            RemoteError::Certificate(_) => {
                ledger.deny(Capability::Network, target, Some(e.to_string()));
                CallError::Remote(e.to_string())
            }
            other => CallError::Remote(other.to_string()),
        }
    }
}

/// The operator's `[policy.remote]` must admit the endpoint's host and port.
fn admitted(endpoint: &RemoteEndpoint, policy: &Policy) -> Result<(), HostError> {
    let allowed = policy
        .remote
        .allowed_hosts
        .iter()
        .any(|h| h.matches(Scheme::Https, &endpoint.host, endpoint.port, &[443]));
    if allowed {
        return Ok(());
    }
    Err(HostError::Remote(format!(
        "the operator's policy does not allow the endpoint {endpoint} ([policy.remote] \
         allowed_hosts)"
    )))
}
