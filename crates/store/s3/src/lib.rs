//! `warden_registry::BlobStore` on S3-compatible storage, for runners that share their blobs:
//! objects at `<prefix>/sha256/<hex>` in the bucket of `[storage] blobs = "s3://bucket/prefix"`.
//!
//! - [`BlobStore::put`] returns once S3 has acknowledged the upload. An object already there
//!   with the same size and the same MD5 ETag is not uploaded again (content-addressed); any
//!   other object under the name (damaged, replaced) is overwritten.
//! - [`BlobStore::get`] serves the verified local copy (`FileBlobs` in the cache dir, which
//!   re-checks the hash on every read), else downloads the object, never holding more than the
//!   size cap, checks its hash ([`BlobError::Corrupt`]), keeps a local copy, and returns it.
//! - Network and S3 failures are [`BlobError::Storage`] located at `s3://bucket/prefix` (never
//!   credentials), after object_store's bounded retries.
//!
//! Configuration is object_store's, from the standard `AWS_*` variables (`AWS_ENDPOINT`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_ALLOW_HTTP`, `AWS_TIMEOUT`, ...). The transport is [`HyperConnector`].

mod bridge;
mod http;

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use md5::{Digest as _, Md5};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt as _,
    PutPayload, RetryConfig,
};
use warden_bundle::ContentHash;
use warden_manifest::BlobsUrl;
use warden_registry::{BlobError, BlobStore};
use warden_store_sqlite::FileBlobs;
pub use warden_store_sqlite::MAX_BLOB_BYTES;

use crate::bridge::Bridge;
pub use crate::http::HyperConnector;

/// How long a connection may take to open (AWS recommends about 3 s), unless
/// `AWS_CONNECT_TIMEOUT` says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take to start, and its body may stall, unless `AWS_TIMEOUT` says
/// otherwise (uploads get one more second per MiB sent).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts after the first for a request that failed in a way that may pass (connection
/// refused or reset, 5xx, throttling), within [`RETRY_WINDOW`] of the first.
pub const RETRIES: usize = 3;
/// No retry starts later than this after the first attempt: an unreachable S3 is an error
/// within seconds, not object_store's default of minutes.
pub const RETRY_WINDOW: Duration = Duration::from_secs(5);

/// Blobs in an S3 bucket, with a verified local copy of those read or written.
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/sha256`.
    root: ObjectPath,
    /// `s3://bucket/prefix`: what errors name.
    location: String,
    cache: FileBlobs,
    max_bytes: u64,
    /// Bytes taken from S3 answers' bodies by `get`, and sent in uploads by `put`, for tests
    /// and metrics.
    downloaded: Arc<AtomicU64>,
    uploaded: AtomicU64,
    bridge: Bridge,
}

impl fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Blobs")
            .field("location", &self.location)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl S3Blobs {
    /// The blobs at `url`, configured from the `AWS_*` environment variables, with the local
    /// copies kept in `cache_dir/blobs` (a data dir: folders created 0700 if missing). Makes
    /// no request: an unreachable S3 shows at the first `put` or `get`.
    pub fn open(url: &BlobsUrl, cache_dir: &Path) -> Result<S3Blobs, BlobError> {
        S3Blobs::open_with(url, cache_dir, &[])
    }

    /// [`open`](S3Blobs::open), with `settings` applied after the environment: pairs of a
    /// variable's name and its value (`("AWS_ENDPOINT", "https://…")`), for a configuration
    /// that does not come from the process's environment. An unknown name is refused.
    pub fn open_with(
        url: &BlobsUrl,
        cache_dir: &Path,
        settings: &[(&str, &str)],
    ) -> Result<S3Blobs, BlobError> {
        let location = url.to_string();
        let fail = |source: Box<dyn StdError + Send + Sync>| BlobError::Storage {
            location: location.clone(),
            source,
        };
        let cache = FileBlobs::open(cache_dir)?;
        let mut builder = AmazonS3Builder::new()
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(REQUEST_TIMEOUT),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: RETRIES,
                retry_timeout: RETRY_WINDOW,
            });
        // What `AmazonS3Builder::from_env` does, after our defaults so that the variables
        // override them.
        for (key, value) in std::env::vars_os() {
            if let (Some(key), Some(value)) = (key.to_str(), value.to_str())
                && key.starts_with("AWS_")
                && let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(key, value);
            }
        }
        for (name, value) in settings {
            let key = name
                .to_ascii_lowercase()
                .parse::<AmazonS3ConfigKey>()
                .map_err(|e| fail(Box::new(e)))?;
            builder = builder.with_config(key, *value);
        }
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| http::truthy(&v));
        if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint)
            && !allow_http
            && !endpoint.starts_with("https://")
        {
            return Err(fail(
                format!(
                    "the endpoint {endpoint} is not https; plain http needs AWS_ALLOW_HTTP=true"
                )
                .into(),
            ));
        }
        let store = builder
            .with_bucket_name(&url.bucket)
            .with_http_connector(HyperConnector)
            .build()
            .map_err(|e| fail(Box::new(e)))?;
        let root = if url.prefix.is_empty() {
            ObjectPath::from("sha256")
        } else {
            ObjectPath::parse(format!("{}/sha256", url.prefix)).map_err(|e| fail(Box::new(e)))?
        };
        let bridge = Bridge::new().map_err(|e| fail(Box::new(e)))?;
        Ok(S3Blobs {
            store: Arc::new(store),
            root,
            location,
            cache,
            max_bytes: MAX_BLOB_BYTES,
            downloaded: Arc::new(AtomicU64::new(0)),
            uploaded: AtomicU64::new(0),
            bridge,
        })
    }

    /// The same store with a smaller size cap (at most [`MAX_BLOB_BYTES`]): blobs over it are
    /// neither stored nor read.
    pub fn with_max_bytes(mut self, max: u64) -> S3Blobs {
        self.max_bytes = max.min(MAX_BLOB_BYTES);
        self
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Bytes read from S3 answers' bodies by `get` so far (local copies not counted).
    pub fn downloaded_bytes(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Bytes of blobs uploaded by `put` so far (puts of blobs already stored not counted).
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    fn object(&self, hash: &ContentHash) -> ObjectPath {
        self.root.clone().join(hex::encode(hash.as_bytes()))
    }

    fn err(&self, source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> BlobError {
        BlobError::Storage {
            location: self.location.clone(),
            source: source.into(),
        }
    }

    /// Runs `fut` on the private runtime.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, Failure>> + Send + 'static,
    ) -> Result<T, BlobError> {
        match self.bridge.run(fut) {
            Some(Ok(t)) => Ok(t),
            Some(Err(Failure::S3(e))) => Err(self.err(e)),
            Some(Err(Failure::TooLarge { size })) => Err(self.err(format!(
                "the object is {size} bytes or more, over the cap of {} bytes",
                self.max_bytes
            ))),
            None => Err(self.err("the S3 request stopped without an answer")),
        }
    }

    /// The object's bytes, or `None` if there is none; never more than `max_bytes`.
    fn download(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, BlobError> {
        let (store, path) = (Arc::clone(&self.store), self.object(hash));
        let (max, downloaded) = (self.max_bytes, Arc::clone(&self.downloaded));
        self.run(async move {
            let got = match store.get_opts(&path, GetOptions::default()).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(Failure::S3(e)),
            };
            // The size S3 announces: refused before any of the body is read.
            let size = got
                .meta
                .size
                .max(got.range.end.saturating_sub(got.range.start));
            if size > max {
                return Err(Failure::TooLarge { size });
            }
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(Failure::S3)?;
                downloaded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                // A body longer than announced is cut here, before it is held.
                let total = bytes.len() as u64 + chunk.len() as u64;
                if total > max {
                    return Err(Failure::TooLarge { size: total });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(bytes))
        })
    }
}

/// Why a request on the private runtime failed.
enum Failure {
    S3(object_store::Error),
    /// At least `size` bytes, over the cap.
    TooLarge {
        size: u64,
    },
}

/// The ETag S3 gives an object uploaded in one part (without SSE-KMS or SSE-C): the hex MD5 of
/// its bytes, quoted.
fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(bytes)))
}

impl BlobStore for S3Blobs {
    fn put(&self, bytes: &[u8]) -> Result<ContentHash, BlobError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(self.err(format!(
                "a blob of {size} bytes is over the cap of {} bytes",
                self.max_bytes
            )));
        }
        let hash = ContentHash::of(bytes);
        let etag = etag_of(bytes);
        let (store, path) = (Arc::clone(&self.store), self.object(&hash));
        let present = self.run(async move {
            match store.head(&path).await {
                // Same size and MD5: the same bytes (the hash is checked again on every read).
                Ok(meta) => Ok(meta.size == size && meta.e_tag.as_deref() == Some(&*etag)),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(Failure::S3(e)),
            }
        })?;
        if !present {
            let (store, path) = (Arc::clone(&self.store), self.object(&hash));
            let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
            // S3 answers a PUT only once the object is stored durably.
            self.run(async move { store.put(&path, payload).await.map_err(Failure::S3) })?;
            self.uploaded.fetch_add(size, Ordering::Relaxed);
        }
        // A local copy saves the download at the next read (install, load). Not keeping it
        // costs only that download, so a full or broken cache does not fail the put.
        let _ = self.cache.put(bytes);
        Ok(hash)
    }

    fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, BlobError> {
        // A local copy is served only when it still hashes to its name; one missing, damaged
        // or unreadable is read from S3 again (and replaced below).
        if let Ok(Some(bytes)) = self.cache.get(hash) {
            return Ok(Some(bytes));
        }
        let Some(bytes) = self.download(hash)? else {
            return Ok(None);
        };
        let found = ContentHash::of(&bytes);
        if found != *hash {
            return Err(BlobError::Corrupt {
                expected: *hash,
                found,
            });
        }
        // As in `put`: the copy is an optimisation, the bytes are verified.
        let _ = self.cache.put(&bytes);
        Ok(Some(bytes))
    }
}
