//! Outgoing HTTP (`wasi:http/outgoing-handler`), enforced per call against the install's
//! effective network grant.
//!
//! The order of checks, each a denial the guest sees as `HTTP-request-denied` (never a trap)
//! and that is recorded as a [`Denial`](crate::Denial) naming `scheme://host:port` (never the
//! path, query or body, which may carry secrets):
//!
//! 1. Allowlist, before any name lookup or socket: the scheme must be http or https, the host
//!    must parse as a [`RequestHost`] (numeric spellings such as `127.1`, user info and non-ASCII
//!    are refused), and some `allowed_hosts` entry must admit the scheme, host and port
//!    (explicit or the scheme's default). An IP literal is classified here too ([`addr`]).
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
//! Caps: a response body over the extension's `max_response_bytes` is cut with
//! `HTTP-response-body-size` (streamed, never buffered whole); connect, first-byte and
//! between-bytes timeouts (the call's own deadline bounds everything); at most
//! [`MAX_CONCURRENT_REQUESTS`] requests in flight per call. Request and response body bytes
//! are counted into the call report's `egress_bytes`.

pub mod addr;
mod body;
pub(crate) mod handler;
mod resolve;

use std::net::{IpAddr, SocketAddr};
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

pub use resolve::{Lookup, Resolver, SystemResolver};

use crate::caps::CallCaps;
use crate::state::{Denials, allow, record};
use body::Metered;

/// Outgoing requests one call may have in flight at once; more are denied.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;
/// Time to resolve a name.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to connect (TCP, then TLS and the HTTP handshake), at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time from sending the request to the response head, at most.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without any response body data, at most.
pub const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// A request that passed the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    scheme: Scheme,
    host: RequestHost,
    port: u16,
    /// The authority as the guest wrote it (for the `Host` header).
    authority: String,
}

impl Target {
    fn describe(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Why a request was refused, and what it tried to reach (`scheme://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub target: String,
    pub reason: String,
}

/// The allowlist check: pure, no name lookup, no socket.
pub(crate) fn admit(uri: &http::Uri, grant: Option<&EffectiveNetwork>) -> Result<Target, Refusal> {
    let scheme_text = uri.scheme_str().unwrap_or("");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let raw_host = uri.authority().map(|a| a.host()).unwrap_or("");
    let scheme = match scheme_text {
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        _ => None,
    };
    let port = match uri.authority().and_then(|a| a.port()) {
        Some(p) => p.as_u16(),
        None => scheme.map(Scheme::default_port).unwrap_or(0),
    };
    let refuse = |reason: String| Refusal {
        target: format!("{scheme_text}://{raw_host}:{port}"),
        reason,
    };
    let Some(scheme) = scheme else {
        return Err(refuse(format!(
            "scheme {scheme_text:?} is not allowed; use http or https"
        )));
    };
    if authority.is_empty() {
        return Err(refuse("the request names no host".into()));
    }
    if authority.contains('@') {
        return Err(refuse("the authority contains user info".into()));
    }
    if port == 0 {
        return Err(refuse("port 0 is not allowed".into()));
    }
    let host = RequestHost::parse(raw_host).map_err(|e| refuse(e.to_string()))?;
    let target = Target {
        scheme,
        host,
        port,
        authority: authority.to_string(),
    };
    let refuse = |reason: String| Refusal {
        target: target.describe(),
        reason,
    };
    let Some(grant) = grant else {
        return Err(refuse("network access is not granted".into()));
    };
    let listed = grant
        .allowed_hosts
        .iter()
        .any(|h| h.matches(scheme, &target.host, port, &grant.allowed_ports));
    if !listed {
        return Err(refuse("not in the allowed hosts".into()));
    }
    if let RequestHost::Ip(ip) = target.host {
        addr::check(ip, &grant.allow_networks)
            .map_err(|why| refuse(format!("non-public address ({why})")))?;
    }
    Ok(target)
}

/// Picks the first permitted address among all that a name resolved to.
pub(crate) fn choose(addrs: &[IpAddr], allow: &[ipnet::IpNet]) -> Result<IpAddr, String> {
    let mut first_refusal = None;
    for ip in addrs {
        match addr::check(*ip, allow) {
            Ok(()) => return Ok(ip.to_canonical()),
            Err(why) => {
                first_refusal.get_or_insert_with(|| format!("{ip}: {why}"));
            }
        }
    }
    Err(match first_refusal {
        Some(detail) => format!("resolves to a non-public address ({detail})"),
        None => "resolves to no address".into(),
    })
}

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
    resolver: Arc<dyn Resolver>,
    denials: Denials,
    in_flight: Arc<Semaphore>,
    bytes: Arc<AtomicU64>,
    max_response: u64,
}

impl EgressHooks {
    pub(crate) fn new(
        caps: &CallCaps,
        denials: Denials,
        bytes: Arc<AtomicU64>,
        max_response: u64,
    ) -> Self {
        EgressHooks {
            network: caps.network.clone(),
            resolver: Arc::clone(&caps.resolver),
            denials,
            in_flight: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            bytes,
            max_response,
        }
    }
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
                record(&self.denials, "http", &r.target, Some(r.reason));
                return denied();
            }
        };
        let Some(grant) = grant else {
            return denied();
        };
        let Ok(slot) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            record(
                &self.denials,
                "http",
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
            denials: Arc::clone(&self.denials),
            bytes: Arc::clone(&self.bytes),
            max_response: self.max_response,
            slot: Arc::new(slot),
            options,
        };
        Box::new(job.send(request))
    }
}

/// One admitted request, on its way.
struct Job {
    target: Target,
    grant: Arc<EffectiveNetwork>,
    resolver: Arc<dyn Resolver>,
    denials: Denials,
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
                        record(&self.denials, "http", &self.target.describe(), Some(reason));
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

        allow(&self.denials, "http", &self.target.describe());
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
        let response = response.map(move |incoming| {
            Metered::new(incoming, bytes, cap, |cap| {
                Error::HttpResponseBodySize(Some(cap))
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

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn nothing_is_admitted_without_a_grant() {
        let r = admit(&uri("http://example.com/secret?token=1"), None).unwrap_err();
        assert_eq!(r.target, "http://example.com:80");
        assert!(!r.target.contains("secret"));
    }

    #[test]
    fn allowlist_names_schemes_and_ports() {
        let g = grant(
            &["*.acme.test", "api.other.test:8443", "https://secure.test"],
            &[],
            &[],
        );
        let ok = |s: &str| admit(&uri(s), Some(&g));
        let t = ok("http://api.acme.test/x").unwrap();
        assert_eq!(t.describe(), "http://api.acme.test:80");
        assert!(ok("https://a.b.acme.test/").is_ok());
        assert!(ok("http://API.ACME.TEST./").is_ok());
        assert!(ok("http://api.other.test:8443/").is_ok());
        assert!(ok("https://secure.test/").is_ok());
        for bad in [
            "http://acme.test/",
            "http://evilacme.test/",
            "http://acme.test.evil.test/",
            "http://api.acme.test:8080/",
            "http://api.other.test/",
            "http://secure.test/",
            "https://secure.test:8443/",
            "ftp://api.acme.test/",
            "http://user@api.acme.test/",
            "http://api.acme.test../",
        ] {
            assert!(ok(bad).is_err(), "{bad} should be refused");
        }
        let r = ok("http://evilacme.test:80/p?q").unwrap_err();
        assert_eq!(r.target, "http://evilacme.test:80");
        assert_eq!(r.reason, "not in the allowed hosts");
    }

    #[test]
    fn numeric_spellings_and_private_literals_are_refused_before_any_lookup() {
        let g = grant(&["*"], &[], &[]);
        for bad in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://127.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:a00:1::1]/",
            "http://10.0.0.1/",
        ] {
            assert!(
                admit(&uri(bad), Some(&g)).is_err(),
                "{bad} should be refused"
            );
        }
        assert!(admit(&uri("http://93.184.216.34/"), Some(&g)).is_ok());
        let local = grant(&["*"], &[], &["127.0.0.0/8"]);
        assert!(admit(&uri("http://127.0.0.1:8080/"), Some(&local)).is_err()); // port
        let local = grant(&["*"], &[8080], &["127.0.0.0/8"]);
        assert!(admit(&uri("http://127.0.0.1:8080/"), Some(&local)).is_ok());
    }

    #[test]
    fn choose_takes_the_first_permitted_address() {
        let ips = |l: &[&str]| -> Vec<IpAddr> { l.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(
            choose(&ips(&["127.0.0.1", "93.184.216.34"]), &[]),
            Ok("93.184.216.34".parse().unwrap())
        );
        let e = choose(&ips(&["127.0.0.1", "::1"]), &[]).unwrap_err();
        assert!(e.starts_with("resolves to a non-public address"), "{e}");
        assert_eq!(
            choose(
                &ips(&["::ffff:127.0.0.1"]),
                &["127.0.0.0/8".parse().unwrap()]
            ),
            Ok("127.0.0.1".parse().unwrap())
        );
        assert!(choose(&[], &[]).is_err());
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

    fn hooks(grant: Option<EffectiveNetwork>, resolver: Arc<Stuck>) -> (EgressHooks, Denials) {
        let denials = Denials::default();
        let caps = CallCaps {
            network: grant.map(Arc::new),
            resolver,
            ..CallCaps::default()
        };
        let h = EgressHooks::new(&caps, Arc::clone(&denials), Arc::default(), 1024);
        (h, denials)
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
        let (mut h, denials) = hooks(
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
        assert_eq!(denials.denials().len(), 4);
        assert_eq!(none_denials.denials().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_per_call_are_capped() {
        let resolver = Arc::new(Stuck::default());
        let (mut h, denials) = hooks(
            Some(grant(&["api.acme.test"], &[], &[])),
            Arc::clone(&resolver),
        );
        let mut pending: Vec<_> = (0..MAX_CONCURRENT_REQUESTS)
            .map(|_| send(&mut h, "http://api.acme.test/"))
            .collect();
        let over = send(&mut h, "http://api.acme.test/").await;
        assert!(matches!(over, Err(Error::HttpRequestDenied)));
        {
            let d = denials.denials();
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].target, "http://api.acme.test:80");
            assert!(d[0].reason.as_deref().unwrap().contains("in flight"));
        }
        // Finishing (here: dropping) one frees its slot.
        pending.pop();
        let mut next = send(&mut h, "http://api.acme.test/");
        let polled = futures_poll_once(&mut next).await;
        assert!(polled.is_none(), "admitted, waiting on the resolver");
        assert_eq!(denials.denials().len(), 1);
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
