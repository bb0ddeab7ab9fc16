//! `warden serve` as operators and clients use it: the real binary on a loopback port with a
//! temporary data dir, bundles published and installed over the admin API, calls through the
//! gateway with a real HTTP client (and raw sockets where the attack is in the bytes), and the
//! audit log read back with `warden audit`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::foundation::{keygen, ok, pack, sign, trust_file, warden};

const ADMIN: &str = "admin-token-0123456789-0123456789-abcdef";
const RUNNER: &str = "runner-token-0123456789-0123456789-abcdef";

/// A running `warden serve`; killed when dropped.
struct Server {
    child: Child,
    base: String,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    t: tempfile::TempDir,
    trust: PathBuf,
    data: PathBuf,
    key: PathBuf,
    pem: String,
    /// With `WARDEN_TEST_BACKEND=shared`: the test's PostgreSQL database and S3 prefix.
    shared: Option<crate::shared::SharedStorage>,
}

fn setup() -> Setup {
    let t = tempfile::TempDir::new().unwrap();
    let p = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&p.pem], &[])],
    );
    let data = t.path().join("data");
    let shared = crate::shared::on().then(|| crate::shared::SharedStorage::new(t.path()));
    let st = Setup {
        trust,
        data,
        key: p.key,
        pem: p.pem,
        t,
        shared,
    };
    st.write_config("");
    st
}

impl Setup {
    /// `dir` packed and signed: (bundle, signature).
    fn bundle(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let b = self.t.path().join(format!("{name}.wext"));
        pack(dir, &b);
        sign(&b, &self.key);
        let sig = PathBuf::from(format!("{}.sig", b.display()));
        (b, sig)
    }

    fn serve(&self, config: &str) -> Server {
        self.serve_logged(config, None)
    }

    /// The operator config every command of the test reads: `config`, and the `[storage]`
    /// section on shared storage.
    fn config_file(&self) -> PathBuf {
        self.t.path().join("policy.toml")
    }

    fn write_config(&self, config: &str) {
        let storage = self.shared.as_ref().map_or("", |s| s.section.as_str());
        std::fs::write(self.config_file(), format!("{config}{storage}")).unwrap();
    }

    /// `warden ARGS --data DATA`, and `--config` on shared storage (the service's config).
    fn cli(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
        let cfg = self.config_file();
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = args.to_vec();
        all.push(&"--data");
        all.push(&self.data);
        if self.shared.is_some() {
            all.push(&"--config");
            all.push(&cfg);
        }
        warden(&all)
    }

    /// The service with its stderr (its logs, `WARDEN_LOG=trace` but audit records) in `log`.
    fn serve_logged(&self, config: &str, log: Option<&Path>) -> Server {
        self.write_config(config);
        self.runner(&self.data, log)
    }

    /// One more `warden serve` on data dir `data` with the config as written last (on shared
    /// storage, another runner of the same fleet).
    fn runner(&self, data: &Path, log: Option<&Path>) -> Server {
        let cfg = self.config_file();
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--trust")
            .arg(&self.trust)
            .arg("--config")
            .arg(&cfg)
            .env("WARDEN_ADMIN_TOKEN", ADMIN)
            .env("WARDEN_RUNNER_TOKEN", RUNNER)
            .env_remove("WARDEN_TRUST_BUNDLE")
            .env_remove("WARDEN_AUDIT_KEY")
            .env(
                "WARDEN_LOG",
                if log.is_some() {
                    "trace,warden::audit=off"
                } else {
                    "warn"
                },
            )
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("warden serve listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let addr = base.trim_start_matches("http://").to_string();
        Server { child, base, addr }
    }
}

fn example(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let d = if name.starts_with("hostile") {
        root.join("tests/guests").join(name)
    } else {
        root.join("examples").join(name)
    };
    assert!(
        d.join("extension.wasm").exists(),
        "run scripts/build-examples.sh first"
    );
    d
}

/// The example (or test guest) `name` copied to the test's folder `to`, its manifest passed
/// through `edit`; returns the folder.
fn edited(st: &Setup, name: &str, to: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let dir = st.t.path().join(to);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        example(name).join("extension.wasm"),
        dir.join("extension.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(example(name).join("extension.toml")).unwrap();
    std::fs::write(dir.join("extension.toml"), edit(manifest)).unwrap();
    dir
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `code` of a JSON error body.
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn reply(r: Result<http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

fn get(url: &str, auth: Option<&str>) -> Reply {
    let mut req = agent().get(url);
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    reply(req.call())
}

fn send(method: &str, url: &str, auth: Option<&str>, body: &[u8]) -> Reply {
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    reply(agent().run(req.body(body.to_vec()).unwrap()))
}

/// Publishes a bundle over the admin API; returns its content hash.
fn publish(s: &Server, bundle: &Path, sig: &Path) -> String {
    let r = publish_reply(s, bundle, sig);
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["content_hash"].as_str().unwrap().to_string()
}

/// Publishes a bundle over the admin API; the service's answer.
fn publish_reply(s: &Server, bundle: &Path, sig: &Path) -> Reply {
    publish_with(&agent(), s, bundle, sig)
}

/// [`publish_reply`] with `agent` (a big component compiles at publish, for longer than
/// [`agent`]'s timeout).
fn publish_with(agent: &ureq::Agent, s: &Server, bundle: &Path, sig: &Path) -> Reply {
    let boundary = "warden-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, path) in [("bundle", bundle), ("signature", sig)] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&std::fs::read(path).unwrap());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    reply(
        agent.run(
            http::Request::post(format!("{}/v1/admin/bundles", s.base))
                .header("authorization", format!("Bearer {ADMIN}"))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .unwrap(),
        ),
    )
}

fn tenant(s: &Server, name: &str) -> String {
    let r = send(
        "POST",
        &format!("{}/v1/admin/tenants", s.base),
        Some(ADMIN),
        format!("{{\"name\":\"{name}\"}}").as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["api_key"].as_str().unwrap().to_string()
}

fn install(s: &Server, tenant: &str, id: &str, hash: &str, grant: &str) -> Reply {
    send(
        "PUT",
        &format!("{}/v1/admin/tenants/{tenant}/installs/{id}", s.base),
        Some(ADMIN),
        format!("{{\"content_hash\":\"{hash}\",\"grant\":\"{grant}\"}}").as_bytes(),
    )
}

/// Raw bytes in, every response's status line out (the connection is read to its end).
fn raw(addr: &str, request: &[u8], wait: Duration) -> Vec<String> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    // The service may answer (and close) before it has read everything: that is fine.
    let _ = c.write_all(request);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .map(str::to_string)
        .collect()
}

/// The audit records (of the data dir, or of shared storage), as JSON.
fn audit(st: &Setup) -> Vec<serde_json::Value> {
    ok(&st.cli(&[&"audit", &"--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn record_for(records: &[serde_json::Value], request_id: &str) -> Vec<serde_json::Value> {
    records
        .iter()
        .filter(|r| r["record"]["request_id"] == request_id)
        .map(|r| r["record"].clone())
        .collect()
}

const CONFIG: &str =
    "[policy.gateway]\nbody_timeout = \"1s\"\ntenant_concurrency = 2\nmax_uri_bytes = \"2KiB\"\n";

#[test]
fn every_status_of_the_error_mapping_comes_from_a_real_request_and_is_audited() {
    let st = setup();
    let s = st.serve(CONFIG);
    let (hello, hello_sig) = st.bundle(&example("hello"), "hello");
    let (hostile, hostile_sig) = st.bundle(&example("hostile-http"), "hostile");
    let hello_hash = publish(&s, &hello, &hello_sig);
    let hostile_hash = publish(&s, &hostile, &hostile_sig);
    let alpha = tenant(&s, "alpha");
    let beta = tenant(&s, "beta");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hello_hash, "none").status,
        200
    );
    let r = install(&s, "alpha", "warden.hostile-http", &hostile_hash, "none");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        install(&s, "beta", "warden.hello", &hello_hash, "none").status,
        200
    );
    let ext = |id: &str, path: &str| format!("{}/api/ext/{id}{path}", s.base);

    // 200, with the gateway's request id.
    let r = get(&ext("warden.hello", "/hi"), Some(&alpha));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Hello from warden"), "{}", r.body);
    assert!(r.headers.contains_key("x-request-id"));

    // 400: a dot segment, encoded.
    let r = get(&ext("warden.hello", "/a/%2e%2e/b"), Some(&alpha));
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "malformed"),
        "{}",
        r.body
    );

    // 401: no key, a malformed key, an unknown key.
    assert_eq!(get(&ext("warden.hello", "/hi"), None).status, 401);
    assert_eq!(get(&ext("warden.hello", "/hi"), Some("nope")).status, 401);
    let unknown = format!("wdn_{}", "0".repeat(64));
    let r = get(&ext("warden.hello", "/hi"), Some(&unknown));
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));

    // 403: a tenant's key on the admin API.
    let r = get(&format!("{}/v1/admin/tenants", s.base), Some(&alpha));
    assert_eq!((r.status, r.code().as_str()), (403, "denied"), "{}", r.body);
    // On shared storage the data dir keeps only what is the runner's own (the compile cache,
    // verified copies of blobs): no database, no audit log.
    if st.shared.is_some() {
        for local in ["warden.db", "audit", "secret.key", "audit.key"] {
            assert!(!st.data.join(local).exists(), "{local} in the data dir");
        }
    }

    // 404: an endpoint not in the manifest, an unknown extension, and another tenant's
    // install, worded exactly as if it did not exist.
    let r = send("POST", &ext("warden.hello", "/hi"), Some(&alpha), b"");
    assert_eq!(r.status, 404, "{}", r.body);
    let theirs = get(&ext("warden.hostile-http", "/x"), Some(&beta));
    let nothing = get(&ext("warden.nothing", "/x"), Some(&beta));
    assert_eq!(theirs.status, 404);
    assert_eq!(
        theirs.json()["error"]["message"]
            .as_str()
            .unwrap()
            .replace("warden.hostile-http", "ID"),
        nothing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .replace("warden.nothing", "ID")
    );

    // 408: a body announced and never sent.
    let lines = raw(
        &s.addr,
        format!("POST /api/ext/warden.hostile-http/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alpha}\r\nContent-Length: 10\r\n\r\nabc").as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(lines, ["HTTP/1.1 408 Request Timeout"]);

    // 413: over the extension's max_request_bytes (strict: 1 MiB), refused from its
    // Content-Length before the body is read; and a body that turns out longer than that.
    let lines = raw(
        &s.addr,
        format!("POST /api/ext/warden.hostile-http/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alpha}\r\nContent-Length: 1048577\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(lines, ["HTTP/1.1 413 Payload Too Large"]);
    let mut chunked = format!("POST /api/ext/warden.hostile-http/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alpha}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for _ in 0..17 {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend_from_slice(&[b'x'; 0x10000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let lines = raw(&s.addr, &chunked, Duration::from_secs(5));
    assert_eq!(lines, ["HTTP/1.1 413 Payload Too Large"]);

    // 414: over max_uri_bytes.
    let long = format!("/{}", "a".repeat(3000));
    assert_eq!(get(&ext("warden.hello", &long), Some(&alpha)).status, 414);

    // 431: more headers than allowed.
    let mut req = agent()
        .get(ext("warden.hello", "/hi"))
        .header("authorization", format!("Bearer {alpha}"));
    for i in 0..70 {
        req = req.header(format!("x-h{i}"), "1");
    }
    assert_eq!(reply(req.call()).status, 431);

    // 502: the extension traps; its memory limit.
    let trap = get(&ext("warden.hostile-http", "/trap"), Some(&alpha));
    assert_eq!(
        (trap.status, trap.code().as_str()),
        (502, "trap"),
        "{}",
        trap.body
    );
    let oom = get(&ext("warden.hostile-http", "/oom"), Some(&alpha));
    assert_eq!(
        (oom.status, oom.code().as_str()),
        (502, "memory-limit"),
        "{}",
        oom.body
    );

    // 504 and 429: two calls that never end fill the tenant's two slots; a third is 429.
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let url = ext("warden.hostile-http", "/loop");
            let key = alpha.clone();
            std::thread::spawn(move || get(&url, Some(&key)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let busy = get(&ext("warden.hello", "/hi"), Some(&alpha));
    assert_eq!(
        (busy.status, busy.code().as_str()),
        (429, "busy"),
        "{}",
        busy.body
    );
    assert!(busy.headers.contains_key("retry-after"));
    let timeouts: Vec<Reply> = loops.into_iter().map(|h| h.join().unwrap()).collect();
    for t in &timeouts {
        assert_eq!(
            (t.status, t.code().as_str()),
            (504, "timeout"),
            "{}",
            t.body
        );
    }

    // Every call is in the audit log under the id the client was given, and the log verifies.
    let records = audit(&st);
    let trap_id = trap.json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let calls = record_for(&records, &trap_id);
    assert!(
        calls
            .iter()
            .any(|r| r["event"] == "call" && r["outcome"] == "trap" && r["tenant"] == "alpha"),
        "{calls:?}"
    );
    let t_id = timeouts[0].json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        record_for(&records, &t_id)
            .iter()
            .any(|r| r["event"] == "limit" && r["outcome"] == "timeout"),
        "{records:?}"
    );
    let ok_id = r_id(&get(&ext("warden.hello", "/hi"), Some(&alpha)));
    let records = audit(&st);
    assert!(
        record_for(&records, &ok_id)
            .iter()
            .any(|r| r["event"] == "call" && r["outcome"] == "ok"),
    );
    // The gateway's own refusals of a known tenant are recorded too: the first of a kind
    // alone, its repeats within a second counted into a summary.
    let refused = |outcome: &str| {
        records
            .iter()
            .filter(|r| {
                r["record"]["tenant"] == "alpha"
                    && r["record"]["outcome"] == outcome
                    && r["record"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("refused by the gateway"))
            })
            .map(|r| refusals_in(&r["record"]))
            .sum::<u64>()
    };
    assert_eq!(refused("too-large"), 2, "{records:?}");
    assert_eq!(refused("timeout"), 1, "{records:?}");
    assert!(refused("invalid") >= 2, "{records:?}");
    ok(&st.cli(&[&"audit", &"--verify"]));

    // The metrics of SPEC section 8 count what happened above.
    let m = get(&format!("{}/metrics", s.base), Some(ADMIN));
    assert_eq!(m.status, 200, "{}", m.body);
    let value = |series: &str| -> f64 {
        m.body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{}", m.body))
    };
    let hostile = r#"tenant="alpha",extension="warden.hostile-http""#;
    assert_eq!(value(&format!("warden_timeouts_total{{{hostile}}}")), 2.0);
    assert_eq!(
        value(&format!(
            "warden_limit_hits_total{{{hostile},limit=\"memory\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "warden_limit_hits_total{{{hostile},limit=\"time\"}}"
        )),
        2.0
    );
    let hello = r#"tenant="alpha",extension="warden.hello""#;
    assert_eq!(
        value(&format!("warden_call_duration_seconds_count{{{hello}}}")),
        2.0
    );
    assert_eq!(
        value(&format!(
            "warden_call_duration_seconds_bucket{{{hello},le=\"+Inf\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!("warden_call_duration_seconds_count{{{hostile}}}")),
        4.0,
        "a trap, a memory limit, two timeouts"
    );
    assert!(value("warden_instance_pool_capacity") >= 1.0);
    assert_eq!(value("warden_instance_pool_plugins"), 0.0);
    assert_eq!(value("warden_instance_pool_instances"), 0.0);
    assert_eq!(value("warden_audit_healthy"), 1.0);
}

fn r_id(r: &Reply) -> String {
    r.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn headers_cross_the_gateway_only_as_the_policy_allows() {
    let st = setup();
    let s = st.serve(CONFIG);
    let (hostile, hostile_sig) = st.bundle(&example("hostile-http"), "hostile");
    let hash = publish(&s, &hostile, &hostile_sig);
    let alpha = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hostile-http", &hash, "none").status,
        200
    );
    let url = |p: &str| format!("{}/api/ext/warden.hostile-http{p}", s.base);

    // In: credentials, hop-by-hop, Connection-named and client-claimed forwarding headers are
    // gone; the gateway's own are there.
    let r = reply(
        agent()
            .get(url("/headers"))
            .header("authorization", format!("Bearer {alpha}"))
            .header("cookie", "session=secret-cookie")
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("x-request-id", "spoofed-id")
            .header("x-warden-tenant", "beta")
            .header("true-client-ip", "6.6.6.7")
            .header("connection", "x-drop-me")
            .header("x-drop-me", "1")
            .header("x-kept", "kept")
            .call(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.body.to_ascii_lowercase();
    for gone in [
        "authorization",
        "cookie",
        "6.6.6.6",
        "spoofed-id",
        "x-drop-me",
        "forwarded: ",
        "6.6.6.7",
        "x-warden-tenant",
    ] {
        assert!(
            !seen.contains(gone),
            "{gone} reached the extension:\n{seen}"
        );
    }
    assert!(seen.contains("x-kept: kept"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
    assert!(
        seen.contains(&format!("x-request-id: {}", r_id(&r))),
        "{seen}"
    );

    // Out: only the allowlist, never set-cookie.
    let r = get(&url("/cookie"), Some(&alpha));
    assert_eq!(r.status, 200);
    assert!(r.headers.get("set-cookie").is_none() && r.headers.get("server").is_none());
    assert_eq!(r.headers.get("x-ext-ok").unwrap(), "yes");
    // CR LF in a header value never leaves (Wasmtime refuses it to the guest already).
    let r = get(&url("/crlf"), Some(&alpha));
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("x-ext-crlf-taken").unwrap(), "no");
    assert!(r.headers.get("x-ext-bad").is_none());
}

#[test]
fn smuggling_and_slow_requests_get_one_answer_each() {
    let st = setup();
    let s = st.serve("[policy.gateway]\nheader_timeout = \"1s\"\n");
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(&s, &hello, &sig);
    let k = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    let head = format!("Host: t\r\nAuthorization: Bearer {k}\r\n");
    let wait = Duration::from_secs(3);
    // CL.TE: chunked wins, the "body" is not a second request.
    let clte = format!(
        "POST /api/ext/warden.hello/hi HTTP/1.1\r\n{head}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/ext/warden.hello/smuggled HTTP/1.1\r\n{head}\r\n"
    );
    assert_eq!(raw(&s.addr, clte.as_bytes(), wait).len(), 1);
    // TE.CL.
    let tecl = format!(
        "POST /api/ext/warden.hello/hi HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"
    );
    assert_eq!(raw(&s.addr, tecl.as_bytes(), wait).len(), 1);
    // Two different Content-Lengths, an obs-fold, a bad Transfer-Encoding: 400.
    for bad in [
        format!(
            "GET /api/ext/warden.hello/hi HTTP/1.1\r\n{head}Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello"
        ),
        format!("GET /api/ext/warden.hello/hi HTTP/1.1\r\n{head}X-A: 1\r\n  folded\r\n\r\n"),
        format!(
            "POST /api/ext/warden.hello/hi HTTP/1.1\r\n{head}Transfer-Encoding: xchunked\r\n\r\n"
        ),
    ] {
        assert_eq!(
            raw(&s.addr, bad.as_bytes(), wait),
            ["HTTP/1.1 400 Bad Request"],
            "{bad:?}"
        );
    }
    // Slowloris: a head that never ends is cut at header_timeout, with no answer passed on.
    let start = std::time::Instant::now();
    let lines = raw(
        &s.addr,
        b"GET /api/ext/warden.hello/hi HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n",
        Duration::from_secs(10),
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(lines.iter().all(|l| !l.contains("200")), "{lines:?}");
    // The service still answers.
    assert_eq!(
        get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(&k)).status,
        200
    );
}

#[test]
fn a_revoked_key_stops_the_install_at_once_after_a_trust_reload() {
    let st = setup();
    let s = st.serve("");
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(&s, &hello, &sig);
    let k = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    let url = format!("{}/api/ext/warden.hello/hi", s.base);
    assert_eq!(get(&url, Some(&k)).status, 200);
    // HEAD is answered by the GET endpoint, without a body (red team: it was 404).
    let head = send("HEAD", &url, Some(&k), b"");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    // A wrong method on a service route: the JSON error body, with its request id.
    let r = send("DELETE", &format!("{}/v1/execute", s.base), None, b"");
    assert_eq!(
        (r.status, r.code().as_str()),
        (405, "method-not-allowed"),
        "{}",
        r.body
    );
    // The same id and version with other content cannot be published (red team: it was).
    let other = edited(&st, "hello", "hello-other", |m| {
        format!("{m}\n# other content\n")
    });
    let (b2, s2) = st.bundle(&other, "hello-other");
    let r = publish_reply(&s, &b2, &s2);
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "version-exists"),
        "{}",
        r.body
    );
    // A trust file that does not parse changes nothing, and the operator is told so.
    let good = std::fs::read(&st.trust).unwrap();
    std::fs::write(&st.trust, "[[publisher]]\nname = \"broken\n").unwrap();
    let r = reload_trust(&s);
    assert_eq!(
        (r.status, r.code().as_str()),
        (500, "trust-reload-failed"),
        "{}",
        r.body
    );
    assert!(r.body.contains("not reloaded"), "{}", r.body);
    assert_eq!(get(&url, Some(&k)).status, 200);
    std::fs::write(&st.trust, good).unwrap();
    // The operator revokes the publisher's key (its only one, so the publisher goes; another
    // stays trusted) and reloads the trust bundle.
    let other = keygen(&st.t.path().join("other"), "someone-else");
    trust_file(
        st.t.path(),
        "trust.toml",
        &[("someone-else", &[&other.pem], &[&st.pem])],
    );
    // SIGHUP reads it again.
    crate::foundation::signal(s.child.id(), "-HUP");
    let mut r = get(&url, Some(&k));
    for _ in 0..50 {
        if r.status != 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        r = get(&url, Some(&k));
    }
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "integrity"),
        "{}",
        r.body
    );
    // So does the admin API.
    let r = reload_trust(&s);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(&url, Some(&k));
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "integrity"),
        "{}",
        r.body
    );
    let records = audit(&st);
    let reloads = |outcome: &str| {
        records
            .iter()
            .filter(|r| r["record"]["event"] == "trust-reload" && r["record"]["outcome"] == outcome)
            .count()
    };
    assert_eq!(reloads("ok"), 2, "{records:?}");
    // The reload of a broken trust file is on record too (it changed nothing).
    assert_eq!(reloads("invalid"), 1, "{records:?}");
    assert!(
        records
            .iter()
            .any(|r| r["record"]["event"] == "tenant" && r["record"]["tenant"] == "alpha"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["record"]["event"] == "verification-failure"
                && r["record"]["tenant"] == "alpha"),
        "{records:?}"
    );
}

#[test]
fn the_runner_api_calls_rpc_extensions_with_its_own_token() {
    let st = setup();
    let s = st.serve("");
    let (echo, sig) = st.bundle(&example("echo"), "echo");
    let hash = publish(&s, &echo, &sig);
    tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.echo", &hash, "none").status,
        200
    );
    let body = br#"{"tenant":"alpha","extension":"warden.echo","method":"echo","input":{"n":1}}"#;
    let url = format!("{}/v1/execute", s.base);
    let r = send("POST", &url, Some(RUNNER), body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["output"], serde_json::json!({"n": 1}));
    assert_eq!(send("POST", &url, Some(ADMIN), body).status, 401);
    assert_eq!(send("POST", &url, None, body).status, 401);
    let r = send("POST", &url, Some(RUNNER), b"{not json");
    assert_eq!((r.status, r.code().as_str()), (400, "malformed"));
    let other = br#"{"tenant":"beta","extension":"warden.echo","method":"echo"}"#;
    assert_eq!(send("POST", &url, Some(RUNNER), other).status, 404);

    // Bytes that are not JSON go in as base64 and come back out the same way.
    let bytes = b"\x00\x01\x02\xff not json \xfe";
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let with = |fields: &str| {
        format!(r#"{{"tenant":"alpha","extension":"warden.echo","method":"echo",{fields}}}"#)
    };
    let r = send(
        "POST",
        &url,
        Some(RUNNER),
        with(&format!(r#""input_base64":"{}""#, b64(bytes))).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["output_base64"], b64(bytes));
    // Not both, not broken base64, and the extension's own input limit holds for bytes too
    // (echo's manifest: 1 MiB).
    for (fields, status, code) in [
        (
            r#""input":1,"input_base64":"AA==""#.to_string(),
            400,
            "malformed",
        ),
        (
            r#""input_base64":"not base64!""#.to_string(),
            400,
            "malformed",
        ),
        (r#""input_base64":"AAA""#.to_string(), 400, "malformed"),
        (r#""input_base64":7"#.to_string(), 400, "malformed"),
        (
            format!(r#""input_base64":"{}""#, b64(&vec![7u8; (1 << 20) + 1])),
            413,
            "too-large",
        ),
    ] {
        let r = send("POST", &url, Some(RUNNER), with(&fields).as_bytes());
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{fields:.80}: {}",
            r.body
        );
    }
}

/// Memory a burst of requests freed goes back to the system (glibc's arenas kept it: RSS went
/// from 26 to 44 MB with 400 connections, and stayed there): within a trim interval after the
/// burst, the service's RSS is down by at least half of what the burst added.
#[test]
fn memory_a_burst_freed_is_given_back() {
    let st = setup();
    let s = st.serve(
        "[policy.gateway]\ntenant_rate = 100000\ntenant_burst = 100000\ntenant_concurrency = 100000\n",
    );
    let (b, sig) = st.bundle(&example("hello"), "hello");
    let key = installed_for_alpha(&s, &b, &sig, "warden.hello");
    let url = format!("{}/api/ext/warden.hello/x", s.base);
    assert_eq!(get(&url, Some(&key)).status, 200);
    let status = format!("/proc/{}/status", s.child.id());
    let rss = || -> u64 {
        let text = std::fs::read_to_string(&status).unwrap();
        let line = text.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss();
    // 400 connections at once, each sending requests for two seconds.
    let until = Instant::now() + Duration::from_secs(2);
    let burst: Vec<_> = (0..400)
        .map(|_| {
            let (url, key) = (url.clone(), key.clone());
            std::thread::spawn(move || {
                let agent = agent();
                while Instant::now() < until {
                    let _ = agent
                        .get(&url)
                        .header("authorization", format!("Bearer {key}"))
                        .call();
                }
            })
        })
        .collect();
    for t in burst {
        t.join().unwrap();
    }
    let peak = rss();
    assert!(
        peak > before + 8 * 1024,
        "the burst did not grow the service: {before} -> {peak} kB"
    );
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut now = rss();
    while now > before + (peak - before) / 2 {
        assert!(
            Instant::now() < deadline,
            "RSS {before} kB before the burst, {peak} kB after it, still {now} kB"
        );
        std::thread::sleep(Duration::from_millis(500));
        now = rss();
    }
}

#[test]
fn shutdown_finishes_calls_in_flight_and_refuses_new_ones() {
    let st = setup();
    let mut s = st.serve("");
    let (hostile, sig) = st.bundle(&example("hostile-http"), "hostile");
    let hash = publish(&s, &hostile, &sig);
    let k = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hostile-http", &hash, "none").status,
        200
    );
    // A call that runs until its 3 s limit.
    let url = format!("{}/api/ext/warden.hostile-http/loop", s.base);
    let key = k.clone();
    let slow = std::thread::spawn(move || get(&url, Some(&key)));
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&s);
    std::thread::sleep(Duration::from_millis(300));
    let r = get(
        &format!("{}/api/ext/warden.hostile-http/x", s.base),
        Some(&k),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "unavailable"),
        "{}",
        r.body
    );
    // The call in flight got its own answer, not a reset connection.
    let done = slow.join().unwrap();
    assert_eq!(done.status, 504, "{}", done.body);
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The refused request is on the trail, for its tenant (it had none before).
    let id = r_id(&r);
    assert!(!id.is_empty(), "{:?}", r.headers);
    let records: Vec<_> = audit(&st)
        .into_iter()
        .map(|r| r["record"].clone())
        .collect();
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["request_id"] == id.as_str())
        .collect();
    assert_eq!(refused.len(), 1, "{records:?}");
    let refused = refused[0];
    assert_eq!(
        (
            &refused["tenant"],
            &refused["extension"],
            &refused["outcome"]
        ),
        (
            &serde_json::json!("alpha"),
            &serde_json::json!("warden.hostile-http"),
            &serde_json::json!("error")
        ),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("503 unavailable") && m.contains("shutting down")),
        "{refused}"
    );
}

/// A call still running when the shutdown grace runs out is stopped, and a request still
/// sending its body is let go, each recorded as such before the service exits (outside
/// attack, session 28: they left no record at all); neither is counted with a request its
/// client left just before (outside attack, session 29: one summary then said "the client went
/// away" of both).
#[test]
fn requests_cut_off_by_the_end_of_the_shutdown_grace_are_recorded() {
    let st = setup();
    let mut s = st.serve("[policy.gateway]\nshutdown_grace = \"1s\"\n");
    let (b, sig) = st.bundle(&example("hostile-http"), "hostile");
    let k = installed_for_alpha(&s, &b, &sig, "warden.hostile-http");
    let open = |head: String| {
        let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        c
    };
    let post = format!(
        "POST /api/ext/warden.hostile-http/echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {k}\r\nContent-Length: 100\r\n\r\nten bytes!"
    );
    // A loop that runs until its 3 s limit; a body that stops after 10 of its 100 bytes; and
    // one whose client hangs up (client-gone, the same tenant, extension and second).
    let mut running = open(format!(
        "GET /api/ext/warden.hostile-http/loop HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {k}\r\n\r\n"
    ));
    let trickle = open(post.clone());
    let gone = open(post);
    std::thread::sleep(Duration::from_millis(300));
    drop(gone);
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    sigterm(&s);
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(8)).contains(&took),
        "{took:?}"
    );
    // The loop's client got no answer: the connection was closed on it.
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut running, &mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(trickle);
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let calls: Vec<_> = audit(&st)
        .into_iter()
        .map(|r| r["record"].clone())
        .filter(|r| r["event"] == "call" && r["extension"] == "warden.hostile-http")
        .collect();
    let with = |text: &str| -> Vec<&serde_json::Value> {
        calls
            .iter()
            .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(text)))
            .collect()
    };
    assert_eq!(calls.len(), 3, "{calls:?}");
    let stopped = with("grace ran out before the call ended: it was stopped");
    let never = with("grace ran out before the request was answered: its call never ran");
    let left = with("the client went away");
    assert_eq!(
        (stopped.len(), never.len(), left.len()),
        (1, 1, 1),
        "{calls:?}"
    );
    for r in calls.iter() {
        assert_eq!(
            (&r["tenant"], &r["outcome"]),
            (&serde_json::json!("alpha"), &serde_json::json!("error")),
            "{r}"
        );
    }
    let ms = |r: &serde_json::Value| r["duration_ms"].as_u64().unwrap();
    assert!((1000..4000).contains(&ms(stopped[0])), "{}", stopped[0]);
    assert!((1000..4000).contains(&ms(never[0])), "{}", never[0]);
}

/// Another process that holds the audit log's lock and never lets go (an operator's CLI
/// stopped with Ctrl-Z) gets requests answered within the lock's bound, not hung: the call
/// that ran is answered 502 and its record kept, the next refused 503, a CLI command ends
/// with an error that says why; once the lock is let go the kept record is stored, late but
/// whole (outside attack, session 29: every gateway request hung for as long as the CLI
/// was stopped).
#[test]
fn a_process_stopped_holding_the_audit_lock_does_not_hang_the_service() {
    let st = setup();
    if st.shared.is_some() {
        // The audit log is PostgreSQL's there: no file lock to hold.
        return;
    }
    let s = st.serve("");
    let (b, sig) = st.bundle(&example("hello"), "hello");
    let k = installed_for_alpha(&s, &b, &sig, "warden.hello");
    let url = format!("{}/api/ext/warden.hello/hi", s.base);
    assert_eq!(get(&url, Some(&k)).status, 200);
    let head = std::fs::File::open(st.data.join("audit/audit.head")).unwrap();
    head.lock().unwrap();
    let timed = |f: &dyn Fn() -> Reply| {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    };
    let (ran, took) = timed(&|| get(&url, Some(&k)));
    assert_eq!(ran.status, 502, "{}", ran.body);
    assert!(took < Duration::from_secs(15), "{took:?}");
    let o = st.cli(&[&"tenant", &"create", &"beta"]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("held the lock on the audit log"), "{err}");
    assert_eq!(o.status.code(), Some(75), "{err}");
    // Not checked is not "edited": its own exit code and words.
    let o = st.cli(&[&"audit", &"--verify"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(
        err.contains("not verified") && !err.contains("failed verification"),
        "{err}"
    );
    // Clients that hang up while their request waits on the log, the first prober among
    // them: its probe runs to its end all the same, and no other starts meanwhile (session
    // 30: each new probe queued the kept records' marker again, all stored at the release).
    let hung_up: Vec<_> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(&s.addr).unwrap();
            c.write_all(
                format!("GET /api/ext/warden.hello/hi HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {k}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(hung_up);
    // Eight requests at once while the lock is held: refused, and the service's threads are
    // not held by them (session 30: each waited 5 s on one, and `/healthz` with them).
    let crowd: Vec<_> = (0..8)
        .map(|_| {
            let (url, k) = (url.clone(), k.clone());
            std::thread::spawn(move || get(&url, Some(&k)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let (health, took) = timed(&|| get(&format!("{}/healthz", s.base), None));
        assert_eq!(health.status, 200);
        assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Let go while the probe waits.
    head.unlock().unwrap();
    let mut crowd_ids = Vec::new();
    for r in crowd {
        let refused = r.join().unwrap();
        assert_eq!(
            (refused.status, refused.code().as_str()),
            (503, "unavailable"),
            "{}",
            refused.body
        );
        let id = r_id(&refused);
        assert!(!id.is_empty(), "{:?}", refused.headers);
        crowd_ids.push(id);
    }
    // Refused until the probe under way has stored the kept record and its own (a round
    // each), then served again, by itself.
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let r = get(&url, Some(&k));
        statuses.push(r.status);
        if r.status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records: Vec<_> = audit(&st)
        .into_iter()
        .map(|r| r["record"].clone())
        .collect();
    let of_ran: Vec<_> = records
        .iter()
        .filter(|r| r["request_id"] == r_id(&ran).as_str() && r["event"] == "call")
        .collect();
    assert_eq!(of_ran.len(), 1, "{records:?}");
    // Stored late, once: one marker (one probe at a time).
    let recoveries = records.iter().filter(|r| r["event"] == "recovery").count();
    assert_eq!(recoveries, 1, "{records:?}");
    // Every refused request is on the trail, by its own record or named in a summary of
    // repeats: kept while the log could not be written, stored late (session 30: three in
    // four left no record).
    for id in &crowd_ids {
        let found = records.iter().any(|r| {
            r["request_id"] == id.as_str()
                || r["target"]
                    .as_str()
                    .is_some_and(|t| t.split(' ').any(|x| x == id))
        });
        assert!(found, "{id} is not on the trail: {records:?}");
    }
    // The CLI's tenant was never made: made now.
    ok(&st.cli(&[&"tenant", &"create", &"beta"]));
}

/// A service stopped while another process keeps the audit log locked (past its waits): the
/// records of a call that ran meanwhile, kept to be written late, are lost with the process,
/// and the service says so and ends with an error (it ended with 0 and said nothing: outside
/// attack, session 41). The log still verifies. Embedded default only: on shared storage the
/// log is PostgreSQL's.
#[test]
fn a_service_stopped_with_records_it_cannot_store_says_they_are_lost() {
    if crate::shared::on() {
        println!("skipped: the audit log held here is the embedded default's");
        return;
    }
    let st = setup();
    let log = st.t.path().join("serve.log");
    let mut s = st.serve_logged("", Some(&log));
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(&s, &hello, &sig);
    let k = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    let url = format!("{}/api/ext/warden.hello/hi", s.base);
    assert_eq!(get(&url, Some(&k)).status, 200);
    let head = std::fs::File::open(st.data.join("audit/audit.head")).unwrap();
    head.lock().unwrap();
    // It ran; its records wait 5 s for the log, then are kept.
    let r = get(&url, Some(&k));
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "host-error"),
        "{}",
        r.body
    );
    sigterm(&s);
    let status = s.child.wait().unwrap();
    head.unlock().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{status:?}: {logged}");
    assert!(
        logged.contains("could not be stored") && logged.contains("lost"),
        "{logged}"
    );
    ok(&st.cli(&[&"audit", &"--verify"]));
}

/// Sends SIGTERM to the service.
fn sigterm(s: &Server) {
    crate::foundation::signal(s.child.id(), "-TERM");
}

/// Sends hostile-http's `/loop` with `key` on a connection of its own to `addr`, and hangs
/// up `after` that.
fn loop_then_hang_up(addr: &str, key: &str, after: Duration) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(
        format!(
            "GET /api/ext/warden.hostile-http/loop HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(after);
    drop(c);
}

/// A client that goes away mid-request is no longer counted in flight: the shutdown that
/// follows does not wait its whole grace (30 s by default) for it.
#[test]
fn a_client_gone_mid_request_does_not_hold_the_shutdown() {
    let st = setup();
    let mut s = st.serve("");
    let (hostile, sig) = st.bundle(&example("hostile-http"), "hostile");
    let hash = publish(&s, &hostile, &sig);
    let k = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hostile-http", &hash, "none").status,
        200
    );
    for _ in 0..3 {
        loop_then_hang_up(&s.addr, &k, Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(200));
    let m = get(&format!("{}/metrics", s.base), Some(ADMIN));
    assert!(
        m.body.lines().any(|l| l == "warden_requests_in_flight 1"),
        "only the metrics request itself: {}",
        m.body
    );
    let started = std::time::Instant::now();
    sigterm(&s);
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The hostile-http fixture, whose `/loop` runs until its time limit, with a limit of 10 s
/// and one call at a time: a call that is still running, and one waiting for its slot, when
/// something happens to the install.
fn one_slow_call_at_a_time(st: &Setup) -> (PathBuf, PathBuf) {
    let dir = edited(st, "hostile-http", "slow-loop", |m| {
        let m = m.replace(
            "max_execution_time = \"3s\"",
            "max_execution_time = \"10s\"\nmax_concurrent_calls = 1",
        );
        assert!(m.contains("max_concurrent_calls = 1"));
        m
    });
    st.bundle(&dir, "slow-loop")
}

/// A service with `config`, [`one_slow_call_at_a_time`] installed for tenant alpha: the
/// server, alpha's key and the URL of the loop.
fn slow_loop_for_alpha(st: &Setup, config: &str) -> (Server, String, String) {
    let s = st.serve(config);
    let (b, sig) = one_slow_call_at_a_time(st);
    let k = installed_for_alpha(&s, &b, &sig, "warden.hostile-http");
    let url = format!("{}/api/ext/warden.hostile-http/loop", s.base);
    (s, k, url)
}

/// The signed `bundle` published through `s` and installed as `id` (granted nothing) for a
/// new tenant alpha; alpha's API key.
fn installed_for_alpha(s: &Server, bundle: &Path, sig: &Path, id: &str) -> String {
    let hash = publish(s, bundle, sig);
    let key = tenant(s, "alpha");
    let r = install(s, "alpha", id, &hash, "none");
    assert_eq!(r.status, 200, "{}", r.body);
    key
}

/// `POST /v1/admin/trust/reload`: the service's answer.
fn reload_trust(s: &Server) -> Reply {
    send(
        "POST",
        &format!("{}/v1/admin/trust/reload", s.base),
        Some(ADMIN),
        b"",
    )
}

/// Uninstalls alpha's [`one_slow_call_at_a_time`] through the admin API.
fn uninstall_slow_loop(s: &Server) {
    let r = send(
        "DELETE",
        &format!(
            "{}/v1/admin/tenants/alpha/installs/warden.hostile-http",
            s.base
        ),
        Some(ADMIN),
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

/// Sends a GET to `url` (with `key`) that runs on, does `meanwhile` half a second later, and
/// returns the answer and how long after `meanwhile` began it came.
fn answered_after(url: &str, key: &str, meanwhile: impl FnOnce()) -> (Reply, Duration) {
    let (u, k) = (url.to_string(), key.to_string());
    let running = std::thread::spawn(move || {
        let r = get(&u, Some(&k));
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    meanwhile();
    let (r, answered) = running.join().unwrap();
    (r, answered.duration_since(began))
}

/// Uninstalling stops the install's calls at once: the one running and the one waiting for
/// its slot are answered 404 (as if it had never been there) right after the uninstall, not
/// at their time limit, and each leaves its audit record saying why.
#[test]
fn uninstalling_stops_the_calls_running_and_waiting_at_once() {
    let st = setup();
    let (s, k, url) = slow_loop_for_alpha(&st, "[policy]\nbusy_wait = \"8s\"\n");
    let call = || {
        let (url, key) = (url.clone(), k.clone());
        std::thread::spawn(move || {
            let r = get(&url, Some(&key));
            (r, Instant::now())
        })
    };
    let running = call();
    std::thread::sleep(Duration::from_millis(400));
    let waiting = call();
    std::thread::sleep(Duration::from_millis(400));
    let removed = Instant::now();
    uninstall_slow_loop(&s);
    let mut ids = Vec::new();
    for (what, t) in [("running", running), ("waiting", waiting)] {
        let (r, answered) = t.join().unwrap();
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "not-found"),
            "{what}: {}",
            r.body
        );
        let after = answered.duration_since(removed);
        assert!(
            after < Duration::from_secs(2),
            "{what} answered {after:?} after the uninstall"
        );
        ids.push(r_id(&r));
    }
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records = audit(&st);
    for (id, why) in ids
        .iter()
        .zip(["while the call ran", "while the call waited"])
    {
        let call = record_for(&records, id)
            .into_iter()
            .find(|r| r["event"] == "call")
            .unwrap_or_else(|| panic!("no call record for {id}"));
        assert_eq!(call["outcome"], "invalid", "{call}");
        assert!(
            call["message"].as_str().is_some_and(|m| m.contains(why)),
            "{call}"
        );
    }
}

/// A request whose client goes away while it waits for its slot leaves a record saying so
/// (outside attack, session 28: it left none), apart from the call it waited on.
#[test]
fn a_request_its_client_left_while_it_waited_is_audited() {
    let st = setup();
    let (s, k, url) = slow_loop_for_alpha(&st, "[policy]\nbusy_wait = \"8s\"\n");
    let running = {
        let (url, key) = (url.clone(), k.clone());
        std::thread::spawn(move || get(&url, Some(&key)))
    };
    std::thread::sleep(Duration::from_millis(400));
    loop_then_hang_up(&s.addr, &k, Duration::from_millis(600));
    std::thread::sleep(Duration::from_millis(300));
    uninstall_slow_loop(&s);
    assert_eq!(running.join().unwrap().status, 404);
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let left: Vec<_> = audit(&st)
        .into_iter()
        .map(|r| r["record"].clone())
        .filter(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("the client went away"))
        })
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let r = &left[0];
    assert_eq!(
        (&r["event"], &r["tenant"], &r["extension"], &r["outcome"]),
        (
            &serde_json::json!("call"),
            &serde_json::json!("alpha"),
            &serde_json::json!("warden.hostile-http"),
            &serde_json::json!("error")
        ),
        "{r}"
    );
    let ms = r["duration_ms"].as_u64().unwrap();
    assert!((500..3000).contains(&ms), "{r}");
}

/// A request whose client goes away while its body arrives is recorded as left, not as a
/// malformed request (outside attack, session 28: "refused by the gateway (400 malformed):
/// the request body could not be read").
#[test]
fn a_request_its_client_left_while_its_body_arrived_is_audited_as_left() {
    let st = setup();
    let s = st.serve("");
    let (b, sig) = st.bundle(&example("hostile-http"), "hostile");
    let k = installed_for_alpha(&s, &b, &sig, "warden.hostile-http");
    let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
    c.write_all(
        format!(
            "POST /api/ext/warden.hostile-http/echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {k}\r\nContent-Length: 100\r\n\r\nten bytes!"
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records: Vec<_> = audit(&st)
        .into_iter()
        .map(|r| r["record"].clone())
        .filter(|r| r["event"] == "call")
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    let m = r["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("the client went away") && m.contains("body"),
        "{r}"
    );
    assert_eq!(r["outcome"], "error", "{r}");
}

/// The service raises its open files limit to the hard one (a soft 1,024 ran out at about 850
/// active tenants, and every call failed until a restart: outside attack, session 40).
#[test]
fn the_service_raises_its_open_files_limit() {
    let st = setup();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(
            "ulimit -Sn 200 && exec \"$0\" serve --listen 127.0.0.1:0 --data \"$1\" --trust \"$2\"",
        )
        .arg(env!("CARGO_BIN_EXE_warden"))
        .arg(&st.data)
        .arg(&st.trust)
        .env_remove("WARDEN_TRUST_BUNDLE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("warden serve listening on"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX))
        .collect::<Vec<_>>();
    assert!(files[0] > 200, "{limits}");
    assert_eq!(files[0], files[1].min(1 << 20), "{limits}");
}

/// A runner API request is the operator's from its runner token on: one cut mid-body, or
/// whose body is not an execute request, is recorded before it names its tenant (it left no
/// record); one without the token is not.
#[test]
fn a_runner_api_request_refused_before_it_names_its_tenant_is_audited() {
    let st = setup();
    let s = st.serve("");
    let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
    c.write_all(
        format!(
            "POST /v1/execute HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {RUNNER}\r\nContent-Length: 100\r\n\r\n{{\"tenant\":"
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    let url = format!("{}/v1/execute", s.base);
    let r = send("POST", &url, Some(RUNNER), b"{not json");
    assert_eq!((r.status, r.code().as_str()), (400, "malformed"));
    let r = send("POST", &url, Some("not-the-token"), b"{not json");
    assert_eq!(r.status, 401);
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records: Vec<_> = audit(&st)
        .into_iter()
        .map(|r| r["record"].clone())
        .filter(|r| r["event"] == "call")
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let with = |words: &[&str]| {
        records
            .iter()
            .find(|r| {
                let m = r["message"].as_str().unwrap_or_default();
                words.iter().all(|w| m.contains(w))
            })
            .unwrap_or_else(|| panic!("no record saying {words:?}: {records:?}"))
    };
    let before = "a runner API request, before it named its tenant";
    let left = with(&["the client went away", "body", before]);
    let malformed = with(&["refused by the gateway (400 malformed)", before]);
    for (r, outcome) in [(left, "error"), (malformed, "invalid")] {
        assert_eq!(r["outcome"], outcome, "{r}");
        assert!(r["tenant"].is_null(), "{r}");
    }
}

/// A runner API request naming a tenant that does not exist is recorded without it (the name
/// in the message), so that a runner token holder's flood of made-up names folds into a few
/// records a second, as other refusals do: each name was a kind of its own and a record each
/// (outside attack, session 40: 15,000 names in 9 s). A real tenant's 404 keeps its tenant.
#[test]
fn made_up_tenant_names_on_the_runner_api_fold_into_few_records() {
    let st = setup();
    let s = st.serve("");
    tenant(&s, "alpha");
    let url = format!("{}/v1/execute", s.base);
    let call = |tenant: &str, extension: &str| {
        let body = format!(r#"{{"tenant":"{tenant}","extension":"{extension}","method":"echo"}}"#);
        let r = send("POST", &url, Some(RUNNER), body.as_bytes());
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "not-found"),
            "{}",
            r.body
        );
    };
    call("alpha", "warden.nothing");
    let names: u64 = 120;
    for i in 0..names {
        // Made-up extension ids too, and one that does not parse.
        let extension = if i % 2 == 0 {
            format!("x.e{i}")
        } else {
            "Not An Id".to_owned()
        };
        call(&format!("ghost-{i}"), &extension);
    }
    std::thread::sleep(Duration::from_millis(1500));
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records: Vec<_> = audit(&st)
        .into_iter()
        .map(|r| r["record"].clone())
        .filter(|r| r["event"] == "call")
        .collect();
    let alpha: Vec<_> = records.iter().filter(|r| r["tenant"] == "alpha").collect();
    assert_eq!(alpha.len(), 1, "{records:?}");
    let ghosts: Vec<_> = records
        .iter()
        .filter(|r| {
            let m = r["message"].as_str().unwrap_or_default();
            m.contains("ghost-") && m.contains("which does not exist")
        })
        .collect();
    assert_eq!(ghosts.len() + alpha.len(), records.len(), "{records:?}");
    // At most 16 kinds naming an extension a tenant (here: no tenant) and one for the rest, a
    // summary each for those repeated: about 19 records, whatever the number of names.
    assert!(
        (1..=24).contains(&ghosts.len()),
        "{} records for {names} made-up names: {ghosts:?}",
        ghosts.len()
    );
    assert!(ghosts.iter().all(|r| r["tenant"].is_null()), "{ghosts:?}");
    // Every request is counted: alone, or in a summary ("N more refusals ...").
    let found: u64 = ghosts
        .iter()
        .map(|r| {
            let m = r["message"].as_str().unwrap_or_default();
            m.split_once(" more refusal")
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or(1)
        })
        .sum();
    assert_eq!(found, names, "{ghosts:?}");
}

/// Requests waiting for one extension's slot hold neither their tenant's slots nor their
/// bodies (red team, session 18): with `tenant_concurrency` (3), or alpha's body share (1 MiB
/// of 2), smaller than what four waiters would hold, alpha's other extension is still
/// answered at once, and the waiters still wait (none is refused).
#[test]
fn requests_waiting_for_a_slot_hold_no_body_and_none_of_their_tenants_slots() {
    waiters_hold_nothing(&setup(), "tenant_concurrency = 3", 0);
    waiters_hold_nothing(&setup(), "max_buffered_bytes = \"2MiB\"", 600 << 10);
}

/// A loop running and four requests with bodies of `size` waiting for its slot, on a service
/// with `[policy.gateway] gateway`: a request with a body of `size` to alpha's other
/// extension is answered at once.
fn waiters_hold_nothing(st: &Setup, gateway: &str, size: usize) {
    let (s, k, url) = slow_loop_for_alpha(
        st,
        &format!("[policy]\nbusy_wait = \"8s\"\n[policy.gateway]\n{gateway}\n"),
    );
    let dir = edited(st, "hello", "hello-any", |m| {
        let m = m.replace("method = \"GET\"", "method = \"*\"");
        assert!(m.contains("method = \"*\""));
        m
    });
    let (b, sig) = st.bundle(&dir, "hello-any");
    let hash = publish(&s, &b, &sig);
    let r = install(&s, "alpha", "warden.hello", &hash, "none");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = vec![b'x'; size];
    let post = |url: String| {
        let (k, body) = (k.clone(), body.clone());
        std::thread::spawn(move || send("POST", &url, Some(&k), &body))
    };
    let running = {
        let (url, k) = (url.clone(), k.clone());
        std::thread::spawn(move || get(&url, Some(&k)))
    };
    std::thread::sleep(Duration::from_millis(400));
    let waiting: Vec<_> = (0..4).map(|_| post(url.clone())).collect();
    std::thread::sleep(Duration::from_millis(600));
    let started = Instant::now();
    let other = post(format!("{}/api/ext/warden.hello/x", s.base))
        .join()
        .unwrap();
    assert_eq!(other.status, 200, "{gateway}: {}", other.body);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{gateway}: {:?}",
        started.elapsed()
    );
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "{gateway}: a waiter was answered while the slot was taken"
    );
    // Uninstalled: the waiters are answered as not there; none was refused before.
    uninstall_slow_loop(&s);
    for w in waiting.into_iter().chain([running]) {
        let r = w.join().unwrap();
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "not-found"),
            "{gateway}: {}",
            r.body
        );
    }
}

/// A request whose install is changed (here: granted otherwise) while its body arrives does
/// not run on the old install: refused as busy, so that a new try runs on the new one (red
/// team: a body sent 20 s after a grant was taken away still ran under it).
#[test]
fn a_body_that_arrives_after_its_install_changed_does_not_run_on_the_old_one() {
    let st = setup();
    let (s, k, url) = slow_loop_for_alpha(&st, "");
    let fine = url.replace("/loop", "/fine");
    let head = format!(
        "POST /api/ext/warden.hostile-http/fine HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {k}\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhalf."
    );
    // Half the body, then `meanwhile`, then the rest: the answer.
    let answer_after = |meanwhile: &dyn Fn()| {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        meanwhile();
        c.write_all(b"done.").unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer
    };
    let answer = answer_after(&|| {
        let r = get(&format!("{}/v1/admin/installs", s.base), Some(ADMIN));
        assert_eq!(r.status, 200, "{}", r.body);
        let hash = r.json()["installs"][0]["content_hash"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = install(&s, "alpha", "warden.hostile-http", &hash, "all");
        assert_eq!(r.status, 200, "{}", r.body);
    });
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.contains("replaced while the call waited for its input"),
        "{answer}"
    );
    assert_eq!(get(&fine, Some(&k)).status, 200);
    // A trust reload that still accepts the install changes nothing: the call runs.
    let answer = answer_after(&|| assert_eq!(reload_trust(&s).status, 200));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A declared length over the install's own limit is refused at once, not after a wait for
/// a slot (red team: 413 after 2.8 s, or 429 had the wait run out).
#[test]
fn a_declared_length_over_the_installs_limit_does_not_wait_for_a_slot() {
    let st = setup();
    let (s, k, url) = slow_loop_for_alpha(&st, "[policy]\nbusy_wait = \"8s\"\n");
    let running = {
        let (url, k) = (url.clone(), k.clone());
        std::thread::spawn(move || get(&url, Some(&k)))
    };
    std::thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    let lines = raw(
        &s.addr,
        format!("POST /api/ext/warden.hostile-http/fine HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {k}\r\nContent-Length: 2000000\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(lines, ["HTTP/1.1 413 Payload Too Large"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    uninstall_slow_loop(&s);
    assert_eq!(running.join().unwrap().status, 404);
}

/// A request never holds its extension's slot while it waits for its tenant's: callers
/// running (holding alpha's two slots) make their calls to echo (one slot) while alpha's own
/// requests to echo come in. In the other order those requests took echo's slot and waited
/// for a tenant slot the callers held, and the callers' calls waited for echo's: all stuck
/// until their time limit (red team).
#[test]
fn callers_and_their_callees_own_requests_never_wait_on_each_other() {
    let st = setup();
    let s = st.serve("[policy]\nbusy_wait = \"8s\"\n[policy.gateway]\ntenant_concurrency = 2\n");
    let key = tenant(&s, "alpha");
    let echo = edited(&st, "echo", "echo-one", |m| {
        m.replace(
            "profile = \"strict\"",
            "profile = \"strict\"\nmax_concurrent_calls = 1",
        )
    });
    // Time to spare on a loaded machine (on shared storage each call's records go to
    // PostgreSQL): stuck, the callers would wait for `busy_wait` (8 s) all the same.
    let caller = edited(&st, "caller", "caller-http", |m| {
        let m = m.replace(
            "profile = \"strict\"",
            "profile = \"strict\"\nmax_execution_time = \"10s\"",
        );
        format!("{m}\n[[endpoints]]\nmethod = \"POST\"\npath = \"/call\"\ncall = \"call\"\n")
    });
    for (dir, name, id, grant) in [
        (echo, "echo", "warden.echo", "none"),
        (caller, "caller", "warden.caller", "all"),
    ] {
        let (b, sig) = st.bundle(&dir, name);
        let hash = publish(&s, &b, &sig);
        assert_eq!(install(&s, "alpha", id, &hash, grant).status, 200);
    }
    let started = Instant::now();
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (url, key) = (
                format!("{}/api/ext/warden.caller/call", s.base),
                key.clone(),
            );
            std::thread::spawn(move || send("POST", &url, Some(&key), b"warden.echo echo 30\nhi"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let direct: Vec<_> = (0..10)
        .map(|_| {
            let url = format!("{}/v1/execute", s.base);
            std::thread::spawn(move || {
                let body =
                    r#"{"tenant":"alpha","extension":"warden.echo","method":"echo","input":"x"}"#;
                send("POST", &url, Some(RUNNER), body.as_bytes())
            })
        })
        .collect();
    for c in callers {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.starts_with("ok=30 err=0 "), "{}", r.body);
    }
    for d in direct {
        let r = d.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

/// A trust reload that revokes the key an install was signed with stops the calls running on
/// it at once (502 `integrity`, as the next request gets), with their audit records.
#[test]
fn a_revoked_key_stops_the_calls_running_at_once() {
    let st = setup();
    let (s, k, url) = slow_loop_for_alpha(&st, "");
    let other = keygen(&st.t.path().join("other"), "someone-else");
    let (r, after) = answered_after(&url, &k, || {
        trust_file(
            st.t.path(),
            "trust.toml",
            &[("someone-else", &[&other.pem], &[&st.pem])],
        );
        let r = reload_trust(&s);
        assert_eq!(r.status, 200, "{}", r.body);
    });
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "integrity"),
        "{}",
        r.body
    );
    assert!(
        after < Duration::from_secs(2),
        "answered {after:?} after the reload"
    );
    let next = get(&url, Some(&k));
    assert_eq!((next.status, next.code().as_str()), (502, "integrity"));
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records = audit(&st);
    let call = record_for(&records, &r_id(&r))
        .into_iter()
        .find(|r| r["event"] == "call")
        .expect("the stopped call's record");
    assert_eq!(call["outcome"], "denied", "{call}");
    assert!(
        call["message"]
            .as_str()
            .is_some_and(|m| m.contains("no longer trusted")),
        "{call}"
    );
}

/// A process extension served like a component: published, installed for two tenants,
/// called through the gateway; each tenant's calls reach only its own warm processes and its
/// own store, and `warden inspect` shows the sandbox profile.
#[test]
fn a_process_extension_is_served_through_the_gateway_per_tenant() {
    let st = setup();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/process/kv-counter");
    assert!(
        dir.join("kv-counter").exists(),
        "run scripts/build-examples.sh first"
    );
    let (b, sig) = st.bundle(&dir, "kvp");
    let shown = crate::foundation::warden(&[&"inspect", &b]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("kind: process"), "{text}");
    assert!(text.contains("sandbox profile:"), "{text}");
    assert!(text.contains("rlimits: address space 16MiB"), "{text}");
    let s = st.serve("[policy.process]\nwarm_calls = 50\n");
    let hash = publish(&s, &b, &sig);
    let id = "warden-examples.kv-counter-process";
    let (ka, kb) = (tenant(&s, "alpha"), tenant(&s, "beta"));
    for t in ["alpha", "beta"] {
        assert_eq!(install(&s, t, id, &hash, "kv").status, 200);
    }
    let post = |key: &str, m: &str, body: &str| {
        let mut r = agent()
            .post(format!("{}/api/ext/{id}/{m}", s.base))
            .header("authorization", format!("Bearer {key}"))
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    for n in 1..=5 {
        assert_eq!(post(&ka, "increment", "hits"), (200, n.to_string()));
    }
    assert_eq!(post(&kb, "increment", "hits"), (200, "1".to_string()));
    assert_eq!(post(&ka, "get", "hits"), (200, "5".to_string()));
    // Not granted the network: refused inside the call, which answers with the error.
    let (status, body) = post(&ka, "ping", "http://127.0.0.1:9/");
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("denied"), "{body}");
    let log = ok(&st.cli(&[&"audit", &"--json"]));
    assert!(log.contains("warden-examples.kv-counter-process"));
    // Its sandboxes' cgroups were made in folders of its own (where this machine lets it);
    // with warm processes parked, a SIGTERM leaves none of them behind.
    let pid = s.child.id();
    sigterm(&s);
    let mut s = s;
    assert!(s.child.wait().unwrap().success());
    let left = crate::foundation::cgroup_folders_of(pid);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn kill_9_loses_no_acknowledged_write_and_a_restart_serves_without_recompiling() {
    let st = setup();
    let mut s = st.serve("");
    let (kv, sig) = st.bundle(&example("kv-counter"), "kv");
    let hash = publish(&s, &kv, &sig);
    let k = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden-examples.kv-counter", &hash, "kv").status,
        200
    );
    let url = |s: &Server, m: &str| format!("{}/api/ext/warden-examples.kv-counter/{m}", s.base);
    // A stream of writes through the gateway from two clients; the service is killed in the
    // middle of it.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (u, key, acked) = (url(&s, "increment"), k.clone(), acked.clone());
            std::thread::spawn(move || {
                loop {
                    let r = agent()
                        .post(&u)
                        .header("authorization", format!("Bearer {key}"))
                        .send("hits");
                    let Ok(mut r) = r else { break };
                    if r.status() != 200 {
                        break;
                    }
                    let n: u64 = r
                        .body_mut()
                        .read_to_string()
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    acked.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acked > 0, "no write was acknowledged");
    // The compile cache's entries (`DATA/cache/HASH-FINGERPRINT`) and when each was written.
    let entries = |data: &std::path::Path| {
        let mut v: Vec<_> = crate::compile_limits::cached(data)
            .into_iter()
            .map(|p| {
                let written = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p, written)
            })
            .collect();
        v.sort();
        v
    };
    let cache_before = entries(&st.data);
    assert!(!cache_before.is_empty(), "nothing in the compile cache");
    // Restarted on the same data dir: every acknowledged increment is there.
    let s = st.serve("");
    let r = reply(
        agent()
            .post(url(&s, "get"))
            .header("authorization", format!("Bearer {k}"))
            .send("hits"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let stored: u64 = r.body.trim().parse().unwrap();
    assert!(stored >= acked, "stored {stored} < acknowledged {acked}");
    // Served from the compile cache: nothing new was compiled into it, and its entry (whose
    // MAC held) was not written again.
    assert_eq!(entries(&st.data), cache_before);
    // The grant withdrawn on the same bundle, from another process (the CLI, on the same data
    // dir): the very next call runs without key-value access (red team: the service kept
    // the old grant until restarted).
    ok(&st.cli(&[
        &"install",
        &kv,
        &"--tenant",
        &"alpha",
        &"--trust",
        &st.trust,
        &"--grant",
        &"none",
    ]));
    let r = reply(
        agent()
            .post(url(&s, "get"))
            .header("authorization", format!("Bearer {k}"))
            .send("hits"),
    );
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("not granted"), "{}", r.body);
    drop(s);
    ok(&st.cli(&[&"audit", &"--verify"]));
}

#[test]
fn kill_9_mid_call_leaves_the_calls_start_on_the_trail() {
    let st = setup();
    let mut s = st.serve("");
    let (b, sig) = st.bundle(&example("hostile-kv"), "hostile-kv");
    let hash = publish(&s, &b, &sig);
    tenant(&s, "alpha");
    let id = "warden-examples.hostile-kv";
    assert_eq!(install(&s, "alpha", id, &hash, "kv").status, 200);
    // A call that writes (`set k v` in bucket `default`), then runs on; it never gets an
    // answer: the service is killed once the call's start is on the trail.
    let url = format!("{}/v1/execute", s.base);
    let body = format!(
        r#"{{"tenant":"alpha","extension":"{id}","method":"run","input":"open 64656661756c74;set 6b 76;spin 20000"}}"#
    );
    std::thread::spawn(move || {
        // No answer comes: the service dies first.
        let _ = agent()
            .post(&url)
            .header("authorization", format!("Bearer {RUNNER}"))
            .send(body);
    });
    let started = |records: &[serde_json::Value]| {
        records
            .iter()
            .map(|r| &r["record"])
            .find(|r| r["event"] == "call-start" && r["extension"] == id)
            .cloned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let start = loop {
        if let Some(r) = started(&audit(&st)) {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no call-start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The start is written before the write is made: the service is killed once a second
    // call sees the write, so that the restart below has something to find.
    let get = format!(
        r#"{{"tenant":"alpha","extension":"{id}","method":"run","input":"open 64656661756c74;get 6b"}}"#
    );
    let read = |s: &Server| {
        let r = send(
            "POST",
            &format!("{}/v1/execute", s.base),
            Some(RUNNER),
            get.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let out = r.json()["output_base64"].as_str().unwrap().to_owned();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, out).unwrap()
    };
    while read(&s) != b"ok\nok:76\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never landed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    assert_eq!(start["capability"], "kv");
    assert_eq!(start["tenant"], "alpha");
    let rid = start["request_id"].as_str().unwrap().to_owned();
    // The call never ended: its start is the only trace of it, and of its write.
    let records = audit(&st);
    let seen: Vec<_> = record_for(&records, &rid)
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["call-start"], "{rid}");
    ok(&st.cli(&[&"audit", &"--verify"]));
    // The write it made is in the store, as the record warned.
    let s = st.serve("");
    assert_eq!(read(&s), b"ok\nok:76\n");
}

/// `warden audit --request ID` and the admin API's `?request=ID` list one request's records
/// with those of the calls it made to other extensions (`ID.1`), and no other request's.
#[test]
fn one_requests_records_are_listed_with_its_nested_calls() {
    let st = setup();
    let s = st.serve("");
    let key = tenant(&s, "alpha");
    // The caller reached through the gateway, which gives it the body as it came.
    let caller = edited(&st, "caller", "caller-http", |m| {
        format!("{m}\n[[endpoints]]\nmethod = \"POST\"\npath = \"/call\"\ncall = \"call\"\n")
    });
    for (dir, name, id, grant) in [
        (example("echo"), "echo", "warden.echo", "none"),
        (caller, "caller", "warden.caller", "all"),
    ] {
        let (b, sig) = st.bundle(&dir, name);
        let hash = publish(&s, &b, &sig);
        assert_eq!(install(&s, "alpha", id, &hash, grant).status, 200);
    }
    let call = || {
        let url = format!("{}/api/ext/warden.caller/call", s.base);
        let r = send("POST", &url, Some(&key), b"warden.echo echo\nhi");
        assert_eq!((r.status, r.body.as_str()), (200, "ok:hi"));
        r_id(&r)
    };
    let (rid, other) = (call(), call());
    let ids = |records: Vec<serde_json::Value>| {
        let mut ids: Vec<String> = records
            .iter()
            .map(|r| r["record"]["request_id"].as_str().unwrap().to_owned())
            .collect();
        ids.dedup();
        ids
    };
    let nested = format!("{rid}.1");
    let listed: Vec<serde_json::Value> = ok(&st.cli(&[&"audit", &"--json", &"--request", &rid]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(listed), [nested.clone(), rid.clone()], "{other}");
    let r = get(
        &format!("{}/v1/admin/audit?request={rid}", s.base),
        Some(ADMIN),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let records = r.json()["records"].as_array().unwrap().clone();
    assert_eq!(ids(records), [nested, rid]);
}

#[test]
fn ui_files_are_served_for_installed_hashes_only_and_never_outside_ui() {
    let st = setup();
    let s = st.serve("");
    // hello with a ui/ folder.
    let dir = edited(&st, "hello", "hello-ui", |m| {
        let m = m.replace(
            "entry = \"extension.wasm\"",
            "entry = \"extension.wasm\"\nui = \"ui\"",
        );
        assert!(m.contains("ui = \"ui\""));
        m
    });
    std::fs::create_dir_all(dir.join("ui/js")).unwrap();
    std::fs::write(dir.join("ui/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(dir.join("ui/js/app.js"), "console.log(1)").unwrap();
    let (b, sig) = st.bundle(&dir, "hello-ui");
    let hash = publish(&s, &b, &sig);
    let ui = |path: &str| format!("{}/ext-ui/warden.hello/{hash}/{path}", s.base);
    // Published but not installed: nothing.
    assert_eq!(get(&ui("index.html"), None).status, 404);
    tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    let r = get(&ui("index.html"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "<h1>hi</h1>");
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert!(
        r.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(
        r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox allow-scripts; default-src 'none'")
    );
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(
        get(&ui("js/app.js"), None).headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    // Outside ui/, a folder, escapes: refused or absent, never the manifest or the component.
    assert_eq!(get(&ui("js"), None).status, 404);
    let r = get(&ui("nothing.html"), None);
    assert_eq!(r.status, 404);
    // Its error carries the request id, in the body and the header alike.
    let id = r.json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "{}", r.body);
    assert_eq!(r.headers["x-request-id"].to_str().unwrap(), id);
    for bad in [
        "..%2fextension.toml",
        "%2e%2e/extension.toml",
        "js/..%2f..%2fextension.toml",
        "js//app.js",
    ] {
        let r = get(&ui(bad), None);
        assert!(r.status == 400 || r.status == 404, "{bad}: {}", r.status);
        assert!(!r.body.contains("schema = 1"), "{bad}");
    }
    let lines = raw(
        &s.addr,
        format!("GET /ext-ui/warden.hello/{hash}/../extension.toml HTTP/1.1\r\nHost: t\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(3),
    );
    assert!(lines.iter().all(|l| !l.contains("200")), "{lines:?}");
    // Another hash of the same extension: nothing.
    let other = format!("sha256:{}", "0".repeat(64));
    let r = get(
        &format!("{}/ext-ui/warden.hello/{other}/index.html", s.base),
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn admin_refuses_duplicate_parts_and_secrets_for_no_install() {
    let st = setup();
    let s = st.serve("");
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    // Two `signature` parts: refused, whichever would have won.
    let boundary = "b-dup";
    let mut body = Vec::new();
    for (name, path) in [("bundle", &hello), ("signature", &sig), ("signature", &sig)] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&std::fs::read(path).unwrap());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = reply(
        agent().run(
            http::Request::post(format!("{}/v1/admin/bundles", s.base))
                .header("authorization", format!("Bearer {ADMIN}"))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .unwrap(),
        ),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "malformed"),
        "{}",
        r.body
    );
    assert!(r.body.contains("given twice"), "{}", r.body);
    // A secret for a tenant or an install that does not exist: 404, nothing stored.
    tenant(&s, "alpha");
    for t in ["nobody", "alpha"] {
        let r = send(
            "PUT",
            &format!(
                "{}/v1/admin/tenants/{t}/installs/warden.echo/secrets/TOKEN",
                s.base
            ),
            Some(ADMIN),
            br#"{"value":"s3cr3t-value"}"#,
        );
        assert_eq!(r.status, 404, "{t}: {}", r.body);
    }
    // Liveness stays up; the service answers.
    assert_eq!(get(&format!("{}/healthz", s.base), None).status, 200);
}

/// The number a summary of repeated refusals counts ("N more refusals ..."), or 1 for a
/// refusal recorded alone.
fn refusals_in(record: &serde_json::Value) -> u64 {
    let m = record["message"].as_str().unwrap_or("");
    match m.split_once(" more refusal") {
        Some((n, _)) => n.parse().unwrap(),
        None => 1,
    }
}

#[test]
fn a_refusal_flood_is_counted_into_few_records_and_none_is_lost() {
    let st = setup();
    let s = st.serve(CONFIG);
    let (hello, hello_sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(&s, &hello, &hello_sig);
    let alpha = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    let before = audit(&st).len();
    let ext = |id: &str| format!("{}/api/ext/{id}/hi", s.base);
    // One id refused 300 times, then 300 ids chosen by the client, then 300 paths with a dot segment
    // (and, past the tenant's rate, 429s: refusals too).
    let mut nope_ids = Vec::new();
    for _ in 0..300 {
        let r = get(&ext("warden.nope"), Some(&alpha));
        assert!([404, 429].contains(&r.status), "{}", r.status);
        nope_ids.push(r_id(&r));
    }
    for i in 0..300 {
        let status = get(&ext(&format!("warden.nope{i}")), Some(&alpha)).status;
        assert!([404, 429].contains(&status), "{status}");
    }
    let dots = format!("{}/api/ext/warden.hello/a/%2e%2e/b", s.base);
    for _ in 0..300 {
        let status = get(&dots, Some(&alpha)).status;
        assert!([400, 429].contains(&status), "{status}");
    }
    // The summaries are written within a second or two of the last refusal.
    std::thread::sleep(Duration::from_millis(2500));
    let records = audit(&st);
    let refusals: Vec<serde_json::Value> = records[before..]
        .iter()
        .map(|r| r["record"].clone())
        .filter(|r| r["tenant"] == "alpha" && r["outcome"] != "ok")
        .collect();
    let counted: u64 = refusals.iter().map(refusals_in).sum();
    assert_eq!(counted, 900, "every refusal is counted: {refusals:#?}");
    // Each id refused alone costs a record, then counted; never one per request.
    assert!(
        refusals.len() < 400,
        "{} records for 900 refusals",
        refusals.len()
    );
    let malformed: Vec<_> = refusals
        .iter()
        .filter(|r| r["message"].as_str().unwrap().contains("(400 malformed)"))
        .collect();
    assert!(malformed.len() <= 12, "{malformed:#?}");
    assert!(malformed.iter().any(|r| {
        r["message"]
            .as_str()
            .unwrap()
            .contains("more refusals (malformed)")
    }));
    // A refused request counted into a summary is found by its own id, as its client sees it
    // (`x-request-id`): the first ones after the first of their kind, at least (a window's
    // summary names as many as its target holds).
    let mut in_summaries = 0;
    for id in &nope_ids[1..=10] {
        let found: Vec<serde_json::Value> = ok(&st.cli(&[&"audit", &"--json", &"--request", id]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(found.len(), 1, "{id}: {found:#?}");
        let record = &found[0]["record"];
        if record["request_id"] != id.as_str() {
            assert!(refusals_in(record) > 1, "{record:#}");
            let named = record["target"].as_str().unwrap();
            assert!(named.split(' ').any(|t| t == id), "{record:#}");
            in_summaries += 1;
        }
        let r = get(
            &format!("{}/v1/admin/audit?request={id}", s.base),
            Some(ADMIN),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json()["records"].as_array().unwrap().len(),
            1,
            "{}",
            r.body
        );
    }
    assert!(in_summaries >= 8, "{in_summaries} of 10 found in summaries");
    ok(&st.cli(&[&"audit", &"--verify"]));
}

mod cluster;
mod compile;
mod console;
mod extism;
mod migrate;
mod redteam;
mod remote;

#[test]
fn logs_are_json_lines_with_the_request_id_tenant_and_extension() {
    let st = setup();
    let log = st.t.path().join("serve.log");
    let s = st.serve_logged("", Some(&log));
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(&s, &hello, &sig);
    let alpha = tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.hello", &hash, "none").status,
        200
    );
    let r = get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(&alpha));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r_id(&r);
    drop(s);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(!lines.is_empty());
    let answered = lines
        .iter()
        .find(|l| l["span"]["request_id"] == id.as_str() && l["message"] == "answered")
        .unwrap_or_else(|| panic!("no line for {id} in {text}"));
    assert_eq!(answered["span"]["tenant"], "alpha");
    assert_eq!(answered["span"]["extension"], "warden.hello");
    assert_eq!(answered["status"], 200);
    // Audit records stay in the audit log, not in the logs.
    assert!(!text.contains("\"audit\""), "{text}");
    // Wasmtime's and hyper's own debug and trace lines (which quote guest URLs and headers
    // unredacted) stay out even at `trace`.
    for l in &lines {
        let target = l["target"].as_str().unwrap_or("");
        let level = l["level"].as_str().unwrap_or("");
        assert!(
            !(["wasmtime", "hyper", "h2"]
                .iter()
                .any(|t| target.starts_with(t))
                && ["DEBUG", "TRACE"].contains(&level)),
            "{l}"
        );
    }
}
