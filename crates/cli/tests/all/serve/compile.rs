//! Components are compiled at publish and install, never on a tenant's first request: the
//! 12-18 MB JavaScript and Python hellos (componentize-js, componentize-py) are published,
//! installed and served through the gateway with no compile after the publish; and what
//! cannot be loaded (a component of no known world, or a compile bomb over `[policy.compile]`) is refused
//! at publish with `400 bad-extension`, audited, and leaves nothing behind. A restarted runner,
//! or another runner of the fleet, prepares what is installed before its first request.

use std::time::Duration;

use super::{
    ADMIN, Reply, agent, audit, example, get, install, publish_with, record_for, setup, tenant,
};

/// A counter of the service's `/metrics`.
fn counter(s: &super::Server, name: &str) -> u64 {
    let m = get(&format!("{}/metrics", s.base), Some(ADMIN));
    assert_eq!(m.status, 200, "{}", m.body);
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {}", m.body))
}

/// An agent that waits for a compile (30-60 s for a big component in a debug build).
fn patient() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

#[test]
fn big_components_compile_at_publish_and_never_on_a_tenants_first_request() {
    let st = setup();
    let s = st.serve("");
    let key = tenant(&s, "alpha");
    for (dir, id, greeting) in [
        (
            "js/hello",
            "warden-examples.hello-js",
            "Hello from warden, in JavaScript!",
        ),
        (
            "python/hello",
            "warden-examples.hello-python",
            "Hello from warden, in Python!",
        ),
    ] {
        let compiled = counter(&s, "warden_compiles_total");
        let (bundle, sig) = st.bundle(&example(dir), &dir.replace('/', "-"));
        let r = publish_with(&patient(), &s, &bundle, &sig);
        assert_eq!(r.status, 201, "{dir}: {}", r.body);
        let hash = r.json()["content_hash"].as_str().unwrap().to_string();
        assert_eq!(
            counter(&s, "warden_compiles_total"),
            compiled + 1,
            "{dir}: compiled once, at publish"
        );
        let r = install(&s, "alpha", id, &hash, "none");
        assert_eq!(r.status, 200, "{dir}: {}", r.body);
        // The tenant's first request: served with what the publish compiled.
        let r = super::reply(
            agent()
                .get(format!("{}/api/ext/{id}/first?x=1", s.base))
                .header("authorization", format!("Bearer {key}"))
                .call(),
        );
        assert_eq!(r.status, 200, "{dir}: {}", r.body);
        assert_eq!(r.body, format!("{greeting} You asked for /first?x=1\n"));
        assert_eq!(
            counter(&s, "warden_compiles_total"),
            compiled + 1,
            "{dir}: nothing compiled on the tenant's first request"
        );
    }
    drop(s);
    // Restarted on the same data dir: both are prepared from the code cache in the background,
    // before any request, with nothing compiled.
    let s = st.serve("");
    wait_for(&s, "warden_code_cache_hits_total", 2);
    assert_eq!(counter(&s, "warden_compiles_total"), 0);
    hello(&s, &key);
    assert_eq!(counter(&s, "warden_code_cache_hits_total"), 2);
    assert_eq!(counter(&s, "warden_compiles_total"), 0);
    drop(s);
    // Restarted with its code cache gone (emptied by hand, or damaged): not ready while it
    // compiles them again, in the background, once each; then ready, and the first requests
    // compile nothing more.
    for entry in crate::compile_limits::cached(&st.data) {
        std::fs::remove_file(entry).unwrap();
    }
    let s = st.serve("");
    let r = get(&format!("{}/readyz", s.base), None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("preparing the installed components"),
        "{}",
        r.body
    );
    wait_for(&s, "warden_compiles_total", 2);
    let start = std::time::Instant::now();
    while get(&format!("{}/readyz", s.base), None).status != 200 {
        assert!(start.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    hello(&s, &key);
    assert_eq!(counter(&s, "warden_compiles_total"), 2);
    // Uninstalled: its prepared component (tens of MB) is forgotten, the other one kept.
    assert_eq!(counter(&s, "warden_prepared_components"), 2);
    let r = super::send(
        "DELETE",
        &format!(
            "{}/v1/admin/tenants/alpha/installs/warden-examples.hello-js",
            s.base
        ),
        Some(ADMIN),
        b"",
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    assert_eq!(counter(&s, "warden_prepared_components"), 1);
    // And the runner's warm-up pass does not bring it back.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(counter(&s, "warden_prepared_components"), 1);
    // On shared storage, another runner of the fleet (its own, empty data dir) compiles what
    // the first one installed, before its first request.
    if st.shared.is_some() {
        let other = st.runner(&st.t.path().join("data-2"), None);
        wait_for(&other, "warden_compiles_total", 1);
        let r = super::reply(
            agent()
                .get(format!(
                    "{}/api/ext/warden-examples.hello-python/hi",
                    other.base
                ))
                .header("authorization", format!("Bearer {key}"))
                .call(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(counter(&other, "warden_compiles_total"), 1);
    }
}

/// Waits (up to 3 minutes: compiles in a debug build under load) for `name` to reach `want`.
fn wait_for(s: &super::Server, name: &str, want: u64) {
    let start = std::time::Instant::now();
    while counter(s, name) < want {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{name} stays below {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(counter(s, name), want);
}

/// Both hellos answer through the gateway.
fn hello(s: &super::Server, key: &str) {
    for id in ["warden-examples.hello-js", "warden-examples.hello-python"] {
        // Patient: a loaded machine (CI) can hold a first call for a while; what is measured
        // here is the compile counter, not the time.
        let r = super::reply(
            patient()
                .get(format!("{}/api/ext/{id}/again", s.base))
                .header("authorization", format!("Bearer {key}"))
                .call(),
        );
        assert_eq!(r.status, 200, "{id}: {}", r.body);
    }
}

#[test]
fn what_cannot_be_compiled_is_refused_at_publish_and_leaves_nothing() {
    let st = setup();
    // A compile bomb (straight-line bodies that take seconds each) over a 1 s compile budget.
    let s = st.serve("[policy.compile]\nmax_time = \"1s\"\n");
    tenant(&s, "alpha");
    let bomb = crate::compile_limits::slow_component(1 << 20, 4);
    // A component that exports nothing: no world warden serves.
    let empty = b"\0asm\x0d\0\x01\0".to_vec();
    for (name, wasm, why) in [
        (
            "bomb",
            bomb,
            "needed more than 1s (max_time in [policy.compile])",
        ),
        ("empty", empty, "exports neither"),
    ] {
        let dir = st.t.path().join(format!("src-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("extension.wasm"), wasm).unwrap();
        std::fs::write(
            dir.join("extension.toml"),
            format!(
                "schema = 1\n\n[extension]\nid = \"warden-examples.{name}\"\nversion = \"1.0.0\"\npublisher = \"warden-examples\"\nkind = \"component\"\nentry = \"extension.wasm\"\n\n[[methods]]\nname = \"call\"\n"
            ),
        )
        .unwrap();
        let (bundle, sig) = st.bundle(&dir, name);
        let r: Reply = publish_with(&patient(), &s, &bundle, &sig);
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        assert_eq!(r.code(), "bad-extension", "{name}: {}", r.body);
        assert!(
            r.json()["error"]["message"].as_str().unwrap().contains(why),
            "{name}: {}",
            r.body
        );
        // Nothing published: an install of its hash (as `warden inspect` shows it) finds no
        // such bundle.
        let shown = crate::foundation::ok(&crate::foundation::warden(&[&"inspect", &bundle]));
        let hash = shown
            .lines()
            .find_map(|l| l.strip_prefix("content hash: "))
            .unwrap()
            .to_string();
        let r = install(
            &s,
            "alpha",
            &format!("warden-examples.{name}"),
            &hash,
            "none",
        );
        assert_eq!(r.status, 404, "{name}: {}", r.body);
        assert_eq!(r.code(), "not-found", "{name}: {}", r.body);
        // Audited: the publish, refused as invalid, with the reason.
        let request_id = r_id_of(&publish_with(&patient(), &s, &bundle, &sig));
        let records = record_for(&audit(&st), &request_id);
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "publish" && r["outcome"] == "invalid"),
            "{name}: {records:#?}"
        );
    }
}

/// A publish the registry would refuse (its id and version already name other content) is
/// refused before anything is compiled or stored (red team: it answered 409 after a 52 s
/// compile, leaving its blob and compiled code).
#[test]
fn a_taken_version_is_refused_before_the_compile() {
    let st = setup();
    let s = st.serve("");
    let (bundle, sig) = st.bundle(&example("hello"), "hello");
    let r = publish_with(&patient(), &s, &bundle, &sig);
    assert_eq!(r.status, 201, "{}", r.body);
    let compiled = counter(&s, "warden_compiles_total");
    let cache_entries = || crate::compile_limits::cached(&st.data).len();
    let cached = cache_entries();
    // The same id and version, other content.
    let other = st.t.path().join("hello-other");
    std::fs::create_dir_all(other.join("assets")).unwrap();
    let src = example("hello");
    for f in ["extension.wasm", "assets/README.txt"] {
        std::fs::copy(src.join(f), other.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(src.join("extension.toml")).unwrap();
    std::fs::write(
        other.join("extension.toml"),
        manifest.replace("description = \"", "description = \"Other. "),
    )
    .unwrap();
    let (bundle, sig) = st.bundle(&other, "hello-other");
    let r = publish_with(&patient(), &s, &bundle, &sig);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "version-exists", "{}", r.body);
    assert_eq!(
        counter(&s, "warden_compiles_total"),
        compiled,
        "nothing compiled"
    );
    assert_eq!(cache_entries(), cached, "nothing cached");
    let records = record_for(&audit(&st), &r_id_of(&r));
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "publish" && r["outcome"] == "denied"),
        "{records:#?}"
    );
}

fn r_id_of(r: &Reply) -> String {
    r.json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_string()
}
