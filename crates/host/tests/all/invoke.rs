//! Calls between extensions (`warden:extension/invoke`) with real components: the caller example
//! calling echo, hostile and other callers. Each refusal is a typed `denied` error the calling
//! guest sees (its call goes on and returns), and an audit denial naming `invoke` and the target.

use std::sync::Arc;

use warden_audit::{Decision, Event, Outcome, Record};
use warden_host::{Authorizer, CallRequest, ExtensionId, Grant, LoadRequest, Policy, TenantName};

use crate::support::{Lab, text};

/// Loads the caller example as `id`, declaring `calls`, with `grant`.
fn caller(lab: &Lab, id: &str, calls: &[&str], grant: &Grant) -> ExtensionId {
    let list = calls
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let id = id.to_string();
    lab.load_granted(
        "caller",
        move |m| {
            m.replace("id = \"warden.caller\"", &format!("id = {id:?}"))
                .replace("calls = [\"warden.echo\"]", &format!("calls = [{list}]"))
        },
        grant,
    )
}

fn denials(records: &[Record], capability: &str) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.event() == Event::Denial && r.capability() == Some(capability))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_and_granted_call_reaches_the_callee_and_is_audited() {
    let lab = Lab::new();
    let echo = lab.load("echo");
    let c = caller(&lab, "warden.caller", &["warden.echo"], &Grant::All);
    let out = lab
        .call(&c, "call", b"warden.echo echo\nhello there")
        .await
        .unwrap();
    assert_eq!(text(&out), "ok:hello there");
    let records = lab.audit.records();
    let grant = records
        .iter()
        .find(|r| r.event() == Event::Grant && r.capability() == Some("calls"))
        .expect("a grant record for the call");
    assert_eq!(grant.target(), Some("warden.echo"));
    assert_eq!(grant.decision(), Some(Decision::Allow));
    assert_eq!(grant.extension(), Some("warden.caller"));
    // The callee's own call record, with its own identity and the tenant.
    let callee_call = records
        .iter()
        .find(|r| r.event() == Event::Call && r.extension() == Some(echo.as_str()))
        .expect("the callee's call record");
    assert_eq!(callee_call.outcome(), Outcome::Ok);
    assert_eq!(callee_call.tenant(), Some("default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_or_ungranted_targets_are_denied_and_the_caller_goes_on() {
    let lab = Lab::new();
    lab.load("echo");
    lab.load("hostile");
    // Declared echo only: hostile is not declared.
    let c = caller(&lab, "warden.caller", &["warden.echo"], &Grant::All);
    let out = lab
        .call(&c, "call", b"warden.hostile state\n")
        .await
        .unwrap();
    assert!(text(&out).starts_with("err:denied:"), "{}", text(&out));
    // Declared but not granted.
    let d = caller(&lab, "warden.caller2", &["warden.echo"], &Grant::None);
    let out = lab.call(&d, "call", b"warden.echo echo\nx").await.unwrap();
    assert!(text(&out).starts_with("err:denied:"), "{}", text(&out));
    // Not an extension id at all.
    let out = lab
        .call(&c, "call", b"../../etc/passwd echo\nx")
        .await
        .unwrap();
    assert!(text(&out).starts_with("err:denied:"), "{}", text(&out));
    let records = lab.audit.records();
    let denied = denials(&records, "calls");
    let targets: Vec<_> = denied.iter().filter_map(|r| r.target()).collect();
    assert_eq!(
        targets,
        ["warden.hostile", "warden.echo", "../../etc/passwd"],
        "{denied:?}"
    );
    // Nothing ran in the targets.
    assert!(!records.iter().any(|r| r.event() == Event::Call
        && matches!(r.extension(), Some("warden.hostile") | Some("warden.echo"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_runs_with_its_own_capabilities_not_the_callers() {
    let lab = Lab::new();
    lab.load("hostile"); // no network granted
    // The caller has a network grant; the callee must not inherit it.
    let c = lab.load_granted(
        "caller",
        |m| {
            m.replace("calls = [\"warden.echo\"]", "calls = [\"warden.hostile\"]")
                .replace(
                    "[limits]",
                    "[permissions.network]\nenabled = true\nallowed_hosts = [\"127.0.0.1:9\"]\n\n[limits]",
                )
        },
        &Grant::All,
    );
    let out = lab
        .call(&c, "call", b"warden.hostile egress\nhttp://127.0.0.1:9/")
        .await
        .unwrap();
    assert!(text(&out).starts_with("ok:"), "{}", text(&out));
    assert!(text(&out).contains("HttpRequestDenied"), "{}", text(&out));
    let records = lab.audit.records();
    let http = denials(&records, "network");
    assert_eq!(http.len(), 1, "{records:?}");
    assert_eq!(http[0].extension(), Some("warden.hostile"));
    assert_eq!(http[0].target(), Some("http://127.0.0.1:9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_are_refused() {
    let lab = Lab::new();
    let a = caller(&lab, "warden.a", &["warden.b"], &Grant::All);
    caller(&lab, "warden.b", &["warden.a"], &Grant::All);
    // a → b → a: the second call to a is a cycle.
    let out = lab
        .call(&a, "call", b"warden.b call\nwarden.a call\nwarden.b call\n")
        .await
        .unwrap();
    assert!(text(&out).starts_with("ok:err:denied:"), "{}", text(&out));
    assert!(text(&out).contains("cycle"), "{}", text(&out));
    let d = denials(&lab.audit.records(), "calls");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].extension(), Some("warden.b"));
    assert_eq!(d[0].target(), Some("warden.a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_is_limited() {
    let lab = Lab::new();
    let ids = [
        "warden.c1",
        "warden.c2",
        "warden.c3",
        "warden.c4",
        "warden.c5",
    ];
    for w in ids.windows(2) {
        caller(&lab, w[0], &[w[1]], &Grant::All);
    }
    caller(&lab, "warden.c5", &["warden.echo"], &Grant::All);
    lab.load("echo");
    // c1 → c2 → c3 → c4 is allowed (4 deep); c4 → c5 is one too many.
    let input =
        b"warden.c2 call\nwarden.c3 call\nwarden.c4 call\nwarden.c5 call\nwarden.echo echo\nx";
    let c1: ExtensionId = "warden.c1".parse().unwrap();
    let out = lab.call(&c1, "call", input).await.unwrap();
    assert!(
        text(&out).starts_with("ok:ok:ok:err:denied:"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("at most"), "{}", text(&out));
    let d = denials(&lab.audit.records(), "calls");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].extension(), Some("warden.c4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_within_the_tenant() {
    let lab = Lab::new();
    let other: TenantName = "other".parse().unwrap();
    // echo is loaded for another tenant only.
    let path = lab.bundle("echo", |m| m);
    lab.host
        .tenant(&other)
        .load_file(&path, None, &Grant::None)
        .unwrap();
    let c = caller(&lab, "warden.caller", &["warden.echo"], &Grant::All);
    let out = lab.call(&c, "call", b"warden.echo echo\nx").await.unwrap();
    assert!(text(&out).starts_with("err:not-found:"), "{}", text(&out));
    assert!(
        !lab.audit
            .records()
            .iter()
            .any(|r| r.event() == Event::Call && r.extension() == Some("warden.echo"))
    );
}

struct Picky;

impl Authorizer for Picky {
    fn authorize_load(&self, request: &LoadRequest<'_>) -> Result<(), String> {
        if request.manifest.extension.id.as_str() == "warden.hostile" {
            return Err("hostile extensions are not welcome here".into());
        }
        Ok(())
    }

    fn authorize_call(&self, request: &CallRequest<'_>) -> Result<(), String> {
        if request.method == "greet" {
            return Err(format!("{} may not greet", request.caller));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorizer_can_refuse_loads_and_calls_but_not_allow_more() {
    let lab = Lab::with_builder(Policy::default(), |b| b.authorizer(Arc::new(Picky)));
    let path = lab.bundle("hostile", |m| m);
    let err = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::None)
        .unwrap_err();
    assert!(err.to_string().contains("not welcome"), "{err}");
    let load = lab
        .audit
        .records()
        .into_iter()
        .rfind(|r| r.event() == Event::Load)
        .unwrap();
    assert_eq!(load.outcome(), Outcome::Denied);
    assert!(
        lab.host
            .default_tenant()
            .extension(&"warden.hostile".parse().unwrap())
            .is_none()
    );

    lab.load("echo");
    let c = caller(&lab, "warden.caller", &["warden.echo"], &Grant::All);
    let out = lab.call(&c, "call", b"warden.echo echo\nx").await.unwrap();
    assert_eq!(text(&out), "ok:x");
    let out = lab
        .call(&c, "call", b"warden.echo greet\n{\"name\":\"a\"}")
        .await
        .unwrap();
    assert!(text(&out).starts_with("err:denied:"), "{}", text(&out));
    assert!(text(&out).contains("may not greet"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_calls_per_top_level_call_are_limited_and_every_refusal_is_counted() {
    let lab = Lab::new();
    lab.load("echo");
    let c = caller(&lab, "warden.caller", &["warden.echo"], &Grant::All);
    let out = lab
        .call(&c, "call", b"warden.echo echo 130\nx")
        .await
        .unwrap();
    let out = text(&out);
    assert!(out.starts_with("ok=100 err=30 err:denied:"), "{out}");
    assert!(out.contains("per top-level call"), "{out}");
    // Thirty refusals of the same kind: one record that counts them, nothing dropped.
    let d = denials(&lab.audit.records(), "calls");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].message().unwrap_or("").ends_with("(30 attempts)"),
        "{d:?}"
    );
    // Each of the hundred calls that ran has its own record.
    let ran = lab
        .audit
        .records()
        .iter()
        .filter(|r| r.event() == Event::Call && r.extension() == Some("warden.echo"))
        .count();
    assert_eq!(ran, 100);
}

/// A callee installed for the tenant but never loaded in this process is loaded by the call,
/// verified and compiled as a top-level call would load it (red team: it answered "not
/// loaded" until something else had loaded it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_callee_that_was_never_loaded_is_loaded_by_the_call() {
    let lab = Lab::new();
    let acme: TenantName = "acme".parse().unwrap();
    let admin = lab.host.admin().unwrap();
    admin.create_tenant(&acme).unwrap();
    for (name, grant) in [("echo", Grant::None), ("caller", Grant::All)] {
        let b = lab.bundle(name, |m| m);
        let bytes = std::fs::read(&b).unwrap();
        let sig = std::fs::read(format!("{}.sig", b.display())).unwrap();
        admin
            .install(&acme, name, bytes, &sig, Some(&grant), false)
            .unwrap();
    }
    let caller: ExtensionId = "warden.caller".parse().unwrap();
    let echo: ExtensionId = "warden.echo".parse().unwrap();
    admin.load_installed(&acme, &caller).unwrap();
    let view = lab.host.tenant(&acme);
    assert!(view.extension(&echo).is_none(), "echo is not loaded yet");
    let out = view
        .call(&caller, "call", b"warden.echo echo\nhello there")
        .await
        .unwrap();
    assert_eq!(text(&out.value), "ok:hello there");
    assert!(view.extension(&echo).is_some(), "echo was loaded");
    let records = lab.audit.records();
    assert!(
        records.iter().any(|r| r.event() == Event::Load
            && r.extension() == Some("warden.echo")
            && r.tenant() == Some("acme")
            && r.outcome() == Outcome::Ok),
        "{records:?}"
    );
    // Not installed for the tenant: still not found, nothing loaded.
    let other: TenantName = "other".parse().unwrap();
    admin.create_tenant(&other).unwrap();
    let b = lab.bundle("caller", |m| m);
    let bytes = std::fs::read(&b).unwrap();
    let sig = std::fs::read(format!("{}.sig", b.display())).unwrap();
    admin
        .install(&other, "caller", bytes, &sig, Some(&Grant::All), false)
        .unwrap();
    admin.load_installed(&other, &caller).unwrap();
    let out = lab
        .host
        .tenant(&other)
        .call(&caller, "call", b"warden.echo echo\nx")
        .await
        .unwrap();
    assert!(
        text(&out.value).starts_with("err:not-found:"),
        "{}",
        text(&out.value)
    );
}

/// A loaded callee uninstalled by another process on the same storage (another host here, as
/// `warden uninstall` or another runner would) is refused by the next call and unloaded, and
/// one upgraded or regranted there is loaded again as installed (red team: a callee stayed
/// callable as loaded, since only the gateway's requests read the registry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_uninstalled_elsewhere_is_refused_by_the_next_call() {
    let lab = Lab::new();
    let acme: TenantName = "acme".parse().unwrap();
    let admin = lab.host.admin().unwrap();
    admin.create_tenant(&acme).unwrap();
    let install = |admin: &warden_host::Admin<'_>, name: &str, grant: &Grant| {
        let b = lab.bundle(name, |m| m);
        let bytes = std::fs::read(&b).unwrap();
        let sig = std::fs::read(format!("{}.sig", b.display())).unwrap();
        admin
            .install(&acme, name, bytes, &sig, Some(grant), true)
            .unwrap();
    };
    install(&admin, "echo", &Grant::None);
    install(&admin, "caller", &Grant::All);
    let caller: ExtensionId = "warden.caller".parse().unwrap();
    let echo: ExtensionId = "warden.echo".parse().unwrap();
    admin.load_installed(&acme, &caller).unwrap();
    let view = lab.host.tenant(&acme);
    let out = view
        .call(&caller, "call", b"warden.echo echo\nfirst")
        .await
        .unwrap();
    assert_eq!(text(&out.value), "ok:first");
    assert!(view.extension(&echo).is_some());

    let other = warden_host::Host::builder()
        .trust(warden_host::TrustBundle::parse(lab.trust_text()).unwrap())
        .data_dir(lab.dir.path().join("data"))
        .build()
        .unwrap();
    // Regranted there: the call loads echo again with the new grant.
    let grant = Grant::All;
    install(&other.admin().unwrap(), "echo", &grant);
    let out = view
        .call(&caller, "call", b"warden.echo echo\nsecond")
        .await
        .unwrap();
    assert_eq!(text(&out.value), "ok:second");
    assert_eq!(view.extension(&echo).unwrap().grant, grant);

    assert!(other.admin().unwrap().uninstall(&acme, &echo).unwrap());
    let out = view
        .call(&caller, "call", b"warden.echo echo\nthird")
        .await
        .unwrap();
    assert!(
        text(&out.value).starts_with("err:not-found:"),
        "{}",
        text(&out.value)
    );
    assert!(view.extension(&echo).is_none(), "echo was unloaded");
}
