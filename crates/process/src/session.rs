//! The call driver: send `call`, answer host requests until the answer with the call's id,
//! all under one deadline; and [`run`], which also captures stderr.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::unix::pipe;

use crate::budget::{CallBudget, FREE_PER_CALL, RequestBudget};
use crate::error::ProtocolError;
use crate::frame::{FrameReader, write_frame, write_frame_counted};
use crate::host::{HostApi, dispatch};
use crate::json;
use crate::limits::Limits;
use crate::message::{self, ExtensionError, Incoming, RequestId};

/// One call: the extension's method and its input bytes.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub method: &'a str,
    pub input: &'a [u8],
}

/// The program's answer to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The output bytes, or the program's own error answer.
    pub output: Result<Vec<u8>, ExtensionError>,
    /// Messages the program sent during the call, the answer included.
    pub messages: u32,
    /// Host requests and notifications among them.
    pub host_requests: u32,
}

/// The protocol over one program's stdin and stdout, for one call or many (a warm process).
///
/// Calls are sequential, and so are host requests within a call (the next message is read
/// only once the previous request is answered), so one program never has more than one host
/// request in flight. After any error the session is broken (its stream may be mid-frame)
/// and every later call fails with [`ProtocolError::Broken`]: kill the process.
pub struct Session<W, R> {
    stdin: W,
    stdout: FrameReader<R>,
    next_id: u64,
    broken: bool,
    /// Run once the next call's request is written (see [`Session::once_sent`]).
    after_send: Option<Box<dyn FnOnce() + Send>>,
    /// Bytes of the last call's request written to the program ([`Session::request_written`]).
    request_written: usize,
    /// Whether the program sent any frame during the last call ([`Session::heard`]).
    heard: bool,
    /// Host requests shared with other sessions ([`Session::sharing`]); else each call has
    /// [`Limits::max_requests_per_second`] of its own.
    budget: Option<Arc<RequestBudget>>,
}

/// A request id in [2, 2^53) (exact in any JSON parser's numbers) that a program cannot
/// predict: SipHash of a counter under the process's random keys (std's `RandomState`).
fn unguessable_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11).max(2)
}

impl<W, R> std::fmt::Debug for Session<W, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("next_id", &self.next_id)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<W, R> Session<W, R>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    pub fn new(stdin: W, stdout: R) -> Self {
        Session {
            stdin,
            stdout: FrameReader::new(stdout),
            next_id: 1,
            broken: false,
            after_send: None,
            request_written: 0,
            heard: false,
            budget: None,
        }
    }

    /// Takes host requests from `budget`, with every other session holding it, instead of a
    /// bucket of each call's own: a program that runs out cannot get more by being called
    /// again. Each call spends [`FREE_PER_CALL`] of its own first.
    pub fn sharing(mut self, budget: Arc<RequestBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Whether the program sent any frame (an answer, a host request, a notification) during
    /// the last call.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// How many bytes of the last call's request were written to the program's stdin: with
    /// what is still unread there, whether the program read any of it.
    pub fn request_written(&self) -> usize {
        self.request_written
    }

    /// The pipe to the program's stdin.
    pub fn stdin(&self) -> &W {
        &self.stdin
    }

    /// Runs `f` once the next call's request has been written to the program (a host that
    /// stopped the program between calls lets it go on there, so it wakes once, to a request
    /// that is already waiting). The request must fit in the pipe, or the write waits for a
    /// program that cannot read.
    pub fn once_sent(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_send = Some(Box::new(f));
    }

    /// Whether an earlier call failed (the process must then be replaced).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether the program has sent nothing since its last answer (checked without waiting).
    /// A warm process that wrote more (a forged answer for the next call, garbage) must be
    /// replaced: call it with the program stopped, so nothing can arrive after the check.
    pub async fn is_quiet(&mut self) -> bool {
        !self.broken && self.stdout.is_quiet().await
    }

    /// Sends the call and serves the program's host requests until its answer, a protocol
    /// error or `deadline`, whichever comes first. Every read and write, and every host
    /// request, runs under `deadline`.
    pub async fn call(
        &mut self,
        call: Call<'_>,
        limits: &Limits,
        host: &dyn HostApi,
        deadline: Instant,
    ) -> Result<Reply, ProtocolError> {
        if self.broken {
            return Err(ProtocolError::Broken);
        }
        // Cleared only on success: a timeout drops the exchange mid-way.
        self.broken = true;
        let id = self.next_id;
        // The next call's id cannot be guessed: a warm program that writes an answer for it
        // ahead of time (after its own answer, racing the host's check that it is quiet)
        // names a wrong id and breaks its session instead of answering a call it never
        // read (red team: 6 of 16 forged answers were taken for the next call's).
        self.next_id = unguessable_id();
        let deadline = tokio::time::Instant::from_std(deadline);
        let reply = tokio::time::timeout_at(deadline, self.exchange(id, call, limits, host))
            .await
            .unwrap_or(Err(ProtocolError::Deadline));
        self.broken = reply.is_err();
        reply
    }

    async fn exchange(
        &mut self,
        id: u64,
        call: Call<'_>,
        limits: &Limits,
        host: &dyn HostApi,
    ) -> Result<Reply, ProtocolError> {
        let request = message::call_request(id, call.method, call.input);
        self.request_written = 0;
        self.heard = false;
        let written =
            write_frame_counted(&mut self.stdin, &request, &mut self.request_written).await;
        if let Some(f) = self.after_send.take() {
            f();
        }
        written?;
        let own;
        let mut budget = match &self.budget {
            Some(shared) => CallBudget::new(shared, FREE_PER_CALL),
            None => {
                own = RequestBudget::full(limits.max_requests_per_second(), Instant::now());
                CallBudget::new(&own, 0)
            }
        };
        let mut messages: u32 = 0;
        let mut host_requests: u32 = 0;
        loop {
            let body = self.stdout.read_frame(limits).await?;
            self.heard = true;
            messages += 1;
            if messages > limits.max_messages() {
                return Err(ProtocolError::TooManyMessages {
                    limit: limits.max_messages(),
                });
            }
            let text = json::utf8(&body)?;
            json::check_depth(text, limits.max_depth())?;
            match message::parse(text)? {
                Incoming::Response { id: got, outcome } => {
                    if !matches!(got, RequestId::Number(n) if u64::try_from(n) == Ok(id)) {
                        return Err(ProtocolError::UnexpectedResponseId {
                            expected: id,
                            got: got.to_string(),
                        });
                    }
                    let output = match outcome {
                        Ok(raw) => Ok(message::call_result(&raw)?),
                        Err(e) => Err(e),
                    };
                    return Ok(Reply {
                        output,
                        messages,
                        host_requests,
                    });
                }
                Incoming::Request {
                    id: request_id,
                    method,
                    params,
                } => {
                    host_requests += 1;
                    if !budget.request(body.len()) {
                        return Err(ProtocolError::RateExceeded {
                            per_second: budget.per_second(),
                        });
                    }
                    let outcome = dispatch(host, &method, params.as_deref()).await;
                    // A notification gets no answer (JSON-RPC 2.0 §4.1), even an error.
                    if let Some(request_id) = request_id {
                        let answer = message::response(&request_id, &outcome);
                        budget.answered(answer.len());
                        write_frame(&mut self.stdin, &answer).await?;
                    }
                }
            }
        }
    }
}

/// One call on a fresh pair of pipes (the program is used for this call only).
pub async fn call<W, R>(
    stdin: W,
    stdout: R,
    call: Call<'_>,
    limits: &Limits,
    host: &dyn HostApi,
    deadline: Instant,
) -> Result<Reply, ProtocolError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    Session::new(stdin, stdout)
        .call(call, limits, host, deadline)
        .await
}

/// A program's three pipes, seen from the host.
#[derive(Debug)]
pub struct Stdio<W, R, E> {
    pub stdin: W,
    pub stdout: R,
    pub stderr: E,
}

impl Stdio<pipe::Sender, pipe::Receiver, pipe::Receiver> {
    /// Wraps the host's ends of a spawned program's pipes (from `warden_sandbox::Child::take_*`
    /// or `std::process::Child`) for tokio. Must run inside a tokio runtime with I/O enabled.
    pub fn from_fds(
        stdin: impl Into<OwnedFd>,
        stdout: impl Into<OwnedFd>,
        stderr: impl Into<OwnedFd>,
    ) -> std::io::Result<Self> {
        Ok(Stdio {
            stdin: pipe::Sender::from_owned_fd(stdin.into())?,
            stdout: pipe::Receiver::from_owned_fd(stdout.into())?,
            stderr: pipe::Receiver::from_owned_fd(stderr.into())?,
        })
    }
}

/// What [`run`] hands back: the reply or why there is none, and the captured stderr either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub reply: Result<Reply, ProtocolError>,
    /// At most [`Limits::max_stderr_bytes`], raw (not necessarily UTF-8); the host redacts and
    /// escapes it as it does a component's.
    pub stderr: Vec<u8>,
    /// More was written and dropped.
    pub stderr_truncated: bool,
}

/// Bytes read from stderr in one go.
const STDERR_CHUNK: usize = 8 * 1024;

/// Past the cap, stderr is read (and dropped) [`DROPPED_CHUNK`] at a time, one per this
/// long: a program that writes more waits for the pipe (outside attack, session 37: draining
/// 1.4 GB a second of it, in 8 KiB reads, held the host at 0.68 of a CPU, 0.91 with four
/// such calls). At most 6.4 MB a second then, for about 100 reads.
const DROPPED_CHUNK_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// A pipe's whole default capacity.
const DROPPED_CHUNK: usize = 64 * 1024;

/// The next read of stderr: into `chunk` until the cap is `full`, then into `dropped`, after
/// a pause.
async fn paced<E: AsyncRead + Unpin>(
    stderr: &mut E,
    chunk: &mut [u8],
    dropped: &mut Vec<u8>,
    full: bool,
) -> std::io::Result<usize> {
    if !full {
        return stderr.read(chunk).await;
    }
    tokio::time::sleep(DROPPED_CHUNK_EVERY).await;
    dropped.resize(DROPPED_CHUNK, 0);
    stderr.read(dropped).await
}

/// One call on a fresh process, capturing its stderr meanwhile. Does not kill the program:
/// its owner does (on any error, a sandbox `Child` is killed when dropped).
pub async fn run<W, R, E>(
    stdio: Stdio<W, R, E>,
    call: Call<'_>,
    limits: &Limits,
    host: &dyn HostApi,
    deadline: Instant,
) -> Output
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
    E: AsyncRead + Unpin + Send,
{
    let Stdio {
        stdin,
        stdout,
        mut stderr,
    } = stdio;
    Session::new(stdin, stdout)
        .call_capturing(&mut stderr, call, limits, host, deadline)
        .await
}

impl<W, R> Session<W, R>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    /// [`Session::call`], reading the program's `stderr` meanwhile (a warm process keeps its
    /// stderr pipe across calls; what it wrote between calls is taken by the next one).
    pub async fn call_capturing<E: AsyncRead + Unpin + Send>(
        &mut self,
        stderr: &mut E,
        call: Call<'_>,
        limits: &Limits,
        host: &dyn HostApi,
        deadline: Instant,
    ) -> Output {
        let mut captured = Captured::new(limits.max_stderr_bytes());
        let mut chunk = vec![0u8; STDERR_CHUNK];
        // Made only for a program that writes past the cap.
        let mut dropped = Vec::new();
        let reply = {
            let exchange = self.call(call, limits, host, deadline);
            tokio::pin!(exchange);
            let mut open = true;
            loop {
                tokio::select! {
                    // The call first: a program flooding stderr must not starve it.
                    biased;
                    r = &mut exchange => break r,
                    n = paced(stderr, &mut chunk, &mut dropped, captured.truncated), if open => {
                        match n {
                            // Past the cap nothing more is kept: what was read is dropped.
                            Ok(n) if n > 0 && captured.truncated => {}
                            Ok(n) if n > 0 => captured.push(&chunk[..n]),
                            _ => open = false,
                        }
                    }
                }
            }
        };
        // What the program wrote just before answering may still be in the pipe: take what is
        // there now without waiting, and no more than a cap's worth plus a few reads.
        // (Polled once each, not under a zero timeout: a timer's resolution is a millisecond,
        // which every call of a warm process would pay.)
        for _ in 0..limits.max_stderr_bytes() / STDERR_CHUNK + 4 {
            let mut read = std::pin::pin!(stderr.read(&mut chunk));
            let ready =
                std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
            match ready {
                std::task::Poll::Ready(Ok(n)) if n > 0 => captured.push(&chunk[..n]),
                _ => break,
            }
        }
        Output {
            reply,
            stderr: captured.bytes,
            stderr_truncated: captured.truncated,
        }
    }
}

struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Captured {
    fn new(cap: usize) -> Captured {
        Captured {
            bytes: Vec::new(),
            cap,
            truncated: false,
        }
    }
    fn push(&mut self, b: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&b[..b.len().min(room)]);
        self.truncated |= b.len() > room;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_capped() {
        let mut c = Captured::new(4);
        c.push(b"ab");
        c.push(b"cdef");
        assert_eq!((&c.bytes[..], c.truncated), (&b"abcd"[..], true));
    }
}
