//! The bodies and refusal sets the handlers' OpenAPI attributes name (`#[utoipa::path]`):
//! what `ApiError` and the runner API write, and the refusals many routes share. Below both
//! the handlers and the document (`openapi.rs`) that lists them.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::{
    ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response as DocResponse,
};
use utoipa::{IntoResponses, ToSchema};

/// Every error: `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code, reason = "describes what `ApiError::into_response` writes")]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
#[allow(dead_code, reason = "describes what `ApiError::into_response` writes")]
pub(crate) struct ErrorDetail {
    /// A stable machine code: `malformed`, `unauthorized`, `denied`, `not-found`,
    /// `too-large`, `rate-limited`, `busy`, `request-timeout`, `uri-too-long`,
    /// `headers-too-large`, `exists`, `changed`, `unavailable`, `internal`, `integrity`,
    /// `bad-extension`, `trap`, `memory-limit`, `fuel-exhausted`, `extension-error`,
    /// `response-too-large`, `quota-exceeded` (the install's read-write folders are over their quota), `remote-error`, `host-error`, `timeout`.
    code: String,
    /// For people; never a secret value.
    message: String,
    /// The request's id (also in `x-request-id`); for a call, the id of its audit records.
    request_id: String,
}

/// What `POST /v1/execute` answers: the output as JSON when the method's output is JSON, else
/// its bytes in base64.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes what `gateway::run` writes")]
pub(crate) enum ExecuteOutput {
    /// The output is JSON.
    Json {
        /// The call's id.
        request_id: String,
        /// The method's output, any JSON.
        output: serde_json::Value,
    },
    /// The output is not JSON.
    Bytes {
        /// The call's id.
        request_id: String,
        /// The method's output, base64 (standard alphabet, padded).
        #[schema(content_encoding = "base64")]
        output_base64: String,
    },
}

/// An error response: `ErrorBody` as JSON (its headers: `Headers`).
fn error(description: &str) -> RefOr<DocResponse> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn responses(all: &[(&str, &str)]) -> BTreeMap<String, RefOr<DocResponse>> {
    all.iter()
        .map(|(status, what)| ((*status).to_string(), error(what)))
        .collect()
}

/// What the front checks refuse on every route but `/healthz`: 414, 431, 503.
pub(crate) struct FrontRefusals;

impl IntoResponses for FrontRefusals {
    fn responses() -> BTreeMap<String, RefOr<DocResponse>> {
        let mut all = HeadRefusals::responses();
        all.extend(responses(&[(
            "503",
            "The service is shutting down; its storage (registry, blobs) cannot be reached or its audit log cannot be written just now; it is busy compiling other components (publish, install, a first call); or, for a request with a body, the process holds as many request bodies as `max_buffered_bytes` allows (`unavailable`, with `retry-after`).",
        )]));
        all
    }
}

/// What the front checks refuse on every route, `/healthz` too: 414, 431.
pub(crate) struct HeadRefusals;

impl IntoResponses for HeadRefusals {
    fn responses() -> BTreeMap<String, RefOr<DocResponse>> {
        responses(&[
            (
                "414",
                "The request target is over `max_uri_bytes` (`uri-too-long`).",
            ),
            (
                "431",
                "The headers are over `max_headers` or `max_header_bytes` (`headers-too-large`).",
            ),
        ])
    }
}

/// The refusals of an operator token (admin or runner): 401, 403.
pub(crate) struct OperatorRefusals;

impl IntoResponses for OperatorRefusals {
    fn responses() -> BTreeMap<String, RefOr<DocResponse>> {
        responses(&[
            (
                "401",
                "No `Authorization: Bearer` token, or a wrong one (`unauthorized`).",
            ),
            (
                "403",
                "A tenant's API key instead of the operator's token (`denied`).",
            ),
        ])
    }
}

/// What every admin operation can answer: its token's refusals, 404 when the admin API is off
/// (no admin token), 500 when storage fails.
pub(crate) struct AdminRefusals;

impl IntoResponses for AdminRefusals {
    fn responses() -> BTreeMap<String, RefOr<DocResponse>> {
        let mut all = OperatorRefusals::responses();
        all.extend(responses(&[
            (
                "404",
                "The admin API is off: the service has no admin token (`not-found`).",
            ),
            (
                "500",
                "The service's own failure: storage, the audit log, a task (`internal`).",
            ),
        ]));
        all
    }
}
