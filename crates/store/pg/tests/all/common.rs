use std::ops::Deref;

use rand_core::{OsRng, RngCore as _};
use warden_kv::{BucketName, Quota, Scope};
use warden_store_pg::PgStore;

/// The suites' `fresh` for a test that has a database, or `return` from the test (skipped)
/// when there is no server: `suite_tests!(fresh_or_skip!(fresh_kv()))`. The `return` is
/// expanded inside each `#[test]` function, so it ends the test, not a closure.
macro_rules! fresh_or_skip {
    ($fresh:expr) => {{
        let Some(fresh) = $fresh else { return };
        move || fresh
    }};
}

/// Runs `sql` on the server's maintenance database (`WARDEN_TEST_PG_URL`).
fn admin(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.batch_execute(sql).await
    })
}

/// The server to test on, or `None` (and the test is skipped) outside CI.
pub fn server_url() -> Option<String> {
    match std::env::var("WARDEN_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "WARDEN_TEST_PG_URL is not set, and CI must run the PostgreSQL tests: \
             eval \"$(bash scripts/shared-storage.sh start)\" first"
        ),
        _ => {
            println!("skipped: WARDEN_TEST_PG_URL not set");
            None
        }
    }
}

/// The query that makes a store verify the test server's TLS (`WARDEN_TEST_PG_CA`, printed by
/// `scripts/shared-storage.sh`): `sslmode=verify-full&sslrootcert=...`, or `None` for a server
/// without TLS. The test server offers TLS, so a URL without it would be refused by warden
/// (`prefer` verifies what the server offers, against the Mozilla roots by default).
pub fn tls_query() -> Option<String> {
    let ca = std::env::var("WARDEN_TEST_PG_CA")
        .ok()
        .filter(|c| !c.is_empty())?;
    Some(format!("sslmode=verify-full&sslrootcert={}", enc(&ca)))
}

/// Percent-encodes a URL parameter's value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `url` with `params` added to its query.
pub fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// A new, empty database, dropped (with whatever is still connected to it) on drop.
pub struct TestDb {
    admin: String,
    name: String,
    /// For the store: over TLS, verified, when the server has it.
    url: String,
    /// For the tests' own SQL (tokio-postgres without TLS).
    plain: String,
}

impl TestDb {
    pub fn new() -> Option<TestDb> {
        let admin = server_url()?;
        let mut bytes = [0u8; 8];
        OsRng.fill_bytes(&mut bytes);
        let name = format!("warden_t_{}", hex::encode(bytes));
        self::admin(&admin, &format!("CREATE DATABASE {name}")).unwrap();
        // The maintenance URL with this database instead: `…/postgres` → `…/warden_t_…`.
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let (root, _) = base.rsplit_once('/').unwrap();
        let plain = match query {
            "" => format!("{root}/{name}"),
            q => format!("{root}/{name}?{q}"),
        };
        let url = match tls_query() {
            Some(tls) => with_params(&plain, &tls),
            None => plain.clone(),
        };
        Some(TestDb {
            admin,
            name,
            url,
            plain,
        })
    }

    /// The store's URL for this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store's URL with `params` added.
    pub fn url_with(&self, params: &str) -> String {
        with_params(&self.url, params)
    }

    /// The URL without TLS parameters (the tests of TLS add their own).
    pub fn plain_url(&self) -> &str {
        &self.plain
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A store (a runner) on this database.
    pub fn connect(&self) -> PgStore {
        PgStore::connect(&self.url).unwrap()
    }

    /// Runs `sql` on this database behind warden's back, as an intruder or an operator would.
    pub fn sql(&self, sql: &str) {
        admin(&self.plain, sql).unwrap();
    }

    /// The first column of the first row of `sql`, as text.
    pub fn query_text(&self, sql: &str) -> Option<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.plain, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let rows = client.simple_query(sql).await.unwrap();
            rows.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = admin(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("dropping {}: {e}", self.name);
        }
    }
}

/// A store on a fresh database, which lives as long as it: what the suites' macros take.
pub struct Fresh<T> {
    store: T,
    _db: TestDb,
}

impl<T> Fresh<T> {
    pub fn new(open: impl FnOnce(&PgStore) -> T) -> Option<Fresh<T>> {
        let db = TestDb::new()?;
        let pg = db.connect();
        Some(Fresh {
            store: open(&pg),
            _db: db,
        })
    }
}

impl<T> Deref for Fresh<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.store
    }
}

pub fn scope(tenant: &str, ext: &str, bucket: &str) -> Scope {
    Scope::new(
        tenant.parse().unwrap(),
        ext.parse().unwrap(),
        BucketName::new(bucket).unwrap(),
    )
}

pub fn q() -> Quota {
    Quota::default()
}
