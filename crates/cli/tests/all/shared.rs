//! Shared storage for the service's tests: with `WARDEN_TEST_BACKEND=shared`, each test gets a
//! fresh PostgreSQL database (on `WARDEN_TEST_PG_URL`), a fresh prefix in the S3 bucket of
//! `WARDEN_TEST_S3` (endpoint and keys from `AWS_*`) and the fleet's two key files, as a
//! `[storage]` section to append to the operator config. `scripts/shared-storage.sh start`
//! sets the variables; `scripts/test.sh` runs the service's tests a second time this way.

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
/// its own), for a test that restarts it: the other tests keep theirs. Stopped on drop.
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
        let url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export WARDEN_TEST_PG_URL="))
            .unwrap()
            .trim_matches(['"', '\''])
            .to_string();
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
        SharedStorage::on(dir, var("WARDEN_TEST_PG_URL"))
    }

    /// A fresh one on the server `admin_url` names (its maintenance database).
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
