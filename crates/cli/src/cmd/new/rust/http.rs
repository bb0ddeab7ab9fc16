//! {{name}}: an http extension. It exports the standard `wasi:http/incoming-handler`, so the
//! same component runs under warden (`warden run --http "GET /x"`, `warden serve`) and under
//! `wasmtime serve` unchanged.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Extension);

struct Extension;

impl wasip2::exports::http::incoming_handler::Guest for Extension {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let headers = Fields::new();
        // The header is a constant here, so this cannot fail.
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut out) = body.write() {
            let _ = writeln!(out, "Hello from {{name}}! You asked for {path}");
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
