// {{name}}: an rpc extension in JavaScript. componentize-js maps the world's export
// `warden:extension/handler` (see wit/world.wit) to `handler` below: `call` gets the method name
// and the input bytes (a Uint8Array) and returns bytes (`async` allowed); a thrown
// `{code, message}` is the call's error. Every method must also be listed in extension.toml.
//
// - `greet`: the input is `{"name": "..."}`, a JSON string or plain text; the answer is
//   `{"greeting":"Hello, NAME!"}`.
// - anything else: the error `not-found`.

export const handler = {
  call(method, input) {
    if (method === 'greet') return greet(input);
    fail('not-found', `no method "${method}"`);
  },
};

function fail(code, message) {
  throw { code, message };
}

function greet(input) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(input).trim();
  } catch {
    fail('bad-input', 'input must be UTF-8');
  }
  let name = text === '' ? 'world' : text;
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (typeof value === 'string') {
    name = value;
  } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    if (typeof value.name !== 'string') fail('bad-input', 'expected {"name": "..."}');
    name = value.name;
  }
  return new TextEncoder().encode(JSON.stringify({ greeting: `Hello, ${name}!` }));
}
