//! Test servers and certificates for remote extensions (feature `testing`): a CA, leaf
//! certificates (optionally expired, optionally for client authentication), and a TLS 1.3
//! JSON-RPC server on loopback that answers, stalls, floods, answers nonsense or fails, and
//! may require a client certificate from a CA. Used by this crate's tests and the host's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use warden_manifest::SpkiPin;

use crate::pin_of;

/// A CA: its certificate (PEM) and what signs with it.
pub struct Ca {
    pub pem: String,
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            cert,
            key,
        }
    }
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub pin: SpkiPin,
}

pub fn leaf(names: &[&str], ca: Option<&Ca>, expired: bool, client: bool) -> Leaf {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    if client {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let key = KeyPair::generate().unwrap();
    let cert = match ca {
        Some(ca) => p.signed_by(&key, &ca.cert, &ca.key).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    Leaf {
        pin: pin_of(cert.der()).unwrap(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Echoes the input; method `whoami` answers the bearer token, `fail` the extension's
    /// error `boom`, `slow` echoes after 300 ms, `stall` never answers.
    Answer,
    Stall,
    Flood,
    Malformed,
    Fails,
    /// Answers, then closes the connection 100 ms after its first answer, without a word.
    DropIdle,
    /// Answers with `connection: close` (HTTP/1.1 only).
    CloseEach,
    /// Answers, then 100 ms after its first answer stops reading and writing the connection
    /// for good, leaving it open (a hung server); new connections are served.
    Freeze,
}

/// What a server saw of its connections.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted (TLS handshake done).
    pub accepted: AtomicUsize,
    open: AtomicUsize,
    /// The most open at once.
    pub peak: AtomicUsize,
}

impl Counters {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// A connection the server is serving: counted open until dropped.
struct Open(Arc<Counters>);

impl Open {
    fn new(c: &Arc<Counters>) -> Open {
        c.accepted.fetch_add(1, Ordering::SeqCst);
        let now = c.open.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak.fetch_max(now, Ordering::SeqCst);
        Open(Arc::clone(c))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// [`server`] (or, with `grpc`, [`grpc_server`]) that counts its connections.
pub async fn counted_server(
    leaf: &Leaf,
    behaviour: Behaviour,
    grpc: bool,
) -> (SocketAddr, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let addr = serve(leaf, None, behaviour, grpc, Arc::clone(&counters)).await;
    (addr, counters)
}

/// A TLS 1.3 server on loopback answering every connection as `behaviour` says; with
/// `client_ca`, it requires a client certificate from that CA.
pub async fn server(server: &Leaf, client_ca: Option<&Ca>, behaviour: Behaviour) -> SocketAddr {
    serve(server, client_ca, behaviour, false, Arc::default()).await
}

/// [`server`] speaking gRPC (`warden.extension.v1.Extension/Call` over HTTP/2): the same
/// behaviours; `fail` answers status 2 with `warden-error-code: boom`.
pub async fn grpc_server(
    server: &Leaf,
    client_ca: Option<&Ca>,
    behaviour: Behaviour,
) -> SocketAddr {
    serve(server, client_ca, behaviour, true, Arc::default()).await
}

async fn serve(
    server: &Leaf,
    client_ca: Option<&Ca>,
    behaviour: Behaviour,
    grpc: bool,
    counters: Arc<Counters>,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                .unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = CertificateDer::pem_slice_iter(server.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = if grpc {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config));
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _open = Open::new(&counters);
                // DropIdle: the connection ends 100 ms after its first answer, without a word.
                let answered = Arc::new(tokio::sync::Notify::new());
                let told = Arc::clone(&answered);
                let lifetime = async move {
                    if !matches!(behaviour, Behaviour::DropIdle | Behaviour::Freeze) {
                        std::future::pending::<()>().await;
                    }
                    answered.notified().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                if grpc {
                    let service = service_fn(move |req| {
                        let told = Arc::clone(&told);
                        async move {
                            let answer = grpc_answer(req, behaviour).await;
                            told.notify_one();
                            answer
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), service);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = &mut conn => {}
                        () = lifetime => {}
                    }
                    if behaviour == Behaviour::Freeze {
                        // Held, never polled again: open, silent.
                        std::future::pending::<()>().await;
                    }
                    return;
                }
                // The call this connection asked something of, and how many more to ask.
                let asking = Arc::new(std::sync::Mutex::new(
                    None::<(serde_json::Value, usize, bool)>,
                ));
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let told = Arc::clone(&told);
                    let asking = Arc::clone(&asking);
                    async move {
                        if req.uri().path() != "/rpc" {
                            let (status, headers, body) = plain(req).await;
                            told.notify_one();
                            let mut r = hyper::Response::builder().status(status);
                            for (k, v) in headers {
                                r = r.header(k, v);
                            }
                            return Ok(r.body(Full::new(body)).unwrap());
                        }
                        let auth = bearer_of(req.headers());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        if let Some(answer) = callback(&v, &body, &asking) {
                            return Ok(hyper::Response::new(Full::new(Bytes::from(answer))));
                        }
                        let id = v["id"].clone();
                        let input = v["params"]["input"].as_str().unwrap().to_string();
                        let method = v["params"]["method"].as_str().unwrap().to_string();
                        if method == "slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        if method == "stall" {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        let answer = match behaviour {
                        Behaviour::Answer if method == "whoami" => serde_json::json!({
                            "jsonrpc": "2.0", "id": id,
                            "result": {"output": b64(auth.as_bytes())}
                        })
                        .to_string(),
                        Behaviour::Answer if method == "fail" => serde_json::json!({
                            "jsonrpc": "2.0", "id": id,
                            "error": {"code": -32000, "message": "failing on purpose", "data": {"code": "boom"}}
                        })
                        .to_string(),
                        Behaviour::Answer | Behaviour::DropIdle | Behaviour::CloseEach | Behaviour::Freeze => {
                            serde_json::json!({
                                "jsonrpc": "2.0", "id": id, "result": {"output": input}
                            })
                            .to_string()
                        }
                        Behaviour::Stall => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            String::new()
                        }
                        Behaviour::Flood => "x".repeat(8 << 20),
                        Behaviour::Malformed => "{\"jsonrpc\":\"2.0\",\"id\":".to_string(),
                        Behaviour::Fails => {
                            return Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(500)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            );
                        }
                    };
                        told.notify_one();
                        Ok(hyper::Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(behaviour != Behaviour::CloseEach)
                    .serve_connection(TokioIo::new(tls), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = &mut conn => {}
                    () = lifetime => {}
                }
                if behaviour == Behaviour::Freeze {
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    addr
}

type GrpcBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn grpc_body(frames: Vec<hyper::body::Frame<Bytes>>) -> GrpcBody {
    BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames.into_iter().map(Ok).collect::<Vec<_>>(),
    )))
}

/// A `Session` (callbacks, gRPC form): reads the call; `ask` (input `{"method", "params"}`)
/// sends that host request (id `h1`) and replies with the answer's JSON; `ask-forever` sends
/// `log` requests for every answer; anything else replies with its input. Frames flow both
/// ways at once, as a bidirectional stream does.
fn grpc_session(req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<GrpcBody> {
    use crate::grpc::{
        CallReply, HostRequest, SessionDown, SessionUp, session_down::Kind as Down,
        session_up::Kind as Up,
    };
    use prost::Message as _;
    let (tx, rx) = tokio::sync::mpsc::channel::<hyper::body::Frame<Bytes>>(4);
    let mut body = req.into_body();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        // The next whole message of the request body.
        let mut next = async || -> Option<SessionUp> {
            loop {
                if buf.len() >= 5 {
                    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                    if buf.len() >= 5 + len {
                        let m = SessionUp::decode(&buf[5..5 + len]).ok();
                        buf.drain(..5 + len);
                        return m;
                    }
                }
                let frame = body.frame().await?.ok()?;
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        };
        let send = |m: SessionDown| hyper::body::Frame::data(framed(&m.encode_to_vec()));
        let Some(SessionUp {
            kind: Some(Up::Call(call)),
        }) = next().await
        else {
            return;
        };
        let reply = |output: Vec<u8>| SessionDown {
            kind: Some(Down::Reply(CallReply { output })),
        };
        let ask = |id: String, method: String, params: String| SessionDown {
            kind: Some(Down::Request(HostRequest { id, method, params })),
        };
        match call.method.as_str() {
            "ask" | "ask-garbled" => {
                let asked: serde_json::Value = serde_json::from_slice(&call.input).unwrap();
                let request = ask(
                    "h1".into(),
                    asked["method"].as_str().unwrap_or("").into(),
                    asked["params"].to_string(),
                );
                if tx.send(send(request)).await.is_err() {
                    return;
                }
                let Some(SessionUp {
                    kind: Some(Up::Answer(a)),
                }) = next().await
                else {
                    return;
                };
                if call.method == "ask-garbled" {
                    // A failure whose message is the answer's value.
                    let answer: serde_json::Value =
                        serde_json::from_str(&a.answer).unwrap_or_default();
                    let value = answer["result"]["value"].as_str().unwrap_or("none");
                    let _ = tx
                        .send(trailers(&[("grpc-status", "13"), ("grpc-message", value)]))
                        .await;
                    return;
                }
                let _ = tx.send(send(reply(a.answer.into_bytes()))).await;
            }
            "ask-forever" => {
                for n in 0.. {
                    let log = ask(
                        format!("h{n}"),
                        "log".into(),
                        r#"{"level":"info","message":"again"}"#.into(),
                    );
                    if tx.send(send(log)).await.is_err() || next().await.is_none() {
                        return;
                    }
                }
            }
            _ => {
                let _ = tx.send(send(reply(call.input))).await;
            }
        }
        let _ = tx.send(trailers(&[("grpc-status", "0")])).await;
    });
    let frames =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|f| (Ok(f), rx)) },
        );
    hyper::Response::builder()
        .header("content-type", "application/grpc")
        .body(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
        .unwrap()
}

fn trailers(pairs: &[(&'static str, &str)]) -> hyper::body::Frame<Bytes> {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, http::HeaderValue::from_str(v).unwrap());
    }
    hyper::body::Frame::trailers(map)
}

fn framed(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

async fn grpc_answer(
    req: hyper::Request<hyper::body::Incoming>,
    behaviour: Behaviour,
) -> Result<hyper::Response<GrpcBody>, std::convert::Infallible> {
    use prost::Message as _;
    if req.uri().path() == crate::grpc::SESSION_PATH {
        return Ok(grpc_session(req));
    }
    if req.uri().path() != crate::grpc::CALL_PATH {
        let (status, headers, body) = plain(req).await;
        let mut r = hyper::Response::builder().status(status);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        return Ok(r
            .body(grpc_body(vec![hyper::body::Frame::data(body)]))
            .unwrap());
    }
    let auth = bearer_of(req.headers());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let call = crate::grpc::CallRequest::decode(&body[5..]).unwrap();
    if call.method == "slow" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if call.method == "stall" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let ok = |frames| {
        hyper::Response::builder()
            .header("content-type", "application/grpc")
            .body(grpc_body(frames))
            .unwrap()
    };
    Ok(match behaviour {
        Behaviour::Answer if call.method == "whoami" => {
            let reply = crate::grpc::CallReply {
                output: auth.into_bytes(),
            }
            .encode_to_vec();
            ok(vec![
                hyper::body::Frame::data(framed(&reply)),
                trailers(&[("grpc-status", "0")]),
            ])
        }
        Behaviour::Answer if call.method == "fail" => ok(vec![trailers(&[
            ("grpc-status", "2"),
            ("grpc-message", "failing on purpose"),
            ("warden-error-code", "boom"),
        ])]),
        Behaviour::Answer | Behaviour::DropIdle | Behaviour::CloseEach | Behaviour::Freeze => {
            let reply = crate::grpc::CallReply { output: call.input }.encode_to_vec();
            ok(vec![
                hyper::body::Frame::data(framed(&reply)),
                trailers(&[("grpc-status", "0")]),
            ])
        }
        Behaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ok(vec![])
        }
        Behaviour::Flood => {
            let reply = crate::grpc::CallReply {
                output: vec![b'x'; 8 << 20],
            }
            .encode_to_vec();
            ok(vec![
                hyper::body::Frame::data(framed(&reply)),
                trailers(&[("grpc-status", "0")]),
            ])
        }
        Behaviour::Malformed => ok(vec![
            hyper::body::Frame::data(Bytes::from_static(b"\0\0\0\0\x09garbage")),
            trailers(&[("grpc-status", "0")]),
        ]),
        Behaviour::Fails => hyper::Response::builder()
            .status(500)
            .body(grpc_body(vec![]))
            .unwrap(),
    })
}

/// The answer to a plain HTTP request (any path but the call's), for the proxied endpoints:
/// the body echoed; `x-ext-method`, `x-ext-target` (path and query), `x-ext-host` (`host` or
/// `:authority`), `x-ext-auth` (`authorization`) and `x-ext-headers` (the names received,
/// sorted) say what arrived; also a `set-cookie` and a `connection: x-hop` with `x-hop` (for
/// the filters to drop). Path `/status/N` answers status N, `/flood` 8 MiB, `/stall` never.
async fn plain(
    req: hyper::Request<hyper::body::Incoming>,
) -> (u16, Vec<(&'static str, String)>, Bytes) {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path().to_string();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut names: Vec<&str> = parts.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let host = match parts.uri.authority() {
        Some(a) => a.to_string(),
        None => header("host"),
    };
    let mut headers = vec![
        ("content-type", "text/plain".to_string()),
        ("x-ext-method", parts.method.to_string()),
        (
            "x-ext-target",
            parts
                .uri
                .path_and_query()
                .map_or("/".into(), |p| p.to_string()),
        ),
        ("x-ext-host", host),
        ("x-ext-auth", header("authorization")),
        ("x-ext-headers", names.join(",")),
        ("set-cookie", "session=remote".to_string()),
    ];
    if parts.version != http::Version::HTTP_2 {
        headers.push(("connection", "x-hop".to_string()));
        headers.push(("x-hop", "hop".to_string()));
    }
    if path == "/stall" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if path == "/flood" {
        return (200, headers, Bytes::from(vec![b'x'; 8 << 20]));
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    (status, headers, body)
}

/// Host requests (callbacks), on one connection: method `ask` with input `{"method", "params"}`
/// answers with that host request (id `h1`), and the POST that answers it gets the call's
/// output: that answer's JSON, whole; `ask-garbled` answers instead with something that is
/// not an answer, quoting the answer's `result.value`; `ask-forever` asks `log` again at
/// every answer.
/// `None`: not part of a callback exchange.
fn callback(
    v: &serde_json::Value,
    body: &[u8],
    asking: &std::sync::Mutex<Option<(serde_json::Value, usize, bool)>>,
) -> Option<String> {
    let log = |n: usize| {
        serde_json::json!({"jsonrpc": "2.0", "id": format!("h{n}"), "method": "log",
            "params": {"level": "info", "message": "again"}})
        .to_string()
    };
    let mut pending = asking.lock().unwrap();
    if v.get("method").is_none() {
        let (call, left, garble) = pending.take()?;
        if left > 0 {
            *pending = Some((call, left - 1, garble));
            return Some(log(left));
        }
        if garble {
            // Not an answer: the answer's value as a field name a parser will quote.
            let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
            let value = answer["result"]["value"]
                .as_str()
                .unwrap_or("none")
                .to_string();
            return Some(format!(
                r#"{{"jsonrpc":"2.0","id":{call},"result":{{"output":"","{value}":1}}}}"#
            ));
        }
        return Some(
            serde_json::json!({"jsonrpc": "2.0", "id": call, "result": {"output": b64(body)}})
                .to_string(),
        );
    }
    let method = v["params"]["method"].as_str()?;
    match method {
        "ask" | "ask-garbled" => {
            use base64::Engine as _;
            let input = base64::engine::general_purpose::STANDARD
                .decode(v["params"]["input"].as_str()?)
                .ok()?;
            let asked: serde_json::Value = serde_json::from_slice(&input).ok()?;
            *pending = Some((v["id"].clone(), 0, method == "ask-garbled"));
            Some(
                serde_json::json!({"jsonrpc": "2.0", "id": "h1",
                    "method": asked["method"], "params": asked["params"]})
                .to_string(),
            )
        }
        "ask-forever" => {
            *pending = Some((v["id"].clone(), usize::MAX, false));
            Some(log(0))
        }
        _ => None,
    }
}

/// The request's `authorization` header (the signed claims), or "" (method `whoami` answers it).
fn bearer_of(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
