//! The gateway (`ANY /api/ext/{extension_id}/{*path}`, by a tenant's API key) and the runner
//! API (`POST /v1/execute`, by the runner token): one path into the host's call, two doors.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header;
use serde::Deserialize;
use warden_host::{ExtensionId, ExtensionInfo, TenantName, WorldKind};
use warden_manifest::MethodPattern;

use crate::error::{ApiError, CLIENT_GONE, CUT_OFF};
use crate::{Peer, RequestId, Service, auth, headers, limits};

pub(crate) async fn gateway(
    State(s): State<Arc<Service>>,
    path: Result<Path<(String, String)>, PathRejection>,
    rid: RequestId,
    request: Request,
) -> Response {
    let path = path.map(|Path((id, _path))| Path(id));
    gateway_root(State(s), path, rid, request).await
}

pub(crate) async fn gateway_root(
    State(s): State<Arc<Service>>,
    path: Result<Path<String>, PathRejection>,
    RequestId(rid): RequestId,
    request: Request,
) -> Response {
    let mut who = Who::open(&s, &rid);
    let answer = match path {
        Ok(Path(id)) => forward(&s, &id, request, &rid, &mut who).await,
        Err(_) => undecodable(&s, &request, &mut who),
    };
    match answer {
        Ok(r) => {
            who.settle();
            r
        }
        Err(e) => s.refused(e.with_id(&rid), who).await.into_response(),
    }
}

/// A request refused (503) because the service is shutting down: a gateway request whose key
/// names its tenant is audited as the gateway's other refusals are (it was refused before
/// its route ran; before, it left no record). Others (the runner API names its tenant in
/// the body, not read) cannot be attributed.
pub(crate) async fn refused_while_draining(
    s: &Arc<Service>,
    e: ApiError,
    request: Request,
) -> ApiError {
    match draining_who(s, &e.request_id, &request) {
        Some(who) => s.refused(e, who).await,
        None => e,
    }
}

/// Whom a gateway request refused while draining was for, if its key says.
fn draining_who(s: &Arc<Service>, rid: &str, request: &Request) -> Option<Who> {
    let after = request.uri().path().strip_prefix("/api/ext/")?;
    let mut who = Who::open(s, rid);
    who.extension = Some(shown_id(after.split('/').next().unwrap_or_default()));
    if who.identify(s, request).is_err() {
        who.settle();
        return None;
    }
    Some(who)
}

/// A path whose percent-encoding does not decode (to UTF-8): refused with the JSON body, the
/// request id and, once the key names the tenant, an audit record like any other refusal
/// (red team: axum's own plain-text 400 had none of them).
fn undecodable(s: &Arc<Service>, request: &Request, who: &mut Who) -> Result<Response, ApiError> {
    who.identify(s, request)?;
    Err(ApiError::malformed(
        "the path's percent-encoding does not decode to UTF-8",
    ))
}

/// Whom a request was for, as far as it got: a refusal after the tenant is known is audited,
/// and so is a request whose client goes away before it is answered or its call runs (see
/// [`Left`]). A runner API request is audited so from its runner token on, before its body
/// names the tenant (one cut mid-body, too large or not JSON left no record).
pub(crate) struct Who {
    tenant: Option<TenantName>,
    extension: Option<String>,
    /// The request carried the runner token: it is the operator's, whoever it names.
    runner: bool,
    /// The tenant a runner API request named, when no tenant has that name: recorded in the
    /// message, not as the record's tenant, so that made-up names fold into one summary a
    /// second (each was a kind of its own, a record each: outside attack, session 40).
    no_such_tenant: Option<TenantName>,
    /// Until the request is answered, refused or handed to the host for its call.
    open: Option<Left>,
}

/// What a record of a runner API request says when the request never named its tenant.
const BEFORE_TENANT: &str = "a runner API request, before it named its tenant";

/// A request not answered yet. Dropped so (its client went away while it waited for a
/// token, a seat, a slot or its body), it leaves a record, as a refusal: nothing ran, but it
/// was on its way (outside attack, session 28: a request hung up while it waited for a slot
/// left no record at all). Once its call runs, the host records what happens to it.
struct Left {
    service: Arc<Service>,
    request_id: String,
    since: std::time::Instant,
}

impl Left {
    /// Records the request as left by its client (`how`, if known), or as stopped by the end
    /// of the service's shutdown grace (`cut_off`), for `tenant`.
    async fn record(
        self,
        tenant: Option<&TenantName>,
        extension: Option<&str>,
        how: Option<&str>,
        cut_off: bool,
    ) {
        let who = if cut_off {
            "the service's shutdown grace ran out"
        } else {
            "the client went away"
        };
        let mut message = format!("{who} before the request was answered: its call never ran");
        if let Some(how) = how {
            message = format!("{message} ({how})");
        }
        if tenant.is_none() {
            message = format!("{message}; {BEFORE_TENANT}");
        }
        let mut record = warden_audit::Record::new(warden_audit::Event::Call, &self.request_id)
            .with_outcome(warden_audit::Outcome::Error)
            .with_duration(self.since.elapsed())
            .with_message(message);
        if let Some(t) = tenant {
            record = record.with_tenant(t);
        }
        if let Some(x) = extension {
            record = record.with_extension(x);
        }
        // Counted into one record per window with others of its kind, as refusals are.
        let kind = if cut_off { CUT_OFF } else { CLIENT_GONE };
        if !self.service.host.record_refusal(kind, record).await {
            tracing::error!(request_id = %self.request_id, "the audit record of a request its client left could not be stored");
        }
    }
}

impl Drop for Who {
    fn drop(&mut self) {
        let Some(left) = self.open.take() else {
            return;
        };
        let tenant = self.tenant.take();
        if tenant.is_none() && !self.runner {
            return;
        }
        let extension = self.extension.take();
        let host = left.service.host.clone();
        // Why, as of the drop (not of when its record is written).
        let cut_off = left
            .service
            .cut_off
            .load(std::sync::atomic::Ordering::Acquire);
        host.record_later(async move {
            left.record(tenant.as_ref(), extension.as_deref(), None, cut_off)
                .await
        });
    }
}

impl Who {
    /// A request `rid` just taken up.
    fn open(s: &Arc<Service>, rid: &str) -> Who {
        Who {
            tenant: None,
            extension: None,
            runner: false,
            no_such_tenant: None,
            open: Some(Left {
                service: Arc::clone(s),
                request_id: rid.to_owned(),
                since: std::time::Instant::now(),
            }),
        }
    }

    /// Answered, refused (and audited so), or handed to the host, which records its call.
    fn settle(&mut self) {
        self.open = None;
    }

    /// The tenant whose key the request carries (else 401), noted (so that a refusal from
    /// here on is audited) and named on the request's span.
    fn identify(&mut self, s: &Service, request: &Request) -> Result<TenantName, ApiError> {
        let admin = s.host.admin().map_err(|e| ApiError::from_load(&e))?;
        let tenant = auth::tenant(request.headers(), admin.registry())?;
        self.tenant = Some(tenant.clone());
        self.mark_span();
        Ok(tenant)
    }

    /// Names the tenant and extension on the request's span (see `front`), in one record:
    /// the JSON log format parses and writes a span's fields again at each (about 3% of the
    /// gateway's CPU for two).
    fn mark_span(&self) {
        use tracing::field::Value;
        let span = tracing::Span::current();
        let Some(meta) = span.metadata() else {
            return;
        };
        let fields = meta.fields();
        let (Some(tenant), Some(extension)) = (fields.field("tenant"), fields.field("extension"))
        else {
            return;
        };
        let t = self.tenant.as_ref().map(|t| t.as_str());
        let x = self.extension.as_deref();
        span.record_all(&fields.value_set(&[
            (&tenant, t.as_ref().map(|t| t as &dyn Value)),
            (&extension, x.as_ref().map(|x| x as &dyn Value)),
        ]));
    }
}

/// The path of the request below `/api/ext/{id}`, with its query, as the extension sees it.
/// Read from the raw target: the id segment must be the id itself (no percent-encoding).
fn inner_target(uri: &http::Uri, id: &str) -> Result<(String, String), ApiError> {
    let after = uri.path().strip_prefix("/api/ext/").unwrap_or("");
    let (raw_id, rest) = match after.split_once('/') {
        Some((i, r)) => (i, format!("/{r}")),
        None => (after, "/".to_string()),
    };
    if raw_id != id {
        return Err(ApiError::malformed(
            "the extension id in the path must be written plainly, not percent-encoded",
        ));
    }
    // Dot segments, literal or percent-encoded, and encoded slashes are refused: what the
    // extension is asked for is what the manifest's endpoints were matched against.
    for seg in rest.split('/') {
        let lower = seg.to_ascii_lowercase();
        if seg == "." || seg == ".." || lower.contains("%2e") || lower.contains("%2f") {
            return Err(ApiError::malformed(
                "the path has a dot segment or an encoded dot or slash",
            ));
        }
    }
    let target = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.clone(),
    };
    Ok((rest, target))
}

async fn forward(
    s: &Arc<Service>,
    id: &str,
    request: Request,
    rid: &str,
    who: &mut Who,
) -> Result<Response, ApiError> {
    who.extension = Some(shown_id(id));
    let tenant = who.identify(s, &request)?;
    let mut admitted = s.limiter.admit(&tenant).await?;
    // A declared length over every extension's limit (the policy's ceiling) is refused from
    // the header, before the install is loaded or a byte of the body is read.
    let ceiling = s.host.policy().ceiling.max_request_bytes.bytes();
    if limits::declared_length(request.headers()).is_some_and(|n| n > ceiling) {
        return Err(ApiError::too_large(format!(
            "the request body is over the limit of {ceiling} bytes"
        )));
    }
    // An id that cannot exist is not installed either.
    let id: ExtensionId = id.parse().map_err(|_| {
        ApiError::not_found(format!(
            "no extension {} is installed for this tenant",
            shown_id(id)
        ))
    })?;
    let (path, target) = inner_target(request.uri(), id.as_str())?;
    let info = s.installed(&tenant, &id).await?;
    let method = request.method().as_str().to_string();
    let routed = info.endpoints.iter().find(|e| {
        let m = match &e.method {
            MethodPattern::Any => true,
            // HEAD is GET without the body (RFC 9110 9.3.2): a GET endpoint answers it, and
            // the server leaves the body out.
            MethodPattern::Exact(m) => *m == method || (method == "HEAD" && m == "GET"),
        };
        m && e.path.matches(&path).is_some()
    });
    // An rpc extension is reached only through endpoints that name a method to call; a
    // remote one also through the others, each request proxied to it.
    let call = match (routed, info.kind) {
        (Some(e), _) if e.call.is_none() && info.answers_http => None,
        (Some(e), WorldKind::Rpc) if e.call.is_some() => e.call.clone(),
        _ => {
            return Err(ApiError::not_found(format!(
                "{id} has no endpoint {method} {}",
                warden_audit::sanitize(&path)
            )));
        }
    };
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    let (parts, body) = request.into_parts();
    // A declared length over the install's limit is refused before any wait.
    let declared = limits::declared_length(&parts.headers);
    if declared.is_some_and(|n| n > info.effective.limits.max_request_bytes.bytes()) {
        return Err(too_large(&info));
    }
    // The body is read once the call can run (requests waiting for a slot hold no body).
    let slot = s.slots(&tenant, &id, rid, &mut admitted).await?;
    same_install(&info, slot.info())?;
    // Held until the answer is made: the body is in memory until then.
    let mut hold = s.bodies.hold_for(tenant.as_str());
    let body = read_body(s, slot.info(), body, declared, &mut hold).await?;
    let started = std::time::Instant::now();
    if let Some(m) = call {
        who.settle();
        let called = slot.call(m.as_str(), &body).await;
        let called = s.counted(&tenant, &id, started, called)?;
        let kind = if serde_json::from_slice::<serde::de::IgnoredAny>(&called.value).is_ok() {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let mut response = Response::new(Body::from(called.value));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
        if let Ok(v) = http::HeaderValue::from_str(&called.request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        return Ok(response);
    }
    let mut inner = http::Request::builder()
        .method(parts.method)
        .uri(target)
        .body(body)
        .map_err(|e| ApiError::malformed(format!("the request cannot be forwarded: {e}")))?;
    *inner.headers_mut() = headers::inbound(&parts.headers, peer, rid);
    who.settle();
    let called = slot.call_http(inner).await;
    let called = s.counted(&tenant, &id, started, called)?;
    let (rparts, rbody) = called.value.into_parts();
    let hdrs = headers::outbound(&rparts.headers);
    let mut response = Response::new(Body::from(rbody));
    *response.status_mut() = rparts.status;
    *response.headers_mut() = hdrs;
    if let Ok(v) = http::HeaderValue::from_str(&called.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    Ok(response)
}

/// The request body, within the extension's `max_request_bytes` (413), the body time limit
/// (408) and the process's body budget (503).
async fn read_body(
    s: &Service,
    info: &ExtensionInfo,
    body: Body,
    declared: Option<u64>,
    hold: &mut limits::BodyHold,
) -> Result<Bytes, ApiError> {
    limits::read_body(
        body,
        declared,
        info.effective.limits.max_request_bytes.bytes(),
        s.options.limits.body_timeout,
        hold,
        || too_large(info),
    )
    .await
}

/// Whether the install a request was routed and checked on is the one its slot was taken on:
/// one upgraded or granted otherwise while the request waited may not have its endpoint or
/// method (busy: a new try is routed on the new one).
fn same_install(routed: &ExtensionInfo, slot: &ExtensionInfo) -> Result<(), ApiError> {
    if routed.same_install(slot) {
        return Ok(());
    }
    Err(ApiError::limited(
        "busy",
        format!(
            "{} was replaced while the request waited for a slot; try again",
            routed.id
        ),
    ))
}

fn too_large(info: &ExtensionInfo) -> ApiError {
    ApiError::too_large(format!(
        "the request body is over {}'s limit of {} bytes",
        info.id,
        info.effective.limits.max_request_bytes.bytes()
    ))
}

/// `POST /v1/execute`: `{"tenant", "extension", "method", "input"}` calls an rpc extension
/// installed for `tenant` (input: any JSON, given to the method as its bytes; or
/// `input_base64`: any bytes, as the gateway passes a body).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tenant": "demo", "extension": "warden.echo", "method": "greet", "input": {"name": "world"}}))]
pub(crate) struct Execute {
    /// The tenant whose install is called.
    #[schema(example = "demo")]
    tenant: String,
    /// The extension's id (an rpc extension).
    #[schema(example = "warden.echo")]
    extension: String,
    /// A method the manifest lists.
    #[schema(example = "greet")]
    method: String,
    /// Any JSON, given to the method as its bytes (absent: `null`). Not with `input_base64`
    /// (an `input` of `null` counts as none).
    #[serde(default)]
    input: Option<serde_json::Value>,
    /// Bytes that are not JSON (an image, a protobuf), in base64 (standard alphabet, padded),
    /// given to the method as they are. Not with `input`.
    #[serde(default)]
    #[schema(content_encoding = "base64", example = "AAEC/w==")]
    input_base64: Option<String>,
}

impl Execute {
    /// The bytes the method is given.
    fn input(&self) -> Result<Vec<u8>, ApiError> {
        match (&self.input, &self.input_base64) {
            (Some(_), Some(_)) => Err(ApiError::malformed(
                "give the input as input (JSON) or as input_base64 (bytes), not both",
            )),
            (None, Some(b64)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| ApiError::malformed(format!("input_base64: {e}")))
            }
            (json, None) => serde_json::to_vec(json.as_ref().unwrap_or(&serde_json::Value::Null))
                .map_err(|e| ApiError::malformed(format!("input: {e}"))),
        }
    }
}

/// `POST /v1/execute`: the runner API (runner token), the gateway's call path for rpc
/// extensions.
#[utoipa::path(post, path = "/v1/execute", tag = "runner", operation_id = "execute",
    security(("runner_token" = [])),
    request_body = Execute,
    responses(
        (status = 200, description = "The method's output.", body = crate::docs::ExecuteOutput),
        crate::docs::FrontRefusals,
        crate::docs::OperatorRefusals,
        (status = 400, description = "Not a JSON `Execute`, a tenant name that does not parse, an http extension, a method the manifest does not list, or input the extension refuses (`malformed`).", body = crate::docs::ErrorBody),
        (status = 403, description = "A tenant's API key instead of the runner token, or the operator's policy refuses the install (`denied`).", body = crate::docs::ErrorBody),
        (status = 404, description = "The runner API is off (no runner token), or the extension is not installed for the tenant (`not-found`).", body = crate::docs::ErrorBody),
        (status = 408, description = "The body did not arrive in time (`request-timeout`).", body = crate::docs::ErrorBody),
        (status = 413, description = "The body or input is over the limit; a `Content-Length` over it is refused before the body is read (`too-large`).", body = crate::docs::ErrorBody),
        (status = 429, description = "The tenant is over its rate or concurrency, or the install's calls are all busy (`rate-limited`, `busy`).", body = crate::docs::ErrorBody),
        (status = 500, description = "The service's own failure: storage, a task (`internal`).", body = crate::docs::ErrorBody),
        (status = 502, description = "The install does not verify (`integrity`), cannot run here (`bad-extension`), or the extension failed: `trap`, `memory-limit`, `fuel-exhausted`, `extension-error`, `response-too-large`, `quota-exceeded` (the install's read-write folders are over their quota), `remote-error` (a remote extension's server could not be reached as its bundle requires), `host-error`.", body = crate::docs::ErrorBody),
        (status = 504, description = "The call's time limit (`timeout`).", body = crate::docs::ErrorBody),
    ),
)]
pub(crate) async fn execute(
    State(s): State<Arc<Service>>,
    RequestId(rid): RequestId,
    request: Request,
) -> Response {
    let mut who = Who::open(&s, &rid);
    match run(&s, request, &rid, &mut who).await {
        Ok(r) => {
            who.settle();
            r
        }
        Err(e) => s.refused(e.with_id(&rid), who).await.into_response(),
    }
}

async fn run(
    s: &Arc<Service>,
    request: Request,
    rid: &str,
    who: &mut Who,
) -> Result<Response, ApiError> {
    let Some(token) = &s.options.runner_token else {
        return Err(ApiError::not_found(
            "the runner API is off: the service has no runner token",
        ));
    };
    auth::operator(request.headers(), token, "runner API")?;
    who.runner = true;
    // No extension takes more than the policy's ceiling; the JSON around the input (and its
    // escaping) gets room on top. The extension's own limit is checked once it is known.
    let cap = s.host.policy().ceiling.max_request_bytes.bytes();
    let cap = cap.saturating_mul(2).saturating_add(64 << 10);
    // A declared length over the cap is refused from the header, before the body is read;
    // the body is held (and counted in the process's budget) until the answer is made.
    let declared = limits::declared_length(request.headers());
    let mut hold = s.bodies.hold();
    let body = limits::read_body(
        request.into_body(),
        declared,
        cap,
        s.options.limits.body_timeout,
        &mut hold,
        || ApiError::too_large(format!("the request body is over the limit of {cap} bytes")),
    )
    .await?;
    let req: Execute = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("the request is not an execute request: {e}")))?;
    let tenant: TenantName = req
        .tenant
        .parse()
        .map_err(|e| ApiError::malformed(format!("tenant: {e}")))?;
    who.tenant = Some(tenant.clone());
    who.extension = Some(shown_id(&req.extension));
    who.mark_span();
    // The install first: a name that is no tenant's, or no install of it, takes no rate (each
    // name would have a bucket of its own: outside attack, session 40, 15,000 made-up names).
    let found = match req.extension.parse::<ExtensionId>() {
        Ok(id) => s.installed(&tenant, &id).await.map(|info| (id, info)),
        Err(_) => Err(not_installed_text(&req.extension)),
    };
    let (id, info) = match found {
        Ok(found) => found,
        Err(e) => {
            if e.code == "not-found" && !s.tenant_exists(&tenant) {
                who.tenant = None;
                who.no_such_tenant = Some(tenant);
            }
            return Err(e);
        }
    };
    let mut admitted = s.limiter.admit(&tenant).await?;
    if info.kind != WorldKind::Rpc {
        return Err(ApiError::malformed(format!(
            "{id} is an http extension: call it through the gateway, /api/ext/{id}/..."
        )));
    }
    let input = req.input()?;
    let max = info.effective.limits.max_request_bytes.bytes();
    if input.len() as u64 > max {
        return Err(ApiError::too_large(format!(
            "the input is over {id}'s limit of {max} bytes"
        )));
    }
    let slot = s.slots(&tenant, &id, rid, &mut admitted).await?;
    same_install(&info, slot.info())?;
    let started = std::time::Instant::now();
    who.settle();
    let called = slot.call(&req.method, &input).await;
    let called = s.counted(&tenant, &id, started, called)?;
    // The output as JSON when it is JSON, else as a string (lossy) and base64.
    let output = match serde_json::from_slice::<serde_json::Value>(&called.value) {
        Ok(v) => serde_json::json!({ "request_id": called.request_id, "output": v }),
        Err(_) => {
            use base64::Engine;
            serde_json::json!({
                "request_id": called.request_id,
                "output_base64": base64::engine::general_purpose::STANDARD.encode(&called.value),
            })
        }
    };
    let mut r = axum::Json(output).into_response();
    if let Ok(v) = http::HeaderValue::from_str(&called.request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    Ok(r)
}

fn not_installed_text(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no extension {} is installed for this tenant",
        shown_id(id)
    ))
}

/// Longest id quoted from a request into a refusal and its audit record: longer than any
/// valid id, short enough that a flood of made-up ids cannot make each record large (red
/// team: 1,000-character ids made every 429 record a kilobyte).
const MAX_SHOWN_ID: usize = 128;

/// The id a client sent, sanitized and cut to [`MAX_SHOWN_ID`] characters.
fn shown_id(id: &str) -> String {
    let clean = warden_audit::sanitize(id);
    match clean.char_indices().nth(MAX_SHOWN_ID) {
        Some((at, _)) => format!("{}...", &clean[..at]),
        None => clean,
    }
}

impl Service {
    /// The slots a request of `tenant` to `id` runs in, the extension's (returned) and the
    /// tenant's (held by `admitted`), within what is left of its wait. Requests waiting for
    /// one extension hold none of their tenant's slots (its other extensions are served
    /// meanwhile); and none holds an extension's slot while it waits for a tenant's: a call
    /// running holds its tenant's slot while its calls to other extensions wait for theirs,
    /// so the reverse order could wait on it for ever (red team: callers and their callee's
    /// own requests stuck until their time limit).
    async fn slots(
        self: &Arc<Self>,
        tenant: &TenantName,
        id: &ExtensionId,
        rid: &str,
        admitted: &mut limits::Admitted,
    ) -> Result<warden_host::Slot, ApiError> {
        let slot = self.slot(tenant, id, rid, admitted.left()).await?;
        let slot = if self.limiter.try_seat(tenant, admitted) {
            slot
        } else {
            drop(slot);
            self.limiter.seat(tenant, admitted).await?;
            // The install as it is after that wait (the slot's call trusts a fresh read).
            self.installed(tenant, id).await?;
            self.slot(tenant, id, rid, admitted.left()).await?
        };
        // The tenant's slot is given back with the call's, just before it: whoever gets the
        // extension's slot next finds one of the tenant's free too.
        Ok(match admitted.seat_taken() {
            Some(seat) => slot.holding(seat),
            None => slot,
        })
    }

    /// A slot of the install `id` of `tenant` for the request `rid`, within `wait` (what is
    /// left of its `busy_wait`); a refusal is counted in the metrics as a call's would be.
    async fn slot(
        self: &Arc<Self>,
        tenant: &TenantName,
        id: &ExtensionId,
        rid: &str,
        wait: std::time::Duration,
    ) -> Result<warden_host::Slot, ApiError> {
        self.still_loaded(tenant, id).await?;
        let started = std::time::Instant::now();
        let view = self.host.tenant(tenant).waiting_at_most(wait);
        let mut slot = view.slot_as(rid.to_string(), id).await;
        if Service::unloaded_meanwhile(&slot) {
            self.still_loaded(tenant, id).await?;
            slot = view.slot_as(rid.to_string(), id).await;
        }
        slot.map_err(|f| {
            let outcome = f.error.code().as_str();
            self.metrics
                .call(tenant.as_str(), id.as_str(), outcome, started.elapsed());
            ApiError::from_call(&f)
        })
    }

    /// Counts a finished call in the metrics (by tenant, extension and outcome) and maps its
    /// failure.
    fn counted<T>(
        &self,
        tenant: &TenantName,
        id: &ExtensionId,
        started: std::time::Instant,
        called: Result<warden_host::Called<T>, warden_host::CallFailure>,
    ) -> Result<warden_host::Called<T>, ApiError> {
        let outcome = match &called {
            Ok(_) => "ok",
            Err(f) => f.error.code().as_str(),
        };
        self.metrics
            .call(tenant.as_str(), id.as_str(), outcome, started.elapsed());
        called.map_err(|f| ApiError::from_call(&f))
    }
}

impl Service {
    /// Audits a refusal the host has not recorded (the gateway's own: sizes, time, rate,
    /// routes), once the tenant is known, and returns it. The answer waits for the record
    /// when it is the first of its kind in its window (see `Host::record_refusal`).
    async fn refused(self: &Arc<Self>, e: ApiError, mut who: Who) -> ApiError {
        let left = who.open.take();
        let tenant = who.tenant.take();
        if tenant.is_none() && !who.runner {
            return e;
        }
        if e.is_client_gone() {
            if let Some(left) = left {
                let cut_off = self.cut_off.load(std::sync::atomic::Ordering::Acquire);
                left.record(
                    tenant.as_ref(),
                    who.extension.as_deref(),
                    Some(&e.message),
                    cut_off,
                )
                .await;
            }
            return e;
        }
        if e.audited {
            return e;
        }
        let mut message = format!(
            "refused by the gateway ({} {}): {}",
            e.status.as_u16(),
            e.code,
            e.message
        );
        if let Some(name) = &who.no_such_tenant {
            message =
                format!("{message}; a runner API request for tenant {name}, which does not exist");
        } else if tenant.is_none() {
            message = format!("{message}; {BEFORE_TENANT}");
        }
        let mut record = warden_audit::Record::new(warden_audit::Event::Call, &e.request_id)
            .with_outcome(e.outcome())
            .with_message(message);
        if let Some(t) = &tenant {
            record = record.with_tenant(t);
        }
        if let Some(x) = &who.extension {
            record = record.with_extension(x);
        }
        // Repeats of a refusal within a second are counted into one record (a flood of
        // refused requests must not buy one synced record each).
        if !self.host.record_refusal(e.code, record).await {
            // A refusal that cannot be recorded is still a refusal; the log's failure is the
            // host's to report (its next call is refused by the audit gate).
            tracing::error!(request_id = %e.request_id, "the audit record of a refusal could not be stored");
        }
        e
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ids_quoted_from_requests_are_cut() {
        assert_eq!(shown_id("warden.hello"), "warden.hello");
        let long = "a".repeat(1000);
        let shown = shown_id(&long);
        assert_eq!(shown.len(), MAX_SHOWN_ID + 3);
        assert!(shown.ends_with("..."));
        // Cut on a character boundary.
        let wide = "\u{e9}".repeat(500);
        assert_eq!(shown_id(&wide).chars().count(), MAX_SHOWN_ID + 3);
    }
}
