//! Secrets through `wasi:config/store` with real guests (`hostile-secrets`, `secret-client`):
//! granted reads, denials, redaction of every value handed to a guest, encryption at rest,
//! isolation between tenants and extensions, and key-file failures.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use warden_audit::{Event, Record};
use warden_host::{
    CallError, ExtensionId, Grant, Host, LogLevel, LogLine, MemoryAudit, SecretName, SecretValue,
    Stream, TenantName,
};

use crate::support::{Lab, text};

const TOKEN: &str = "Sup3r-S3cret-Tok3n-7f2a9c";
/// How the value shows up in lowercased host names (denial targets).
const TOKEN_LOWER: &str = "sup3r-s3cret-tok3n-7f2a9c";

fn name(s: &str) -> SecretName {
    s.parse().unwrap()
}

fn value(s: &str) -> SecretValue {
    SecretValue::new(s.into()).unwrap()
}

fn grant(s: &str) -> Grant {
    s.parse().unwrap()
}

fn default_tenant() -> TenantName {
    TenantName::default_tenant()
}

/// hostile-secrets for the default tenant, with `grant`, and API_TOKEN stored.
fn lab_with(grant_text: &str) -> (Lab, ExtensionId) {
    let lab = Lab::new();
    let path = lab.bundle("hostile-secrets", |m| m);
    let id = lab
        .host
        .default_tenant()
        .load_file(&path, None, &grant(grant_text))
        .unwrap()
        .id;
    lab.host
        .tenant(&default_tenant())
        .put_secret(&id, &name("API_TOKEN"), value(TOKEN))
        .unwrap();
    (lab, id)
}

async fn call(host: &Host, id: &ExtensionId, method: &str, input: &str) -> String {
    text(
        &host
            .default_tenant()
            .call(id, method, input.as_bytes())
            .await
            .unwrap()
            .value,
    )
}

fn records_of(lab: &Lab, event: Event) -> Vec<Record> {
    lab.audit
        .records()
        .into_iter()
        .filter(|r| r.event() == event)
        .collect()
}

/// Every byte of every file under `dir`.
fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(all_bytes_under(&entry.path()));
        } else {
            out.extend(fs::read(entry.path()).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_absent(what: &str, hay: &str) {
    for v in [TOKEN, TOKEN_LOWER, &TOKEN[..12], &TOKEN[12..]] {
        assert!(!hay.contains(v), "{what} contains {v:?}: {hay}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_secret_is_read_and_its_name_audited() {
    let (lab, id) = lab_with("secret:API_TOKEN");
    assert_eq!(
        call(&lab.host, &id, "get", "API_TOKEN").await,
        format!("ok:{TOKEN}")
    );
    let grants = records_of(&lab, Event::Grant);
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].capability(), Some("secrets"));
    assert_eq!(grants[0].target(), Some("API_TOKEN"));
    assert_absent("audit", &format!("{:?}", lab.audit.records()));
    // Granted but never set: none, not an error.
    lab.host
        .tenant(&default_tenant())
        .delete_secret(&id, &name("API_TOKEN"))
        .unwrap();
    assert_eq!(call(&lab.host, &id, "get", "API_TOKEN").await, "none");
}

#[tokio::test(flavor = "multi_thread")]
async fn ungranted_and_undeclared_names_are_denied_and_the_call_goes_on() {
    let (lab, id) = lab_with("secret:API_TOKEN");
    let tenant = lab.host.tenant(&default_tenant());
    // Declared, set by the operator, but not granted.
    tenant
        .put_secret(&id, &name("OTHER_TOKEN"), value("other-value-123"))
        .unwrap();
    let denied = "err:upstream:access-denied: this secret is not granted to this extension";
    assert_eq!(call(&lab.host, &id, "get", "OTHER_TOKEN").await, denied);
    assert_eq!(call(&lab.host, &id, "get", "NOT_DECLARED").await, denied);
    assert_eq!(call(&lab.host, &id, "get", "../../x\0").await, denied);
    // get-all hands out only what is granted.
    assert_eq!(
        call(&lab.host, &id, "get-all", "").await,
        format!("API_TOKEN={TOKEN}")
    );
    let denials = records_of(&lab, Event::Denial);
    let targets: Vec<_> = denials
        .iter()
        .map(|r| (r.capability().unwrap(), r.target().unwrap()))
        .collect();
    assert_eq!(
        targets,
        vec![
            ("secrets", "OTHER_TOKEN"),
            ("secrets", "NOT_DECLARED"),
            // The audit record escapes control characters.
            ("secrets", "../../x\\0")
        ]
    );
    // Nothing granted at all: every name is denied.
    let lab2 = Lab::new();
    let id2 = lab2.load("hostile-secrets");
    assert_eq!(call(&lab2.host, &id2, "get", "API_TOKEN").await, denied);
    assert_eq!(call(&lab2.host, &id2, "get-all", "").await, "");
    assert_eq!(records_of(&lab2, Event::Denial).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_never_leaves_through_logs_records_or_errors() {
    let (lab, id) = lab_with("secret:API_TOKEN");
    let failure = lab
        .host
        .default_tenant()
        .call(&id, "leak", b"API_TOKEN")
        .await
        .unwrap_err();
    // The extension's own error, redacted in code and message.
    match &failure.error {
        CallError::Extension { code, message } => {
            assert_eq!(code, "leak-[REDACTED]");
            assert_eq!(message, "upstream rejected token [REDACTED]");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_absent("error", &failure.to_string());
    assert_absent("error", &format!("{failure:?}"));
    let logs: Vec<String> = failure
        .logs
        .iter()
        .map(|l| format!("{:?} {:?} {}", l.stream, l.context, l.text))
        .collect();
    let all = logs.join("\n");
    assert_absent("logs", &all);
    let find = |stream: Stream, needle: &str| {
        failure
            .logs
            .iter()
            .any(|l| l.stream == stream && l.text.contains(needle))
    };
    assert!(find(Stream::Stdout, "the token is [REDACTED]"), "{all}");
    // Split over two writes and two lines of stderr: both halves are found.
    assert!(find(Stream::Stderr, "first half [REDACTED]"), "{all}");
    assert!(find(Stream::Stderr, "[REDACTED] second half"), "{all}");
    assert!(
        find(Stream::Log(LogLevel::Info), "message has [REDACTED] inside"),
        "{all}"
    );
    assert!(
        failure
            .logs
            .iter()
            .any(|l| l.stream == Stream::Log(LogLevel::Warn)
                && l.context.as_deref() == Some("ctx-[REDACTED]")),
        "{all}"
    );
    assert!(
        find(Stream::Log(LogLevel::Error), "first [REDACTED]"),
        "{all}"
    );
    // Issue 9, finding 4: a context cut at 256 bytes in the middle of the value left its first
    // 1-3 bytes in clear. Every cut now redacts a tail of any length that starts a value.
    let cuts: Vec<&LogLine> = failure
        .logs
        .iter()
        .filter(|l| l.stream == Stream::Log(LogLevel::Debug) && l.text.starts_with("cut "))
        .collect();
    assert_eq!(cuts.len(), TOKEN.len() - 1, "{all}");
    for l in cuts {
        let ctx = l.context.as_deref().unwrap_or("");
        assert!(
            ctx.ends_with("[REDACTED]")
                && ctx.trim_end_matches("[REDACTED]").chars().all(|c| c == 'c'),
            "{}: context {ctx:?}",
            l.text
        );
    }
    assert!(
        find(Stream::Log(LogLevel::Error), "[REDACTED] second"),
        "{all}"
    );
    // The denied URL and the denied secret name carried the value: recorded redacted.
    let denials = records_of(&lab, Event::Denial);
    let targets: Vec<_> = denials.iter().map(|r| r.target().unwrap()).collect();
    assert!(
        targets.contains(&"https://[REDACTED].evil.test:443"),
        "{targets:?}"
    );
    assert!(targets.contains(&"[REDACTED]"), "{targets:?}");
    assert_absent("audit", &format!("{:?}", lab.audit.records()));
    // Nothing under the data dir holds the value either (database, key, cache).
    let data = all_bytes_under(&lab.dir.path().join("data"));
    assert!(!contains(&data, TOKEN) && !contains(&data, TOKEN_LOWER));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_encrypted_at_rest_and_survive_a_restart() {
    let (lab, id) = lab_with("secret:API_TOKEN");
    let data = lab.dir.path().join("data");
    let key = fs::metadata(data.join("secret.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(key.len(), 32);
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    let (tenant, ext, secret, ct): (String, String, String, Vec<u8>) = db
        .query_row(
            "SELECT tenant, extension, name, ciphertext FROM secret_values",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (tenant.as_str(), ext.as_str(), secret.as_str()),
        ("default", "warden.hostile-secrets", "API_TOKEN")
    );
    assert!(!contains(&ct, TOKEN));
    let bytes = all_bytes_under(&data);
    assert!(!contains(&bytes, TOKEN), "the value is stored in clear");

    let host = lab.restarted_host();
    let path = lab.bundle("hostile-secrets", |m| m);
    let id2 = host
        .default_tenant()
        .load_file(&path, None, &grant("secret:API_TOKEN"))
        .unwrap()
        .id;
    assert_eq!(id, id2);
    assert_eq!(
        call(&host, &id2, "get", "API_TOKEN").await,
        format!("ok:{TOKEN}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ciphertext_moved_to_another_extension_does_not_decrypt() {
    let (lab, a) = lab_with("secret:API_TOKEN");
    let path = lab.bundle("hostile-secrets", |m| {
        m.replace("warden.hostile-secrets", "warden.other-secrets")
    });
    let b = lab
        .host
        .default_tenant()
        .load_file(&path, None, &grant("secret:API_TOKEN"))
        .unwrap()
        .id;
    let tenant = lab.host.tenant(&default_tenant());
    tenant
        .put_secret(&b, &name("API_TOKEN"), value("b-own-value-456"))
        .unwrap();
    assert_eq!(
        call(&lab.host, &b, "get", "API_TOKEN").await,
        "ok:b-own-value-456"
    );
    // Copy A's nonce and ciphertext over B's row.
    let db = rusqlite::Connection::open(lab.dir.path().join("data/warden.db")).unwrap();
    let n = db
        .execute(
            "UPDATE secret_values SET (nonce, ciphertext) =
               (SELECT nonce, ciphertext FROM secret_values WHERE extension = ?1)
             WHERE extension = ?2",
            [a.as_str(), b.as_str()],
        )
        .unwrap();
    assert_eq!(n, 1);
    let out = call(&lab.host, &b, "get", "API_TOKEN").await;
    assert_eq!(out, "err:io:secret API_TOKEN cannot be read");
    let denial = records_of(&lab, Event::Denial).pop().unwrap();
    assert_eq!(denial.target(), Some("API_TOKEN"));
    let why = denial.message().unwrap();
    assert!(
        why.contains("API_TOKEN") && why.contains("warden.other-secrets"),
        "{why}"
    );
    assert!(why.contains("cannot be decrypted"), "{why}");
    assert_absent("denial", why);
    // A is unaffected.
    assert_eq!(
        call(&lab.host, &a, "get", "API_TOKEN").await,
        format!("ok:{TOKEN}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_and_extensions_called_concurrently_see_only_their_own() {
    let lab = Lab::new();
    let g = grant("secret:API_TOKEN");
    let p1 = lab.bundle("hostile-secrets", |m| m);
    let p2 = lab.bundle("hostile-secrets", |m| {
        m.replace("warden.hostile-secrets", "warden.second-secrets")
    });
    let t1: TenantName = "t-one".parse().unwrap();
    let t2: TenantName = "t-two".parse().unwrap();
    let mut installs = Vec::new();
    for (t, p) in [(&t1, &p1), (&t1, &p2), (&t2, &p1), (&t2, &p2)] {
        let tenant = lab.host.tenant(t);
        let id = tenant.load_file(p, None, &g).unwrap().id;
        let v = format!("value-of-{t}-{id}");
        tenant
            .put_secret(&id, &name("API_TOKEN"), value(&v))
            .unwrap();
        installs.push((t.clone(), id, v));
    }
    let mut tasks = Vec::new();
    for round in 0..4 {
        for (t, id, v) in installs.clone() {
            let host = lab.host.clone();
            tasks.push(tokio::spawn(async move {
                let method = if round % 2 == 0 { "get" } else { "get-all" };
                let out = host
                    .tenant(&t)
                    .call(&id, method, b"API_TOKEN")
                    .await
                    .unwrap();
                let want = if round % 2 == 0 {
                    format!("ok:{v}")
                } else {
                    format!("API_TOKEN={v}")
                };
                assert_eq!(text(&out.value), want);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_secrets_shadow_stored_ones_and_are_never_written() {
    let (lab, id) = lab_with("secret:API_TOKEN");
    let tenant = lab.host.tenant(&default_tenant());
    tenant
        .put_transient_secret(&id, &name("API_TOKEN"), value("only-for-this-run-99"))
        .unwrap();
    assert_eq!(
        call(&lab.host, &id, "get", "API_TOKEN").await,
        "ok:only-for-this-run-99"
    );
    let data = all_bytes_under(&lab.dir.path().join("data"));
    assert!(!contains(&data, "only-for-this-run-99"));
    // Another tenant's install of the same extension does not see it.
    let other: TenantName = "other".parse().unwrap();
    let path = lab.bundle("hostile-secrets", |m| m);
    let t = lab.host.tenant(&other);
    let id2 = t
        .load_file(&path, None, &grant("secret:API_TOKEN"))
        .unwrap()
        .id;
    assert_eq!(
        t.call(&id2, "get", b"API_TOKEN").await.unwrap().value,
        b"none"
    );
}

fn build_on(data: &Path) -> Result<Host, String> {
    Host::builder()
        .data_dir(data)
        .audit(Arc::new(MemoryAudit::default()))
        .build()
        // The whole chain, as the CLI shows it: causes are kept as sources.
        .map_err(|e| warden_call::text::chain(&e))
}

#[test]
fn bad_key_files_are_clear_errors() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    build_on(&data).unwrap();
    let key = data.join("secret.key");

    // Another key than the one the database was written with.
    let original = fs::read(&key).unwrap();
    fs::write(&key, [9u8; 32]).unwrap();
    let e = build_on(&data).err().unwrap();
    assert!(e.contains("wrong or replaced key file"), "{e}");

    // Too short.
    fs::write(&key, &original[..20]).unwrap();
    let e = build_on(&data).err().unwrap();
    assert!(
        e.contains("secret.key") && e.contains("exactly 32 bytes, found 20"),
        "{e}"
    );

    // Readable by others.
    fs::write(&key, &original).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let e = build_on(&data).err().unwrap();
    assert!(e.contains("accessible by other users"), "{e}");

    // Restored: starts again.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    build_on(&data).unwrap();
}

/// F5: in a data dir that already exists with mode 0755, `warden.db` and its `-wal`/`-shm`
/// are created 0600 (both stores open it; neither may create it wider). An existing database
/// readable by others stops the host with a clear error until the operator fixes it.
#[test]
fn the_database_is_private_and_a_readable_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    let host = build_on(&data).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The host holds its connections open: the WAL files exist now.
    for f in ["warden.db", "warden.db-wal", "warden.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    drop(host);

    fs::set_permissions(data.join("warden.db"), fs::Permissions::from_mode(0o644)).unwrap();
    let e = build_on(&data).err().unwrap();
    assert!(
        e.contains("warden.db") && e.contains("accessible by other users (mode 644)"),
        "{e}"
    );
    assert!(e.contains("chmod 600"), "{e}");
    // Refused, not silently changed.
    assert_eq!(mode(&data.join("warden.db")), 0o644);

    fs::set_permissions(data.join("warden.db"), fs::Permissions::from_mode(0o600)).unwrap();
    build_on(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_logging_is_captured_with_level_and_context_escaped_and_capped() {
    let lab = Lab::new();
    let id = lab.load("hostile-secrets");
    let called = lab
        .host
        .default_tenant()
        .call(
            &id,
            "log",
            "warn my-ctx hello \u{1b}[31mred\nline".as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(called.logs.len(), 1);
    let l = &called.logs[0];
    assert_eq!(l.stream, Stream::Log(LogLevel::Warn));
    assert_eq!(l.context.as_deref(), Some("my-ctx"));
    assert_eq!(l.text, "hello \\u{1b}[31mred\\nline");

    let called = lab
        .host
        .default_tenant()
        .call(&id, "log-flood", b"5000")
        .await
        .unwrap();
    let kept = called
        .logs
        .iter()
        .filter(|l| l.stream == Stream::Log(LogLevel::Debug))
        .count();
    // 64 KiB of 105-byte messages.
    assert_eq!(kept, 65536 / 105);
    let last = called.logs.last().unwrap();
    assert_eq!(
        last.text,
        format!(
            "[{} more log messages ({} bytes) dropped: log cap reached]",
            5000 - kept,
            (5000 - kept) * 105
        )
    );
}

/// secret-client sends the token to its allowed host (resolved to a local server) in the
/// authorization header; the token appears nowhere else.
#[tokio::test(flavor = "multi_thread")]
async fn secret_client_uses_its_token_only_where_it_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let body = b"acme-user-42";
        write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        text(&head)
    });
    let resolver = crate::egress::FakeResolver::new(&[("api.acme.test", &[&["127.0.0.1"]])]);
    let lab = Lab::with_resolver(crate::egress::allow_loopback(), Some(resolver));
    let path = lab.bundle("secret-client", move |m| {
        m.replace("allowed_ports = [80]", &format!("allowed_ports = [{port}]"))
    });
    let id = lab
        .host
        .default_tenant()
        .load_file(&path, None, &grant("secret:ACME_TOKEN,network"))
        .unwrap()
        .id;
    lab.host
        .tenant(&default_tenant())
        .put_secret(&id, &name("ACME_TOKEN"), value(TOKEN))
        .unwrap();
    let called = lab
        .host
        .default_tenant()
        .call(&id, "whoami", format!("api.acme.test:{port}").as_bytes())
        .await
        .unwrap();
    assert_eq!(text(&called.value), "200 acme-user-42");
    let head = server.join().unwrap();
    assert!(
        head.contains(&format!("authorization: Bearer {TOKEN}")),
        "{head}"
    );
    assert_absent("logs", &format!("{:?}", called.logs));
    assert_absent("audit", &format!("{:?}", lab.audit.records()));
    let grants: Vec<_> = records_of(&lab, Event::Grant)
        .iter()
        .map(|r| {
            (
                r.capability().unwrap().to_string(),
                r.target().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        grants.contains(&("secrets".into(), "ACME_TOKEN".into())),
        "{grants:?}"
    );
}

/// Collects every tracing event's fields as text.
#[derive(Default, Clone)]
struct Collect(Arc<std::sync::Mutex<String>>);

impl tracing::field::Visit for Collect {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let mut s = self.0.lock().unwrap();
        s.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Collect {
    /// Up to DEBUG: Wasmtime's own TRACE events of WASI bindings quote guest arguments (e.g.
    /// an outgoing request's authority) and must stay off in production (see ARCHITECTURE.md).
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::DEBUG
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        event.record(&mut self.clone());
        self.0.lock().unwrap().push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The host logs the guest's output with tracing: redacted like everything else.
#[tokio::test(flavor = "current_thread")]
async fn tracing_lines_carry_redacted_guest_output_only() {
    let (lab, id) = lab_with("secret:API_TOKEN");
    let collect = Collect::default();
    let _guard = tracing::subscriber::set_default(collect.clone());
    let _ = lab.call(&id, "leak", b"API_TOKEN").await;
    let logged = collect.0.lock().unwrap().clone();
    assert!(logged.contains("the token is [REDACTED]"), "{logged}");
    assert!(logged.contains("context=\"ctx-[REDACTED]\""), "{logged}");
    assert_absent("tracing", &logged);
}

/// A caller passing its secret to another extension through invoke: the callee prints it, and
/// the callee's output (its own call's logs) is redacted of the caller's values too.
#[tokio::test]
async fn a_secret_passed_through_invoke_is_redacted_in_the_callees_output() {
    let lab = Lab::new();
    lab.load("hostile");
    let path = lab.bundle("hostile-secrets", |m| {
        m.replace(
            "secrets = [\"API_TOKEN\", \"OTHER_TOKEN\"]",
            "secrets = [\"API_TOKEN\", \"OTHER_TOKEN\"]\ncalls = [\"warden.hostile\"]",
        )
    });
    let id = lab
        .host
        .default_tenant()
        .load_file(&path, None, &grant("secret:API_TOKEN,call:warden.hostile"))
        .unwrap()
        .id;
    lab.host
        .tenant(&default_tenant())
        .put_secret(&id, &name("API_TOKEN"), value(TOKEN))
        .unwrap();
    let collect = Collect::default();
    let _guard = tracing::subscriber::set_default(collect.clone());
    let out = call(&lab.host, &id, "pass", "API_TOKEN warden.hostile").await;
    assert!(out.starts_with("passed:"), "{out}");
    let logged = collect.0.lock().unwrap().clone();
    assert!(logged.contains("warden.hostile"), "{logged}");
    assert!(logged.contains("[REDACTED]"), "{logged}");
    assert_absent("tracing", &logged);
    for r in lab.audit.records() {
        assert_absent("audit", &format!("{r:?}"));
    }
}

/// A caller's secret used as the *method* name of an invoke: the callee refuses the unknown
/// method, and its audit record must not quote the value.
#[tokio::test]
async fn a_secret_used_as_a_method_name_is_not_quoted_in_the_callees_record() {
    let lab = Lab::new();
    lab.load("echo");
    let path = lab.bundle("hostile-secrets", |m| {
        m.replace(
            "secrets = [\"API_TOKEN\", \"OTHER_TOKEN\"]",
            "secrets = [\"API_TOKEN\", \"OTHER_TOKEN\"]\ncalls = [\"warden.echo\"]",
        )
    });
    let id = lab
        .host
        .default_tenant()
        .load_file(&path, None, &grant("secret:API_TOKEN,call:warden.echo"))
        .unwrap()
        .id;
    lab.host
        .tenant(&default_tenant())
        .put_secret(&id, &name("API_TOKEN"), value(TOKEN))
        .unwrap();
    let out = call(&lab.host, &id, "pass-method", "API_TOKEN warden.echo").await;
    assert_eq!(out, "err:invalid");
    let records = lab.audit.records();
    let refused = records
        .iter()
        .find(|r| r.extension() == Some("warden.echo") && r.message().is_some())
        .expect("the callee's refusal record");
    assert!(
        refused.message().unwrap_or("").contains("[REDACTED]"),
        "{refused:?}"
    );
    for r in &records {
        assert_absent("audit", &format!("{r:?}"));
    }
}
