//! TLS to PostgreSQL: what the URL asks for, and the connector every connection of a store is
//! made with (the pool's, [`PgStore::dedicated`](crate::PgStore) ones, the change listeners').
//!
//! The URL's TLS parameters are taken out here, before the rest goes to tokio-postgres (which
//! knows neither `verify-ca`/`verify-full` nor the file parameters):
//!
//! - `sslmode=disable`: in the clear.
//! - `sslmode=prefer`: TLS if the server offers it, verified as below; in the clear only when
//!   the server has no TLS at all. A server that offers TLS with a certificate that does not
//!   verify is refused, not used in the clear. But an attacker on the path can answer "no TLS"
//!   for the server (as with libpq): `prefer` protects against listeners, not against them.
//! - No `sslmode`: `prefer` for a server on this machine (a loopback address, `localhost` or a
//!   Unix socket), as libpq does; `verify-full` for any other host, unlike libpq, so that a
//!   fleet's URL cannot fall back to the clear (and hand over its password) by omission. So
//!   does `sslrootcert=system` (as in libpq 16).
//! - `sslmode=require`, `verify-ca`, `verify-full`: TLS or nothing. All three verify the
//!   certificate chain *and* the host name (stricter than libpq's `require` and `verify-ca`,
//!   which skip the name or both): warden never makes an unverified TLS connection.
//! - `sslrootcert=PATH`: the PEM file of the CA certificate(s) to trust instead of the Mozilla
//!   root bundle (`webpki-roots`, the default; `sslrootcert=system` names it too). Read once,
//!   at connect.
//! - `sslcert=PATH` and `sslkey=PATH` (both or neither): a client certificate chain and its
//!   key (PEM: PKCS#8, PKCS#1 or SEC1), for servers that authenticate clients by certificate.
//! - `allow` and any other mode are refused, as are TLS files with `sslmode=disable`.
//!
//! The name verified is the URL's host (`hostaddr`, if given, is only where to connect), an IP
//! literal included: the certificate then needs that address among its subjectAltNames.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;
use warden_manifest::DatabaseUrl;

use crate::PgError;

/// Where the CA certificates to trust come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The Mozilla root bundle (`webpki-roots`).
    Mozilla,
    /// `sslrootcert=PATH`.
    File(PathBuf),
}

/// The TLS parameters of a URL, taken out of it by [`split_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// `sslmode` as given (`prefer` when absent), for messages.
    pub(crate) mode_name: String,
    /// Whether `sslmode` was given (see [`TlsSettings::default_for`]).
    pub(crate) mode_given: bool,
    pub(crate) mode: SslMode,
    pub(crate) roots: Roots,
    /// `sslcert` and `sslkey`.
    pub(crate) client: Option<(PathBuf, PathBuf)>,
}

const MODES: &str = "disable, prefer, require, verify-ca or verify-full";

/// Splits `url` into the URL for tokio-postgres (every parameter but the TLS ones this module
/// handles, as written) and its TLS settings. Errors never quote the URL: only the name of a
/// parameter, or the value of `sslmode` or of a file parameter (never secret).
pub(crate) fn split_url(url: &str) -> Result<(String, TlsSettings), PgError> {
    let mut mode_name: Option<String> = None;
    let mut rootcert: Option<String> = None;
    let mut cert: Option<String> = None;
    let mut key: Option<String> = None;
    // `DatabaseUrl::parse` accepted it: no '@' after the first '?', so the first '?' begins
    // the query (a '?' in the password is refused there).
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            // tokio-postgres refuses it, naming no value.
            kept.push(pair);
            continue;
        };
        // tokio-postgres decodes names too: `ssl%6Dode` is `sslmode` to it.
        let name = decode(k).map_err(|e| PgError::Url(format!("a parameter name {e}")))?;
        let slot = match name.as_str() {
            "sslmode" => &mut mode_name,
            "sslrootcert" => &mut rootcert,
            "sslcert" => &mut cert,
            "sslkey" => &mut key,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        if slot.is_some() {
            return Err(PgError::Url(format!("{name} is given twice")));
        }
        *slot = Some(decode(v).map_err(|e| PgError::Url(format!("the value of {name} {e}")))?);
    }
    let mode = match mode_name.as_deref() {
        None | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require" | "verify-ca" | "verify-full") => SslMode::Require,
        Some("allow") => {
            return Err(PgError::Url(format!(
                "sslmode=allow is not supported (it tries the clear first): use one of {MODES}"
            )));
        }
        Some(other) => {
            return Err(PgError::Url(format!(
                "sslmode={other} is not one of {MODES}"
            )));
        }
    };
    let mode_given = mode_name.is_some();
    let mode_name = mode_name.unwrap_or_else(|| "prefer".into());
    if mode == SslMode::Disable
        && let Some(name) = [
            ("sslrootcert", &rootcert),
            ("sslcert", &cert),
            ("sslkey", &key),
        ]
        .into_iter()
        .find_map(|(n, v)| v.is_some().then_some(n))
    {
        return Err(PgError::Url(format!(
            "{name} is for TLS, which sslmode=disable turns off"
        )));
    }
    let system_roots = rootcert.as_deref() == Some("system");
    let roots = match rootcert {
        None => Roots::Mozilla,
        Some(p) if p == "system" => Roots::Mozilla,
        Some(p) if p.is_empty() => return Err(PgError::Url("sslrootcert is empty".into())),
        Some(p) => Roots::File(PathBuf::from(p)),
    };
    let client = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => {
            Some((PathBuf::from(c), PathBuf::from(k)))
        }
        (Some(_), Some(_)) => return Err(PgError::Url("sslcert or sslkey is empty".into())),
        (Some(_), None) => {
            return Err(PgError::Url(
                "sslcert needs sslkey (the client certificate's private key)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(PgError::Url(
                "sslkey needs sslcert (the client certificate)".into(),
            ));
        }
    };
    let driver_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut settings = TlsSettings {
        mode_name,
        mode_given,
        mode,
        roots,
        client,
    };
    if !mode_given && system_roots {
        settings.require("verify-full (sslrootcert=system)");
    }
    Ok((driver_url, settings))
}

/// Percent-decodes `s` as tokio-postgres does (`+` stays `+`); the error completes "… is not
/// …" without quoting `s`.
fn decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| {
            bytes
                .get(j)
                .and_then(|&c| char::from(c).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "is not valid percent-encoded UTF-8")
}

impl TlsSettings {
    fn require(&mut self, name: &str) {
        self.mode = SslMode::Require;
        self.mode_name = name.to_owned();
        self.mode_given = true;
    }

    /// Without `sslmode`: `verify-full` unless every host of `config` is on this machine (see
    /// the module docs).
    pub(crate) fn default_for(&mut self, config: &tokio_postgres::Config) {
        use tokio_postgres::config::Host;
        if self.mode_given {
            return;
        }
        let local = |h: &Host| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        };
        let hosts = config.get_hosts();
        if hosts.is_empty() || !hosts.iter().all(local) {
            self.require("verify-full (the default for a server on another host)");
        }
    }

    /// The connector for these settings: reads the files they name. With `sslmode=disable` no
    /// handshake is ever made, and the connector trusts nothing besides.
    pub(crate) fn connector(&self) -> Result<Connector, PgError> {
        let (roots, trusted) = match (&self.mode, &self.roots) {
            (SslMode::Disable, _) => (RootCertStore::empty(), "nothing (sslmode=disable)".into()),
            (_, Roots::Mozilla) => (
                RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                "a CA of the Mozilla root bundle (give sslrootcert=PATH for a private CA)".into(),
            ),
            (_, Roots::File(path)) => (
                read_roots(path)?,
                format!("a CA of sslrootcert={}", path.display()),
            ),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Url(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let mut config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs("sslcert", cert)?;
                let bytes = read_pem("sslkey", key)?;
                let private =
                    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PgError::TlsFile {
                        param: "sslkey",
                        path: key.clone(),
                        reason: pem_reason(e, "private key"),
                    })?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| PgError::TlsFile {
                        param: "sslkey",
                        path: key.clone(),
                        reason: format!("does not go with sslcert: {e}"),
                    })?
            }
        };
        // What libpq 17 sends, and what a server accepting direct TLS (sslnegotiation=direct)
        // requires; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            make: MakeRustlsConnect::new(config),
            trusted: trusted.into(),
        })
    }
}

/// The certificates of a PEM file (`param` names it in errors); at least one.
fn read_certs(param: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PgError> {
    let fail = |reason: String| PgError::TlsFile {
        param,
        path: path.to_owned(),
        reason,
    };
    let bytes = read_pem(param, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_reason(e, "certificate")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// `sslrootcert`: every certificate of the file becomes a trust anchor.
fn read_roots(path: &Path) -> Result<RootCertStore, PgError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certs("sslrootcert", path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| PgError::TlsFile {
            param: "sslrootcert",
            path: path.to_owned(),
            reason: format!("certificate {} is not usable as a CA: {e}", i + 1),
        })?;
    }
    Ok(roots)
}

/// The most a PEM file of the URL may hold: a CA bundle is well under it.
const MAX_PEM_BYTES: u64 = 4 << 20;

/// The bytes of a PEM file the URL names: a regular file (not a FIFO that would block or a
/// device that never ends) of at most [`MAX_PEM_BYTES`].
fn read_pem(param: &'static str, path: &Path) -> Result<Vec<u8>, PgError> {
    use std::io::Read as _;
    let fail = |reason: String| PgError::TlsFile {
        param,
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(format!("is over {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Why a PEM file did not parse, never quoting it (a key file's bytes are secret).
fn pem_reason(e: rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => format!("cannot be read: {e}"),
        Error::NoItemsFound => format!("holds no PEM {what}"),
        _ => format!("is not a valid PEM file of a {what}"),
    }
}

/// What every connection of a store is made with: rustls with the URL's roots (and client
/// certificate), failed handshakes explained. With `sslmode=disable` tokio-postgres never
/// calls it.
#[derive(Clone)]
pub(crate) struct Connector {
    make: MakeRustlsConnect,
    /// Who signs a trusted certificate, for "certificate not trusted".
    trusted: Arc<str>,
}

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = Handshake<<MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect>;
    type Error = Infallible;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, Infallible> {
        let inner = match <MakeRustlsConnect as MakeTlsConnect<S>>::make_tls_connect(
            &mut self.make,
            host,
        ) {
            Ok(inner) => inner,
            Err(never) => match never {},
        };
        Ok(Handshake {
            inner,
            host: host.to_owned(),
            trusted: Arc::clone(&self.trusted),
        })
    }
}

/// One handshake, to `host`.
pub(crate) struct Handshake<T> {
    inner: T,
    host: String,
    trusted: Arc<str>,
}

impl<S, T> TlsConnect<S> for Handshake<T>
where
    T: TlsConnect<S, Error = io::Error>,
    T::Future: Send + 'static,
    T::Stream: Send + 'static,
{
    type Stream = T::Stream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<T::Stream, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let Handshake {
            inner,
            host,
            trusted,
        } = self;
        let handshake = inner.connect(stream);
        Box::pin(async move {
            handshake.await.map_err(|e| HandshakeError {
                reason: reason(&e, &host, &trusted),
                host,
            })
        })
    }
}

/// A failed handshake, explained.
#[derive(Debug, thiserror::Error)]
#[error("TLS to {host}: {reason}")]
pub(crate) struct HandshakeError {
    host: String,
    reason: String,
}

fn reason(e: &io::Error, host: &str, trusted: &str) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!("the handshake failed: {e}");
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            format!("certificate not trusted: the server's certificate is not signed by {trusted}")
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
            format!("name mismatch: the server's certificate is not valid for {host}")
        }
        rustls::Error::InvalidCertificate(c @ CertificateError::NotValidForNameContext { .. }) => {
            format!("name mismatch: {c}")
        }
        rustls::Error::InvalidCertificate(
            c @ (CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }),
        ) => format!("{c}"),
        rustls::Error::InvalidCertificate(c) => format!("invalid certificate: {c}"),
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the handshake (alert {alert:?})")
        }
        other => format!("{other}"),
    }
}

/// `Some` when `source` (a driver error, with its chain) is a failed handshake or a server
/// without TLS where the URL requires it: the message for [`PgError::Tls`].
pub(crate) fn failure(
    source: &(dyn StdError + 'static),
    settings: &TlsSettings,
    hosts: &str,
) -> Option<(String, String)> {
    let mut next = Some(source);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<HandshakeError>() {
            return Some((h.host.clone(), h.reason.clone()));
        }
        // tokio-postgres's words when the server answers the TLS request with "no".
        if e.source().is_none() && e.to_string() == "server does not support TLS" {
            return Some((
                hosts.to_owned(),
                format!(
                    "the server offers no TLS, and sslmode={} requires it",
                    settings.mode_name
                ),
            ));
        }
        next = e.source();
    }
    None
}

/// The hosts of a config, for messages.
pub(crate) fn hosts(config: &tokio_postgres::Config) -> String {
    let names: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if names.is_empty() {
        "the server".into()
    } else {
        names.join(",")
    }
}

/// The TLS version of `client`'s session, `None` in the clear.
pub(crate) async fn session(
    client: &tokio_postgres::Client,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
            &[],
        )
        .await?;
    row.map(|r| r.try_get::<_, Option<String>>(0))
        .transpose()
        .map(|v| v.map(|v| v.unwrap_or_else(|| "TLS".into())))
}

/// Logs how the store's first connection went: TLS, or in the clear (a warning unless
/// `sslmode=disable` asked for it).
pub(crate) fn log_session(url: &DatabaseUrl, settings: &TlsSettings, version: Option<&str>) {
    match version {
        Some(v) => {
            tracing::info!(target: "warden::pg", %url, tls = v, "connected to PostgreSQL over TLS, certificate and host name verified")
        }
        None if settings.mode == SslMode::Disable => {
            tracing::info!(target: "warden::pg", %url, "connected to PostgreSQL in the clear (sslmode=disable)")
        }
        None => {
            tracing::warn!(target: "warden::pg", %url, "connected to PostgreSQL in the clear: the server offers no TLS (sslmode=prefer); sslmode=verify-full refuses that")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsSettings) {
        split_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn modes() {
        for (q, mode) in [
            ("", SslMode::Prefer),
            ("?sslmode=prefer", SslMode::Prefer),
            ("?sslmode=disable", SslMode::Disable),
            ("?sslmode=require", SslMode::Require),
            ("?sslmode=verify-ca", SslMode::Require),
            ("?sslmode=verify-full", SslMode::Require),
            ("?ssl%6Dode=verify-full", SslMode::Require),
        ] {
            let (driver, s) = split(&format!("postgres://u:pw@db/w{q}"));
            assert_eq!(s.mode, mode, "{q}");
            assert_eq!(driver, "postgres://u:pw@db/w", "{q}");
            assert_eq!(s.roots, Roots::Mozilla);
        }
    }

    #[test]
    fn other_parameters_are_passed_on_as_written() {
        let (driver, s) = split(
            "postgres://u:p%40ss@db:5433/w?application_name=a%20b&sslrootcert=%2Fetc%2Fwarden%2Fca%20x.pem&options=-c%20work_mem%3D4MB&sslmode=verify-full&hostaddr=10.0.0.1",
        );
        assert_eq!(
            driver,
            "postgres://u:p%40ss@db:5433/w?application_name=a%20b&options=-c%20work_mem%3D4MB&hostaddr=10.0.0.1"
        );
        assert_eq!(s.roots, Roots::File("/etc/warden/ca x.pem".into()));
        assert_eq!(s.mode_name, "verify-full");
        let (_, s) = split("postgres://db/w?sslrootcert=system&sslmode=require");
        assert_eq!(s.roots, Roots::Mozilla);
        let (_, s) = split("postgres://db/w?sslcert=/c.pem&sslkey=/k.pem");
        assert_eq!(s.client, Some(("/c.pem".into(), "/k.pem".into())));
        assert_eq!(s.mode, SslMode::Prefer);
    }

    #[test]
    fn refused_settings_say_why_without_the_password() {
        for (q, want) in [
            ("sslmode=allow", "sslmode=allow is not supported"),
            ("sslmode=verify", "sslmode=verify is not one of"),
            ("sslmode=REQUIRE", "not one of"),
            (
                "sslmode=disable&sslrootcert=/ca.pem",
                "sslrootcert is for TLS",
            ),
            ("sslmode=disable&sslcert=/c&sslkey=/k", "sslcert is for TLS"),
            ("sslcert=/c.pem", "sslcert needs sslkey"),
            ("sslkey=/k.pem", "sslkey needs sslcert"),
            ("sslrootcert=", "sslrootcert is empty"),
            ("sslmode=require&sslmode=disable", "sslmode is given twice"),
            ("sslrootcert=%FF", "not valid percent-encoded UTF-8"),
        ] {
            let url = format!("postgres://u:s3cret@db/w?password=s3cret&{q}");
            let e = split_url(&url).unwrap_err().to_string();
            assert!(e.contains(want), "{q}: {e}");
            assert!(!e.contains("s3cret"), "{q}: {e}");
        }
    }

    #[test]
    fn root_files_that_cannot_be_used_are_named() {
        let dir = std::env::temp_dir().join(format!("warden-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let text = dir.join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let key_only = dir.join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let missing = dir.join("missing.pem");
        // A FIFO would block the read for ever, a device never end, a folder not be a file.
        let fifo = dir.join("fifo.pem");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'A'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        let (zero, folder) = (PathBuf::from("/dev/zero"), dir.clone());
        for (path, want) in [
            (&fifo, "is not a regular file"),
            (&zero, "is not a regular file"),
            (&folder, "is not a regular file"),
            (&big, "is over"),
            (&missing, "cannot be read"),
            (&empty, "holds no PEM certificate"),
            (&text, "holds no PEM certificate"),
            (&key_only, "holds no PEM certificate"),
        ] {
            let (_, s) = split(&format!(
                "postgres://u:s3cret@db/w?sslmode=verify-full&sslrootcert={}",
                path.display()
            ));
            let e = s.connector().err().unwrap().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("sslrootcert"), "{e}");
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        // A client key that is missing, with a usable certificate file named first.
        let (_, s) = split(&format!(
            "postgres://db/w?sslcert={}&sslkey={}",
            empty.display(),
            missing.display()
        ));
        let e = s.connector().err().unwrap().to_string();
        assert!(e.contains("sslcert") && e.contains("empty.pem"), "{e}");
        // A malformed key file is named, never quoted.
        let cert = dir.join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad_key = dir.join("bad.key");
        std::fs::write(&bad_key, "-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n").unwrap();
        let (_, s) = split(&format!(
            "postgres://db/w?sslcert={}&sslkey={}",
            cert.display(),
            bad_key.display()
        ));
        let e = s.connector().err().unwrap().to_string();
        assert!(e.contains("sslkey") && e.contains("bad.key"), "{e}");
        assert!(!e.contains("SECRET") && !e.contains("83, 69"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disable_reads_nothing_and_the_defaults_need_no_file() {
        let (_, s) = split("postgres://db/w?sslmode=disable");
        assert!(s.connector().is_ok());
        let (_, s) = split("postgres://db/w?sslmode=verify-full");
        assert!(s.connector().is_ok());
    }
}
