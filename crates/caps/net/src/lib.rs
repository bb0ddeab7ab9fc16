//! The network policy of an install, with no Wasmtime and no socket: which requests and
//! addresses an extension may reach. Pure functions returning typed refusals, so every
//! runtime (components' `wasi:http` and `wasi:sockets`, and later process extensions'
//! `http.fetch`) applies the same checks, and each can be tested without a guest.
//!
//! - [`admit`]: the allowlist, before any lookup or socket: scheme http/https, a host that
//!   parses as a `RequestHost` (numeric spellings, user info and non-ASCII refused), an
//!   `allowed_hosts` entry admitting scheme, host and port; an IP literal is classified here.
//! - [`addr`]: which addresses are public, including IPv4 embedded in IPv6 forms.
//! - [`choose`]: the first permitted address among all that a name resolved to.
//! - [`Resolver`]: how allowed names are resolved (injectable; the system's by default).
//! - [`hop`]: the headers that belong to one connection, which whoever passes a message on
//!   drops.

pub mod addr;
pub mod hop;
mod resolve;

use std::net::IpAddr;

use warden_manifest::{EffectiveNetwork, RequestHost, Scheme};

pub use resolve::{DNS_TIMEOUT, Lookup, Resolver, SystemResolver};

/// A request that passed the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub host: RequestHost,
    pub port: u16,
    /// The authority as the guest wrote it (for the `Host` header).
    pub authority: String,
}

impl Target {
    pub fn describe(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Why a request was refused, and what it tried to reach (`scheme://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub target: String,
    pub reason: String,
}

/// A port text as it may appear in a record: at most 16 visible ASCII characters.
fn escape_port(text: &str) -> String {
    text.chars()
        .take(16)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// The allowlist check: pure, no name lookup, no socket.
pub fn admit(uri: &http::Uri, grant: Option<&EffectiveNetwork>) -> Result<Target, Refusal> {
    let scheme_text = uri.scheme_str().unwrap_or("");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let raw_host = uri.authority().map(|a| a.host()).unwrap_or("");
    let scheme = match scheme_text {
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        _ => None,
    };
    // The port as written (after the last `:` that is not inside `[...]`), so that a port
    // that is not a number is named as such, not replaced by the scheme's default.
    let port_text = authority
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.contains(']'));
    let port = match (port_text, uri.authority().and_then(|a| a.port_u16())) {
        (_, Some(p)) => Some(p),
        (None, None) | (Some(""), None) => Some(scheme.map(Scheme::default_port).unwrap_or(0)),
        (Some(_), None) => None,
    };
    let refuse = |reason: String| Refusal {
        target: match (port, port_text) {
            (Some(p), _) => format!("{scheme_text}://{raw_host}:{p}"),
            (None, Some(t)) => format!("{scheme_text}://{raw_host}:{}", escape_port(t)),
            (None, None) => format!("{scheme_text}://{raw_host}"),
        },
        reason,
    };
    let Some(port) = port else {
        return Err(refuse(format!(
            "the port {:?} is not a number from 1 to 65535",
            escape_port(port_text.unwrap_or(""))
        )));
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
pub fn choose(addrs: &[IpAddr], allow: &[ipnet::IpNet]) -> Result<IpAddr, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn a_port_that_is_not_a_number_is_named_not_defaulted() {
        // Issue 9, F7: `https://host:abc/` was recorded as `https://host:443`.
        let g = grant(&["api.example.com"], &[], &[]);
        let mut checked = 0;
        for (u, shown) in [
            (
                "https://api.example.com:abc/",
                "https://api.example.com:abc",
            ),
            (
                "https://api.example.com:99999/",
                "https://api.example.com:99999",
            ),
            ("http://[::1]:x1/", "http://[::1]:x1"),
        ] {
            let Ok(parsed) = u.parse::<http::Uri>() else {
                continue; // refused by the URI parser itself: nothing to record
            };
            let r = admit(&parsed, Some(&g)).unwrap_err();
            assert_eq!(r.target, shown, "{u}");
            assert!(
                r.reason.contains("is not a number from 1 to 65535"),
                "{u}: {}",
                r.reason
            );
            checked += 1;
        }
        assert!(
            checked >= 2,
            "the URI parser accepts these; {checked} were checked"
        );
        // An empty port (`host:`) is the scheme's default, as in URLs.
        let t = admit(&uri("https://api.example.com:/"), Some(&g)).unwrap();
        assert_eq!(t.port, 443);
        let t = admit(&uri("https://api.example.com:8443/"), Some(&g));
        assert!(t.is_err()); // 8443 not allowed: the port is checked, not defaulted
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
}
