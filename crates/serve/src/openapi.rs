//! The OpenAPI 3.1 document of the service's own APIs, served at `GET /openapi.json` (no
//! token): the runner API (`POST /v1/execute`), the admin API (`/v1/admin/...`), `/metrics`,
//! `/healthz`, `/readyz`, and this document. It is generated from the code: the
//! `#[utoipa::path]` on each handler and the `ToSchema` types of the bodies the handlers read
//! and write. A test checks that every route of the router's table (`crate::api_routes`) is
//! in it, and nothing else.
//!
//! Left out on purpose: the gateway (`/api/ext/{extension_id}/{*path}`) and the UI assets
//! (`/ext-ui/...`), whose methods, paths and bodies are each extension's own (its manifest's
//! endpoints, its bundle's `ui/` files), not the service's.
//!
//! Every error is `{"error":{"code","message","request_id"}}` (`ErrorBody`) with the request's
//! id also in `x-request-id` (the headers are added to every operation by `Headers`). Besides each route's own refusals, every route can answer what
//! the front checks refuse before any route runs: 414 (request target too long), 431 (headers
//! too large), and 503 while the service drains (all but `/healthz`).

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, Object, RefOr, Type};
use utoipa::{Modify, OpenApi};

use crate::docs::{ErrorBody, ErrorDetail, FrontRefusals};
use crate::error::ApiError;
use crate::{RequestId, admin, gateway, review};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "warden serve",
        description = "The runner and admin APIs of `warden serve`. The gateway (`/api/ext/...`) and `/ext-ui/...` are extension-defined and not described here.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        gateway::execute,
        admin::create_tenant,
        admin::tenants,
        admin::publish,
        review::installs,
        review::bundles,
        review::review,
        review::trust,
        admin::install,
        admin::uninstall,
        admin::put_secret,
        admin::delete_secret,
        admin::put_client_certificate,
        admin::reload_trust,
        admin::claims_key,
        admin::audit,
        admin::audit_verify,
        crate::metrics,
        crate::healthz,
        crate::ready,
        document,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Security, &Headers),
    tags(
        (name = "runner", description = "Calls of rpc extensions, by the runner token."),
        (name = "admin", description = "Tenants, bundles, installs, secrets, trust, audit, by the admin token."),
        (name = "health", description = "Liveness, readiness, metrics, this document."),
    ),
)]
pub(crate) struct ApiDoc;

/// The two bearer tokens, as security schemes.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "admin_token",
                "The admin token (`WARDEN_ADMIN_TOKEN` or `--admin-token-file`), as `Authorization: Bearer <token>`. Without one the admin API and /metrics are off (404).",
            ),
            (
                "runner_token",
                "The runner token (`WARDEN_RUNNER_TOKEN` or `--runner-token-file`), as `Authorization: Bearer <token>`. Without one the runner API is off (404).",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The headers of the answers, put on every operation's in one place: `x-request-id` on every
/// error (4xx, 5xx) and on the successes of the runner and admin APIs (`/v1/...`);
/// `retry-after` on 429 and 503.
struct Headers;

impl Modify for Headers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let api = path.starts_with("/v1/");
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                for (status, response) in op.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let error = status.starts_with('4') || status.starts_with('5');
                    if error || api {
                        response.headers.insert(
                            "x-request-id".to_string(),
                            RefOr::T(header(
                                Type::String,
                                "The request's id (in an error, as in its body).",
                            )),
                        );
                    }
                    if status == "429" || status == "503" {
                        response.headers.insert(
                            "retry-after".to_string(),
                            RefOr::T(header(
                                Type::Integer,
                                "Seconds after which a retry may succeed.",
                            )),
                        );
                    }
                }
            }
        }
    }
}

fn header(kind: Type, description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(Object::with_type(kind)))
        .description(Some(description))
        .build()
}

/// The document as served, made once.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string()));

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of these APIs.", body = Object, content_type = "application/json"),
        FrontRefusals,
        (status = 500, description = "The document could not be made (`internal`).", body = ErrorBody),
    ),
)]
pub(crate) async fn document(id: RequestId) -> Response {
    match &*DOCUMENT {
        Ok(text) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            text.clone(),
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("the OpenAPI document: {e}"))
            .with_id(&id.0)
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use super::*;

    fn document() -> serde_json::Value {
        serde_json::from_str(DOCUMENT.as_ref().unwrap()).unwrap()
    }

    fn method(v: crate::Verb) -> &'static str {
        match v {
            crate::Verb::Get => "get",
            crate::Verb::Post => "post",
            crate::Verb::Put => "put",
            crate::Verb::Delete => "delete",
        }
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "warden serve");
        let schemes = &doc["components"]["securitySchemes"];
        for s in ["admin_token", "runner_token"] {
            assert_eq!(schemes[s]["type"], "http", "{s}");
            assert_eq!(schemes[s]["scheme"], "bearer", "{s}");
        }
    }

    /// The runner API takes bytes that are not JSON as base64, and says so.
    #[test]
    fn execute_takes_json_or_base64_input() {
        let doc = document();
        let props = &doc["components"]["schemas"]["Execute"]["properties"];
        assert!(props.get("input").is_some(), "{props}");
        assert_eq!(
            props["input_base64"]["contentEncoding"], "base64",
            "{props}"
        );
    }

    /// Every route of the router's table is documented, and the document has no other.
    #[test]
    fn every_route_is_documented_and_no_other() {
        let doc = document();
        let routes: BTreeSet<(String, String)> = crate::api_routes()
            .iter()
            .map(|r| (r.path.to_string(), method(r.verb).to_string()))
            .collect();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for m in item.as_object().unwrap().keys() {
                documented.insert((path.clone(), m.clone()));
            }
        }
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes without docs: {undocumented:?}"
        );
        let unrouted: Vec<_> = documented.difference(&routes).collect();
        assert!(unrouted.is_empty(), "docs without routes: {unrouted:?}");
        // The admin and runner APIs are all there.
        for p in [
            "/v1/execute",
            "/v1/admin/tenants",
            "/v1/admin/bundles",
            "/v1/admin/installs",
            "/v1/admin/tenants/{tenant}/installs/{extension}",
            "/v1/admin/tenants/{tenant}/installs/{extension}/secrets/{name}",
            "/v1/admin/trust/reload",
            "/v1/admin/audit",
            "/metrics",
            "/healthz",
            "/readyz",
            "/openapi.json",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p}");
        }
        // Extension-defined routes are left out.
        assert!(
            doc["paths"]
                .as_object()
                .unwrap()
                .keys()
                .all(|p| !p.starts_with("/api/ext") && !p.starts_with("/ext-ui"))
        );
    }

    /// Each operation says who may call it, and describes its errors with the one error body.
    #[test]
    fn operations_name_their_token_and_error_body() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (m, op) in item.as_object().unwrap() {
                let security = op["security"].as_array().map(|s| s[0].clone());
                let want = if path.starts_with("/v1/admin/") || path == "/metrics" {
                    Some(serde_json::json!({ "admin_token": [] }))
                } else if path == "/v1/execute" {
                    Some(serde_json::json!({ "runner_token": [] }))
                } else {
                    None
                };
                assert_eq!(security, want, "{m} {path}");
                let responses = op["responses"].as_object().unwrap();
                assert!(responses.contains_key("414"), "{m} {path}");
                assert!(responses.contains_key("431"), "{m} {path}");
                assert_eq!(
                    responses.contains_key("503"),
                    path != "/healthz",
                    "{m} {path}"
                );
                if want.is_some() {
                    for s in ["401", "403", "404"] {
                        assert!(responses.contains_key(s), "{m} {path} {s}");
                    }
                }
                for (status, r) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            r["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{m} {path} {status}"
                        );
                        assert!(
                            r["headers"].get("x-request-id").is_some(),
                            "{m} {path} {status}"
                        );
                    }
                }
            }
        }
        // The error body is the one `ApiError` writes: the same fields, all required.
        let response = ApiError::not_found("x").with_id("abc").into_response();
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let keys = |v: &serde_json::Value| -> BTreeSet<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let schemas = &doc["components"]["schemas"];
        assert_eq!(keys(&body), keys(&schemas["ErrorBody"]["properties"]));
        assert_eq!(
            keys(&body["error"]),
            keys(&schemas["ErrorDetail"]["properties"])
        );
        let required: BTreeSet<String> = schemas["ErrorDetail"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(required, keys(&body["error"]));
        assert_eq!(body["error"]["request_id"], "abc");
    }
}
