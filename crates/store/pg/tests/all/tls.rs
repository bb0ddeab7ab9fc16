//! TLS to the server, on the test server's TLS (`scripts/shared-storage.sh` makes a throwaway CA
//! and a certificate for 127.0.0.1 and localhost, and prints `WARDEN_TEST_PG_CA`): every
//! connection a store makes is encrypted and verified; a certificate from another CA, a host
//! name the certificate does not name, and a server without TLS are refused with a clear
//! reason; a password in the URL is in none of these errors.
//!
//! Skipped like the other tests without `WARDEN_TEST_PG_URL`; with it but without
//! `WARDEN_TEST_PG_CA` they are skipped too, unless `CI` is set (then they fail).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use warden_store_pg::{ChangeKind, PgError, PgStore};

use crate::common::{TestDb, enc, server_url, with_params as with};

const PASSWORD: &str = "s3cret-pw";

/// The CA the test server's certificate is signed by, or `None` (skipped) outside CI.
fn ca() -> Option<PathBuf> {
    server_url()?;
    match std::env::var("WARDEN_TEST_PG_CA") {
        Ok(ca) if !ca.is_empty() => Some(PathBuf::from(ca)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "WARDEN_TEST_PG_CA is not set, and CI must run the TLS tests: start the server \
             with scripts/shared-storage.sh (without WARDEN_SHARED_TLS=0)"
        ),
        _ => {
            println!("skipped: WARDEN_TEST_PG_CA not set");
            None
        }
    }
}

/// A file next to the CA (`other-ca.pem`, `client.pem`, `client.key`).
fn beside(ca: &Path, name: &str) -> String {
    ca.with_file_name(name).display().to_string()
}

/// `url` (`postgres://user@host:port/...`) with a password, and `host` instead of its host.
fn as_user(url: &str, user: Option<&str>, host: Option<&str>) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (who, rest) = rest.split_once('@').unwrap();
    let (hostport, path) = rest.split_once('/').unwrap();
    let (old_host, port) = hostport.rsplit_once(':').unwrap();
    format!(
        "{scheme}://{}:{PASSWORD}@{}:{port}/{path}",
        user.unwrap_or(who),
        host.unwrap_or(old_host)
    )
}

/// The error and its causes, as the CLI prints them.
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// Connecting to `url` fails with a TLS error naming `host` and saying `why`, without the
/// password.
fn refused(url: &str, host: &str, why: &[&str]) -> String {
    let e = PgStore::connect(url).unwrap_err();
    let text = chain(&e);
    assert!(matches!(e, PgError::Tls { .. }), "not a TLS error: {text}");
    assert!(text.contains(&format!("TLS to {host}:")), "{text}");
    for w in why {
        assert!(text.contains(w), "{w:?} not in: {text}");
    }
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!format!("{e:?}").contains(PASSWORD), "{e:?}");
    text
}

/// verify-full with the test CA: the connection made at connect (a dedicated one), the pool's,
/// and both kinds of change listener are all TLS; a change still arrives.
#[test]
fn every_connection_is_encrypted_and_verified() {
    let Some(ca) = ca() else { return };
    let db = TestDb::new().unwrap();
    let url = with(
        &as_user(db.plain_url(), None, None),
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            enc(&ca.display().to_string())
        ),
    );
    let store = PgStore::connect(&url).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(store.tls_version(), Some("TLSv1.3"));
    let _cached = store.registry_cached().unwrap();
    let changes = store.changes().unwrap();
    let v = store.notify(ChangeKind::Trust, None, None).unwrap();
    let change = changes.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((change.kind, change.version), (ChangeKind::Trust, v));
    // warden's connections to this database, seen by the server: all, encrypted, listening.
    let seen = db
        .query_text(
            "SELECT count(*) || ' ' || count(*) FILTER (WHERE s.ssl) || ' '
                    || count(*) FILTER (WHERE s.ssl AND a.query = 'LISTEN warden_changes')
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = current_database() AND a.application_name = 'warden'
               AND a.pid <> pg_backend_pid()",
        )
        .unwrap();
    let n: Vec<u32> = seen.split(' ').map(|x| x.parse().unwrap()).collect();
    // At least one pooled connection and the two listeners; every one of them TLS.
    assert!(n[0] >= 3, "{seen}");
    assert_eq!(n[1], n[0], "a connection in the clear: {seen}");
    assert!(n[2] >= 1, "{seen}");
    // The certificate names localhost too (a DNS name, where 127.0.0.1 was an IP address).
    let by_name = with(
        &as_user(db.plain_url(), None, Some("localhost")),
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            enc(&ca.display().to_string())
        ),
    );
    let store = PgStore::connect(&by_name).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(store.tls_version(), Some("TLSv1.3"));
}

/// A CA that did not sign the server's certificate, or none given (the Mozilla bundle, which
/// has not signed it either): refused, whatever the mode, `prefer` included (never a fallback
/// to the clear when the server offers TLS).
#[test]
fn a_certificate_from_another_ca_is_refused() {
    let Some(ca) = ca() else { return };
    let db = TestDb::new().unwrap();
    let base = as_user(db.plain_url(), None, None);
    let other = beside(&ca, "other-ca.pem");
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let url = with(
            &base,
            &format!("sslmode={mode}&sslrootcert={}", enc(&other)),
        );
        refused(&url, "127.0.0.1", &["certificate not trusted", &other]);
        let url = with(&base, &format!("sslmode={mode}"));
        refused(&url, "127.0.0.1", &["certificate not trusted", "Mozilla"]);
    }
    // No sslmode at all is prefer.
    refused(&base, "127.0.0.1", &["certificate not trusted"]);
}

/// The host name verified is the URL's host, even when `hostaddr` says where to connect; and
/// verify-ca checks it too.
#[test]
fn a_host_name_the_certificate_does_not_name_is_refused() {
    let Some(ca) = ca() else { return };
    let db = TestDb::new().unwrap();
    let ca = enc(&ca.display().to_string());
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let url = with(
            &as_user(db.plain_url(), None, Some("db.invalid")),
            &format!("hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={ca}"),
        );
        refused(&url, "db.invalid", &["name mismatch", "\"db.invalid\""]);
    }
}

/// `prefer` and no sslmode use TLS when the server offers it; `disable` does not.
#[test]
fn prefer_uses_tls_when_offered_and_disable_does_not() {
    let Some(ca) = ca() else { return };
    let db = TestDb::new().unwrap();
    let ca = enc(&ca.display().to_string());
    let base = as_user(db.plain_url(), None, None);
    for q in [
        format!("sslmode=prefer&sslrootcert={ca}"),
        format!("sslrootcert={ca}"),
    ] {
        let store = PgStore::connect(&with(&base, &q)).unwrap_or_else(|e| panic!("{}", chain(&e)));
        assert_eq!(store.tls_version(), Some("TLSv1.3"), "{q}");
        assert_eq!(store.clear_text_warning(), None, "{q}");
    }
    let store = PgStore::connect(&with(&base, "sslmode=disable")).unwrap();
    assert_eq!(store.tls_version(), None);
    // Asked for: nothing to warn of.
    assert_eq!(store.clear_text_warning(), None);
}

/// The role `warden_cert` logs in by certificate only (`pg_hba` "cert"): with `sslcert` and
/// `sslkey` it connects (and migrates its database), without them the server refuses it.
#[test]
fn a_client_certificate_logs_in() {
    let Some(ca) = ca() else { return };
    let db = TestDb::new().unwrap();
    db.sql(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I OWNER TO warden_cert', current_database()); END $$",
    );
    let tls = format!(
        "sslmode=verify-full&sslrootcert={}",
        enc(&ca.display().to_string())
    );
    let url = with(&as_user(db.plain_url(), Some("warden_cert"), None), &tls);
    let with_cert = with(
        &url,
        &format!(
            "sslcert={}&sslkey={}",
            enc(&beside(&ca, "client.pem")),
            enc(&beside(&ca, "client.key"))
        ),
    );
    let store = PgStore::connect(&with_cert).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(store.tls_version(), Some("TLSv1.3"));
    assert_eq!(
        db.query_text("SELECT tableowner FROM pg_tables WHERE tablename = 'warden_meta'"),
        Some("warden_cert".into())
    );
    let e = PgStore::connect(&url).unwrap_err();
    let text = chain(&e);
    assert!(
        text.contains("requires a valid client certificate"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}

/// A PostgreSQL server of this test's own, without TLS (`WARDEN_SHARED_TLS=0`); stopped on
/// drop.
struct PlainServer {
    state: String,
    url: String,
}

fn script() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../scripts/shared-storage.sh"
    )
}

impl PlainServer {
    fn start() -> PlainServer {
        let mut b = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        // Under /tmp itself: the server runs as the `postgres` user, who must reach it.
        let state = format!("/tmp/warden-plain-pg.{}", hex::encode(b));
        let out = Command::new("bash")
            .args([script(), "start"])
            .env("WARDEN_SHARED_DIR", &state)
            .env("WARDEN_SHARED_S3", "0")
            .env("WARDEN_SHARED_TLS", "0")
            .output()
            .unwrap();
        // Stopped on drop from here on, whatever fails below.
        let mut server = PlainServer {
            state,
            url: String::new(),
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("WARDEN_TEST_PG_CA"), "{stdout}");
        server.url = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export WARDEN_TEST_PG_URL="))
            .unwrap()
            .to_owned();
        server
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([script(), "stop"])
            .env("WARDEN_SHARED_DIR", &self.state)
            .output();
    }
}

/// A server without TLS: every mode that requires TLS refuses it, naming the mode; `prefer`
/// connects in the clear (and says so through `tls_version`).
#[test]
fn a_server_without_tls_is_refused_unless_prefer() {
    let Some(ca) = ca() else { return };
    let server = PlainServer::start();
    // Its maintenance database: the server is this test's alone.
    let base = as_user(&server.url, None, None);
    let ca = enc(&ca.display().to_string());
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = with(&base, &format!("sslmode={mode}&sslrootcert={ca}"));
        refused(
            &url,
            "127.0.0.1",
            &[&format!(
                "the server offers no TLS, and sslmode={mode} requires it"
            )],
        );
    }
    let store = PgStore::connect(&with(&base, &format!("sslmode=prefer&sslrootcert={ca}")))
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(store.tls_version(), None);
    // What every command then prints on stderr.
    let warning = store.clear_text_warning().unwrap();
    assert!(warning.contains("in the clear"), "{warning}");
}
