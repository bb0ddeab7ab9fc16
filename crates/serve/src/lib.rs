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
mod console;
mod docs;
mod error;
mod gateway;
mod headers;
mod limits;
mod memory;
mod metrics;
mod openapi;
mod rate;
mod review;
mod sparse;
mod ui;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, any, get, on};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use warden_bundle::{Bundle, ContentHash};
use warden_host::{ExtensionId, ExtensionInfo, Host, TenantName};
use warden_trust::Verified;

pub use auth::{MIN_TOKEN, Token, TokenError};
pub use error::ApiError;
pub use limits::ServiceLimits;
pub use rate::Sharing;

/// What the service needs besides its host.
pub struct ServeOptions {
    /// The admin API is off without it.
    pub admin_token: Option<Token>,
    /// The runner API is off without it.
    pub runner_token: Option<Token>,
    /// Where the trust bundle is read again on SIGHUP or `POST /v1/admin/trust/reload`.
    pub trust_file: Option<PathBuf>,
    pub limits: ServiceLimits,
    /// What this runner shares with the others on its storage: each tenant's rate and calls
    /// in flight.
    pub sharing: Sharing,
    /// The fleet's trust bundle in the storage the runners share: a reload through one runner
    /// is enforced by every runner within [`TRUST_FOLLOW`]. `None`: this runner's file alone.
    pub shared_trust: Option<Arc<dyn warden_registry::SharedTrust>>,
    /// The audit log's key, to check its head's MAC (`GET /v1/admin/audit/verify`).
    pub audit_key: Option<warden_audit::AuditKey>,
}

/// How often a runner looks for installs it has not prepared (see
/// [`Service::follow_installs`]).
const WARM_EVERY: Duration = Duration::from_secs(2);
/// How often a runner looks at the fleet's trust bundle.
pub const TRUST_FOLLOW: Duration = Duration::from_millis(250);

/// The service's state, shared by every request.
pub struct Service {
    host: Host,
    options: ServeOptions,
    limiter: limits::TenantLimiter,
    /// Request body bytes held in memory, every request together (`max_buffered_bytes`).
    bodies: Arc<limits::BodyBudget>,
    /// One load at a time per (tenant, extension); others wait for it instead of compiling too.
    loading: Mutex<HashMap<(TenantName, ExtensionId), LoadGate>>,
    /// Bundles verified for `/ext-ui`, by content hash (emptied when the trust changes).
    ui_bundles: Mutex<HashMap<ContentHash, Arc<Verified<Bundle>>>>,
    metrics: metrics::Metrics,
    draining: AtomicBool,
    /// Set when the shutdown grace ran out with requests still in flight: they are stopped,
    /// and their records say why.
    cut_off: AtomicBool,
    in_flight: AtomicUsize,
    /// Requests entered since the service started (see `memory`).
    entered: AtomicU64,
    /// The text of the fleet's trust bundle this runner enforces (shared trust only).
    trust_text: Mutex<Option<String>>,
    /// Set while [`Service::follow_installs`] makes its first pass: not ready until then.
    warming: AtomicBool,
    /// The operator console's sessions.
    console: console::Sessions,
    /// Published bundles' facts for the admin API's views, by content hash (a bundle's
    /// content never changes; bounded, see [`Service::bundle_facts`]).
    facts: Mutex<HashMap<ContentHash, Arc<warden_host::BundleFacts>>>,
    /// Reads of the whole audit log at once (the admin API's audit views): each walks and
    /// checks the log from its start, so a few at a time, the others refused (429).
    audit_reads: tokio::sync::Semaphore,
}

/// Most reads of the whole audit log at once.
const AUDIT_READS: usize = 2;

/// Most bundles' facts kept for the admin API's views.
const MAX_FACTS: usize = 512;

/// Held while one (tenant, extension) loads.
type LoadGate = Arc<tokio::sync::Mutex<()>>;

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

impl Service {
    pub fn new(host: Host, options: ServeOptions) -> Arc<Service> {
        let limiter =
            limits::TenantLimiter::new(&options.limits, host.policy().busy_wait, &options.sharing);
        let bodies = limits::BodyBudget::new(options.limits.max_buffered_bytes.bytes());
        let console = console::Sessions::new(options.admin_token.as_ref());
        Arc::new(Service {
            host,
            options,
            limiter,
            bodies,
            loading: Mutex::new(HashMap::new()),
            ui_bundles: Mutex::new(HashMap::new()),
            metrics: metrics::Metrics::default(),
            draining: AtomicBool::new(false),
            cut_off: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            entered: AtomicU64::new(0),
            trust_text: Mutex::new(None),
            warming: AtomicBool::new(false),
            console,
            facts: Mutex::new(HashMap::new()),
            audit_reads: tokio::sync::Semaphore::new(AUDIT_READS),
        })
    }

    /// The facts of a published bundle, read once (then from memory).
    pub(crate) fn bundle_facts(
        &self,
        admin: &warden_host::Admin<'_>,
        hash: &ContentHash,
    ) -> Result<Arc<warden_host::BundleFacts>, warden_host::HostError> {
        if let Some(f) = self
            .facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
        {
            return Ok(Arc::clone(f));
        }
        let f = Arc::new(admin.bundle_facts(hash)?);
        let mut facts = self.facts.lock().unwrap_or_else(PoisonError::into_inner);
        if facts.len() >= MAX_FACTS {
            facts.clear();
        }
        facts.insert(*hash, Arc::clone(&f));
        Ok(f)
    }

    /// With shared trust: enforces the fleet's trust bundle now (or, if none was stored yet,
    /// stores this runner's file as the fleet's), then follows it every [`TRUST_FOLLOW`].
    /// A runner started with an older file never rolls the fleet back.
    pub fn follow_shared_trust(self: &Arc<Self>) -> Result<(), ApiError> {
        let Some(shared) = self.options.shared_trust.clone() else {
            return Ok(());
        };
        let unavailable =
            |e: warden_registry::RegistryError| ApiError::unavailable(warden_call::text::chain(&e));
        // The host was started with its file: that is the bundle in force here.
        let file = self
            .options
            .trust_file
            .as_deref()
            .and_then(|p| warden_trust::TrustBundle::read_file_text(p).ok())
            .map(|(_, text)| text);
        *self
            .trust_text
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = file.clone();
        match shared.current().map_err(unavailable)? {
            Some(text) => {
                if file.as_deref().is_some_and(|f| f != text) {
                    tracing::warn!(
                        "this runner's trust file differs from the fleet's trust bundle, which is enforced"
                    );
                }
                self.apply_shared_trust(text);
            }
            None => {
                if let Some(text) = file {
                    shared.replace(&text).map_err(unavailable)?;
                }
            }
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRUST_FOLLOW);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = me.upgrade() else { return };
                let shared = Arc::clone(&shared);
                // Off the executor: applying waits for a reload in progress here (its lock).
                let followed = tokio::task::spawn_blocking(move || {
                    shared
                        .current()
                        .map(|text| text.map(|t| s.apply_shared_trust(t)))
                });
                match followed.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %warden_call::text::chain(&e), "the fleet's trust bundle cannot be read")
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(())
    }

    /// Prepares what is installed before a tenant asks for it, now and every
    /// [`WARM_EVERY`]: components installed by another runner of the fleet, or before this
    /// runner started, are compiled (or loaded from the code cache) in the background, on the
    /// host's compile pool, so no tenant's first request waits for a compile. Each content
    /// hash is tried once per process; what fails is left to the call, which reports it.
    /// `/readyz` says not ready until the first pass is done (a runner with an empty code
    /// cache compiles for minutes before a load balancer should send it tenants' calls).
    pub fn follow_installs(self: &Arc<Self>) {
        self.warming.store(true, Ordering::SeqCst);
        let me = Arc::downgrade(self);
        let tried = Arc::new(Mutex::new(std::collections::HashSet::new()));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WARM_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = me.upgrade() else { return };
                if s.draining.load(Ordering::SeqCst) {
                    return;
                }
                let tried = Arc::clone(&tried);
                let service = Arc::clone(&s);
                let warmed = tokio::task::spawn_blocking(move || {
                    let mut tried = tried.lock().unwrap_or_else(PoisonError::into_inner);
                    service.host.admin().and_then(|a| a.warm(&mut tried))
                })
                .await;
                s.warming.store(false, Ordering::SeqCst);
                match warmed {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(
                        components = n,
                        "installed components prepared ahead of their first call"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %warden_call::text::chain(&e), "listing the installs to prepare")
                    }
                    Err(_) => return,
                }
            }
        });
    }

    /// Enforces the fleet's trust bundle `text` if it is not the one in force.
    fn apply_shared_trust(&self, text: String) {
        let mut current = self
            .trust_text
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() == Some(text.as_str()) {
            return;
        }
        match warden_trust::TrustBundle::parse(&text) {
            Ok(trust) => {
                let what = "the fleet's trust bundle (shared storage)";
                if let Err(e) = self
                    .host
                    .set_trust_as(self.host.new_request_id(), trust, what)
                {
                    tracing::error!(error = %warden_call::text::chain(&e), "the fleet's trust bundle could not be applied");
                    return;
                }
                self.ui_bundles
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
            Err(e) => {
                tracing::error!(error = %warden_call::text::chain(&e), "the fleet's trust bundle does not parse; the one in force stays");
            }
        }
        *current = Some(text);
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
    /// again on its next call (SIGHUP; audited under a new request id).
    pub fn reload_trust(&self) -> Result<(), ApiError> {
        self.reload_trust_as(self.host.new_request_id())
    }

    /// [`Service::reload_trust`], audited under `request_id` (the admin request's).
    pub fn reload_trust_as(&self, request_id: String) -> Result<(), ApiError> {
        let Some(path) = &self.options.trust_file else {
            return Err(ApiError::malformed(
                "the service was started without --trust: there is no trust file to read again",
            ));
        };
        // A bundle that cannot be read changes nothing: the trust in force stays, and the
        // operator is told so, naming the problem. 500, not 400: the request was right, the
        // file on the service's disk is not (SPEC 7: 4xx are the client's mistakes).
        let (trust, text) = warden_trust::TrustBundle::read_file_text(path).map_err(|e| {
            if let Err(audit) = self.host.trust_reload_failed_as(
                request_id.clone(),
                &path.display().to_string(),
                &e,
            ) {
                tracing::error!(error = %audit, "the failed trust reload could not be audited");
            }
            ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "trust-reload-failed",
                format!(
                    "the trust bundle {} was not reloaded (the one in force stays): {}",
                    path.display(),
                    warden_call::text::chain(&e)
                ),
            )
        })?;
        // Held until the new bundle is in force here: the fleet's follower
        // (`apply_shared_trust`) then finds it is this runner's own, and does not apply it a
        // second time (it did, recording a second reload, while the first judged the loaded
        // installs).
        let mut current = self
            .trust_text
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The fleet's first: a bundle that cannot be shared changes nothing here either, so
        // runners never disagree for longer than they take to follow.
        if let Some(shared) = &self.options.shared_trust {
            shared.replace(&text).map_err(|e| {
                ApiError::unavailable(format!(
                    "the trust bundle could not be given to the other runners; nothing changed: {}",
                    warden_call::text::chain(&e)
                ))
            })?;
        }
        self.host
            .set_trust_as(request_id, trust, &path.display().to_string())
            .map_err(|e| ApiError::internal(warden_call::text::chain(&e)))?;
        *current = Some(text);
        drop(current);
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

    /// Right before a call's slot is taken: the install loaded for the request may have been
    /// unloaded since (a trust reload or a change of the install meanwhile), and the slot
    /// would then find nothing loaded (a flaky test answered 400 "not loaded" to a request
    /// racing a reload): loaded again, as installed now, or refused as that load decides.
    pub(crate) async fn still_loaded(
        self: &Arc<Self>,
        tenant: &TenantName,
        id: &ExtensionId,
    ) -> Result<(), ApiError> {
        if self.host.tenant(tenant).extension(id).is_none() {
            self.installed(tenant, id).await?;
        }
        Ok(())
    }

    /// Whether a call failed only because the install was unloaded between
    /// [`Service::still_loaded`] and the call (a trust reload in that instant): loaded
    /// again and called once more by the caller.
    pub(crate) fn unloaded_meanwhile(
        called: &Result<impl Sized, warden_host::CallFailure>,
    ) -> bool {
        matches!(called, Err(f) if f.request_id.is_empty()
            && matches!(&f.error, warden_call::CallError::Invalid(m) if m.ends_with("is loaded")))
    }

    /// The extension `id` of `tenant`, loaded as installed now: the install read from the
    /// registry on every request (so an uninstall, upgrade or grant change, from this process
    /// or another, takes effect on the next request), loaded (and verified again) when it is
    /// not loaded, or another version or grant is.
    /// Whether a tenant is named `tenant` (true when that cannot be told: the tenant is then
    /// recorded as named).
    pub(crate) fn tenant_exists(&self, tenant: &TenantName) -> bool {
        self.host
            .admin()
            .ok()
            .and_then(|admin| admin.registry().tenant(tenant).ok())
            .is_none_or(|found| found.is_some())
    }

    pub(crate) async fn installed(
        self: &Arc<Self>,
        tenant: &TenantName,
        id: &ExtensionId,
    ) -> Result<ExtensionInfo, ApiError> {
        let view = self.host.tenant(tenant);
        // What was loaded before the registry was read: only that is withdrawn if the registry
        // has no install (one loaded meanwhile, by a newer install, stays).
        let before = view.loaded(id);
        let admin = self.host.admin().map_err(|e| ApiError::from_load(&e))?;
        let install = admin
            .registry()
            .install(tenant, id)
            .map_err(|e| crate::error::registry_failed(&e))?;
        let Some(install) = install else {
            if let Some(before) = &before {
                view.withdraw_loaded(before);
            }
            return Err(not_installed(id));
        };
        if let Some(info) = view.extension(id)
            && info.content_hash == install.content_hash
            && info.grant == install.grant
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
            && info.grant == install.grant
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

/// The id of one request, assigned by the front checks to every request (the answer's
/// `x-request-id` and its error's `request_id`).
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

impl axum::extract::FromRequestParts<Arc<Service>> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        s: &Arc<Service>,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(s.host.new_request_id())))
    }
}

/// A method of a documented route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One route of the service's own APIs (runner, admin, health, metrics, the OpenAPI document):
/// the router is built from these tables only, and a test checks that the OpenAPI document
/// describes each of them (`openapi.rs`). The gateway and `/ext-ui` are the extensions' own
/// and are not in them.
pub(crate) struct ApiRoute {
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the document's test"))]
    pub(crate) verb: Verb,
    pub(crate) path: &'static str,
    handler: MethodRouter<Arc<Service>>,
}

impl ApiRoute {
    pub(crate) fn new<H, T>(verb: Verb, path: &'static str, handler: H) -> ApiRoute
    where
        H: axum::handler::Handler<T, Arc<Service>>,
        T: 'static,
    {
        ApiRoute {
            verb,
            path,
            handler: on(verb.filter(), handler),
        }
    }

    /// A router of `routes` (two methods of one path merge).
    pub(crate) fn router(routes: Vec<ApiRoute>) -> Router<Arc<Service>> {
        routes
            .into_iter()
            .fold(Router::new(), |r, a| r.route(a.path, a.handler))
    }
}

/// The runner API, health, and the OpenAPI document (the admin API's are `admin::table`).
fn table() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Verb::Get, "/healthz", healthz),
        ApiRoute::new(Verb::Get, "/readyz", ready),
        ApiRoute::new(Verb::Post, "/v1/execute", gateway::execute),
        ApiRoute::new(Verb::Get, "/openapi.json", openapi::document),
    ]
}

/// Every documented route: the runner API, health, the document, and the admin API.
#[cfg(test)]
pub(crate) fn api_routes() -> Vec<ApiRoute> {
    let mut all = table();
    all.extend(admin::table());
    all.extend(review::table());
    all
}

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    ApiRoute::router(table())
        .route("/api/ext/{extension_id}/{*path}", any(gateway::gateway))
        .route("/api/ext/{extension_id}", any(gateway::gateway_root))
        .route(
            "/ext-ui/{extension_id}/{content_hash}/{*path}",
            get(ui::asset),
        )
        .merge(admin::routes(&service))
        .merge(review::routes(&service))
        .merge(console::routes())
        .fallback(
            |id: RequestId| async move { ApiError::not_found("no such route").with_id(&id.0) },
        )
        // A known route with another method: the JSON error body too, not axum's empty 405.
        .method_not_allowed_fallback(|id: RequestId| async move {
            ApiError::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method",
            )
            .with_id(&id.0)
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&service),
            front,
        ))
        .with_state(service)
}

/// `GET /healthz`: the process is up (also while draining).
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses(
        (status = 200, description = "The process is up; 200 also while draining.", body = String, content_type = "text/plain", example = "ok\n"),
        docs::HeadRefusals,
    ),
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the service takes requests (not draining, storage opens).
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready to take requests.", body = String, content_type = "text/plain", example = "ready\n"),
        docs::FrontRefusals,
        (status = 503, description = "Shutting down, preparing the installed components at start, or the storage cannot be opened (`unavailable`).", body = docs::ErrorBody),
    ),
)]
async fn ready(State(s): State<Arc<Service>>, id: RequestId) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        return ApiError::unavailable("shutting down")
            .with_id(&id.0)
            .into_response();
    }
    if s.warming.load(Ordering::Relaxed) {
        return ApiError::unavailable("preparing the installed components")
            .with_id(&id.0)
            .into_response();
    }
    // Calls are refused while the audit log cannot be written (a full disk): not ready.
    if !s.host.audit_healthy() {
        return ApiError::unavailable("the audit log cannot be written; calls are refused")
            .with_id(&id.0)
            .into_response();
    }
    match s.host.admin() {
        Ok(_) => "ready\n".into_response(),
        Err(e) => ApiError::unavailable(format!("storage: {e}"))
            .with_id(&id.0)
            .into_response(),
    }
}

/// Checks every request meets before its route: draining, URI length, header bytes. Counts
/// requests in flight for the graceful shutdown.
async fn front(State(s): State<Arc<Service>>, request: Request, next: Next) -> Response {
    // A body left unread (the request refused first) ends the connection: say so. Only a
    // request with a body pays for watching it.
    if !has_body(&request) {
        return answer(s, request, next).await;
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let request = request.map(|inner| {
        axum::body::Body::new(Tracked {
            inner,
            done: Arc::clone(&done),
        })
    });
    let mut response = answer(s, request, next).await;
    if !done.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn answer(s: Arc<Service>, mut request: Request, next: Next) -> Response {
    let id = s.host.new_request_id();
    // Liveness stays 200 while draining; readiness says 503.
    if s.draining.load(Ordering::Relaxed) && request.uri().path() != "/healthz" {
        let e = ApiError::unavailable("the service is shutting down").with_id(&id);
        return gateway::refused_while_draining(&s, e, request)
            .await
            .into_response();
    }
    let limits = &s.options.limits;
    if let Err(e) = limits::check_head(limits, &request) {
        return e.with_id(&id).into_response();
    }
    let route = metrics::route_of(request.uri().path());
    // Everything logged while answering carries the request id; the gateway adds the tenant
    // and the extension once it knows them.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        route,
        method = %request.method(),
        tenant = tracing::field::Empty,
        extension = tracing::field::Empty,
    );
    request.extensions_mut().insert(RequestId(id));
    let counted = InFlight::enter(&s);
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    drop(counted);
    let status = response.status().as_u16();
    s.metrics.request(route, status, started.elapsed());
    span.in_scope(|| {
        tracing::debug!(
            status,
            took_us = started.elapsed().as_micros() as u64,
            "answered"
        )
    });
    response
}

/// A request being answered, counted until it is answered or dropped: a client that goes
/// away mid-request drops the handler, and the count must come down all the same, or a
/// graceful shutdown waits its whole grace for requests that are gone.
struct InFlight(Arc<Service>);

impl InFlight {
    fn enter(s: &Arc<Service>) -> InFlight {
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        s.entered.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(s))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /metrics` (admin token): Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain"),
        docs::FrontRefusals,
        docs::OperatorRefusals,
        (status = 404, description = "The service has no admin token, so no metrics (`not-found`).", body = docs::ErrorBody),
    ),
)]
pub(crate) async fn metrics(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: http::HeaderMap,
) -> Response {
    let by_session =
        !headers.contains_key(http::header::AUTHORIZATION) && s.console.session(&headers).is_some();
    if let Some(token) = &s.options.admin_token
        && !by_session
        && let Err(e) = auth::operator(&headers, token, "metrics")
    {
        return e.with_id(&id.0).into_response();
    }
    if s.options.admin_token.is_none() {
        return ApiError::not_found("metrics need the admin token; the service has none")
            .with_id(&id.0)
            .into_response();
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics
            .render(s.in_flight.load(Ordering::Relaxed), &s.host),
    )
        .into_response()
}

/// Most headers hyper parses in a request head, whatever the policy: each takes a slot
/// hyper allocates per connection while it parses.
const HYPER_MAX_HEADERS: usize = 1024;

/// Hyper's header count limit: above the policy's `max_headers` (four times it, at least
/// 256), so a request with somewhat more headers than the policy allows reaches the service's
/// own check and gets its JSON 431, not hyper's empty one; still capped at
/// [`HYPER_MAX_HEADERS`] (a policy above that is the operator's to raise it to).
fn hyper_max_headers(policy: u32) -> usize {
    let policy = policy as usize;
    policy
        .saturating_mul(4)
        .clamp(256, HYPER_MAX_HEADERS)
        .max(policy.saturating_add(1))
}

/// Serves `service` on `listener` until `shutdown` resolves; then refuses new requests with
/// 503 while those in flight finish, for at most the limits' shutdown grace. Those still in
/// flight then are stopped, and their records written, before it returns.
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
        .max_headers(hyper_max_headers(limits.max_headers));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Every connection's task, so that those still answering when the grace runs out can be
    // stopped (and their records written) before the service returns.
    let mut connections = tokio::task::JoinSet::new();
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
                connections.spawn(async move {
                    let _ = conn.await;
                });
            }
            // Ended connections are let go of as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown, if deadline.is_none() => {
                service.draining.store(true, Ordering::SeqCst);
                // Requests still waiting for a slot or their rate are refused, not started.
                service.limiter.drain();
                service.host.stop_waiting();
                deadline = Some(Instant::now() + limits.shutdown_grace);
                tracing::info!("shutting down: finishing calls in flight, refusing new ones");
            }
            () = tokio::time::sleep(Duration::from_millis(20)), if deadline.is_some() => {}
        }
    }
    drop(listener);
    if service.in_flight.load(Ordering::SeqCst) == 0 {
        // Idle kept-alive connections are closed.
        let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    } else {
        // What is still answering now is stopped: recorded as cut off by the end of the grace
        // (outside attack, session 28: such requests left no record at all).
        tracing::warn!(
            requests = service.in_flight.load(Ordering::SeqCst),
            "the shutdown grace ran out: stopping the requests still in flight"
        );
        service.cut_off.store(true, Ordering::Release);
        service.host.cut_off();
    }
    connections.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    // A stopped call's record waits up to a second for its drop where it runs.
    let unwritten = service.host.settle_records(Duration::from_secs(5)).await;
    if unwritten > 0 {
        tracing::error!(
            records = unwritten,
            "the records of stopped requests were not all written before the shutdown"
        );
    }
    // The records kept while the log could not be written, the repeated refusals counted
    // since the last summary and what warm processes were refused after their last answer
    // are part of the trail too; then the records of requests dropped while they committed.
    // What cannot be stored now is lost with the process: logged, and the service ends with
    // an error (it ended with 0 and said nothing: outside attack, session 41).
    let host = service.host.clone();
    let closed = tokio::task::spawn_blocking(move || {
        let closed = host.close();
        let settled = host.settle_audit(Duration::from_secs(5));
        closed.and(settled)
    })
    .await
    .unwrap_or(Ok(()));
    if let Err(e) = closed {
        tracing::error!(error = %e, "audit records could not be stored at the shutdown: they are lost");
        return Err(std::io::Error::other(format!(
            "{e} at the shutdown: lost with this process"
        )));
    }
    Ok(())
}

/// A request body that says whether it was read to its end: a refusal answered before it was
/// (a 429, a 401 of a POST) closes the connection, and says so with `connection: close`, so
/// that a client does not send its next request on a connection the server is closing.
struct Tracked {
    inner: axum::body::Body,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `request` has a body to read (a length above 0, or chunks).
fn has_body(request: &Request) -> bool {
    let h = request.headers();
    h.contains_key(http::header::TRANSFER_ENCODING)
        || h.get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}
