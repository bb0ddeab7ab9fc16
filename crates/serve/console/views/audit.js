// Audit: the log, filtered (tenant, extension, request, event, decision, outcome, time range), with a
// live tail (polling `after` the last sequence number seen), the chain's verification status,
// and an export of the same filters as JSON lines. Every value in a record may be
// attacker-chosen text: it is only ever set as text (dom.js), with invisible and reordering
// characters shown as `\u{..}` markers.

import { admin, withQuery } from '../api.js';
import { field, fill, h } from '../dom.js';

export const title = 'Audit';

const EVENTS = [
  'call', 'call-start', 'denial', 'grant', 'limit', 'install', 'upgrade', 'uninstall', 'publish',
  'verification-failure', 'load', 'recovery', 'start', 'tenant', 'trust-reload', 'secret', 'session',
];
const DECISIONS = ['allow', 'deny'];
const OUTCOMES = [
  'ok', 'error', 'trap', 'timeout', 'memory-limit', 'fuel-exhausted', 'too-large', 'busy', 'denied', 'invalid',
];
const COLUMNS = [
  ['seq', 'Seq'],
  ['time', 'Time'],
  ['event', 'Event'],
  ['tenant', 'Tenant'],
  ['extension', 'Extension'],
  ['version', 'Version'],
  ['capability', 'Capability'],
  ['target', 'Target'],
  ['decision', 'Decision'],
  ['outcome', 'Outcome'],
  ['duration_ms', 'ms'],
  ['message', 'Message'],
  ['request_id', 'Request'],
];
const TAIL_MS = 2000;
const MAX_ROWS = 1000;

function choice(name, values, selected) {
  return h(
    'select',
    { name },
    h('option', { value: '' }, 'any'),
    values.map((v) => h('option', { value: v, selected: v === selected }, v)),
  );
}

/** `datetime-local` (taken as UTC) to unix seconds, and back. */
function toUnix(v) {
  if (!v) return '';
  const t = Date.parse(`${v}Z`);
  return Number.isNaN(t) ? '' : String(Math.floor(t / 1000));
}
function fromUnix(v) {
  if (!v || !/^\d+$/.test(v)) return '';
  return new Date(Number(v) * 1000).toISOString().slice(0, 16);
}

export async function render(root, ctx) {
  const p = ctx.params;
  const tenant = h('input', { type: 'text', name: 'tenant', value: p.get('tenant') || '', autocomplete: 'off', spellcheck: 'false' });
  const extension = h('input', { type: 'text', name: 'extension', value: p.get('extension') || '', autocomplete: 'off', spellcheck: 'false' });
  // A request id keeps the calls it made to other extensions too (ID.1, ID.1.2, ...).
  const request = h('input', { type: 'text', name: 'request', value: p.get('request') || '', autocomplete: 'off', spellcheck: 'false' });
  const event = choice('event', EVENTS, p.get('event'));
  const decision = choice('decision', DECISIONS, p.get('decision'));
  const outcome = choice('outcome', OUTCOMES, p.get('outcome'));
  const since = h('input', { type: 'datetime-local', name: 'since', value: fromUnix(p.get('since')) });
  const until = h('input', { type: 'datetime-local', name: 'until', value: fromUnix(p.get('until')) });
  const limit = h('input', { type: 'number', name: 'limit', min: '1', max: '10000', value: p.get('limit') || '100' });
  const tail = h('input', { type: 'checkbox', name: 'tail', id: 'audit-tail', checked: p.get('tail') === '1' });

  const filters = () => ({
    tenant: tenant.value.trim(),
    extension: extension.value.trim(),
    request: request.value.trim(),
    event: event.value,
    decision: decision.value,
    outcome: outcome.value,
    since: toUnix(since.value),
    until: toUnix(until.value),
  });

  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Audit filters' },
    field('Tenant', tenant),
    field('Extension', extension),
    field('Request', request),
    field('Event', event),
    field('Decision', decision),
    field('Outcome', outcome),
    field('Since (UTC)', since),
    field('Until (UTC)', until),
    field('Records', limit),
    h('div', { class: 'field buttons' }, h('button', { type: 'submit' }, 'Apply filters')),
  );
  const exportLink = h('a', { class: 'button secondary', download: true }, 'Export (JSON lines)');
  const chain = h('p', { class: 'chain', 'aria-live': 'polite' }, 'Checking the chain\u2026');
  const verify = h('button', { type: 'button', class: 'secondary' }, 'Verify again');
  const count = h('p', { class: 'count', 'aria-live': 'polite' });
  const body = h('tbody');
  const table = h(
    'table',
    { class: 'records' },
    h('caption', null, 'Audit records, oldest first'),
    h('thead', null, h('tr', null, COLUMNS.map(([, label]) => h('th', { scope: 'col' }, label)))),
    body,
  );
  fill(
    root,
    h('h1', { id: 'view-title', tabindex: '-1' }, 'Audit'),
    h('section', { class: 'panel', 'aria-labelledby': 'chain-title' }, h('h2', { id: 'chain-title' }, 'Chain'), chain, verify),
    form,
    h('div', { class: 'row tools' }, h('div', { class: 'check' }, tail, h('label', { for: 'audit-tail' }, 'Live tail (new records every 2 s)')), exportLink),
    count,
    h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Audit records' }, table),
  );

  let lastSeq = null;
  let rows = 0;
  let seen = new Set();
  let timer = null;
  let stopped = false;
  let busy = false;

  const setExport = () => {
    exportLink.href = withQuery('/v1/admin/audit', { ...filters(), limit: limit.value, format: 'jsonl' });
  };

  const addRecords = (lines) => {
    for (const line of lines) {
      const rec = line && typeof line.record === 'object' && line.record !== null ? line.record : line;
      const seq = line.seq ?? '';
      // A record already shown (a tail that overlapped) is not shown twice.
      if (seq !== '' && seen.has(seq)) continue;
      if (seq !== '') seen.add(seq);
      const tr = h(
        'tr',
        { class: rec.outcome && rec.outcome !== 'ok' ? 'bad' : null, 'data-seq': seq },
        COLUMNS.map(([key]) => {
          const v = key === 'seq' ? seq : rec[key];
          return h('td', { class: `c-${key}` }, v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
        }),
      );
      body.append(tr);
      rows += 1;
    }
    while (rows > MAX_ROWS && body.firstChild) {
      body.firstChild.remove();
      rows -= 1;
    }
    count.textContent = `${rows} record${rows === 1 ? '' : 's'} shown${tail.checked ? ', tailing' : ''}.`;
  };

  const load = async () => {
    setExport();
    const r = await admin.audit({ ...filters(), limit: limit.value });
    if (stopped) return;
    body.replaceChildren();
    rows = 0;
    seen = new Set();
    lastSeq = r.last_seq ?? null;
    addRecords(r.records || []);
  };

  const poll = async () => {
    if (stopped || busy || !tail.checked) return;
    busy = true;
    try {
      const q = { ...filters(), limit: 1000 };
      if (lastSeq !== null && lastSeq !== undefined) q.after = lastSeq;
      const r = await admin.audit(q);
      if (stopped || !tail.checked) return;
      if (r.last_seq !== null && r.last_seq !== undefined) lastSeq = r.last_seq;
      if (r.records && r.records.length) addRecords(r.records);
    } catch (e) {
      if (!stopped) ctx.notifyError(e, 'Live tail');
    } finally {
      busy = false;
    }
  };

  const setTail = () => {
    clearInterval(timer);
    timer = null;
    if (tail.checked) timer = setInterval(poll, TAIL_MS);
    count.textContent = `${rows} record${rows === 1 ? '' : 's'} shown${tail.checked ? ', tailing' : ''}.`;
  };

  const check = async () => {
    chain.className = 'chain';
    chain.textContent = 'Checking the chain\u2026';
    try {
      const v = await admin.verifyAudit();
      if (stopped) return;
      const mac = v.head_mac ? `, head MAC ${v.head_mac}` : '';
      if (v.ok) {
        chain.className = 'chain ok';
        chain.textContent = `Verified: ${v.records} records chained${mac}. Last hash ${v.last_hash || 'none'}.`;
      } else {
        chain.className = 'chain bad';
        chain.textContent = `NOT verified after ${v.records} records: ${v.error || 'unknown error'}${mac}.`;
      }
    } catch (e) {
      if (stopped) return;
      chain.className = 'chain bad';
      chain.textContent = `The chain could not be checked: ${e.describe ? e.describe() : e}`;
    }
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await load();
    } catch (e) {
      ctx.notifyError(e, 'Reading the audit log');
    }
  });
  for (const c of [tenant, extension, request, event, decision, outcome, since, until, limit]) c.addEventListener('change', setExport);
  tail.addEventListener('change', setTail);
  verify.addEventListener('click', check);

  setExport();
  await Promise.all([load(), check()]);
  setTail();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
