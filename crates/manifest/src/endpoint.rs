//! `[[endpoints]]`: the HTTP routes the gateway forwards to an extension.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EndpointError(String);

/// An HTTP method token in upper case (`GET`, `POST`, ...) or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MethodPattern {
    Any,
    Exact(String),
}

impl FromStr for MethodPattern {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if s == "*" {
            return Ok(MethodPattern::Any);
        }
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(EndpointError(format!(
                "method {s:?} must be an upper-case HTTP method such as GET, or \"*\""
            )));
        }
        Ok(MethodPattern::Exact(s.to_string()))
    }
}

impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodPattern::Any => f.write_str("*"),
            MethodPattern::Exact(m) => f.write_str(m),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param(String),
    /// `{*name}`: the rest of the path (possibly empty); only last.
    Rest(String),
}

/// A route such as `/invoices/{id}` or `/files/{*rest}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    raw: String,
    segments: Vec<Segment>,
}

fn param_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn literal_ok(s: &str) -> bool {
    // RFC 3986 unreserved characters plus a few common sub-delimiters; no percent-encoding so
    // that one route cannot be spelled two ways.
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'_' | b'~' | b'@' | b':' | b'+' | b',' | b'='
                )
        })
}

impl FromStr for PathPattern {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let fail = |m: String| Err(EndpointError(m));
        let Some(rest) = s.strip_prefix('/') else {
            return fail(format!("path {s:?} must start with '/'"));
        };
        if s.len() > 1024 {
            return fail("path is longer than 1024 bytes".into());
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.iter().enumerate() {
                let seg = if let Some(inner) =
                    part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
                {
                    let (is_rest, name) = match inner.strip_prefix('*') {
                        Some(n) => (true, n),
                        None => (false, inner),
                    };
                    if !param_name(name) {
                        return fail(format!(
                            "parameter {part:?} in {s:?} needs a name of a-z, 0-9, '_'"
                        ));
                    }
                    if names.contains(&name) {
                        return fail(format!("parameter {name:?} appears twice in {s:?}"));
                    }
                    names.push(name);
                    if is_rest {
                        if i != last {
                            return fail(format!("{part:?} must be the last segment of {s:?}"));
                        }
                        Segment::Rest(name.to_string())
                    } else {
                        Segment::Param(name.to_string())
                    }
                } else if literal_ok(part) {
                    Segment::Literal(part.to_string())
                } else {
                    return fail(format!(
                        "segment {part:?} of {s:?} is empty or has characters outside A-Z a-z 0-9 - . _ ~ @ : + , ="
                    ));
                };
                segments.push(seg);
            }
        }
        Ok(PathPattern {
            raw: s.to_string(),
            segments,
        })
    }
}

impl PathPattern {
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Matches a request path (already split from its query); returns the captured parameters.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut captures = Vec::new();
        let mut idx = 0usize;
        for seg in &self.segments {
            match seg {
                Segment::Rest(name) => {
                    // Byte offset of part `idx` within `rest`: earlier parts plus their '/'.
                    let start: usize = parts.iter().take(idx).map(|p| p.len() + 1).sum();
                    captures.push((name.as_str(), rest.get(start..).unwrap_or("")));
                    return Some(captures);
                }
                Segment::Literal(lit) => {
                    if parts.get(idx) != Some(&lit.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => match parts.get(idx) {
                    Some(v) if !v.is_empty() => captures.push((name.as_str(), *v)),
                    _ => return None,
                },
            }
            idx += 1;
        }
        (idx == parts.len()).then_some(captures)
    }
}

/// One `[[endpoints]]` entry: the HTTP requests the gateway forwards to the extension. For
/// an rpc extension, `call` names the method a matching request calls (its body is the input,
/// the method's output the response body); an http extension gets the request itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub method: MethodPattern,
    pub path: PathPattern,
    pub call: Option<crate::MethodName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        s.parse().unwrap()
    }

    #[test]
    fn patterns() {
        assert_eq!(
            p("/invoices/{id}").matches("/invoices/42"),
            Some(vec![("id", "42")])
        );
        assert_eq!(p("/invoices/{id}").matches("/invoices/"), None);
        assert_eq!(p("/invoices/{id}").matches("/invoices/4/x"), None);
        assert_eq!(p("/").matches("/"), Some(vec![]));
        assert_eq!(p("/").matches("/x"), None);
        assert_eq!(
            p("/files/{*rest}").matches("/files/a/b"),
            Some(vec![("rest", "a/b")])
        );
        assert_eq!(
            p("/files/{*rest}").matches("/files"),
            Some(vec![("rest", "")])
        );
        assert_eq!(p("/a/b").matches("/a/b"), Some(vec![]));
        assert_eq!(p("/a/b").matches("/a/c"), None);
        for bad in [
            "", "x", "/a//b", "/a/", "/{}", "/{*r}/x", "/{a}/{a}", "/{A}", "/a b", "/%2e", "/..",
            "/a/./b",
        ] {
            assert!(bad.parse::<PathPattern>().is_err(), "{bad:?}");
        }
        assert!("GET".parse::<MethodPattern>().is_ok());
        assert!("*".parse::<MethodPattern>().is_ok());
        assert!("get".parse::<MethodPattern>().is_err());
        assert!("".parse::<MethodPattern>().is_err());
    }
}
