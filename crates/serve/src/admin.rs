//! The admin API (`/v1/admin/...`, by the admin token; off without one): tenants and their
//! keys, publishing bundles, installs with grants, secrets, the trust bundle, the audit log.
//! Every operation is the host's `Admin` one (verification, install rules, audit records).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;
use warden_bundle::ContentHash;
use warden_host::{ExtensionId, Grant, HostError, SecretName, SecretValue, TenantName};

use crate::error::ApiError;
use crate::{Service, auth};

pub(crate) fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v1/admin/tenants", post(create_tenant).get(tenants))
        .route("/v1/admin/bundles", post(publish))
        .route("/v1/admin/installs", get(installs))
        .route(
            "/v1/admin/tenants/{tenant}/installs/{extension}",
            put(install).delete(uninstall),
        )
        .route(
            "/v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}",
            put(put_secret).delete(delete_secret),
        )
        .route("/v1/admin/trust/reload", post(reload_trust))
        .route("/v1/admin/audit", get(audit))
        .route("/metrics", get(crate::metrics))
        .layer(DefaultBodyLimit::disable())
}

/// Checks the admin token (404 when the admin API is off, as if it did not exist).
fn admin(s: &Service, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.options.admin_token else {
        return Err(ApiError::not_found(
            "the admin API is off: the service has no admin token",
        ));
    };
    auth::operator(headers, token, "admin API")
}

/// Runs blocking admin work (storage, verification) off the async threads.
async fn blocking<T: Send + 'static>(
    s: &Arc<Service>,
    work: impl FnOnce(&warden_host::Admin<'_>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = Arc::clone(s);
    tokio::task::spawn_blocking(move || {
        let admin = s.host.admin().map_err(|e| host_error(&e))?;
        work(&admin)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the admin task failed: {e}")))?
}

/// A host error on the admin API: refusals are the client's (400, 403, 404, 409), failures of
/// storage are the service's (500).
fn host_error(e: &HostError) -> ApiError {
    use warden_registry::RegistryError;
    let text = warden_call::text::chain(e);
    match e {
        HostError::Bundle(_) | HostError::Signature(_) => ApiError::malformed(text),
        HostError::Verify(_) => ApiError::forbidden(text),
        HostError::Policy(_) | HostError::Plan(_) | HostError::ProcessUnsupported(_) => {
            ApiError::forbidden(text)
        }
        HostError::NotPublished(_) | HostError::NotInstalled { .. } => ApiError::not_found(text),
        HostError::Registry(RegistryError::NoTenant(_)) => ApiError::not_found(text),
        HostError::Registry(RegistryError::TenantExists(_)) => {
            ApiError::new(StatusCode::CONFLICT, "exists", text)
        }
        HostError::Registry(RegistryError::Changed { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "changed", text)
        }
        HostError::Secret(
            warden_host::SecretError::TooLarge { .. } | warden_host::SecretError::NotUtf8 { .. },
        ) => ApiError::malformed(text),
        _ => ApiError::internal(text),
    }
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| ApiError::malformed(format!("{what}: {e}")))
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create_tenant(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let req: NewTenant = json_body(&body)?;
            let name: TenantName = parse("name", &req.name)?;
            let key = blocking(&s, move |a| {
                a.create_tenant(&name)
                    .map(|k| (name, k))
                    .map_err(|e| host_error(&e))
            })
            .await?;
            Ok((
                StatusCode::CREATED,
                axum::Json(json!({ "tenant": key.0.as_str(), "api_key": key.1.reveal() })),
            )
                .into_response())
        }
        .await,
    )
}

async fn tenants(State(s): State<Arc<Service>>, headers: HeaderMap) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let all = blocking(&s, |a| {
                a.registry()
                    .tenants()
                    .map_err(|e| host_error(&HostError::from(e)))
            })
            .await?;
            let list: Vec<_> = all
                .iter()
                .map(|t| json!({ "name": t.name.as_str(), "created": unix(t.created) }))
                .collect();
            Ok(axum::Json(json!({ "tenants": list })).into_response())
        }
        .await,
    )
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::malformed(format!("the JSON body: {e}")))
}

/// `POST /v1/admin/bundles`, multipart with parts `bundle` (the `.wext` bytes) and `signature`
/// (its DSSE envelope).
async fn publish(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let mut multipart = multipart.map_err(|e| {
                ApiError::malformed(format!(
                    "publish takes multipart/form-data with parts `bundle` and `signature`: {e}"
                ))
            })?;
            let max =
                usize::try_from(s.options.limits.max_admin_body.bytes()).unwrap_or(usize::MAX);
            let (mut bundle, mut signature) = (None, None);
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| ApiError::malformed(format!("the multipart body: {e}")))?
            {
                let name = field.name().unwrap_or("").to_string();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::malformed(format!("part {name}: {e}")))?;
                if bytes.len() > max {
                    return Err(ApiError::too_large("the bundle is too large"));
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
                if slot.replace(bytes.to_vec()).is_some() {
                    return Err(ApiError::malformed(format!("part `{name}` is given twice")));
                }
            }
            let (Some(bundle), Some(signature)) = (bundle, signature) else {
                return Err(ApiError::malformed(
                    "publish needs both parts, `bundle` and `signature`",
                ));
            };
            let out = blocking(&s, move |a| {
                let v = a
                    .publish("admin API upload", bundle, &signature)
                    .map_err(|e| host_error(&e))?;
                let e = &v.manifest().extension;
                Ok(json!({
                    "id": e.id.as_str(),
                    "version": e.version.to_string(),
                    "publisher": e.publisher.to_string(),
                    "content_hash": v.content_hash().to_string(),
                }))
            })
            .await?;
            Ok((StatusCode::CREATED, axum::Json(out)).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
struct InstallsQuery {
    tenant: Option<String>,
}

async fn installs(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    Query(q): Query<InstallsQuery>,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let tenant: Option<TenantName> = q
                .tenant
                .as_deref()
                .map(|t| parse("tenant", t))
                .transpose()?;
            let list = blocking(&s, move |a| {
                a.installs(tenant.as_ref()).map_err(|e| host_error(&e))
            })
            .await?;
            let list: Vec<_> = list
                .iter()
                .map(|i| {
                    json!({
                        "tenant": i.tenant.as_str(),
                        "extension": i.extension.as_str(),
                        "version": i.version.to_string(),
                        "content_hash": i.content_hash.to_string(),
                        "grant": i.grant.to_string(),
                        "installed": unix(i.installed),
                    })
                })
                .collect();
            Ok(axum::Json(json!({ "installs": list })).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    content_hash: String,
    /// `all`, `none` or a comma-separated list; absent: keep the installed version's grant.
    grant: Option<String>,
    #[serde(default)]
    force: bool,
}

async fn install(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    Path((tenant, extension)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let tenant: TenantName = parse("tenant", &tenant)?;
            let extension: ExtensionId = parse("extension", &extension)?;
            let req: InstallRequest = json_body(&body)?;
            let hash: ContentHash = parse("content_hash", &req.content_hash)?;
            let grant: Option<Grant> = req
                .grant
                .as_deref()
                .map(|g| parse("grant", g))
                .transpose()?;
            let service = Arc::clone(&s);
            let out = blocking(&s, move |a| {
                let published = a
                    .registry()
                    .published(&hash)
                    .map_err(|e| host_error(&HostError::from(e)))?
                    .ok_or_else(|| {
                        ApiError::not_found(format!("no bundle {hash} was published"))
                    })?;
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
                Ok(json!({
                    "tenant": tenant.as_str(),
                    "extension": extension.as_str(),
                    "version": done.record.version.to_string(),
                    "content_hash": done.record.content_hash.to_string(),
                    "grant": done.record.grant.to_string(),
                    "plan": done.plan.to_string(),
                }))
            })
            .await?;
            Ok(axum::Json(out).into_response())
        }
        .await,
    )
}

async fn uninstall(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    Path((tenant, extension)): Path<(String, String)>,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let tenant: TenantName = parse("tenant", &tenant)?;
            let extension: ExtensionId = parse("extension", &extension)?;
            let removed = blocking(&s, move |a| {
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
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
}

async fn put_secret(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    Path((tenant, extension, name)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let tenant: TenantName = parse("tenant", &tenant)?;
            let extension: ExtensionId = parse("extension", &extension)?;
            let name: SecretName = parse("secret name", &name)?;
            let req: SecretBody = json_body(&body)?;
            let value = SecretValue::new(req.value)
                .map_err(|e| ApiError::malformed(format!("secret value: {e}")))?;
            let service = Arc::clone(&s);
            blocking(&s, move |a| {
                // A secret belongs to an install: none for a tenant or install that does not
                // exist.
                let installed = a
                    .registry()
                    .install(&tenant, &extension)
                    .map_err(|e| host_error(&HostError::from(e)))?;
                if installed.is_none() {
                    return Err(ApiError::not_found(format!(
                        "{extension} is not installed for tenant {tenant}"
                    )));
                }
                service
                    .host
                    .tenant(&tenant)
                    .put_secret(&extension, &name, value)
                    .map_err(|e| host_error(&e))
            })
            .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

async fn delete_secret(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    Path((tenant, extension, name)): Path<(String, String, String)>,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let tenant: TenantName = parse("tenant", &tenant)?;
            let extension: ExtensionId = parse("extension", &extension)?;
            let name: SecretName = parse("secret name", &name)?;
            let service = Arc::clone(&s);
            let existed = blocking(&s, move |_| {
                service
                    .host
                    .tenant(&tenant)
                    .delete_secret(&extension, &name)
                    .map_err(|e| host_error(&e))
            })
            .await?;
            if existed {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(ApiError::not_found("no such secret"))
            }
        }
        .await,
    )
}

async fn reload_trust(State(s): State<Arc<Service>>, headers: HeaderMap) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let service = Arc::clone(&s);
            blocking(&s, move |_| service.reload_trust()).await?;
            Ok(axum::Json(json!({ "reloaded": true })).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
struct AuditQuery {
    tenant: Option<String>,
    extension: Option<String>,
    /// The last this many matching records (default 100, at most 10,000).
    limit: Option<usize>,
}

async fn audit(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    respond(
        async {
            admin(&s, &headers)?;
            let Some(dir) = s.host.audit_dir() else {
                return Err(ApiError::not_found(
                    "this service keeps no audit log on disk",
                ));
            };
            let limit = q.limit.unwrap_or(100).min(10_000);
            let records = tokio::task::spawn_blocking(move || {
                let filter = warden_audit::Filter {
                    tenant: q.tenant,
                    extension: q.extension,
                    ..warden_audit::Filter::default()
                };
                let reader = warden_audit::read(&dir, filter)
                    .map_err(|e| ApiError::internal(format!("reading the audit log: {e}")))?;
                let mut last = std::collections::VecDeque::with_capacity(limit);
                for r in reader {
                    let r =
                        r.map_err(|e| ApiError::internal(format!("reading the audit log: {e}")))?;
                    if last.len() == limit {
                        last.pop_front();
                    }
                    last.push_back(r);
                }
                Ok::<_, ApiError>(last)
            })
            .await
            .map_err(|e| ApiError::internal(format!("the audit task failed: {e}")))??;
            let list: Vec<serde_json::Value> = records
                .iter()
                .filter_map(|r| serde_json::from_str(&r.line).ok())
                .collect();
            Ok(axum::Json(json!({ "records": list })).into_response())
        }
        .await,
    )
}
