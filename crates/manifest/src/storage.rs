//! `[storage]` of the operator config: where a runner keeps what must outlive it.
//!
//! Absent, the embedded default: SQLite and files in `--data`. With `url`, shared storage for a
//! fleet of runners: PostgreSQL for every table (registry, kv, secrets, audit, rate state) and
//! S3-compatible object storage for blobs (`blobs`, endpoint and credentials from the standard
//! `AWS_*` variables).
//!
//! ```toml
//! [storage]
//! url = "postgres://warden@db.internal/warden"
//! blobs = "s3://bucket/prefix"
//! secret_key_file = "/etc/warden/secret.key"   # the same 32-byte key on every runner
//! audit_key_file = "/etc/warden/audit.key"     # the same key on every runner
//! ```
//!
//! The two key files are required with `url`, and must already exist: runners that each made
//! their own would split the secrets and the audit chain between them.

use std::fmt;
use std::path::PathBuf;

use crate::strict::{Table, TomlError, Value};

/// Where a runner's state lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Storage {
    /// SQLite and files in the data dir (the default).
    #[default]
    Embedded,
    /// PostgreSQL and S3-compatible object storage, shared by every runner.
    Shared(SharedStorage),
}

/// `[storage]` with `url`: everything a runner needs to join a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStorage {
    pub database: DatabaseUrl,
    pub blobs: BlobsUrl,
    /// The key secrets are sealed with (32 bytes, the same file on every runner).
    pub secret_key_file: PathBuf,
    /// The key of the audit head's MAC (the same file on every runner).
    pub audit_key_file: PathBuf,
    /// `local_files = true`: installs may have folder mounts, which each runner keeps in its
    /// own data dir (not shared: a tenant's files then differ from runner to runner). Default
    /// false: such installs are refused.
    pub local_files: bool,
}

/// A `postgres://` or `postgresql://` URL. It may hold a password, so it is never shown whole:
/// `Display` and `Debug` print it with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

/// Query parameters a URL's display shows with their value.
const SHOWN_PARAMETERS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "keepalives",
    "options",
];

/// Longest database URL accepted.
const MAX_URL_BYTES: usize = 2048;

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        if text.len() > MAX_URL_BYTES {
            return Err(format!("longer than {MAX_URL_BYTES} bytes"));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("holds a space or a control character".into());
        }
        let Some(rest) = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
        else {
            return Err(
                "must be a postgres:// URL (the key=value form of libpq is not accepted)".into(),
            );
        };
        // libpq ends the user part at the first '/', so a '/', '?' or '#' in a password
        // would make it part of the host or the path, shown in every message about the URL.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[authority_end..].contains('@') {
            return Err(
                "has an '@' after a '/', '?' or '#': percent-encode those characters in the user and password (%2F, %3F, %23, %40)"
                    .into(),
            );
        }
        let authority = &rest[..authority_end];
        let host = authority.rsplit('@').next().unwrap_or_default();
        let socket = query_param(rest, "host").is_some();
        if host.is_empty() && !socket {
            return Err("names no host (give host:port, or ?host=/socket/dir)".into());
        }
        Ok(DatabaseUrl(text.to_owned()))
    }

    /// The URL itself, for the driver only: it may hold a password.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL holds a password (then the config file is a secret too).
    pub fn has_password(&self) -> bool {
        let rest = self.rest();
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
        userinfo.is_some_and(|u| u.contains(':')) || query_param(rest, "password").is_some()
    }

    fn rest(&self) -> &str {
        self.0
            .strip_prefix("postgres://")
            .or_else(|| self.0.strip_prefix("postgresql://"))
            .unwrap_or(&self.0)
    }
}

/// The value of `name` in the URL's query, if given.
fn query_param<'a>(rest: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = rest.split_once('?')?;
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

impl fmt::Display for DatabaseUrl {
    /// The URL with its password (in the user part or the query) replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = &self.0[..self.0.len() - self.rest().len()];
        let rest = self.rest();
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        f.write_str(scheme)?;
        match authority.rsplit_once('@') {
            Some((user, host)) => match user.split_once(':') {
                Some((name, _)) => write!(f, "{name}:***@{host}")?,
                None => write!(f, "{user}@{host}")?,
            },
            None => f.write_str(authority)?,
        }
        match tail.split_once('?') {
            Some((path, query)) => {
                write!(f, "{path}?")?;
                for (i, kv) in query.split('&').enumerate() {
                    if i > 0 {
                        f.write_str("&")?;
                    }
                    // Only parameters known to hold nothing secret are shown as they are: a
                    // name libpq would decode (`passw%6Frd`) or another secret one
                    // (`sslpassword`) is not on the list.
                    match kv.split_once('=') {
                        Some((k, _)) if !SHOWN_PARAMETERS.contains(&k) => write!(f, "{k}=***")?,
                        _ => f.write_str(kv)?,
                    }
                }
                Ok(())
            }
            None => f.write_str(tail),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `s3://bucket/prefix`: where blobs live, `<prefix>/sha256/<hex>` in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobsUrl {
    pub bucket: String,
    /// Without leading or trailing slashes; empty for the bucket's root.
    pub prefix: String,
}

impl BlobsUrl {
    pub fn parse(text: &str) -> Result<BlobsUrl, String> {
        let Some(rest) = text.strip_prefix("s3://") else {
            return Err("must be an s3:// URL (s3://bucket/prefix)".into());
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !(3..=63).contains(&bucket.len())
            || !bucket.chars().all(ok_char)
            || !edge(bucket.chars().next())
            || !edge(bucket.chars().last())
            || bucket.contains("..")
        {
            return Err(format!(
                "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit)"
            ));
        }
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if !prefix.is_empty() {
            for segment in prefix.split('/') {
                let fine = segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if segment.is_empty() || segment == "." || segment == ".." || !fine {
                    return Err(format!(
                        "the prefix {prefix:?} must be folder names of A-Z, a-z, 0-9, '-', '_', '.' joined by '/'"
                    ));
                }
            }
        }
        Ok(BlobsUrl {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl fmt::Display for BlobsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Reads `[storage]`.
pub(crate) fn parse(t: &Table<'_, '_>) -> Result<Storage, TomlError> {
    let url = t.get("url");
    let blobs = t.get("blobs");
    let secret_key = t.get("secret_key_file");
    let audit_key = t.get("audit_key_file");
    let local_files = t.get("local_files");
    let Some(url) = url else {
        // Without a database there is nothing to share: the other keys would be ignored.
        if let Some(v) = blobs.or(secret_key).or(audit_key).or(local_files) {
            return Err(v.error(
                "only with `url`: without it, everything is kept in --data (the embedded default)",
            ));
        }
        t.finish_ref()?;
        return Ok(Storage::Embedded);
    };
    let database = DatabaseUrl::parse(url.as_str()?).map_err(|e| url.error(e))?;
    let need = |what: &str| t.error(format!("`url` needs `{what}` too: {}", why(what)));
    let blobs = blobs.ok_or_else(|| need("blobs"))?;
    let blobs_url = BlobsUrl::parse(blobs.as_str()?).map_err(|e| blobs.error(e))?;
    let secret_key_file = key_path(&secret_key.ok_or_else(|| need("secret_key_file"))?)?;
    let audit_key_file = key_path(&audit_key.ok_or_else(|| need("audit_key_file"))?)?;
    let local_files = match local_files {
        Some(v) => v.as_bool()?,
        None => false,
    };
    t.finish_ref()?;
    Ok(Storage::Shared(SharedStorage {
        database,
        blobs: blobs_url,
        secret_key_file,
        audit_key_file,
        local_files,
    }))
}

fn why(what: &str) -> &'static str {
    match what {
        "blobs" => "every runner must read the bundles another one stored",
        "secret_key_file" => "every runner must open the secrets another one sealed",
        _ => "every runner must extend the one audit chain under the same key",
    }
}

/// A key file's path: absolute, so that the directory a runner was started in cannot decide
/// which key it uses.
fn key_path(v: &Value<'_, '_>) -> Result<PathBuf, TomlError> {
    let text = v.as_str()?;
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(v.error(format!(
            "{text:?} must be an absolute path (the same file on every runner)"
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Config;

    const SHARED: &str = "[storage]\nurl = \"postgres://warden:hunter2@db:5432/warden?sslmode=require\"\n\
        blobs = \"s3://warden-blobs/prod/a\"\nsecret_key_file = \"/etc/warden/secret.key\"\n\
        audit_key_file = \"/etc/warden/audit.key\"\n";

    #[test]
    fn no_storage_section_is_the_embedded_default() {
        let c = Config::parse("[policy]\nmax_memory = \"16MiB\"\n").unwrap();
        assert_eq!(c.storage, Storage::Embedded);
        let c = Config::parse("[storage]\n").unwrap();
        assert_eq!(c.storage, Storage::Embedded);
    }

    #[test]
    fn a_full_section_parses_and_never_shows_the_password() {
        let c = Config::parse(SHARED).unwrap();
        let Storage::Shared(s) = &c.storage else {
            panic!("expected shared storage, got {:?}", c.storage)
        };
        assert_eq!(s.blobs.bucket, "warden-blobs");
        assert_eq!(s.blobs.prefix, "prod/a");
        assert_eq!(s.secret_key_file, PathBuf::from("/etc/warden/secret.key"));
        assert!(s.database.has_password());
        assert_eq!(
            s.database.to_string(),
            "postgres://warden:***@db:5432/warden?sslmode=require"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(s.database.expose().contains("hunter2"));
    }

    #[test]
    fn a_password_in_the_query_is_hidden_too() {
        let u =
            DatabaseUrl::parse("postgresql://db/w?user=a&password=s3cret&sslmode=require").unwrap();
        assert!(u.has_password());
        assert_eq!(
            u.to_string(),
            "postgresql://db/w?user=a&password=***&sslmode=require"
        );
        let u = DatabaseUrl::parse("postgres://warden@127.0.0.1:5433/w").unwrap();
        assert!(!u.has_password());
        assert_eq!(u.to_string(), "postgres://warden@127.0.0.1:5433/w");
    }

    #[test]
    fn bad_sections_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("[storage]\nblobs = \"s3://b-1/x\"\n", "only with `url`"),
            ("[storage]\naudit_key_file = \"/k\"\n", "only with `url`"),
            ("[storage]\nurl = \"postgres://db/w\"\n", "needs `blobs`"),
            (
                "[storage]\nurl = \"postgres://db/w\"\nblobs = \"s3://bkt\"\naudit_key_file = \"/a\"\n",
                "needs `secret_key_file`",
            ),
            (
                "[storage]\nurl = \"postgres://db/w\"\nblobs = \"s3://bkt\"\nsecret_key_file = \"/s\"\n",
                "needs `audit_key_file`",
            ),
            (
                "[storage]\nurl = \"postgres://db/w\"\nblobs = \"s3://bkt\"\nsecret_key_file = \"s.key\"\naudit_key_file = \"/a\"\n",
                "absolute path",
            ),
            ("[storage]\nurl = \"mysql://db/w\"\n", "postgres:// URL"),
            ("[storage]\nurl = \"host=db dbname=w\"\n", "space"),
            ("[storage]\nurl = \"postgres:///w\"\n", "names no host"),
            (
                "[storage]\nurl = \"postgres://db/w\"\nblobs = \"https://bkt/x\"\n",
                "s3:// URL",
            ),
            (
                "[storage]\nurl = \"postgres://db/w\"\nblobs = \"s3://B\"\n",
                "bucket name",
            ),
            (
                "[storage]\nurl = \"postgres://db/w\"\nblobs = \"s3://bkt/a/../b\"\n",
                "prefix",
            ),
            (
                "[storage]\nurl = \"postgres://db/w\"\nblobs = \"s3://bkt//b\"\n",
                "prefix",
            ),
            ("[storage]\nuri = \"postgres://db/w\"\n", "uri"),
            ("[storage]\nurl = 5\n", "string"),
        ];
        for (text, want) in cases {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e:?} should say {want:?}");
            assert!(
                e.contains("storage"),
                "{text:?}: {e:?} should name the section"
            );
        }
    }

    /// Outside attack: a password holding a '/' or '?' made the whole URL the host's part and
    /// was shown; a parameter name libpq decodes, or another secret parameter, was shown too.
    #[test]
    fn no_form_of_a_password_is_shown() {
        for text in [
            "postgres://u:pa/S3CRET@db/w",
            "postgres://u:pa?S3CRET@db/w",
            "postgres://u:pa#S3CRET@db/w",
        ] {
            let e = DatabaseUrl::parse(text).unwrap_err();
            assert!(!e.contains("S3CRET") && e.contains("percent-encode"), "{e}");
        }
        for text in [
            "postgres://db/w?passw%6Frd=S3CRET",
            "postgres://db/w?sslpassword=S3CRET&sslmode=require",
            "postgres://u:S3CRET@db/w",
            "postgres://u:pa%2FS3CRET@db/w",
        ] {
            let shown = DatabaseUrl::parse(text).unwrap().to_string();
            assert!(!shown.contains("S3CRET"), "{text} shown as {shown}");
        }
        let u = DatabaseUrl::parse("postgres://db/w?sslmode=require&application_name=a").unwrap();
        assert_eq!(
            u.to_string(),
            "postgres://db/w?sslmode=require&application_name=a"
        );
    }

    #[test]
    fn a_socket_folder_is_a_host() {
        let u = DatabaseUrl::parse("postgres:///warden?host=/run/postgresql").unwrap();
        assert!(!u.has_password());
    }

    #[test]
    fn bucket_urls_round_trip() {
        for text in ["s3://bkt", "s3://my.bucket-1/a/b_c/d.e"] {
            assert_eq!(BlobsUrl::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(BlobsUrl::parse("s3://bkt/p/").unwrap().prefix, "p");
    }
}
