//! The operator console's side of the service, over HTTP as the browser uses it (the browser
//! tests themselves are `tests/console/`): the session that stands in for the admin token, the
//! forgery checks on every change made with it, and the admin API's views the console shows
//! (bundles, installs with what they may do, the permission review before an upgrade, the
//! trust bundle, the audit log's filters, tail, export and chain status).

use std::path::{Path, PathBuf};

use super::{
    ADMIN, Reply, Server, Setup, agent, example, get, install, publish, reply, send, setup, tenant,
};

/// A request with the console's cookie (and the CSRF token, origin, fetch site if given).
fn with_cookie(
    method: &str,
    url: &str,
    cookie: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("cookie", format!("warden_console={cookie}"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    reply(agent().run(req.body(body.to_vec()).unwrap()))
}

/// Signs in: (cookie value, CSRF token, the Set-Cookie header).
fn sign_in(s: &Server, extra: &[(&str, &str)]) -> (String, String, String) {
    let mut req = http::Request::post(format!("{}/console/session", s.base))
        .header("content-type", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = reply(
        agent().run(
            req.body(format!("{{\"token\":\"{ADMIN}\"}}").into_bytes())
                .unwrap(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.headers["set-cookie"].to_str().unwrap().to_string();
    let cookie = set
        .strip_prefix("warden_console=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    (cookie, r.json()["csrf"].as_str().unwrap().to_string(), set)
}

fn tenant_names(s: &Server) -> Vec<String> {
    let r = get(&format!("{}/v1/admin/tenants", s.base), Some(ADMIN));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_console_session_stands_in_for_the_admin_token_and_every_change_needs_its_csrf_token() {
    let st = setup();
    let s = st.serve("");
    // The page: its own scripts only, nothing inline, no framing.
    let page = get(&format!("{}/console/", s.base), None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<html"), "{}", page.body);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(
        get(&format!("{}/console/../../etc/passwd", s.base), None).status,
        404
    );
    assert_eq!(
        get(&format!("{}/console/no-such.js", s.base), None).status,
        404
    );

    // Signing in: JSON only, the right token only.
    let url = format!("{}/console/session", s.base);
    let form = reply(
        agent().run(
            http::Request::post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={ADMIN}").into_bytes())
                .unwrap(),
        ),
    );
    assert_eq!(form.status, 415, "{}", form.body);
    assert!(!form.headers.contains_key("set-cookie"));
    let wrong = reply(
        agent().run(
            http::Request::post(&url)
                .header("content-type", "application/json")
                .body(b"{\"token\":\"admin-token-0123456789-0123456789-abcdeX\"}".to_vec())
                .unwrap(),
        ),
    );
    assert_eq!((wrong.status, wrong.code().as_str()), (401, "unauthorized"));
    assert!(!wrong.headers.contains_key("set-cookie"));
    assert_eq!(get(&url, None).status, 401);

    let (cookie, csrf, set) = sign_in(&s, &[]);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=900"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Behind a proxy that ended TLS, the cookie is Secure.
    let (_, _, tls) = sign_in(&s, &[("x-forwarded-proto", "https")]);
    assert!(tls.contains("; Secure"), "{tls}");
    let info = with_cookie("GET", &url, &cookie, &[], b"");
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["csrf"], csrf.as_str());

    // The cookie reads the admin API and the metrics.
    let tenants = format!("{}/v1/admin/tenants", s.base);
    assert_eq!(with_cookie("GET", &tenants, &cookie, &[], b"").status, 200);
    assert_eq!(
        with_cookie("GET", &format!("{}/metrics", s.base), &cookie, &[], b"").status,
        200
    );
    // A forged or altered cookie is nobody.
    let mut altered = cookie.clone().into_bytes();
    let i = altered.len() - 3;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for bad in [altered.as_str(), "v1.AAAA.AAAA", ""] {
        let r = with_cookie("GET", &tenants, bad, &[], b"");
        assert_eq!(r.status, 401, "{bad}: {}", r.body);
    }

    // Changes: refused without the CSRF token, from another origin or site, and nothing made.
    let body = br#"{"name":"forged"}"#;
    let json = ("content-type", "application/json");
    let token = ("x-csrf-token", csrf.as_str());
    let own = s.base.clone();
    for (what, extra) in [
        ("no token", vec![json]),
        ("wrong token", vec![json, ("x-csrf-token", "AAAA")]),
        (
            "another origin",
            vec![json, token, ("origin", "http://evil.example")],
        ),
        ("null origin", vec![json, token, ("origin", "null")]),
    ] {
        let r = with_cookie("POST", &tenants, &cookie, &extra, body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "csrf"),
            "{what}: {}",
            r.body
        );
        assert!(!r.headers.contains_key("set-cookie"));
    }
    // A cookie that comes with a request the browser says another site (or a sandboxed page)
    // made is no session at all, for reading as for changing.
    for site in ["cross-site", "same-site"] {
        for (method, extra) in [
            ("POST", vec![json, token, ("sec-fetch-site", site)]),
            ("GET", vec![("sec-fetch-site", site)]),
        ] {
            let r = with_cookie(method, &tenants, &cookie, &extra, body);
            assert_eq!(r.status, 401, "{method} {site}: {}", r.body);
        }
        let r = with_cookie("GET", &url, &cookie, &[("sec-fetch-site", site)], b"");
        assert_eq!(r.status, 401, "the CSRF token to another site: {}", r.body);
    }
    // Typed in (or a bookmark): fine for reading.
    let typed = with_cookie("GET", &tenants, &cookie, &[("sec-fetch-site", "none")], b"");
    assert_eq!(typed.status, 200, "{}", typed.body);
    assert!(!tenant_names(&s).contains(&"forged".to_string()));
    // The same with the token, from this origin: made.
    let r = with_cookie(
        "POST",
        &tenants,
        &cookie,
        &[
            json,
            token,
            ("origin", own.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        br#"{"name":"made-in-console"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(tenant_names(&s).contains(&"made-in-console".to_string()));
    // The bearer token needs no CSRF token (a browser never adds it on its own).
    assert_eq!(
        send("POST", &tenants, Some(ADMIN), br#"{"name":"by-token"}"#).status,
        201
    );

    // Signing out needs the token too, and ends the session.
    assert_eq!(with_cookie("DELETE", &url, &cookie, &[], b"").status, 403);
    let out = with_cookie("DELETE", &url, &cookie, &[token], b"");
    assert_eq!(out.status, 204, "{}", out.body);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(with_cookie("GET", &tenants, &cookie, &[], b"").status, 401);
    assert_eq!(with_cookie("GET", &url, &cookie, &[], b"").status, 401);

    // Every sign-in, refused sign-in and sign-out is audited; the token never is.
    let records = get(
        &format!("{}/v1/admin/audit?event=session", s.base),
        Some(ADMIN),
    )
    .json();
    let seen: Vec<(String, String, String)> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = &r["record"];
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (text("outcome"), text("message"), text("target"))
        })
        .collect();
    let count = |outcome: &str, message: &str| {
        seen.iter()
            .filter(|(o, m, _)| o == outcome && m.starts_with(message))
            .count()
    };
    assert_eq!(count("ok", "console signed in"), 2, "{seen:?}");
    assert_eq!(count("ok", "console signed out"), 1, "{seen:?}");
    for refused in [
        "console sign-in refused (415",
        "console sign-in refused (401 unauthorized): the admin token is wrong",
        "a change with the console's session refused (403 csrf)",
    ] {
        assert!(count("denied", refused) >= 1, "{refused}: {seen:?}");
    }
    // Refusals say where they came from.
    assert!(
        seen.iter()
            .filter(|(o, m, _)| o == "denied" && !m.starts_with(|c: char| c.is_ascii_digit()))
            .all(|(_, _, target)| target == "from 127.0.0.1"),
        "{seen:?}"
    );
    let all = get(
        &format!("{}/v1/admin/audit?format=jsonl", s.base),
        Some(ADMIN),
    );
    assert!(!all.body.contains(ADMIN));
    assert!(!all.body.contains("0123456789-abcdeX"));
}

/// The fetcher example as version `version` allowed to reach `hosts`, with
/// `max_response_bytes`: a folder to pack.
fn fetcher(st: &Setup, version: &str, hosts: &[&str], response: &str) -> PathBuf {
    let src = example("fetcher");
    let dir = st.t.path().join(format!("fetcher-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("extension.wasm"), dir.join("extension.wasm")).unwrap();
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    std::fs::write(
        dir.join("extension.toml"),
        format!(
            "schema = 1\n[extension]\nid = \"warden.fetcher\"\nversion = \"{version}\"\npublisher = \"warden-examples\"\n\
             kind = \"component\"\nentry = \"extension.wasm\"\n[[methods]]\nname = \"fetch\"\n\
             [permissions.network]\nenabled = true\nallowed_hosts = [{}]\n[limits]\nprofile = \"standard\"\nmax_response_bytes = \"{response}\"\n",
            hosts.join(", ")
        ),
    )
    .unwrap();
    dir
}

fn published(st: &Setup, s: &Server, dir: &Path, name: &str) -> String {
    let (b, sig) = st.bundle(dir, name);
    publish(s, &b, &sig)
}

fn review(s: &Server, tenant: &str, hash: &str) -> Reply {
    get(
        &format!(
            "{}/v1/admin/tenants/{tenant}/installs/warden.fetcher/review?content_hash={hash}",
            s.base
        ),
        Some(ADMIN),
    )
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The tenant's install of the fetcher, from the installs list.
fn fetcher_install(s: &Server, tenant: &str) -> Option<serde_json::Value> {
    let r = get(
        &format!("{}/v1/admin/installs?tenant={tenant}", s.base),
        Some(ADMIN),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["installs"].as_array().unwrap().first().cloned()
}

#[test]
fn the_review_shows_what_an_upgrade_asks_for_and_nothing_changes_until_it_is_approved() {
    let st = setup();
    let s = st.serve("");
    tenant(&s, "acme");
    let v1 = published(
        &st,
        &s,
        &fetcher(&st, "1.0.0", &["https://example.com"], "128KiB"),
        "v1",
    );
    let v2 = published(
        &st,
        &s,
        &fetcher(
            &st,
            "2.0.0",
            &["https://example.com", "https://api.example.net"],
            "256KiB",
        ),
        "v2",
    );

    // The bundles, with who signed them; the trust bundle with that key.
    let bundles = get(&format!("{}/v1/admin/bundles", s.base), Some(ADMIN)).json();
    let list = bundles["bundles"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{bundles}");
    let signer = strings(&list[0]["signers"]);
    assert_eq!(signer.len(), 1);
    let trust = get(&format!("{}/v1/admin/trust", s.base), Some(ADMIN)).json();
    let publisher = &trust["publishers"][0];
    assert_eq!(publisher["name"], "warden-examples");
    assert_eq!(publisher["keys"][0]["id"], signer[0].as_str());
    assert_eq!(publisher["keys"][0]["public_key_pem"], st.pem.as_str());
    // A fleet's runners follow the trust bundle in their shared storage.
    let source = trust["source"].as_str().unwrap();
    match st.shared {
        Some(_) => assert_eq!(source, "shared storage"),
        None => assert!(source.ends_with("trust.toml"), "{trust}"),
    }

    // A new install: everything it requests is new; nothing is granted unless given.
    let r = review(&s, "acme", &v1).json();
    assert_eq!(r["plan"], "install", "{r}");
    assert_eq!(r["from"], serde_json::Value::Null);
    assert_eq!(
        strings(&r["added"]),
        ["network https://example.com ports default"]
    );
    assert_eq!(r["grant_items"][0]["grant"], "network:https://example.com");
    assert!(
        fetcher_install(&s, "acme").is_none(),
        "a review installs nothing"
    );
    let done = install(
        &s,
        "acme",
        "warden.fetcher",
        &v1,
        "network:https://example.com",
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let i = fetcher_install(&s, "acme").unwrap();
    assert_eq!(i["version"], "1.0.0");
    assert_eq!(i["publisher"], "warden-examples");
    assert_eq!(strings(&i["signers"]), signer);
    assert_eq!(
        strings(&i["effective"]["network"]["hosts"]),
        ["https://example.com"]
    );
    assert_eq!(i["effective"]["kv"], false);
    assert_eq!(i["limits"]["max_response_bytes"], 128 * 1024);

    // The upgrade asks for a new host and a higher response cap: shown side by side.
    let r = review(&s, "acme", &v2).json();
    assert_eq!(r["plan"], "upgrade", "{r}");
    assert_eq!(r["needs_approval"], true);
    assert_eq!(r["needs_force"], false);
    assert_eq!(r["from"]["version"], "1.0.0");
    assert_eq!(r["from"]["grant"], "network:https://example.com");
    assert_eq!(r["to"]["version"], "2.0.0");
    assert_eq!(
        strings(&r["added"]),
        ["network https://api.example.net ports default"]
    );
    assert_eq!(strings(&r["removed"]), Vec::<String>::new());
    assert_eq!(r["limits_raised"][0]["limit"], "max_response_bytes");
    assert_eq!(r["limits_raised"][0]["from"], 128 * 1024);
    assert_eq!(r["limits_raised"][0]["to"], 256 * 1024);
    assert_eq!(r["limits_raised"].as_array().unwrap().len(), 1);
    // Without the approval the upgrade is refused, and nothing changed.
    let refused = send(
        "PUT",
        &format!("{}/v1/admin/tenants/acme/installs/warden.fetcher", s.base),
        Some(ADMIN),
        format!("{{\"content_hash\":\"{v2}\"}}").as_bytes(),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("api.example.net"), "{}", refused.body);
    assert_eq!(fetcher_install(&s, "acme").unwrap()["version"], "1.0.0");
    // Approved with only the old host granted: upgraded, and the new host is still withheld.
    let done = install(
        &s,
        "acme",
        "warden.fetcher",
        &v2,
        "network:https://example.com",
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let i = fetcher_install(&s, "acme").unwrap();
    assert_eq!(i["version"], "2.0.0");
    assert_eq!(
        strings(&i["effective"]["network"]["hosts"]),
        ["https://example.com"]
    );
    assert_eq!(strings(&i["requested"]).len(), 2);

    // Back to 1.0.0: a rollback, which needs force.
    let r = review(&s, "acme", &v1).json();
    assert_eq!(
        (r["plan"].as_str(), r["needs_force"].as_bool()),
        (Some("downgrade"), Some(true)),
        "{r}"
    );
    assert_eq!(
        strings(&r["removed"]),
        ["network https://api.example.net ports default"]
    );
    assert_eq!(
        install(&s, "acme", "warden.fetcher", &v1, "none").status,
        403
    );
    let forced = send(
        "PUT",
        &format!("{}/v1/admin/tenants/acme/installs/warden.fetcher", s.base),
        Some(ADMIN),
        format!("{{\"content_hash\":\"{v1}\",\"grant\":\"none\",\"force\":true}}").as_bytes(),
    );
    assert_eq!(forced.status, 200, "{}", forced.body);
    let i = fetcher_install(&s, "acme").unwrap();
    assert_eq!(
        (i["version"].as_str(), i["effective"]["network"].is_null()),
        (Some("1.0.0"), true)
    );

    // Bad questions get clear answers.
    let hello = published(&st, &s, &example("hello"), "hello");
    assert_eq!(review(&s, "acme", &hello).status, 400);
    assert_eq!(review(&s, "nobody", &v1).status, 404);
    let unknown = format!("sha256:{}", "0".repeat(64));
    assert_eq!(review(&s, "acme", &unknown).status, 404);
    assert_eq!(review(&s, "acme", "sha256:xyz").status, 400);
}

#[test]
fn the_audit_view_filters_tails_exports_and_checks_the_chain() {
    let st = setup();
    let s = st.serve("");
    tenant(&s, "acme");
    let v1 = published(
        &st,
        &s,
        &fetcher(&st, "1.0.0", &["https://example.com"], "128KiB"),
        "v1",
    );
    assert_eq!(
        install(&s, "acme", "warden.fetcher", &v1, "none").status,
        200
    );
    let audit = |q: &str| {
        let r = get(&format!("{}/v1/admin/audit?{q}", s.base), Some(ADMIN));
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        r.json()
    };
    let all = audit("");
    let last = all["last_seq"].as_u64().unwrap();
    let events = |v: &serde_json::Value| -> Vec<String> {
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["record"]["event"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(events(&all).contains(&"publish".to_string()), "{all}");
    assert_eq!(events(&audit("event=install")), ["install"]);
    assert_eq!(
        events(&audit("event=install&tenant=other")),
        Vec::<String>::new()
    );
    assert_eq!(events(&audit("outcome=denied")), Vec::<String>::new());
    // The tail: nothing after the last seq, then only what came since.
    assert_eq!(
        events(&audit(&format!("after={last}"))),
        Vec::<String>::new()
    );
    assert_eq!(
        send(
            "DELETE",
            &format!("{}/v1/admin/tenants/acme/installs/warden.fetcher", s.base),
            Some(ADMIN),
            b""
        )
        .status,
        204
    );
    let tail = audit(&format!("after={last}"));
    assert_eq!(events(&tail), ["uninstall"]);
    assert_eq!(tail["last_seq"].as_u64(), Some(last + 1));
    // A time range: all of it now, none of it in the future or the past.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        events(&audit(&format!("since={}", now + 60))),
        Vec::<String>::new()
    );
    assert_eq!(
        events(&audit(&format!("until={}", now - 3600))),
        Vec::<String>::new()
    );
    assert_eq!(
        events(&audit(&format!("since={}&until={}", now - 3600, now + 60))).len(),
        events(&audit("")).len()
    );
    assert_eq!(
        get(
            &format!("{}/v1/admin/audit?event=nonsense", s.base),
            Some(ADMIN)
        )
        .status,
        400
    );
    assert_eq!(
        get(
            &format!("{}/v1/admin/audit?format=xml", s.base),
            Some(ADMIN)
        )
        .status,
        400
    );
    // The export: the lines as the log keeps them, as an attachment.
    let export = get(
        &format!("{}/v1/admin/audit?format=jsonl", s.base),
        Some(ADMIN),
    );
    assert_eq!(export.status, 200);
    assert!(
        export.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"),
    );
    let lines: Vec<&str> = export.body.lines().collect();
    assert_eq!(lines.len() as u64, last + 1);
    let log = std::fs::read_to_string(st.data.join("audit/audit.jsonl")).unwrap_or_default();
    if st.shared.is_none() {
        assert_eq!(export.body, log, "the export is the log's own lines");
    }
    // The chain checks out, and says how many records it checked.
    let chain = get(&format!("{}/v1/admin/audit/verify", s.base), Some(ADMIN)).json();
    assert_eq!(chain["ok"], true, "{chain}");
    assert_eq!(chain["records"].as_u64(), Some(last + 1));
    assert!(chain["error"].is_null());
    if st.shared.is_none() {
        // With the data dir's audit key: the head's MAC is checked too.
        assert_eq!(chain["head_mac"], "checked", "{chain}");
    }
    // An edited record: the chain says so (the embedded log, whose file the test can edit).
    if st.shared.is_none() {
        let edited = log.replacen("\"event\":\"uninstall\"", "\"event\":\"install\"", 1);
        assert_ne!(edited, log);
        std::fs::write(st.data.join("audit/audit.jsonl"), edited).unwrap();
        let chain = get(&format!("{}/v1/admin/audit/verify", s.base), Some(ADMIN)).json();
        assert_eq!(chain["ok"], false, "{chain}");
        assert!(!chain["error"].as_str().unwrap().is_empty());
    }
}

#[test]
fn the_review_shows_how_an_upgrade_runs_and_a_new_kind_needs_approval() {
    let st = setup();
    let s = st.serve("");
    tenant(&s, "acme");
    let id = "warden-examples.kv-counter-process";
    // The same extension as a component first (its manifest but for kind, entry and version),
    // then the published native process: the permissions are the same, how it runs is not.
    let dir = st.t.path().join("kv-component");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        example("kv-counter").join("extension.wasm"),
        dir.join("extension.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(example("kv-counter").join("extension.toml"))
        .unwrap()
        .replace(
            "id = \"warden-examples.kv-counter\"",
            &format!("id = \"{id}\""),
        )
        .replace("version = \"0.1.0\"", "version = \"0.0.1\"");
    assert!(manifest.contains(id));
    std::fs::write(dir.join("extension.toml"), manifest).unwrap();
    let component = published(&st, &s, &dir, "kv-component");
    let process_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/process/kv-counter");
    assert!(
        process_dir.join("kv-counter").exists(),
        "run scripts/build-examples.sh first"
    );
    let process = published(&st, &s, &process_dir, "kv-process");
    assert_eq!(install(&s, "acme", id, &component, "kv").status, 200);
    let url = |hash: &str| {
        format!(
            "{}/v1/admin/tenants/acme/installs/{id}/review?content_hash={hash}",
            s.base
        )
    };
    let r = get(&url(&process), Some(ADMIN)).json();
    assert_eq!(r["plan"], "upgrade", "{r}");
    assert_eq!(strings(&r["added"]), Vec::<String>::new(), "{r}");
    assert_eq!(
        strings(&r["changes"]),
        [
            "runs as kind process (was component)",
            "entry kv-counter (was extension.wasm)"
        ],
        "{r}"
    );
    assert_eq!(
        (r["from"]["kind"].as_str(), r["to"]["kind"].as_str()),
        (Some("component"), Some("process"))
    );
    assert_eq!(r["needs_approval"], true, "{r}");
    // Without a new grant: refused, and still the component.
    let put = |body: String| {
        send(
            "PUT",
            &format!("{}/v1/admin/tenants/acme/installs/{id}", s.base),
            Some(ADMIN),
            body.as_bytes(),
        )
    };
    let refused = put(format!("{{\"content_hash\":\"{process}\"}}"));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("runs as kind process"),
        "{}",
        refused.body
    );
    let now = get(
        &format!("{}/v1/admin/installs?tenant=acme", s.base),
        Some(ADMIN),
    )
    .json();
    assert_eq!(now["installs"][0]["content_hash"], component.as_str());
    // Approved with a grant: installed.
    let done = put(format!(
        "{{\"content_hash\":\"{process}\",\"grant\":\"kv\"}}"
    ));
    assert_eq!(done.status, 200, "{}", done.body);

    // A UI, an endpoint and a method added are shown too (hello, then hello with all three).
    let hello = published(&st, &s, &example("hello"), "hello");
    assert_eq!(
        install(&s, "acme", "warden.hello", &hello, "none").status,
        200
    );
    let dir = st.t.path().join("hello-more");
    std::fs::create_dir_all(dir.join("ui")).unwrap();
    std::fs::copy(
        example("hello").join("extension.wasm"),
        dir.join("extension.wasm"),
    )
    .unwrap();
    std::fs::write(dir.join("ui/index.html"), "<h1>hi</h1>").unwrap();
    let manifest = std::fs::read_to_string(example("hello").join("extension.toml"))
        .unwrap()
        .replace("version = \"0.1.0\"", "version = \"0.2.0\"")
        .replace(
            "entry = \"extension.wasm\"",
            "entry = \"extension.wasm\"\nui = \"ui\"",
        )
        .replace(
            "[[endpoints]]",
            "[[endpoints]]\nmethod = \"POST\"\npath = \"/admin/{*rest}\"\n\n[[endpoints]]",
        );
    std::fs::write(dir.join("extension.toml"), manifest).unwrap();
    let more = published(&st, &s, &dir, "hello-more");
    let r = get(
        &format!(
            "{}/v1/admin/tenants/acme/installs/warden.hello/review?content_hash={more}",
            s.base
        ),
        Some(ADMIN),
    )
    .json();
    assert_eq!(
        strings(&r["changes"]),
        [
            "serves a UI from ui (none before)",
            "new endpoint POST /admin/{*rest}"
        ],
        "{r}"
    );
    // The UI, once installed, runs sandboxed in an origin of its own: its scripts can neither
    // send the console's cookie nor read the service's answers.
    assert_eq!(
        install(&s, "acme", "warden.hello", &more, "none").status,
        200
    );
    let page = get(
        &format!("{}/ext-ui/warden.hello/{more}/index.html", s.base),
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox allow-scripts;"),
    );
}

#[test]
fn a_flood_of_wrong_tokens_is_counted_into_a_few_records() {
    let st = setup();
    let s = st.serve("");
    let url = format!("{}/console/session", s.base);
    let wrong = b"{\"token\":\"admin-token-0123456789-0123456789-abcdeX\"}".to_vec();
    let tries = 300;
    for _ in 0..tries {
        let r = reply(
            agent().run(
                http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(wrong.clone())
                    .unwrap(),
            ),
        );
        assert_eq!(r.status, 401);
        // And wrong bearer tokens on the admin API.
        let r = get(
            &format!("{}/v1/admin/tenants", s.base),
            Some("admin-token-0123456789-0123456789-abcdeY"),
        );
        assert_eq!(r.status, 401);
    }
    // The repeats' summaries are written once their second is over.
    let records = (0..50)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let all = get(
                &format!("{}/v1/admin/audit?event=session&limit=1000", s.base),
                Some(ADMIN),
            )
            .json();
            let list = all["records"].as_array().unwrap().clone();
            let counted: u64 = list
                .iter()
                .map(|r| {
                    let m = r["record"]["message"].as_str().unwrap_or_default();
                    // "N more refusals (...)" counts N; any other record counts itself.
                    m.split_once(" more refusal")
                        .and_then(|(n, _)| n.parse().ok())
                        .unwrap_or(1)
                })
                .sum();
            (counted == 2 * tries).then_some(list)
        })
        .expect("every refusal counted");
    // Two kinds (sign-in, bearer) over a few seconds: a few records, not 600.
    assert!(records.len() <= 40, "{} records", records.len());
    let log = std::fs::metadata(st.data.join("audit/audit.jsonl")).map_or(0, |m| m.len());
    if st.shared.is_none() {
        assert!(log < 64 * 1024, "the log grew to {log} bytes");
    }
}
