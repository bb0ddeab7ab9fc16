//! Paths inside a bundle and paths inside the guest's file system.

use std::fmt;
use std::str::FromStr;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(String);

/// A path inside a bundle: relative, `/`-separated, no `.`/`..`/empty segments, at most
/// [`BundlePath::MAX_LEN`] bytes, and only portable ASCII characters.
///
/// The character set is deliberately narrow: no backslashes (Windows separators), no `:`,
/// no control bytes, nothing that Unicode normalization could make equal to another path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(String);

impl BundlePath {
    /// Fits a ustar name (100) plus prefix (155) plus the separator.
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `self` is `dir` or lies below it.
    pub fn is_within(&self, dir: &BundlePath) -> bool {
        self.0 == dir.0
            || (self.0.len() > dir.0.len()
                && self.0.starts_with(&dir.0)
                && self.0.as_bytes()[dir.0.len()] == b'/')
    }

    /// Segments of the path.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn allowed_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@' | b'~')
}

/// Checks the segments of a `/`-separated path (shared by bundle and guest paths).
fn check_segments(segments: &str, what: &str) -> Result<(), PathError> {
    for seg in segments.split('/') {
        match seg {
            "" => return Err(PathError(format!("{what} has an empty segment"))),
            "." | ".." => {
                return Err(PathError(format!(
                    "{what} may not contain '.' or '..' segments"
                )));
            }
            _ => {}
        }
        if let Some(bad) = seg.bytes().find(|&b| !allowed_path_byte(b)) {
            return Err(PathError(format!(
                "{what} contains {:?}; allowed are A-Z a-z 0-9 and . _ - + @ ~",
                char::from(bad)
            )));
        }
    }
    Ok(())
}

impl FromStr for BundlePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError("path is empty".into()));
        }
        if s.len() > Self::MAX_LEN {
            return Err(PathError(format!(
                "path is longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        if s.starts_with('/') {
            return Err(PathError("path must be relative to the bundle root".into()));
        }
        check_segments(s, "path")?;
        Ok(Self(s.to_string()))
    }
}

/// An absolute path in the guest's file system where a host folder is mounted, e.g. `/data`.
/// Normalized: no trailing slash, no `.`/`..`/empty segments, not `/` itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPath(String);

impl GuestPath {
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if one of the two paths contains the other (mounts may not nest).
    pub fn overlaps(&self, other: &GuestPath) -> bool {
        let (a, b) = (&self.0, &other.0);
        let nested = |outer: &str, inner: &str| {
            inner == outer
                || (inner.len() > outer.len()
                    && inner.starts_with(outer)
                    && inner.as_bytes()[outer.len()] == b'/')
        };
        nested(a, b) || nested(b, a)
    }
}

impl fmt::Display for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for GuestPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        let Some(rest) = s.strip_prefix('/') else {
            return Err(PathError(format!("guest path {s:?} must be absolute")));
        };
        if rest.is_empty() {
            return Err(PathError("the guest root '/' cannot be mounted".into()));
        }
        if s.len() > Self::MAX_LEN {
            return Err(PathError(format!(
                "guest path is longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        check_segments(rest, "guest path")?;
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths() {
        for ok in [
            "extension.toml",
            "assets/a.txt",
            "ui/img/logo@2x.png",
            ".well-known/x",
        ] {
            assert!(ok.parse::<BundlePath>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/x",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "C:x",
            "a\u{0}b",
            "a\nb",
            "caf\u{e9}",
            "a b",
            "./a",
            ".",
            "..",
        ] {
            assert!(bad.parse::<BundlePath>().is_err(), "{bad:?}");
        }
        assert!("a".repeat(256).parse::<BundlePath>().is_err());
        assert!("a".repeat(255).parse::<BundlePath>().is_ok());
    }

    #[test]
    fn within() {
        let ui: BundlePath = "ui".parse().unwrap();
        assert!(
            "ui/index.html"
                .parse::<BundlePath>()
                .unwrap()
                .is_within(&ui)
        );
        assert!("ui".parse::<BundlePath>().unwrap().is_within(&ui));
        assert!(
            !"uix/index.html"
                .parse::<BundlePath>()
                .unwrap()
                .is_within(&ui)
        );
    }

    #[test]
    fn guest_paths() {
        for ok in ["/data", "/a/b", "/assets"] {
            assert!(ok.parse::<GuestPath>().is_ok(), "{ok}");
        }
        for bad in [
            "data", "/", "//", "/data/", "/a/../b", "/a/./b", "/a//b", "/a\\b", "",
        ] {
            assert!(bad.parse::<GuestPath>().is_err(), "{bad:?}");
        }
        let p = |s: &str| s.parse::<GuestPath>().unwrap();
        assert!(p("/data").overlaps(&p("/data/x")));
        assert!(p("/data/x").overlaps(&p("/data")));
        assert!(p("/data").overlaps(&p("/data")));
        assert!(!p("/data").overlaps(&p("/database")));
    }
}
