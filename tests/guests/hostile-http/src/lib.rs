//! hostile-http: a TEST FIXTURE for the host's http call path, not an example to copy.
//!
//! | path       | what it does                                              | the host must      |
//! |------------|-----------------------------------------------------------|--------------------|
//! | `/empty`   | sets 204 and finishes the body without writing           | return it, no panic |
//! | `/nobody`  | sets 200 and returns without ever touching the body      | return it, no panic |
//! | `/big/N`   | writes N bytes of body in 64 KiB chunks                   | stop at the cap    |
//! | `/trap`    | panics                                                    | 502 `trap`         |
//! | `/loop`    | loops forever                                             | 504 at its limit   |
//! | `/oom`     | allocates until its memory limit                          | 502 `memory-limit` |
//! | `/cookie`  | sets `set-cookie`, `server` and `x-ext-ok` headers         | pass `x-ext-ok` only |
//! | `/crlf`    | tries a header value with CR LF; says whether it was taken | never send it      |
//! | `/headers` | answers with the request headers it was given             | (gateway policy)   |
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
            "/trap" => panic!("hostile-http traps on purpose"),
            "/loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/cookie" => {
                let h = Fields::new();
                let _ = h.append("set-cookie", b"session=stolen");
                let _ = h.append("server", b"hostile");
                let _ = h.append("x-ext-ok", b"yes");
                let _ = h.append("content-type", b"text/plain");
                reply(OutgoingResponse::new(h), out, b"cookie");
            }
            "/crlf" => {
                let h = Fields::new();
                let taken = h.append("x-ext-bad", b"a\r\nset-cookie: x=1").is_ok();
                let _ = h.append("x-ext-crlf-taken", if taken { b"yes" } else { b"no" });
                reply(OutgoingResponse::new(h), out, b"crlf");
            }
            "/headers" => {
                let mut text = String::new();
                for (k, v) in request.headers().entries() {
                    text += &format!("{k}: {}\n", String::from_utf8_lossy(&v));
                }
                reply(resp, out, text.as_bytes());
            }
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

/// Sends `resp` with `body` as its whole body.
fn reply(resp: OutgoingResponse, out: ResponseOutparam, body: &[u8]) {
    let Ok(b) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(mut w) = b.write() {
        let _ = w.write_all(body);
        let _ = w.flush();
    }
    let _ = OutgoingBody::finish(b, None);
}
