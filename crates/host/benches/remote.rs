//! Per-call cost of a remote extension's JSON-RPC call through `Host::call` (name check,
//! address classification, signed claims, pinned TLS, the answer read strictly, audit records
//! to an in-memory sink), on loopback against `warden_remote::testing`'s server, interleaved
//! in one run:
//!
//! - **warden, pooled**: the install's connection reused from call to call;
//! - **warden, a connection per call**: the same install against a server that closes every
//!   connection after its answer (`connection: close`), so each call pays TCP and TLS 1.3;
//! - **peer**: a bare hyper + Rustls client posting the same JSON-RPC request on one kept-alive
//!   TLS 1.3 connection (CA-verified, no pins, no claims, no checks, no audit): the floor.
//!
//! Run: `cargo bench -p warden-host --bench remote` (`WARDEN_BENCH_CALLS=N`, default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::line;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use warden_host::{ExtensionId, Grant, Host, MemoryAudit, Policy, TrustBundle};
use warden_remote::testing::{Behaviour, Ca, Leaf, leaf, server};
use warden_trust::{SigningKey, publisher_entry};

const WARMUP: usize = 100;
const DEFAULT_CALLS: usize = 2000;
/// Calls per variant per round; the order of the variants rotates every round.
const BLOCK: usize = 50;
const INPUT: &[u8; 16] = b"0123456789abcdef";

/// A signed remote bundle for `https://127.0.0.1:PORT/rpc` pinning `pin`.
fn signed(dir: &Path, key: &SigningKey, addr: SocketAddr, pin: &Leaf) -> PathBuf {
    let stage = dir.join(format!("remote-{}", addr.port()));
    fs::create_dir_all(&stage).unwrap();
    fs::write(
        stage.join("extension.toml"),
        format!(
            "schema = 1\n\n[extension]\nid = \"vendor.bench{}\"\nversion = \"1.0.0\"\n\
             publisher = \"warden-examples\"\nkind = \"remote\"\n\
             entry = \"https://127.0.0.1:{}/rpc\"\n\n[[methods]]\nname = \"echo\"\n\n\
             [remote]\npins = [\"{}\"]\n",
            addr.port(),
            addr.port(),
            pin.pin
        ),
    )
    .unwrap();
    common::sign_stage(
        &stage,
        dir.join(format!("remote-{}.wext", addr.port())),
        key,
    )
}

async fn time_host(host: &Host, id: &ExtensionId, n: usize, out: &mut Vec<Duration>) {
    let t = host.default_tenant();
    for _ in 0..n {
        let start = Instant::now();
        let r = t.call(id, "echo", INPUT).await.unwrap();
        out.push(start.elapsed());
        assert_eq!(r.value, INPUT);
    }
}

/// The peer: one kept-alive HTTP/1.1 connection over TLS 1.3 to `addr`, trusting `ca`.
struct Peer {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    next: u64,
}

impl Peer {
    async fn connect(addr: SocketAddr, ca: &Ca) -> Peer {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Peer { sender, next: 1 }
    }

    async fn call(&mut self, input: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let id = self.next;
        self.next += 1;
        let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "call",
            "params": {"method": "echo", "input": b64.encode(input)}})
        .to_string();
        self.sender.ready().await.unwrap();
        let request = http::Request::post("/rpc")
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], id);
        b64.decode(v["result"]["output"].as_str().unwrap()).unwrap()
    }
}

async fn time_peer(peer: &mut Peer, n: usize, out: &mut Vec<Duration>) {
    for _ in 0..n {
        let start = Instant::now();
        let r = peer.call(INPUT).await;
        out.push(start.elapsed());
        assert_eq!(r, INPUT);
    }
}

fn main() {
    let calls: usize = std::env::var("WARDEN_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CALLS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = Ca::new("bench CA");
    let key_leaf = leaf(&["127.0.0.1"], Some(&ca), false, false);
    let (kept, closing) = rt.block_on(async {
        (
            server(&key_leaf, None, Behaviour::Answer).await,
            server(&key_leaf, None, Behaviour::CloseEach).await,
        )
    });
    let dir = tempfile::TempDir::new().unwrap();
    let key = SigningKey::generate();
    let trust = publisher_entry(&"warden-examples".parse().unwrap(), &key.public_key());
    let policy = Policy::parse(&format!(
        "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n\n[policy.remote]\nallowed_hosts = \
         [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
        kept.port(),
        closing.port()
    ))
    .unwrap();
    let host = Host::builder()
        .trust(TrustBundle::parse(&trust).unwrap())
        .policy(policy)
        .data_dir(dir.path().join("data"))
        .audit(Arc::new(MemoryAudit::default()))
        .build()
        .unwrap();
    let t = host.default_tenant();
    let pooled = t
        .load_file(
            &signed(dir.path(), &key, kept, &key_leaf),
            None,
            &Grant::None,
        )
        .unwrap()
        .id;
    let fresh = t
        .load_file(
            &signed(dir.path(), &key, closing, &key_leaf),
            None,
            &Grant::None,
        )
        .unwrap()
        .id;
    rt.block_on(async {
        let mut peer = Peer::connect(kept, &ca).await;
        time_host(&host, &pooled, WARMUP, &mut Vec::new()).await;
        time_host(&host, &fresh, WARMUP, &mut Vec::new()).await;
        time_peer(&mut peer, WARMUP, &mut Vec::new()).await;
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let mut round = 0;
        while a.len() < calls {
            match round % 3 {
                0 => {
                    time_host(&host, &pooled, BLOCK, &mut a).await;
                    time_host(&host, &fresh, BLOCK, &mut b).await;
                    time_peer(&mut peer, BLOCK, &mut c).await;
                }
                1 => {
                    time_peer(&mut peer, BLOCK, &mut c).await;
                    time_host(&host, &pooled, BLOCK, &mut a).await;
                    time_host(&host, &fresh, BLOCK, &mut b).await;
                }
                _ => {
                    time_host(&host, &fresh, BLOCK, &mut b).await;
                    time_peer(&mut peer, BLOCK, &mut c).await;
                    time_host(&host, &pooled, BLOCK, &mut a).await;
                }
            }
            round += 1;
        }
        println!("{calls} calls each, JSON-RPC over TLS 1.3 on loopback, 16-byte input:");
        let pa = line("warden, pooled connection", a);
        let pb = line("warden, a connection per call", b);
        let pc = line("peer: hyper + Rustls, one kept connection", c);
        println!(
            "ratio p50 pooled / peer {:.2}; a connection per call / pooled {:.2}",
            pa.as_secs_f64() / pc.as_secs_f64(),
            pb.as_secs_f64() / pa.as_secs_f64()
        );
    });
}
