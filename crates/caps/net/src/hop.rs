//! Headers that belong to one HTTP connection, not to the message (RFC 9110 section 7.6.1):
//! whoever passes a message on (the gateway to an extension, a remote extension's proxy to
//! its origin) drops them.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers, and their old friends.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// The hop-by-hop headers of one message: the fixed ones, and every header its `Connection`
/// names.
pub struct HopByHop {
    named: Vec<String>,
}

impl HopByHop {
    pub fn of(headers: &HeaderMap) -> HopByHop {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        HopByHop { named }
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        HOP_BY_HOP.contains(&n) || self.named.iter().any(|c| c == n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fixed_and_connection_named_headers_are_the_connections() {
        let mut h = HeaderMap::new();
        h.append("connection", "X-Secret, keep-alive".parse().unwrap());
        h.append("connection", "other".parse().unwrap());
        let hop = HopByHop::of(&h);
        for n in ["x-secret", "other", "transfer-encoding", "te", "upgrade"] {
            assert!(hop.contains(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!hop.contains(&header::CONTENT_TYPE));
    }
}
