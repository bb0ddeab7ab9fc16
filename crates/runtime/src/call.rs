//! One call: a fresh Store and instance from the pre-linked component, limits applied, output
//! captured, and a report of what it used. Nothing survives the call.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use warden_manifest::Limits;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use warden_call::{CallError, CallOutcome, CallReport, Ledger, Stream};

use crate::caps::CallCaps;
use crate::capture::Capture;
use crate::engine::Runtime;
use crate::fair::fairly;
use crate::prepared::{Prepared, World};
use crate::state::CallState;

pub use crate::capture::MAX_OUTPUT_BYTES;
use crate::capture::captured;
pub(crate) use crate::outcome::{UNMETERED_FUEL, failed};

/// A store for one call, and the handles to read what it did afterwards.
struct Call {
    store: Store<CallState>,
    stdout: Capture,
    stderr: Capture,
    ledger: Ledger,
    started: Instant,
    fuel: Option<u64>,
    limits: Limits,
}

impl Call {
    fn new(rt: &Runtime, limits: &Limits, caps: &CallCaps) -> Result<Call, CallError> {
        let stdout = Capture::new(MAX_OUTPUT_BYTES);
        let stderr = Capture::new(MAX_OUTPUT_BYTES);
        let ledger = caps.ledger.clone();
        let state = CallState::new(
            &stdout,
            &stderr,
            limits.max_memory.bytes(),
            limits.max_response_bytes.bytes(),
            caps,
            ledger.clone(),
        )
        .map_err(CallError::Host)?;
        let mut store = Store::new(rt.engine(), state);
        store.limiter(|s| &mut s.budget);
        let fuel = limits.max_fuel.map(|f| f.get());
        store
            .set_fuel(fuel.unwrap_or(UNMETERED_FUEL))
            .map_err(|e| CallError::host_caused("setting the fuel", e.into_boxed_dyn_error()))?;
        // Wall-clock deadline checked at every epoch tick; between ticks the guest yields so a
        // busy guest never holds an executor thread, and other calls' deadlines are their own.
        let started = Instant::now();
        let deadline = started + limits.max_execution_time;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(Call {
            store,
            stdout,
            stderr,
            ledger,
            started,
            fuel,
            limits: *limits,
        })
    }

    /// Turns a Wasmtime error into what happened, using what the store saw.
    fn classify(&self, e: &wasmtime::Error) -> CallError {
        if self.store.data().budget.limit_hit() {
            return CallError::MemoryLimit(self.limits.max_memory);
        }
        // `exit(N)` (`wasi:cli/exit`): the guest ended itself before answering. Said as such,
        // with its status, not as a trap with a backtrace.
        if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return CallError::Extension {
                code: "exit".into(),
                message: format!(
                    "the extension exited with status {} before returning a result",
                    exit.0
                ),
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.max_execution_time),
            Some(Trap::OutOfFuel) => CallError::FuelExhausted(self.fuel.unwrap_or(0)),
            Some(t) => CallError::Trap(t.to_string()),
            None if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
                CallError::Busy("no free instance slot".into())
            }
            None => CallError::Trap(format!("{e:#}")),
        }
    }

    /// The outcome to hand back: the error redacted like the report.
    fn finish<T>(self, result: Result<T, CallError>) -> CallOutcome<T> {
        let result = result.map_err(|e| self.store.data().redactor.error(e));
        CallOutcome {
            result,
            report: self.report(),
        }
    }

    fn report(self) -> CallReport {
        let fuel = self.fuel.and_then(|given| {
            let left = self.store.get_fuel().ok()?;
            Some(given.saturating_sub(left))
        });
        // Secret values handed to the guest never leave the runtime: see `crate::redact`.
        let redactor = &self.store.data().redactor;
        let mut logs = captured(Stream::Stdout, &self.stdout, redactor);
        logs.extend(captured(Stream::Stderr, &self.stderr, redactor));
        logs.extend(self.store.data().logs.lines(redactor));
        let (denials, uses, limits) = self.ledger.report(redactor);
        CallReport {
            duration: self.started.elapsed(),
            fuel,
            memory_peak: self.store.data().budget.peak(),
            memory_limit_hit: self.store.data().budget.limit_hit(),
            egress_bytes: self.store.data().egress_bytes(),
            logs,
            denials,
            uses,
            limits,
        }
    }
}

fn too_large(what: &'static str, size: usize, limit: warden_manifest::ByteSize) -> CallError {
    CallError::TooLarge {
        what,
        size: size as u64,
        limit,
    }
}

impl Prepared {
    /// Calls `handler.call(method, input)` in a fresh instance, with `caps` as its capabilities.
    pub async fn call_rpc(
        &self,
        rt: &Runtime,
        limits: &Limits,
        caps: &CallCaps,
        method: &str,
        input: &[u8],
    ) -> CallOutcome<Vec<u8>> {
        let started = Instant::now();
        let pre = match &self.world {
            World::Rpc(pre) => pre,
            World::Extism(plugin) => {
                return plugin.call_rpc(rt, limits, caps, method, input).await;
            }
            World::Http(_) => {
                return failed(
                    started,
                    CallError::Invalid("this is an http extension; send it an HTTP request".into()),
                );
            }
        };
        if input.len() as u64 > limits.max_request_bytes.bytes() {
            return failed(
                started,
                too_large("input", input.len(), limits.max_request_bytes),
            );
        }
        let mut call = match Call::new(rt, limits, caps) {
            Ok(c) => c,
            Err(e) => return failed(started, e),
        };
        let run = async {
            let instance = pre.instantiate_async(&mut call.store).await?;
            instance
                .warden_extension_handler()
                .call_call(&mut call.store, method, input)
                .await
        };
        // Epochs stop a busy guest; this stops one blocked in a host call (sleep, poll, I/O).
        let ran =
            tokio::time::timeout(limits.max_execution_time, fairly(caps.share.as_ref(), run)).await;
        let result = match ran {
            Err(_elapsed) => Err(CallError::Timeout(limits.max_execution_time)),
            Ok(Err(e)) => Err(call.classify(&e)),
            Ok(Ok(Err(guest))) => Err(CallError::Extension {
                code: guest.code,
                message: guest.message,
            }),
            Ok(Ok(Ok(out))) if out.len() as u64 > limits.max_response_bytes.bytes() => {
                Err(too_large("result", out.len(), limits.max_response_bytes))
            }
            Ok(Ok(Ok(out))) => Ok(out),
        };
        call.finish(result)
    }

    /// Sends one HTTP request to `wasi:http/incoming-handler` in a fresh instance, with `caps`
    /// as its capabilities.
    pub async fn call_http(
        &self,
        rt: &Runtime,
        limits: &Limits,
        caps: &CallCaps,
        request: http::Request<Bytes>,
    ) -> CallOutcome<http::Response<Bytes>> {
        let started = Instant::now();
        let World::Http(pre) = &self.world else {
            return failed(
                started,
                CallError::Invalid("this is an rpc extension; call a method".into()),
            );
        };
        if request.body().len() as u64 > limits.max_request_bytes.bytes() {
            return failed(
                started,
                too_large(
                    "request body",
                    request.body().len(),
                    limits.max_request_bytes,
                ),
            );
        }
        let mut call = match Call::new(rt, limits, caps) {
            Ok(c) => c,
            Err(e) => return failed(started, e),
        };
        let max_response = limits.max_response_bytes;
        let ran = tokio::time::timeout(
            limits.max_execution_time,
            fairly(
                caps.share.as_ref(),
                serve(pre, &mut call.store, request, max_response),
            ),
        )
        .await;
        let result = match ran {
            Err(_elapsed) => Err(CallError::Timeout(limits.max_execution_time)),
            Ok(Err(Failure::Wasm(e))) => Err(call.classify(&e)),
            Ok(Err(Failure::Call(e))) => Err(e),
            Ok(Ok(resp)) => Ok(resp),
        };
        call.finish(result)
    }
}

enum Failure {
    Wasm(wasmtime::Error),
    Call(CallError),
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        Failure::Wasm(e)
    }
}

async fn serve(
    pre: &ProxyPre<CallState>,
    store: &mut Store<CallState>,
    request: http::Request<Bytes>,
    max_response: warden_manifest::ByteSize,
) -> Result<http::Response<Bytes>, Failure> {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let mut request = request.map(Full::new);
    // wasi:http needs an authority; requests from the CLI or gateway carry only a path.
    if request.uri().authority().is_none() && !request.headers().contains_key(http::header::HOST) {
        request.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
    }
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(tx)?;
    let proxy = pre.instantiate_async(&mut *store).await?;
    let guest = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, req, out);
    tokio::pin!(guest);
    // The guest may set the response and keep writing the body, or finish (with or without a
    // response) before the head is read. A finished guest future is never polled again.
    let mut guest_done = false;
    let head = tokio::select! {
        head = &mut rx => Some(head),
        done = &mut guest => {
            done?;
            guest_done = true;
            None
        }
    };
    let head = match head {
        Some(h) => h,
        None => Ok(rx.try_recv().map_err(|_| {
            Failure::Call(CallError::Invalid(
                "the extension returned without setting a response".into(),
            ))
        })?),
    };
    let response = match head {
        Ok(Ok(resp)) => resp,
        Ok(Err(code)) => {
            return Err(Failure::Call(CallError::Extension {
                code: "http-error".into(),
                message: format!("{code:?}"),
            }));
        }
        Err(_) => {
            return Err(Failure::Call(CallError::Invalid(
                "the extension dropped its response without setting it".into(),
            )));
        }
    };
    let (parts, body) = response.into_parts();
    let limit = usize::try_from(max_response.bytes()).unwrap_or(usize::MAX);
    let collect = Limited::new(body, limit).collect();
    tokio::pin!(collect);
    // Read the body while the guest writes it. A body over the cap ends the call at once (the
    // guest is dropped), rather than when the guest gives up or the deadline passes.
    let body = loop {
        tokio::select! {
            body = &mut collect => {
                let body = body.map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        Failure::Call(CallError::TooLarge {
                            what: "response body",
                            size: max_response.bytes().saturating_add(1),
                            limit: max_response,
                        })
                    } else {
                        Failure::Call(CallError::Trap(format!("response body: {e}")))
                    }
                })?;
                if !guest_done {
                    guest.as_mut().await?;
                }
                break body;
            }
            done = &mut guest, if !guest_done => {
                done?;
                guest_done = true;
            }
        }
    };
    Ok(http::Response::from_parts(parts, body.to_bytes()))
}
