// How the views show the pieces they share: permissions, limits, versions, hashes.

import { bytes, h } from '../dom.js';

export const LIMIT_NAMES = {
  max_memory_bytes: 'Memory',
  max_execution_time_ms: 'Execution time',
  max_concurrent_calls: 'Concurrent calls',
  max_fuel: 'Fuel',
  max_request_bytes: 'Request size',
  max_response_bytes: 'Response size',
};

/** One limit's value in words. */
export function limitValue(name, v) {
  if (v === null || v === undefined) return name === 'max_fuel' ? 'unlimited' : 'none';
  if (name.endsWith('_bytes')) return bytes(v);
  if (name.endsWith('_ms')) return `${v} ms`;
  return String(v);
}

/** The limits as [label, value] pairs, in a fixed order (unknown ones after). */
export function limitPairs(limits) {
  const l = limits || {};
  const keys = [...Object.keys(LIMIT_NAMES), ...Object.keys(l).filter((k) => !(k in LIMIT_NAMES))];
  return keys.filter((k) => k in l).map((k) => [LIMIT_NAMES[k] || k, limitValue(k, l[k])]);
}

/** The effective permissions (requested ∩ granted ∩ policy) as a list. */
export function effectiveList(e) {
  if (!e) return h('p', null, 'unknown');
  const items = [];
  if (e.kv) items.push('key-value store');
  for (const s of e.secrets || []) items.push(`secret ${s}`);
  for (const c of e.calls || []) items.push(`call ${c}`);
  if (e.network) {
    const hosts = (e.network.hosts || []).join(', ') || 'no host';
    const ports = (e.network.ports || []).join(', ');
    items.push(`network ${hosts}${ports ? ` (ports ${ports})` : ''}`);
  }
  for (const m of e.mounts || []) items.push(`filesystem ${m.path} ${m.readonly ? 'read-only' : 'read-write'}`);
  if (items.length === 0) return h('p', { class: 'none' }, 'none: the extension can use no capability');
  return h('ul', { class: 'atoms' }, items.map((t) => h('li', null, t)));
}

/** Permission atoms as a list; those in `marked` get `cls` and a visible word. */
export function atomList(atoms, marked, cls, word) {
  if (!atoms || atoms.length === 0) return h('p', { class: 'none' }, 'nothing requested');
  const set = new Set(marked || []);
  return h(
    'ul',
    { class: 'atoms' },
    atoms.map((a) =>
      set.has(a) ? h('li', { class: cls }, h('span', { class: 'badge' }, word), ' ', a) : h('li', null, a),
    ),
  );
}

/** A content hash, whole, in a code element that wraps. */
export function hash(s) {
  return h('code', { class: 'hash' }, s || '');
}

/** Signer key ids, or a word for none. */
export function signers(list) {
  if (!list || list.length === 0) return 'none recorded';
  return list.join(', ');
}

/** Compares two versions (numeric dot parts first, then as text): -1, 0 or 1. */
export function compareVersions(a, b) {
  const pa = String(a).split(/[.+-]/);
  const pb = String(b).split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i += 1) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x) ? Number(x) : null;
    const ny = /^\d+$/.test(y) ? Number(y) : null;
    if (nx !== null && ny !== null) {
      if (nx !== ny) return nx < ny ? -1 : 1;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}
