// A tiny element builder. Data only ever becomes text nodes and attribute values: nothing here
// parses HTML (no markup is ever made from a string), so text from an audit record or a manifest
// cannot become markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

// Characters that change how text is displayed without being seen: C0 and C1 controls, DEL,
// zero-width characters and marks, the line and paragraph separators, the bidi embeddings,
// overrides and isolates, the Arabic letter mark, invisible operators and the BOM.
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/gu;

/** `text` with every invisible or reordering character replaced by a visible `\u{..}` marker, so
 * a value can never visually lie (the audit log's own escaping, again, in the browser). */
export function visible(text) {
  if (text === null || text === undefined) return '';
  return String(text).replace(INVISIBLE, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(visible(c)));
  }
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === 'text') {
      el.textContent = visible(v);
    } else if (/^on/i.test(k) || k === 'style' || k === 'srcdoc') {
      throw new Error(`dom: refusing attribute ${k}`);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

/** An HTML element: `h('td', {class: 'x'}, 'text', child, [more])`. Strings become text nodes
 * (through `visible`); `on: {click: fn}` adds listeners. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, the same way. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Replaces `el`'s children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
/** A fresh element id (for `for`/`aria-describedby`). */
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form control: `field('Tenant', h('select', ...))` → a wrapper with label + control. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid('f');
  const parts = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hid = uid('hint');
    control.setAttribute('aria-describedby', hid);
    parts.push(h('span', { id: hid, class: 'hint' }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

/** A `<dl>` from [term, description] pairs (null descriptions are skipped). */
export function dl(pairs, cls) {
  return h(
    'dl',
    { class: cls || 'facts' },
    pairs.filter(([, d]) => d !== null && d !== undefined).map(([t, d]) => [h('dt', null, t), h('dd', null, d)]),
  );
}

/** Seconds since the epoch as an ISO time (UTC), or '' for none. */
export function when(unix) {
  if (unix === null || unix === undefined || unix === '') return '';
  const d = new Date(Number(unix) * 1000);
  return Number.isNaN(d.getTime()) ? String(unix) : d.toISOString().replace('.000Z', 'Z');
}

/** A byte count in binary units. */
export function bytes(n) {
  if (n === null || n === undefined) return 'none';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1 && Number.isInteger(v / 1024)) {
    v /= 1024;
    i += 1;
  }
  return `${v} ${units[i]}`;
}
