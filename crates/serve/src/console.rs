//! The operator console (`/console/`): its files, embedded in the binary, and the browser
//! session that stands in for the admin token.
//!
//! The console has no backend of its own: the page calls the admin API. Signing in exchanges
//! the admin token for a cookie (HttpOnly, SameSite=Strict, 15 minutes) that the admin API
//! accepts in place of `Authorization: Bearer`. A change made with the cookie must also carry
//! the session's CSRF token in `x-csrf-token` and come from the service's own origin
//! ([`guard`]): SameSite already keeps the cookie off cross-site requests; this holds
//! even where it does not (an old browser, a sibling site).
//!
//! Sessions are stateless: the cookie is a MAC (keyed by the admin token) over a nonce and an
//! expiry, so every runner of a fleet with the same admin token accepts it, and changing the
//! token ends every session. Signing out ends the session on this runner at once; elsewhere it
//! lapses at its expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use warden_audit::{Event, Outcome, Record};

use crate::error::ApiError;
use crate::{Peer, RequestId, Service};

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The session cookie's name.
pub(crate) const COOKIE: &str = "warden_console";
/// The header a change made with the cookie carries the session's CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts (not extended by use).
const LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The policy of every console file: its own scripts and styles only, nothing inline, no
/// frames, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Most bytes of a sign-in body.
const MAX_SIGN_IN: u64 = 4096;

const NONCE: usize = 16;
type HmacSha256 = Hmac<Sha256>;

/// The console's sessions: their key, and those signed out before their expiry.
pub(crate) struct Sessions {
    /// Derived from the admin token; none without one (no console then).
    key: Option<[u8; 32]>,
    /// Nonces signed out on this runner, with their expiry (dropped once past it).
    ended: Mutex<HashMap<[u8; NONCE], u64>>,
}

/// A valid session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    nonce: [u8; NONCE],
    expires: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sessions {
    pub(crate) fn new(admin: Option<&crate::Token>) -> Sessions {
        Sessions {
            key: admin.map(|t| t.derive(b"warden console session v1")),
            ended: Mutex::new(HashMap::new()),
        }
    }

    fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
        // HMAC pads a short key with zeros to its block: the same MAC, with no fallible call.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(key);
        let mut m = <HmacSha256 as KeyInit>::new(&block.into());
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// A new session: (cookie value, CSRF token, expiry).
    fn issue(&self) -> Option<(String, String, u64)> {
        let key = self.key.as_ref()?;
        let mut nonce = [0u8; NONCE];
        OsRng.fill_bytes(&mut nonce);
        let expires = now().saturating_add(LIFETIME.as_secs());
        let session = Session { nonce, expires };
        let mut body = nonce.to_vec();
        body.extend_from_slice(&expires.to_be_bytes());
        let mac = Self::mac(key, &[b"cookie", &body]);
        let cookie = format!("v1.{}.{}", B64.encode(&body), B64.encode(mac));
        Some((cookie, self.csrf(&session)?, expires))
    }

    /// The session's CSRF token.
    fn csrf(&self, s: &Session) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(B64.encode(Self::mac(key, &[b"csrf", &s.nonce])))
    }

    /// The valid session among the request's `warden_console` cookies, if any, for a request
    /// the browser says a page of this origin made (or the operator typed in): a cookie that
    /// arrives with a request from another site, or from a sandboxed page, is no session.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let key = self.key.as_ref()?;
        if let Some(site) = headers.get("sec-fetch-site")
            && !matches!(site.as_bytes(), b"same-origin" | b"none")
        {
            return None;
        }
        let now = now();
        cookies(headers, COOKIE).find_map(|value| {
            let s = self.parse(key, value)?;
            (s.expires > now && !self.is_ended(&s)).then_some(s)
        })
    }

    fn parse(&self, key: &[u8; 32], value: &str) -> Option<Session> {
        let mut parts = value.split('.');
        let (Some("v1"), Some(body), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let body = B64.decode(body).ok()?;
        let mac = B64.decode(mac).ok()?;
        let want = Self::mac(key, &[b"cookie", &body]);
        if !bool::from(want.as_slice().ct_eq(&mac)) {
            return None;
        }
        let nonce: [u8; NONCE] = body.get(..NONCE)?.try_into().ok()?;
        let expires = u64::from_be_bytes(body.get(NONCE..)?.try_into().ok()?);
        Some(Session { nonce, expires })
    }

    fn is_ended(&self, s: &Session) -> bool {
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&s.nonce)
    }

    /// Signs `s` out on this runner.
    fn end(&self, s: &Session) {
        let now = now();
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        ended.retain(|_, expires| *expires > now);
        ended.insert(s.nonce, s.expires);
    }

    /// Whether `headers` carry `s`'s CSRF token.
    fn csrf_matches(&self, s: &Session, headers: &HeaderMap) -> bool {
        let Some(want) = self.csrf(s) else {
            return false;
        };
        let mut given = headers.get_all(CSRF_HEADER).iter();
        match (given.next(), given.next()) {
            (Some(v), None) => bool::from(v.as_bytes().ct_eq(want.as_bytes())),
            _ => false,
        }
    }
}

/// The values of the cookies named `name` in the request's `Cookie` headers.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Whether the request says it comes from a page of this service (or does not say): its
/// `Origin`, when sent, is this service's, and `Sec-Fetch-Site`, when sent, is `same-origin`.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = |why: &str| ApiError::new(StatusCode::FORBIDDEN, "csrf", why.to_string());
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(refused(
            "a change from another site is refused (Sec-Fetch-Site)",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().ok();
        let ours = match (origin, host) {
            (Some(o), Some(h)) => o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(h)),
            _ => false,
        };
        if !ours {
            return Err(refused("a change from another origin is refused (Origin)"));
        }
    }
    Ok(())
}

/// The admin API's guard, a layer on its routes. Against forged requests: a change (not GET
/// or HEAD) made with the console's cookie, and no `Authorization` of its own, must come from
/// the service's own origin and carry the session's CSRF token (requests without a valid
/// session pass on to their route, which refuses them: 401). And it audits what it refuses,
/// and a wrong operator token the route refused (counted per kind and second, with the
/// client's address).
pub(crate) async fn guard(State(s): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let id = RequestId(
        request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
    );
    let peer = request.extensions().get::<Peer>().copied();
    let headers = request.headers();
    let bearer = headers.contains_key(header::AUTHORIZATION);
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !safe
        && !bearer
        && let Some(session) = s.console.session(headers)
    {
        let forged = same_origin(headers).err().or_else(|| {
            (!s.console.csrf_matches(&session, headers)).then(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    format!(
                        "a change made with the console's session needs its {CSRF_HEADER} header"
                    ),
                )
            })
        });
        if let Some(e) = forged {
            refused(
                &s,
                &id,
                peer,
                "a change with the console's session refused",
                &e,
            )
            .await;
            return e.with_id(&id.0).into_response();
        }
    }
    let response = next.run(request).await;
    if bearer && response.status() == StatusCode::UNAUTHORIZED {
        let e = ApiError::unauthorized("a wrong operator token");
        refused(&s, &id, peer, "the admin API refused", &e).await;
    }
    response
}

/// The console's routes: its files and its session.
pub(crate) fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route(
            "/console",
            get(|| async { axum::response::Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route(
            "/console/session",
            get(session_info).post(sign_in).delete(sign_out),
        )
        .route("/console/{*path}", get(file))
}

async fn index(id: RequestId) -> Response {
    serve_file("index.html", &id)
}

async fn file(Path(path): Path<String>, id: RequestId) -> Response {
    serve_file(&path, &id)
}

fn serve_file(path: &str, id: &RequestId) -> Response {
    let Some((_, bytes)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return ApiError::not_found("no such console file")
            .with_id(&id.0)
            .into_response();
    };
    let mut r = (*bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::ui::content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure_headers(h);
    r
}

/// What every console answer carries: its content policy, no sniffing, framing or referrer,
/// and no window or resource shared with another origin.
fn secure_headers(h: &mut HeaderMap) {
    crate::ui::page_headers(h, CSP);
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// `POST /console/session`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// A session: its CSRF token and when it ends (seconds since the Unix epoch).
#[derive(Serialize)]
struct SessionInfo {
    csrf: String,
    expires: u64,
}

fn no_console(id: &RequestId) -> Response {
    ApiError::not_found("the console is off: the service has no admin token")
        .with_id(&id.0)
        .into_response()
}

/// `POST /console/session`: the admin token (JSON) for a session cookie.
async fn sign_in(
    State(s): State<Arc<Service>>,
    id: RequestId,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let peer = peer.map(|axum::Extension(p)| p);
    let Some(token) = &s.options.admin_token else {
        return no_console(&id);
    };
    let r = async {
        // JSON only: a cross-site form cannot send it without the browser asking first.
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "sign in with a JSON body {\"token\": ...}",
            ));
        }
        same_origin(&headers)?;
        let mut hold = s.bodies.hold();
        let body = crate::limits::read_body(
            body,
            crate::limits::declared_length(&headers),
            MAX_SIGN_IN,
            s.options.limits.body_timeout,
            &mut hold,
            || ApiError::too_large(format!("the sign-in body is over {MAX_SIGN_IN} bytes")),
        )
        .await?;
        // The parser's message would quote the body back, token and all.
        let req: SignIn = serde_json::from_slice(&body)
            .map_err(|_| ApiError::malformed("sign in with a JSON body {\"token\": \"...\"}"))?;
        if !token.accepts(req.token.trim()) {
            return Err(ApiError::unauthorized("the admin token is wrong"));
        }
        let (cookie, csrf, expires) = s
            .console
            .issue()
            .ok_or_else(|| ApiError::internal("no session key"))?;
        // Not signed in unless recorded.
        record(&s, &id, Outcome::Ok, "console signed in").await?;
        let secure = forwarded_https(&headers);
        let mut r = axum::Json(SessionInfo { csrf, expires }).into_response();
        let set = format!(
            "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            LIFETIME.as_secs(),
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&set) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        Ok(r)
    };
    let r = r.await;
    if let Err(e) = &r {
        refused(&s, &id, peer, "console sign-in refused", e).await;
    }
    finish(&id, r)
}

/// Audits a refused sign-in or operator credential: repeats of a kind within a second are
/// counted into one record (a flood of wrong tokens must not buy one synced record each, nor
/// fill the disk).
pub(crate) async fn refused(
    s: &Service,
    id: &RequestId,
    peer: Option<Peer>,
    what: &str,
    e: &ApiError,
) {
    let mut r = Record::new(Event::Session, &id.0)
        .with_outcome(Outcome::Denied)
        .with_message(format!(
            "{what} ({} {}): {}",
            e.status.as_u16(),
            e.code,
            e.message
        ));
    if let Some(p) = peer {
        r = r.with_target(format!("from {}", p.0.ip()));
    }
    if !s.host.record_refusal(e.code, r).await {
        tracing::error!(request_id = %id.0, "the audit record of a refused sign-in could not be stored");
    }
}

/// The service sits behind a proxy that ended TLS and says so: the cookie is then `Secure`.
/// (The service itself speaks plain HTTP; a wrong claim only makes the cookie stricter.)
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// `GET /console/session`: the session's CSRF token and expiry, or 401.
async fn session_info(
    State(s): State<Arc<Service>>,
    id: RequestId,
    headers: HeaderMap,
) -> Response {
    if s.options.admin_token.is_none() {
        return no_console(&id);
    }
    let r = match s.console.session(&headers) {
        Some(session) => s
            .console
            .csrf(&session)
            .map(|csrf| {
                axum::Json(SessionInfo {
                    csrf,
                    expires: session.expires,
                })
                .into_response()
            })
            .ok_or_else(|| ApiError::internal("no session key")),
        None => Err(ApiError::unauthorized("no console session; sign in")),
    };
    finish(&id, r)
}

/// `DELETE /console/session`: signs out (with the CSRF token, from this origin).
async fn sign_out(State(s): State<Arc<Service>>, id: RequestId, headers: HeaderMap) -> Response {
    if s.options.admin_token.is_none() {
        return no_console(&id);
    }
    let r = (|| {
        let session = s
            .console
            .session(&headers)
            .ok_or_else(|| ApiError::unauthorized("no console session"))?;
        same_origin(&headers)?;
        if !s.console.csrf_matches(&session, &headers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                format!("signing out needs the session's {CSRF_HEADER} header"),
            ));
        }
        s.console.end(&session);
        Ok(())
    })();
    let r = match r {
        Ok(()) => record(&s, &id, Outcome::Ok, "console signed out")
            .await
            .map(|()| {
                let mut r = StatusCode::NO_CONTENT.into_response();
                r.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_static(
                        "warden_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
                    ),
                );
                r
            }),
        Err(e) => Err(e),
    };
    finish(&id, r)
}

/// Audits a sign-in, a refused one, or a sign-out (the token is never in it); a record that
/// cannot be stored fails the request.
async fn record(
    s: &Arc<Service>,
    id: &RequestId,
    outcome: Outcome,
    message: &'static str,
) -> Result<(), ApiError> {
    let sink = Arc::clone(s.host.audit_sink());
    let r = Record::new(Event::Session, &id.0)
        .with_outcome(outcome)
        .with_message(message);
    tokio::task::spawn_blocking(move || sink.append(r))
        .await
        .map_err(|e| ApiError::internal(format!("the audit task failed: {e}")))?
        .map_err(|e| ApiError::unavailable(format!("the audit log cannot be written: {e}")))
}

/// The answer with the request's id, never cached, with the console's headers.
fn finish(id: &RequestId, r: Result<Response, ApiError>) -> Response {
    let mut r = r.unwrap_or_else(|e| e.with_id(&id.0).into_response());
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        h.insert("x-request-id", v);
    }
    secure_headers(h);
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(Some(
            &crate::Token::new("an-admin-token-long-enough-to-be-accepted").unwrap(),
        ))
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_session_is_what_this_key_signed_until_it_ends() {
        let s = sessions();
        let (cookie, csrf, _) = s.issue().unwrap();
        let session = s.session(&with_cookie(&cookie)).unwrap();
        assert_eq!(s.csrf(&session).unwrap(), csrf);
        // Another admin token's key does not accept it.
        let other = Sessions::new(Some(
            &crate::Token::new("another-admin-token-long-enough-to-be-ok").unwrap(),
        ));
        assert!(other.session(&with_cookie(&cookie)).is_none());
        // Any change of the cookie is refused: a later expiry, a flipped MAC, garbage.
        let (_, body, mac) = {
            let mut p = cookie.split('.');
            (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
        };
        let mut raw = B64.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let forged = format!("v1.{}.{mac}", B64.encode(&raw));
        assert!(s.session(&with_cookie(&forged)).is_none());
        for bad in [
            "",
            "v1",
            "v1..",
            "v2.AAAA.AAAA",
            "v1.AAAA.AAAA.AAAA",
            "v1.%%%.%%%",
        ] {
            assert!(s.session(&with_cookie(bad)).is_none(), "{bad:?}");
        }
        // An expired one is refused too.
        let body = {
            let mut b = session.nonce.to_vec();
            b.extend_from_slice(&(now() - 1).to_be_bytes());
            b
        };
        let key = s.key.unwrap();
        let expired = format!(
            "v1.{}.{}",
            B64.encode(&body),
            B64.encode(Sessions::mac(&key, &[b"cookie", &body]))
        );
        assert!(s.session(&with_cookie(&expired)).is_none());
        // Signed out: refused from then on.
        s.end(&session);
        assert!(s.session(&with_cookie(&cookie)).is_none());
        // No admin token: no sessions at all.
        assert!(Sessions::new(None).issue().is_none());
    }

    #[test]
    fn changes_must_come_from_this_origin_with_the_csrf_token() {
        let s = sessions();
        let (cookie, csrf, _) = s.issue().unwrap();
        let mut h = with_cookie(&cookie);
        let session = s.session(&h).unwrap();
        assert!(!s.csrf_matches(&session, &h));
        h.insert(CSRF_HEADER, HeaderValue::from_str(&csrf).unwrap());
        assert!(s.csrf_matches(&session, &h));
        // Twice is not once.
        h.append(CSRF_HEADER, HeaderValue::from_str(&csrf).unwrap());
        assert!(!s.csrf_matches(&session, &h));

        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h).is_ok());
        for (name, value) in [
            ("origin", "http://127.0.0.1:9090"),
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let mut bad = h.clone();
            bad.insert(name, HeaderValue::from_static(value));
            let e = same_origin(&bad).unwrap_err();
            assert_eq!(e.code(), "csrf", "{name}: {value}");
        }
    }

    #[test]
    fn every_file_has_a_type_and_the_index_exists() {
        assert!(ASSETS.iter().any(|(n, _)| *n == "index.html"));
        for (name, _) in ASSETS {
            assert_ne!(
                crate::ui::content_type(name),
                "application/octet-stream",
                "{name}"
            );
        }
    }
}
