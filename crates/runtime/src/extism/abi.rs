//! The `extism:host/env` functions (Extism's host ABI, 1.x; see
//! `docs/design/extism/abi.md`), linked once per engine and answered from the call's own
//! [`ExtismState`]: its arena (Extism memory), input, output, error, vars, config (the granted
//! secrets, through the components' [`SecretsView`]), logs (the components' capture) and
//! `http_request` (the components' egress hooks, `super::http`).
//!
//! Every handle from the plug-in is checked: loads and stores out of bounds read 0 and do
//! nothing, as Extism's kernel does; a host function handed a handle that is no live block
//! traps with a message naming the function (never a host panic). Host functions consume the
//! handles given to them (keys, values, messages, requests), as Extism's do.

use warden_call::LogLevel;
use wasmtime::{Caller, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

use super::state::ExtismState;
use crate::config::{SecretsView, store as config};
use crate::error::LoadError;

/// Every function a plug-in may import from `extism:host/env`: the 20 of Extism's kernel and
/// the 12 of its host. Nothing else is linked there.
/// The module every host function of a plug-in is imported from.
pub(crate) const HOST_MODULE: &str = "extism:host/env";

pub(crate) const NAMES: &[&str] = &[
    // Kernel: Extism memory, input, output, error.
    "alloc",
    "free",
    "length",
    "length_unsafe",
    "load_u8",
    "load_u64",
    "store_u8",
    "store_u64",
    "input_length",
    "input_load_u8",
    "input_load_u64",
    "input_offset",
    "input_set",
    "output_set",
    "output_length",
    "output_offset",
    "error_set",
    "error_get",
    "reset",
    "memory_bytes",
    // Host: config, vars, HTTP, logging.
    "config_get",
    "var_get",
    "var_set",
    "http_request",
    "http_status_code",
    "http_headers",
    "log_trace",
    "log_debug",
    "log_info",
    "log_warn",
    "log_error",
    "get_log_level",
];

/// Bytes of a plug-in's error message (`error_set`) kept; the rest is cut.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;
/// The lowest level a plug-in's log messages are kept at: `get_log_level` tells the plug-in
/// (so the PDK does not even format a debug line), and the host drops lower ones too.
pub(crate) const LOG_LEVEL: LogLevel = LogLevel::Info;
/// Bytes of vars one call may hold, counted as Extism counts them (key + value + 48 per var).
pub(crate) const MAX_VAR_BYTES: u64 = 1 << 20;
/// Extism's per-var overhead in its count (a `String` and a `Vec<u8>` on 64-bit hosts).
const VAR_OVERHEAD: u64 = 48;
/// The longest config key read: longer keys (no secret name is this long) read as absent,
/// and the denial names their start.
const MAX_KEY_BYTES: usize = 1024;

/// Extism's numbers for log levels (`get_log_level`).
fn level_number(level: LogLevel) -> i32 {
    match level {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error | LogLevel::Critical => 4,
    }
}

type C<'a> = Caller<'a, ExtismState>;

/// Links every function of [`NAMES`].
pub(crate) fn add_to_linker(l: &mut Linker<ExtismState>) -> wasmtime::Result<()> {
    let m = HOST_MODULE;
    // Kernel.
    l.func_wrap(m, "alloc", |mut c: C<'_>, n: u64| c.data_mut().alloc(n))?;
    l.func_wrap(m, "free", |mut c: C<'_>, h: u64| c.data_mut().free(h))?;
    l.func_wrap(m, "length", |c: C<'_>, h: u64| c.data().arena.length(h))?;
    l.func_wrap(m, "length_unsafe", |c: C<'_>, h: u64| {
        c.data().arena.length(h)
    })?;
    l.func_wrap(m, "load_u8", |c: C<'_>, p: u64| {
        u32::from(c.data().arena.load_u8(p))
    })?;
    l.func_wrap(m, "load_u64", |c: C<'_>, p: u64| c.data().arena.load_u64(p))?;
    l.func_wrap(m, "store_u8", |mut c: C<'_>, p: u64, v: u32| {
        c.data_mut().arena.store_u8(p, v as u8)
    })?;
    l.func_wrap(m, "store_u64", |mut c: C<'_>, p: u64, v: u64| {
        c.data_mut().arena.store_u64(p, v)
    })?;
    l.func_wrap(m, "input_length", |c: C<'_>| c.data().input.1)?;
    l.func_wrap(m, "input_load_u8", |c: C<'_>, off: u64| {
        let s = c.data();
        if off < s.input.1 {
            s.input
                .0
                .checked_add(off)
                .map_or(0, |p| u32::from(s.arena.load_u8(p)))
        } else {
            0
        }
    })?;
    l.func_wrap(m, "input_load_u64", |c: C<'_>, off: u64| {
        let s = c.data();
        match off.checked_add(8) {
            Some(end) if end <= s.input.1 => s
                .input
                .0
                .checked_add(off)
                .map_or(0, |p| s.arena.load_u64(p)),
            _ => 0,
        }
    })?;
    l.func_wrap(m, "input_offset", |c: C<'_>| c.data().input.0)?;
    l.func_wrap(m, "input_set", |mut c: C<'_>, h: u64, len: u64| {
        let s = c.data_mut();
        if s.arena.within_block(h, len).is_some() {
            s.input = (h, len);
        }
    })?;
    l.func_wrap(m, "output_set", |mut c: C<'_>, h: u64, len: u64| {
        c.data_mut().output_set(h, len)
    })?;
    l.func_wrap(m, "output_length", |c: C<'_>| {
        c.data().output.map_or(0, |o| o.1)
    })?;
    l.func_wrap(m, "output_offset", |c: C<'_>| {
        c.data().output.map_or(0, |o| o.0)
    })?;
    l.func_wrap(m, "error_set", |mut c: C<'_>, h: u64| {
        c.data_mut().error_set(h)
    })?;
    l.func_wrap(m, "error_get", |c: C<'_>| c.data().error)?;
    l.func_wrap(m, "reset", |mut c: C<'_>| {
        let s = c.data_mut();
        s.arena.reset(&mut s.budget);
        s.input = (0, 0);
        s.output = None;
        s.clear_error();
    })?;
    l.func_wrap(m, "memory_bytes", |c: C<'_>| c.data().arena.size())?;

    // Host: config (the granted secrets), vars, HTTP, logging.
    l.func_wrap_async(m, "config_get", |mut c: C<'_>, (key,): (u64,)| {
        Box::new(async move { config_get(&mut c, key).await })
    })?;
    l.func_wrap(m, "var_get", |mut c: C<'_>, key: u64| {
        c.data_mut().var_get(key)
    })?;
    l.func_wrap(m, "var_set", |mut c: C<'_>, key: u64, value: u64| {
        c.data_mut().var_set(key, value)
    })?;
    l.func_wrap_async(
        m,
        "http_request",
        |mut c: C<'_>, (req, body): (u64, u64)| {
            Box::new(async move { super::http::request(&mut c, req, body).await })
        },
    )?;
    l.func_wrap(m, "http_status_code", |c: C<'_>| {
        i32::from(c.data().http_status)
    })?;
    l.func_wrap(m, "http_headers", |mut c: C<'_>| {
        c.data_mut().http_headers()
    })?;
    for (name, level) in [
        ("log_trace", LogLevel::Trace),
        ("log_debug", LogLevel::Debug),
        ("log_info", LogLevel::Info),
        ("log_warn", LogLevel::Warn),
        ("log_error", LogLevel::Error),
    ] {
        l.func_wrap(m, name, move |mut c: C<'_>, msg: u64| {
            c.data_mut().log(name, level, msg)
        })?;
    }
    l.func_wrap(m, "get_log_level", |_: C<'_>| level_number(LOG_LEVEL))?;
    Ok(())
}

/// `config_get(key)`: the value of the granted secret named `key` (a new block; 0 when it is
/// not set or empty, as in Extism). A key that names no granted secret is refused as a
/// component's `wasi:config` read is (a denial in the ledger, audited), and reads as absent.
async fn config_get(c: &mut C<'_>, key: u64) -> wasmtime::Result<u64> {
    let s = c.data_mut();
    // A key past MAX_KEY_BYTES is read only that far: it names no secret, and its denial says
    // how it starts.
    let (bytes, _) = s.start_of("config_get", "key", key, MAX_KEY_BYTES)?;
    let name = String::from_utf8(bytes)
        .map_err(|_| s.trap("config_get: the key is not UTF-8".to_string()))?;
    s.arena.free(key);
    let mut view = SecretsView {
        access: s.secrets.as_ref(),
        ledger: &s.ledger,
        redactor: &s.redactor,
        withheld: s.withheld,
    };
    let value = match config::Host::get(&mut view, name.clone()).await {
        Ok(Some(v)) => v,
        Ok(None) | Err(config::Error::Upstream(_)) => return Ok(0),
        Err(config::Error::Io(m)) => return Err(s.trap(format!("config_get: {m}"))),
    };
    s.put("config_get", value.as_bytes())
}

impl ExtismState {
    fn alloc(&mut self, n: u64) -> wasmtime::Result<u64> {
        self.arena
            .alloc(n, &mut self.budget)
            .map_err(|_| self.out_of_memory("alloc", n))
    }

    /// A new block holding `bytes` for the plug-in (0 for none).
    pub(super) fn put(&mut self, what: &str, bytes: &[u8]) -> wasmtime::Result<u64> {
        self.arena
            .put(bytes, &mut self.budget)
            .map_err(|_| self.out_of_memory(what, bytes.len() as u64))
    }

    fn out_of_memory(&mut self, what: &str, n: u64) -> wasmtime::Error {
        // The limit is marked hit (also for a size past anything countable): the call is
        // reported as over max_memory.
        self.budget.refuse();
        wasmtime::Error::msg(format!(
            "{what}: {n} more bytes of Extism memory would exceed max_memory"
        ))
    }

    fn free(&mut self, h: u64) {
        if h != 0 && h == self.input.0 {
            self.input = (0, 0);
        }
        self.arena.free(h);
    }

    fn output_set(&mut self, h: u64, len: u64) -> wasmtime::Result<()> {
        if (h == 0 && len == 0) || self.arena.within_block(h, len).is_some() {
            self.output = Some((h, len));
            Ok(())
        } else {
            Err(self.trap(format!(
                "output_set: {len} bytes at {h} are not inside one block of Extism memory"
            )))
        }
    }

    /// Keeps the error's first [`MAX_ERROR_BYTES`] now: freeing or reusing the block
    /// afterwards changes nothing (Extism reads it at the end, so a freed error was lost).
    fn error_set(&mut self, h: u64) -> wasmtime::Result<()> {
        if h == 0 {
            self.clear_error();
            return Ok(());
        }
        match self.arena.block(h) {
            Some(b) if !b.is_empty() => {
                let kept = b[..b.len().min(MAX_ERROR_BYTES)].to_vec();
                self.error = h;
                self.error_text = Some(kept);
                Ok(())
            }
            _ => Err(self.trap(format!("error_set: {h} is not a block of Extism memory"))),
        }
    }

    pub(super) fn clear_error(&mut self) {
        self.error = 0;
        self.error_text = None;
    }

    /// At most the first `max` bytes of the block `h` the plug-in handed to `func` as its
    /// `what` (copied only that far), and whether the block held more. Handle 0 is the empty
    /// string, as the PDKs send it.
    fn start_of(
        &mut self,
        func: &str,
        what: &str,
        h: u64,
        max: usize,
    ) -> wasmtime::Result<(Vec<u8>, bool)> {
        if h == 0 {
            return Ok((Vec::new(), false));
        }
        match self.arena.block(h) {
            Some(b) => Ok((b[..b.len().min(max)].to_vec(), b.len() > max)),
            None => Err(self.trap(format!(
                "{func}: the {what} handle {h} is not a block of Extism memory"
            ))),
        }
    }

    /// The whole block `h` as UTF-8, refused (ending the call) past `max` bytes before any
    /// of it is copied.
    pub(super) fn text_of(
        &mut self,
        func: &str,
        what: &str,
        h: u64,
        max: usize,
    ) -> wasmtime::Result<String> {
        let (bytes, more) = self.start_of(func, what, h, max)?;
        if more {
            let len = self.arena.length(h);
            return Err(self.trap(format!(
                "{func}: the {what} is {len} bytes, more than the {max} it may be"
            )));
        }
        String::from_utf8(bytes).map_err(|_| self.trap(format!("{func}: the {what} is not UTF-8")))
    }

    fn var_get(&mut self, key: u64) -> wasmtime::Result<u64> {
        let name = self.text_of("var_get", "key", key, MAX_VAR_BYTES as usize)?;
        self.arena.free(key);
        let value = self.vars.get(&name).cloned().unwrap_or_default();
        self.put("var_get", &value)
    }

    /// `var_set(key, value)`: value 0 removes the var (an empty value is handle 0); the
    /// vars of one call hold at most [`MAX_VAR_BYTES`], counted as Extism counts them, and
    /// their bytes are charged to the call's memory budget.
    fn var_set(&mut self, key: u64, value: u64) -> wasmtime::Result<()> {
        let name = self.text_of("var_set", "key", key, MAX_VAR_BYTES as usize)?;
        let old = self.vars.get(&name).map_or(0, |v| name.len() + v.len());
        if value == 0 {
            self.vars.remove(&name);
            self.budget.release(old);
            self.arena.free(key);
            return Ok(());
        }
        let (bytes, more) = self.start_of("var_set", "value", value, MAX_VAR_BYTES as usize)?;
        if more {
            let len = self.arena.length(value);
            return Err(self.trap(format!(
                "var_set: the value is {len} bytes, more than the plug-in's vars may hold \
                 ({MAX_VAR_BYTES})"
            )));
        }
        let others: u64 = self
            .vars
            .iter()
            .filter(|(k, _)| **k != name)
            .map(|(k, v)| (k.len() + v.len()) as u64 + VAR_OVERHEAD)
            .sum();
        let total = others + (name.len() + bytes.len()) as u64 + VAR_OVERHEAD;
        if total > MAX_VAR_BYTES {
            return Err(self.trap(format!(
                "var_set: the plug-in's vars would hold {total} bytes, more than a call may \
                 ({MAX_VAR_BYTES})"
            )));
        }
        let new = name.len() + bytes.len();
        self.budget.release(old);
        if !self.budget.charge(new) {
            return Err(self.out_of_memory("var_set", new as u64));
        }
        self.arena.free(key);
        self.arena.free(value);
        self.vars.insert(name, bytes);
        Ok(())
    }

    fn http_headers(&mut self) -> wasmtime::Result<u64> {
        match self.http_headers.take() {
            Some(json) => {
                let h = self.put("http_headers", &json);
                self.http_headers = Some(json);
                h
            }
            None => Ok(0),
        }
    }

    fn log(&mut self, func: &str, level: LogLevel, msg: u64) -> wasmtime::Result<()> {
        if level_number(level) < level_number(LOG_LEVEL) {
            self.arena.free(msg);
            return Ok(());
        }
        // Cut before it is copied or decoded: the capture keeps no more of one call's logs.
        let (bytes, _) = self.start_of(func, "message", msg, crate::logging::MAX_LOG_BYTES)?;
        self.arena.free(msg);
        self.logs.push(level, "", &String::from_utf8_lossy(&bytes));
        Ok(())
    }

    /// Ends the call with `message` (a trap the plug-in cannot catch, as in Extism), kept as
    /// the call's error.
    pub(super) fn trap(&mut self, message: String) -> wasmtime::Error {
        self.fault
            .get_or_insert_with(|| warden_call::CallError::Trap(message.clone()));
        wasmtime::Error::msg(message)
    }

    /// Ends the call with `error` (kept as the call's error).
    pub(super) fn fail(&mut self, error: warden_call::CallError) -> wasmtime::Error {
        let message = error.to_string();
        self.fault.get_or_insert(error);
        wasmtime::Error::msg(message)
    }
}

/// The linker of plug-ins: `extism:host/env`, and with `wasi` WASI preview 1 (Wasmtime's, on
/// the call's [`ExtismState::wasi`] context), nothing else.
pub(crate) fn linker(
    engine: &wasmtime::Engine,
    wasi: bool,
) -> Result<Linker<ExtismState>, LoadError> {
    let mut l = Linker::new(engine);
    add_to_linker(&mut l).map_err(|e| LoadError::wasmtime("linking Extism's host ABI", e))?;
    if wasi {
        let err = |e| LoadError::wasmtime("linking WASI preview 1", e);
        wasmtime_wasi::p1::add_to_linker_async(&mut l, ExtismState::wasi).map_err(err)?;
        l.allow_shadowing(true);
        poll_oneoff(&mut l).map_err(err)?;
        super::files::add_to_linker(&mut l).map_err(err)?;
        l.allow_shadowing(false);
    }
    Ok(l)
}

/// Subscriptions one `poll_oneoff` may wait on. Wasmtime's implementation makes a host object
/// for each at once (about 500 bytes, outside the call's memory budget): a plug-in asking for
/// hundreds of thousands would hold hundreds of MiB of the host's memory.
const MAX_SUBSCRIPTIONS: u32 = 1024;
/// WASI preview 1's `inval`.
const ERRNO_INVAL: i32 = 28;

/// `poll_oneoff`, Wasmtime's, behind the [`MAX_SUBSCRIPTIONS`] cap (over it: `inval`, as for
/// any argument WASI cannot take).
fn poll_oneoff(l: &mut Linker<ExtismState>) -> wasmtime::Result<()> {
    l.func_wrap_async(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        |mut c: C<'_>, (subs, events, n, count): (i32, i32, i32, i32)| {
            Box::new(async move {
                if n as u32 > MAX_SUBSCRIPTIONS {
                    return Ok(ERRNO_INVAL);
                }
                let Some(wasmtime::Extern::Memory(memory)) = c.get_export("memory") else {
                    return Err(c
                        .data_mut()
                        .trap("poll_oneoff: the plug-in exports no memory".to_string()));
                };
                // What Wasmtime's own glue hands each call: the store's host-call allowance.
                let fuel = wasmtime::AsContextMut::as_context_mut(&mut c).hostcall_fuel();
                let (data, state) = memory.data_and_store_mut(&mut c);
                let ctx = state.wasi();
                WasiSnapshotPreview1::set_hostcall_fuel(ctx, fuel);
                let mut guest = wiggle::GuestMemory::Unshared(data);
                wasmtime_wasi::p1::wasi_snapshot_preview1::poll_oneoff(
                    ctx, &mut guest, subs, events, n, count,
                )
                .await
            })
        },
    )?;
    Ok(())
}
