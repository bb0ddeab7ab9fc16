//! hello: the smallest http-extension. It exports the standard `wasi:http/incoming-handler`,
//! so the same component runs under `wasmtime serve` and under warden unchanged.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let headers = Fields::new();
        // Header values are constants here, so these cannot fail.
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let resp = OutgoingResponse::new(headers);
        let Ok(body) = resp.body() else { return };
        ResponseOutparam::set(response_out, Ok(resp));
        if let Ok(mut out) = body.write() {
            let _ = writeln!(out, "Hello from warden! You asked for {path}");
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
