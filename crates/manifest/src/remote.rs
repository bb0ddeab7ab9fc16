//! Remote extensions (`kind = "remote"`): where the service answers (`entry`, an `https://` URL
//! for JSON-RPC or a `grpcs://` target), and what its server must present (`[remote]`: the
//! SHA-256 pins of its public keys, and optionally a CA file in the bundle).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::host::RequestHost;
use crate::path::BundlePath;

/// Most bytes of an endpoint's path.
const MAX_PATH_BYTES: usize = 1024;
/// Most pins a manifest lists.
pub const MAX_PINS: usize = 16;

/// How warden speaks to a remote extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteProtocol {
    /// JSON-RPC 2.0 over HTTPS (`https://`): one POST per call.
    JsonRpc,
    /// gRPC over TLS (`grpcs://`): the `warden.extension.v1.Extension/Call` method.
    Grpc,
}

/// Where a remote extension answers: a host (a DNS name or an IP literal), a port, and for
/// JSON-RPC the path its requests are posted to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteEndpoint {
    pub protocol: RemoteProtocol,
    pub host: RequestHost,
    pub port: u16,
    /// `/` and up (JSON-RPC); always `/` for gRPC.
    pub path: String,
}

/// Why an entry is not a remote endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RemoteError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, RemoteError> {
    Err(RemoteError(msg.into()))
}

impl FromStr for RemoteEndpoint {
    type Err = RemoteError;

    fn from_str(s: &str) -> Result<Self, RemoteError> {
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return err(format!("the endpoint {s:?} contains {c:?}"));
        }
        let (protocol, rest) = match s.split_once("://") {
            Some(("https", rest)) => (RemoteProtocol::JsonRpc, rest),
            Some(("grpcs", rest)) => (RemoteProtocol::Grpc, rest),
            Some((other, _)) => {
                return err(format!(
                    "a remote endpoint is https:// (JSON-RPC) or grpcs:// (gRPC), not {other}://"
                ));
            }
            None => {
                return err(format!(
                    "a remote extension's entry is its endpoint, https://HOST[:PORT][/PATH] or \
                     grpcs://HOST[:PORT]; {s:?} names no scheme"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return err(format!("the endpoint {s:?} contains user info ('@')"));
        }
        if let Some(c) = path.chars().find(|c| matches!(c, '?' | '#' | '\\' | '%')) {
            return err(format!(
                "the endpoint's path may not contain {c:?}: name a plain path"
            ));
        }
        if path.len() > MAX_PATH_BYTES || !path.is_ascii() {
            return err(format!(
                "the endpoint's path must be ASCII, at most {MAX_PATH_BYTES} bytes"
            ));
        }
        if path.split('/').any(|seg| seg == "." || seg == "..") {
            return err("the endpoint's path may not contain . or .. segments");
        }
        if protocol == RemoteProtocol::Grpc && path != "/" {
            return err("a grpcs:// endpoint names no path (the service's method is fixed)");
        }
        let (host, port) = split_authority(authority)?;
        let host = RequestHost::parse(host).map_err(|e| RemoteError(e.to_string()))?;
        Ok(RemoteEndpoint {
            protocol,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// `host[:port]`, `[v6][:port]`; the port defaults to 443.
fn split_authority(a: &str) -> Result<(&str, u16), RemoteError> {
    if a.is_empty() {
        return err("the endpoint names no host");
    }
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => err(format!("{p:?} is not a port (1-65535)")),
        Ok(n) => Ok(n),
    };
    if a.starts_with('[') {
        return match a.find(']') {
            Some(end) => {
                let host = &a[..=end];
                match &a[end + 1..] {
                    "" => Ok((host, 443)),
                    rest => match rest.strip_prefix(':') {
                        Some(p) => Ok((host, port_of(p)?)),
                        None => err(format!("{a:?} is not [ADDRESS]:PORT")),
                    },
                }
            }
            None => err(format!("{a:?} has no closing ']'")),
        };
    }
    match a.rsplit_once(':') {
        Some((host, p)) => Ok((host, port_of(p)?)),
        None => Ok((a, 443)),
    }
}

impl fmt::Display for RemoteEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            RemoteProtocol::JsonRpc => {
                write!(f, "https://{}:{}{}", self.host, self.port, self.path)
            }
            RemoteProtocol::Grpc => write!(f, "grpcs://{}:{}", self.host, self.port),
        }
    }
}

/// A pin: the SHA-256 of a public key's DER `SubjectPublicKeyInfo`, written
/// `sha256/<base64>` (what `openssl x509 -pubkey | openssl pkey -pubin -outform der |
/// openssl dgst -sha256 -binary | base64` prints, with the prefix).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiPin(pub [u8; 32]);

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256/{}", STANDARD.encode(self.0))
    }
}

impl FromStr for SpkiPin {
    type Err = RemoteError;

    fn from_str(s: &str) -> Result<Self, RemoteError> {
        let Some(b64) = s.strip_prefix("sha256/") else {
            return err(format!(
                "a pin is \"sha256/<base64 of the key's SHA-256>\", not {:?}",
                s.chars().take(64).collect::<String>()
            ));
        };
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| RemoteError(format!("the pin's base64 does not decode: {e}")))?;
        match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(d) => Ok(SpkiPin(d)),
            Err(_) => err(format!(
                "a pin is a SHA-256 (32 bytes), this one is {} bytes",
                bytes.len()
            )),
        }
    }
}

/// `[remote]`: what the server must present.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteOptions {
    /// The server's own public keys (its leaf certificate's); at least one. A server whose
    /// leaf key is none of them is refused, whatever CA signed it.
    pub pins: Vec<SpkiPin>,
    /// A PEM file in the bundle with the CA the server's chain must lead to (its validity and
    /// name are then checked by the CA's rules too).
    pub ca: Option<BundlePath>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoints_parse_strictly() {
        let e: RemoteEndpoint = "https://api.vendor.example/rpc".parse().unwrap();
        assert_eq!(e.protocol, RemoteProtocol::JsonRpc);
        assert_eq!((e.port, e.path.as_str()), (443, "/rpc"));
        assert_eq!(e.to_string(), "https://api.vendor.example:443/rpc");
        let g: RemoteEndpoint = "grpcs://[::1]:8443".parse().unwrap();
        assert_eq!((g.protocol, g.port), (RemoteProtocol::Grpc, 8443));
        assert_eq!(g.to_string(), "grpcs://[::1]:8443");
        for (bad, says) in [
            ("http://a.example/", "not http://"),
            ("a.example", "names no scheme"),
            ("https://u@a.example/", "user info"),
            ("https://a.example/x?y", "may not contain '?'"),
            ("https://a.example/../x", ". or .."),
            ("https://a.example:0/", "not a port"),
            ("https://a.example:99999/", "not a port"),
            ("grpcs://a.example/svc", "names no path"),
            ("https:// a.example/", "contains ' '"),
            ("https://0x7f.1/", "numeric address"),
            ("https:///x", "names no host"),
        ] {
            let e = bad.parse::<RemoteEndpoint>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn pins_are_sha256_in_base64() {
        let p: SpkiPin = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
            .parse()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        for bad in ["sha1/AAAA", "sha256/!!", "sha256/AAAA"] {
            assert!(bad.parse::<SpkiPin>().is_err(), "{bad}");
        }
    }
}
