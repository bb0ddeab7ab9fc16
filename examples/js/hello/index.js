// hello in JavaScript: the smallest http extension, in the fetch-event style of service
// workers. componentize-js turns `addEventListener('fetch')` into the standard
// `wasi:http/incoming-handler` export.

addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  event.respondWith(
    new Response(`Hello from warden, in JavaScript! You asked for ${url.pathname}${url.search}\n`, {
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    }),
  );
});
