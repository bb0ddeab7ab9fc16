// hello in JavaScript, exporting `wasi:http/incoming-handler` itself instead of the fetch-event
// style of examples/js/hello. Same answer; the difference is what an instance can do twice:
// componentize-js's fetch event cannot be dispatched again in the same instance
// (StarlingMonkey issue 247), this handler can. So this is the style for an extension the
// operator keeps warm (`[policy.component] warm_calls`); a fresh instance per call (the
// default) starts faster with the fetch-event style.
import { Fields, OutgoingBody, OutgoingResponse, ResponseOutparam } from 'wasi:http/types@0.2.10';

const encoder = new TextEncoder();

export const incomingHandler = {
  handle(request, responseOut) {
    const path = request.pathWithQuery() ?? '/';
    const headers = Fields.fromList([['content-type', encoder.encode('text/plain; charset=utf-8')]]);
    const response = new OutgoingResponse(headers);
    response.setStatusCode(200);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(
      encoder.encode(`Hello from warden, in JavaScript! You asked for ${path}\n`),
    );
    // The body can be finished only once its stream is gone.
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
