// The one way the console talks to the service: same-origin fetches with the session cookie
// (HttpOnly, so never seen here), the CSRF token on every change, and the service's JSON errors
// turned into `ApiError`s. The admin token itself is only ever sent once, by `login`, and not
// kept.

let csrf = null;
let expires = null;
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }

  /** The error as one line for the page. */
  describe() {
    const id = this.requestId ? ` (request ${this.requestId})` : '';
    return `${this.status} ${this.code}: ${this.message}${id}`;
  }
}

/** Called (once per refusal) when the service answers 401: the session is gone. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function sessionExpires() {
  return expires;
}

async function errorOf(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // Not JSON: the status says enough.
  }
  const e = body && body.error ? body.error : {};
  return new ApiError(
    res.status,
    String(e.code || res.statusText || 'error'),
    String(e.message || `HTTP ${res.status}`),
    e.request_id ? String(e.request_id) : null,
  );
}

/** `path` with `query`'s non-empty values as its query string. */
export function withQuery(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/**
 * One request. `json`: a body sent as JSON; `form`: a FormData sent as multipart. Changes
 * (anything but GET/HEAD) carry `x-csrf-token`. Resolves to the parsed JSON answer (null for
 * 204), rejects with an `ApiError`.
 */
export async function api(method, path, { json, form, query } = {}) {
  const headers = {};
  let body;
  if (json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['x-csrf-token'] = csrf;
  let res;
  try {
    res = await fetch(withQuery(path, query), {
      method,
      headers,
      body,
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `the service did not answer: ${e.message}`, null);
  }
  if (res.status === 401) {
    const err = await errorOf(res);
    csrf = null;
    onUnauthorized(err);
    throw err;
  }
  if (!res.ok) throw await errorOf(res);
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/** Whether a session cookie is there: restores the CSRF token after a reload. */
export async function checkSession() {
  const res = await fetch('/console/session', { credentials: 'same-origin', cache: 'no-store' });
  if (!res.ok) {
    csrf = null;
    return false;
  }
  const s = await res.json();
  csrf = s.csrf;
  expires = s.expires;
  return true;
}

/** Exchanges the admin token for the session cookie; the token is not kept. */
export async function login(token) {
  const res = await fetch('/console/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ token }),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  if (!res.ok) throw await errorOf(res);
  const s = await res.json();
  csrf = s.csrf;
  expires = s.expires;
}

/** Ends the session (the cookie is cleared by the service). */
export async function logout() {
  try {
    await fetch('/console/session', {
      method: 'DELETE',
      headers: csrf ? { 'x-csrf-token': csrf } : {},
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } finally {
    csrf = null;
    expires = null;
  }
}

/** The admin API's own names for what the views read and change. */
export const admin = {
  tenants: () => api('GET', '/v1/admin/tenants'),
  createTenant: (name) => api('POST', '/v1/admin/tenants', { json: { name } }),
  bundles: () => api('GET', '/v1/admin/bundles'),
  publish: (form) => api('POST', '/v1/admin/bundles', { form }),
  installs: (tenant) => api('GET', '/v1/admin/installs', { query: { tenant } }),
  review: (tenant, ext, contentHash) =>
    api('GET', `/v1/admin/tenants/${enc(tenant)}/installs/${enc(ext)}/review`, {
      query: { content_hash: contentHash },
    }),
  install: (tenant, ext, body) =>
    api('PUT', `/v1/admin/tenants/${enc(tenant)}/installs/${enc(ext)}`, { json: body }),
  uninstall: (tenant, ext) => api('DELETE', `/v1/admin/tenants/${enc(tenant)}/installs/${enc(ext)}`),
  trust: () => api('GET', '/v1/admin/trust'),
  reloadTrust: () => api('POST', '/v1/admin/trust/reload'),
  audit: (query) => api('GET', '/v1/admin/audit', { query }),
  verifyAudit: () => api('GET', '/v1/admin/audit/verify'),
  metrics: () => api('GET', '/metrics'),
};

function enc(s) {
  return encodeURIComponent(s);
}
