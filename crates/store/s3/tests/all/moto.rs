//! The S3 server the tests use, and a fresh store on it.
//!
//! With `WARDEN_TEST_S3=s3://bucket` set, a harness started the server and exported the
//! `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true`, keys, region): the tests use them.
//! Otherwise the first test starts `moto_server -H 127.0.0.1 -p PORT` on a free port and
//! creates the bucket. The server is stopped when the test binary exits, however it exits: it
//! runs under a shell that kills it once the binary's end of its stdin pipe closes.
//! Without moto the tests are skipped, except under CI (`CI` set), where they fail.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};
use rand_core::{OsRng, RngCore as _};
use tempfile::TempDir;
use warden_bundle::ContentHash;
use warden_manifest::BlobsUrl;
use warden_store_s3::{HyperConnector, S3Blobs};

/// The bucket of a moto this binary starts.
const BUCKET: &str = "warden-test";

/// Where the tests' S3 is.
pub struct Server {
    pub bucket: String,
    /// The settings a store needs on top of the environment (empty when a harness exported
    /// them).
    settings: Vec<(&'static str, String)>,
    /// Held for the life of the binary: closing it stops moto.
    _guard: Option<Mutex<(Child, ChildStdin)>>,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();

impl Server {
    /// object_store on the tests' bucket, configured as the stores are.
    fn raw_store(&self) -> AmazonS3 {
        let mut b = AmazonS3Builder::from_env();
        for (k, v) in &self.settings {
            b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
        }
        b.with_bucket_name(&self.bucket)
            .with_http_connector(HyperConnector)
            .build()
            .unwrap()
    }
}

/// The tests' S3, started on first use; `None` (after saying so) when there is none here.
pub fn server() -> Option<&'static Server> {
    SERVER.get_or_init(start).as_ref()
}

fn start() -> Option<Server> {
    if let Ok(url) = std::env::var("WARDEN_TEST_S3") {
        let url = BlobsUrl::parse(&url).expect("WARDEN_TEST_S3 is s3://bucket");
        assert!(
            std::env::var_os("AWS_ENDPOINT").is_some()
                || std::env::var_os("AWS_ENDPOINT_URL").is_some(),
            "WARDEN_TEST_S3 is set without AWS_ENDPOINT"
        );
        return Some(Server {
            bucket: url.bucket,
            settings: Vec::new(),
            _guard: None,
        });
    }
    let Some(moto) = find_on_path("moto_server") else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "moto_server not found, and CI needs the S3 tests: pip install 'moto[server]==5.2.1'"
            );
        }
        // Past the test harness's capture, so that the run shows it once.
        let _ = writeln!(std::io::stderr(), "skipped: moto_server not found");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moto.log");
    // `read` returns when this binary's end of the pipe closes (at its exit, even a kill -9),
    // and the shell then stops moto.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" -H 127.0.0.1 -p "$1" >"$2" 2>&1 & m=$!; read -r _; kill "$m""#)
        .arg(&moto)
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Ready once it answers; the bucket is made by a plain PUT (moto checks no signature).
    loop {
        match raw("PUT", &endpoint, &format!("/{BUCKET}"), b"") {
            Ok(200) => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!(
                "moto on port {port} did not start: {other:?}; see {}",
                log.display()
            ),
        }
    }
    Some(Server {
        bucket: BUCKET.to_owned(),
        settings: vec![
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ],
        _guard: Some(Mutex::new((child, stdin))),
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// One HTTP/1.1 request without signature (moto accepts them): the status code.
pub fn raw(method: &str, endpoint: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let addr: SocketAddr = endpoint
        .trim_start_matches("http://")
        .parse()
        .map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))
}

/// A new prefix in the tests' bucket.
pub fn fresh_url(server: &Server) -> BlobsUrl {
    let mut id = [0u8; 8];
    OsRng.fill_bytes(&mut id);
    BlobsUrl {
        bucket: server.bucket.clone(),
        prefix: format!("t/{}", hex::encode(id)),
    }
}

/// A store on the tests' S3 at `url`, its cache in `cache`, with `extra` settings last.
pub fn open(server: &Server, url: &BlobsUrl, cache: &Path, extra: &[(&str, &str)]) -> S3Blobs {
    try_open(server, url, cache, extra).unwrap()
}

pub fn try_open(
    server: &Server,
    url: &BlobsUrl,
    cache: &Path,
    extra: &[(&str, &str)],
) -> Result<S3Blobs, warden_registry::BlobError> {
    let mut settings: Vec<(&str, &str)> = server
        .settings
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    settings.extend_from_slice(extra);
    S3Blobs::open_with(url, cache, &settings)
}

/// A store under a new prefix with a new cache dir, which live as long as it.
pub struct Fresh {
    store: S3Blobs,
    pub url: BlobsUrl,
    pub server: &'static Server,
    cache: TempDir,
}

impl Fresh {
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// The local copy of `hash`.
    pub fn cached(&self, hash: &ContentHash) -> PathBuf {
        self.cache_dir()
            .join("blobs/sha256")
            .join(hex::encode(hash.as_bytes()))
    }

    /// Writes `bytes` as the object of `hash`, straight to S3 (signed: moto refuses an
    /// anonymous overwrite).
    pub fn put_raw(&self, hash: &ContentHash, bytes: &[u8]) {
        let path = ObjectPath::from(format!(
            "{}/sha256/{}",
            self.url.prefix,
            hex::encode(hash.as_bytes())
        ));
        let store = self.server.raw_store();
        let payload = PutPayload::from(bytes.to_vec());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(store.put(&path, payload))
            .unwrap();
    }
}

impl Deref for Fresh {
    type Target = S3Blobs;
    fn deref(&self) -> &S3Blobs {
        &self.store
    }
}

/// A store under a new prefix; `None` when there is no S3 here.
pub fn fresh() -> Option<Fresh> {
    let server = server()?;
    let cache = TempDir::new().unwrap();
    let url = fresh_url(server);
    Some(Fresh {
        store: open(server, &url, cache.path(), &[]),
        url,
        server,
        cache,
    })
}

/// Damage behind the store's back: the object replaced in S3, and the local copy removed so
/// that the next read is of the object.
pub fn overwrite(fresh: &Fresh, hash: &ContentHash, bytes: &[u8]) {
    fresh.put_raw(hash, bytes);
    match std::fs::remove_file(fresh.cached(hash)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }
}
