//! Test servers and certificates for remote extensions (feature `testing`): a CA, leaf
//! certificates (optionally expired, optionally for client authentication), and a TLS 1.3
//! JSON-RPC server on loopback that answers, stalls, floods, answers nonsense or fails, and
//! may require a client certificate from a CA. Used by this crate's tests and the host's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::Arc;
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
    Answer,
    Stall,
    Flood,
    Malformed,
    Fails,
}

/// A TLS 1.3 server on loopback answering every connection as `behaviour` says; with
/// `client_ca`, it requires a client certificate from that CA.
pub async fn server(server: &Leaf, client_ca: Option<&Ca>, behaviour: Behaviour) -> SocketAddr {
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
    let config = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let id = v["id"].clone();
                        let input = v["params"]["input"].as_str().unwrap().to_string();
                        let method = v["params"]["method"].as_str().unwrap().to_string();
                        let answer = match behaviour {
                        Behaviour::Answer if method == "fail" => serde_json::json!({
                            "jsonrpc": "2.0", "id": id,
                            "error": {"code": -32000, "message": "failing on purpose", "data": {"code": "boom"}}
                        })
                        .to_string(),
                        Behaviour::Answer => serde_json::json!({
                            "jsonrpc": "2.0", "id": id, "result": {"output": input}
                        })
                        .to_string(),
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
                        Ok(hyper::Response::new(Full::new(Bytes::from(answer))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}
