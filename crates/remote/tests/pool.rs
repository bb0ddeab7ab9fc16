//! An install's connections to its remote, against real TLS servers on loopback that count
//! what they accept: reused from call to call, never more than the install's limit open at
//! once, never reused once the server dropped them or a call on them failed, and not kept
//! from a call to another address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warden_remote::testing::{Behaviour, Counters, Leaf, counted_server, leaf};
use warden_remote::{CallLimits, Remote, RemoteError};

const LIMITS: CallLimits = CallLimits {
    timeout: Duration::from_secs(2),
    max_response: 1 << 20,
};

/// The two forms of a call, each with its own server.
const FORMS: [bool; 2] = [false, true];

fn client(s: &Leaf, addr: SocketAddr, grpc: bool, max: usize) -> Remote {
    let endpoint = if grpc {
        format!("grpcs://ext.test:{}", addr.port())
    } else {
        format!("https://ext.test:{}/rpc", addr.port())
    };
    Remote::new(&endpoint.parse().unwrap(), &[s.pin], None, None)
        .unwrap()
        .with_max_connections(max)
}

async fn serving(behaviour: Behaviour, grpc: bool) -> (Leaf, SocketAddr, Arc<Counters>) {
    let s = leaf(&["ext.test"], None, false, false);
    let (addr, counters) = counted_server(&s, behaviour, grpc).await;
    (s, addr, counters)
}

async fn echo(remote: &Remote, addr: SocketAddr, input: &str) -> Result<Vec<u8>, RemoteError> {
    remote.call(addr, "echo", input.as_bytes(), &LIMITS).await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_carries_call_after_call() {
    for grpc in FORMS {
        let (s, addr, seen) = serving(Behaviour::Answer, grpc).await;
        let remote = client(&s, addr, grpc, 8);
        for i in 0..20 {
            let input = format!("call {i}");
            assert_eq!(echo(&remote, addr, &input).await.unwrap(), input.as_bytes());
        }
        // The extension's own error leaves the connection as good as an answer does.
        let e = remote.call(addr, "fail", b"", &LIMITS).await.unwrap_err();
        assert!(matches!(e, RemoteError::Extension { .. }), "{e:?}");
        assert_eq!(echo(&remote, addr, "after").await.unwrap(), b"after");
        assert_eq!(seen.accepted(), 1, "grpc {grpc}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_install_never_has_more_than_its_limit_open() {
    for grpc in FORMS {
        let (s, addr, seen) = serving(Behaviour::Answer, grpc).await;
        let remote = Arc::new(client(&s, addr, grpc, 2));
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let remote = Arc::clone(&remote);
                tokio::spawn(async move {
                    let limits = CallLimits {
                        timeout: Duration::from_secs(10),
                        ..LIMITS
                    };
                    remote
                        .call(addr, "slow", format!("{i}").as_bytes(), &limits)
                        .await
                })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), format!("{i}").as_bytes());
        }
        // JSON-RPC: one call per connection, so two at a time; gRPC: all on one.
        assert!(
            seen.peak() <= 2,
            "grpc {grpc}: {} open at once",
            seen.peak()
        );
        let most = if grpc { 1 } else { 2 };
        assert_eq!(seen.accepted(), most, "grpc {grpc}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_the_server_closed_is_not_reused_and_the_call_goes_on() {
    for grpc in FORMS {
        // Dropped without a word 200 ms after it began.
        let (s, addr, seen) = serving(Behaviour::DropIdle, grpc).await;
        let remote = client(&s, addr, grpc, 1);
        assert_eq!(echo(&remote, addr, "one").await.unwrap(), b"one");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(echo(&remote, addr, "two").await.unwrap(), b"two");
        assert_eq!(seen.accepted(), 2, "grpc {grpc}");
    }
    // `connection: close`: each call opens its own.
    let (s, addr, seen) = serving(Behaviour::CloseEach, false).await;
    let remote = client(&s, addr, false, 1);
    for i in 0..3 {
        let input = format!("{i}");
        assert_eq!(echo(&remote, addr, &input).await.unwrap(), input.as_bytes());
    }
    assert_eq!(seen.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_timed_out_leaves_no_connection_behind() {
    let (s, addr, seen) = serving(Behaviour::Answer, false).await;
    // One connection only: were the stalled one kept, or its slot, the next call would wait.
    let remote = client(&s, addr, false, 1);
    let short = CallLimits {
        timeout: Duration::from_millis(300),
        ..LIMITS
    };
    let e = remote.call(addr, "stall", b"", &short).await.unwrap_err();
    assert!(matches!(e, RemoteError::Timeout(_)), "{e:?}");
    assert_eq!(echo(&remote, addr, "next").await.unwrap(), b"next");
    // The stalled connection was not the one the next call used.
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_to_another_address_gives_way() {
    for grpc in FORMS {
        let (s, a, seen_a) = serving(Behaviour::Answer, grpc).await;
        let (addr_b, seen_b) = counted_server(&s, Behaviour::Answer, grpc).await;
        let remote = client(&s, a, grpc, 1);
        assert_eq!(echo(&remote, a, "a").await.unwrap(), b"a");
        // The name now resolves elsewhere (same port in the endpoint is not needed: the
        // client connects where the host says).
        let b = tokio::time::timeout(Duration::from_secs(1), echo(&remote, addr_b, "b"))
            .await
            .expect("waited for the idle connection's slot");
        assert_eq!(b.unwrap(), b"b");
        assert_eq!(
            (seen_a.accepted(), seen_b.accepted()),
            (1, 1),
            "grpc {grpc}"
        );
    }
}

/// Red team, session 16: a gRPC connection the server froze (open, silent) kept being shared,
/// so every call of the install timed out for good. A call that fails or times out on it
/// now makes the next calls open another.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_shared_connection_is_given_up_after_a_call_on_it_fails() {
    let (s, addr, seen) = serving(Behaviour::Freeze, true).await;
    let remote = client(&s, addr, true, 2);
    assert_eq!(echo(&remote, addr, "one").await.unwrap(), b"one");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let short = CallLimits {
        timeout: Duration::from_millis(500),
        ..LIMITS
    };
    let e = remote.call(addr, "echo", b"two", &short).await.unwrap_err();
    assert!(matches!(e, RemoteError::Timeout(_)), "{e:?}");
    assert_eq!(echo(&remote, addr, "three").await.unwrap(), b"three");
    assert_eq!(seen.accepted(), 2);
}

/// Red team, session 16: a new client certificate made a new client with a pool of its own
/// (twice the limit open), and calls of the old client waiting for a connection went out with
/// the old certificate. Clients made one after the other on one install's connections share
/// the limit, and the old one's calls are told to start again.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_client_on_the_same_connections_retires_the_old_one() {
    for grpc in FORMS {
        let (s, addr, seen) = serving(Behaviour::Answer, grpc).await;
        let connections = warden_remote::Connections::new(1);
        let old = client(&s, addr, grpc, 1).on(&connections);
        assert_eq!(echo(&old, addr, "old").await.unwrap(), b"old");
        let new = client(&s, addr, grpc, 1).on(&connections);
        // The old client's idle connection is closed, and it may not open another.
        let e = echo(&old, addr, "late").await.unwrap_err();
        assert!(matches!(e, RemoteError::Stale), "grpc {grpc}: {e:?}");
        assert_eq!(echo(&new, addr, "new").await.unwrap(), b"new");
        assert_eq!(seen.accepted(), 2, "grpc {grpc}");
        assert_eq!(seen.peak(), 1, "grpc {grpc}: never both at once");
    }
}

/// Red team, session 16: idle connections were closed only when a call came, so a quiet
/// install kept them open for good. They close on their own now.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_when_their_time_is_up() {
    for grpc in FORMS {
        let (s, addr, seen) = serving(Behaviour::Answer, grpc).await;
        let connections = warden_remote::Connections::with_idle(4, Duration::from_millis(200));
        let remote = client(&s, addr, grpc, 4).on(&connections);
        assert_eq!(echo(&remote, addr, "x").await.unwrap(), b"x");
        assert_eq!(seen.open(), 1);
        let closed = async {
            while seen.open() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(3), closed)
            .await
            .unwrap_or_else(|_| panic!("grpc {grpc}: still open"));
        // And the next call opens another.
        assert_eq!(echo(&remote, addr, "y").await.unwrap(), b"y");
        assert_eq!(seen.accepted(), 2);
    }
}
