//! `permissions.network.allowed_hosts` entries: parsed once, matched many times.
//!
//! Forms: `*` (any public host), `api.acme.com`, `*.acme.com` (strict subdomains only),
//! `api.acme.com:8443`, `https://api.acme.com`, `10.20.0.5:5432`, `[2001:db8::1]:443`.
//! Everything else is refused at parse time, never "fixed": no userinfo, paths, trailing dots,
//! non-ASCII (IDN must be written in its `xn--` form), or numeric host spellings such as
//! `127.1`, `0x7f.1` or `2130706433` that resolvers read as addresses.
//!
//! Whether the address a name resolves to may be reached is a separate check made at connect
//! time against the operator's policy; matching here is only about names, schemes and ports.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why an allowed-host entry or a request host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, HostError> {
    Err(HostError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// The host part of an allowed-host entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: any host (its addresses must still be public, or named by the policy).
    Any,
    /// One DNS name, lowercase, no trailing dot.
    Exact(String),
    /// `*.suffix`: names strictly below `suffix` (not `suffix` itself).
    Subdomains(String),
    /// An IP literal.
    Ip(IpAddr),
}

/// A parsed `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowedHost {
    pub scheme: Option<Scheme>,
    pub host: HostPattern,
    pub port: Option<u16>,
}

/// A request's target host after normalization, ready to match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestHost {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestHost::Name(n) => f.write_str(n),
            RequestHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RequestHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Checks a DNS name and returns it lowercased. `what` prefixes messages.
fn dns_name(s: &str) -> Result<String, HostError> {
    if s.is_empty() {
        return err("host is empty");
    }
    if !s.is_ascii() {
        return err(format!(
            "host {s:?} is not ASCII; write internationalized names in their xn-- (punycode) form"
        ));
    }
    if s.ends_with('.') {
        return err(format!("host {s:?} has a trailing dot; remove it"));
    }
    if s.len() > 253 {
        return err("host name is longer than 253 bytes");
    }
    let lower = s.to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return err(format!("host {s:?} has an empty label"));
        }
        if label.len() > 63 {
            return err(format!("host {s:?} has a label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return err(format!(
                "host {s:?} may only contain letters, digits, '-' and '.'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err(format!(
                "host {s:?} has a label starting or ending with '-'"
            ));
        }
    }
    // A name whose last label is numeric (or hex) is read as an address by many resolvers:
    // `127.1`, `0x7f.1`, `2130706433`. Only canonical IP literals are accepted as addresses.
    if let Some(last) = labels.last() {
        let hexish = last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        if last.bytes().all(|b| b.is_ascii_digit()) || hexish {
            return err(format!(
                "host {s:?} looks like a numeric address; write addresses as canonical IP literals"
            ));
        }
    }
    Ok(lower)
}

/// Parses a decimal port 1..=65535 without sign or leading zeros.
fn port(s: &str) -> Result<u16, HostError> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    match s.parse::<u16>() {
        Ok(p) if canonical && p > 0 => Ok(p),
        _ => err(format!("port {s:?} must be a number from 1 to 65535")),
    }
}

/// Splits `host[:port]` / `[v6][:port]` into the host text, whether it was bracketed, and port.
fn split_host_port(s: &str) -> Result<(&str, bool, Option<u16>), HostError> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return err(format!("{s:?} has an unclosed '['"));
        };
        let p = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(port(p)?),
                None => return err(format!("unexpected {after:?} after ']'")),
            },
        };
        return Ok((inner, true, p));
    }
    match s.split_once(':') {
        None => Ok((s, false, None)),
        Some((h, p)) => {
            if p.contains(':') {
                return err(format!(
                    "{s:?}: write IPv6 addresses in brackets, e.g. \"[2001:db8::1]:443\""
                ));
            }
            Ok((h, false, Some(port(p)?)))
        }
    }
}

impl FromStr for AllowedHost {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, HostError> {
        if s.is_empty() {
            return err("empty host entry");
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return err(format!("{s:?} contains {c:?}"));
        }
        let (scheme, rest) = match s.split_once("://") {
            Some(("https", rest)) => (Some(Scheme::Https), rest),
            Some(("http", rest)) => (Some(Scheme::Http), rest),
            Some((other, _)) => {
                return err(format!(
                    "scheme {other:?} is not allowed; use http or https"
                ));
            }
            None => (None, s),
        };
        if rest.contains('@') {
            return err(format!(
                "{s:?} contains user info ('@'); name only the host"
            ));
        }
        if let Some(c) = rest.chars().find(|c| matches!(c, '/' | '?' | '#' | '\\')) {
            return err(format!(
                "{s:?} contains {c:?}; name only [scheme://]host[:port]"
            ));
        }
        let (host, bracketed, port) = split_host_port(rest)?;
        let host = if bracketed {
            match host.parse::<Ipv6Addr>() {
                Ok(ip) => HostPattern::Ip(IpAddr::V6(ip)),
                Err(_) => return err(format!("{host:?} is not an IPv6 address")),
            }
        } else if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            let suffix = dns_name(suffix)?;
            if !suffix.contains('.') {
                return err(format!(
                    "{s:?} is too broad: a wildcard needs at least two labels after '*.' (use \"*\" for any host)"
                ));
            }
            HostPattern::Subdomains(suffix)
        } else if host.contains('*') {
            return err(format!(
                "{s:?}: a wildcard may only be a leading \"*.\" or the whole host \"*\""
            ));
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            HostPattern::Ip(IpAddr::V4(ip))
        } else {
            HostPattern::Exact(dns_name(host)?)
        };
        Ok(AllowedHost { scheme, host, port })
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.scheme {
            write!(f, "{s}://")?;
        }
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Exact(n) => f.write_str(n)?,
            HostPattern::Subdomains(n) => write!(f, "*.{n}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl RequestHost {
    /// Normalizes the host of an outgoing request (the URL authority's host, without port).
    ///
    /// A single trailing dot is dropped (it names the same host); IP literals are
    /// canonicalized (IPv4-mapped IPv6 becomes IPv4); numeric spellings other than canonical
    /// literals are refused, as are user info and non-ASCII names.
    pub fn parse(host: &str) -> Result<Self, HostError> {
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return match inner.parse::<Ipv6Addr>() {
                Ok(ip) => Ok(RequestHost::Ip(IpAddr::V6(ip).to_canonical())),
                Err(_) => err(format!("{host:?} is not an IPv6 address")),
            };
        }
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(RequestHost::Ip(IpAddr::V4(ip)));
        }
        if host.contains('@') {
            return err(format!("{host:?} contains user info"));
        }
        let trimmed = host.strip_suffix('.').unwrap_or(host);
        // Said plainly: the generic messages would call a canonical address "numeric" or
        // blame a trailing dot that is otherwise accepted.
        if trimmed.ends_with('.') {
            return err(format!(
                "host {host:?} ends with more than one dot; one trailing dot at most"
            ));
        }
        if trimmed.len() < host.len() && trimmed.parse::<Ipv4Addr>().is_ok() {
            return err(format!(
                "{host:?} is an IP address with a trailing dot; write it without the dot"
            ));
        }
        Ok(RequestHost::Name(dns_name(trimmed)?))
    }
}

impl AllowedHost {
    /// Whether this entry admits `scheme://host:port`. `default_ports` is the manifest's
    /// `allowed_ports`, used for entries that name no port.
    pub fn matches(
        &self,
        scheme: Scheme,
        host: &RequestHost,
        port: u16,
        default_ports: &[u16],
    ) -> bool {
        self.matches_host(host)
            && self.scheme.is_none_or(|s| s == scheme)
            && self.allows_port(port, default_ports)
    }

    /// Whether the host part alone matches (used for name lookups).
    pub fn matches_host(&self, host: &RequestHost) -> bool {
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(n), RequestHost::Name(h)) => n == h,
            (HostPattern::Subdomains(suffix), RequestHost::Name(h)) => h
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Ip(a), RequestHost::Ip(b)) => a.to_canonical() == *b,
            _ => false,
        }
    }

    /// Whether `port` is allowed by this entry.
    pub fn allows_port(&self, port: u16, default_ports: &[u16]) -> bool {
        match (self.port, self.scheme) {
            (Some(p), _) => p == port,
            (None, _) if !default_ports.is_empty() => default_ports.contains(&port),
            (None, Some(s)) => s.default_port() == port,
            (None, None) => port == 80 || port == 443,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> AllowedHost {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }
    fn rq(s: &str) -> RequestHost {
        RequestHost::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(h("*").host, HostPattern::Any);
        assert_eq!(
            h("api.acme.com").host,
            HostPattern::Exact("api.acme.com".into())
        );
        assert_eq!(
            h("API.Acme.COM").host,
            HostPattern::Exact("api.acme.com".into())
        );
        assert_eq!(
            h("*.acme.com").host,
            HostPattern::Subdomains("acme.com".into())
        );
        assert_eq!(h("api.acme.com:8443").port, Some(8443));
        assert_eq!(h("https://api.acme.com").scheme, Some(Scheme::Https));
        assert_eq!(
            h("10.20.0.5:5432").host,
            HostPattern::Ip("10.20.0.5".parse().unwrap())
        );
        assert_eq!(
            h("[2001:db8::1]:443").host,
            HostPattern::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            h("http://*.acme.com:8080").to_string(),
            "http://*.acme.com:8080"
        );
        assert_eq!(
            h("xn--bcher-kva.example").to_string(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "",
            " ",
            "api.acme.com.",
            "user@api.acme.com",
            "https://user:pw@acme.com",
            "https://api.acme.com/",
            "https://api.acme.com/path",
            "api.acme.com?x",
            "ftp://acme.com",
            "HTTPS://acme.com",
            "*acme.com",
            "a.*.acme.com",
            "**.acme.com",
            "*.com",
            "*.",
            "acme.com:0",
            "acme.com:65536",
            "acme.com:+80",
            "acme.com:080",
            "acme.com:",
            "acme.com:x",
            "2130706433",
            "0x7f.1",
            "127.1",
            "0x7f000001",
            "1.2.3",
            "01.2.3.4",
            "::1",
            "2001:db8::1:443",
            "[::1",
            "[not-v6]:80",
            "b\u{fc}cher.example",
            "acme .com",
            "acme\u{0}.com",
            "acme\\.com",
            "-acme.com",
            "acme-.com",
            "a..b",
            "acme_x.com",
            "[::1]x",
        ] {
            assert!(
                bad.parse::<AllowedHost>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn wildcard_matches_only_true_subdomains() {
        let w = h("*.acme.com");
        assert!(w.matches(Scheme::Https, &rq("api.acme.com"), 443, &[]));
        assert!(w.matches(Scheme::Https, &rq("a.b.acme.com"), 443, &[]));
        assert!(!w.matches(Scheme::Https, &rq("acme.com"), 443, &[]));
        assert!(!w.matches(Scheme::Https, &rq("evilacme.com"), 443, &[]));
        assert!(!w.matches(Scheme::Https, &rq("acme.com.evil.net"), 443, &[]));
        assert!(!w.matches(Scheme::Https, &rq("api.acme.com.evil.net"), 443, &[]));
        // A trailing dot on the request names the same host.
        assert!(w.matches(Scheme::Https, &rq("api.acme.com."), 443, &[]));
        assert!(w.matches(Scheme::Https, &rq("API.ACME.COM"), 443, &[]));
    }

    #[test]
    fn exact_and_ip_matching() {
        let e = h("api.acme.com");
        assert!(e.matches(Scheme::Https, &rq("api.acme.com"), 443, &[]));
        assert!(!e.matches(Scheme::Https, &rq("x.api.acme.com"), 443, &[]));
        assert!(!e.matches(Scheme::Https, &rq("api.acme.co"), 443, &[]));
        let ip = h("10.20.0.5:5432");
        assert!(ip.matches(Scheme::Http, &rq("10.20.0.5"), 5432, &[]));
        assert!(ip.matches(Scheme::Http, &rq("[::ffff:10.20.0.5]"), 5432, &[]));
        assert!(!ip.matches(Scheme::Http, &rq("10.20.0.6"), 5432, &[]));
        assert!(!ip.matches(Scheme::Http, &rq("10.20.0.5"), 5433, &[]));
        // A name never matches an IP entry and vice versa.
        assert!(!e.matches(Scheme::Https, &rq("10.20.0.5"), 443, &[]));
    }

    #[test]
    fn request_hosts_refuse_numeric_spellings() {
        for bad in [
            "2130706433",
            "0x7f.1",
            "127.1",
            "user@acme.com",
            "b\u{fc}cher.de",
            "a..b",
            "[::1",
        ] {
            assert!(RequestHost::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            rq("[::ffff:127.0.0.1]"),
            RequestHost::Ip("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn ports_and_schemes() {
        let plain = h("api.acme.com");
        assert!(plain.matches(Scheme::Https, &rq("api.acme.com"), 443, &[]));
        assert!(plain.matches(Scheme::Http, &rq("api.acme.com"), 80, &[]));
        assert!(!plain.matches(Scheme::Https, &rq("api.acme.com"), 8443, &[]));
        assert!(plain.matches(Scheme::Https, &rq("api.acme.com"), 8443, &[8443]));
        assert!(!plain.matches(Scheme::Https, &rq("api.acme.com"), 443, &[8443]));
        let https = h("https://api.acme.com");
        assert!(https.matches(Scheme::Https, &rq("api.acme.com"), 443, &[]));
        assert!(!https.matches(Scheme::Http, &rq("api.acme.com"), 80, &[]));
        assert!(!https.matches(Scheme::Https, &rq("api.acme.com"), 80, &[]));
        let any = h("*");
        assert!(any.matches(Scheme::Https, &rq("anything.example"), 443, &[]));
        assert!(!any.matches(Scheme::Https, &rq("anything.example"), 22, &[]));
    }

    /// Issue 9, finding 7: `127.0.0.1.` was called "not canonical" and `a.test..` blamed a
    /// trailing dot that is accepted elsewhere.
    #[test]
    fn trailing_dots_on_requests_are_named_for_what_they_are() {
        let e = RequestHost::parse("127.0.0.1.").unwrap_err().to_string();
        assert!(e.contains("IP address with a trailing dot"), "{e}");
        let e = RequestHost::parse("api.acme.test..")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one dot"), "{e}");
        assert_eq!(
            RequestHost::parse("api.acme.test.").unwrap(),
            RequestHost::Name("api.acme.test".into())
        );
    }
}
