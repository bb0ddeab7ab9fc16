//! The gRPC form of a call (`grpcs://` endpoints): the unary method
//! `warden.extension.v1.Extension/Call` over HTTP/2 on the same pinned TLS connection, with
//! tonic's client and codec.
//!
//! ```protobuf
//! syntax = "proto3";
//! package warden.extension.v1;
//! service Extension { rpc Call(CallRequest) returns (CallReply); }
//! message CallRequest { string method = 1; bytes input = 2; }
//! message CallReply { bytes output = 1; }
//! ```
//!
//! A status other than OK that carries the trailer `warden-error-code` is the extension's
//! error with that code (as JSON-RPC's `error.data.code`); without it, `unknown`, `internal`,
//! `unavailable`, `data-loss` and `unimplemented` (what a broken answer, a proxy's error or a
//! server that cannot serve come to) are the remote's failure, and any other status is the
//! extension's error named by its code (`not-found`); its message is `grpc-message`. The answer's body is held to
//! what the call's response cap allows, frames and all, before tonic decodes it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;

use crate::{RemoteError, cut, rustls_error};

/// The path of the unary call.
pub const CALL_PATH: &str = "/warden.extension.v1.Extension/Call";
/// The path of a call with host requests (callbacks).
pub const SESSION_PATH: &str = "/warden.extension.v1.Extension/Session";

#[derive(Clone, PartialEq, prost::Message)]
pub struct CallRequest {
    #[prost(string, tag = "1")]
    pub method: String,
    #[prost(bytes = "vec", tag = "2")]
    pub input: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CallReply {
    #[prost(bytes = "vec", tag = "1")]
    pub output: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionUp {
    #[prost(oneof = "session_up::Kind", tags = "1, 2")]
    pub kind: Option<session_up::Kind>,
}

pub mod session_up {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Call(super::CallRequest),
        #[prost(message, tag = "2")]
        Answer(super::HostAnswer),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionDown {
    #[prost(oneof = "session_down::Kind", tags = "1, 2")]
    pub kind: Option<session_down::Kind>,
}

pub mod session_down {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Request(super::HostRequest),
        #[prost(message, tag = "2")]
        Reply(super::CallReply),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HostRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(string, tag = "3")]
    pub params: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HostAnswer {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub answer: String,
}

/// One HTTP/2 connection as tonic's transport, its answers' bodies capped.
pub(crate) struct Channel {
    pub(crate) sender: SendRequest<tonic::body::Body>,
    pub(crate) cap: usize,
}

type Answer = http::Response<Limited<Incoming>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = Answer;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let sent = self.sender.send_request(request);
        let cap = self.cap;
        Box::pin(async move { Ok(sent.await?.map(|b| Limited::new(b, cap))) })
    }
}

/// Calls `method` with `input` over `channel`; the output, at most `max_output` bytes.
pub(crate) async fn call(
    channel: Channel,
    origin: http::Uri,
    method: &str,
    input: &[u8],
    max_output: u64,
    bearer: Option<&str>,
) -> Result<Vec<u8>, RemoteError> {
    let limit = usize::try_from(max_output).unwrap_or(usize::MAX);
    let mut grpc = tonic::client::Grpc::with_origin(channel, origin)
        .max_decoding_message_size(limit.saturating_add(16));
    grpc.ready()
        .await
        .map_err(|e| RemoteError::Protocol(format!("the connection: {e}")))?;
    let mut request = tonic::Request::new(CallRequest {
        method: method.to_owned(),
        input: input.to_vec(),
    });
    if let Some(token) = bearer {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| RemoteError::Protocol("the claims are not a header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let codec = tonic_prost::ProstCodec::<CallRequest, CallReply>::default();
    let path = http::uri::PathAndQuery::from_static(CALL_PATH);
    match grpc.unary(request, path, codec).await {
        Ok(reply) => {
            let output = reply.into_inner().output;
            if output.len() as u64 > max_output {
                return Err(RemoteError::TooLarge { limit: max_output });
            }
            Ok(output)
        }
        Err(status) => Err(failure(&status, max_output)),
    }
}

/// Calls `method` with `input` over `channel` as a session: the host requests the server
/// sends before its reply are answered by `host` (at most `max_requests`, each taken from
/// `budget`); the output, at most `max_output` bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn session(
    channel: Channel,
    origin: http::Uri,
    method: &str,
    input: &[u8],
    max_output: u64,
    bearer: Option<&str>,
    host: &dyn warden_process::HostApi,
    (max_requests, budget): (usize, &warden_process::RequestBudget),
) -> Result<Vec<u8>, RemoteError> {
    use session_down::Kind as Down;
    use session_up::Kind as Up;
    let limit = usize::try_from(max_output).unwrap_or(usize::MAX);
    // A host request carries at most a key-value value and its key, as base64.
    let decode = limit.max(MAX_HOST_REQUEST_BYTES).saturating_add(16);
    let mut grpc =
        tonic::client::Grpc::with_origin(channel, origin).max_decoding_message_size(decode);
    grpc.ready()
        .await
        .map_err(|e| RemoteError::Protocol(format!("the connection: {e}")))?;
    let (up, rx) = tokio::sync::mpsc::channel::<SessionUp>(2);
    let call = SessionUp {
        kind: Some(Up::Call(CallRequest {
            method: method.to_owned(),
            input: input.to_vec(),
        })),
    };
    up.send(call)
        .await
        .map_err(|_| RemoteError::Protocol("the session ended before it began".into()))?;
    let outgoing =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut request = tonic::Request::new(outgoing);
    if let Some(token) = bearer {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| RemoteError::Protocol("the claims are not a header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let codec = tonic_prost::ProstCodec::<SessionUp, SessionDown>::default();
    let path = http::uri::PathAndQuery::from_static(SESSION_PATH);
    let mut inbound = grpc
        .streaming(request, path, codec)
        .await
        .map_err(|status| failure(&status, max_output))?
        .into_inner();
    let mut asked = 0usize;
    let mut spend =
        warden_process::budget::CallBudget::new(budget, warden_process::budget::FREE_PER_CALL);
    loop {
        let message = inbound
            .message()
            .await
            .map_err(|status| failure(&status, max_output))?;
        match message.and_then(|m| m.kind) {
            Some(Down::Reply(reply)) => {
                if reply.output.len() as u64 > max_output {
                    return Err(RemoteError::TooLarge { limit: max_output });
                }
                return Ok(reply.output);
            }
            Some(Down::Request(r)) => {
                asked += 1;
                if asked > max_requests {
                    return Err(RemoteError::Protocol(format!(
                        "more than {max_requests} host requests in one call"
                    )));
                }
                let size = r.method.len() + r.params.len() + r.id.len();
                if !spend.request(size) {
                    return Err(crate::over_rate(budget));
                }
                // Params that are not JSON are the request's error, as in the JSON-RPC form:
                // answered, and the call goes on.
                let outcome = if r.params.is_empty() {
                    warden_process::dispatch(host, &r.method, None).await
                } else {
                    match serde_json::value::RawValue::from_string(r.params) {
                        Ok(p) => warden_process::dispatch(host, &r.method, Some(&p)).await,
                        Err(_) => Err(warden_process::HostError::invalid_params(
                            "the params are not JSON",
                        )),
                    }
                };
                let id = serde_json::Value::String(r.id.clone());
                let answer = String::from_utf8(crate::jsonrpc::host_answer(&id, &outcome))
                    .unwrap_or_default();
                spend.answered(answer.len());
                let sent = up
                    .send(SessionUp {
                        kind: Some(Up::Answer(HostAnswer { id: r.id, answer })),
                    })
                    .await;
                if sent.is_err() {
                    return Err(RemoteError::Protocol(
                        "the server ended the session it asked something of".into(),
                    ));
                }
            }
            None => {
                return Err(RemoteError::Protocol(
                    "the session ended without a reply".into(),
                ));
            }
        }
    }
}

/// The largest host request message read: a key-value value at its largest (1 MiB by
/// default) as base64, with its key and the rest.
const MAX_HOST_REQUEST_BYTES: usize = 4 << 20;

/// What a status means: a failure of this side (the cap, TLS, the connection) or the
/// extension's own error.
fn failure(status: &tonic::Status, max_output: u64) -> RemoteError {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return RemoteError::TooLarge { limit: max_output };
        }
        if let Some(r) = rustls_error(e) {
            return crate::from_rustls(r);
        }
        next = e.source();
    }
    if std::error::Error::source(status).is_some() {
        return RemoteError::Protocol(cut(status.message()));
    }
    if status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .contains("decoded message length too large")
    {
        return RemoteError::TooLarge { limit: max_output };
    }
    let own = status
        .metadata()
        .get("warden-error-code")
        .and_then(|v| v.to_str().ok())
        .map(|c| c.chars().take(64).collect::<String>());
    match (own, status.code()) {
        (Some(code), _) => RemoteError::Extension {
            code,
            message: cut(status.message()),
        },
        // What tonic makes of an answer that is not one (an HTTP error from a proxy, missing
        // or unreadable trailers, a broken message, a stream reset), and what a server says
        // when it cannot serve at all: the remote failed, as a JSON-RPC answer that is not one.
        (
            None,
            tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
            | tonic::Code::Unimplemented,
        ) => RemoteError::Protocol(format!(
            "gRPC status {}: {}",
            code_name(status.code()),
            cut(status.message())
        )),
        (None, code) => RemoteError::Extension {
            code: code_name(code),
            message: cut(status.message()),
        },
    }
}

/// `NotFound` → `not-found`.
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
