//! `GET /ext-ui/{extension_id}/{content_hash}/{*path}`: the files of a bundle's ui folder, for a content
//! hash some tenant has installed, from bytes verified again against the trust bundle. The
//! hash is in the URL, so a response never changes: `immutable` caching, a Content-Security-
//! Policy that allows nothing from elsewhere and sandboxes the page into an opaque origin,
//! `nosniff`, and no listing of folders.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use warden_bundle::ContentHash;
use warden_host::ExtensionId;

use crate::Service;
use crate::error::ApiError;

/// `sandbox allow-scripts`: a bundle's page runs in an opaque origin of its own, never in the
/// service's, so its scripts cannot send the operator console's cookie nor read the service's
/// answers (the publisher is not the operator).
const CSP: &str = "sandbox allow-scripts; default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub(crate) async fn asset(
    State(s): State<Arc<Service>>,
    Path((id, hash, path)): Path<(String, String, String)>,
    rid: crate::RequestId,
) -> Response {
    serve(&s, &id, &hash, &path)
        .await
        .unwrap_or_else(|e| e.with_id(&rid.0).into_response())
}

/// A file path under the bundle's ui folder: plain segments only (no dot segments, no empty
/// segments, no backslashes, encodings or control bytes); anything else is refused before any
/// lookup.
fn ui_path(path: &str) -> Result<&str, ApiError> {
    let bad = path.is_empty()
        || path.split('/').any(|seg| {
            seg.is_empty()
                || seg == "."
                || seg == ".."
                || seg.contains('\\')
                || seg.contains('%')
                || seg.bytes().any(|b| b < 0x20 || b == 0x7f)
        });
    if bad {
        return Err(ApiError::malformed(
            "a UI path is plain segments: no `.`, `..`, empty segments, encodings or backslashes",
        ));
    }
    Ok(path)
}

async fn serve(s: &Arc<Service>, id: &str, hash: &str, path: &str) -> Result<Response, ApiError> {
    let nothing = || ApiError::not_found("no such UI file");
    let id: ExtensionId = id.parse().map_err(|_| nothing())?;
    let hash: ContentHash = hash.parse().map_err(|_| nothing())?;
    let file = ui_path(path)?.to_string();
    let service = Arc::clone(s);
    let body = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, ApiError> {
        let admin = service
            .host
            .admin()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let installed = admin
            .installs(None)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .iter()
            .any(|i| i.extension == id && i.content_hash == hash);
        if !installed {
            return Ok(None);
        }
        let bundle = service.verified_bundle(&admin, &hash)?;
        // Only the folder the manifest names as its ui (`[extension] ui`), if any.
        let Some(ui) = &bundle.manifest().extension.ui else {
            return Ok(None);
        };
        Ok(bundle
            .file(&format!("{}/{file}", ui.as_str()))
            .map(<[u8]>::to_vec))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the UI task failed: {e}")))??;
    let Some(body) = body else {
        return Err(nothing());
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    page_headers(h, CSP);
    Ok(r)
}

/// What every page the service serves carries (a bundle's UI, the console): its content
/// policy `csp`, and no sniffing, referrer or framing.
pub(crate) fn page_headers(h: &mut http::HeaderMap, csp: &'static str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// By extension; anything unknown is served as bytes (never sniffed into HTML).
/// A file's content type by its extension (the UI's files and the console's).
pub(crate) fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ui_paths_are_plain_segments() {
        assert_eq!(ui_path("index.html").unwrap(), "index.html");
        assert_eq!(ui_path("js/app.js").unwrap(), "js/app.js");
        for bad in [
            "",
            "../extension.toml",
            "a/../../x",
            "./a",
            "a//b",
            "a/",
            "%2e%2e/extension.toml",
            "a%2fb",
            "..\\extension.toml",
            "a\u{0}b",
        ] {
            assert_eq!(ui_path(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn unknown_types_are_bytes_never_sniffed() {
        assert_eq!(content_type("a.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("a.exe"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
