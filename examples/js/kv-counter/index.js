// kv-counter in JavaScript: the same extension as examples/kv-counter (Rust), with the same
// outputs and the same errors (codes and messages).
//
// Methods (plain-text input and output):
// - `increment`: input `NAME` or `NAME DELTA` (default delta 1; empty name = `hits`); returns
//   the new value (`wasi:keyvalue/atomics`, so concurrent calls never lose a count).
// - `get`: input `NAME`; returns the value (`0` if never incremented).
// - `ping`: input an `http://` or `https://` URL; GETs it and returns the response status.
//
// componentize-js maps the world's export `warden:extension/handler` to the `handler` object
// below; a thrown `{code, message}` becomes the call's `call-error`. An import's error arrives
// as a thrown value whose `payload` is the WIT error (`{tag, val}`).

import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';
import { handle } from 'wasi:http/outgoing-handler@0.2.10';
import { Fields, OutgoingRequest } from 'wasi:http/types@0.2.10';

const U64_MAX = (1n << 64n) - 1n;

function fail(code, message) {
  throw { code, message };
}

export const handler = {
  call(method, input) {
    // The method is looked at first, so an unknown one is `not-found` whatever the input.
    if (method === 'increment' || method === 'get') return count(method, input);
    if (method === 'ping') return ping(input);
    fail('not-found', `no method "${method}"`);
  },
};

function text(input) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(input);
  } catch {
    return null;
  }
}

function count(method, input) {
  const s = text(input);
  if (s === null) fail('bad-input', 'input must be UTF-8');
  const parts = s.split(/\s+/).filter((p) => p.length > 0);
  const name = parts[0] ?? 'hits';
  let delta = 1n;
  if (method === 'increment' && parts.length > 1) {
    if (!/^[0-9]+$/.test(parts[1]) || BigInt(parts[1]) > U64_MAX) fail('bad-input', 'delta must be a u64');
    delta = BigInt(parts[1]);
  }
  let value;
  try {
    const bucket = open('default');
    if (method === 'increment') {
      value = increment(bucket, name, delta);
    } else {
      const raw = bucket.get(name);
      if (raw === undefined) {
        value = 0n;
      } else {
        const v = text(raw);
        if (v === null || !/^[0-9]+$/.test(v)) fail('corrupt', 'the counter is not a number');
        value = BigInt(v);
      }
    }
  } catch (e) {
    kvError(e);
  }
  return new TextEncoder().encode(String(value));
}

function kvError(e) {
  const tag = e?.payload?.tag;
  if (tag === 'access-denied') fail('denied', 'key-value access is not granted');
  if (tag === 'no-such-store') fail('kv', 'no such store');
  if (tag === 'other') fail('kv', String(e.payload.val));
  throw e; // one of ours (`fail`), or a bug: not an error of the store
}

// Only a plain subset of URLs is taken, the same as the Rust version's `split_url`, so every
// version refuses exactly the same inputs.
const URL_RE = /^(https?):\/\/([A-Za-z0-9.-]+)(?::([0-9]+))?(\/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*)?$/;

// `ping` uses `wasi:http/outgoing-handler` itself rather than `fetch`: a refused `fetch` is a
// generic `Error` in componentize-js 0.23 ("An error occurred while using the host API"), and
// this extension answers `denied` for a refusal and `fetch` for a failure, as its Rust twin.
function ping(input) {
  const s = text(input);
  const m = s === null ? null : URL_RE.exec(s.trim());
  if (m === null || (m[3] !== undefined && Number(m[3]) > 65535)) {
    fail('bad-input', 'input must be an http or https URL');
  }
  const request = new OutgoingRequest(new Fields());
  request.setScheme(m[1] === 'https' ? { tag: 'HTTPS' } : { tag: 'HTTP' });
  request.setAuthority(m[3] === undefined ? m[2] : `${m[2]}:${m[3]}`);
  request.setPathWithQuery(m[4] ?? '/');
  let future;
  try {
    future = handle(request, undefined);
  } catch (e) {
    httpError(e?.payload);
  }
  future.subscribe().block();
  // option<result<result<incoming-response, error-code>>>
  const got = future.get();
  if (got?.tag === 'ok' && got.val?.tag === 'ok') {
    return new TextEncoder().encode(String(got.val.val.status()));
  }
  httpError(got?.tag === 'ok' && got.val?.tag === 'err' ? got.val.val : undefined);
}

// Fixed messages: the details (a DNS error, a TLS alert) differ between HTTP stacks, the
// category does not.
function httpError(code) {
  if (code?.tag === 'HTTP-request-denied') fail('denied', 'the host refused the request');
  fail('fetch', 'the request failed');
}
