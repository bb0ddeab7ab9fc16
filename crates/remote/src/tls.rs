//! TLS 1.3 to a remote extension's server, which must present a pinned key.
//!
//! [`PinnedVerifier`] accepts a server only if
//! - its leaf certificate's `SubjectPublicKeyInfo` has a SHA-256 that is one of the manifest's
//!   pins: a certificate signed by any CA, however valid, for a key that is not pinned is
//!   refused ([`PinMismatch`]); a pinned certificate sent along after another leaf counts for
//!   nothing (it does not sign the handshake);
//! - the leaf is valid now and names the endpoint's host;
//! - with a CA in the bundle, the chain also leads to that CA (Rustls' WebPKI verifier, which
//!   checks validity, names and usage by its rules).
//!
//! The handshake's signature is verified with the leaf's key, as always. Only TLS 1.3, Rustls
//! on *ring*.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use warden_manifest::SpkiPin;

use crate::der;

/// The most certificates of a refused chain named in its [`PinMismatch`].
const MAX_PRESENTED: usize = 8;

/// The server's leaf key is not pinned: the pins of what it presented, for the record.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server's key is not pinned (it presented {})", .presented.join(", "))]
pub struct PinMismatch {
    pub presented: Vec<String>,
}

/// A client certificate and its key (PEM), which the operator issues per install.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Why a configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the client certificate: {0}")]
    Identity(String),
    #[error("the bundle's CA file: {0}")]
    Ca(String),
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientIdentity {
    /// The certificate chain (leaf first) and the private key, both PEM.
    pub fn from_pem(certificates: &[u8], key: &[u8]) -> Result<ClientIdentity, SetupError> {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificates)
            .collect::<Result<_, _>>()
            .map_err(|e| SetupError::Identity(format!("the certificates do not read: {e}")))?;
        if chain.is_empty() {
            return Err(SetupError::Identity("no certificate in the PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| SetupError::Identity(format!("the key does not read: {e}")))?;
        // A key that signs nothing, or another certificate's, is refused now, not at the
        // first handshake.
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
            .map_err(|e| SetupError::Identity(format!("the key does not fit: {e}")))?;
        Ok(ClientIdentity { chain, key })
    }
}

/// The pin of a DER certificate's key, if its DER reads.
pub fn pin_of(cert: &[u8]) -> Option<SpkiPin> {
    let parsed = der::parse(cert)?;
    Some(SpkiPin(Sha256::digest(parsed.spki).into()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration of one install: TLS 1.3, the pinned verifier, its client
/// certificate if any.
pub(crate) fn client_config(
    pins: &[SpkiPin],
    ca_pem: Option<&[u8]>,
    identity: Option<&ClientIdentity>,
    protocol: warden_manifest::RemoteProtocol,
) -> Result<Arc<ClientConfig>, SetupError> {
    let provider = provider();
    let ca = match ca_pem {
        Some(pem) => Some(ca_verifier(pem, &provider)?),
        None => None,
    };
    let verifier = Arc::new(PinnedVerifier {
        pins: pins.to_vec(),
        ca,
        provider: Arc::clone(&provider),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| SetupError::Identity(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    // JSON-RPC is one HTTP/1.1 exchange per connection here; gRPC is HTTP/2.
    config.alpn_protocols = match protocol {
        warden_manifest::RemoteProtocol::JsonRpc => vec![b"http/1.1".to_vec()],
        warden_manifest::RemoteProtocol::Grpc => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(config))
}

fn ca_verifier(
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, SetupError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| SetupError::Ca(format!("it does not read: {e}")))?;
        // Said now, not as `CaUsedAsEndEntity` at every call.
        if der::is_ca(&cert) != Some(true) {
            return Err(SetupError::Ca(
                "a certificate in it is not a CA's (its basic constraints do not say cA)".into(),
            ));
        }
        roots
            .add(cert)
            .map_err(|e| SetupError::Ca(format!("a certificate is not a CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(SetupError::Ca("it holds no certificate".into()));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| SetupError::Ca(e.to_string()))
}

#[derive(Debug)]
struct PinnedVerifier {
    pins: Vec<SpkiPin>,
    ca: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pin first: whatever else is right, a leaf whose key is not pinned is refused.
        // Only the leaf's key counts: it is the key that signs this handshake, while any
        // other certificate sent along proves nothing (a real server's certificate is public,
        // and an impostor can append it to a chain of its own).
        let leaf_pin = pin_of(end_entity);
        if !leaf_pin.is_some_and(|p| self.pins.contains(&p)) {
            let presented = std::iter::once(end_entity)
                .chain(intermediates)
                .take(MAX_PRESENTED)
                .filter_map(|c| pin_of(c))
                .map(|p| p.to_string())
                .collect();
            return Err(other(PinMismatch { presented }));
        }
        if let Some(ca) = &self.ca {
            return ca.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let leaf = der::parse(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now < leaf.not_before {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        if now > leaf.not_after {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.3 only (the config offers nothing else).
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
