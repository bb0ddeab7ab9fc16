//! Shared storage for the service's tests: with `WARDEN_TEST_BACKEND=shared`, each test gets a
//! fresh PostgreSQL database (on `WARDEN_TEST_PG_URL`), a fresh prefix in the S3 bucket of
//! `WARDEN_TEST_S3` (endpoint and keys from `AWS_*`) and the fleet's two key files, as a
//! `[storage]` section to append to the operator config. `scripts/shared-storage.sh start`
//! sets the variables; `scripts/test.sh` runs the service's tests a second time this way.
//!
//! With `WARDEN_TEST_PG_CA` (the script's server has TLS unless `WARDEN_SHARED_TLS=0`), every
//! URL asks for `sslmode=verify-full` with that CA (`sslrootcert`): the runners reach
//! PostgreSQL as a fleet would, over TLS with the server's certificate and name verified.

use std::path::Path;
use std::process::Command;

/// Whether this run's service tests are on shared storage.
pub fn on() -> bool {
    std::env::var("WARDEN_TEST_BACKEND").is_ok_and(|b| b == "shared")
}

/// One test's database, bucket prefix and keys; the database is dropped with it.
pub struct SharedStorage {
    admin_url: String,
    db: String,
    pub section: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("WARDEN_TEST_BACKEND=shared needs {name}: eval \"$(bash scripts/shared-storage.sh start)\" first")
    })
}

/// Percent-encodes a URL parameter's value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `url` asking for TLS verified against `ca` (a PEM file), when there is one.
fn over_tls(url: String, ca: Option<&str>) -> String {
    match ca.filter(|c| !c.is_empty()) {
        Some(ca) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}sslmode=verify-full&sslrootcert={}", enc(ca))
        }
        None => url,
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A 32-byte key file, 0600, as an operator makes one (`head -c 32 /dev/urandom`).
fn key_file(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, &b).unwrap();
}

/// A PostgreSQL server of one test's own (`scripts/shared-storage.sh` with a state folder of
/// its own), for a test that restarts it: the other tests keep theirs. Stopped on drop. Its
/// `url` asks for TLS verified against its own CA, unless it was started without TLS.
pub struct OwnServer {
    state: String,
    pub url: String,
}

fn script() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/shared-storage.sh"
    )
}

impl OwnServer {
    pub fn start() -> OwnServer {
        // Under /tmp itself: the server runs as the `postgres` user, who must reach it.
        let state = format!("/tmp/warden-own-pg.{}", random_hex());
        let out = Command::new("bash")
            .args([script(), "start"])
            .env("WARDEN_SHARED_DIR", &state)
            .env("WARDEN_SHARED_S3", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let export = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches(['"', '\'']).to_string())
        };
        let url = over_tls(
            export("WARDEN_TEST_PG_URL").unwrap(),
            export("WARDEN_TEST_PG_CA").as_deref(),
        );
        OwnServer { state, url }
    }

    pub fn restart(&self) {
        let out = Command::new("bash")
            .args([script(), "restart-pg"])
            .env("WARDEN_SHARED_DIR", &self.state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([script(), "stop"])
            .env("WARDEN_SHARED_DIR", &self.state)
            .output();
    }
}

impl SharedStorage {
    /// A fresh one, its key files in `dir`.
    pub fn new(dir: &Path) -> SharedStorage {
        let ca = std::env::var("WARDEN_TEST_PG_CA").ok();
        SharedStorage::on(dir, over_tls(var("WARDEN_TEST_PG_URL"), ca.as_deref()))
    }

    /// A fresh one on the server `admin_url` names (its maintenance database; its query, TLS
    /// included, is kept in the storage's URL).
    pub fn on(dir: &Path, admin_url: String) -> SharedStorage {
        let bucket = var("WARDEN_TEST_S3");
        let db = format!("warden_s_{}", random_hex());
        psql(&admin_url, &format!("CREATE DATABASE {db}"));
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let (root, _) = base.rsplit_once('/').unwrap();
        let url = match query {
            "" => format!("{root}/{db}"),
            q => format!("{root}/{db}?{q}"),
        };
        let secret_key = dir.join("fleet-secret.key");
        let audit_key = dir.join("fleet-audit.key");
        key_file(&secret_key);
        key_file(&audit_key);
        let section = format!(
            "\n[storage]\nurl = {url:?}\nblobs = \"{}/{}\"\nsecret_key_file = {:?}\naudit_key_file = {:?}\n",
            bucket.trim_end_matches('/'),
            random_hex(),
            secret_key.display().to_string(),
            audit_key.display().to_string(),
        );
        SharedStorage {
            admin_url,
            db,
            section,
        }
    }
}

impl Drop for SharedStorage {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin_url.as_str(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
            ])
            .output();
    }
}

/// Named `serve` so that the shared-storage run of the service's tests (`serve::`, as
/// `scripts/test.sh` filters them) includes it.
mod serve {
    use std::io::BufRead as _;
    use std::process::Stdio;

    use super::*;
    use crate::foundation::{keygen, trust_file};

    /// A runner on the shared storage of the tests: every connection it keeps to its database
    /// (the pool's, the registry listener's) is TLS, as the server sees them, and its log says
    /// so.
    #[test]
    fn a_runner_reaches_postgresql_over_verified_tls_only() {
        if !on() {
            return;
        }
        if !std::env::var("WARDEN_TEST_PG_CA").is_ok_and(|c| !c.is_empty()) {
            assert!(
                std::env::var_os("CI").is_none(),
                "WARDEN_TEST_PG_CA is not set, and CI must run the shared storage over TLS"
            );
            println!("skipped: WARDEN_TEST_PG_CA not set");
            return;
        }
        let t = tempfile::TempDir::new().unwrap();
        let storage = SharedStorage::new(t.path());
        assert!(
            storage.section.contains("sslmode=verify-full&sslrootcert="),
            "{}",
            storage.section
        );
        let p = keygen(t.path(), "warden-examples");
        let trust = trust_file(
            t.path(),
            "trust.toml",
            &[("warden-examples", &[&p.pem], &[])],
        );
        let config = t.path().join("policy.toml");
        std::fs::write(&config, &storage.section).unwrap();
        let log = t.path().join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(t.path().join("data"))
            .arg("--trust")
            .arg(&trust)
            .arg("--config")
            .arg(&config)
            .env(
                "WARDEN_ADMIN_TOKEN",
                "admin-token-0123456789-0123456789-abcdef",
            )
            .env(
                "WARDEN_RUNNER_TOKEN",
                "runner-token-0123456789-0123456789-abcdef",
            )
            .env_remove("WARDEN_TRUST_BUNDLE")
            .env_remove("WARDEN_AUDIT_KEY")
            .env("WARDEN_LOG", "info,warden::audit=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let seen = Command::new("psql")
            .args([storage.admin_url.as_str(), "-v", "ON_ERROR_STOP=1", "-tAc"])
            .arg(format!(
                "SELECT count(*) || ' ' || count(*) FILTER (WHERE s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = '{}' AND a.application_name = 'warden'",
                storage.db
            ))
            .output()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(
            line.starts_with("warden serve listening on "),
            "{line:?}\n{log}"
        );
        let seen = String::from_utf8_lossy(&seen.stdout).trim().to_owned();
        let n: Vec<u32> = seen.split(' ').map(|x| x.parse().unwrap()).collect();
        // The pool's connections and the registry's listener, every one TLS.
        assert!(n[0] >= 2, "{seen}");
        assert_eq!(n[1], n[0], "a connection in the clear: {seen}");
        assert!(
            log.contains("connected to PostgreSQL over TLS") && log.contains("TLSv1.3"),
            "{log}"
        );
    }
}
