// Health: the service's own metrics (`GET /metrics`), polled every few seconds and kept for a
// short while in this page only, drawn per extension as small charts: call rate, errors,
// denials, p50/p99 latency (from the histogram's buckets) and limit hits; and the instance
// pool's occupancy. Every chart has its numbers as text beside it.

import { admin } from '../api.js';
import { fill, h, svg } from '../dom.js';
import { bucketDelta, buckets, extKey, gauge, parse, quantile, rate, sumByExtension } from '../metrics.js';

export const title = 'Health';

const POLL_MS = 3000;
const KEEP = 40;
const W = 200;
const H = 48;

/** One poll's numbers, everything the charts need. */
function snapshot(samples, at) {
  const calls = sumByExtension(samples, 'warden_calls_total');
  const errors = sumByExtension(samples, 'warden_calls_total', (l) => l.outcome !== 'ok' && l.outcome !== 'denied');
  const denied = sumByExtension(samples, 'warden_calls_total', (l) => l.outcome === 'denied');
  const denials = sumByExtension(samples, 'warden_denials_total');
  const limits = sumByExtension(samples, 'warden_limit_hits_total');
  const hist = buckets(samples, 'warden_call_duration_seconds');
  const names = new Map();
  for (const s of samples) {
    if (s.labels.extension !== undefined && s.name.startsWith('warden_')) names.set(extKey(s.labels), s.labels);
  }
  return {
    at,
    calls,
    errors,
    denials: mergeMax(denials, denied),
    limits,
    hist,
    names,
    pool: gauge(samples, 'warden_instance_pool_instances'),
    capacity: gauge(samples, 'warden_instance_pool_capacity'),
    inFlight: gauge(samples, 'warden_requests_in_flight'),
    auditHealthy: gauge(samples, 'warden_audit_healthy'),
  };
}

/** Denials as the larger of the denial counter and denied calls (each counts what the other may not). */
function mergeMax(a, b) {
  const m = new Map(a);
  for (const [k, v] of b) m.set(k, Math.max(m.get(k) || 0, v));
  return m;
}

function fmt(n, digits = 2) {
  if (n === null || n === undefined || Number.isNaN(n)) return 'n/a';
  const s = Number(n).toFixed(digits);
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? 'n/a' : `${fmt(seconds * 1000, 1)} ms`;
}

/** A small line chart of `series` ([{label, cls, values: [number|null]}]), with its words. */
function chart(label, series, summary) {
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
  const max = Math.max(1e-9, ...all);
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const x = (i) => (i * (W - 4)) / (n - 1) + 2;
  const y = (v) => H - 2 - (v / max) * (H - 6);
  const lines = series.map((s) => {
    const pts = s.values
      .map((v, i) => (v === null || !Number.isFinite(v) ? null : [x(i), y(v)]))
      .filter(Boolean);
    const last = pts[pts.length - 1];
    return svg(
      'g',
      { class: `line ${s.cls || ''}` },
      svg('polyline', { points: pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' '), fill: 'none' }),
      // The latest value as a dot, so a single sample shows too.
      last ? svg('circle', { cx: last[0].toFixed(1), cy: last[1].toFixed(1), r: 2.5 }) : null,
    );
  });
  const text = `${label}: ${summary}`;
  return h(
    'figure',
    { class: 'chart' },
    svg(
      'svg',
      { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': text, focusable: 'false' },
      svg('title', null, text),
      svg('line', { class: 'axis', x1: 0, y1: H - 1, x2: W, y2: H - 1 }),
      lines,
    ),
    h('figcaption', null, h('span', { class: 'chart-label' }, label), ' ', h('span', { class: 'chart-value' }, summary)),
  );
}

export async function render(root, ctx) {
  const history = [];
  const content = h('div', { class: 'health' }, h('p', { class: 'loading' }, 'Reading the metrics\u2026'));
  const updated = h('p', { class: 'hint', 'aria-live': 'off' });
  fill(
    root,
    h('h1', { id: 'view-title', tabindex: '-1' }, 'Health'),
    h('p', { class: 'lead' }, `From this service\u2019s /metrics, every ${POLL_MS / 1000} s; the last ${KEEP} samples are kept in this page only.`),
    updated,
    content,
  );
  let stopped = false;
  let timer = null;

  const draw = () => {
    const last = history[history.length - 1];
    const series = (f) => history.map((s, i) => (i === 0 ? null : f(s, history[i - 1])));
    const dt = (s, p) => (s.at - p.at) / 1000;
    const poolValues = history.map((s) => (s.pool !== null && s.capacity ? s.pool / s.capacity : null));
    const pool = h(
      'section',
      { class: 'panel', 'aria-labelledby': 'pool-title' },
      h('h2', { id: 'pool-title' }, 'Service'),
      h(
        'div',
        { class: 'charts' },
        chart(
          'Instance pool',
          [{ cls: 'a', values: poolValues }],
          last.pool === null ? 'not reported' : `${fmt(last.pool, 0)} of ${last.capacity === null ? '?' : fmt(last.capacity, 0)} instances`,
        ),
        chart('Requests in flight', [{ cls: 'a', values: history.map((s) => s.inFlight) }], last.inFlight === null ? 'not reported' : fmt(last.inFlight, 0)),
      ),
      h(
        'p',
        { class: last.auditHealthy === 0 ? 'msg error' : 'hint' },
        last.auditHealthy === null ? 'Audit log: not reported.' : last.auditHealthy > 0 ? 'Audit log: healthy.' : 'Audit log: NOT healthy (calls are refused until records can be stored).',
      ),
    );
    const keys = [...last.names.keys()].sort();
    const exts = keys.map((k) => {
      const labels = last.names.get(k);
      const name = `${labels.tenant || '?'} / ${labels.extension}`;
      const callRate = series((s, p) => rate(s.calls.get(k), p.calls.get(k), dt(s, p)));
      const errs = series((s, p) => Math.max(0, (s.errors.get(k) || 0) - (p.errors.get(k) || 0)));
      const dens = series((s, p) => Math.max(0, (s.denials.get(k) || 0) - (p.denials.get(k) || 0)));
      const hits = series((s, p) => Math.max(0, (s.limits.get(k) || 0) - (p.limits.get(k) || 0)));
      const window = (s, p) => bucketDelta(s.hist.get(k) || [], p.hist.get(k));
      const p50 = series((s, p) => quantile(0.5, window(s, p)));
      const p99 = series((s, p) => quantile(0.99, window(s, p)));
      // Over everything seen since the service started: the cumulative buckets.
      const all50 = quantile(0.5, last.hist.get(k));
      const all99 = quantile(0.99, last.hist.get(k));
      const nowRate = callRate[callRate.length - 1];
      return h(
        'section',
        { class: 'panel ext', 'aria-label': name, 'data-extension': labels.extension, 'data-tenant': labels.tenant || '' },
        h('h2', null, name),
        h(
          'div',
          { class: 'charts' },
          chart('Calls per second', [{ cls: 'a', values: callRate }], `${fmt(nowRate)} /s now, ${fmt(last.calls.get(k) || 0, 0)} in all`),
          chart('Errors', [{ cls: 'bad', values: errs }], `${fmt(last.errors.get(k) || 0, 0)} in all`),
          chart('Denials', [{ cls: 'warn', values: dens }], `${fmt(last.denials.get(k) || 0, 0)} in all`),
          chart(
            'Latency p50 / p99',
            [
              { cls: 'a', values: p50 },
              { cls: 'b', values: p99 },
            ],
            `p50 ${ms(all50)}, p99 ${ms(all99)}`,
          ),
          chart('Limit hits', [{ cls: 'bad', values: hits }], `${fmt(last.limits.get(k) || 0, 0)} in all`),
        ),
      );
    });
    fill(
      content,
      pool,
      exts.length ? exts : h('p', { class: 'none' }, 'No extension has been called since the service started.'),
    );
    updated.textContent = `Last read ${new Date(last.at).toISOString().replace(/\.\d+Z$/, 'Z')} (${history.length} sample${history.length === 1 ? '' : 's'}).`;
  };

  const poll = async () => {
    try {
      const text = await admin.metrics();
      if (stopped) return;
      history.push(snapshot(parse(text), Date.now()));
      while (history.length > KEEP) history.shift();
      draw();
    } catch (e) {
      if (!stopped) ctx.notifyError(e, 'Reading the metrics');
    }
  };
  await poll();
  if (!stopped) timer = setInterval(poll, POLL_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
