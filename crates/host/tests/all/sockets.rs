//! wasi:sockets with a real guest (hostile's `sock`, `lookup`, `listen`, `udp`) against real
//! TCP servers on loopback and a test resolver: lookups only for allowed names, connects only
//! to addresses those names resolved to in the same call, on allowed ports; every refusal is a
//! typed error for the guest and an audit denial.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use warden_audit::{Event, Record};
use warden_host::{ExtensionId, Grant, Policy, Resolver};

use crate::egress::{FakeResolver, allow_loopback, network};
use crate::support::{Lab, text};

/// A TCP server on 127.0.0.1 answering `pong` to whatever it reads; counts connections.
struct Pong {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Pong {
    fn start() -> Pong {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 16];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"pong");
            }
        });
        Pong { addr, connections }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn lab(policy: Policy, resolver: &Arc<FakeResolver>) -> Lab {
    Lab::with_resolver(policy, Some(Arc::clone(resolver) as Arc<dyn Resolver>))
}

fn socket_denials(lab: &Lab) -> Vec<Record> {
    lab.audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Denial && r.capability() == Some("network"))
        .collect()
}

async fn call(lab: &Lab, id: &ExtensionId, method: &str, input: &str) -> String {
    text(&lab.call(id, method, input.as_bytes()).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_connects_to_what_it_resolved_to() {
    let server = Pong::start();
    let resolver = FakeResolver::new(&[("svc.test", &[&["127.0.0.1"]])]);
    let lab = lab(allow_loopback(), &resolver);
    let id = lab.load_granted(
        "hostile",
        network(&["svc.test"], &[server.port()]),
        &Grant::All,
    );
    let out = call(&lab, &id, "sock", &format!("svc.test:{}", server.port())).await;
    assert_eq!(out, "sock=ok:pong");
    assert_eq!(server.connections(), 1);
    let grants: Vec<_> = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Grant && r.capability() == Some("network"))
        .filter_map(|r| r.target().map(str::to_string))
        .collect();
    assert!(grants.contains(&"dns:svc.test".to_string()), "{grants:?}");
    assert!(
        grants.contains(&format!("tcp://127.0.0.1:{}", server.port())),
        "{grants:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_network_every_socket_and_lookup_is_denied_and_audited() {
    let server = Pong::start();
    let resolver = FakeResolver::new(&[("*", &[&["127.0.0.1"]])]);
    let lab = lab(allow_loopback(), &resolver);
    let id = lab.load("hostile");
    let out = call(&lab, &id, "sock", &format!("127.0.0.1:{}", server.port())).await;
    assert!(out.starts_with("sock=err:"), "{out}");
    let out = call(&lab, &id, "lookup", "svc.test").await;
    assert!(out.starts_with("lookup=err:"), "{out}");
    assert_eq!(server.connections(), 0);
    assert_eq!(resolver.calls(), 0);
    let targets: Vec<_> = socket_denials(&lab)
        .iter()
        .filter_map(|r| r.target().map(str::to_string))
        .collect();
    assert!(targets.contains(&"tcp".to_string()), "{targets:?}");
    assert!(targets.contains(&"dns:svc.test".to_string()), "{targets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_allowlist_are_never_looked_up() {
    let resolver = FakeResolver::new(&[("*", &[&["93.184.216.34"]])]);
    let lab = lab(Policy::default(), &resolver);
    let id = lab.load_granted("hostile", network(&["*.acme.test"], &[443]), &Grant::All);
    for name in [
        "evilacme.test",
        "acme.test.evil.net",
        "acme.test",
        "2130706433",
        "0x7f.1",
        "127.1",
        "user@api.acme.test",
        // Data smuggled out through a lookup of a name the extension may not use.
        "c2VjcmV0.exfil.test",
    ] {
        let out = call(&lab, &id, "lookup", name).await;
        assert!(out.starts_with("lookup=err:"), "{name}: {out}");
    }
    assert_eq!(resolver.calls(), 0, "a refused name reached the resolver");
    assert_eq!(socket_denials(&lab).len(), 8);
    // The allowed pattern resolves.
    let out = call(&lab, &id, "lookup", "api.acme.test").await;
    assert_eq!(out, "lookup=ok:93.184.216.34");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_only_to_addresses_resolved_in_this_call() {
    let server = Pong::start();
    let resolver = FakeResolver::new(&[("svc.test", &[&["127.0.0.1"]])]);
    // The policy allows loopback, and the manifest names the literal too: still, an address
    // the guest did not get from a lookup of an allowed name is refused.
    let lab = lab(allow_loopback(), &resolver);
    let id = lab.load_granted(
        "hostile",
        network(&["svc.test", "127.0.0.2"], &[server.port()]),
        &Grant::All,
    );
    let out = call(&lab, &id, "sock", &format!("127.0.0.1:{}", server.port())).await;
    assert_eq!(out, "sock=err:PermissionDenied");
    assert_eq!(server.connections(), 0);
    let d = socket_denials(&lab);
    assert_eq!(
        d.last().and_then(|r| r.target()),
        Some(format!("tcp://127.0.0.1:{}", server.port()).as_str())
    );
    // Resolutions do not carry over to the next call (a fresh instance).
    let out = call(&lab, &id, "lookup", "svc.test").await;
    assert_eq!(out, "lookup=ok:127.0.0.1");
    let out = call(&lab, &id, "sock", &format!("127.0.0.1:{}", server.port())).await;
    assert_eq!(out, "sock=err:PermissionDenied");
    assert_eq!(server.connections(), 0);
}

/// Nor to the next call of an instance kept between calls (outside attack: a kept instance
/// connected to what an earlier call had resolved, with no lookup in its own record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_instance_connects_only_to_what_its_own_call_resolved() {
    let server = Pong::start();
    let resolver = FakeResolver::new(&[("svc.test", &[&["127.0.0.1"]])]);
    let policy = Policy::parse(
        "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n[policy.component]\nwarm_calls = 10\n\
         warm_extensions = [\"*\"]\n",
    )
    .unwrap();
    let lab = lab(policy, &resolver);
    let id = lab.load_granted(
        "hostile",
        network(&["svc.test"], &[server.port()]),
        &Grant::All,
    );
    assert_eq!(
        call(&lab, &id, "lookup", "svc.test").await,
        "lookup=ok:127.0.0.1"
    );
    let out = call(&lab, &id, "sock", &format!("127.0.0.1:{}", server.port())).await;
    assert_eq!(out, "sock=err:PermissionDenied");
    assert_eq!(server.connections(), 0);
    let calls: Vec<_> = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Call)
        .collect();
    assert!(
        calls
            .last()
            .and_then(|r| r.message())
            .is_some_and(|m| m.contains("kept from 1 earlier call")),
        "not a kept instance: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_on_a_forbidden_port_is_refused() {
    let server = Pong::start();
    let other = Pong::start();
    let resolver = FakeResolver::new(&[("svc.test", &[&["127.0.0.1"]])]);
    let lab = lab(allow_loopback(), &resolver);
    let entry = format!("svc.test:{}", server.port());
    let id = lab.load_granted("hostile", network(&[entry.as_str()], &[]), &Grant::All);
    let out = call(&lab, &id, "sock", &format!("svc.test:{}", other.port())).await;
    assert_eq!(out, "sock=err:PermissionDenied");
    assert_eq!(other.connections(), 0);
    assert!(
        socket_denials(&lab)
            .iter()
            .any(|r| r.message() == Some("port not allowed"))
    );
    let out = call(&lab, &id, "sock", &format!("svc.test:{}", server.port())).await;
    assert_eq!(out, "sock=ok:pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolving_to_private_addresses_are_refused_and_rebinding_gains_nothing() {
    let server = Pong::start();
    // First answer public, then loopback: a guest resolving twice must not reach loopback.
    let resolver = FakeResolver::new(&[
        ("svc.test", &[&["93.184.216.34"], &["127.0.0.1"]]),
        ("meta.test", &[&["169.254.169.254"]]),
        ("mapped.test", &[&["::ffff:127.0.0.1"]]),
        ("cgnat.test", &[&["100.64.0.1"]]),
        ("ula.test", &[&["fd00::1"]]),
    ]);
    // Default policy: no private network is reachable.
    let lab = lab(Policy::default(), &resolver);
    let id = lab.load_granted(
        "hostile",
        network(
            &[
                "svc.test",
                "meta.test",
                "mapped.test",
                "cgnat.test",
                "ula.test",
            ],
            &[server.port(), 80],
        ),
        &Grant::All,
    );
    assert_eq!(
        call(&lab, &id, "lookup", "svc.test").await,
        "lookup=ok:93.184.216.34"
    );
    let out = call(&lab, &id, "sock", &format!("svc.test:{}", server.port())).await;
    assert!(out.starts_with("sock=err:"), "{out}");
    for name in ["meta.test", "mapped.test", "cgnat.test", "ula.test"] {
        let out = call(&lab, &id, "lookup", name).await;
        assert!(out.starts_with("lookup=err:"), "{name}: {out}");
    }
    assert_eq!(server.connections(), 0);
    let reasons: Vec<_> = socket_denials(&lab)
        .iter()
        .filter_map(|r| r.message().map(str::to_string))
        .collect();
    assert!(
        reasons.iter().filter(|m| m.contains("non-public")).count() >= 5,
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listening_and_no_udp_even_with_network() {
    let resolver = FakeResolver::new(&[("*", &[&["127.0.0.1"]])]);
    let lab = lab(allow_loopback(), &resolver);
    let id = lab.load_granted("hostile", network(&["*"], &[]), &Grant::All);
    let out = call(&lab, &id, "listen", "").await;
    assert!(out.starts_with("listen=err:"), "{out}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let target = udp.local_addr().unwrap().to_string();
    let out = call(&lab, &id, "udp", &target).await;
    assert!(out.starts_with("udp=err:"), "{out}");
    let mut buf = [0u8; 16];
    assert!(udp.recv_from(&mut buf).is_err(), "a datagram got out");
    let targets: Vec<_> = socket_denials(&lab)
        .iter()
        .filter_map(|r| r.target().map(str::to_string))
        .collect();
    assert!(
        targets.iter().any(|t| t.starts_with("tcp://0.0.0.0")),
        "{targets:?}"
    );
    assert!(targets.contains(&"udp".to_string()), "{targets:?}");
}

/// Sockets are descriptors of the host process, which every call and tenant shares: one call
/// holds at most 64, the next is refused (`new-socket-limit`) and audited; the next call
/// starts again.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_cannot_hold_the_hosts_sockets() {
    let resolver = FakeResolver::new(&[("*", &[&["127.0.0.1"]])]);
    let lab = lab(allow_loopback(), &resolver);
    let id = lab.load_granted("hostile", network(&["*"], &[]), &Grant::All);
    let out = call(&lab, &id, "socks", "1000").await;
    assert!(
        out.starts_with("socks=64:") && out.contains("new-socket-limit"),
        "{out}"
    );
    let limits: Vec<_> = socket_denials(&lab)
        .into_iter()
        .filter(|r| r.target() == Some("open sockets"))
        .collect();
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert!(
        limits[0].message().unwrap_or("").contains("64"),
        "{limits:?}"
    );
    assert_eq!(call(&lab, &id, "socks", "64").await, "socks=ok:64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_extensions_called_concurrently_keep_their_own_network_grants() {
    let server = Pong::start();
    let resolver = FakeResolver::new(&[("svc.test", &[&["127.0.0.1"]])]);
    let lab = lab(allow_loopback(), &resolver);
    let ports = [server.port()];
    let grant = network(&["svc.test"], &ports);
    let a = lab.load_granted(
        "hostile",
        |m| grant(m.replace("id = \"warden.hostile\"", "id = \"warden.net-a\"")),
        &Grant::All,
    );
    let b = lab.load_granted(
        "hostile",
        |m| {
            m.replace("id = \"warden.hostile\"", "id = \"warden.net-b\"")
                .replace("max_concurrent_calls = 2", "max_concurrent_calls = 8")
        },
        &Grant::All,
    );
    let target = format!("svc.test:{}", server.port());
    let mut calls = Vec::new();
    for i in 0..8 {
        let id = if i % 2 == 0 { a.clone() } else { b.clone() };
        let host = lab.host.clone();
        let target = target.clone();
        calls.push(tokio::spawn(async move {
            let out = host
                .default_tenant()
                .call(&id, "sock", target.as_bytes())
                .await
                .map(|c| c.value);
            (id, out.map(|o| text(&o)))
        }));
    }
    let mut ok_a = 0;
    for c in calls {
        let (id, out) = c.await.unwrap();
        let Ok(out) = out else {
            // hostile allows 2 calls at once: a busy refusal is fine, a wrong answer is not.
            continue;
        };
        if id == a {
            assert_eq!(out, "sock=ok:pong");
            ok_a += 1;
        } else {
            assert!(out.starts_with("sock=err:"), "{out}");
        }
    }
    assert!(ok_a > 0);
    assert_eq!(
        server.connections(),
        ok_a,
        "only net-a's calls reached the server"
    );
    assert!(
        socket_denials(&lab)
            .iter()
            .all(|r| r.extension() == Some("warden.net-b"))
    );
}
