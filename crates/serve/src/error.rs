//! The service's one error shape, `{"error":{"code","message","request_id"}}`, and the one
//! mapping from what went wrong to an HTTP status (SPEC section 7).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use warden_call::ErrorCode;
use warden_host::{CallFailure, HostError};

/// An error answered to a client: its status, a stable machine code, a message for people,
/// and the request id that finds its audit record.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub request_id: String,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
    /// The host has audited this failure already (a call, a load, a verification).
    pub audited: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            request_id: String::new(),
            retry_after: None,
            audited: false,
        }
    }

    pub fn with_id(mut self, id: &str) -> ApiError {
        if self.request_id.is_empty() {
            self.request_id = id.to_string();
        }
        self
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "denied", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message)
    }

    pub fn limited(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A failed call: the extension's own faults are 502 with a code naming which, its time
    /// limit 504, its concurrency 429, a request it cannot take 400.
    pub fn from_call(f: &CallFailure) -> ApiError {
        let e = &f.error;
        let (status, code) = match e.code() {
            ErrorCode::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorCode::MemoryLimit => (StatusCode::BAD_GATEWAY, "memory-limit"),
            ErrorCode::FuelExhausted => (StatusCode::BAD_GATEWAY, "fuel-exhausted"),
            ErrorCode::Trap => (StatusCode::BAD_GATEWAY, "trap"),
            ErrorCode::Extension => (StatusCode::BAD_GATEWAY, "extension-error"),
            ErrorCode::TooLarge => match e {
                warden_call::CallError::TooLarge { what, .. }
                    if matches!(*what, "input" | "request body") =>
                {
                    (StatusCode::PAYLOAD_TOO_LARGE, "too-large")
                }
                _ => (StatusCode::BAD_GATEWAY, "response-too-large"),
            },
            ErrorCode::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            ErrorCode::Invalid => (StatusCode::BAD_REQUEST, "malformed"),
            ErrorCode::Host => (StatusCode::BAD_GATEWAY, "host-error"),
        };
        let mut a = ApiError::new(status, code, e.to_string()).with_id(&f.request_id);
        a.audited = true;
        if status == StatusCode::TOO_MANY_REQUESTS {
            a.retry_after = Some(1);
        }
        a
    }

    /// A failure to load an install: integrity (verification) is 502 `integrity`, the
    /// operator's policy 403, a component that cannot run here 502 `bad-extension`.
    pub fn from_load(e: &HostError) -> ApiError {
        let text = warden_call::text::chain(e);
        let mut a = match e {
            HostError::Verify(_)
            | HostError::Signature(_)
            | HostError::Bundle(_)
            | HostError::Blob(_)
            | HostError::BlobMismatch { .. }
            | HostError::NotPublished(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "integrity", text)
            }
            HostError::Policy(_) | HostError::Refused(_) | HostError::Plan(_) => {
                ApiError::forbidden(text)
            }
            HostError::Load(l) if l.is_about_the_component() => {
                ApiError::new(StatusCode::BAD_GATEWAY, "bad-extension", text)
            }
            HostError::NotInstalled { .. } => ApiError::not_found(text),
            _ => ApiError::internal(text),
        };
        // Verification and load failures are the host's own records.
        a.audited = matches!(
            e,
            HostError::Verify(_)
                | HostError::Signature(_)
                | HostError::Bundle(_)
                | HostError::Load(_)
                | HostError::Policy(_)
                | HostError::Refused(_)
        );
        a
    }

    /// How the audit log names this refusal's outcome.
    pub(crate) fn outcome(&self) -> warden_audit::Outcome {
        use warden_audit::Outcome;
        match self.status.as_u16() {
            403 => Outcome::Denied,
            408 | 504 => Outcome::Timeout,
            413 => Outcome::TooLarge,
            429 => Outcome::Busy,
            500..=599 => Outcome::Error,
            _ => Outcome::Invalid,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "request_id": self.request_id,
            }
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.request_id)
            && !self.request_id.is_empty()
        {
            r.headers_mut().insert("x-request-id", v);
        }
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}
