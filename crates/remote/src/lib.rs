//! Remote extensions (`kind = "remote"`): the client side of a call to a service elsewhere.
//!
//! A [`Remote`] is made once per install from the manifest's endpoint and pins, the bundle's
//! CA file (if any) and the install's client certificate (if the operator issued one). A call
//! ([`Remote::call`]) goes to an address the host has already checked (the operator's
//! `[policy.remote]` and the address classification are the host's, as for every egress), on
//! a connection of the client's pool (`pool`: reused, at most `max_connections`) or a new one
//! speaking TLS 1.3 to a server that must present a pinned key (`tls`), posts one JSON-RPC 2.0
//! request and reads the answer, all under the call's deadline, with the answer held to the
//! call's response cap before it is parsed.
//!
//! The JSON-RPC form (`https://` endpoints), one POST to the endpoint's path:
//!
//! ```text
//! → {"jsonrpc":"2.0","id":N,"method":"call","params":{"method":"render","input":"<base64>"}}
//! ← {"jsonrpc":"2.0","id":N,"result":{"output":"<base64>"}}
//! ← {"jsonrpc":"2.0","id":N,"error":{"code":-32000,"message":"...","data":{"code":"not-found"}}}
//! ```
//!
//! Before its answer the remote may answer with a host request (`{"jsonrpc":"2.0","id":"h1",
//! "method":"kv.get","params":{..}}`, the process extensions' host requests): the caller's
//! [`HostApi`] answers it (`warden_process::dispatch`), and the answer is POSTed back on the
//! same connection, until the call's answer comes.
//!
//! The gRPC form (`grpcs://` endpoints) is the unary `warden.extension.v1.Extension/Call`
//! over HTTP/2 ([`grpc`]), on the same pinned TLS.
//!
//! No Wasmtime and no `unsafe` here; the host maps [`RemoteError`] to its call errors.

pub mod claims;
mod der;
pub mod grpc;
mod jsonrpc;
mod pool;
mod proxy;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use warden_manifest::{RemoteEndpoint, RemoteProtocol, RequestHost, SpkiPin};
use warden_process::budget::{CallBudget, FREE_PER_CALL};
use warden_process::{HostApi, RequestBudget};

use crate::pool::{Got, Pool};

pub use tls::{ClientIdentity, PinMismatch, SetupError, pin_of};

/// How long a call may wait to connect, within its own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Host requests (callbacks) one JSON-RPC call may make before its answer.
const MAX_HOST_REQUESTS: usize = 1000;
/// Bytes of host requests a gRPC session may read besides its reply.
const SESSION_EXTRA_BYTES: usize = 64 << 20;
/// How often an HTTP/2 connection is pinged, and how long a ping may wait for its answer.
const H2_PING_EVERY: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections a client keeps at most unless told otherwise.
const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Bytes of an error message from the remote kept.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// What a call may take and give.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// The whole call: connect, handshake, request, answer.
    pub timeout: Duration,
    /// The largest output (decoded).
    pub max_response: u64,
}

/// Why a call did not give an output.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server presented no pinned key.
    #[error(transparent)]
    Pin(PinMismatch),
    /// Its certificate is expired, not yet valid, for another name, or not from the CA.
    #[error("the server's certificate was refused: {0}")]
    Certificate(String),
    /// The TLS handshake failed otherwise (the server refused this host's client
    /// certificate, or asked for one it does not have; no TLS 1.3; ...).
    #[error("the TLS handshake failed: {0}")]
    Handshake(String),
    #[error("connecting to {addr} failed: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is larger than the {limit} bytes a call may return")]
    TooLarge { limit: u64 },
    /// The answer is not a JSON-RPC answer to this request.
    #[error("the answer is not valid: {0}")]
    Protocol(String),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// It asked more of this host than the install's budget of host requests has left: a
    /// limit of this host's, not a failure of the remote's.
    #[error("{}", warden_process::budget::exceeded(*per_second))]
    OverBudget { per_second: u32 },
    /// The install's client was made anew (its certificate changed) since this one was taken:
    /// nothing was sent; the call may start again with the new client.
    #[error("the client certificate changed during the call")]
    Stale,
    /// The extension's own error (a JSON-RPC error object).
    #[error("{message}")]
    Extension { code: String, message: String },
}

/// One install's client: the endpoint, and the TLS configuration with its pins, CA and client
/// certificate.
pub struct Remote {
    endpoint: RemoteEndpoint,
    tls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    next_id: AtomicU64,
    pool: Arc<Pool>,
    /// This client's generation in the pool (see `pool.rs`).
    generation: u64,
    /// Host requests all calls of the install may make (its [`Connections`]'s).
    requests: Arc<RequestBudget>,
}

/// An install's connections, shared by the clients it makes one after the other (a new
/// client certificate makes a new [`Remote`] on the same connections: see
/// [`Remote::on`]).
/// Their calls also share one budget of host requests: each is served by this host's own
/// threads, so calling again must not bring more.
#[derive(Clone)]
pub struct Connections {
    pool: Arc<Pool>,
    requests: Arc<RequestBudget>,
}

impl Connections {
    /// At most `max` (at least 1) connections open at once, busy or idle; 1000 host requests
    /// a second.
    pub fn new(max: usize) -> Connections {
        Connections::of(Pool::new(max))
    }

    /// [`Connections::new`], closing unused connections after `idle` (30 s by default).
    pub fn with_idle(max: usize, idle: Duration) -> Connections {
        Connections::of(Pool::new(max).with_idle_for(idle))
    }

    fn of(pool: Pool) -> Connections {
        Connections {
            pool: Arc::new(pool),
            requests: Arc::default(),
        }
    }

    /// Host requests from `budget` (an install's, kept across its reloads).
    pub fn sharing_requests(mut self, budget: Arc<RequestBudget>) -> Connections {
        self.requests = budget;
        self
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("endpoint", &self.endpoint.to_string())
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// The client of an endpoint whose server must present one of `pins` (and, with `ca_pem`,
    /// lead to that CA), authenticating with `identity` when given.
    pub fn new(
        endpoint: &RemoteEndpoint,
        pins: &[SpkiPin],
        ca_pem: Option<&[u8]>,
        identity: Option<&ClientIdentity>,
    ) -> Result<Remote, SetupError> {
        let server_name = match &endpoint.host {
            RequestHost::Name(n) => ServerName::try_from(n.clone())
                .map_err(|e| SetupError::Tls(format!("the host {n:?}: {e}")))?,
            RequestHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let pool = Arc::new(Pool::new(DEFAULT_MAX_CONNECTIONS));
        Ok(Remote {
            requests: Arc::default(),
            endpoint: endpoint.clone(),
            tls: tls::client_config(pins, ca_pem, identity, endpoint.protocol)?,
            server_name,
            next_id: AtomicU64::new(1),
            generation: pool.next_generation(),
            pool,
        })
    }

    /// At most `n` (at least 1) connections open to the remote at once, busy or idle (see
    /// the pool's text in `pool.rs`).
    #[must_use]
    pub fn with_max_connections(self, n: usize) -> Remote {
        self.on(&Connections::new(n))
    }

    /// This client on `connections` (an install's), as their newest client: the older
    /// clients' connections are closed when idle, and their calls that ask for a connection
    /// from now on get [`RemoteError::Stale`].
    #[must_use]
    pub fn on(mut self, connections: &Connections) -> Remote {
        self.pool = Arc::clone(&connections.pool);
        self.requests = Arc::clone(&connections.requests);
        self.generation = self.pool.next_generation();
        self
    }

    pub fn endpoint(&self) -> &RemoteEndpoint {
        &self.endpoint
    }

    /// Calls `method` with `input` on the server at `addr` (an address of the endpoint's
    /// host the caller has checked), within `limits`.
    pub async fn call(
        &self,
        addr: SocketAddr,
        method: &str,
        input: &[u8],
        limits: &CallLimits,
    ) -> Result<Vec<u8>, RemoteError> {
        self.call_as(addr, method, input, limits, None, None).await
    }

    /// [`Remote::call`], telling the remote who the call is for with `bearer` (signed claims,
    /// [`claims::ClaimsKey::token`]) as `authorization: Bearer ...`, and answering the host
    /// requests a JSON-RPC remote makes before its answer with `host` (none: each refused).
    pub async fn call_as(
        &self,
        addr: SocketAddr,
        method: &str,
        input: &[u8],
        limits: &CallLimits,
        bearer: Option<&str>,
        host: Option<&dyn HostApi>,
    ) -> Result<Vec<u8>, RemoteError> {
        let call = Call {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            method,
            input,
            bearer,
            host,
        };
        within(limits.timeout, self.exchange(addr, &call, limits)).await
    }

    /// Sends `request` (an HTTP request for one of the manifest's endpoints) to the endpoint's
    /// origin on the server at `addr`, its path and query unchanged, `bearer` as its
    /// authorization; the answer read whole within `limits` (any status is an answer).
    pub async fn forward(
        &self,
        addr: SocketAddr,
        request: &http::Request<Bytes>,
        limits: &CallLimits,
        bearer: Option<&str>,
    ) -> Result<http::Response<Bytes>, RemoteError> {
        let cap = usize::try_from(limits.max_response).unwrap_or(usize::MAX);
        let limit = limits.max_response;
        let authority = authority(&self.endpoint);
        let work = async {
            match self.endpoint.protocol {
                RemoteProtocol::JsonRpc => {
                    let request = || {
                        proxy::outgoing(request, &authority, bearer, false)
                            .map(|r| r.map(Full::new))
                    };
                    let (parts, body) = self.h1_exchange(addr, request, cap, limit, false).await?;
                    proxy::answer(&parts, body)
                }
                RemoteProtocol::Grpc => {
                    let out = proxy::outgoing(request, &authority, bearer, true)?
                        .map(|b| tonic::body::Body::new(Full::new(b)));
                    let mut using = H2Use::new(&self.pool, self.h2_conn(addr).await?);
                    let response = using
                        .conn
                        .sender
                        .clone()
                        .send_request(out)
                        .await
                        .map_err(|e| http_failure(&e))?;
                    let (parts, body) = response.into_parts();
                    let body = collect(body, cap, limit).await?;
                    let answer = proxy::answer(&parts, body)?;
                    using.ok = true;
                    Ok(answer)
                }
            }
        };
        within(limits.timeout, work).await
    }

    async fn exchange(
        &self,
        addr: SocketAddr,
        call: &Call<'_>,
        limits: &CallLimits,
    ) -> Result<Vec<u8>, RemoteError> {
        match self.endpoint.protocol {
            RemoteProtocol::JsonRpc => self.json_rpc(addr, call, limits).await,
            RemoteProtocol::Grpc => self.grpc(addr, call, limits).await,
        }
    }

    /// A new TLS connection to `addr`, the server's key checked against the pins.
    async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RemoteError> {
        let connect = |reason: String| RemoteError::Connect { addr, reason };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| connect(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(Arc::clone(&self.tls))
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| tls_failure(&e))
    }

    /// The shared HTTP/2 connection to `addr`, or a new one.
    async fn h2_conn(&self, addr: SocketAddr) -> Result<Arc<pool::H2>, RemoteError> {
        let (got, _opening) = self.pool.h2(addr, self.generation).await;
        Ok(match got {
            Got::Reuse(c) => c,
            Got::Stale => return Err(RemoteError::Stale),
            Got::Slot(slot) => {
                let stream = self.connect(addr).await?;
                // Pings find a connection that went dead without a word (a hung server, a
                // dropped NAT mapping): its calls fail and the next ones open another.
                let (sender, connection) =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(H2_PING_EVERY)
                        .keep_alive_timeout(H2_PING_TIMEOUT)
                        .keep_alive_while_idle(true)
                        .handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| http_failure(&e))?;
                let held = slot.hold(addr, tokio::spawn(connection));
                let conn = Arc::new(pool::H2 { sender, held });
                self.pool.share(&conn);
                conn
            }
        })
    }

    /// The unary call; or, with `host` (a manifest that asks for callbacks), a session whose
    /// host requests `host` answers.
    async fn grpc(
        &self,
        addr: SocketAddr,
        call: &Call<'_>,
        limits: &CallLimits,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut using = H2Use::new(&self.pool, self.h2_conn(addr).await?);
        let origin = http::Uri::builder()
            .scheme("https")
            .authority(authority(&self.endpoint))
            .path_and_query("/")
            .build()
            .map_err(|e| RemoteError::Protocol(format!("the endpoint: {e}")))?;
        let Call {
            method,
            input,
            bearer,
            host,
            ..
        } = *call;
        let max = limits.max_response;
        let result = match host {
            None => {
                let channel = grpc::Channel {
                    sender: using.conn.sender.clone(),
                    cap: grpc_cap(max),
                };
                grpc::call(channel, origin, method, input, max, bearer).await
            }
            Some(host) => {
                // The body carries the host requests too, each within its own message cap.
                let channel = grpc::Channel {
                    sender: using.conn.sender.clone(),
                    cap: grpc_cap(max).saturating_add(SESSION_EXTRA_BYTES),
                };
                grpc::session(
                    channel,
                    origin,
                    method,
                    input,
                    max,
                    bearer,
                    host,
                    (MAX_HOST_REQUESTS, &self.requests),
                )
                .await
            }
        };
        // An answer, the extension's own error included: the connection is sound.
        using.ok = matches!(result, Ok(_) | Err(RemoteError::Extension { .. }));
        result
    }

    async fn json_rpc(
        &self,
        addr: SocketAddr,
        call: &Call<'_>,
        limits: &CallLimits,
    ) -> Result<Vec<u8>, RemoteError> {
        let Call {
            id,
            method,
            input,
            bearer,
            host,
        } = *call;
        // What the next POST of the call carries: the call, then each host request's answer.
        let body = Mutex::new(Bytes::from(jsonrpc::request(id, method, input)));
        let request = || {
            let mut request = http::Request::post(self.endpoint.path.as_str())
                .header(http::header::HOST, authority(&self.endpoint))
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json");
            if let Some(token) = bearer {
                request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let next = body.lock().unwrap_or_else(PoisonError::into_inner).clone();
            request
                .body(Full::new(next))
                .map_err(|e| RemoteError::Protocol(format!("the request: {e}")))
        };
        let cap = jsonrpc::body_cap(limits.max_response);
        let mut conn = None;
        let mut host_requests = 0usize;
        let mut budget = CallBudget::new(&self.requests, FREE_PER_CALL);
        loop {
            let (c, _, answer) = self
                .h1_round(addr, conn.take(), &request, cap, limits.max_response, true)
                .await?;
            conn = c;
            match jsonrpc::message(&answer, id, limits.max_response)? {
                jsonrpc::Message::Answer(result) => {
                    // Answered as it must be: the connection may carry the install's next call
                    // (one that answered nonsense may not).
                    let sound = matches!(result, Ok(_) | Err(RemoteError::Extension { .. }));
                    if let (true, Some(conn)) = (sound, conn) {
                        self.give_back(conn).await;
                    }
                    return result;
                }
                jsonrpc::Message::HostRequest {
                    id: hid,
                    method: asked,
                    params,
                } => {
                    host_requests += 1;
                    if host_requests > MAX_HOST_REQUESTS {
                        return Err(RemoteError::Protocol(format!(
                            "more than {MAX_HOST_REQUESTS} host requests in one call"
                        )));
                    }
                    if !budget.request(answer.len()) {
                        return Err(over_rate(&self.requests));
                    }
                    let outcome = match host {
                        Some(api) => warden_process::dispatch(api, &asked, params.as_deref()).await,
                        None => Err(warden_process::HostError::denied(
                            "this call takes no host requests",
                        )),
                    };
                    // The answer goes back on the same connection, with the call's claims.
                    let reply = jsonrpc::host_answer(&hid, &outcome);
                    budget.answered(reply.len());
                    *body.lock().unwrap_or_else(PoisonError::into_inner) = Bytes::from(reply);
                    // Without a connection (the server closed it) the call cannot go on.
                    if conn.is_none() {
                        return Err(RemoteError::Protocol(
                            "the server closed the connection of a call it asked something of"
                                .into(),
                        ));
                    }
                }
            }
        }
    }

    /// Sends `request()` on one of the pool's HTTP/1.1 connections to `addr` (or a new one)
    /// and reads the answer whole, its body held to `cap` bytes (else [`RemoteError::TooLarge`]
    /// naming `limit`); with `ok_only`, any status but 200 is [`RemoteError::Status`]. A
    /// connection whose answer was read whole goes back to the pool.
    async fn h1_exchange(
        &self,
        addr: SocketAddr,
        request: impl Fn() -> Result<http::Request<Full<Bytes>>, RemoteError>,
        cap: usize,
        limit: u64,
        ok_only: bool,
    ) -> Result<(http::response::Parts, Bytes), RemoteError> {
        let (conn, parts, body) = self
            .h1_round(addr, None, request, cap, limit, ok_only)
            .await?;
        if let Some(conn) = conn {
            self.give_back(conn).await;
        }
        Ok((parts, body))
    }

    /// One request and its answer read whole, on `held` (a connection this call already
    /// used: the request goes on it or not at all) or on one from the pool (or a new one).
    /// The connection comes back unless the server is closing it.
    async fn h1_round(
        &self,
        addr: SocketAddr,
        held: Option<pool::H1>,
        request: impl Fn() -> Result<http::Request<Full<Bytes>>, RemoteError>,
        cap: usize,
        limit: u64,
        ok_only: bool,
    ) -> Result<(Option<pool::H1>, http::response::Parts, Bytes), RemoteError> {
        let (conn, response) = match held {
            Some(mut conn) => {
                // Ready once the last answer's end was read by the connection's task.
                conn.sender.ready().await.map_err(|e| http_failure(&e))?;
                match conn.sender.send_request(request()?).await {
                    Ok(response) => (conn, response),
                    Err(e) => return Err(http_failure(&e)),
                }
            }
            None => loop {
                match self.pool.h1(addr, self.generation).await {
                    Got::Reuse(mut conn) => {
                        match conn.sender.try_send_request(request()?).await {
                            Ok(response) => break (conn, response),
                            // The server closed the idle connection before the request went
                            // out: it was not sent, so it goes again (each time on another
                            // connection, the last a new one).
                            Err(e) if e.message().is_some() => continue,
                            Err(e) => return Err(http_failure(e.error())),
                        }
                    }
                    Got::Stale => return Err(RemoteError::Stale),
                    Got::Slot(slot) => {
                        let conn = self.h1_connect(addr, slot).await?;
                        break self.json_rpc_first(conn, request()?).await?;
                    }
                }
            },
        };
        if ok_only && response.status() != http::StatusCode::OK {
            return Err(RemoteError::Status(response.status().as_u16()));
        }
        let closing = response
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let (parts, body) = response.into_parts();
        let body = collect(body, cap, limit).await?;
        Ok(((!closing).then_some(conn), parts, body))
    }

    /// Puts a connection whose answer was read whole back for the install's next call.
    async fn give_back(&self, mut conn: pool::H1) {
        let _ = conn.sender.ready().await;
        self.pool.put_h1(conn);
    }

    /// A new JSON-RPC connection to `addr` in `slot`.
    async fn h1_connect(
        &self,
        addr: SocketAddr,
        slot: pool::Slot,
    ) -> Result<pool::H1, RemoteError> {
        let stream = self.connect(addr).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_failure(&e))?;
        Ok(pool::H1 {
            sender,
            held: slot.hold(addr, tokio::spawn(connection)),
        })
    }

    /// Sends the first request on a connection.
    async fn json_rpc_first(
        &self,
        mut conn: pool::H1,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(pool::H1, http::Response<hyper::body::Incoming>), RemoteError> {
        match conn.sender.send_request(request).await {
            Ok(response) => Ok((conn, response)),
            Err(e) => {
                // The connection's own end says more: in TLS 1.3 a server refuses a client
                // certificate after the handshake, with an alert the request only sees as a
                // closed connection.
                if let Ok(Err(end)) = (&mut conn.held.driver).await
                    && rustls_error(&end).is_some()
                {
                    return Err(http_failure(&end));
                }
                Err(http_failure(&e))
            }
        }
    }
}

/// `work`, or [`RemoteError::Timeout`] if it takes longer than `timeout`.
async fn within<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, RemoteError>>,
) -> Result<T, RemoteError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(RemoteError::Timeout(timeout)))
}

/// `body`, whole, if it is at most `cap` bytes (else [`RemoteError::TooLarge`] naming `limit`).
async fn collect<B>(body: B, cap: usize, limit: u64) -> Result<Bytes, RemoteError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, cap).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RemoteError::TooLarge { limit })
        }
        Err(e) => Err(RemoteError::Protocol(format!("reading the answer: {e}"))),
    }
}

/// A call on the shared HTTP/2 connection: unless it ends well (`ok`), the connection is
/// forgotten when it is dropped (a timeout drops it mid-way), and the next calls open another
/// (red team: a connection frozen by the server kept failing every call of the install).
struct H2Use<'a> {
    pool: &'a Pool,
    conn: Arc<pool::H2>,
    ok: bool,
}

impl<'a> H2Use<'a> {
    fn new(pool: &'a Pool, conn: Arc<pool::H2>) -> H2Use<'a> {
        H2Use {
            pool,
            conn,
            ok: false,
        }
    }
}

impl Drop for H2Use<'_> {
    fn drop(&mut self) {
        if !self.ok {
            self.pool.forget_h2(&self.conn);
        }
    }
}

/// One call as it goes out: its JSON-RPC id, method, input, claims and host-request answerer.
#[derive(Clone, Copy)]
struct Call<'a> {
    id: u64,
    method: &'a str,
    input: &'a [u8],
    bearer: Option<&'a str>,
    host: Option<&'a dyn HostApi>,
}

/// The most bytes of a gRPC answer's body read: the output's frame and a little more.
/// A call that asked more of this host than its install's budget has left.
fn over_rate(requests: &RequestBudget) -> RemoteError {
    RemoteError::OverBudget {
        per_second: requests.per_second(),
    }
}

fn grpc_cap(max_output: u64) -> usize {
    usize::try_from(max_output.saturating_add(64 * 1024)).unwrap_or(usize::MAX)
}

fn authority(e: &RemoteEndpoint) -> String {
    if e.port == 443 {
        e.host.to_string()
    } else {
        format!("{}:{}", e.host, e.port)
    }
}

/// The rustls error somewhere in `e`'s chain.
pub(crate) fn rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        next = err.source();
    }
    None
}

fn tls_failure(e: &std::io::Error) -> RemoteError {
    match rustls_error(e) {
        Some(r) => from_rustls(r),
        None => RemoteError::Handshake(e.to_string()),
    }
}

fn http_failure(e: &hyper::Error) -> RemoteError {
    match rustls_error(e) {
        Some(r) => from_rustls(r),
        None => RemoteError::Protocol(e.to_string()),
    }
}

pub(crate) fn from_rustls(e: &rustls::Error) -> RemoteError {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Other(other)) => {
            match other.0.downcast_ref::<PinMismatch>() {
                Some(pin) => RemoteError::Pin(pin.clone()),
                None => RemoteError::Certificate(other.0.to_string()),
            }
        }
        rustls::Error::InvalidCertificate(c) => RemoteError::Certificate(
            match c {
                C::Expired | C::ExpiredContext { .. } => "it has expired",
                C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet",
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "it does not name the endpoint's host"
                }
                C::UnknownIssuer => "it does not lead to the bundle's CA",
                C::BadSignature => "its signature does not verify",
                C::Revoked => "it is revoked",
                _ => "it is not valid",
            }
            .into(),
        ),
        rustls::Error::AlertReceived(alert) => {
            RemoteError::Handshake(format!("the server refused the connection ({alert:?})"))
        }
        other => RemoteError::Handshake(other.to_string()),
    }
}

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] at a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
