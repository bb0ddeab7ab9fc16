//! One call: a fresh Store and instance from the pre-linked component (or, where the operator's
//! policy keeps instances of this install, one kept from its earlier calls: `crate::warm`),
//! limits applied, output captured, and a report of what it used. Unless kept, nothing
//! survives the call.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use warden_manifest::Limits;
use wasmtime::{PoolConcurrencyLimitError, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use warden_call::{CallError, CallOutcome, CallReport, Ledger, Stream};

use crate::caps::CallCaps;
use crate::engine::Runtime;
use crate::fair::fairly;
use crate::live::{Bound, Live};
use crate::prepared::{Prepared, World};
use crate::state::CallState;
use crate::warm::WarmInstances;

pub use crate::capture::MAX_OUTPUT_BYTES;
use crate::capture::captured;
pub(crate) use crate::outcome::{UNMETERED_FUEL, failed};

/// Hands a kept instance's ledger entries to the call's ledger, also when the call is
/// dropped part-way (its caller went away), so the host still records what it did.
struct Handover {
    from: Ledger,
    to: Ledger,
}

impl Drop for Handover {
    fn drop(&mut self) {
        self.from.move_into(&self.to);
    }
}

/// One call on a [`Live`] store, and the handles to read what it did afterwards.
struct Call {
    live: Live,
    handover: Handover,
    started: Instant,
    fuel: Option<u64>,
    limits: Limits,
    /// Whether the call ended so that its instance may answer another (set by the call path).
    clean: bool,
    /// Whether the install keeps instances (else nothing about keeping is checked).
    warm: bool,
}

impl Call {
    /// A call on `kept` (an instance kept from earlier calls of this install), or on a new
    /// store: with a ledger of its own when it may be kept (`warm`), else the call's. Its
    /// time counts from `started`. `sends_http`: [`Prepared::sends_http`].
    fn new(
        started: Instant,
        rt: &Runtime,
        (limits, caps): (&Limits, &CallCaps),
        kept: Option<Live>,
        warm: bool,
        sends_http: bool,
    ) -> Result<Call, CallError> {
        let live = match kept {
            Some(mut live) => {
                live.renew(caps);
                live
            }
            None => {
                let ledger = if warm {
                    Ledger::default()
                } else {
                    caps.ledger.clone()
                };
                Live::new(rt, (limits, caps), ledger, sends_http)?
            }
        };
        // A kept instance's own ledger asks this call's witness (the handover below clears it).
        live.ledger.witness_as(&caps.ledger);
        let mut call = Call {
            handover: Handover {
                from: live.ledger.clone(),
                to: caps.ledger.clone(),
            },
            live,
            started,
            fuel: limits.max_fuel.map(|f| f.get()),
            limits: *limits,
            clean: false,
            warm,
        };
        let store = &mut call.live.store;
        store
            .set_fuel(call.fuel.unwrap_or(UNMETERED_FUEL))
            .map_err(|e| CallError::host_caused("setting the fuel", e.into_boxed_dyn_error()))?;
        // Wall-clock deadline checked at every epoch tick; between ticks the guest yields so a
        // busy guest never holds an executor thread, and other calls' deadlines are their own.
        // The deadline lives in the store: a callback that captures nothing is not allocated.
        store.data_mut().deadline = Some(started + limits.max_execution_time);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|cx| match cx.data().deadline {
            Some(deadline) if Instant::now() < deadline => Ok(UpdateDeadline::Yield(1)),
            _ => Ok(UpdateDeadline::Interrupt),
        });
        Ok(call)
    }

    /// When the call must have ended: the epochs' deadline, also for a guest blocked in a host
    /// call. Made from the call's start rather than read from the clock again.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started + self.limits.max_execution_time)
    }

    /// Turns a Wasmtime error into what happened, using what the store saw.
    fn classify(&self, e: &wasmtime::Error) -> CallError {
        if self.live.store.data().budget.limit_hit() {
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

    /// The outcome to hand back; the instance goes back to `warm` when it may be kept.
    fn end<T>(
        self,
        result: Result<T, CallError>,
        rt: &Runtime,
        warm: Option<&WarmInstances>,
    ) -> CallOutcome<T> {
        let (outcome, live) = self.finish(result);
        if let (Some(warm), Some(live)) = (warm, live) {
            warm.put(rt, live);
        }
        outcome
    }

    /// The outcome to hand back (the error redacted like the report), and the instance when
    /// the call ended cleanly, for a warm pool to keep.
    fn finish<T>(mut self, result: Result<T, CallError>) -> (CallOutcome<T>, Option<Live>) {
        let result = result.map_err(|e| self.live.store.data().redactor.error(e));
        let report = self.report();
        let Call {
            live, clean, warm, ..
        } = self;
        if !(warm && clean) {
            return (CallOutcome { result, report }, None);
        }
        let mut live = live;
        live.seen.absorb(&live.store.data().redactor);
        live.served = live.served.saturating_add(1);
        let keep = live.reusable();
        (CallOutcome { result, report }, keep.then_some(live))
    }

    fn report(&mut self) -> CallReport {
        let store = &self.live.store;
        let fuel = self.fuel.and_then(|given| {
            let left = store.get_fuel().ok()?;
            Some(given.saturating_sub(left))
        });
        // Secret values handed to the guest never leave the runtime: see `crate::redact`.
        let redactor = &store.data().redactor;
        let mut logs = captured(Stream::Stdout, &self.live.stdout, redactor);
        logs.extend(captured(Stream::Stderr, &self.live.stderr, redactor));
        logs.extend(store.data().logs.lines(redactor));
        self.handover.from.move_into(&self.handover.to);
        let (denials, uses, limits) = self.handover.to.report(redactor);
        CallReport {
            duration: self.started.elapsed(),
            fuel,
            memory_peak: store.data().budget.peak(),
            memory_limit_hit: store.data().budget.limit_hit(),
            egress_bytes: store.data().egress_bytes(),
            earlier_calls: self.live.served,
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
    /// A call on an instance kept in `warm`, or on a new store.
    fn call_on(
        &self,
        started: Instant,
        rt: &Runtime,
        (limits, caps): (&Limits, &CallCaps),
        warm: Option<&WarmInstances>,
    ) -> Result<Call, CallError> {
        let kept = warm.and_then(|w| w.take(caps.generation));
        Call::new(
            started,
            rt,
            (limits, caps),
            kept,
            warm.is_some(),
            self.sends_http,
        )
    }

    /// Calls `handler.call(method, input)` with `caps` as its capabilities: in a fresh
    /// instance, or in one `warm` kept from an earlier call of the same install.
    pub async fn call_rpc(
        &self,
        rt: &Runtime,
        limits: &Limits,
        caps: &CallCaps,
        warm: Option<&WarmInstances>,
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
        let mut call = match self.call_on(started, rt, (limits, caps), warm) {
            Ok(c) => c,
            Err(e) => return failed(started, e),
        };
        let deadline = call.deadline();
        // Pinned where it is made: the future holds Wasmtime's instantiation and call (some
        // kilobytes), and each wrapper below would otherwise copy it whole, on every call.
        // Dropped at the end of the block, which ends its borrow of the store.
        let ran = {
            let live = &mut call.live;
            let run = std::pin::pin!(async {
                if live.bound.is_none() {
                    let ext = pre.instantiate_async(&mut live.store).await?;
                    live.bound = Some(Bound::Rpc(ext));
                }
                let Some(Bound::Rpc(ext)) = &live.bound else {
                    return Err(wasmtime::Error::msg(
                        "an http instance kept for an rpc call",
                    ));
                };
                ext.warden_extension_handler()
                    .call_call(&mut live.store, method, input)
                    .await
            });
            // Epochs stop a busy guest; this stops one blocked in a host call (sleep, poll, I/O).
            tokio::time::timeout_at(deadline, fairly(caps.share(), run)).await
        };
        let result = match ran {
            Err(_elapsed) => Err(CallError::Timeout(limits.max_execution_time)),
            Ok(Err(e)) => Err(call.classify(&e)),
            Ok(Ok(Err(guest))) => {
                // The guest answered with an error of its own: it ended cleanly.
                call.clean = true;
                Err(CallError::Extension {
                    code: guest.code,
                    message: guest.message,
                })
            }
            Ok(Ok(Ok(out))) if out.len() as u64 > limits.max_response_bytes.bytes() => {
                Err(too_large("result", out.len(), limits.max_response_bytes))
            }
            Ok(Ok(Ok(out))) => {
                call.clean = true;
                Ok(out)
            }
        };
        call.end(result, rt, warm)
    }

    /// Sends one HTTP request to `wasi:http/incoming-handler` with `caps` as its capabilities:
    /// in a fresh instance, or in one `warm` kept from an earlier call of the same install.
    pub async fn call_http(
        &self,
        rt: &Runtime,
        limits: &Limits,
        caps: &CallCaps,
        warm: Option<&WarmInstances>,
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
        let mut call = match self.call_on(started, rt, (limits, caps), warm) {
            Ok(c) => c,
            Err(e) => return failed(started, e),
        };
        let max_response = limits.max_response_bytes;
        let deadline = call.deadline();
        let ran = {
            // Pinned where it is made (see `call_rpc`).
            let serving = std::pin::pin!(serve(pre, &mut call.live, request, max_response));
            tokio::time::timeout_at(deadline, fairly(caps.share(), serving)).await
        };
        let result = match ran {
            Err(_elapsed) => Err(CallError::Timeout(limits.max_execution_time)),
            Ok(Err(Failure::Wasm(e))) => Err(call.classify(&e)),
            Ok(Err(Failure::Call(e))) => Err(e),
            Ok(Ok(resp)) => {
                call.clean = true;
                Ok(resp)
            }
        };
        call.end(result, rt, warm)
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
    live: &mut Live,
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
    let store = &mut live.store;
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(tx)?;
    if live.bound.is_none() {
        let proxy = pre.instantiate_async(&mut *store).await?;
        live.bound = Some(Bound::Http(proxy));
    }
    let Some(Bound::Http(proxy)) = &live.bound else {
        return Err(Failure::Wasm(wasmtime::Error::msg(
            "an rpc instance kept for an http call",
        )));
    };
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
