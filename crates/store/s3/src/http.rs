//! object_store's HTTP transport, ours: `hyper_util`'s pooled client over `hyper-rustls`
//! (ring, the webpki roots, HTTP/1.1). object_store's own transport is reqwest, which would
//! bring a second TLS and crypto stack (aws-lc-sys, compiled from C).
//!
//! It follows object_store's rules for what it reads from [`ClientOptions`]: plain `http://`
//! only with `allow_http` (`AWS_ALLOW_HTTP=true`), `connect_timeout`, `timeout`,
//! `read_timeout`, `pool_idle_timeout`, `pool_max_idle_per_host`. Options it cannot honour
//! (a proxy, invalid certificates allowed, HTTP/2 only) are refused when the store is built
//! rather than ignored.

use std::error::Error as StdError;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use object_store::{ClientConfigKey, ClientOptions};
use tokio::time::{Instant, Sleep};

/// The slowest upload rate a request's deadline allows for: a request may take `timeout`
/// plus one second per MiB of its body before its answer is given up on (an upload's answer
/// only comes once all of it is sent).
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 1 << 20;

/// Builds the HTTP client object_store sends its S3 requests with. Give it to
/// `AmazonS3Builder::with_http_connector`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HyperConnector;

impl HttpConnector for HyperConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        for (key, what) in [
            (ClientConfigKey::ProxyUrl, "a proxy"),
            (
                ClientConfigKey::ProxyCaCertificate,
                "a proxy CA certificate",
            ),
        ] {
            if options.get_config_value(&key).is_some() {
                return Err(not_supported(what));
            }
        }
        for (key, what) in [
            (
                ClientConfigKey::AllowInvalidCertificates,
                "allowing invalid certificates",
            ),
            (ClientConfigKey::Http2Only, "HTTP/2 only"),
        ] {
            if flag(options, key) {
                return Err(not_supported(what));
            }
        }
        let allow_http = flag(options, ClientConfigKey::AllowHttp);
        let connect_timeout = duration(options, ClientConfigKey::ConnectTimeout)?;
        let timeout = duration(options, ClientConfigKey::Timeout)?;
        let read_timeout = duration(options, ClientConfigKey::ReadTimeout)?.or(timeout);

        let mut tcp = TcpConnector::new();
        // The scheme is checked by hyper-rustls (and `call`), not by the TCP connector.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        let tls = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        let tls = if allow_http {
            tls.https_or_http()
        } else {
            tls.https_only()
        };
        let https = tls.enable_http1().wrap_connector(tcp);

        let mut client = Client::builder(TokioExecutor::new());
        client
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if let Some(idle) = duration(options, ClientConfigKey::PoolIdleTimeout)? {
            client.pool_idle_timeout(idle);
        }
        if let Some(max) = options.get_config_value(&ClientConfigKey::PoolMaxIdlePerHost) {
            let max = max
                .parse::<usize>()
                .map_err(|e| bad_option("pool_max_idle_per_host", e))?;
            client.pool_max_idle_per_host(max);
        }
        Ok(HttpClient::new(HyperService {
            client: client.build(https),
            allow_http,
            timeout,
            read_timeout,
        }))
    }
}

struct HyperService {
    client: Client<HttpsConnector<TcpConnector>, HttpRequestBody>,
    allow_http: bool,
    /// Until the answer's head arrives (plus the body's time at the slowest rate allowed).
    timeout: Option<Duration>,
    /// Longest wait for the next piece of an answer's body.
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for HyperService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperService")
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl HttpService for HyperService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !self.allow_http && req.uri().scheme() != Some(&Scheme::HTTPS) {
            // Not retried: it fails the same way every time.
            return Err(HttpError::new(
                HttpErrorKind::Unknown,
                Message("plain http is refused; set AWS_ALLOW_HTTP=true to allow it"),
            ));
        }
        let sending = req.body().content_length() as u64;
        let answer = self.client.request(req);
        let answer = match self.timeout {
            Some(t) => {
                let limit = t + Duration::from_secs(sending / MIN_UPLOAD_BYTES_PER_SEC);
                tokio::time::timeout(limit, answer).await.map_err(|_| {
                    HttpError::new(HttpErrorKind::Timeout, Message("no answer in time"))
                })?
            }
            None => answer.await,
        };
        let answer = answer.map_err(classify)?;
        let (parts, body) = answer.into_parts();
        let body = IdleTimeout {
            inner: body,
            limit: self.read_timeout,
            timer: self.read_timeout.map(|t| Box::pin(tokio::time::sleep(t))),
        };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// A response body that fails when no piece of it arrives for `limit`.
struct IdleTimeout {
    inner: Incoming,
    limit: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let (Some(timer), Some(limit)) = (this.timer.as_mut(), this.limit) {
                    timer.as_mut().reset(Instant::now() + limit);
                }
                Poll::Ready(frame.map(|f| f.map_err(|e| HttpError::new(body_error_kind(&e), e))))
            }
            Poll::Pending => match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Some(Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    Message("the answer's body stalled"),
                )))),
                _ => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A fixed error message.
#[derive(Debug)]
struct Message(&'static str);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for Message {}

/// The kind object_store's retries go by: connection failures and dropped connections are
/// retried, the rest is not (the same refinement it does for reqwest's errors).
fn classify(e: hyper_util::client::legacy::Error) -> HttpError {
    let kind = if e.is_connect() {
        HttpErrorKind::Connect
    } else {
        cause_kind(&e).unwrap_or(HttpErrorKind::Request)
    };
    HttpError::new(kind, e)
}

fn body_error_kind(e: &hyper::Error) -> HttpErrorKind {
    if e.is_timeout() {
        return HttpErrorKind::Timeout;
    }
    cause_kind(e).unwrap_or(HttpErrorKind::Interrupted)
}

/// The kind named by the first telling cause in `e`'s chain (itself included).
fn cause_kind(e: &(dyn StdError + 'static)) -> Option<HttpErrorKind> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Some(HttpErrorKind::Timeout);
            }
            if h.is_closed() || h.is_incomplete_message() || h.is_body_write_aborted() {
                return Some(HttpErrorKind::Interrupted);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::TimedOut => return Some(HttpErrorKind::Timeout),
                K::ConnectionAborted | K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof => {
                    return Some(HttpErrorKind::Interrupted);
                }
                _ => {}
            }
        }
        next = e.source();
    }
    None
}

fn not_supported(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{what} is not supported by warden's S3 client").into(),
    }
}

fn bad_option(name: &str, e: impl std::fmt::Display) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: format!("client option {name}: {e}").into(),
    }
}

/// A boolean client option, read as object_store reads it.
fn flag(options: &ClientOptions, key: ClientConfigKey) -> bool {
    options.get_config_value(&key).is_some_and(|v| truthy(&v))
}

/// object_store's `str_is_truthy`.
pub(crate) fn truthy(v: &str) -> bool {
    ["true", "1", "on", "yes", "y"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

/// A duration option (`30s`, `5 seconds`, ...); `None` when unset or disabled.
fn duration(
    options: &ClientOptions,
    key: ClientConfigKey,
) -> object_store::Result<Option<Duration>> {
    match options.get_config_value(&key) {
        None => Ok(None),
        Some(text) => humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| bad_option(key.as_ref(), e)),
    }
}
