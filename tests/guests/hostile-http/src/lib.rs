//! hostile-http: a TEST FIXTURE for the host's http call path, not an example to copy.
//!
//! | path       | what it does                                              | the host must      |
//! |------------|-----------------------------------------------------------|--------------------|
//! | `/empty`   | sets 204 and finishes the body without writing           | return it, no panic |
//! | `/nobody`  | sets 200 and returns without ever touching the body      | return it, no panic |
//! | `/big/N`   | writes N bytes of body in 64 KiB chunks                   | stop at the cap    |
//! | other      | a short text body                                         | return it          |

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(HostileHttp);

struct HostileHttp;

impl wasip2::exports::http::incoming_handler::Guest for HostileHttp {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let resp = OutgoingResponse::new(Fields::new());
        match path.as_str() {
            "/empty" => {
                let _ = resp.set_status_code(204);
                let Ok(body) = resp.body() else { return };
                ResponseOutparam::set(out, Ok(resp));
                let _ = OutgoingBody::finish(body, None);
            }
            "/nobody" => ResponseOutparam::set(out, Ok(resp)),
            p if p.starts_with("/big/") => {
                let n: usize = p["/big/".len()..].parse().unwrap_or(0);
                let Ok(body) = resp.body() else { return };
                ResponseOutparam::set(out, Ok(resp));
                if let Ok(mut w) = body.write() {
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(chunk.len());
                        if w.write_all(&chunk[..k]).is_err() {
                            break;
                        }
                        left -= k;
                    }
                    let _ = w.flush();
                }
                let _ = OutgoingBody::finish(body, None);
            }
            _ => {
                let Ok(body) = resp.body() else { return };
                ResponseOutparam::set(out, Ok(resp));
                if let Ok(mut w) = body.write() {
                    let _ = w.write_all(b"fine");
                    let _ = w.flush();
                }
                let _ = OutgoingBody::finish(body, None);
            }
        }
    }
}
