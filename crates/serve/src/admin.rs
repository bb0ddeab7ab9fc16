//! The admin API (`/v1/admin/...`, by the admin token; off without one): tenants and their
//! keys, publishing bundles, installs with grants, secrets, the trust bundle, the audit log.
//! Every operation is the host's `Admin` one (verification, install rules, audit records).
//!
//! Every answer carries the request's id, the one the front checks assigned: in
//! `x-request-id`, and in an error's `request_id`. What each operation takes and answers is
//! described by the `#[utoipa::path]` on its handler and the `ToSchema` types here, which are
//! the types the handlers serialize (`GET /openapi.json`, see `openapi.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warden_bundle::ContentHash;
use warden_host::{ExtensionId, Grant, HostError, SecretName, SecretValue, TenantName};

use crate::docs::{AdminRefusals, ErrorBody, FrontRefusals};
use crate::error::ApiError;
use crate::{ApiRoute, RequestId, Service, Verb, auth};

/// The admin API's routes, and `/metrics` (by the same token).
pub(crate) fn table() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Verb::Post, "/v1/admin/tenants", create_tenant),
        ApiRoute::new(Verb::Get, "/v1/admin/tenants", tenants),
        ApiRoute::new(Verb::Post, "/v1/admin/bundles", publish),
        ApiRoute::new(
            Verb::Put,
            "/v1/admin/tenants/{tenant}/installs/{extension}",
            install,
        ),
        ApiRoute::new(
            Verb::Delete,
            "/v1/admin/tenants/{tenant}/installs/{extension}",
            uninstall,
        ),
        ApiRoute::new(
            Verb::Put,
            "/v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}",
            put_secret,
        ),
        ApiRoute::new(
            Verb::Delete,
            "/v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}",
            delete_secret,
        ),
        ApiRoute::new(
            Verb::Put,
            "/v1/admin/tenants/{tenant}/installs/{extension}/client-certificate",
            put_client_certificate,
        ),
        ApiRoute::new(Verb::Post, "/v1/admin/trust/reload", reload_trust),
        ApiRoute::new(Verb::Get, "/v1/admin/remote/claims-key", claims_key),
        ApiRoute::new(Verb::Get, "/v1/admin/audit", audit),
        ApiRoute::new(Verb::Get, "/v1/admin/audit/verify", audit_verify),
        ApiRoute::new(Verb::Get, "/metrics", crate::metrics),
    ]
}

pub(crate) fn routes(s: &Arc<Service>) -> Router<Arc<Service>> {
    ApiRoute::router(table())
        .layer(DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(s),
            crate::console::guard,
        ))
}

/// Checks the admin token, or the console's session when the request has no `Authorization`
/// (404 when the admin API is off, as if it did not exist). A change made with the session
/// passed the forgery guard already (see [`routes`]).
pub(crate) fn admin(s: &Service, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.options.admin_token else {
        return Err(ApiError::not_found(
            "the admin API is off: the service has no admin token",
        ));
    };
    if !headers.contains_key(http::header::AUTHORIZATION) && s.console.session(headers).is_some() {
        return Ok(());
    }
    auth::operator(headers, token, "admin API")
}

/// Runs blocking admin work (storage, verification) off the async threads, audited under the
/// request's id (the one its answer carries in `x-request-id`).
pub(crate) async fn blocking<T: Send + 'static>(
    s: &Arc<Service>,
    id: &RequestId,
    work: impl FnOnce(&warden_host::Admin<'_>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = Arc::clone(s);
    let id = id.0.clone();
    tokio::task::spawn_blocking(move || {
        let admin = s.host.admin().map_err(|e| host_error(&e))?;
        work(&admin.with_request_id(id))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the admin task failed: {e}")))?
}

/// A host error on the admin API: refusals are the client's (400, 403, 404, 409), failures of
/// storage are the service's (500).
pub(crate) fn host_error(e: &HostError) -> ApiError {
    use warden_registry::RegistryError;
    let text = warden_call::text::chain(e);
    match e {
        HostError::Bundle(_) | HostError::Signature(_) => ApiError::malformed(text),
        HostError::Verify(_) => ApiError::forbidden(text),
        HostError::Policy(_) | HostError::Plan(_) | HostError::Refused(_) => {
            ApiError::forbidden(text)
        }
        // A component that cannot be compiled (or costs more than `[policy.compile]`) is
        // refused at publish and install, before anything is stored.
        HostError::Load(l) if l.is_about_the_component() => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-extension", text)
        }
        // Nothing wrong with the component: other compiles fill the queue.
        e if e.is_busy() => ApiError::unavailable(text),
        HostError::NotPublished(_) | HostError::NotInstalled { .. } => ApiError::not_found(text),
        HostError::Registry(RegistryError::NoTenant(_)) => ApiError::not_found(text),
        HostError::Registry(RegistryError::TenantExists(_)) => {
            ApiError::new(StatusCode::CONFLICT, "exists", text)
        }
        HostError::Registry(RegistryError::Changed { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "changed", text)
        }
        HostError::Registry(RegistryError::VersionTaken { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "version-exists", text)
        }
        HostError::Registry(RegistryError::PublisherPinned { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "publisher-pinned", text)
        }
        HostError::Secret(
            warden_host::SecretError::TooLarge { .. } | warden_host::SecretError::NotUtf8 { .. },
        ) => ApiError::malformed(text),
        e if crate::error::storage_down(e) => ApiError::unavailable(text),
        _ => ApiError::internal(text),
    }
}

pub(crate) fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| ApiError::malformed(format!("{what}: {e}")))
}

/// The answer, with the request's id: in `x-request-id`, and in the error's body.
pub(crate) fn respond(id: &RequestId, r: Result<Response, ApiError>) -> Response {
    let mut r = r.unwrap_or_else(|e| e.with_id(&id.0).into_response());
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        h.insert("x-request-id", v);
    }
    // What the admin API answers (keys once, audit exports) stays out of caches.
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The path's parameters, or 400 as JSON (not axum's plain-text rejection).
pub(crate) fn path_params<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::malformed(format!("the path: {}", e.body_text())))
}

/// The query's parameters, or 400 as JSON.
pub(crate) fn query_params<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::malformed(format!("the query: {}", e.body_text())))
}

/// Most bytes of an admin request's JSON body: room for a secret's value (64 KiB) written
/// with every character escaped.
const MAX_ADMIN_JSON: u64 = 1 << 20;

/// A JSON body of `T` (400), read only once the token was checked, at most
/// [`MAX_ADMIN_JSON`] bytes (413), counted in the process's body budget while it is read.
async fn json_body<T: serde::de::DeserializeOwned>(
    s: &Service,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<T, ApiError> {
    let mut hold = s.bodies.hold();
    let body = crate::limits::read_body(
        body,
        crate::limits::declared_length(headers),
        MAX_ADMIN_JSON,
        s.options.limits.body_timeout,
        &mut hold,
        || ApiError::too_large(format!("the JSON body is over {MAX_ADMIN_JSON} bytes")),
    )
    .await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::malformed(format!("the JSON body: {e}")))
}

pub(crate) fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/admin/tenants`: a new tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    /// The tenant's name: a DNS-style label (lowercase letters, digits, `-`).
    #[schema(example = "acme")]
    name: String,
}

/// A tenant made, and its API key: shown this once (only its hash is kept).
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantCreated {
    tenant: String,
    /// The tenant's key for the gateway, `wdn_...`.
    api_key: String,
}

/// `POST /v1/admin/tenants`: creates a tenant and its API key.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", operation_id = "create_tenant",
    security(("admin_token" = [])),
    request_body = NewTenant,
    responses(
        (status = 201, description = "The tenant and its API key (shown once).", body = TenantCreated),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "Not a JSON `NewTenant`, or not a valid tenant name (`malformed`).", body = ErrorBody),
        (status = 409, description = "A tenant of that name exists (`exists`).", body = ErrorBody),
        (status = 413, description = "The JSON body is over 1 MiB (`too-large`).", body = ErrorBody),
    ),
)]
pub(crate) async fn create_tenant(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let req: NewTenant = json_body(&s, &headers, body).await?;
        let name: TenantName = parse("name", &req.name)?;
        let (name, key) = blocking(&s, &id, move |a| {
            a.create_tenant(&name)
                .map(|k| (name, k))
                .map_err(|e| host_error(&e))
        })
        .await?;
        let made = TenantCreated {
            tenant: name.as_str().to_string(),
            api_key: key.reveal().to_string(),
        };
        Ok((StatusCode::CREATED, axum::Json(made)).into_response())
    };
    respond(&id, r.await)
}

/// The tenants.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantList {
    tenants: Vec<TenantEntry>,
}

/// One tenant.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantEntry {
    name: String,
    /// When it was created, in seconds since the Unix epoch.
    created: u64,
}

/// `GET /v1/admin/tenants`: the tenants.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin", operation_id = "list_tenants",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every tenant.", body = TenantList),
        FrontRefusals,
        AdminRefusals,
    ),
)]
pub(crate) async fn tenants(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let all = blocking(&s, &id, |a| {
            a.registry()
                .tenants()
                .map_err(|e| host_error(&HostError::from(e)))
        })
        .await?;
        let list = TenantList {
            tenants: all
                .iter()
                .map(|t| TenantEntry {
                    name: t.name.as_str().to_string(),
                    created: unix(t.created),
                })
                .collect(),
        };
        Ok(axum::Json(list).into_response())
    };
    respond(&id, r.await)
}

/// `POST /v1/admin/bundles`: the two parts of a publication (no others, each once).
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart parts `publish` reads by name"
)]
pub(crate) struct PublishForm {
    /// The bundle (`warden pack`'s `.wext`), at most `[policy.gateway] max_admin_body` bytes.
    #[schema(value_type = String, format = Binary)]
    bundle: Vec<u8>,
    /// Its DSSE envelope (`warden sign`'s `.sig`, JSON).
    #[schema(value_type = String, format = Binary)]
    signature: Vec<u8>,
}

/// A bundle published: verified against the trust bundle and stored by its content hash.
#[derive(Serialize, ToSchema)]
pub(crate) struct PublishedBundle {
    /// The extension's id.
    id: String,
    version: String,
    publisher: String,
    /// The bundle's identity: `sha256:` and 64 lowercase hex digits.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    content_hash: String,
}

/// `POST /v1/admin/bundles`, multipart with parts `bundle` (the `.wext` bytes) and `signature`
/// (its DSSE envelope).
#[utoipa::path(post, path = "/v1/admin/bundles", tag = "admin", operation_id = "publish",
    security(("admin_token" = [])),
    request_body(content = PublishForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Verified and published.", body = PublishedBundle),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "Not multipart with exactly the parts `bundle` and `signature`, or a bundle or envelope that does not parse (`malformed`); or a component that cannot be compiled and linked, or costs more than `[policy.compile]` allows (`bad-extension`: components are compiled at publish).", body = ErrorBody),
        (status = 403, description = "A tenant's API key instead of the admin token, or the bundle does not verify against the trust bundle, or the operator's policy refuses it (`denied`).", body = ErrorBody),
        (status = 409, description = "The id and version are published with other content (`version-exists`), or the id was first published by another publisher and stays pinned to it (`publisher-pinned`).", body = ErrorBody),
        (status = 413, description = "A part is over `max_admin_body` (`too-large`).", body = ErrorBody),
    ),
)]
pub(crate) async fn publish(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let mut multipart = multipart.map_err(|e| {
            ApiError::malformed(format!(
                "publish takes multipart/form-data with parts `bundle` and `signature`: {e}"
            ))
        })?;
        let max = s.options.limits.max_admin_body.bytes();
        // Every part's bytes are counted in the process's body budget as they arrive, and
        // held until the answer is made.
        let mut hold = s.bodies.hold();
        let mut held = 0u64;
        let (mut bundle, mut signature) = (None, None);
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::malformed(format!("the multipart body: {e}")))?
        {
            let name = field.name().unwrap_or("").to_string();
            let mut field = field;
            let mut bytes = Vec::new();
            // Read a chunk at a time: a part over the limit is refused at the limit, not
            // after it was buffered whole.
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| ApiError::malformed(format!("part {name}: {e}")))?
            {
                if (bytes.len() as u64).saturating_add(chunk.len() as u64) > max {
                    return Err(ApiError::too_large(format!(
                        "part {name} is over max_admin_body ({max} bytes)"
                    )));
                }
                held = held.saturating_add(chunk.len() as u64);
                hold.grow_to(held)?;
                bytes.extend_from_slice(&chunk);
            }
            let slot = match name.as_str() {
                "bundle" => &mut bundle,
                "signature" => &mut signature,
                other => {
                    return Err(ApiError::malformed(format!(
                        "unknown part {:?}; expected `bundle` and `signature`",
                        warden_audit::sanitize(other)
                    )));
                }
            };
            if slot.replace(bytes).is_some() {
                return Err(ApiError::malformed(format!("part `{name}` is given twice")));
            }
        }
        let (Some(bundle), Some(signature)) = (bundle, signature) else {
            return Err(ApiError::malformed(
                "publish needs both parts, `bundle` and `signature`",
            ));
        };
        let out = blocking(&s, &id, move |a| {
            let v = a
                .publish("admin API upload", bundle, &signature)
                .map_err(|e| host_error(&e))?;
            let e = &v.manifest().extension;
            Ok(PublishedBundle {
                id: e.id.as_str().to_string(),
                version: e.version.to_string(),
                publisher: e.publisher.to_string(),
                content_hash: v.content_hash().to_string(),
            })
        })
        .await?;
        Ok((StatusCode::CREATED, axum::Json(out)).into_response())
    };
    respond(&id, r.await)
}

/// `PUT .../installs/{extension}`: install or upgrade to a published bundle.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallRequest {
    /// The published bundle: `sha256:` and 64 lowercase hex digits.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    content_hash: String,
    /// `all`, `none` or a comma-separated list of capabilities; absent: keep the installed
    /// version's grant (and approval).
    grant: Option<String>,
    /// Allow a lower version than the installed one.
    #[serde(default)]
    force: bool,
}

/// An install made or changed, and what changed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Installed {
    tenant: String,
    extension: String,
    version: String,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    content_hash: String,
    grant: String,
    /// What the install did (new install, upgrade, same version, ...), in words.
    plan: String,
}

/// `PUT /v1/admin/tenants/{tenant}/installs/{extension}`: installs (or upgrades to) a
/// published bundle, verified again now.
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}/installs/{extension}", tag = "admin",
    operation_id = "install",
    security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's name."),
        ("extension" = String, Path, description = "The extension's id (the bundle's)."),
    ),
    request_body = InstallRequest,
    responses(
        (status = 200, description = "Installed.", body = Installed),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "Not a JSON `InstallRequest`; a tenant, id, hash or grant that does not parse; or the bundle is another extension (`malformed`); or its component cannot be compiled and linked (`bad-extension`: components are compiled at install).", body = ErrorBody),
        (status = 403, description = "A tenant's API key; or the bundle no longer verifies, the install rules refuse it (a lower version without `force`, more permissions without a grant) or the policy does (`denied`).", body = ErrorBody),
        (status = 404, description = "The admin API is off, no such tenant, or no bundle of that hash was published (`not-found`).", body = ErrorBody),
        (status = 409, description = "The install changed meanwhile (`changed`).", body = ErrorBody),
        (status = 413, description = "The JSON body is over 1 MiB (`too-large`).", body = ErrorBody),
    ),
)]
pub(crate) async fn install(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: axum::body::Body,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let (tenant, extension) = path_params(path)?;
        let tenant: TenantName = parse("tenant", &tenant)?;
        let extension: ExtensionId = parse("extension", &extension)?;
        let req: InstallRequest = json_body(&s, &headers, body).await?;
        let hash: ContentHash = parse("content_hash", &req.content_hash)?;
        let grant: Option<Grant> = req
            .grant
            .as_deref()
            .map(|g| parse("grant", g))
            .transpose()?;
        let service = Arc::clone(&s);
        let out = blocking(&s, &id, move |a| {
            let published = a
                .registry()
                .published(&hash)
                .map_err(|e| host_error(&HostError::from(e)))?
                .ok_or_else(|| ApiError::not_found(format!("no bundle {hash} was published")))?;
            if published.id != extension {
                return Err(ApiError::malformed(format!(
                    "bundle {hash} is {}, not {extension}",
                    published.id
                )));
            }
            let done = a
                .install_published(&tenant, &hash, grant.as_ref(), req.force)
                .map_err(|e| host_error(&e))?;
            // The next call loads the new version.
            service.host.tenant(&tenant).unload(&extension);
            Ok(Installed {
                tenant: tenant.as_str().to_string(),
                extension: extension.as_str().to_string(),
                version: done.record.version.to_string(),
                content_hash: done.record.content_hash.to_string(),
                grant: done.record.grant.to_string(),
                plan: done.plan.to_string(),
            })
        })
        .await?;
        Ok(axum::Json(out).into_response())
    };
    respond(&id, r.await)
}

/// `DELETE /v1/admin/tenants/{tenant}/installs/{extension}`: uninstalls; calls stop at once.
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant}/installs/{extension}", tag = "admin",
    operation_id = "uninstall",
    security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's name."),
        ("extension" = String, Path, description = "The extension's id."),
    ),
    responses(
        (status = 204, description = "Uninstalled."),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "A tenant or id that does not parse (`malformed`).", body = ErrorBody),
        (status = 404, description = "The admin API is off, or that extension is not installed for that tenant (`not-found`).", body = ErrorBody),
    ),
)]
pub(crate) async fn uninstall(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let (tenant, extension) = path_params(path)?;
        let tenant: TenantName = parse("tenant", &tenant)?;
        let extension: ExtensionId = parse("extension", &extension)?;
        let removed = blocking(&s, &id, move |a| {
            a.uninstall(&tenant, &extension).map_err(|e| host_error(&e))
        })
        .await?;
        if removed {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(ApiError::not_found(
                "that extension is not installed for that tenant",
            ))
        }
    };
    respond(&id, r.await)
}

/// `PUT .../secrets/{name}`: a secret's value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretBody {
    /// The value (UTF-8 text), encrypted at rest and never shown again.
    value: String,
}

/// `PUT /v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}`: sets a secret of an
/// install.
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}",
    tag = "admin", operation_id = "put_secret",
    security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's name."),
        ("extension" = String, Path, description = "The extension's id."),
        ("name" = String, Path, description = "The secret's name."),
    ),
    request_body = SecretBody,
    responses(
        (status = 204, description = "Stored."),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "Not a JSON `SecretBody`; a tenant, id or name that does not parse; or a value too large (`malformed`).", body = ErrorBody),
        (status = 404, description = "The admin API is off, or the extension is not installed for the tenant (`not-found`).", body = ErrorBody),
        (status = 413, description = "The JSON body is over 1 MiB (`too-large`).", body = ErrorBody),
    ),
)]
pub(crate) async fn put_secret(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: axum::body::Body,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let (tenant, extension, name) = path_params(path)?;
        let tenant: TenantName = parse("tenant", &tenant)?;
        let extension: ExtensionId = parse("extension", &extension)?;
        let name: SecretName = parse("secret name", &name)?;
        let req: SecretBody = json_body(&s, &headers, body).await?;
        let value = SecretValue::new(req.value)
            .map_err(|e| ApiError::malformed(format!("secret value: {e}")))?;
        let service = Arc::clone(&s);
        blocking(&s, &id, move |a| {
            // A secret belongs to an install: none for a tenant or install that does not
            // exist.
            must_be_installed(a, &tenant, &extension)?;
            service
                .host
                .tenant(&tenant)
                .put_secret_as(a.request_id().to_string(), &extension, &name, value)
                .map_err(|e| match e {
                    HostError::Remote(m) => ApiError::malformed(m),
                    other => host_error(&other),
                })
        })
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(&id, r.await)
}

/// 404 unless `extension` is installed for `tenant` (what belongs to an install needs one).
fn must_be_installed(
    a: &warden_host::Admin<'_>,
    tenant: &TenantName,
    extension: &ExtensionId,
) -> Result<(), ApiError> {
    let installed = a
        .registry()
        .install(tenant, extension)
        .map_err(|e| host_error(&HostError::from(e)))?;
    match installed {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!(
            "{extension} is not installed for tenant {tenant}"
        ))),
    }
}

/// `PUT .../client-certificate`: the certificate a remote extension presents to its server.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientCertificateBody {
    /// The certificate chain, PEM, leaf first.
    certificate: String,
    /// Its private key, PEM; kept encrypted like a secret, never shown again.
    key: String,
}

/// `PUT /v1/admin/tenants/{tenant}/installs/{extension}/client-certificate`: sets the client
/// certificate a remote extension's install presents to its server (issued by the operator,
/// so the remote can tell tenants apart). Audited like a secret; the install's next call, on
/// any runner of a fleet, uses it.
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}/installs/{extension}/client-certificate",
    tag = "admin", operation_id = "put_client_certificate",
    security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's name."),
        ("extension" = String, Path, description = "The extension's id."),
    ),
    request_body = ClientCertificateBody,
    responses(
        (status = 204, description = "Stored."),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "Not a JSON `ClientCertificateBody`; a certificate or key that does not read; a tenant or id that does not parse (`malformed`).", body = ErrorBody),
        (status = 404, description = "The admin API is off, or the extension is not installed for the tenant (`not-found`).", body = ErrorBody),
        (status = 413, description = "The JSON body is over 1 MiB (`too-large`).", body = ErrorBody),
    ),
)]
pub(crate) async fn put_client_certificate(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: axum::body::Body,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let (tenant, extension) = path_params(path)?;
        let tenant: TenantName = parse("tenant", &tenant)?;
        let extension: ExtensionId = parse("extension", &extension)?;
        let req: ClientCertificateBody = json_body(&s, &headers, body).await?;
        let service = Arc::clone(&s);
        blocking(&s, &id, move |a| {
            must_be_installed(a, &tenant, &extension)?;
            let view = service.host.tenant(&tenant);
            view.set_client_identity(&extension, &req.certificate, &req.key)
                .map_err(|e| match e {
                    HostError::Remote(m) => ApiError::malformed(m),
                    other => host_error(&other),
                })
        })
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(&id, r.await)
}

/// `DELETE /v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}`: removes a secret.
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}",
    tag = "admin", operation_id = "delete_secret",
    security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's name."),
        ("extension" = String, Path, description = "The extension's id."),
        ("name" = String, Path, description = "The secret's name."),
    ),
    responses(
        (status = 204, description = "Removed."),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "A tenant, id or name that does not parse (`malformed`).", body = ErrorBody),
        (status = 404, description = "The admin API is off, or there is no such secret (`not-found`).", body = ErrorBody),
    ),
)]
pub(crate) async fn delete_secret(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let (tenant, extension, name) = path_params(path)?;
        let tenant: TenantName = parse("tenant", &tenant)?;
        let extension: ExtensionId = parse("extension", &extension)?;
        let name: SecretName = parse("secret name", &name)?;
        let service = Arc::clone(&s);
        let existed = blocking(&s, &id, move |a| {
            service
                .host
                .tenant(&tenant)
                .delete_secret_as(a.request_id().to_string(), &extension, &name)
                .map_err(|e| host_error(&e))
        })
        .await?;
        if existed {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(ApiError::not_found("no such secret"))
        }
    };
    respond(&id, r.await)
}

/// The key remote extensions check the claims of warden's calls with.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClaimsKeyBody {
    /// Ed25519 public key, PEM (SPKI).
    public_key_pem: String,
    /// The `kid` of the tokens it checks.
    kid: String,
}

/// `GET /v1/admin/remote/claims-key`: the public key of the claims every call to a remote
/// extension carries (an EdDSA JWT in `authorization`: `sub` the tenant, `ext` the extension,
/// `aud` the endpoint, 60 s), for the operator to give the vendors. The same on every runner
/// that shares the secrets' key.
#[utoipa::path(get, path = "/v1/admin/remote/claims-key", tag = "admin", operation_id = "claims_key",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The public key.", body = ClaimsKeyBody),
        FrontRefusals,
        AdminRefusals,
    ),
)]
pub(crate) async fn claims_key(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let (public_key_pem, kid) = s.host.claims_public_key();
        Ok(axum::Json(ClaimsKeyBody {
            public_key_pem,
            kid,
        })
        .into_response())
    };
    respond(&id, r.await)
}

/// The trust bundle was read again.
#[derive(Serialize, ToSchema)]
pub(crate) struct TrustReloaded {
    /// Always `true`.
    reloaded: bool,
}

/// `POST /v1/admin/trust/reload`: reads the trust file again (as SIGHUP does); every install
/// is verified again on its next call.
#[utoipa::path(post, path = "/v1/admin/trust/reload", tag = "admin", operation_id = "reload_trust",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The new trust bundle is in force.", body = TrustReloaded),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "The service was started without a trust file (`malformed`).", body = ErrorBody),
        (status = 500, description = "The trust file on the service's disk cannot be read or does not parse; the trust in force stays and the failure is audited (`trust-reload-failed`); or storage failed (`internal`).", body = ErrorBody),
    ),
)]
pub(crate) async fn reload_trust(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let service = Arc::clone(&s);
        let rid = id.0.clone();
        blocking(&s, &id, move |_| service.reload_trust_as(rid)).await?;
        Ok(axum::Json(TrustReloaded { reloaded: true }).into_response())
    };
    respond(&id, r.await)
}

/// Which audit records to read.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this tenant's records.
    tenant: Option<String>,
    /// Only this extension's records.
    extension: Option<String>,
    /// Only the records of this request id, and of the calls it made to other extensions
    /// (`ID.1`, `ID.1.2`, ...).
    request: Option<String>,
    /// Only records of this event (`call`, `denial`, `grant`, `limit`, `install`, ...).
    #[param(value_type = Option<String>)]
    event: Option<warden_audit::Event>,
    /// Only records with this decision (`allow` or `deny`).
    #[param(value_type = Option<String>)]
    decision: Option<warden_audit::Decision>,
    /// Only records with this outcome (`ok`, `error`, `timeout`, `denied`, ...).
    #[param(value_type = Option<String>)]
    outcome: Option<warden_audit::Outcome>,
    /// Only records at or after this time, in seconds since the Unix epoch.
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Only records before this time, in seconds since the Unix epoch.
    #[param(minimum = 0)]
    until: Option<i64>,
    /// Only records after this seq (the `last_seq` of an earlier answer: a live tail).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// The last this many matching records (default 100, at most 10,000; with
    /// `format=jsonl` default and most 100,000).
    limit: Option<usize>,
    /// `json` (default), or `jsonl`: the matching lines as an attachment (an export).
    format: Option<String>,
}

/// The last audit records, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditRecords {
    /// Each a line of the audit log, as the log keeps it.
    #[schema(value_type = Vec<Object>)]
    records: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The seq of the log's last record read (whether it matched or not): give it as
    /// `after` to read only what comes next. Null for an empty log.
    last_seq: Option<u64>,
}

/// Most records of one answer, as JSON and as an export.
const MAX_AUDIT_JSON: usize = 10_000;
const MAX_AUDIT_EXPORT: usize = 100_000;

/// `GET /v1/admin/audit`: the last audit records.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", operation_id = "audit",
    security(("admin_token" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "The last matching records (JSON), or with `format=jsonl` their lines as an attachment.",
            content((AuditRecords = "application/json"), (String = "application/x-ndjson"))),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "A query that does not parse (`malformed`).", body = ErrorBody),
        (status = 404, description = "The admin API is off, or the service keeps no audit log on disk (`not-found`).", body = ErrorBody),
        (status = 429, description = "Other requests are reading the whole audit log (`busy`, `retry-after`).", body = ErrorBody),
    ),
)]
pub(crate) async fn audit(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let q = query_params(q)?;
        let export = match q.format.as_deref() {
            None | Some("json") => false,
            Some("jsonl") => true,
            Some(other) => {
                return Err(ApiError::malformed(format!(
                    "format {:?}: `json` or `jsonl`",
                    warden_audit::sanitize(other)
                )));
            }
        };
        let source = audit_source(&s)?;
        let _reading = audit_turn(&s)?;
        let (default, most) = if export {
            (MAX_AUDIT_EXPORT, MAX_AUDIT_EXPORT)
        } else {
            (100, MAX_AUDIT_JSON)
        };
        let limit = q.limit.unwrap_or(default).min(most);
        let at = |secs: u64| {
            warden_audit::format_time(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(253_402_300_799)),
            )
        };
        let count = |what: &str, v: Option<i64>| {
            v.map(|n| u64::try_from(n).map_err(|_| ApiError::malformed(format!("{what}: below 0"))))
                .transpose()
        };
        let (since, until) = (
            count("since", q.since)?.map(at),
            count("until", q.until)?.map(at),
        );
        let after = count("after", q.after)?;
        let (records, last_seq) = tokio::task::spawn_blocking(move || {
            let filter = warden_audit::Filter {
                tenant: q.tenant,
                extension: q.extension,
                event: q.event,
                // `?request=` (empty) is no filter, as the console sends none.
                request: q.request.filter(|r| !r.is_empty()),
                ..warden_audit::Filter::default()
            };
            let reader = source
                .read(warden_audit::Filter::default())
                .map_err(|e| ApiError::internal(format!("reading the audit log: {e}")))?;
            let mut last = std::collections::VecDeque::with_capacity(limit.min(1024));
            let mut last_seq = None;
            for r in reader {
                let r = r.map_err(|e| ApiError::internal(format!("reading the audit log: {e}")))?;
                last_seq = Some(r.seq);
                let rec = &r.record;
                let wanted = filter.matches(rec)
                    && after.is_none_or(|a| r.seq > a)
                    && q.decision.is_none_or(|d| rec.decision() == Some(d))
                    && q.outcome.is_none_or(|o| rec.outcome() == o)
                    && since.as_deref().is_none_or(|t| rec.time() >= t)
                    && until.as_deref().is_none_or(|t| rec.time() < t);
                // `limit=0` keeps none.
                if !wanted || limit == 0 {
                    continue;
                }
                if last.len() == limit {
                    last.pop_front();
                }
                last.push_back(r);
            }
            Ok::<_, ApiError>((last, last_seq))
        })
        .await
        .map_err(|e| ApiError::internal(format!("the audit task failed: {e}")))??;
        if export {
            let mut body = String::new();
            for r in &records {
                body.push_str(&r.line);
                body.push('\n');
            }
            return Ok((
                [
                    (http::header::CONTENT_TYPE, "application/x-ndjson"),
                    (
                        http::header::CONTENT_DISPOSITION,
                        "attachment; filename=\"warden-audit.jsonl\"",
                    ),
                ],
                body,
            )
                .into_response());
        }
        let list = AuditRecords {
            records: records
                .iter()
                .filter_map(|r| serde_json::from_str(&r.line).ok())
                .collect(),
            last_seq,
        };
        Ok(axum::Json(list).into_response())
    };
    respond(&id, r.await)
}

/// The service's audit log, or 404 when it keeps none on disk.
fn audit_source(s: &Service) -> Result<Arc<dyn warden_audit::AuditSource>, ApiError> {
    s.host
        .audit_source()
        .ok_or_else(|| ApiError::not_found("this service keeps no audit log on disk"))
}

/// A turn to read the whole audit log, or 429 while others are reading it.
fn audit_turn(s: &Service) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    s.audit_reads.try_acquire().map_err(|_| {
        ApiError::limited(
            "busy",
            "the audit log is being read by other requests; try again shortly",
        )
    })
}

/// The audit chain's state, as `warden audit --verify` checks it.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditChain {
    /// Every record, its link to the one before, and the end against the head check out.
    ok: bool,
    /// Records checked (all of them when `ok`).
    records: u64,
    /// The last record's hash, when `ok`.
    last_hash: Option<String>,
    /// `checked` (the head's MAC with the service's audit key), `unchecked` (the head has a
    /// MAC; the service was given no key to check it) or `none` (an unkeyed log); null when
    /// not `ok`.
    head_mac: Option<String>,
    /// What is wrong, when not `ok`.
    error: Option<String>,
}

/// `GET /v1/admin/audit/verify`: checks the whole audit chain now.
#[utoipa::path(get, path = "/v1/admin/audit/verify", tag = "admin", operation_id = "verify_audit",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The chain's state: `ok` false says what is wrong.", body = AuditChain),
        FrontRefusals,
        AdminRefusals,
        (status = 404, description = "The admin API is off, or the service keeps no audit log on disk (`not-found`).", body = ErrorBody),
        (status = 429, description = "Other requests are reading the whole audit log (`busy`, `retry-after`).", body = ErrorBody),
    ),
)]
pub(crate) async fn audit_verify(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let source = audit_source(&s)?;
        let _reading = audit_turn(&s)?;
        let service = Arc::clone(&s);
        let chain = tokio::task::spawn_blocking(move || {
            let mut seen = 0u64;
            match source.verify(service.options.audit_key.as_ref(), &mut |_, _| seen += 1) {
                Ok(report) => AuditChain {
                    ok: true,
                    records: report.records,
                    last_hash: Some(report.last_hash),
                    head_mac: Some(
                        match report.head_mac {
                            warden_audit::HeadMac::Checked => "checked",
                            warden_audit::HeadMac::Unchecked => "unchecked",
                            warden_audit::HeadMac::None => "none",
                        }
                        .to_string(),
                    ),
                    error: None,
                },
                Err(e) => AuditChain {
                    ok: false,
                    records: seen,
                    last_hash: None,
                    head_mac: None,
                    error: Some(e.to_string()),
                },
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("the audit task failed: {e}")))?;
        Ok(axum::Json(chain).into_response())
    };
    respond(&id, r.await)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::{ServeOptions, ServiceLimits, Token};

    const ADMIN: &str = "an-admin-token-long-enough-to-be-accepted";

    fn app(dir: &std::path::Path) -> Router {
        let host = warden_host::Host::builder()
            .data_dir(dir.join("data"))
            .build()
            .unwrap();
        let service = Service::new(
            host,
            ServeOptions {
                admin_token: Some(Token::new(ADMIN).unwrap()),
                runner_token: None,
                trust_file: None,
                limits: ServiceLimits::default(),
                sharing: crate::Sharing::Alone,
                shared_trust: None,
                audit_key: None,
            },
        );
        crate::router(service)
    }

    async fn send(app: &Router, r: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app.clone().oneshot(r).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (parts.status, parts.headers, json)
    }

    fn get(uri: &str, token: Option<&str>) -> Request<Body> {
        let mut r = Request::get(uri);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    }

    /// Each admin answer carries its request's id, in `x-request-id` and in an error's body.
    #[tokio::test]
    async fn admin_errors_carry_the_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let mut seen = std::collections::HashSet::new();
        for r in [
            get("/v1/admin/tenants", None),
            get(
                "/v1/admin/tenants",
                Some("wrong-token-wrong-token-wrong-token"),
            ),
            get("/metrics", None),
            get("/no/such/route", None),
        ] {
            let (status, headers, body) = send(&app, r).await;
            assert!(status.is_client_error(), "{status}");
            let id = body["error"]["request_id"].as_str().unwrap();
            assert_eq!(id.len(), 32, "{body}");
            assert_eq!(headers["x-request-id"], id);
            assert!(seen.insert(id.to_string()), "ids are not reused");
        }
        let (status, headers, body) = send(&app, get("/v1/admin/tenants", Some(ADMIN))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({ "tenants": [] }));
        assert_eq!(headers["x-request-id"].len(), 32);
    }

    /// A query or path that does not parse is 400 in the one JSON error shape, after the token
    /// is checked; never axum's plain-text rejection.
    #[tokio::test]
    async fn bad_queries_and_paths_are_json_errors() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        for uri in [
            "/v1/admin/audit?limit=many",
            "/v1/admin/audit?limit=-1",
            "/v1/admin/installs?tenant=a&tenant=b",
            "/v1/admin/installs?tenant=Not%20A%20Name",
        ] {
            let (status, headers, body) = send(&app, get(uri, Some(ADMIN))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(headers["content-type"], "application/json", "{uri}");
            assert_eq!(body["error"]["code"], "malformed", "{uri}");
            let (status, _, _) = send(&app, get(uri, None)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        }
        let r = Request::delete("/v1/admin/tenants/%FF/installs/a.b")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(&app, r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "malformed");
        // Two audited operations; limit=0 is no records, not all of them.
        for name in ["acme", "beta"] {
            let r = Request::post("/v1/admin/tenants")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::from(format!(r#"{{"name":"{name}"}}"#)))
                .unwrap();
            let (status, headers, body) = send(&app, r).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            assert_eq!(body["tenant"], name);
            assert_eq!(headers["x-request-id"].len(), 32);
        }
        for (limit, n) in [(0, 0), (1, 1), (100, 2)] {
            let uri = format!("/v1/admin/audit?limit={limit}");
            let (status, _, body) = send(&app, get(&uri, Some(ADMIN))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                body["records"].as_array().unwrap().len(),
                n,
                "{uri}: {body}"
            );
        }
    }

    /// The document is served without a token.
    #[tokio::test]
    async fn the_document_is_served_to_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let (status, headers, body) = send(&app, get("/openapi.json", None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["openapi"], "3.1.0");
    }
}
