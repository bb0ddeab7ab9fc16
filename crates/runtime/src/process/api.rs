//! A process extension's host requests, answered by the very code that answers a component's
//! host interfaces: the same views ([`KvView`], [`SecretsView`], [`InvokeView`], the log
//! capture) and the same egress hooks, on one call's own state (ledger, redactor, resource
//! table). So a grant, a denial, a quota, a redaction and an audit record come out the same
//! whichever kind of extension asked; only the shape of the answer differs (a JSON-RPC error
//! instead of a WIT error).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::Mutex;
use warden_call::{Invoker, Ledger, LogLevel, Redactor, Withheld};
use warden_kv::KvAccess;
use warden_process::{
    ErrorName, Fetch, FetchResponse, HostApi, HostError, Invoke, KvIncrement, KvKey, KvList,
    KvPage, KvSet, Log, SecretGet,
};
use warden_secrets::SecretAccess;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpHooks};

use crate::caps::CallCaps;
use crate::config::{SecretsView, store as config};
use crate::egress::EgressHooks;
use crate::invoke::InvokeView;
use crate::kv::{KvRefusal, KvView};
use crate::logging::LogCapture;

/// What the program's requests may touch during one call.
struct State {
    table: ResourceTable,
    hooks: EgressHooks,
}

/// One call's answers to a program's host requests.
pub(crate) struct ProcessApi {
    state: Mutex<State>,
    pub(crate) ledger: Ledger,
    pub(crate) redactor: Redactor,
    pub(crate) logs: LogCapture,
    pub(crate) egress_bytes: Arc<AtomicU64>,
    kv: Option<KvAccess>,
    secrets: Option<SecretAccess>,
    invoker: Option<Arc<dyn Invoker>>,
    withheld: Withheld,
}

/// Open buckets per request are one; the table never holds more than a few entries.
const MAX_RESOURCES: usize = 16;

impl ProcessApi {
    pub(crate) fn new(caps: &CallCaps, max_response: u64) -> ProcessApi {
        ProcessApi::with_ledger(caps, max_response, caps.ledger.clone())
    }

    /// [`ProcessApi::new`], recording into `ledger` (a call's own, shared).
    pub(crate) fn with_ledger(caps: &CallCaps, max_response: u64, ledger: Ledger) -> ProcessApi {
        let egress_bytes = Arc::new(AtomicU64::new(0));
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        ProcessApi {
            state: Mutex::new(State {
                table,
                hooks: EgressHooks::new(
                    caps,
                    ledger.clone(),
                    Arc::clone(&egress_bytes),
                    max_response,
                ),
            }),
            ledger,
            redactor: caps.redactor.clone().unwrap_or_default(),
            logs: LogCapture::default(),
            egress_bytes,
            kv: caps.kv.clone(),
            secrets: caps.secrets.clone(),
            invoker: caps.invoker.clone(),
            withheld: caps.withheld,
        }
    }

    async fn kv<T>(
        &self,
        op: impl AsyncFnOnce(&mut KvView<'_>) -> Result<T, KvRefusal>,
    ) -> Result<T, HostError> {
        let mut state = self.state.lock().await;
        let mut view = KvView {
            access: self.kv.as_ref(),
            table: &mut state.table,
            ledger: &self.ledger,
            withheld: self.withheld,
            quota_hit: false,
        };
        op(&mut view).await.map_err(|r| match r {
            KvRefusal::Denied(reason) => HostError::denied(reason),
            KvRefusal::NoSuchStore => HostError::invalid_params(format!(
                "no such bucket: a bucket name is 1 to {} bytes",
                warden_kv::MAX_BUCKET_BYTES
            )),
            KvRefusal::Limit(m) => HostError::limit(m),
            KvRefusal::Other(m) => HostError::failed(m),
        })
    }
}

/// Headers a program may not set on an outgoing request: the host sets `host` and the
/// framing, and hop-by-hop headers are refused as they are for a component.
fn forbidden(name: &http::HeaderName) -> bool {
    name == http::header::HOST
        || name == http::header::CONTENT_LENGTH
        || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
}

fn fetch_error(e: &HttpError) -> HostError {
    match e {
        HttpError::HttpRequestDenied => HostError::denied("the host refused the request"),
        HttpError::HttpResponseBodySize(_) => {
            HostError::limit("the response body is over max_response_bytes")
        }
        HttpError::DnsTimeout | HttpError::DnsError { .. } => {
            HostError::failed("the name could not be resolved")
        }
        HttpError::ConnectionTimeout
        | HttpError::ConnectionReadTimeout
        | HttpError::ConnectionWriteTimeout => HostError::failed("the request timed out"),
        HttpError::ConnectionRefused | HttpError::Connect(_) => {
            HostError::failed("the connection was refused")
        }
        HttpError::Tls(_) | HttpError::TlsProtocolError | HttpError::TlsCertificateError => {
            HostError::failed("TLS failed")
        }
        _ => HostError::failed("the request failed"),
    }
}

#[async_trait]
impl HostApi for ProcessApi {
    async fn log(&self, req: Log) -> Result<(), HostError> {
        let level = match req.level {
            warden_process::LogLevel::Trace => LogLevel::Trace,
            warden_process::LogLevel::Debug => LogLevel::Debug,
            warden_process::LogLevel::Info => LogLevel::Info,
            warden_process::LogLevel::Warn => LogLevel::Warn,
            warden_process::LogLevel::Error => LogLevel::Error,
            warden_process::LogLevel::Critical => LogLevel::Critical,
        };
        self.logs.push(level, &req.context, &req.message);
        Ok(())
    }

    async fn kv_get(&self, req: KvKey) -> Result<Option<Vec<u8>>, HostError> {
        self.kv(async |v| v.get_one(req.bucket, req.key).await)
            .await
    }

    async fn kv_set(&self, req: KvSet) -> Result<(), HostError> {
        self.kv(async |v| v.set_one(req.bucket, req.key, req.value).await)
            .await
    }

    async fn kv_delete(&self, req: KvKey) -> Result<(), HostError> {
        self.kv(async |v| v.delete_one(req.bucket, req.key).await)
            .await
    }

    async fn kv_increment(&self, req: KvIncrement) -> Result<u64, HostError> {
        self.kv(async |v| v.increment_one(req.bucket, req.key, req.delta).await)
            .await
    }

    async fn kv_list(&self, req: KvList) -> Result<KvPage, HostError> {
        let (keys, cursor) = self
            .kv(async |v| v.list_page(req.bucket, req.cursor).await)
            .await?;
        Ok(KvPage { keys, cursor })
    }

    async fn secrets_get(&self, req: SecretGet) -> Result<Option<String>, HostError> {
        let mut view = SecretsView {
            access: self.secrets.as_ref(),
            ledger: &self.ledger,
            redactor: &self.redactor,
            withheld: self.withheld,
        };
        config::Host::get(&mut view, req.name)
            .await
            .map_err(|e| match e {
                config::Error::Upstream(m) => HostError::denied(
                    m.strip_prefix("access-denied: ")
                        .map(str::to_owned)
                        .unwrap_or(m),
                ),
                config::Error::Io(m) => HostError::failed(m),
            })
    }

    async fn http_fetch(&self, req: Fetch) -> Result<FetchResponse, HostError> {
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| HostError::invalid_params("method is not an HTTP method"))?;
        let uri: http::Uri = req
            .url
            .parse()
            .map_err(|_| HostError::invalid_params("url is not a URL"))?;
        let mut request = http::Request::builder().method(method).uri(uri);
        for (name, value) in &req.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HostError::invalid_params("a header name is not valid"))?;
            if forbidden(&name) {
                return Err(HostError::invalid_params(format!(
                    "header {name} is set by the host"
                )));
            }
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| HostError::invalid_params("a header value is not valid"))?;
            request = request.header(name, value);
        }
        let body = Full::new(Bytes::from(req.body.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = request
            .body(body)
            .map_err(|_| HostError::invalid_params("the request is not valid"))?;
        let send = {
            let mut state = self.state.lock().await;
            Box::into_pin(
                state
                    .hooks
                    .send_request(request, None, Box::new(async { Ok(()) })),
            )
        };
        let (response, io) = send.await.map_err(|e| fetch_error(&e))?;
        let (parts, body) = response.into_parts();
        // The connection is driven while the body is read (it ends with the body).
        let (body, _) = tokio::join!(body.collect(), Box::into_pin(io));
        let body = body.map_err(|e| fetch_error(&e))?.to_bytes();
        Ok(FetchResponse {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        })
    }

    async fn invoke(&self, req: Invoke) -> Result<Vec<u8>, HostError> {
        let mut view = InvokeView {
            invoker: self.invoker.as_ref(),
            ledger: &self.ledger,
            redactor: &self.redactor,
            withheld: self.withheld,
        };
        let answer = crate::bindings::warden::extension::invoke::Host::call(
            &mut view,
            req.extension,
            req.method,
            req.input,
        )
        .await
        .map_err(|e| HostError::failed(e.to_string()))?;
        answer.map_err(|e| {
            if e.code == "denied" {
                HostError::denied(e.message)
            } else {
                let name = e.code.parse().unwrap_or_else(|_| ErrorName::generic());
                HostError::call_error(name, e.message)
            }
        })
    }
}
