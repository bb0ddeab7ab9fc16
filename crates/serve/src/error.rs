//! The service's one error shape, `{"error":{"code","message","request_id"}}`, and the one
//! mapping from what went wrong to an HTTP status (SPEC section 7).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use warden_call::ErrorCode;
use warden_host::{CallFailure, HostError};

/// The host's storage (registry, blobs) or its audit log cannot be reached or written now: the
/// request may work when retried (503), unlike a refusal or damaged data.
pub(crate) fn storage_down(e: &HostError) -> bool {
    matches!(
        e,
        HostError::Registry(warden_registry::RegistryError::Storage { .. })
            | HostError::Blob(warden_registry::BlobError::Storage { .. })
            | HostError::Audit(_)
            | HostError::AuditClosed
    )
}

/// The registry could not answer: 503 when its storage cannot be reached, 500 when what it
/// holds is damaged.
pub(crate) fn registry_failed(e: &warden_registry::RegistryError) -> ApiError {
    let text = format!("the registry cannot be read: {e}");
    match e {
        warden_registry::RegistryError::Storage { .. } => ApiError::unavailable(text),
        _ => ApiError::internal(text),
    }
}

/// The code of [`ApiError::client_gone`], and the kind its records are counted under.
pub(crate) use warden_host::{CLIENT_GONE, CUT_OFF};

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

    /// The error's code (`malformed`, `csrf`, ...).
    pub fn code(&self) -> &'static str {
        self.code
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

    /// The client went away before its request was answered (its connection closed while its
    /// body arrived): nobody reads the answer; the record says so (see `gateway::Left`).
    pub fn client_gone(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, CLIENT_GONE, message)
    }

    /// Whether this is [`ApiError::client_gone`].
    pub fn is_client_gone(&self) -> bool {
        self.code == CLIENT_GONE
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
                // The install's read-write folders over `[policy.files]`: its own storage,
                // not this answer's size (red team: it was called `response-too-large`).
                warden_call::CallError::Quota(_) => (StatusCode::BAD_GATEWAY, "quota-exceeded"),
                _ => (StatusCode::BAD_GATEWAY, "response-too-large"),
            },
            ErrorCode::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            ErrorCode::Invalid => (StatusCode::BAD_REQUEST, "malformed"),
            ErrorCode::Remote => (StatusCode::BAD_GATEWAY, "remote-error"),
            ErrorCode::Host => (StatusCode::BAD_GATEWAY, "host-error"),
            ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            // Uninstalled while it waited or ran: as if it had never been there.
            ErrorCode::Uninstalled => (StatusCode::NOT_FOUND, "not-found"),
            // Its signature no longer verifies: as a load refused by verification.
            ErrorCode::Untrusted => (StatusCode::BAD_GATEWAY, "integrity"),
        };
        let mut a = ApiError::new(status, code, e.to_string()).with_id(&f.request_id);
        a.audited = true;
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            a.retry_after = Some(1);
        }
        a
    }

    /// A failure to load an install: integrity (verification) is 502 `integrity`, the
    /// operator's policy 403, a component that cannot run here 502 `bad-extension`.
    pub fn from_load(e: &HostError) -> ApiError {
        let text = warden_call::text::chain(e);
        let mut a = match e {
            // Before integrity: a blob store that cannot be reached says nothing of the blob.
            e if storage_down(e) => ApiError::unavailable(text),
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
            e if e.is_busy() => ApiError::unavailable(text),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use warden_call::{CallError, HostFailure};
    use warden_registry::{BlobError, RegistryError};

    use super::*;

    fn storage(what: &str) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(std::io::Error::other(what.to_string()))
    }

    #[test]
    fn storage_that_cannot_be_reached_is_503_with_a_retry_and_damage_is_500() {
        let down = RegistryError::Storage {
            location: "at postgres://db/w".into(),
            source: storage("connection refused"),
        };
        let a = registry_failed(&down);
        assert_eq!(
            (a.status.as_u16(), a.code, a.retry_after),
            (503, "unavailable", Some(1))
        );
        let r = a.with_id("req-1").into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let a = registry_failed(&RegistryError::Damaged("row 3".into()));
        assert_eq!(
            (a.status.as_u16(), a.code, a.retry_after),
            (500, "internal", None)
        );

        for e in [
            HostError::Registry(down),
            HostError::Blob(BlobError::Storage {
                location: "s3://b/p".into(),
                source: storage("timed out"),
            }),
            // Busy compiling others: the component is not at fault, and nothing is refused
            // for good (the admin API says the same, `crate::admin::host_error`).
            HostError::Load(warden_host::LoadError::CompileBusy("8 waiting".into())),
        ] {
            let a = ApiError::from_load(&e);
            assert_eq!((a.status.as_u16(), a.retry_after), (503, Some(1)), "{e}");
            let a = crate::admin::host_error(&e);
            assert_eq!((a.status.as_u16(), a.retry_after), (503, Some(1)), "{e}");
        }
    }

    /// Read-write folders over their quota are named as such, not as an answer too large.
    #[test]
    fn a_quota_is_not_a_response_too_large() {
        let failed = |error| CallFailure {
            request_id: "r".into(),
            error,
            logs: Vec::new(),
        };
        let a = ApiError::from_call(&failed(CallError::Quota("over quota".into())));
        assert_eq!((a.status.as_u16(), a.code), (502, "quota-exceeded"));
        let a = ApiError::from_call(&failed(CallError::TooLarge {
            what: "output",
            size: 2048,
            limit: warden_manifest::ByteSize::kib(1),
        }));
        assert_eq!((a.status.as_u16(), a.code), (502, "response-too-large"));
    }

    #[test]
    fn a_call_refused_or_withheld_while_the_audit_log_fails_is_503_and_other_host_errors_502() {
        let refused = CallFailure {
            request_id: "r".into(),
            error: CallError::Unavailable(HostFailure::new("the audit log cannot be written")),
            logs: Vec::new(),
        };
        let a = ApiError::from_call(&refused);
        assert_eq!(
            (a.status.as_u16(), a.code, a.retry_after),
            (503, "unavailable", Some(1))
        );
        let ran = CallFailure {
            request_id: "r".into(),
            error: CallError::host("the instance could not be made"),
            logs: Vec::new(),
        };
        let a = ApiError::from_call(&ran);
        assert_eq!((a.status.as_u16(), a.retry_after), (502, None));
    }
}
