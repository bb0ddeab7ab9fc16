//! The admin API's views for deciding (what the operator console shows; read-only, by the
//! admin token or the console's session): published bundles, installs with what they may
//! actually do, the permission review of an install or upgrade before it is made, and the
//! trust bundle in force.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warden_bundle::ContentHash;
use warden_host::{BundleFacts, ExtensionId, HostError, TenantName};
use warden_manifest::{Effective, Limits};
use warden_registry::{Plan, PlanError};

use crate::admin::{admin, blocking, host_error, parse, path_params, query_params, respond, unix};
use crate::docs::{AdminRefusals, ErrorBody, FrontRefusals};
use crate::error::ApiError;
use crate::{ApiRoute, RequestId, Service, Verb};

pub(crate) fn table() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Verb::Get, "/v1/admin/bundles", bundles),
        ApiRoute::new(Verb::Get, "/v1/admin/installs", installs),
        ApiRoute::new(
            Verb::Get,
            "/v1/admin/tenants/{tenant}/installs/{extension}/review",
            review,
        ),
        ApiRoute::new(Verb::Get, "/v1/admin/trust", trust),
    ]
}

pub(crate) fn routes(s: &Arc<Service>) -> Router<Arc<Service>> {
    ApiRoute::router(table()).route_layer(axum::middleware::from_fn_with_state(
        Arc::clone(s),
        crate::console::guard,
    ))
}

/// Published bundles, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct BundleList {
    bundles: Vec<BundleEntry>,
}

/// One published bundle.
#[derive(Serialize, ToSchema)]
pub(crate) struct BundleEntry {
    id: String,
    version: String,
    publisher: String,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    content_hash: String,
    /// The ids of the keys that signed it (`sha256:` and hex).
    signers: Vec<String>,
    /// When it was published, in seconds since the Unix epoch.
    published: u64,
}

/// `GET /v1/admin/bundles`: the published bundles.
#[utoipa::path(get, path = "/v1/admin/bundles", tag = "admin", operation_id = "list_bundles",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every published bundle, newest first.", body = BundleList),
        FrontRefusals,
        AdminRefusals,
    ),
)]
pub(crate) async fn bundles(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let all = blocking(&s, &id, |a| {
            a.published_bundles().map_err(|e| host_error(&e))
        })
        .await?;
        let bundles = all
            .into_iter()
            .map(|p| BundleEntry {
                signers: signers_of(&p.signature),
                id: p.id.to_string(),
                version: p.version.to_string(),
                publisher: p.publisher.to_string(),
                content_hash: p.content_hash.to_string(),
                published: unix(p.published),
            })
            .collect();
        Ok(axum::Json(BundleList { bundles }).into_response())
    };
    respond(&id, r.await)
}

/// The key ids of a stored DSSE envelope.
fn signers_of(envelope: &[u8]) -> Vec<String> {
    warden_trust::Envelope::from_json(envelope)
        .map(|e| {
            e.signatures()
                .iter()
                .map(|s| s.keyid().as_str().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Limits of one call (the manifest's, or its profile's under the operator's policy).
#[derive(Serialize, ToSchema)]
pub(crate) struct LimitsView {
    max_memory_bytes: u64,
    max_execution_time_ms: u64,
    max_concurrent_calls: u32,
    /// Fuel per call; null: not metered.
    max_fuel: Option<u64>,
    max_request_bytes: u64,
    max_response_bytes: u64,
}

impl From<&Limits> for LimitsView {
    fn from(l: &Limits) -> Self {
        LimitsView {
            max_memory_bytes: l.max_memory.bytes(),
            max_execution_time_ms: u64::try_from(l.max_execution_time.as_millis())
                .unwrap_or(u64::MAX),
            max_concurrent_calls: l.max_concurrent_calls,
            max_fuel: l.max_fuel.map(std::num::NonZeroU64::get),
            max_request_bytes: l.max_request_bytes.bytes(),
            max_response_bytes: l.max_response_bytes.bytes(),
        }
    }
}

/// The outbound HTTP an install may make.
#[derive(Serialize, ToSchema)]
pub(crate) struct NetworkView {
    hosts: Vec<String>,
    /// Empty: 443 and 80 for hosts without a port of their own.
    ports: Vec<u16>,
}

/// A folder mounted into the extension.
#[derive(Serialize, ToSchema)]
pub(crate) struct MountView {
    path: String,
    readonly: bool,
}

/// What an install may actually do: requested ∩ granted ∩ policy.
#[derive(Serialize, ToSchema)]
pub(crate) struct EffectiveView {
    kv: bool,
    secrets: Vec<String>,
    calls: Vec<String>,
    /// Null: no network at all.
    network: Option<NetworkView>,
    mounts: Vec<MountView>,
}

impl From<&Effective> for EffectiveView {
    fn from(e: &Effective) -> Self {
        EffectiveView {
            kv: e.kv,
            secrets: e.secrets.iter().map(ToString::to_string).collect(),
            calls: e.calls.iter().map(ToString::to_string).collect(),
            network: e.network.as_ref().map(|n| NetworkView {
                hosts: n.allowed_hosts.iter().map(ToString::to_string).collect(),
                ports: n.allowed_ports.clone(),
            }),
            mounts: e
                .mounts
                .iter()
                .map(|m| MountView {
                    path: m.guest.to_string(),
                    readonly: m.readonly,
                })
                .collect(),
        }
    }
}

/// Which installs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InstallsQuery {
    /// Only this tenant's (default: every tenant's).
    tenant: Option<String>,
}

/// Installs.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstallList {
    installs: Vec<InstallEntry>,
}

/// One install: which bundle a tenant runs, with the operator's grant and what it may do.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstallEntry {
    tenant: String,
    extension: String,
    version: String,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    content_hash: String,
    /// The operator's grant: `all`, `none`, or a comma-separated list of capabilities.
    grant: String,
    /// When it was installed, in seconds since the Unix epoch.
    installed: u64,
    publisher: String,
    /// The ids of the keys that signed the bundle.
    signers: Vec<String>,
    /// The permissions its manifest requests, one atom each (`kv`, `secret NAME`,
    /// `network HOST ports default`, ...).
    requested: Vec<String>,
    /// What it may do now; null when the policy no longer admits it (`effective_error`).
    effective: Option<EffectiveView>,
    effective_error: Option<String>,
    limits: LimitsView,
}

/// `GET /v1/admin/installs`: the installs, of one tenant or all.
#[utoipa::path(get, path = "/v1/admin/installs", tag = "admin", operation_id = "list_installs",
    security(("admin_token" = [])),
    params(InstallsQuery),
    responses(
        (status = 200, description = "The installs.", body = InstallList),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "A query that does not parse, or not a valid tenant name (`malformed`).", body = ErrorBody),
    ),
)]
pub(crate) async fn installs(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    q: Result<Query<InstallsQuery>, QueryRejection>,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let q = query_params(q)?;
        let tenant: Option<TenantName> = q
            .tenant
            .as_deref()
            .map(|t| parse("tenant", t))
            .transpose()?;
        let service = Arc::clone(&s);
        let list = blocking(&s, &id, move |a| {
            a.install_facts(tenant.as_ref(), &|h| service.bundle_facts(a, h))
                .map_err(|e| host_error(&e))
        })
        .await?;
        let installs = list
            .iter()
            .map(|i| InstallEntry {
                tenant: i.record.tenant.as_str().to_string(),
                extension: i.record.extension.as_str().to_string(),
                version: i.record.version.to_string(),
                content_hash: i.record.content_hash.to_string(),
                grant: i.record.grant.to_string(),
                installed: unix(i.record.installed),
                publisher: i.bundle.published.publisher.to_string(),
                signers: i.bundle.signers.clone(),
                requested: i.bundle.requested().into_iter().map(|(a, _)| a).collect(),
                effective: i.effective.as_ref().ok().map(EffectiveView::from),
                effective_error: i.effective.as_ref().err().cloned(),
                limits: LimitsView::from(&i.bundle.limits),
            })
            .collect();
        Ok(axum::Json(InstallList { installs }).into_response())
    };
    respond(&id, r.await)
}

/// Which bundle to review.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReviewQuery {
    /// The published bundle to install: `sha256:` and 64 lowercase hex digits.
    content_hash: String,
}

/// One side of a review: the installed bundle, or the proposed one.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReviewSide {
    version: String,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    content_hash: String,
    publisher: String,
    signers: Vec<String>,
    /// The permission atoms its manifest requests.
    requested: Vec<String>,
    /// How it runs: `component`, `process`, ...
    kind: String,
    limits: LimitsView,
    /// The operator's grant (the installed side only; null on the proposed one).
    grant: Option<String>,
}

impl ReviewSide {
    fn of(b: &BundleFacts, grant: Option<String>) -> ReviewSide {
        ReviewSide {
            version: b.manifest.extension.version.to_string(),
            content_hash: b.published.content_hash.to_string(),
            publisher: b.published.publisher.to_string(),
            signers: b.signers.clone(),
            requested: b.requested().into_iter().map(|(a, _)| a).collect(),
            kind: warden_host::kind_word(b.manifest.extension.kind),
            limits: LimitsView::from(&b.limits),
            grant,
        }
    }
}

/// A limit higher in the proposed bundle.
#[derive(Serialize, ToSchema)]
pub(crate) struct LimitRaisedView {
    /// `max_memory_bytes`, `max_execution_time_ms`, `max_concurrent_calls`, `max_fuel`,
    /// `max_request_bytes` or `max_response_bytes`.
    limit: String,
    /// Null: no limit.
    from: Option<u64>,
    to: Option<u64>,
}

/// A requested permission atom and the grant item that grants it alone.
#[derive(Serialize, ToSchema)]
pub(crate) struct GrantItemView {
    #[schema(example = "network api.example.com ports default")]
    atom: String,
    #[schema(example = "network:api.example.com")]
    grant: String,
}

/// What installing a published bundle for a tenant would do; nothing is changed.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReviewView {
    tenant: String,
    extension: String,
    /// `install`, `upgrade`, `downgrade` (a rollback: needs `force`), `reinstall`, or
    /// `refused` (`refusal` says why).
    plan: String,
    refusal: Option<String>,
    /// A lower version than the installed one: installing it needs `"force": true`.
    needs_force: bool,
    /// It requests more than the installed version's approval covers: installing it needs a
    /// grant given with the install (which approves what it requests).
    needs_approval: bool,
    /// The installed version; null when it is not installed for the tenant.
    from: Option<ReviewSide>,
    to: ReviewSide,
    /// Atoms it requests beyond the installed version's approval (all of them for a new
    /// install).
    added: Vec<String>,
    /// Atoms the installed version requested that it does not.
    removed: Vec<String>,
    limits_raised: Vec<LimitRaisedView>,
    /// What else changes, in words: how it runs (kind, entry, arguments), a UI it serves,
    /// endpoints and methods it adds. A change of kind needs approval too.
    changes: Vec<String>,
    /// Each atom it requests, with the grant item to give for it: nothing is granted unless
    /// given.
    grant_items: Vec<GrantItemView>,
}

/// `GET /v1/admin/tenants/{tenant}/installs/{extension}/review`: the permission review of
/// installing (or upgrading to, or rolling back to) a published bundle.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/installs/{extension}/review", tag = "admin",
    operation_id = "review_install",
    security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's name."),
        ("extension" = String, Path, description = "The extension's id (the bundle's)."),
        ReviewQuery,
    ),
    responses(
        (status = 200, description = "What the install would do, and the permission diff.", body = ReviewView),
        FrontRefusals,
        AdminRefusals,
        (status = 400, description = "A tenant, id or hash that does not parse, or the bundle is another extension (`malformed`).", body = ErrorBody),
        (status = 404, description = "The admin API is off, no such tenant, or no bundle of that hash was published (`not-found`).", body = ErrorBody),
    ),
)]
pub(crate) async fn review(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<ReviewQuery>, QueryRejection>,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let (tenant, extension) = path_params(path)?;
        let tenant: TenantName = parse("tenant", &tenant)?;
        let extension: ExtensionId = parse("extension", &extension)?;
        let hash: ContentHash = parse("content_hash", &query_params(q)?.content_hash)?;
        let service = Arc::clone(&s);
        let view = blocking(&s, &id, move |a| {
            let proposed = service.bundle_facts(a, &hash).map_err(|e| host_error(&e))?;
            if proposed.manifest.extension.id != extension {
                return Err(ApiError::malformed(format!(
                    "bundle {hash} is {}, not {extension}",
                    proposed.manifest.extension.id
                )));
            }
            let r = a
                .review(&tenant, &extension, &hash, &|h| service.bundle_facts(a, h))
                .map_err(|e: HostError| host_error(&e))?;
            let (plan, refusal) = match &r.plan {
                Ok(p) => (plan_word(p), None),
                Err(PlanError::Lower { .. }) => ("downgrade", None),
                // Approval is what the review is for: say what the install would be.
                Err(PlanError::NeedsApproval { .. }) => match &r.installed {
                    Some((old, _)) if old.version == proposed.manifest.extension.version => {
                        ("reinstall", None)
                    }
                    _ => ("upgrade", None),
                },
                Err(e @ PlanError::SameVersionOtherContent { .. }) => {
                    ("refused", Some(e.to_string()))
                }
            };
            Ok(ReviewView {
                tenant: tenant.as_str().to_string(),
                extension: extension.as_str().to_string(),
                plan: plan.to_string(),
                refusal,
                needs_force: r.needs_force,
                needs_approval: r.needs_approval(),
                from: r
                    .installed
                    .as_ref()
                    .map(|(rec, b)| ReviewSide::of(b, Some(rec.grant.to_string()))),
                to: ReviewSide::of(&r.proposed, None),
                added: r.added.clone(),
                removed: r.removed.clone(),
                limits_raised: r
                    .limits_raised
                    .iter()
                    .map(|l| LimitRaisedView {
                        limit: l.limit.to_string(),
                        from: l.from,
                        to: l.to,
                    })
                    .collect(),
                changes: r.changes.clone(),
                grant_items: r
                    .proposed
                    .requested()
                    .into_iter()
                    .map(|(atom, grant)| GrantItemView { atom, grant })
                    .collect(),
            })
        })
        .await?;
        Ok(axum::Json(view).into_response())
    };
    respond(&id, r.await)
}

fn plan_word(p: &Plan) -> &'static str {
    match p {
        Plan::Install => "install",
        Plan::Upgrade { .. } => "upgrade",
        Plan::Downgrade { .. } => "downgrade",
        Plan::Reinstall => "reinstall",
    }
}

/// The trust bundle in force.
#[derive(Serialize, ToSchema)]
pub(crate) struct TrustView {
    /// Where it is read from on reload: the trust file, `shared storage` (a fleet's), or
    /// null (given at start, no reload).
    source: Option<String>,
    publishers: Vec<PublisherView>,
}

/// A trusted publisher.
#[derive(Serialize, ToSchema)]
pub(crate) struct PublisherView {
    name: String,
    /// How many distinct trusted keys must have signed.
    threshold: usize,
    keys: Vec<KeyView>,
    revoked: Vec<RevokedKeyView>,
}

/// A trusted key.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyView {
    /// `sha256:` and the hex SHA-256 of the raw public key.
    id: String,
    public_key_pem: String,
}

/// A revoked key.
#[derive(Serialize, ToSchema)]
pub(crate) struct RevokedKeyView {
    id: String,
}

/// `GET /v1/admin/trust`: the publishers and keys this runner trusts now.
#[utoipa::path(get, path = "/v1/admin/trust", tag = "admin", operation_id = "trust",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The trust bundle in force.", body = TrustView),
        FrontRefusals,
        AdminRefusals,
    ),
)]
pub(crate) async fn trust(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admin(&s, &headers)?;
        let bundle = blocking(&s, &id, |a| a.trust_bundle().map_err(|e| host_error(&e))).await?;
        let source = if s.options.shared_trust.is_some() {
            Some("shared storage".to_string())
        } else {
            s.options
                .trust_file
                .as_ref()
                .map(|p| p.display().to_string())
        };
        let publishers = bundle
            .publishers()
            .iter()
            .map(|p| PublisherView {
                name: p.name().to_string(),
                threshold: p.threshold(),
                keys: p
                    .keys()
                    .iter()
                    .map(|k| KeyView {
                        id: k.key_id().as_str().to_owned(),
                        public_key_pem: k.to_spki_pem(),
                    })
                    .collect(),
                revoked: p
                    .revoked()
                    .iter()
                    .map(|k| RevokedKeyView {
                        id: k.key_id().as_str().to_owned(),
                    })
                    .collect(),
            })
            .collect();
        Ok(axum::Json(TrustView { source, publishers }).into_response())
    };
    respond(&id, r.await)
}
