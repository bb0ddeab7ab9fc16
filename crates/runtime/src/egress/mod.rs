//! Outgoing HTTP (`wasi:http/outgoing-handler`), enforced per call against the install's
//! effective network grant.
//!
//! The order of checks, each a denial the guest sees as `HTTP-request-denied` (never a trap)
//! and that is recorded as a denial in the call's ledger naming `scheme://host:port` (never the
//! path, query or body, which may carry secrets):
//!
//! 1. Allowlist, before any name lookup or socket: the scheme must be http or https, the host
//!    must parse as a [`RequestHost`] (numeric spellings such as `127.1`, user info and non-ASCII
//!    are refused), and some `allowed_hosts` entry must admit the scheme, host and port
//!    (explicit or the scheme's default). An IP literal is classified here too (`warden_net::addr`).
//! 2. The name is resolved once ([`Resolver`]); every address is classified and the first one
//!    that is public (or inside the policy's `allow_networks`) is chosen; none = denial.
//! 3. A TCP connection is made to exactly that checked address, never to the name again, so a
//!    resolver answering differently the second time (DNS rebinding) changes nothing.
//! 4. HTTP/1.1 is spoken over it (TLS with the webpki roots for https, SNI = the original
//!    name), with `Host` set to the original authority.
//!
//! Redirects are never followed here: a 3xx reaches the guest as is, and following it is a new
//! request that goes through every check above again (so a redirect to a forbidden host, a
//! private address or a downgrade is refused, and no credentials are carried across origins by
//! the host).
//!
//! BundleLimits: a response body over the extension's `max_response_bytes` is cut with
//! `HTTP-response-body-size` (streamed, never buffered whole); connect, first-byte and
//! between-bytes timeouts (the call's own deadline bounds everything); at most
//! [`MAX_CONCURRENT_REQUESTS`] requests in flight per call. Request and response body bytes
//! are counted into the call report's `egress_bytes`.

mod body;
pub(crate) mod handler;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use warden_manifest::{EffectiveNetwork, RequestHost, Scheme};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

pub use warden_net::{Lookup, Resolver, SystemResolver};
use warden_net::{Target, admit, choose};

use crate::caps::CallCaps;
use body::Metered;
use warden_call::{Capability, Ledger, Withheld};

/// Outgoing requests one call may have in flight at once; more are denied.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;
pub use warden_net::DNS_TIMEOUT;
/// Time to connect (TCP, then TLS and the HTTP handshake), at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time from sending the request to the response head, at most.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without any response body data, at most.
pub const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

/// The `wasi:http` hooks of one call: the egress policy.
pub(crate) struct EgressHooks {
    /// The install's network grant; `None` denies every request.
    network: Option<Arc<EffectiveNetwork>>,
    /// Why there is no grant, when there is none.
    withheld: Withheld,
    resolver: Arc<dyn Resolver>,
    ledger: Ledger,
    /// Made at the first request admitted: most calls send none.
    in_flight: Option<Arc<Semaphore>>,
    bytes: Arc<AtomicU64>,
    max_response: u64,
}

impl EgressHooks {
    pub(crate) fn new(
        caps: &CallCaps,
        ledger: Ledger,
        bytes: Arc<AtomicU64>,
        max_response: u64,
    ) -> Self {
        EgressHooks {
            network: caps.network.clone(),
            withheld: caps.withheld,
            resolver: Arc::clone(&caps.resolver),
            ledger,
            in_flight: None,
            bytes,
            max_response,
        }
    }
}

/// Without a network grant, a refusal says whether the policy or the grant withheld it.
pub(crate) fn say_withheld(
    mut r: warden_net::Refusal,
    grant: Option<&EffectiveNetwork>,
    withheld: Withheld,
) -> warden_net::Refusal {
    if grant.is_none() {
        r.reason = withheld.reason(Capability::Network);
    }
    r
}

fn denied() -> Box<dyn Future<Output = SendResult> + Send> {
    Box::new(async { Err(Error::HttpRequestDenied) })
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let grant = self.network.clone();
        let target = match admit(request.uri(), grant.as_deref()) {
            Ok(t) => t,
            Err(r) => {
                let r = say_withheld(r, grant.as_deref(), self.withheld);
                self.ledger
                    .deny(Capability::Network, &r.target, Some(r.reason));
                return denied();
            }
        };
        let Some(grant) = grant else {
            return denied();
        };
        let in_flight = self
            .in_flight
            .get_or_insert_with(|| Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)));
        let Ok(slot) = Arc::clone(in_flight).try_acquire_owned() else {
            self.ledger.deny(
                Capability::Network,
                &target.describe(),
                Some(format!(
                    "more than {MAX_CONCURRENT_REQUESTS} outgoing requests in flight"
                )),
            );
            return denied();
        };
        let job = Job {
            target,
            grant,
            resolver: Arc::clone(&self.resolver),
            ledger: self.ledger.clone(),
            bytes: Arc::clone(&self.bytes),
            max_response: self.max_response,
            slot: Arc::new(slot),
            options,
        };
        // A request may change something at its destination: the call's witness first.
        Box::new(async move {
            if let Err(why) = job.ledger.before_change(Capability::Network).await {
                return Err(Error::InternalError(Some(why)));
            }
            job.send(request).await
        })
    }
}

/// One admitted request, on its way.
struct Job {
    target: Target,
    grant: Arc<EffectiveNetwork>,
    resolver: Arc<dyn Resolver>,
    ledger: Ledger,
    bytes: Arc<AtomicU64>,
    max_response: u64,
    slot: Arc<tokio::sync::OwnedSemaphorePermit>,
    options: Option<RequestOptions>,
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

fn at_most(ours: Duration, guest: Option<Duration>) -> Duration {
    guest.map_or(ours, |g| g.min(ours))
}

/// The TLS client configuration: webpki roots, ring, safe defaults. Built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        })
        .clone()
        .ok_or(Error::ConfigurationError)
}

impl Job {
    async fn send(self, request: http::Request<WasiBody>) -> SendResult {
        let ip = match &self.target.host {
            // Checked by `admit`.
            RequestHost::Ip(ip) => ip.to_canonical(),
            RequestHost::Name(name) => {
                // The lookup itself is a use of the network: a wildcard entry must not allow
                // unaudited lookups of `<data>.allowed.example`, answered or not.
                self.ledger
                    .allow(Capability::Network, &format!("dns:{name}"));
                let addrs = tokio::time::timeout(DNS_TIMEOUT, self.resolver.lookup(name))
                    .await
                    .map_err(|_| Error::DnsTimeout)?
                    .map_err(|_| Error::DnsError {
                        rcode: None,
                        info_code: None,
                    })?;
                match choose(&addrs, &self.grant.allow_networks) {
                    Ok(ip) => ip,
                    Err(reason) => {
                        self.ledger.deny(
                            Capability::Network,
                            &self.target.describe(),
                            Some(reason),
                        );
                        return Err(Error::HttpRequestDenied);
                    }
                }
            }
        };
        let connect_timeout = at_most(
            CONNECT_TIMEOUT,
            self.options.and_then(|o| o.connect_timeout),
        );
        let first_byte = at_most(
            FIRST_BYTE_TIMEOUT,
            self.options.and_then(|o| o.first_byte_timeout),
        );
        let between_bytes = at_most(
            BETWEEN_BYTES_TIMEOUT,
            self.options.and_then(|o| o.between_bytes_timeout),
        )
        .max(Duration::from_millis(1));

        self.ledger
            .allow(Capability::Network, &self.target.describe());
        // Exactly the checked address: the name is not looked up again.
        let addr = SocketAddr::new(ip, self.target.port);
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match self.target.scheme {
            Scheme::Http => Box::new(tcp),
            Scheme::Https => {
                let name = match &self.target.host {
                    RequestHost::Name(n) => rustls::pki_types::ServerName::try_from(n.clone())
                        .map_err(|_| Error::TlsProtocolError)?,
                    RequestHost::Ip(ip) => rustls::pki_types::ServerName::from(*ip),
                };
                let connector = tokio_rustls::TlsConnector::from(tls_config()?);
                let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| Error::ConnectionTimeout)?
                    .map_err(Error::Tls)?;
                Box::new(tls)
            }
        };
        let (mut sender, conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;

        let (mut parts, body) = request.into_parts();
        // Origin form on the wire; the authority goes into `Host`.
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let host = http::HeaderValue::from_str(&self.target.authority)
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        parts.headers.insert(http::header::HOST, host);
        let body = Metered::new(body, Arc::clone(&self.bytes), u64::MAX, |_| {
            Error::HttpRequestBodySize(None)
        });
        let request = http::Request::from_parts(parts, body);

        let send = async move {
            tokio::time::timeout(first_byte, sender.send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?
                .map_err(Error::from)
        };
        tokio::pin!(send);
        let mut conn = Some(Box::pin(conn));
        // Drive the connection while waiting for the response head.
        let response = loop {
            match conn.as_mut() {
                Some(c) => tokio::select! {
                    biased;
                    r = &mut send => break r?,
                    done = c => {
                        conn = None;
                        done.map_err(Error::from)?;
                    }
                },
                None => break (&mut send).await?,
            }
        };
        let cap = self.max_response;
        let slot = Arc::clone(&self.slot);
        let bytes = Arc::clone(&self.bytes);
        let ledger = self.ledger.clone();
        let target = self.target.describe();
        let response = response.map(move |incoming| {
            Metered::new(incoming, bytes, cap, |cap| {
                Error::HttpResponseBodySize(Some(cap))
            })
            .on_cut(move |cap| {
                ledger.limit(
                    Capability::Network,
                    &target,
                    format!("response body cut at max_response_bytes ({cap} bytes)"),
                )
            })
            .idle_timeout(between_bytes)
            .hold(slot)
            .boxed_unsync()
        });
        let slot = self.slot;
        let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
            let _slot = slot;
            match conn {
                Some(c) => c.await.map_err(Error::from),
                None => Ok(()),
            }
        });
        Ok((response, io))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use warden_manifest::AllowedHost;

    fn grant(hosts: &[&str], ports: &[u16], nets: &[&str]) -> EffectiveNetwork {
        EffectiveNetwork {
            allowed_hosts: hosts
                .iter()
                .map(|h| {
                    h.parse::<AllowedHost>()
                        .unwrap_or_else(|e| panic!("{h}: {e}"))
                })
                .collect(),
            allowed_ports: ports.to_vec(),
            allow_networks: nets
                .iter()
                .map(|n| n.parse().unwrap_or_else(|e| panic!("{n}: {e}")))
                .collect(),
        }
    }

    /// Counts lookups; never answers (a request that gets this far stays pending).
    #[derive(Default)]
    struct Stuck(std::sync::atomic::AtomicUsize);

    impl Resolver for Stuck {
        fn lookup<'a>(&'a self, _name: &'a str) -> Lookup<'a> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    fn hooks(grant: Option<EffectiveNetwork>, resolver: Arc<Stuck>) -> (EgressHooks, Ledger) {
        let ledger = Ledger::default();
        let caps = CallCaps::of(Arc::new(crate::caps::InstallCaps {
            network: grant.map(Arc::new),
            resolver,
            ..Default::default()
        }));
        let h = EgressHooks::new(&caps, ledger.clone(), Arc::default(), 1024);
        (h, ledger)
    }

    fn get(url: &str) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(url).body(body).unwrap()
    }

    fn send(h: &mut EgressHooks, url: &str) -> Pin<Box<dyn Future<Output = SendResult> + Send>> {
        Box::into_pin(h.send_request(get(url), None, Box::new(async { Ok(()) })))
    }

    #[tokio::test]
    async fn a_denied_request_returns_before_any_lookup_or_socket() {
        let resolver = Arc::new(Stuck::default());
        let (mut h, ledger) = hooks(
            Some(grant(&["api.acme.test"], &[], &[])),
            Arc::clone(&resolver),
        );
        for url in [
            "http://evil.test/",
            "http://api.acme.test:8080/",
            "http://127.1/",
            "https://user@api.acme.test/",
        ] {
            let r = send(&mut h, url).await;
            assert!(matches!(r, Err(Error::HttpRequestDenied)), "{url}");
        }
        let (mut none, none_denials) = hooks(None, Arc::clone(&resolver));
        assert!(matches!(
            send(&mut none, "http://api.acme.test/").await,
            Err(Error::HttpRequestDenied)
        ));
        assert_eq!(resolver.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(ledger.denials().len(), 4);
        assert_eq!(none_denials.denials().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_per_call_are_capped() {
        let resolver = Arc::new(Stuck::default());
        let (mut h, ledger) = hooks(
            Some(grant(&["api.acme.test"], &[], &[])),
            Arc::clone(&resolver),
        );
        let mut pending: Vec<_> = (0..MAX_CONCURRENT_REQUESTS)
            .map(|_| send(&mut h, "http://api.acme.test/"))
            .collect();
        let over = send(&mut h, "http://api.acme.test/").await;
        assert!(matches!(over, Err(Error::HttpRequestDenied)));
        {
            let d = ledger.denials();
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].target, "http://api.acme.test:80");
            assert!(d[0].reason.as_deref().unwrap().contains("in flight"));
        }
        // Finishing (here: dropping) one frees its slot.
        pending.pop();
        let mut next = send(&mut h, "http://api.acme.test/");
        let polled = futures_poll_once(&mut next).await;
        assert!(polled.is_none(), "admitted, waiting on the resolver");
        assert_eq!(ledger.denials().len(), 1);
    }

    /// Polls a future once: `None` if it is still pending.
    async fn futures_poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
