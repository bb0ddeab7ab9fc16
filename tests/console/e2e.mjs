// The operator console, end to end: headless Chromium (Debian's, driven by playwright-core)
// against the real `warden serve` that tests/console/run.sh started. Each test drives the page
// as an operator would and checks the outcome through the admin API with the bearer token (not
// through the page it is testing). Run by run.sh, which passes:
//
//   WARDEN_URL                 the service, http://127.0.0.1:PORT
//   WARDEN_ADMIN_TOKEN_FILE    the admin token
//   WARDEN_RUNNER_TOKEN_FILE   the runner token (calls through POST /v1/execute)
//   WARDEN_BUNDLES             signed bundles: echo, echo-0.0.9, fetcher, fetcher-0.2.0, hostile
//   CONSOLE_TOOLS              the npm install of playwright-core and axe-core
//   CONSOLE_CHROMIUM           the browser
//   CONSOLE_SHOTS              where the screenshots go
//
// The tests run in order and share the service's state (a tenant, its installs, its audit log):
// a later test builds on what an earlier one did, as an operator's session would.

import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run tests/console/run.sh)`);
  return v;
};
const BASE = env('WARDEN_URL').replace(/\/$/, '');
const ADMIN = readFileSync(env('WARDEN_ADMIN_TOKEN_FILE'), 'utf8').trim();
const RUNNER = readFileSync(env('WARDEN_RUNNER_TOKEN_FILE'), 'utf8').trim();
const BUNDLES = env('WARDEN_BUNDLES');
const SHOTS = env('CONSOLE_SHOTS');
const require = createRequire(join(env('CONSOLE_TOOLS'), 'node_modules', 'x.js'));
const { chromium } = require('playwright-core');
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const TENANT = 'acme';
const CONSOLE = `${BASE}/console/`;
const ORIGIN = new URL(BASE).origin;
const fromService = (url) => {
  try {
    return new URL(url).origin === ORIGIN;
  } catch {
    return false;
  }
};
const HOSTILE_TEXT =
  'pwn <img src=x onerror=window.__pwned=1> <script>window.__pwned=2</script> ' +
  '\u202Egnp.exe\u202C bell\u0007 esc\u001b[31mred\u001b[0m end';

// ---------------------------------------------------------------------------------------------
// A small runner: tests in order, each timed; the closing line counts them.

// The whole run is bounded: a hang fails it instead of holding CI.
setTimeout(() => {
  console.log('FAIL - the console tests did not finish within 5 minutes');
  console.log('console: 0 passed, 1 failed');
  process.exit(1);
}, 300_000).unref();

const tests = [];
function test(name, fn) {
  tests.push({ name, fn });
}
class Failure extends Error {}
function assert(cond, message) {
  if (!cond) throw new Failure(message);
}
function assertEq(actual, expected, what) {
  if (actual !== expected) {
    throw new Failure(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}
async function eventually(what, fn, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Failure(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

// ---------------------------------------------------------------------------------------------
// The admin API with the bearer token: how the tests check what the page did.

async function adminApi(method, path, body) {
  const headers = { authorization: `Bearer ${ADMIN}` };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const res = await fetch(`${BASE}${path}`, { method, headers, body: payload });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, headers: res.headers, text, json };
}

async function publish(name) {
  const form = new FormData();
  form.append('bundle', new Blob([readFileSync(join(BUNDLES, `${name}.wext`))]), `${name}.wext`);
  form.append('signature', new Blob([readFileSync(join(BUNDLES, `${name}.wext.sig`))]), `${name}.wext.sig`);
  const r = await adminApi('POST', '/v1/admin/bundles', form);
  assertEq(r.status, 201, `publishing ${name} (${r.text})`);
  return r.json;
}

async function installsOf(tenant) {
  const r = await adminApi('GET', `/v1/admin/installs?tenant=${tenant}`);
  assertEq(r.status, 200, `listing installs (${r.text})`);
  return r.json.installs;
}

async function tenantNames() {
  const r = await adminApi('GET', '/v1/admin/tenants');
  assertEq(r.status, 200, `listing tenants (${r.text})`);
  return r.json.tenants.map((t) => t.name);
}

async function auditRecords(query) {
  const r = await adminApi('GET', `/v1/admin/audit?${new URLSearchParams({ limit: '1000', ...query })}`);
  assertEq(r.status, 200, `reading the audit log (${r.text})`);
  return r.json.records;
}

async function execute(extension, method, input) {
  const res = await fetch(`${BASE}/v1/execute`, {
    method: 'POST',
    headers: { authorization: `Bearer ${RUNNER}`, 'content-type': 'application/json' },
    body: JSON.stringify({ tenant: TENANT, extension, method, input }),
  });
  return { status: res.status, requestId: res.headers.get('x-request-id'), text: await res.text() };
}

// ---------------------------------------------------------------------------------------------
// The browser.

const browser = await chromium.launch({
  executablePath: env('CONSOLE_CHROMIUM'),
  headless: true,
  // Chromium's own sandbox needs an unprivileged user; as root it must be turned off. A small
  // /dev/shm (containers) must not crash it.
  args: ['--disable-dev-shm-usage', ...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [])],
});
const problems = [];

/** A new browser context (its own cookies) and page, with the page's errors collected. */
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // A wait that fails, fails in seconds (the whole run takes about twenty).
  context.setDefaultTimeout(10000);
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) {
      problems.push(`CSP violation on ${page.url()}: ${m.text()}`);
    }
  });
  return { context, page };
}

async function heading(page) {
  return (await page.locator('main h1').first().textContent()).trim();
}

async function login(page) {
  await page.goto(CONSOLE);
  await page.getByLabel('Admin token').fill(ADMIN);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('nav[aria-label="Console views"]').waitFor({ state: 'visible' });
}

/** Opens a view (drawn anew, even when it is the one shown) and waits until it has its data. */
async function view(page, name, query = '') {
  const target = `${CONSOLE}#/${name}${query}`;
  await page.evaluate(() => document.querySelector('section.view')?.setAttribute('data-stale', '1')).catch(() => {});
  if (page.url() === target) await page.reload();
  else await page.goto(target);
  await page.locator(`section.view[data-view="${name}"]:not([data-stale])`).waitFor();
  await page.locator('main .loading').first().waitFor({ state: 'detached' });
}

/**
 * axe-core on the page as it is now. Its source is evaluated through the DevTools protocol
 * (`page.evaluate`), which the page's Content-Security-Policy does not govern, so the console
 * keeps its policy on during the check (no `bypassCSP`). Fails on any violation of serious or
 * critical impact (labels, contrast, keyboard and ARIA rules among them).
 */
async function accessible(page, where) {
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
      resultTypes: ['violations'],
    });
    return {
      violations: r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
      })),
      rules: r.passes ? r.passes.length : null,
    };
  });
  const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of result.violations.filter((x) => !serious.includes(x))) {
    console.log(`    note (${where}): axe ${v.impact} ${v.id}: ${v.help} at ${v.nodes.join(', ')}`);
  }
  assert(
    serious.length === 0,
    `axe found serious/critical violations on ${where}: ${serious
      .map((v) => `${v.id} (${v.impact}: ${v.help}) at ${v.nodes.join(', ')}`)
      .join('; ')}`,
  );
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Responses to the admin API and /metrics that `page` gets from now on. */
function watchAdmin(page) {
  const seen = [];
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/v1/admin/') || u.pathname === '/metrics') {
      seen.push({ path: `${r.request().method()} ${u.pathname}`, status: r.status() });
    }
  });
  return seen;
}

// One operator's session, shared by the tests of the positive path.
let op;

// ---------------------------------------------------------------------------------------------
// The tests.

test('console files carry the security headers and the right types', async () => {
  for (const [path, type] of [
    ['/console/', 'text/html'],
    ['/console/app.js', 'javascript'],
    ['/console/app.css', 'text/css'],
    ['/console/views/audit.js', 'javascript'],
  ]) {
    const res = await fetch(`${BASE}${path}`);
    assertEq(res.status, 200, `GET ${path}`);
    assert((res.headers.get('content-type') || '').includes(type), `${path}: content-type ${res.headers.get('content-type')}`);
    const csp = res.headers.get('content-security-policy') || '';
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "form-action 'self'"]) {
      assert(csp.includes(d), `${path}: CSP lacks ${d}: ${csp}`);
    }
    assert(!/unsafe-inline|unsafe-eval/.test(csp), `${path}: CSP allows inline or eval: ${csp}`);
    assertEq(res.headers.get('x-content-type-options'), 'nosniff', `${path}: X-Content-Type-Options`);
    assertEq(res.headers.get('referrer-policy'), 'no-referrer', `${path}: Referrer-Policy`);
    await res.arrayBuffer();
  }
  // Every file of crates/serve/console is served as it is in the tree (embedded at build
  // time), and no script of the console makes markup from strings or code from text.
  const dir = fileURLToPath(new URL('../../crates/serve/console/', import.meta.url));
  const files = readdirSync(dir, { recursive: true }).filter((f) => statSync(join(dir, f)).isFile());
  assert(files.length >= 10, `console files: ${files}`);
  for (const f of files) {
    const local = readFileSync(join(dir, f));
    const res = await fetch(`${BASE}/console/${f}`);
    assertEq(res.status, 200, `GET /console/${f}`);
    assert(Buffer.from(await res.arrayBuffer()).equals(local), `/console/${f} differs from the tree (rebuild warden)`);
    if (f.endsWith('.js')) {
      const bad = /\.innerHTML|\.outerHTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\s*['"](style|on)/.exec(local.toString());
      assert(!bad, `${f} uses ${bad && bad[0]}`);
    }
  }
  // The page itself: no inline script, style or handler; only its own module.
  const html = await (await fetch(CONSOLE)).text();
  assert(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), 'index.html has an inline <script>');
  assert(!/\son[a-z]+\s*=/i.test(html), 'index.html has an inline event handler');
  assert(!/\sstyle\s*=/i.test(html), 'index.html has a style attribute');
  assert(!/https?:\/\//.test(html.replace(/xmlns="[^"]*"/g, '')), 'index.html names another origin');
});

test('no session: the page shows the login, and every admin call is refused', async () => {
  const { context, page } = await newPage();
  const seen = watchAdmin(page);
  await page.goto(`${CONSOLE}#/audit`);
  await page.getByLabel('Admin token').waitFor();
  assert(await page.locator('nav[aria-label="Console views"]').isHidden(), 'the navigation is shown without a session');
  assertEq(await heading(page), 'Log in', 'the heading');
  for (const s of seen) assertEq(s.status, 401, `${s.path} without a session`);
  // What the page would call, called from the page: all refused, as JSON.
  const answers = await page.evaluate(async () => {
    const out = [];
    for (const [m, p] of [
      ['GET', '/v1/admin/tenants'],
      ['GET', '/v1/admin/installs'],
      ['GET', '/v1/admin/audit'],
      ['GET', '/v1/admin/trust'],
      ['GET', '/v1/admin/bundles'],
      ['GET', '/metrics'],
      ['POST', '/v1/admin/trust/reload'],
      ['GET', '/console/session'],
    ]) {
      const r = await fetch(p, { method: m });
      let code = null;
      try {
        code = (await r.json()).error.code;
      } catch {
        code = null;
      }
      out.push({ what: `${m} ${p}`, status: r.status, code });
    }
    return out;
  });
  for (const a of answers) {
    assertEq(a.status, 401, `${a.what} without a session`);
    assert(typeof a.code === 'string' && a.code.length > 0, `${a.what}: no JSON error code`);
  }
  await accessible(page, 'the login view');
  await shot(page, '01-login');
  await context.close();
});

test('login: a wrong token is refused; the right one gives an HttpOnly, SameSite=Strict cookie', async () => {
  const { context, page } = await newPage();
  await page.goto(CONSOLE);
  await page.getByLabel('Admin token').fill('not-the-admin-token-0123456789');
  await page.getByRole('button', { name: 'Log in' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert((await alert.textContent()).includes('refused'), `the refusal shown: ${await alert.textContent()}`);
  assertEq((await context.cookies()).length, 0, 'cookies after a refused login');
  // A login is JSON only: a form (which another site could post) is refused before the token
  // is even looked at, and so is a right token sent as a form.
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    const r = await fetch(`${BASE}/console/session`, { method: 'POST', headers: { 'content-type': type }, body: JSON.stringify({ token: ADMIN }) });
    assertEq(r.status, 415, `a login sent as ${type}`);
    assert(!r.headers.get('set-cookie'), `a login sent as ${type} set a cookie`);
  }

  await page.getByLabel('Admin token').fill(ADMIN);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('section.view[data-view="installs"]').waitFor();
  assertEq(await heading(page), 'Installs', 'the view after login');
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === 'warden_console');
  assert(c, `no warden_console cookie: ${JSON.stringify(cookies)}`);
  assert(c.httpOnly, 'the session cookie is not HttpOnly');
  assertEq(c.sameSite, 'Strict', 'the cookie SameSite');
  assertEq(c.path, '/', 'the cookie path');
  const left = c.expires - Date.now() / 1000;
  assert(left > 800 && left <= 901, `the cookie lives ${left} s, not 15 minutes`);
  // The token is kept nowhere the page's scripts can read.
  const kept = await page.evaluate((token) => ({
    cookie: document.cookie,
    local: JSON.stringify(Object.entries(localStorage)),
    session: JSON.stringify(Object.entries(sessionStorage)),
    dom: document.documentElement.outerHTML.includes(token),
    inputs: [...document.querySelectorAll('input')].some((i) => i.value === token),
  }), ADMIN);
  assert(!kept.cookie.includes('warden_console'), 'the session cookie is readable from scripts');
  assert(!kept.local.includes(ADMIN) && !kept.session.includes(ADMIN), 'the token is in web storage');
  assert(!kept.dom && !kept.inputs, 'the token is still in the page');
  op = { context, page };
});

test('keyboard only: through the login form, then the navigation to a view', async () => {
  const { context, page } = await newPage();
  await page.goto(CONSOLE);
  await page.getByLabel('Admin token').waitFor();
  const focused = () =>
    page.evaluate(() => {
      const a = document.activeElement;
      const label = a && a.id ? document.querySelector(`label[for="${a.id}"]`) : null;
      return { tag: a.tagName, type: a.type || '', text: (label ? label.textContent : a.textContent).trim() };
    });
  await page.keyboard.press('Tab');
  assertEq((await focused()).text, 'Skip to content', 'first Tab stop');
  await page.keyboard.press('Tab');
  let f = await focused();
  assert(f.tag === 'INPUT' && f.type === 'password' && f.text === 'Admin token', `second Tab stop: ${JSON.stringify(f)}`);
  await page.keyboard.type(ADMIN);
  await page.keyboard.press('Tab');
  f = await focused();
  assert(f.tag === 'BUTTON' && f.text === 'Log in', `third Tab stop: ${JSON.stringify(f)}`);
  await page.keyboard.press('Enter');
  await page.locator('section.view[data-view="installs"]').waitFor();
  // From the top of the page: the skip link, then every view, then log out.
  await page.reload();
  await page.locator('section.view[data-view="installs"]').waitFor();
  const order = [];
  for (let i = 0; i < 7; i += 1) {
    await page.keyboard.press('Tab');
    order.push((await focused()).text);
  }
  assertEq(order.join(' | '), 'Skip to content | Installs | Review | Audit | Health | Trust | Log out', 'Tab order');
  // Back to Audit, and open it with Enter: its heading gets the focus.
  for (let i = 0; i < 3; i += 1) await page.keyboard.press('Shift+Tab');
  assertEq((await focused()).text, 'Audit', 'Shift+Tab back');
  await page.keyboard.press('Enter');
  await page.locator('section.view[data-view="audit"]').waitFor();
  await eventually('focus on the Audit heading', async () => {
    const a = await focused();
    return a.tag === 'H1' && a.text === 'Audit';
  });
  // The filters are reachable by keyboard too.
  await page.keyboard.press('Tab');
  f = await focused();
  assert(['BUTTON', 'INPUT', 'SELECT', 'A'].includes(f.tag), `the Tab after the heading lands on ${JSON.stringify(f)}`);
  await context.close();
});

test('a tenant made from the console; its API key is shown once', async () => {
  const { page } = op;
  await view(page, 'installs');
  await page.getByLabel('New tenant name').fill(TENANT);
  await page.getByRole('button', { name: 'Create tenant' }).click();
  const key = page.locator('[data-testid="api-key"]');
  await key.waitFor();
  assert(/\S{16,}/.test(await key.textContent()), 'no API key shown');
  assert((await tenantNames()).includes(TENANT), 'the tenant was not created');
  await view(page, 'installs', `?tenant=${TENANT}`);
  assertEq(await page.locator('[data-testid="api-key"]').count(), 0, 'the API key is shown again');
});

test('a signed bundle published from the console', async () => {
  const { page } = op;
  await view(page, 'installs', `?tenant=${TENANT}`);
  await page.getByLabel('Bundle (.wext)').setInputFiles(join(BUNDLES, 'echo.wext'));
  await page.getByLabel('Signature (.wext.sig)').setInputFiles(join(BUNDLES, 'echo.wext.sig'));
  await page.getByRole('button', { name: 'Publish' }).click();
  await eventually('the published message', async () =>
    (await page.locator('#status').textContent()).includes('Published warden.echo 0.1.0'),
  );
  const r = await adminApi('GET', '/v1/admin/bundles');
  assertEq(r.status, 200, 'GET /v1/admin/bundles');
  assert(r.json.bundles.some((b) => b.id === 'warden.echo' && b.version === '0.1.0'), 'echo is not published');
  // The others, by the API.
  for (const b of ['echo-0.0.9', 'fetcher', 'fetcher-0.2.0', 'hostile']) await publish(b);
});

/** Installs a published bundle through the console's review; `tick` picks grant boxes. */
async function installThroughReview(page, label, tick) {
  await view(page, 'installs', `?tenant=${TENANT}`);
  await page.getByLabel('Published bundle').selectOption({ label });
  await page.getByRole('button', { name: 'Review install' }).click();
  await page.locator('section.view[data-view="review"] table.diff').waitFor();
  assert((await heading(page)).startsWith('Review: install '), `review heading: ${await heading(page)}`);
  const boxes = page.locator('input[name="grant"]');
  for (let i = 0; i < (await boxes.count()); i += 1) {
    assert(!(await boxes.nth(i).isChecked()), 'a permission is ticked by default');
  }
  await tick(page);
  await page.getByRole('button', { name: 'Approve and install' }).click();
  await page.locator('section.view[data-view="installs"] .cards').waitFor();
}

test('install through the review: nothing granted by default, the grant ticked explicitly', async () => {
  const { page } = op;
  const bundles = (await adminApi('GET', '/v1/admin/bundles')).json.bundles;
  const label = (id, version) => {
    const b = bundles.find((x) => x.id === id && x.version === version);
    assert(b, `${id} ${version} not published`);
    return `${b.id} ${b.version} (${b.publisher}, ${b.content_hash.slice(0, 19)}\u2026)`;
  };
  // fetcher asks for network access to two hosts: tick both.
  await installThroughReview(page, label('warden.fetcher', '0.1.0'), async (p) => {
    const boxes = p.locator('input[name="grant"]');
    assertEq(await boxes.count(), 2, 'fetcher 0.1.0 grant boxes');
    for (let i = 0; i < 2; i += 1) await boxes.nth(i).check();
  });
  const fetcher = (await installsOf(TENANT)).find((i) => i.extension === 'warden.fetcher');
  assert(fetcher, 'fetcher was not installed');
  assertEq(fetcher.version, '0.1.0', 'fetcher version');
  assert(fetcher.effective && fetcher.effective.network, `fetcher has no network: ${JSON.stringify(fetcher)}`);
  const card = page.locator('article[data-extension="warden.fetcher"]');
  const cardText = await card.textContent();
  assert(cardText.includes('example.com'), 'the card does not show the granted host');
  assert(cardText.includes(fetcher.content_hash), 'the card does not show the content hash');
  assert(cardText.includes('warden-examples'), 'the card does not show the publisher');
  for (const k of fetcher.signers || []) assert(cardText.includes(k), `the card does not show signer ${k}`);
  assert(cardText.includes('128 KiB'), 'the card does not show the response limit');
  // echo and hostile ask for nothing.
  await installThroughReview(page, label('warden.echo', '0.1.0'), async () => {});
  await installThroughReview(page, label('warden.hostile', '0.1.0'), async () => {});
  const names = (await installsOf(TENANT)).map((i) => i.extension).sort();
  assertEq(names.join(','), 'warden.echo,warden.fetcher,warden.hostile', 'installed');
  const echo = (await installsOf(TENANT)).find((i) => i.extension === 'warden.echo');
  assertEq(echo.grant, 'none', 'echo grant');
  await accessible(page, 'the installs view');
  await shot(page, '02-installs');
});

test('a call through the runner API appears in the audit view (live tail)', async () => {
  const { page } = op;
  await view(page, 'audit', `?tenant=${TENANT}&extension=warden.echo`);
  await eventually('the chain verified', async () => (await page.locator('.chain').textContent()).startsWith('Verified'));
  await page.getByLabel(/Live tail/).check();
  const before = await page.locator('table.records tbody tr').count();
  const marker = `console-e2e-${Date.now()}`;
  const r = await execute('warden.echo', 'greet', { name: marker });
  assertEq(r.status, 200, `the call (${r.text})`);
  assert(r.requestId, 'the call has no x-request-id');
  const row = page.locator('table.records tbody tr', { has: page.locator('td.c-request_id', { hasText: r.requestId }) });
  await eventually('the call in the live tail', async () => (await row.count()) > 0, 8000);
  assertEq((await row.first().locator('td.c-event').textContent()).trim(), 'call', 'event');
  assertEq((await row.first().locator('td.c-extension').textContent()).trim(), 'warden.echo', 'extension');
  assertEq((await row.first().locator('td.c-outcome').textContent()).trim(), 'ok', 'outcome');
  assert((await page.locator('table.records tbody tr').count()) > before, 'no row added');
  // Every row respects the filters.
  for (const t of await page.locator('table.records td.c-extension').allTextContents()) assertEq(t, 'warden.echo', 'a filtered row');
  // The export: the same filters, as JSON lines, an attachment.
  const href = await page.getByRole('link', { name: /Export/ }).getAttribute('href');
  const u = new URL(href, BASE);
  assertEq(u.searchParams.get('format'), 'jsonl', 'export format');
  assertEq(u.searchParams.get('tenant'), TENANT, 'export tenant');
  assertEq(u.searchParams.get('extension'), 'warden.echo', 'export extension');
  const exported = await page.evaluate(async (h) => {
    const res = await fetch(h);
    return { status: res.status, disposition: res.headers.get('content-disposition'), text: await res.text() };
  }, href);
  assertEq(exported.status, 200, 'the export');
  assert(/attachment/i.test(exported.disposition || ''), `export disposition: ${exported.disposition}`);
  const lines = exported.text.trim().split('\n').map((l) => JSON.parse(l));
  assert(lines.length > 0, 'the export is empty');
  for (const l of lines) assertEq((l.record || l).extension, 'warden.echo', 'an exported record');
  assert(lines.some((l) => (l.record || l).request_id === r.requestId), 'the call is not in the export');
});

test('hostile text from an extension is shown inert and literally in the audit view', async () => {
  const { page } = op;
  const r = await execute('warden.hostile', 'fail', HOSTILE_TEXT);
  assert(r.status >= 400, `the failing call answered ${r.status}`);
  // The record holds the text (as the audit log's own escaping stores it).
  const recs = await auditRecords({ tenant: TENANT, extension: 'warden.hostile' });
  const rec = recs.map((l) => l.record || l).find((x) => x.request_id === r.requestId);
  assert(rec && rec.message && rec.message.includes('<img src=x onerror'), `no record with the hostile text: ${JSON.stringify(recs.slice(-2))}`);

  await view(page, 'audit', `?tenant=${TENANT}&extension=warden.hostile`);
  const row = page.locator('table.records tbody tr', { has: page.locator('td.c-request_id', { hasText: r.requestId }) });
  await row.first().waitFor();
  await page.waitForTimeout(300);
  const seen = await page.evaluate(() => ({
    pwned: window.__pwned,
    imgs: document.querySelectorAll('img').length,
    scripts: [...document.querySelectorAll('script')].map((s) => s.getAttribute('src')),
    tableElements: [...document.querySelectorAll('table.records td *')].map((e) => e.tagName),
  }));
  assertEq(seen.pwned, undefined, 'window.__pwned');
  assertEq(seen.imgs, 0, 'img elements in the page');
  assertEq(seen.scripts.join(','), 'app.js', 'script elements in the page');
  assertEq(seen.tableElements.length, 0, `elements inside the table cells (${seen.tableElements.join(',')})`);
  const message = await row.first().locator('td.c-message').textContent();
  assert(message.includes('<img src=x onerror=window.__pwned=1>'), `the img tag is not shown literally: ${message}`);
  assert(message.includes('<script>window.__pwned=2</script>'), `the script tag is not shown literally: ${message}`);
  assert(message.includes('\\u{202e}gnp.exe\\u{202c}'), `the bidi override is not shown as a marker: ${message}`);
  assert(message.includes('bell\\u{7}'), `the bell is not shown as a marker: ${message}`);
  assert(message.includes('esc\\u{1b}[31mred'), `the escape is not shown as a marker: ${message}`);
  const raw = await page.evaluate(() => /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(document.body.innerText));
  assert(!raw, 'a raw control or bidi character is rendered in the page');
  // The page's own escaping, whatever the service sends: raw characters become markers, and
  // markup stays text.
  const own = await page.evaluate(async () => {
    const dom = await import('/console/dom.js');
    const cell = dom.h('td', null, '<b>x</b>\u202e\u0007\u001b[31m\u2066\u200f\u0085');
    return { text: cell.textContent, children: cell.children.length, visible: dom.visible('a\u202eb\u0000c\ud83d\ude00') };
  });
  assertEq(own.text, '<b>x</b>\\u{202e}\\u{7}\\u{1b}[31m\\u{2066}\\u{200f}\\u{85}', 'dom.h text');
  assertEq(own.children, 0, 'elements made from text');
  assertEq(own.visible, 'a\\u{202e}b\\u{0}c\ud83d\ude00', 'visible()');
  await accessible(page, 'the audit view');
  await shot(page, '03-audit-hostile-text');
});

test('audit filters: event, outcome and time range narrow the records, and the export follows them', async () => {
  const { page } = op;
  await view(page, 'audit');
  const rows = page.locator('table.records tbody tr');
  const column = (c) => page.locator(`table.records td.c-${c}`).allTextContents();
  const apply = async () => {
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.waitForLoadState('networkidle');
  };
  await page.getByLabel('Tenant').fill(TENANT);
  await page.getByLabel('Event').selectOption('install');
  await apply();
  await eventually('only install records', async () => {
    const events = await column('event');
    return events.length >= 3 && events.every((e) => e === 'install');
  });
  const href = new URL(await page.getByRole('link', { name: /Export/ }).getAttribute('href'), BASE);
  assertEq(href.searchParams.get('event'), 'install', 'the export follows the event filter');
  await page.getByLabel('Event').selectOption('');
  await page.getByLabel('Outcome').selectOption('error');
  await apply();
  await eventually('only the failed call', async () => {
    const outcomes = await column('outcome');
    const exts = await column('extension');
    return outcomes.length >= 1 && outcomes.every((o) => o === 'error') && exts.every((e) => e === 'warden.hostile');
  });
  await page.getByLabel('Outcome').selectOption('');
  // A range in the future: nothing; one around now: something.
  const iso = (ms) => new Date(ms).toISOString().slice(0, 16);
  await page.getByLabel('Since (UTC)').fill(iso(Date.now() + 3600e3));
  await apply();
  await eventually('no record from the future', async () => (await rows.count()) === 0);
  await page.getByLabel('Since (UTC)').fill(iso(Date.now() - 3600e3));
  await page.getByLabel('Until (UTC)').fill(iso(Date.now() + 3600e3));
  await apply();
  await eventually('the records of the last hour', async () => (await rows.count()) > 3);
  const range = new URL(await page.getByRole('link', { name: /Export/ }).getAttribute('href'), BASE);
  assert(/^\d+$/.test(range.searchParams.get('since') || '') && /^\d+$/.test(range.searchParams.get('until') || ''), `the export's range: ${range}`);
  // One request: its records only (and its nested calls', ID.N), in the view and the export.
  await page.getByLabel('Since (UTC)').fill('');
  await page.getByLabel('Until (UTC)').fill('');
  const r = await execute('warden.echo', 'greet', { name: 'one request' });
  assertEq(r.status, 200, `the call (${r.text})`);
  await page.getByLabel('Request', { exact: true }).fill(r.requestId);
  await apply();
  await eventually('only the request\'s records', async () => {
    const ids = await column('request_id');
    return ids.length >= 1 && ids.every((i) => i === r.requestId || i.startsWith(`${r.requestId}.`));
  });
  const one = new URL(await page.getByRole('link', { name: /Export/ }).getAttribute('href'), BASE);
  assertEq(one.searchParams.get('request'), r.requestId, 'the export follows the request filter');
  await page.getByLabel('Request', { exact: true }).fill('');
});

test('an upgrade that asks for a new host: the review shows it, nothing ticked; approved, it is installed', async () => {
  const { page } = op;
  await view(page, 'installs', `?tenant=${TENANT}`);
  const card = page.locator('article[data-extension="warden.fetcher"]');
  await card.getByLabel('Change warden.fetcher to version').selectOption({ label: '0.2.0 (upgrade)' });
  await card.getByRole('button', { name: 'Review change' }).click();
  await page.locator('section.view[data-view="review"] table.diff').waitFor();
  assertEq(await heading(page), `Review: upgrade warden.fetcher for ${TENANT}`, 'review heading');
  // The new host is marked as added, in the proposed column and in the list of changes.
  const added = await page.locator('table.diff li.added').allTextContents();
  assert(added.length === 1 && added[0].includes('api.new-host.test'), `added in the diff: ${JSON.stringify(added)}`);
  const changes = await page.locator('ul.changes li').allTextContents();
  assert(changes.some((c) => c.includes('api.new-host.test') && /new/i.test(c)), `changes: ${JSON.stringify(changes)}`);
  assert(changes.some((c) => c.includes('Response size') && c.includes('128 KiB') && c.includes('256 KiB')), `raised limit: ${JSON.stringify(changes)}`);
  assertEq(await page.locator('table.diff tr.raised').count(), 1, 'rows of raised limits');
  const summary = await page.locator('.summary').textContent();
  assert(summary.includes('From 0.1.0 to 0.2.0') && summary.includes('explicit approval'), `summary: ${summary}`);
  // Side by side: both versions and both hashes.
  const diff = await page.locator('table.diff').textContent();
  const installed = (await installsOf(TENANT)).find((i) => i.extension === 'warden.fetcher');
  assert(diff.includes(installed.content_hash), 'the installed hash is not shown');
  // Nothing is ticked; every requested item is a box.
  const boxes = page.locator('input[name="grant"]');
  assertEq(await boxes.count(), 3, 'grant boxes for 0.2.0');
  assertEq(await page.locator('input[name="grant"]:checked').count(), 0, 'boxes ticked by default');
  await accessible(page, 'the review view');
  await shot(page, '04-review-upgrade');
  // Still 0.1.0 until approved.
  assertEq((await installsOf(TENANT)).find((i) => i.extension === 'warden.fetcher').version, '0.1.0', 'version before approval');
  for (let i = 0; i < 3; i += 1) await boxes.nth(i).check();
  await page.getByRole('button', { name: 'Approve and install' }).click();
  await page.locator('section.view[data-view="installs"] .cards').waitFor();
  const after = (await installsOf(TENANT)).find((i) => i.extension === 'warden.fetcher');
  assertEq(after.version, '0.2.0', 'version after approval');
  assert(after.effective.network && after.effective.network.hosts.some((h) => h.includes('api.new-host.test')), `effective: ${JSON.stringify(after.effective)}`);
  const card2 = page.locator('article[data-extension="warden.fetcher"]');
  assert((await card2.locator('h3').textContent()).includes('0.2.0'), 'the card does not show 0.2.0');
  assert((await card2.textContent()).includes('api.new-host.test'), 'the card does not show the new host');
});

test('a rollback is refused until its own box is ticked, then done', async () => {
  const { page } = op;
  await view(page, 'installs', `?tenant=${TENANT}`);
  const card = page.locator('article[data-extension="warden.echo"]');
  await card.getByLabel('Change warden.echo to version').selectOption({ label: '0.0.9 (roll back)' });
  await card.getByRole('button', { name: 'Review change' }).click();
  await page.locator('section.view[data-view="review"] table.diff').waitFor();
  assertEq(await heading(page), `Review: roll back warden.echo for ${TENANT}`, 'review heading');
  const force = page.getByLabel('Roll back to the lower version 0.0.9');
  assert(!(await force.isChecked()), 'the rollback box is ticked by default');
  await page.getByRole('button', { name: 'Approve and install' }).click();
  await eventually('the refusal', async () => (await page.locator('#status').textContent()).includes('Roll back'));
  assertEq((await installsOf(TENANT)).find((i) => i.extension === 'warden.echo').version, '0.1.0', 'version after an unconfirmed rollback');
  await force.check();
  await page.getByRole('button', { name: 'Approve and install' }).click();
  await page.locator('section.view[data-view="installs"] .cards').waitFor();
  assertEq((await installsOf(TENANT)).find((i) => i.extension === 'warden.echo').version, '0.0.9', 'version after the rollback');
});

test('health: per-extension charts from the metrics, and the instance pool', async () => {
  const { page } = op;
  for (let i = 0; i < 4; i += 1) assertEq((await execute('warden.echo', 'echo', { i })).status, 200, 'an echo call');
  await view(page, 'health');
  const section = page.locator('section.ext[data-extension="warden.echo"]');
  await section.waitFor();
  // Two samples at least, so rates are drawn.
  await eventually('a second sample', async () => /\((\d+) samples\)/.test(await page.locator('main').textContent()), 8000);
  const metrics = await adminApi('GET', '/metrics');
  assertEq(metrics.status, 200, 'GET /metrics');
  let calls = 0;
  for (const line of metrics.text.split('\n')) {
    if (line.startsWith('warden_calls_total{') && line.includes(`tenant="${TENANT}"`) && line.includes('extension="warden.echo"')) {
      calls += Number(line.trim().split(/\s+/).pop());
    }
  }
  assert(calls >= 5, `echo's calls in /metrics: ${calls}`);
  const charts = section.locator('svg[role="img"]');
  assertEq(await charts.count(), 5, 'charts per extension');
  const labels = await charts.evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')));
  for (const want of ['Calls per second', 'Errors', 'Denials', 'Latency p50 / p99', 'Limit hits']) {
    assert(labels.some((l) => l.startsWith(want)), `no ${want} chart: ${JSON.stringify(labels)}`);
  }
  const callsLabel = labels.find((l) => l.startsWith('Calls per second'));
  const shown = Number(/(\d+) in all/.exec(callsLabel)[1]);
  assert(shown >= 5 && shown <= calls, `calls shown ${shown}, metrics ${calls}`);
  assert(!labels.find((l) => l.startsWith('Latency')).includes('n/a'), 'no latency quantiles');
  assert((await section.locator('polyline').count()) >= 5, 'no lines drawn');
  const hostile = page.locator('section.ext[data-extension="warden.hostile"]');
  const hostileErrors = await hostile.locator('svg[role="img"]').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')).find((l) => l.startsWith('Errors')));
  assert(/[1-9]\d* in all/.test(hostileErrors), `hostile's failed call is not counted: ${hostileErrors}`);
  assert((await page.locator('svg[aria-label^="Instance pool"]').count()) === 1, 'no pool chart');
  // The parser and quantiles on known input.
  const unit = await page.evaluate(async () => {
    const m = await import('/console/metrics.js');
    const s = m.parse([
      '# HELP x a counter',
      '# TYPE x counter',
      'x_total{tenant="a",extension="e\\"q",outcome="ok"} 3',
      'x_total{tenant="a",extension="e\\"q",outcome="error"} 2',
      'h_bucket{tenant="a",extension="e",le="0.1"} 5',
      'h_bucket{tenant="a",extension="e",le="0.5"} 10',
      'h_bucket{tenant="a",extension="e",le="+Inf"} 10',
      'g 7 1700000000000',
    ].join('\n'));
    const b = m.buckets(s, 'h').get(m.extKey({ tenant: 'a', extension: 'e' }));
    return {
      n: s.length,
      label: s[0].labels.extension,
      sum: m.sumByExtension(s, 'x_total').get(m.extKey({ tenant: 'a', extension: 'e"q' })),
      p50: m.quantile(0.5, b),
      p99: m.quantile(0.99, b),
      inf: m.quantile(0.99, [{ le: 0.1, count: 1 }, { le: Infinity, count: 100 }]),
      none: m.quantile(0.5, [{ le: 1, count: 0 }, { le: Infinity, count: 0 }]),
      gauge: m.gauge(s, 'g'),
      rate: m.rate(10, 4, 2),
      reset: m.rate(3, 10, 1),
    };
  });
  assertEq(unit.n, 6, 'parsed samples');
  assertEq(unit.label, 'e"q', 'an escaped label');
  assertEq(unit.sum, 5, 'summed counter');
  assertEq(unit.p50, 0.1, 'p50');
  assert(Math.abs(unit.p99 - 0.492) < 1e-9, `p99 ${unit.p99}`);
  assertEq(unit.inf, 0.1, 'a quantile in the +Inf bucket');
  assertEq(unit.none, null, 'a quantile of nothing');
  assertEq(unit.gauge, 7, 'gauge');
  assertEq(unit.rate, 3, 'rate');
  assertEq(unit.reset, 3, 'rate over a reset');
  await accessible(page, 'the health view');
  await shot(page, '05-health');
});

test('trust: publishers, keys and a reload that is audited', async () => {
  const { page } = op;
  await view(page, 'trust');
  const pub = page.locator('section[data-publisher="warden-examples"]');
  await pub.waitFor();
  const t = (await adminApi('GET', '/v1/admin/trust')).json;
  const p = t.publishers.find((x) => x.name === 'warden-examples');
  assert(p && p.keys.length === 1 && p.revoked.length === 1, `trust: ${JSON.stringify(t)}`);
  const text = await pub.textContent();
  assert(text.includes(p.keys[0].id), 'the key id is not shown');
  const revoked = await pub.locator('ul.revoked li').allTextContents();
  assertEq(revoked.join(','), p.revoked[0].id, 'the revoked keys shown');
  assert(!(await pub.locator('ul.keys:not(.revoked)').textContent()).includes(p.revoked[0].id), 'the revoked key is listed as trusted');
  assert(text.includes(`${p.threshold} signature`), 'the threshold is not shown');
  const reloads = async () => (await auditRecords({ event: 'trust-reload' })).length;
  const before = await reloads();
  await page.getByRole('button', { name: 'Reload trust bundle' }).click();
  await eventually('the reload message', async () => (await page.locator('#status').textContent()).includes('reloaded'));
  assertEq(await reloads(), before + 1, 'trust-reload records');
  await accessible(page, 'the trust view');
  await shot(page, '06-trust');
});

test('uninstall asks first; cancelled nothing changes, confirmed it is gone', async () => {
  const { page } = op;
  await view(page, 'installs', `?tenant=${TENANT}`);
  const card = page.locator('article[data-extension="warden.fetcher"]');
  await card.getByRole('button', { name: 'Uninstall warden.fetcher' }).click();
  await card.getByRole('button', { name: 'Cancel' }).click();
  assert((await installsOf(TENANT)).some((i) => i.extension === 'warden.fetcher'), 'cancel uninstalled');
  await card.getByRole('button', { name: 'Uninstall warden.fetcher' }).click();
  await card.getByRole('button', { name: 'Yes, uninstall' }).click();
  await eventually('the card gone', async () => (await page.locator('article[data-extension="warden.fetcher"]').count()) === 0);
  assert(!(await installsOf(TENANT)).some((i) => i.extension === 'warden.fetcher'), 'fetcher is still installed');
  assert((await page.locator('#status').textContent()).includes('Uninstalled warden.fetcher'), 'no message');
});

test('CSRF: a same-origin change with the cookie but without x-csrf-token is refused', async () => {
  const { page } = op;
  await view(page, 'installs');
  const r = await page.evaluate(async () => {
    const post = async (name, headers) => {
      const res = await fetch('/v1/admin/tenants', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ name }),
      });
      let code = null;
      try {
        code = (await res.json()).error?.code ?? null;
      } catch {
        code = null;
      }
      return { status: res.status, code };
    };
    const session = await (await fetch('/console/session')).json();
    return {
      none: await post('no-csrf', {}),
      wrong: await post('wrong-csrf', { 'x-csrf-token': `${session.csrf}x` }),
      right: await post('with-csrf', { 'x-csrf-token': session.csrf }),
    };
  });
  assertEq(r.none.status, 403, 'without the header');
  assertEq(r.none.code, 'csrf', 'code without the header');
  assertEq(r.wrong.status, 403, 'with a wrong token');
  assertEq(r.wrong.code, 'csrf', 'code with a wrong token');
  assertEq(r.right.status, 201, 'with the token (the control)');
  const names = await tenantNames();
  assert(!names.includes('no-csrf') && !names.includes('wrong-csrf'), 'a tenant was created without the CSRF token');
  assert(names.includes('with-csrf'), 'the control tenant is missing');
});

test('a forged POST from another origin (same site and cross site) is refused', async () => {
  const { context } = op;
  // The attacker's pages: a form posted by script (a navigation, no CORS) and a fetch with
  // credentials, to a route that needs no body (trust reload) and to tenant creation.
  const pages = {
    '/form-reload': `<form id=f method=POST action="${BASE}/v1/admin/trust/reload"></form><script>document.getElementById('f').submit()</script>`,
    '/form-tenant': `<form id=f method=POST enctype="text/plain" action="${BASE}/v1/admin/tenants"><input name='{"name":"forged-form","x":"' value='"}'></form><script>document.getElementById('f').submit()</script>`,
    '/fetch': `<script>
      Promise.allSettled([
        fetch('${BASE}/v1/admin/tenants', {method: 'POST', credentials: 'include', mode: 'no-cors', headers: {'content-type': 'text/plain'}, body: JSON.stringify({name: 'forged-fetch'})}),
        fetch('${BASE}/v1/admin/tenants', {method: 'POST', credentials: 'include', headers: {'content-type': 'application/json'}, body: JSON.stringify({name: 'forged-json'})}),
        fetch('${BASE}/v1/admin/trust/reload', {method: 'POST', credentials: 'include', mode: 'no-cors'}),
      ]).then(() => { document.title = 'done'; });
    </script>`,
  };
  const server = createServer((req, res) => {
    const body = pages[new URL(req.url, 'http://x').pathname];
    res.writeHead(body ? 200 : 404, { 'content-type': 'text/html' });
    res.end(body ? `<!doctype html><title>attacker</title>${body}` : 'no');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  const reloads = async () => (await auditRecords({ event: 'trust-reload' })).length;
  const before = await reloads();
  const tenantsBefore = await tenantNames();
  try {
    // 127.0.0.1 on another port: another origin of the same site, so SameSite=Strict still
    // sends the cookie; `localhost`: another site, where it does not.
    for (const origin of [`http://127.0.0.1:${port}`, `http://localhost:${port}`]) {
      const page = await context.newPage();
      const answers = [];
      page.on('response', (r) => {
        if (fromService(r.url())) answers.push({ url: r.url(), status: r.status(), method: r.request().method() });
      });
      for (const path of ['/form-reload', '/form-tenant']) {
        await page.goto(`${origin}${path}`);
        await eventually(`the forged form of ${origin}${path} to be answered`, async () => fromService(page.url()));
        const status = answers.filter((a) => a.method === 'POST').pop()?.status;
        assert(status === 403 || status === 401, `${origin}${path}: the forged form was answered ${status}`);
        if (origin.includes('127.0.0.1')) {
          // Same site (another port): SameSite lets the cookie go along, but the service takes
          // no session from a request the browser marks as another site's (Sec-Fetch-Site).
          assertEq(status, 401, `${origin}${path}: same-site forged form`);
          const code = await page.evaluate(() => {
            try {
              return JSON.parse(document.body.innerText).error.code;
            } catch {
              return null;
            }
          });
          assertEq(code, 'unauthorized', `${origin}${path}: refusal code`);
        }
      }
      answers.length = 0;
      await page.goto(`${origin}/fetch`);
      await eventually('the forged fetches', async () => (await page.title()) === 'done');
      for (const a of answers.filter((x) => x.method === 'POST')) {
        assert(a.status === 403 || a.status === 401, `${origin}: a forged fetch to ${a.url} was answered ${a.status}`);
      }
      await page.close();
    }
  } finally {
    server.close();
  }
  assertEq(await reloads(), before, 'trust reloads after the forged requests');
  const after = await tenantNames();
  assertEq(after.filter((n) => !tenantsBefore.includes(n)).join(','), '', 'tenants made by forged requests');
});

test('a session that ends: the page\u2019s admin calls are refused and the login is shown', async () => {
  const { context, page } = await newPage();
  await login(page);
  await view(page, 'installs');
  await context.clearCookies();
  const seen = watchAdmin(page);
  await page.getByRole('link', { name: 'Trust' }).click();
  await page.getByLabel('Admin token').waitFor();
  assert(seen.length > 0, 'the page made no admin call');
  for (const s of seen) assertEq(s.status, 401, `${s.path} after the session ended`);
  assert((await page.getByRole('alert').textContent()).includes('session has ended'), 'no session-ended message');
  assert(await page.locator('nav[aria-label="Console views"]').isHidden(), 'the navigation is still shown');
  await context.close();
});

test('log out: the cookie is cleared and no longer accepted', async () => {
  const { context, page } = op;
  await view(page, 'installs');
  const cookie = (await context.cookies()).find((c) => c.name === 'warden_console');
  assert(cookie, 'no session cookie before logging out');
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('Admin token').waitFor();
  assert(!(await context.cookies()).some((c) => c.name === 'warden_console' && c.value), 'the cookie is still set');
  // The old cookie, sent again, is refused.
  const res = await fetch(`${BASE}/v1/admin/tenants`, { headers: { cookie: `warden_console=${cookie.value}` } });
  assertEq(res.status, 401, 'the old cookie after logout');
  const check = await fetch(`${BASE}/console/session`, { headers: { cookie: `warden_console=${cookie.value}` } });
  assertEq(check.status, 401, 'GET /console/session with the old cookie');
  await context.close();
});

// ---------------------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
const started = performance.now();
for (const t of tests) {
  const t0 = performance.now();
  try {
    await t.fn();
    passed += 1;
    console.log(`ok - ${t.name} (${Math.round(performance.now() - t0)} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL - ${t.name} (${Math.round(performance.now() - t0)} ms)\n    ${e instanceof Failure ? e.message : e.stack}`);
  }
}
if (problems.length) {
  failed += 1;
  console.log(`FAIL - the pages ran without script errors or CSP violations\n    ${problems.join('\n    ')}`);
} else {
  passed += 1;
  console.log('ok - the pages ran without script errors or CSP violations');
}
await browser.close();
console.log(`console tests took ${Math.round((performance.now() - started) / 1000)} s`);
// The plain closing line: one word with a colon, then the counts.
console.log(`console: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
