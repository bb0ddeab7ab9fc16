//! Ordinary calls: rpc and http extensions answer, each call is audited, and a bundle that
//! fails verification is refused and audited.

use std::sync::Arc;

use bytes::Bytes;
use warden_audit::{Event, Outcome};
use warden_host::{CallError, Grant, Host};

use crate::support::{Lab, call, text};

#[tokio::test(flavor = "multi_thread")]
async fn echo_answers_and_each_call_is_audited() {
    let lab = Lab::new();
    let id = lab.load("echo");
    let out = lab.call(&id, "echo", br#"{"x":[1,2]}"#).await.unwrap();
    assert_eq!(out, br#"{"x":[1,2]}"#);
    let out = lab.call(&id, "greet", br#"{"name":"Ada"}"#).await.unwrap();
    assert!(text(&out).contains("Hello, Ada!"), "{}", text(&out));
    // A method the manifest does not list is refused before anything runs.
    let e = lab.call(&id, "nope", b"{}").await.unwrap_err();
    assert!(matches!(e.error, CallError::Invalid(_)), "{e}");
    let records = lab.audit.records();
    let calls: Vec<_> = records
        .iter()
        .filter(|r| r.event() == Event::Call)
        .collect();
    assert_eq!(calls.len(), 3, "{records:#?}");
    assert_eq!(calls[0].outcome(), Outcome::Ok);
    assert_eq!(calls[0].extension(), Some("warden.echo"));
    assert!(calls[0].content_hash().unwrap().starts_with("sha256:"));
    assert!(calls[0].memory_peak_bytes().unwrap() > 0);
    assert!(calls[0].duration_ms().is_some());
    assert_eq!(calls[2].outcome(), Outcome::Invalid);
    assert!(
        records
            .iter()
            .any(|r| r.event() == Event::Load && r.outcome() == Outcome::Ok)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_answers_http() {
    let lab = Lab::new();
    let id = lab.load("hello");
    let req = http::Request::get("/greet/me").body(Bytes::new()).unwrap();
    let resp = lab.call_http(&id, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(
        text(resp.body()).contains("You asked for /greet/me"),
        "{}",
        text(resp.body())
    );
    // The wrong kind of call for the world is a clear error, not a trap.
    let e = lab.call(&id, "x", b"").await.unwrap_err();
    assert!(matches!(e.error, CallError::Invalid(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unverifiable_bundles_are_refused_and_audited() {
    let lab = Lab::new();
    let path = lab.bundle("echo", |m| m);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2000;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::None)
        .unwrap_err();
    assert!(
        e.to_string().contains("verification failed")
            || e.to_string().contains("reading the bundle"),
        "{e}"
    );
    let records = lab.audit.records();
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].event(), Event::VerificationFailure);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_above_the_ceiling_refuse_the_load() {
    let lab =
        Lab::with_policy(warden_host::Policy::parse("[policy]\nmax_memory = \"16MiB\"\n").unwrap());
    let path = lab.bundle("hostile", |m| m);
    let e = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::None)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("limits.max_memory = 32MiB is above the operator's ceiling of 16MiB"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_code_is_cached_on_disk_and_shared_by_content_hash() {
    let lab = Lab::new();
    let a = lab.load("echo");
    let cache = lab.dir.path().join("data/cache");
    let files = walk(&cache);
    assert!(
        !files.is_empty(),
        "nothing cached under {}",
        cache.display()
    );
    // The same bytes under another id are prepared once (same content hash, no new cache file).
    let b = lab.load_edited("echo", |m| {
        m.replace("id = \"warden.echo\"", "id = \"warden.echo2\"")
    });
    assert_ne!(a, b);
    assert_eq!(lab.call(&b, "echo", b"1").await.unwrap(), b"1");
    // A restart finds the compiled code: an entry is written only on a cache miss, so a
    // recompilation would rewrite these files.
    let artifacts =
        |files: &[std::path::PathBuf]| -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
            let mut v: Vec<_> = files
                .iter()
                // Entries have dot-free names (`HASH-FINGERPRINT`); temporary files have dots.
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().contains('.'))
                })
                .map(|p| (p.clone(), std::fs::metadata(p).unwrap().modified().unwrap()))
                .collect();
            v.sort();
            v
        };
    let before = artifacts(&walk(&cache));
    // One entry: the second id had the same content hash.
    assert_eq!(before.len(), 1, "{before:?}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let restarted = lab.restarted_host();
    let path = lab.bundle("echo", |m| m);
    let info = restarted
        .default_tenant()
        .load_file(&path, None, &Grant::None)
        .unwrap();
    assert_eq!(
        call(&restarted, &info.id, "echo", b"2").await.unwrap(),
        b"2"
    );
    assert_eq!(
        artifacts(&walk(&cache)),
        before,
        "the restarted host recompiled"
    );
}

/// Compiled code changed on disk by someone else (a flipped byte in the code, under a valid
/// name): the restarted host does not load it, compiles again, answers right, and audits the
/// rejection as invalid (a MAC mismatch is tampering).
#[tokio::test(flavor = "multi_thread")]
async fn tampered_compiled_code_is_compiled_again_and_audited() {
    let lab = Lab::new();
    lab.load("echo");
    let cache = lab.dir.path().join("data/cache");
    let entry = walk(&cache)
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().contains('.'))
        })
        .unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&entry, &bytes).unwrap();
    let audit = Arc::new(warden_host::MemoryAudit::default());
    let restarted = Host::builder()
        .trust(warden_host::TrustBundle::parse(lab.trust_text()).unwrap())
        .data_dir(lab.dir.path().join("data"))
        .audit(Arc::clone(&audit) as Arc<dyn warden_host::AuditSink>)
        .build()
        .unwrap();
    let info = restarted
        .default_tenant()
        .load_file(&lab.bundle("echo", |m| m), None, &Grant::None)
        .unwrap();
    assert_eq!(
        call(&restarted, &info.id, "echo", b"3").await.unwrap(),
        b"3"
    );
    let records = audit.records();
    let rejected = records
        .iter()
        .find(|r| r.message().is_some_and(|m| m.contains("was not loaded")))
        .unwrap_or_else(|| panic!("no rejection audited: {records:?}"));
    assert_eq!(rejected.event(), Event::Load);
    assert_eq!(rejected.outcome().as_str(), "invalid", "{rejected:?}");
    // The entry was rewritten with a valid MAC.
    assert_ne!(std::fs::read(&entry).unwrap(), bytes);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn data_dirs_are_private_and_shared_ones_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    for d in ["data", "data/cache"] {
        let mode = std::fs::metadata(lab.dir.path().join(d))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{d}");
    }
    let shared = lab.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = warden_host::Host::builder()
        .data_dir(&shared)
        .build()
        .err()
        .unwrap();
    assert!(e.to_string().contains("writable by other users"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_calls_instance_slot_comes_back() {
    let lab = Lab::new();
    let id = lab.load("echo");
    let capacity = lab.host.pool_usage().capacity;
    // More calls than the pool has slots, one after another: each one's slot comes back.
    for i in 0..capacity + 20 {
        let out = lab.call(&id, "echo", br#"{"n":1}"#).await;
        assert!(out.is_ok(), "call {i}: {:?}", out.err());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lab.host.pool_usage().instances > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "instances still live: {:?}",
            lab.host.pool_usage()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A prepared component (compiled, pre-linked: tens of MB for a JavaScript or Python one) is
/// forgotten once no loaded install holds it: replaced by another version, or unloaded. One
/// that another tenant still has loaded stays.
#[tokio::test(flavor = "multi_thread")]
async fn prepared_components_are_forgotten_when_nothing_holds_them() {
    let lab = Lab::new();
    let id = lab.load("echo");
    assert_eq!(lab.host.prepared_components(), 1);
    let v2 = lab.bundle("echo", |m| {
        m.replace("description = \"", "description = \"(v2) ")
    });
    let loaded = lab
        .host
        .default_tenant()
        .load_file(&v2, None, &Grant::None)
        .unwrap();
    assert_eq!(loaded.id, id);
    assert_eq!(
        lab.host.prepared_components(),
        1,
        "v1 kept after its upgrade"
    );
    assert_eq!(lab.call(&id, "echo", b"2").await.unwrap(), b"2");
    let other: warden_host::TenantName = "other".parse().unwrap();
    lab.host
        .tenant(&other)
        .load_file(&v2, None, &Grant::None)
        .unwrap();
    assert!(lab.host.default_tenant().unload(&id));
    assert_eq!(
        lab.host.prepared_components(),
        1,
        "forgotten while still loaded"
    );
    assert_eq!(
        text(
            &lab.host
                .tenant(&other)
                .call(&id, "echo", b"3")
                .await
                .unwrap()
                .value
        ),
        "3"
    );
    assert!(lab.host.tenant(&other).unload(&id));
    assert_eq!(lab.host.prepared_components(), 0);
}
