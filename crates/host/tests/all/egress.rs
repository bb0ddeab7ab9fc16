//! Outgoing HTTP from a real guest (`hostile`'s `egress` method) to real local servers, with
//! the host's real egress check; only name resolution is faked (a table), so "an allowed name
//! that resolves to a forbidden address" and DNS rebinding can be tested without real DNS.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warden_audit::{Event, Outcome, Record};
use warden_host::{ExtensionId, Grant, Lookup, Policy, Resolver};

use crate::support::{Lab, text};

/// A tiny HTTP/1.1 server on a loopback address: counts connections, keeps each request head,
/// and answers every request with the same bytes.
pub(crate) struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub(crate) fn start(ip: &str, port: u16, response: Vec<u8>) -> Server {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port)).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let response = Arc::new(response);
        let (count, seen) = (connections.clone(), heads.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, response) = (seen.clone(), response.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        // A TLS ClientHello (0x16) never ends in a blank line: answer at once.
                        if head.first() == Some(&0x16) {
                            break;
                        }
                    }
                    seen.lock().unwrap().push(text(&head));
                    let _ = stream.write_all(&response);
                    let _ = stream.flush();
                });
            }
        });
        Server {
            addr,
            connections,
            heads,
        }
    }

    pub(crate) fn ok(body: &str) -> Server {
        Server::start("127.0.0.1", 0, reply("200 OK", &[], body.as_bytes()))
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests whose head names `host`: unlike `connections`, blind to strays from other tests
    /// that dial a loopback port they believe closed.
    fn requests_for(&self, host: &str) -> usize {
        let needle = format!("\r\nhost: {host}");
        let heads = self.heads.lock().unwrap();
        heads
            .iter()
            .filter(|h| h.to_ascii_lowercase().contains(&needle))
            .count()
    }
}

pub(crate) fn reply(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Resolves names from a table; each name has a list of answers, one per lookup (the last one
/// repeats), and `*` answers any other name. Counts lookups.
#[derive(Default)]
pub(crate) struct FakeResolver {
    table: HashMap<String, Vec<Vec<IpAddr>>>,
    calls: AtomicUsize,
    seen: Mutex<HashMap<String, usize>>,
}

impl FakeResolver {
    pub(crate) fn new(entries: &[(&str, &[&[&str]])]) -> Arc<FakeResolver> {
        let table = entries
            .iter()
            .map(|(name, answers)| {
                let answers = answers
                    .iter()
                    .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
                    .collect();
                (name.to_string(), answers)
            })
            .collect();
        Arc::new(FakeResolver {
            table,
            ..FakeResolver::default()
        })
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Resolver for FakeResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answers = self
                .table
                .get(name)
                .or_else(|| self.table.get("*"))
                .ok_or_else(|| std::io::Error::other("no such name"))?;
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(name.to_string()).or_insert(0);
            let answer = answers[(*n).min(answers.len() - 1)].clone();
            *n += 1;
            Ok(answer)
        })
    }
}

pub(crate) fn allow_loopback() -> Policy {
    Policy::parse("[policy]\nallow_networks = [\"127.0.0.0/8\"]\n").unwrap()
}

/// hostile's manifest, asking for network access to `hosts` on `ports`.
pub(crate) fn network(hosts: &[&str], ports: &[u16]) -> impl Fn(String) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let section = format!(
        "\n[permissions.network]\nenabled = true\nallowed_hosts = [{}]\nallowed_ports = [{}]\n",
        hosts.join(", "),
        ports.join(", ")
    );
    move |m| m + &section
}

async fn egress(lab: &Lab, id: &ExtensionId, url: &str) -> String {
    text(&lab.call(id, "egress", url.as_bytes()).await.unwrap())
}

fn denials(lab: &Lab) -> Vec<Record> {
    lab.audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Denial)
        .collect()
}

fn last_call(lab: &Lab) -> Record {
    lab.audit
        .records()
        .into_iter()
        .rev()
        .find(|r| r.event() == Event::Call)
        .unwrap()
}

const DENIED: &str = "egress=err:ErrorCode::HttpRequestDenied";

#[tokio::test(flavor = "multi_thread")]
async fn without_network_permission_nothing_is_resolved_or_connected() {
    let server = Server::ok("hello");
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let port = server.port();
    // Not requested by the manifest (everything granted), then requested but not granted.
    let unrequested = lab.load_granted("hostile", |m| m, &Grant::All);
    let url = format!("http://api.acme.test:{port}/secret?token=hunter2");
    assert_eq!(egress(&lab, &unrequested, &url).await, DENIED);
    let ungranted = lab.load_granted(
        "hostile",
        network(&["api.acme.test"], &[port]),
        &Grant::None,
    );
    assert_eq!(egress(&lab, &ungranted, &url).await, DENIED);

    let d = denials(&lab);
    assert_eq!(d.len(), 2, "{d:#?}");
    for r in &d {
        assert_eq!(r.capability(), Some("network"));
        assert_eq!(
            r.target().map(str::to_string),
            Some(format!("http://api.acme.test:{port}"))
        );
        assert_eq!(r.message(), Some("network access is not granted"));
        assert_eq!(r.outcome(), Outcome::Denied);
    }
    // The path and query (which may carry secrets) are in no record.
    let all = format!("{:?}", lab.audit.records());
    assert!(!all.contains("hunter2") && !all.contains("secret"), "{all}");
    assert_eq!(resolver.calls(), 0);
    assert_eq!(server.connections(), 0);
    // The metrics' counts: two network denials, no byte out (both loads share one install id).
    let usage = lab.host.usage();
    assert_eq!(usage.len(), 1, "{usage:?}");
    let (_, id, u) = &usage[0];
    assert_eq!(id, &ungranted);
    assert_eq!(u.denials.get("network"), Some(&2));
    assert_eq!(u.egress_bytes, 0);
}

/// Issue 9, finding 7: a capability the operator granted but the policy forbids was reported
/// as "not granted", pointing the operator at the wrong knob.
#[tokio::test(flavor = "multi_thread")]
async fn a_capability_the_policy_forbids_is_refused_by_policy_not_as_ungranted() {
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let policy = Policy::parse(
        "[policy]\nallow_networks = [\"127.0.0.0/8\"]\ncapabilities = [\"filesystem\", \"secrets\"]\n",
    )
    .unwrap();
    let lab = Lab::with_resolver(policy, Some(resolver.clone()));
    let id = lab.load_granted(
        "hostile",
        |m| {
            network(&["api.acme.test"], &[8080])(m + "\n[permissions]\ncalls = [\"warden.echo\"]\n")
        },
        &Grant::All,
    );
    assert_eq!(
        egress(&lab, &id, "http://api.acme.test:8080/").await,
        DENIED
    );
    let out = text(&lab.call(&id, "invoke", b"warden.echo").await.unwrap());
    assert_eq!(out, "invoke=err:denied");
    let d = denials(&lab);
    let reasons: Vec<(Option<&str>, Option<&str>)> =
        d.iter().map(|r| (r.capability(), r.message())).collect();
    assert!(
        reasons.contains(&(
            Some("network"),
            Some("network access is not allowed by the operator's policy")
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(
            Some("calls"),
            Some("calls to other extensions are not allowed by the operator's policy")
        )),
        "{reasons:?}"
    );
    assert_eq!(resolver.calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_name_reaches_a_local_server_the_policy_names() {
    let body = "hello from the local server";
    let server = Server::ok(body);
    let port = server.port();
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[port]), &Grant::All);
    let out = egress(&lab, &id, &format!("http://api.acme.test:{port}/hello?x=1")).await;
    assert_eq!(
        out,
        format!("egress=ok:200:{}", &body[..32.min(body.len())])
    );
    assert_eq!(server.connections(), 1);
    let head = server.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /hello?x=1 http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nhost: api.acme.test:{port}\r\n")),
        "{head}"
    );
    assert!(denials(&lab).is_empty());
    assert_eq!(last_call(&lab).egress_bytes(), Some(body.len() as u64));
    assert_eq!(resolver.calls(), 1);

    // A trailing dot names the same host: allowed.
    let out = egress(&lab, &id, &format!("http://api.acme.test.:{port}/")).await;
    assert!(out.starts_with("egress=ok:200:"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_name_resolving_to_a_private_address_is_denied() {
    let server = Server::ok("hello");
    let port = server.port();
    let resolver = FakeResolver::new(&[(
        "api.acme.test",
        &[&["127.0.0.1", "169.254.169.254", "::1", "10.0.0.1"]],
    )]);
    let lab = Lab::with_resolver(Policy::default(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[port]), &Grant::All);
    assert_eq!(
        egress(&lab, &id, &format!("http://api.acme.test:{port}/")).await,
        DENIED
    );
    let d = denials(&lab);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        d[0].target().map(str::to_string),
        Some(format!("http://api.acme.test:{port}"))
    );
    let why = d[0].message().unwrap();
    assert!(why.starts_with("resolves to a non-public address"), "{why}");
    assert_eq!(resolver.calls(), 1);
    assert_eq!(server.connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_matching_tricks_are_denied_before_any_lookup() {
    let server = Server::ok("hello");
    let port = server.port();
    let resolver = FakeResolver::new(&[("*", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["*.acme.test"], &[port]), &Grant::All);
    for host in [
        "evilacme.test",
        "acme.test",
        "acme.test.evil.test",
        "api.acme.test.evil.test",
        "api.acme.test..",
        "user@api.acme.test",
        "user:pw@api.acme.test",
        "xn--80ak6aa92e.acme.test.evil.test",
    ] {
        let out = egress(&lab, &id, &format!("http://{host}:{port}/")).await;
        assert_eq!(out, DENIED, "{host}");
    }
    // A non-ASCII name is refused too (IDN must be written as xn--).
    let out = egress(&lab, &id, &format!("http://b\u{fc}cher.acme.test:{port}/")).await;
    // (wasi:http itself refuses a non-ASCII authority before the host sees the request.)
    assert_eq!(out, "egress=err:bad-url");
    assert_eq!(denials(&lab).len(), 8);
    assert_eq!(resolver.calls(), 0);
    assert_eq!(server.connections(), 0);
    // The real subdomain, and the same with a trailing dot, go through.
    for host in ["api.acme.test", "API.Acme.Test."] {
        let out = egress(&lab, &id, &format!("http://{host}:{port}/")).await;
        assert_eq!(out, "egress=ok:200:hello", "{host}");
    }
    assert_eq!(server.connections(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_address_spellings_are_denied() {
    let server = Server::ok("hello");
    let port = server.port();
    let resolver = FakeResolver::new(&[("*", &[&["127.0.0.1"]])]);
    for policy in [Policy::default(), allow_loopback()] {
        let lab = Lab::with_resolver(policy, Some(resolver.clone()));
        let id = lab.load_granted("hostile", network(&["*"], &[port]), &Grant::All);
        for host in [
            "2130706433",
            "0x7f.1",
            "127.1",
            "0x7f000001",
            "0177.0.0.1",
            "017700000001",
        ] {
            let out = egress(&lab, &id, &format!("http://{host}:{port}/")).await;
            assert_eq!(out, DENIED, "{host}");
        }
        let d = denials(&lab);
        assert_eq!(d.len(), 6);
        assert!(
            d.iter()
                .all(|r| r.message().is_some_and(|m| m.contains("numeric address"))),
            "{d:#?}"
        );
    }
    // Canonical literals of loopback, mapped or not, are non-public without a policy naming them.
    let lab = Lab::with_resolver(Policy::default(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["*"], &[port]), &Grant::All);
    for host in [
        "127.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "169.254.169.254",
        "0.0.0.0",
    ] {
        let out = egress(&lab, &id, &format!("http://{host}:{port}/")).await;
        assert_eq!(out, DENIED, "{host}");
    }
    let d = denials(&lab);
    assert!(
        d.iter().all(|r| r
            .message()
            .is_some_and(|m| m.starts_with("non-public address"))),
        "{d:#?}"
    );
    assert_eq!(resolver.calls(), 0);
    assert_eq!(server.connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_host_on_a_forbidden_port_is_denied() {
    let server = Server::ok("hello");
    let port = server.port();
    let resolver = FakeResolver::new(&[("*", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    // No allowed_ports: only 80 and 443.
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[]), &Grant::All);
    assert_eq!(
        egress(&lab, &id, &format!("http://api.acme.test:{port}/")).await,
        DENIED
    );
    let d = denials(&lab);
    assert_eq!(d[0].message(), Some("not in the allowed hosts"));
    assert_eq!(resolver.calls(), 0);
    assert_eq!(server.connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rebinding_never_reaches_the_second_answer() {
    // The checked server listens on 127.0.0.2 (the only range the policy names); the forbidden
    // one on 127.0.0.1, same port. The name answers 127.0.0.2 first, then 127.0.0.1.
    let good = Server::start("127.0.0.2", 0, reply("200 OK", &[], b"checked"));
    let port = good.port();
    let evil = Server::start("127.0.0.1", port, reply("200 OK", &[], b"rebound"));
    let resolver = FakeResolver::new(&[("rebind.acme.test", &[&["127.0.0.2"], &["127.0.0.1"]])]);
    let policy = Policy::parse("[policy]\nallow_networks = [\"127.0.0.2/32\"]\n").unwrap();
    let lab = Lab::with_resolver(policy, Some(resolver.clone()));
    let id = lab.load_granted(
        "hostile",
        network(&["rebind.acme.test"], &[port]),
        &Grant::All,
    );
    let url = format!("http://rebind.acme.test:{port}/");
    // Counted by the requests that name the host: the forbidden port is on 127.0.0.1, where
    // other tests dial ports they believe closed, and one of those may be this one.
    let reached = || {
        let host = "rebind.acme.test";
        (good.requests_for(host), evil.requests_for(host))
    };
    assert_eq!(egress(&lab, &id, &url).await, "egress=ok:200:checked");
    // One lookup per request: the connection went to the checked address.
    assert_eq!(resolver.calls(), 1);
    assert_eq!(reached(), (1, 0));
    // The next request sees the rebound answer, checks it, and is denied.
    assert_eq!(egress(&lab, &id, &url).await, DENIED);
    assert_eq!(resolver.calls(), 2);
    assert_eq!(reached(), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_handed_to_the_guest_not_followed() {
    let forbidden = Server::ok("should never be reached");
    let location = format!("location: http://127.0.0.1:{}/", forbidden.port());
    let server = Server::start("127.0.0.1", 0, reply("302 Found", &[&location], b"moved"));
    let port = server.port();
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[port]), &Grant::All);
    let out = egress(&lab, &id, &format!("http://api.acme.test:{port}/")).await;
    assert_eq!(out, "egress=ok:302:moved");
    assert_eq!(server.connections(), 1);
    assert_eq!(forbidden.connections(), 0);
    // Following it is a new request, checked like any other: not in the allowed hosts.
    let out = egress(
        &lab,
        &id,
        &format!("http://127.0.0.1:{}/", forbidden.port()),
    )
    .await;
    assert_eq!(out, DENIED);
    assert_eq!(forbidden.connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_response_is_cut_at_the_cap() {
    // hostile's max_response_bytes is 1 MiB; the server sends 10 MiB.
    let server = Server::start("127.0.0.1", 0, reply("200 OK", &[], &vec![b'x'; 10 << 20]));
    let port = server.port();
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["api.acme.test"], &[port]), &Grant::All);
    let out = egress(&lab, &id, &format!("http://api.acme.test:{port}/")).await;
    // wasi:http 48 hands body errors to the guest as an I/O error with this text (its
    // `http-error-code` is only filled for errors raised as `ErrorCode`).
    assert_eq!(
        out,
        "egress=body-err:200:HTTP response body size exceeds limit: 1048576 bytes"
    );
    let bytes = last_call(&lab).egress_bytes().unwrap();
    assert!(bytes <= 1 << 20 && bytes > 0, "{bytes}");
    // Issue 9, finding 5: the cut is audited as a limit of the network capability, not only
    // as a call that went fine.
    let limits: Vec<Record> = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Limit && r.capability() == Some("network"))
        .collect();
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert_eq!(
        limits[0].target(),
        Some(format!("http://api.acme.test:{port}").as_str())
    );
    assert!(
        limits[0]
            .message()
            .unwrap_or("")
            .contains("max_response_bytes (1048576 bytes)"),
        "{:?}",
        limits[0]
    );
}

/// Issue 9, finding 5: an allowed request whose name does not resolve left no record at all,
/// so a wildcard entry allowed unaudited lookups of `<data>.allowed.test`. Every lookup is now
/// a recorded use of the network capability (`dns:NAME`), answered or not.
#[tokio::test(flavor = "multi_thread")]
async fn every_lookup_of_an_allowed_name_is_audited_even_when_it_fails() {
    let resolver = FakeResolver::new(&[]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted("hostile", network(&["*.exfil.test"], &[80]), &Grant::All);
    let out = egress(&lab, &id, "http://c2VjcmV0LWRhdGE.exfil.test/").await;
    assert!(out.starts_with("egress=err:"), "{out}");
    assert_eq!(resolver.calls(), 1);
    let lookups: Vec<Record> = lab
        .audit
        .records()
        .into_iter()
        .filter(|r| {
            r.event() == Event::Grant
                && r.capability() == Some("network")
                && r.target()
                    == Some(
                        "dns:c2vjcmv0lwrhdgE.exfil.test"
                            .to_ascii_lowercase()
                            .as_str(),
                    )
        })
        .collect();
    assert_eq!(lookups.len(), 1, "{:?}", lab.audit.records());
}

#[tokio::test(flavor = "multi_thread")]
async fn https_goes_through_tls_with_the_checked_address() {
    // A plain-HTTP server: the TLS handshake fails, which shows the request was admitted,
    // connected to the checked address, and spoke TLS (not that it was denied).
    let server = Server::ok("not tls");
    let port = server.port();
    let resolver = FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let id = lab.load_granted(
        "hostile",
        network(&["https://api.acme.test"], &[port]),
        &Grant::All,
    );
    let out = egress(&lab, &id, &format!("https://api.acme.test:{port}/")).await;
    assert!(out.starts_with("egress=err:") && out != DENIED, "{out}");
    assert_eq!(server.connections(), 1);
    // The entry names https: plain http to the same host is not allowed.
    let out = egress(&lab, &id, &format!("http://api.acme.test:{port}/")).await;
    assert_eq!(out, DENIED);
    assert_eq!(server.connections(), 1);
}

/// The fetcher example, pointed at a local server: an allowed fetch returns the body, a host it
/// does not list is a typed `denied` error (the call itself returns normally to the host), and
/// both are in the audit log.
#[tokio::test(flavor = "multi_thread")]
async fn the_fetcher_example_fetches_only_from_its_allowed_hosts() {
    let server = Server::ok("fetched body");
    let resolver = FakeResolver::new(&[
        ("svc.test", &[&["127.0.0.1"]]),
        ("other.test", &[&["127.0.0.1"]]),
    ]);
    let lab = Lab::with_resolver(allow_loopback(), Some(resolver.clone()));
    let port = server.port();
    let id = lab.load_granted(
        "fetcher",
        |m| {
            m.replace(
                r#"allowed_hosts = ["https://example.com", "https://*.example.com"]"#,
                &format!(r#"allowed_hosts = ["http://svc.test:{port}"]"#),
            )
        },
        &Grant::All,
    );
    let out = lab
        .call(
            &id,
            "fetch",
            format!("http://svc.test:{port}/page").as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(text(&out), "200\nfetched body");
    let err = lab
        .call(
            &id,
            "fetch",
            format!("http://other.test:{port}/").as_bytes(),
        )
        .await
        .unwrap_err();
    match &err.error {
        warden_host::CallError::Extension { code, .. } => assert_eq!(code, "denied"),
        other => panic!("expected the extension's denied error, got {other:?}"),
    }
    assert_eq!(server.connections(), 1);
    let d = denials(&lab);
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].target(),
        Some(format!("http://other.test:{port}").as_str())
    );
    assert!(lab.audit.records().iter().any(|r| r.event() == Event::Grant
        && r.target() == Some(format!("http://svc.test:{port}").as_str())));
}
