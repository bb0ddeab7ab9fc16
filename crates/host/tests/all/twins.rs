//! One extension written twice: `examples/kv-counter` (a component) and
//! `examples/process/kv-counter` (a native process). Loaded with the same grants on one host,
//! the same calls give the same outputs, the same errors, and the same audit trail of uses
//! and denials: a process extension is a second kind of extension, not a second product.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use warden_audit::{Event, Record};
use warden_host::{ExtensionId, Grant, Policy};

use crate::support::{Lab, text};

/// A loopback server answering every request with 204.
pub(crate) fn server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
        }
    });
    port
}

/// Points `ping`'s allowed host at the test's server.
pub(crate) fn allow(port: u16) -> impl Fn(String) -> String {
    move |m: String| {
        m.replace(
            "allowed_hosts = [\"example.com\"]",
            &format!("allowed_hosts = [\"127.0.0.1\"]\nallowed_ports = [{port}]"),
        )
    }
}

/// `allow(port)`, and a time limit of 10 s rather than the strict profile's 1 s: the twins are
/// compared on their answers, and a process started on a loaded machine (CI beside other
/// work) took longer than 1 s to answer.
fn allow_slowly(port: u16) -> impl Fn(String) -> String {
    move |m: String| {
        assert!(m.contains("profile = \"strict\"\n"), "{m}");
        allow(port)(m).replace(
            "profile = \"strict\"\n",
            "profile = \"strict\"\nmax_execution_time = \"10s\"\n",
        )
    }
}

fn load_twins(lab: &Lab, port: u16, grant: &Grant) -> (ExtensionId, ExtensionId) {
    let component = lab.bundle("kv-counter", allow_slowly(port));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/process/kv-counter");
    let binary = src.join("kv-counter");
    assert!(
        binary.exists(),
        "{} is missing: run scripts/build-examples.sh",
        binary.display()
    );
    let stage = lab.dir.path().join(format!(
        "twin-{}",
        lab.dir.path().read_dir().unwrap().count()
    ));
    fs::create_dir_all(&stage).unwrap();
    fs::copy(&binary, stage.join("kv-counter")).unwrap();
    let manifest = fs::read_to_string(src.join("extension.toml")).unwrap();
    fs::write(stage.join("extension.toml"), allow_slowly(port)(manifest)).unwrap();
    let process = lab.sign_dir(&stage);
    let tenant = lab.host.default_tenant();
    let c = tenant.load_file(&component, None, grant).unwrap().id;
    let p = tenant.load_file(&process, None, grant).unwrap().id;
    (c, p)
}

/// What a call gave: the output, or the error's code and message.
pub(crate) async fn outcome(lab: &Lab, id: &ExtensionId, method: &str, input: &[u8]) -> String {
    match lab.host.default_tenant().call(id, method, input).await {
        Ok(c) => format!("ok {}", text(&c.value)),
        // The host's own messages name the extension: its id is the one difference.
        Err(f) => format!("err {}: {}", f.error.guest_code(), f.error).replace(id.as_str(), "ID"),
    }
}

/// The uses and denials recorded for `id`, in order, as (event, capability, target).
pub(crate) fn trail(lab: &Lab, id: &ExtensionId) -> Vec<(String, String, String)> {
    let shown = |r: &Record| {
        (
            format!("{:?}", r.event()),
            r.capability().unwrap_or("").to_owned(),
            r.target().unwrap_or("").to_owned(),
        )
    };
    lab.audit
        .records()
        .iter()
        .filter(|r| r.extension() == Some(id.as_str()))
        .filter(|r| matches!(r.event(), Event::Grant | Event::Denial))
        .map(shown)
        .collect()
}

/// The calls every version of kv-counter is put through: counting, bad input, pings allowed
/// and forbidden, an unknown method.
pub(crate) fn kv_counter_calls(allowed: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("increment", b"visits".to_vec()),
        ("increment", b"visits 41".to_vec()),
        ("increment", b"".to_vec()),
        ("get", b"visits".to_vec()),
        ("get", b"never".to_vec()),
        ("increment", b"visits many".to_vec()),
        ("get", vec![0xff, 0xfe]),
        ("ping", allowed.as_bytes().to_vec()),
        ("ping", b"http://127.0.0.1:1/".to_vec()),
        ("ping", b"http://10.0.0.1/".to_vec()),
        ("ping", b"ftp://example.com/".to_vec()),
        ("ping", b"not a url".to_vec()),
        ("nosuch", b"".to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_component_and_the_process_give_the_same_answers_and_denials() {
    let lab =
        Lab::with_policy(Policy::parse("[policy]\nallow_networks = [\"127.0.0.0/8\"]\n").unwrap());
    let port = server();
    let allowed = format!("http://127.0.0.1:{port}/health");
    let calls = kv_counter_calls(&allowed);
    for (grant, kv_works) in [(Grant::All, true), (Grant::None, false)] {
        let (component, process) = load_twins(&lab, port, &grant);
        for (method, input) in &calls {
            let c = outcome(&lab, &component, method, input).await;
            let p = outcome(&lab, &process, method, input).await;
            assert_eq!(c, p, "{method} {:?} with {grant:?}", text(input));
        }
        // Not a vacuous comparison: the counter counted (or was refused), and the ping went
        // out (or was refused).
        let got = outcome(&lab, &process, "get", b"visits").await;
        assert_eq!(got, outcome(&lab, &component, "get", b"visits").await);
        let want = if kv_works { "ok 42" } else { "err denied" };
        assert!(got.starts_with(want), "{got}");
        assert_eq!(trail(&lab, &component), trail(&lab, &process));
        assert!(!trail(&lab, &process).is_empty());
    }
}
