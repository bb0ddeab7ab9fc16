// The console's entry: the session (login form or views), the navigation between views by the
// URL's fragment (`#/installs`, `#/review?tenant=..`, ...), and the status line.

import { ApiError, checkSession, login, logout, setUnauthorizedHandler } from './api.js';
import { field, h, fill } from './dom.js';
import * as installs from './views/installs.js';
import * as review from './views/review.js';
import * as audit from './views/audit.js';
import * as health from './views/health.js';
import * as trust from './views/trust.js';

const VIEWS = { installs, review, audit, health, trust };
const DEFAULT_VIEW = 'installs';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const logoutButton = document.getElementById('logout');
const statusLine = document.getElementById('status');

let loggedIn = false;
let stopView = null;
let generation = 0;
let focusOnRender = true;

// A message outlives the one navigation that follows it (an action's result shown on the view
// it leads to), then goes.
let keepStatus = false;

/** Shows a message in the status line (an aria-live region): kind `ok`, `error` or `info`. */
function notify(text, kind = 'info') {
  keepStatus = Boolean(text);
  fill(statusLine, text ? h('p', { class: `msg ${kind}` }, text) : null);
}

/** Shows an error (an ApiError with its code and request id, or any other). */
function notifyError(e, doing) {
  const text = e instanceof ApiError ? e.describe() : String(e && e.message ? e.message : e);
  notify(doing ? `${doing}: ${text}` : text, 'error');
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function stop() {
  if (stopView) {
    try {
      stopView();
    } catch {
      // A view's cleanup never stops navigation.
    }
  }
  stopView = null;
}

function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(2) : '';
  const [name, query] = raw.split('?');
  return { name: VIEWS[name] ? name : DEFAULT_VIEW, params: new URLSearchParams(query || '') };
}

async function route() {
  stop();
  if (keepStatus) keepStatus = false;
  else fill(statusLine);
  generation += 1;
  const mine = generation;
  if (!loggedIn) {
    showLogin();
    return;
  }
  const { name, params } = parseHash();
  for (const a of nav.querySelectorAll('a[data-view]')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${VIEWS[name].title} · warden console`;
  const root = h('section', { class: 'view', 'aria-labelledby': 'view-title', 'data-view': name });
  fill(main, root);
  const ctx = {
    params,
    go,
    notify,
    notifyError,
    /** False once the operator moved on: a late answer must not draw over the next view. */
    current: () => mine === generation && loggedIn,
  };
  try {
    // Focus moves to the view's heading, so a keyboard or screen-reader user starts at the top
    // of the view just opened (again once the view has drawn its data, if focus was lost).
    const focusTitle = focusOnRender;
    focusOnRender = true;
    const pending = VIEWS[name].render(root, ctx);
    const focusHeading = () => {
      const title = root.querySelector('h1');
      if (title && focusTitle && mine === generation) title.focus({ preventScroll: true });
    };
    focusHeading();
    const cleanup = await pending;
    if (mine === generation) {
      stopView = cleanup || null;
      const a = document.activeElement;
      if (!a || a === document.body || !a.isConnected) focusHeading();
    } else if (cleanup) {
      cleanup();
    }
  } catch (e) {
    if (mine !== generation || !loggedIn) return;
    notifyError(e, `The ${VIEWS[name].title} view`);
  }
}

function showLogin(message) {
  stop();
  loggedIn = false;
  nav.hidden = true;
  logoutButton.hidden = true;
  document.title = 'Log in · warden console';
  const token = h('input', {
    type: 'password',
    name: 'token',
    autocomplete: 'off',
    required: true,
    spellcheck: 'false',
  });
  const error = h('p', { class: 'msg error', id: 'login-error', role: 'alert' });
  error.hidden = !message;
  if (message) error.textContent = message;
  const form = h(
    'form',
    { class: 'login', 'aria-labelledby': 'view-title' },
    field('Admin token', token, 'Exchanged once for a session cookie (15 minutes); not stored by the page.'),
    h('button', { type: 'submit' }, 'Log in'),
    error,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = token.value;
    // The token leaves the page with this one request and is not kept.
    token.value = '';
    error.hidden = true;
    try {
      await login(value);
    } catch (e) {
      error.textContent =
        e instanceof ApiError && e.status === 401
          ? 'That admin token was refused.'
          : `Login failed: ${e instanceof ApiError ? e.describe() : e}`;
      error.hidden = false;
      token.focus();
      return;
    }
    enter();
  });
  fill(
    main,
    h(
      'section',
      { class: 'view', 'aria-labelledby': 'view-title', 'data-view': 'login' },
      h('h1', { id: 'view-title', tabindex: '-1' }, 'Log in'),
      h('p', null, 'The operator console of this warden service. Log in with the service\u2019s admin token.'),
      form,
    ),
  );
  notify('');
}

function enter() {
  loggedIn = true;
  nav.hidden = false;
  logoutButton.hidden = false;
  notify('');
  if (!location.hash.startsWith('#/')) location.hash = `#/${DEFAULT_VIEW}`;
  else route();
}

setUnauthorizedHandler(() => {
  if (!loggedIn) return;
  showLogin('Your session has ended: log in again.');
});

logoutButton.addEventListener('click', async () => {
  await logout();
  showLogin();
  notify('Logged out.', 'ok');
});

document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#/')) route();
});

(async () => {
  let ok = false;
  try {
    ok = await checkSession();
  } catch {
    ok = false;
  }
  // On the first page load focus stays at the start of the page (the skip link comes first).
  focusOnRender = false;
  if (ok) enter();
  else showLogin();
})();
