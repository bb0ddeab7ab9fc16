//! The driver against fake programs (Rust tasks on the other end of in-memory pipes): the
//! conversation itself, errors that do not end a call, and those that do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use warden_process::{
    Call, DenyAll, HostApi, HostError, KvKey, Limits, ProtocolError, Reply, RequestBudget, Session,
    encode_frame,
};

use crate::TestHost;

/// The program's end: reads the host's frames, writes its own.
struct Program {
    io: DuplexStream,
}

impl Program {
    async fn read(&mut self) -> Value {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(self.io.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        let n: usize = head
            .trim_end()
            .strip_prefix("Content-Length: ")
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; n];
        self.io.read_exact(&mut body).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }
    async fn send(&mut self, v: Value) {
        self.raw(&encode_frame(v.to_string().as_bytes())).await;
    }
    async fn raw(&mut self, bytes: &[u8]) {
        // The host may have stopped reading (the call ended): that is fine here.
        let _ = self.io.write_all(bytes).await;
    }
    async fn answer(&mut self, id: &Value, output_b64: &str) {
        self.send(json!({"jsonrpc":"2.0","id":id,"result":{"output":output_b64}}))
            .await;
    }
}

type HostSession = Session<WriteHalf<DuplexStream>, ReadHalf<DuplexStream>>;

fn pair() -> (HostSession, Program) {
    let (host, program) = tokio::io::duplex(1 << 20);
    let (r, w) = tokio::io::split(host);
    (Session::new(w, r), Program { io: program })
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

async fn call_with(
    session: &mut HostSession,
    limits: &Limits,
    host: &dyn HostApi,
) -> Result<Reply, ProtocolError> {
    session
        .call(
            Call {
                method: "m",
                input: b"\x00\xffin",
            },
            limits,
            host,
            soon(),
        )
        .await
}

#[tokio::test]
async fn a_conversation_with_host_requests_errors_and_a_notification() {
    let (mut session, mut p) = pair();
    let host = TestHost::default();
    let program = tokio::spawn(async move {
        let call = p.read().await;
        assert_eq!(
            call,
            json!({"jsonrpc":"2.0","id":1,"method":"call","params":{"method":"m","input":"AP9pbg=="}})
        );
        // A notification: handled, never answered (the next frame answers "s").
        p.send(json!({"jsonrpc":"2.0","method":"log","params":{"level":"warn","message":"n"}}))
            .await;
        p.send(json!({"jsonrpc":"2.0","id":"s","method":"kv.set","params":{"bucket":"b","key":"k","value":"AP8="}}))
            .await;
        assert_eq!(
            p.read().await,
            json!({"jsonrpc":"2.0","id":"s","result":null})
        );
        p.send(json!({"jsonrpc":"2.0","id":2,"method":"kv.get","params":{"bucket":"b","key":"k"}}))
            .await;
        assert_eq!(
            p.read().await,
            json!({"jsonrpc":"2.0","id":2,"result":{"value":"AP8="}})
        );
        // The host's refusal, an unknown method and bad params are answers, not the end.
        p.send(json!({"jsonrpc":"2.0","id":3,"method":"kv.set","params":{"bucket":"other","key":"k","value":""}}))
            .await;
        assert_eq!(
            p.read().await,
            json!({"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"bucket \"other\" is not granted","data":{"code":"denied"}}})
        );
        p.send(json!({"jsonrpc":"2.0","id":4,"method":"fs.read","params":{}}))
            .await;
        assert_eq!(
            p.read().await,
            json!({"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"no host method \"fs.read\"","data":{"code":"method-not-found"}}})
        );
        p.send(json!({"jsonrpc":"2.0","id":5,"method":"kv.get","params":{"key":"k"}}))
            .await;
        let e = p.read().await;
        assert_eq!(e["error"]["code"], -32602);
        assert_eq!(e["error"]["data"]["code"], "invalid-params");
        p.send(json!({"jsonrpc":"2.0","id":6,"method":"secrets.get","params":{"name":"t"}}))
            .await;
        assert_eq!(p.read().await["error"]["data"]["code"], "denied");
        p.answer(&call["id"], "b3V0AA==").await;
    });
    let reply = call_with(&mut session, &Limits::default(), &host)
        .await
        .unwrap();
    program.await.unwrap();
    assert_eq!(
        reply,
        Reply {
            output: Ok(b"out\x00".to_vec()),
            messages: 8,
            host_requests: 7
        }
    );
    assert_eq!(*host.logs.lock().unwrap(), ["n"]);
}

#[tokio::test]
async fn the_programs_own_error_is_its_answer() {
    let (mut session, mut p) = pair();
    tokio::spawn(async move {
        let call = p.read().await;
        p.send(json!({"jsonrpc":"2.0","id":call["id"],"error":{"code":-32000,"message":"no note","data":{"code":"not-found"}}}))
            .await;
    });
    let e = call_with(&mut session, &Limits::default(), &DenyAll)
        .await
        .unwrap()
        .output
        .unwrap_err();
    assert_eq!(
        (e.code, e.name.as_str(), e.message.as_str()),
        (-32000, "not-found", "no note")
    );
    assert!(!session.is_broken());
}

#[tokio::test]
async fn a_warm_session_serves_calls_in_turn_and_breaks_for_good() {
    let (mut session, mut p) = pair();
    let (ids, seen) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..2 {
            let call = p.read().await;
            got.push(call["id"].as_u64().unwrap());
            p.answer(&call["id"], "").await;
        }
        let call = p.read().await;
        got.push(call["id"].as_u64().unwrap());
        // An answer under the id the last one had plus one: a program guessing the next.
        p.answer(&json!(got[1] + 1), "").await;
        let _ = ids.send(got);
    });
    let l = Limits::default();
    assert_eq!(
        call_with(&mut session, &l, &DenyAll).await.unwrap().output,
        Ok(vec![])
    );
    assert_eq!(
        call_with(&mut session, &l, &DenyAll).await.unwrap().output,
        Ok(vec![])
    );
    let third = call_with(&mut session, &l, &DenyAll).await;
    let ids = seen.await.unwrap();
    // The first call is 1; the next ones cannot be guessed from it (nor from each other).
    assert_eq!(ids[0], 1);
    assert!(ids[1] != 2 && ids[2] != ids[1] + 1, "{ids:?}");
    assert!(ids.iter().all(|&id| id < 1 << 53), "{ids:?}");
    assert_eq!(
        third,
        Err(ProtocolError::UnexpectedResponseId {
            expected: ids[2],
            got: (ids[1] + 1).to_string()
        })
    );
    assert!(session.is_broken());
    assert_eq!(
        call_with(&mut session, &l, &DenyAll).await,
        Err(ProtocolError::Broken)
    );
}

#[tokio::test]
async fn responses_with_wrong_ids() {
    for (id, got) in [
        (json!(2), "2"),
        (json!(0), "0"),
        (json!(-1), "-1"),
        (json!("1"), "\"1\""),
    ] {
        let (mut session, mut p) = pair();
        tokio::spawn(async move {
            p.read().await;
            p.answer(&id, "").await;
        });
        assert_eq!(
            call_with(&mut session, &Limits::default(), &DenyAll).await,
            Err(ProtocolError::UnexpectedResponseId {
                expected: 1,
                got: got.into()
            })
        );
    }
}

/// Sends `n` small valid notifications, then (if still heard) an answer.
async fn flood(limits: Limits, n: usize) -> Result<Reply, ProtocolError> {
    flood_in(pair(), limits, n).await
}

async fn flood_in(
    (mut session, mut p): (HostSession, Program),
    limits: Limits,
    n: usize,
) -> Result<Reply, ProtocolError> {
    tokio::spawn(async move {
        let call = p.read().await;
        let note = encode_frame(
            br#"{"jsonrpc":"2.0","method":"log","params":{"level":"info","message":"x"}}"#,
        );
        let mut all = Vec::new();
        for _ in 0..n {
            all.extend_from_slice(&note);
        }
        p.raw(&all).await;
        p.answer(&call["id"], "").await;
    });
    call_with(&mut session, &limits, &TestHost::default()).await
}

#[tokio::test]
async fn a_flood_of_small_messages_hits_the_message_cap() {
    let l = Limits::default().with_max_messages(100).unwrap();
    // 99 notifications and the answer are 100 messages: allowed.
    assert_eq!(flood(l, 99).await.unwrap().messages, 100);
    assert_eq!(
        flood(l, 100).await,
        Err(ProtocolError::TooManyMessages { limit: 100 })
    );
    assert_eq!(
        flood(Limits::default(), 10_000).await,
        Err(ProtocolError::RateExceeded { per_second: 1000 })
    );
    let l = Limits::default().with_max_requests_per_second(10).unwrap();
    assert_eq!(flood(l, 10).await.unwrap().host_requests, 10);
    assert_eq!(
        flood(l, 11).await,
        Err(ProtocolError::RateExceeded { per_second: 10 })
    );
    // Sessions sharing a budget share its tokens, whatever their own limits say, past the
    // first 64 of each call: one that took 6 of 10 leaves 4 to the next.
    let free = warden_process::budget::FREE_PER_CALL as usize;
    let budget = Arc::new(RequestBudget::new(10).unwrap());
    let shared = || {
        let (session, p) = pair();
        (session.sharing(Arc::clone(&budget)), p)
    };
    let big = Limits::default();
    let first = flood_in(shared(), big, free + 6).await.unwrap();
    assert_eq!(first.host_requests as usize, free + 6);
    assert_eq!(
        flood_in(shared(), big, free + 6).await,
        Err(ProtocolError::RateExceeded { per_second: 10 })
    );
    // A call that stays within its own never meets the shared rate.
    assert_eq!(
        flood_in(shared(), big, free).await.unwrap().host_requests as usize,
        free
    );
}

#[tokio::test]
async fn a_host_request_in_flight_at_the_deadline_is_dropped() {
    struct Stuck;
    #[async_trait::async_trait]
    impl HostApi for Stuck {
        async fn kv_get(&self, _: KvKey) -> Result<Option<Vec<u8>>, HostError> {
            std::future::pending().await
        }
    }
    let (mut session, mut p) = pair();
    tokio::spawn(async move {
        p.read().await;
        p.send(json!({"jsonrpc":"2.0","id":1,"method":"kv.get","params":{"bucket":"b","key":"k"}}))
            .await;
        std::future::pending::<()>().await;
    });
    let t = Instant::now();
    let r = session
        .call(
            Call {
                method: "m",
                input: b"",
            },
            &Limits::default(),
            &Stuck,
            t + Duration::from_millis(100),
        )
        .await;
    assert_eq!(r, Err(ProtocolError::Deadline));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn malformed_answers_end_the_call() {
    for (frame, want) in [
        (
            encode_frame(br#"{"jsonrpc":"2.0","id":1,"result":{"output":"AP8"}}"#),
            "InvalidMessage",
        ),
        (
            encode_frame(br#"{"jsonrpc":"2.0","id":1,"result":"AP8="}"#),
            "InvalidMessage",
        ),
        (encode_frame(b"[]"), "InvalidMessage"),
        (encode_frame(b"{\"jsonrpc\":"), "InvalidJson"),
        (
            encode_frame(format!("{}1{}", "[".repeat(65), "]".repeat(65)).as_bytes()),
            "TooDeep",
        ),
        (
            encode_frame(format!("{}1{}", "[".repeat(64), "]".repeat(64)).as_bytes()),
            "InvalidMessage",
        ),
    ] {
        let (mut session, mut p) = pair();
        tokio::spawn(async move {
            p.read().await;
            p.raw(&frame).await;
        });
        let e = call_with(&mut session, &Limits::default(), &DenyAll)
            .await
            .unwrap_err();
        assert!(format!("{e:?}").starts_with(want), "{e:?} is not {want}");
    }
}

/// The host spawns calls on a multi-threaded runtime: the driver's futures must be `Send`.
#[test]
fn the_call_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let (mut session, _p) = pair();
    let l = Limits::default();
    let c = Call {
        method: "m",
        input: b"",
    };
    send(session.call(c, &l, &TestHost::default(), soon()));
    let (a, _b) = tokio::io::duplex(64);
    let (r, w) = tokio::io::split(a);
    let (e, _f) = tokio::io::duplex(64);
    let stdio = warden_process::Stdio {
        stdin: w,
        stdout: r,
        stderr: e,
    };
    send(warden_process::run(stdio, c, &l, &DenyAll, soon()));
}
