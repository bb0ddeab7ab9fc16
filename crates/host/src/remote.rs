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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use warden_bundle::Bundle;
use warden_call::{CallError, CallOutcome, CallReport, Capability, HostFailure, Ledger};
use warden_manifest::{
    ExtensionId, Limits, Policy, RemoteEndpoint, RemoteProtocol, RequestHost, Scheme, SecretName,
    TenantName,
};
use warden_net::Resolver;
use warden_remote::claims::ClaimsKey;
use warden_remote::{CallLimits, ClientIdentity, Connections, Remote, RemoteError};
use warden_runtime::{CallCaps, HostRequests};
use warden_secrets::SecretValue;

use crate::error::HostError;
use crate::secrets::HostSecrets;

/// The secret name under which an install's client certificate and key are kept (PEM, the
/// certificates then the key). Manifests may not name secrets `WARDEN_*`.
pub const CLIENT_IDENTITY: &str = "WARDEN_CLIENT_IDENTITY";

/// How long a name lookup may take, within the call's deadline.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Failures in a row (no connection, no handshake, no answer in time, no valid answer) that
/// open an install's circuit: its calls are then refused at once, for [`OPEN_FOR`], instead
/// of each waiting on a remote that is down.
const FAILURES_TO_OPEN: u32 = 5;
const OPEN_FOR: Duration = Duration::from_secs(10);

/// A call's client was replaced (a new certificate) before it sent anything.
struct Stale;

/// What one call showed of the remote's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Answered,
    Failed,
    Unknown,
}

/// A call let through the breaker; tells it the call's outcome when dropped (a call dropped
/// part-way keeps `Failed`).
struct Attempt<'a> {
    install: &'a RemoteInstall,
    outcome: Option<Health>,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(health) = self.outcome.take() {
            self.install.breaker().record(health, Instant::now());
        }
    }
}

/// One install's circuit breaker. Closed: calls go through, failures are counted. Open: calls
/// are refused until `open_until`; then one call goes through (half-open), and its outcome
/// closes the circuit or opens it again.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// A call let through after the circuit was open, not yet finished.
    trying: bool,
}

impl Breaker {
    /// Whether a call may go now; else how long until one may.
    fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.open_until {
            Some(until) if now < until => Err(until - now),
            Some(_) if self.trying => Err(Duration::from_secs(1)),
            Some(_) => {
                self.trying = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// What the call that was let through came to.
    fn record(&mut self, health: Health, now: Instant) {
        self.trying = false;
        match health {
            Health::Unknown => return,
            Health::Answered => {
                self.failures = 0;
                self.open_until = None;
                return;
            }
            Health::Failed => {}
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= FAILURES_TO_OPEN || self.open_until.is_some() {
            self.open_until = Some(now + OPEN_FOR);
        }
    }
}

pub(crate) fn identity_name() -> Result<SecretName, HostError> {
    CLIENT_IDENTITY
        .parse()
        .map_err(|e| HostError::Remote(format!("{CLIENT_IDENTITY}: {e}")))
}

/// A remote install: its client and where it may connect.
pub(crate) struct RemoteInstall {
    /// The client, made again when the install's client certificate changes.
    remote: Mutex<Arc<Remote>>,
    /// What the client was made from, to make it again.
    pins: Vec<warden_manifest::SpkiPin>,
    ca: Option<Vec<u8>>,
    /// Whether the manifest asks for key-value, secrets or calls: a gRPC remote's calls are
    /// then sessions that carry host requests (a JSON-RPC one may always send them).
    callbacks: bool,
    /// The endpoint's form (it never changes for an install).
    protocol: RemoteProtocol,
    /// Its connections (`[policy.remote] max_connections` of them at most), shared by the
    /// clients it makes one after the other: a new certificate's client closes the old one's
    /// idle connections, and the old one's calls still waiting for a connection start again
    /// with the new one.
    connections: Connections,
    /// Where the client certificate is kept, and the one the client has now: read again at
    /// every call, so that a certificate the operator sets (on any runner of a fleet) is used
    /// from the next call.
    identity: IdentitySource,
    current: Mutex<Option<SecretValue>>,
    allow_networks: Arc<[ipnet::IpNet]>,
    resolver: Arc<dyn Resolver>,
    breaker: Mutex<Breaker>,
    claims: Arc<ClaimsKey>,
}

/// An install's client certificate, wherever it is kept.
pub(crate) struct IdentitySource {
    pub(crate) secrets: Arc<HostSecrets>,
    pub(crate) tenant: TenantName,
    pub(crate) extension: ExtensionId,
}

impl IdentitySource {
    /// The PEM set for the install (the transient one first), if any.
    pub(crate) fn read(&self) -> Result<Option<SecretValue>, HostError> {
        let name = identity_name()?;
        let transient = self
            .secrets
            .transient
            .read()
            .map_err(|_| HostError::Poisoned("secret table"))?
            .get(&(self.tenant.clone(), self.extension.clone(), name.clone()))
            .cloned();
        match transient {
            Some(v) => Ok(Some(v)),
            None => self
                .secrets
                .store
                .get(&self.tenant, &self.extension, &name)
                .map_err(|e| HostError::Remote(format!("the client certificate: {e}"))),
        }
    }
}

fn identity(pem: Option<&SecretValue>) -> Result<Option<ClientIdentity>, HostError> {
    pem.map(|v| {
        let bytes = v.expose().as_bytes();
        ClientIdentity::from_pem(bytes, bytes).map_err(|e| HostError::Remote(e.to_string()))
    })
    .transpose()
}

impl RemoteInstall {
    pub(crate) fn new(
        bundle: &Bundle,
        source: IdentitySource,
        policy: &Policy,
        resolver: Arc<dyn Resolver>,
        claims: Arc<ClaimsKey>,
        requests: Arc<warden_process::RequestBudget>,
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
        let ca = options.ca.as_ref().map(|_| bundle.entry().to_vec());
        let pem = source.read()?;
        let remote = Remote::new(
            endpoint,
            &options.pins,
            ca.as_deref(),
            identity(pem.as_ref())?.as_ref(),
        )
        .map_err(|e| HostError::Remote(e.to_string()))?;
        let connections =
            Connections::new(policy.remote.max_connections as usize).sharing_requests(requests);
        let remote = remote.on(&connections);
        let asks = &manifest.permissions;
        let callbacks = asks.kv || !asks.secrets.is_empty() || !asks.calls.is_empty();
        Ok(RemoteInstall {
            callbacks,
            protocol: endpoint.protocol,
            connections,
            remote: Mutex::new(Arc::new(remote)),
            pins: options.pins.clone(),
            ca,
            identity: source,
            current: Mutex::new(pem),
            allow_networks: policy.allow_networks.clone().into(),
            resolver,
            breaker: Mutex::default(),
            claims,
        })
    }

    pub(crate) async fn call_rpc(
        &self,
        limits: &Limits,
        caps: &CallCaps,
        method: &str,
        input: &[u8],
    ) -> CallOutcome<Vec<u8>> {
        // A JSON-RPC remote may ask things of the host before it answers: the process
        // extensions' host requests, under this call's grants and records.
        let ledger = caps.ledger.clone();
        let host = HostRequests::new(caps, limits.max_response_bytes.bytes(), ledger.clone());
        let api = (self.callbacks || self.protocol == RemoteProtocol::JsonRpc).then(|| host.api());
        self.run(
            ledger,
            Some(&host),
            limits,
            caps,
            input.len(),
            |remote, addr, call, claims| async move {
                remote
                    .call_as(addr, method, input, &call, Some(&claims), api)
                    .await
            },
        )
        .await
    }

    /// Proxies `request` (for one of the manifest's endpoints that names no method) to the
    /// endpoint's origin: its path and query unchanged, the call's claims as its
    /// authorization, any status the remote answers given back.
    pub(crate) async fn call_http(
        &self,
        limits: &Limits,
        caps: &CallCaps,
        request: http::Request<bytes::Bytes>,
    ) -> CallOutcome<http::Response<bytes::Bytes>> {
        // A tunnel or an echo of the request is nothing an endpoint answers (red team: a
        // CONNECT's 200 came back as an open-ended answer).
        if matches!(
            *request.method(),
            http::Method::CONNECT | http::Method::TRACE
        ) {
            return CallOutcome {
                result: Err(CallError::Invalid(format!(
                    "{} is not proxied to a remote extension",
                    request.method()
                ))),
                report: CallReport::default(),
            };
        }
        let request = &request;
        self.run(
            caps.ledger.clone(),
            None,
            limits,
            caps,
            request.body().len(),
            |remote, addr, call, claims| async move {
                remote.forward(addr, request, &call, Some(&claims)).await
            },
        )
        .await
    }

    /// One call of either kind: the request's size, the breaker, the address, the claims,
    /// `send`, and the records of it all.
    #[allow(clippy::too_many_arguments)]
    async fn run<T, F, Fut>(
        &self,
        ledger: Ledger,
        host: Option<&HostRequests>,
        limits: &Limits,
        caps: &CallCaps,
        sent: usize,
        send: F,
    ) -> CallOutcome<T>
    where
        F: Fn(Arc<Remote>, SocketAddr, CallLimits, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, RemoteError>>,
    {
        let started = Instant::now();
        let result = if sent as u64 > limits.max_request_bytes.bytes() {
            Err(CallError::TooLarge {
                what: "input",
                size: sent as u64,
                limit: limits.max_request_bytes,
            })
        } else if let Err(wait) = self.breaker().allow(Instant::now()) {
            // Refused at once: the client as it is names the endpoint (nothing is read).
            let endpoint = self
                .remote
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .endpoint()
                .to_string();
            ledger.deny(
                Capability::Network,
                &format!("remote:{endpoint}"),
                Some(format!(
                    "the circuit is open: the last {FAILURES_TO_OPEN} calls failed"
                )),
            );
            Err(CallError::Unavailable(HostFailure::new(format!(
                "the remote extension at {endpoint} failed {FAILURES_TO_OPEN} calls in a row; \
                 calls resume in {}s",
                wait.as_secs().max(1)
            ))))
        } else {
            // Whatever happens to this call, the breaker hears of it, or a half-open circuit
            // would wait on it forever. A call dropped before it ends (its caller went away)
            // says nothing of the remote: were it a failure, any client that hangs up could
            // open an install's circuit for every caller (red team).
            let mut attempt = Attempt {
                install: self,
                outcome: Some(Health::Unknown),
            };
            let call = self.call(&ledger, limits, send);
            let result = match tokio::time::timeout(limits.max_execution_time, call).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout(limits.max_execution_time)),
            };
            attempt.outcome = Some(match &result {
                // The remote did not answer as it must. An answer over the cap is an answer (a
                // fact about that request, as a client asking for a big resource shows).
                Err(CallError::Remote(_) | CallError::Timeout(_)) => Health::Failed,
                // This host's own failures (reading the client certificate) say nothing of
                // the remote either way.
                Err(CallError::Host(_)) => Health::Unknown,
                // An answer, the extension's own error included: the remote is up.
                _ => Health::Answered,
            });
            drop(attempt);
            result
        };
        let redactor = caps.redactor.clone().unwrap_or_default();
        let (denials, uses, limit_hits) = ledger.report(&redactor);
        CallOutcome {
            result: result.map_err(|e| redactor.error(e)),
            report: CallReport {
                duration: started.elapsed(),
                egress_bytes: (sent as u64)
                    .saturating_add(host.map_or(0, HostRequests::egress_bytes)),
                logs: host.map(HostRequests::logs).unwrap_or_default(),
                denials,
                uses,
                limits: limit_hits,
                ..CallReport::default()
            },
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client, made again first if the install's client certificate changed.
    fn client_now(&self) -> Result<Arc<Remote>, CallError> {
        let failed = |e: HostError| CallError::host_caused("reading the client certificate", e);
        let pem = self.identity.read().map_err(failed)?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
        if *current != pem {
            let fresh = Remote::new(
                remote.endpoint(),
                &self.pins,
                self.ca.as_deref(),
                identity(pem.as_ref()).map_err(failed)?.as_ref(),
            )
            .map_err(|e| failed(HostError::Remote(e.to_string())))?
            .on(&self.connections);
            *remote = Arc::new(fresh);
            *current = pem;
        }
        Ok(Arc::clone(&remote))
    }

    async fn call<T, F, Fut>(
        &self,
        ledger: &Ledger,
        limits: &Limits,
        send: F,
    ) -> Result<T, CallError>
    where
        F: Fn(Arc<Remote>, SocketAddr, CallLimits, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, RemoteError>>,
    {
        // Once more if the client certificate changed while the call waited for a
        // connection: nothing was sent, and the call goes with the new certificate.
        match self.call_once(ledger, limits, &send).await {
            Err(Stale) => match self.call_once(ledger, limits, &send).await {
                Err(Stale) => Err(CallError::Remote(RemoteError::Stale.to_string())),
                Ok(r) => r,
            },
            Ok(r) => r,
        }
    }

    /// One try of [`RemoteInstall::call`]; `Err(Stale)` if its client was replaced before
    /// anything was sent.
    async fn call_once<T, F, Fut>(
        &self,
        ledger: &Ledger,
        limits: &Limits,
        send: &F,
    ) -> Result<Result<T, CallError>, Stale>
    where
        F: Fn(Arc<Remote>, SocketAddr, CallLimits, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, RemoteError>>,
    {
        let remote = match self.client_now() {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let endpoint = remote.endpoint();
        let target = format!("remote:{endpoint}");
        let addr = match self.address(ledger, endpoint, &target).await {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        ledger.allow(Capability::Network, &target);
        let call_limits = CallLimits {
            timeout: limits.max_execution_time,
            max_response: limits.max_response_bytes.bytes(),
        };
        // Who the call is for, signed, for this endpoint only, for a minute.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let token = self.claims.token(
            self.identity.tenant.as_str(),
            self.identity.extension.as_str(),
            &endpoint.to_string(),
            now,
            nonce,
        );
        match send(Arc::clone(&remote), addr, call_limits, token).await {
            Ok(out) => Ok(Ok(out)),
            Err(RemoteError::Stale) => Err(Stale),
            Err(e) => Ok(Err(self.failed(ledger, &target, e, limits))),
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
            // This host's limit, as for a process that asks too much (a trap): not a failure
            // of the remote, so not one its breaker counts (outside attack, session 37: 8 such
            // refusals opened the circuit for every caller of the install).
            e @ RemoteError::OverBudget { .. } => CallError::Trap(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_circuit_opens_after_failures_in_a_row_and_closes_on_a_success() {
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert!(b.allow(t0).is_ok());
            b.record(Health::Failed, t0);
        }
        // A success in between starts the count again; a host failure changes nothing.
        b.record(Health::Answered, t0);
        b.record(Health::Unknown, t0);
        for _ in 0..FAILURES_TO_OPEN {
            assert!(b.allow(t0).is_ok());
            b.record(Health::Failed, t0);
        }
        assert!(b.allow(t0 + Duration::from_secs(1)).is_err());
        // Half-open: one call goes, a second waits for it.
        let later = t0 + OPEN_FOR + Duration::from_millis(1);
        assert!(b.allow(later).is_ok());
        assert!(b.allow(later).is_err());
        // It fails: open again at once.
        b.record(Health::Failed, later);
        assert!(b.allow(later + Duration::from_secs(1)).is_err());
        let again = later + OPEN_FOR + Duration::from_millis(1);
        assert!(b.allow(again).is_ok());
        b.record(Health::Answered, again);
        assert!(b.allow(again).is_ok());
        // A half-open call whose outcome is unknown lets the next one try.
        let mut c = Breaker {
            failures: FAILURES_TO_OPEN,
            open_until: Some(t0),
            trying: false,
        };
        assert!(c.allow(later).is_ok());
        c.record(Health::Unknown, later);
        assert!(c.allow(later).is_ok());
    }
}
