//! The runner service (`warden serve`): the gateway (`/api/ext/...`), the runner API
//! (`/v1/execute`), the admin API (`/v1/admin/...`), UI assets (`/ext-ui/...`), health and
//! metrics, over one [`warden_host::Host`] and the storage traits it opens. Only this crate
//! and the CLI know about HTTP status codes.
//!
//! The path of one gateway request: limits on the connection (header time, head size, header
//! count: hyper), then the service's own checks in order: draining (503), URI and header
//! sizes (414, 431), the tenant's API key (401), the tenant's rate and concurrency (429), the
//! install (404 when this tenant has none), its load (verified again; 502 `integrity` when
//! the signature no longer holds), the manifest's endpoints (404), the body (413, 408), the
//! call (the host's one call path: limits, capabilities, audit), and the response headers'
//! allowlist.

mod admin;
mod auth;
mod error;
mod gateway;
mod headers;
mod limits;
mod metrics;
mod ui;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use warden_bundle::{Bundle, ContentHash};
use warden_host::{ExtensionId, ExtensionInfo, Host, TenantName};
use warden_trust::Verified;

pub use auth::{MIN_TOKEN, Token, TokenError};
pub use error::ApiError;
pub use limits::ServiceLimits;

/// What the service needs besides its host.
pub struct ServeOptions {
    /// The admin API is off without it.
    pub admin_token: Option<Token>,
    /// The runner API is off without it.
    pub runner_token: Option<Token>,
    /// Where the trust bundle is read again on SIGHUP or `POST /v1/admin/trust/reload`.
    pub trust_file: Option<PathBuf>,
    pub limits: ServiceLimits,
}

/// The service's state, shared by every request.
pub struct Service {
    host: Host,
    options: ServeOptions,
    limiter: limits::TenantLimiter,
    /// One load at a time per (tenant, extension); others wait for it instead of compiling too.
    loading: Mutex<HashMap<(TenantName, ExtensionId), LoadGate>>,
    /// Bundles verified for `/ext-ui`, by content hash (emptied when the trust changes).
    ui_bundles: Mutex<HashMap<ContentHash, Arc<Verified<Bundle>>>>,
    metrics: metrics::Metrics,
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

/// Held while one (tenant, extension) loads.
type LoadGate = Arc<tokio::sync::Mutex<()>>;

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

impl Service {
    pub fn new(host: Host, options: ServeOptions) -> Arc<Service> {
        let limiter = limits::TenantLimiter::new(&options.limits);
        Arc::new(Service {
            host,
            options,
            limiter,
            loading: Mutex::new(HashMap::new()),
            ui_bundles: Mutex::new(HashMap::new()),
            metrics: metrics::Metrics::default(),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Whether the admin (`true`) or runner (`false`) API has a token, and so is on.
    pub fn has_token(&self, admin: bool) -> bool {
        if admin {
            self.options.admin_token.is_some()
        } else {
            self.options.runner_token.is_some()
        }
    }

    /// Reads the trust bundle file again and makes it the host's: every install is verified
    /// again on its next call.
    pub fn reload_trust(&self) -> Result<(), ApiError> {
        let Some(path) = &self.options.trust_file else {
            return Err(ApiError::malformed(
                "the service was started without --trust: there is no trust file to read again",
            ));
        };
        // A bundle that cannot be read changes nothing: the trust in force stays, and the
        // operator is told so (400, naming the problem), not left guessing.
        let trust = warden_trust::TrustBundle::read_file(path).map_err(|e| {
            ApiError::malformed(format!(
                "the trust bundle {} was not reloaded (the one in force stays): {}",
                path.display(),
                warden_call::text::chain(&e)
            ))
        })?;
        self.host
            .set_trust(trust, &path.display().to_string())
            .map_err(|e| ApiError::internal(warden_call::text::chain(&e)))?;
        self.ui_bundles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    /// A published bundle verified now, kept by its hash for the UI route.
    pub(crate) fn verified_bundle(
        &self,
        admin: &warden_host::Admin<'_>,
        hash: &ContentHash,
    ) -> Result<Arc<Verified<Bundle>>, ApiError> {
        if let Some(b) = self
            .ui_bundles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
        {
            return Ok(Arc::clone(b));
        }
        let verified = Arc::new(
            admin
                .verified_published(hash)
                .map_err(|e| ApiError::from_load(&e))?,
        );
        let mut all = self
            .ui_bundles
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A bound on what is kept: when full, start again.
        if all.len() >= 256 {
            all.clear();
        }
        all.insert(*hash, Arc::clone(&verified));
        Ok(verified)
    }

    /// The extension `id` of `tenant`, loaded as installed now: the install read from the
    /// registry on every request (so an uninstall or upgrade, from this process or another,
    /// takes effect on the next request), loaded (and verified again) when it is not loaded
    /// or another version is.
    pub(crate) async fn installed(
        self: &Arc<Self>,
        tenant: &TenantName,
        id: &ExtensionId,
    ) -> Result<ExtensionInfo, ApiError> {
        let view = self.host.tenant(tenant);
        let admin = self.host.admin().map_err(|e| ApiError::from_load(&e))?;
        let install = admin
            .registry()
            .install(tenant, id)
            .map_err(|e| ApiError::internal(format!("the registry cannot be read: {e}")))?;
        let Some(install) = install else {
            view.unload(id);
            return Err(not_installed(id));
        };
        if let Some(info) = view.extension(id)
            && info.content_hash == install.content_hash
        {
            return Ok(info);
        }
        let gate = {
            let mut loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                loading
                    .entry((tenant.clone(), id.clone()))
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(()))),
            )
        };
        let _turn = gate.lock().await;
        // Loaded by the request this one waited for?
        if let Some(info) = view.extension(id)
            && info.content_hash == install.content_hash
        {
            return Ok(info);
        }
        let this = Arc::clone(self);
        let (tenant, id) = (tenant.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let admin = this.host.admin()?;
            admin.load_installed(&tenant, &id)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the load task failed: {e}")))?
        .map_err(|e| ApiError::from_load(&e))
    }
}

/// 404 for an extension the tenant has not installed, worded the same whether it exists for
/// another tenant or not at all.
pub(crate) fn not_installed(id: &ExtensionId) -> ApiError {
    ApiError::not_found(format!("no extension {id} is installed for this tenant"))
}

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/ext/{extension_id}/{*path}", any(gateway::gateway))
        .route("/api/ext/{extension_id}", any(gateway::gateway_root))
        .route("/v1/execute", post(gateway::execute))
        .route(
            "/ext-ui/{extension_id}/{content_hash}/{*path}",
            get(ui::asset),
        )
        .merge(admin::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&service),
            front,
        ))
        .with_state(service)
}

async fn ready(State(s): State<Arc<Service>>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        return ApiError::unavailable("shutting down").into_response();
    }
    match s.host.admin() {
        Ok(_) => "ready\n".into_response(),
        Err(e) => ApiError::unavailable(format!("storage: {e}")).into_response(),
    }
}

/// Checks every request meets before its route: draining, URI length, header bytes. Counts
/// requests in flight for the graceful shutdown.
async fn front(State(s): State<Arc<Service>>, request: Request, next: Next) -> Response {
    // Liveness stays 200 while draining; readiness says 503.
    if s.draining.load(Ordering::Relaxed) && request.uri().path() != "/healthz" {
        return ApiError::unavailable("the service is shutting down").into_response();
    }
    let limits = &s.options.limits;
    if let Err(e) = limits::check_head(limits, &request) {
        return e.with_id(&s.host.new_request_id()).into_response();
    }
    let route = metrics::route_of(request.uri().path());
    s.in_flight.fetch_add(1, Ordering::SeqCst);
    let started = Instant::now();
    let response = next.run(request).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    s.metrics
        .request(route, response.status().as_u16(), started.elapsed());
    response
}

/// `GET /metrics` (admin token): Prometheus text.
pub(crate) async fn metrics(State(s): State<Arc<Service>>, headers: http::HeaderMap) -> Response {
    if let Some(token) = &s.options.admin_token
        && let Err(e) = auth::operator(&headers, token, "metrics")
    {
        return e.into_response();
    }
    if s.options.admin_token.is_none() {
        return ApiError::not_found("metrics need the admin token; the service has none")
            .into_response();
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(s.in_flight.load(Ordering::Relaxed)),
    )
        .into_response()
}

/// Serves `service` on `listener` until `shutdown` resolves; then refuses new requests with
/// 503 while those in flight finish, for at most the limits' shutdown grace.
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&service));
    let limits = service.options.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Room for the request line and the headers the service allows, and no more.
        .max_buf_size(
            usize::try_from(limits.max_uri_bytes.bytes() + limits.max_header_bytes.bytes())
                .unwrap_or(usize::MAX)
                .max(8192)
                + 4096,
        )
        .max_headers(limits.max_headers as usize);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(d) = deadline
            && (service.in_flight.load(Ordering::SeqCst) == 0 || Instant::now() >= d)
        {
            break;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let svc = tower::ServiceExt::map_request(app, move |mut r: http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(Peer(peer));
                    r
                });
                let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown, if deadline.is_none() => {
                service.draining.store(true, Ordering::SeqCst);
                deadline = Some(Instant::now() + limits.shutdown_grace);
                tracing::info!("shutting down: finishing calls in flight, refusing new ones");
            }
            () = tokio::time::sleep(Duration::from_millis(20)), if deadline.is_some() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    Ok(())
}
