// {{name}}: an http extension in JavaScript, in the fetch-event style of service workers.
// componentize-js turns `addEventListener('fetch')` into the standard
// `wasi:http/incoming-handler` export, so the same component runs under warden
// (`warden run --http "GET /x"`, `warden serve`) and under `wasmtime serve`.

addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  event.respondWith(
    new Response(`Hello from {{name}}! You asked for ${url.pathname}${url.search}\n`, {
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    }),
  );
});
