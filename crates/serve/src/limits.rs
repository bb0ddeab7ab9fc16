//! The service's own limits (the extension's come from its manifest and the policy): sizes of
//! the request head, time for each phase, and each tenant's rate and concurrency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Request;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warden_host::TenantName;

use crate::error::ApiError;

/// The service's limits: `[policy.gateway]` of the operator's policy.
pub type ServiceLimits = warden_manifest::GatewayLimits;

/// The checks on the request head hyper does not make itself.
pub(crate) fn check_head(l: &ServiceLimits, request: &Request) -> Result<(), ApiError> {
    let max_uri = usize::try_from(l.max_uri_bytes.bytes()).unwrap_or(usize::MAX);
    let max_header_bytes = usize::try_from(l.max_header_bytes.bytes()).unwrap_or(usize::MAX);
    let max_headers = l.max_headers as usize;
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > max_uri {
        return Err(ApiError::new(
            http::StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!(
                "the request target is {uri} bytes, over the limit of {}",
                max_uri
            ),
        ));
    }
    let bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > max_header_bytes || request.headers().len() > max_headers {
        return Err(ApiError::new(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "the request has {} headers of {bytes} bytes, over the limits of {} headers and {} bytes",
                request.headers().len(),
                max_headers,
                max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// Each tenant's rate (governor's keyed GCRA) and concurrency.
pub(crate) struct TenantLimiter {
    rate: DefaultKeyedRateLimiter<TenantName>,
    concurrency: u32,
    slots: Mutex<HashMap<TenantName, Arc<Semaphore>>>,
}

impl TenantLimiter {
    pub(crate) fn new(l: &ServiceLimits) -> TenantLimiter {
        TenantLimiter {
            rate: RateLimiter::keyed(Quota::per_second(l.tenant_rate).allow_burst(l.tenant_burst)),
            concurrency: l.tenant_concurrency,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `tenant` now, or says why not (429 with `retry-after`). The
    /// permit is held for the request's life.
    pub(crate) fn admit(&self, tenant: &TenantName) -> Result<OwnedSemaphorePermit, ApiError> {
        if self.rate.check_key(tenant).is_err() {
            return Err(ApiError::limited(
                "rate-limited",
                format!("tenant {tenant} is over its request rate"),
            ));
        }
        let slots = {
            let mut all = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                all.entry(tenant.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency as usize))),
            )
        };
        slots.try_acquire_owned().map_err(|_| {
            ApiError::limited(
                "busy",
                format!(
                    "tenant {tenant} already has {} calls in flight",
                    self.concurrency
                ),
            )
        })
    }
}
