"""{{name}}: an http extension in Python. It exports the standard `wasi:http/incoming-handler`,
so the same component runs under warden (`warden run --http "GET /x"`, `warden serve`) and
under `wasmtime serve`."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        headers = Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        response = OutgoingResponse(headers)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(
                f"Hello from {{name}}! You asked for {path}\n".encode()
            )
        OutgoingBody.finish(body, None)
