//! Several `warden serve` runners on one shared storage (PostgreSQL and S3), as a fleet behind
//! a load balancer runs them (the tests pick the runner of each request themselves). Only with
//! `WARDEN_TEST_BACKEND=shared`, but the tenant's rate: on the embedded default, three runners
//! on one data dir hold it too.

use std::time::{Duration, Instant};

use super::*;

/// Whether `st` is on shared storage; says the test is skipped if not.
fn on_shared_storage(st: &Setup) -> bool {
    if st.shared.is_none() {
        println!(
            "skipped: one runner per data dir on the embedded default (WARDEN_TEST_BACKEND=shared runs it)"
        );
    }
    st.shared.is_some()
}

/// Three runners on the storage of `st` with operator config `config`, each with a data dir of
/// its own.
fn fleet(st: &Setup, config: &str) -> Vec<Server> {
    st.write_config(config);
    (0..3)
        .map(|i| st.runner(&st.t.path().join(format!("runner-{i}")), None))
        .collect()
}

/// Asks `ask` every 20 ms while it answers `was`, until it answers `becomes`, for at most a
/// second from `since`; returns that answer. Any other status fails.
fn answered_within_a_second(
    since: Instant,
    (was, becomes): (u16, u16),
    ask: impl Fn() -> Reply,
) -> Reply {
    loop {
        let r = ask();
        if r.status == becomes {
            return r;
        }
        assert_eq!(r.status, was, "{}", r.body);
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "still {was} after {:?}: {}",
            since.elapsed(),
            r.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Published and installed through one runner, the extension answers through every other;
/// uninstalled through one, every other refuses it within a second; a tenant made through
/// one is known to all; the audit chain they share verifies.
#[test]
fn what_one_runner_changes_every_runner_serves_within_a_second() {
    let st = setup();
    if !on_shared_storage(&st) {
        return;
    }
    let runners = fleet(&st, "");
    let (a, others) = runners.split_first().unwrap();
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(a, &hello, &sig);
    let key = tenant(a, "alpha");
    let r = install(a, "alpha", "warden.hello", &hash, "none");
    assert_eq!(r.status, 200, "{}", r.body);
    // The others learn of it from the change feed: within a second, not at once (a CI run
    // once asked one before its notice had arrived, and was answered 404).
    let hi = |s: &Server| get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(&key));
    let installed = Instant::now();
    for s in others {
        let r = answered_within_a_second(installed, (404, 200), || hi(s));
        assert!(
            r.body.contains("Hello from warden"),
            "{} via {}",
            r.body,
            s.base
        );
    }
    let r = send(
        "DELETE",
        &format!("{}/v1/admin/tenants/alpha/installs/warden.hello", a.base),
        Some(ADMIN),
        b"",
    );
    assert!(
        r.status == 200 || r.status == 204,
        "{}: {}",
        r.status,
        r.body
    );
    let removed = Instant::now();
    for s in others {
        answered_within_a_second(removed, (200, 404), || hi(s));
    }
    eprintln!(
        "uninstall seen by every runner after {:?}",
        removed.elapsed()
    );
    drop(runners);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records = audit(&st);
    for event in ["publish", "install", "uninstall", "call"] {
        assert!(
            records.iter().any(|r| r["record"]["event"] == event),
            "no {event} record in the shared log"
        );
    }
}

/// Uninstalled through one runner, an install's call running on another is stopped within a
/// pass of that runner's follower (every 2 s) and answered 404, not left to run on to its
/// time limit (10 s here).
#[test]
fn an_uninstall_through_one_runner_stops_the_calls_running_on_another() {
    let st = setup();
    if !on_shared_storage(&st) {
        return;
    }
    let runners = fleet(&st, "");
    let (a, b) = (&runners[0], &runners[1]);
    let (bundle, sig) = one_slow_call_at_a_time(&st);
    let key = installed_for_alpha(a, &bundle, &sig, "warden.hostile-http");
    let url = format!("{}/api/ext/warden.hostile-http/loop", b.base);
    let (r, after) = answered_after(&url, &key, || {
        let r = send(
            "DELETE",
            &format!(
                "{}/v1/admin/tenants/alpha/installs/warden.hostile-http",
                a.base
            ),
            Some(ADMIN),
            b"",
        );
        assert_eq!(r.status, 204, "{}", r.body);
    });
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not-found"),
        "{}",
        r.body
    );
    assert!(
        after < Duration::from_secs(4),
        "answered {after:?} after the uninstall"
    );
    eprintln!("a call on another runner stopped {after:?} after the uninstall");
}

/// hello published and installed for tenant alpha through `s`; alpha's API key.
fn hello_for_alpha(st: &Setup, s: &Server) -> String {
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    installed_for_alpha(s, &hello, &sig, "warden.hello")
}

/// A tenant's rate of 50 requests a second (burst 10) holds across three runners within 10 %:
/// offered 150 a second spread over them for 5 s, they admit 50 × 5 + 10 together, not each.
/// On the embedded default the three share one data dir (each admitted the whole rate before
/// the data dir's buckets: about 150 a second).
#[test]
fn a_tenants_rate_holds_across_the_runners() {
    let st = setup();
    let config = "[policy.gateway]\ntenant_rate = 50\ntenant_burst = 10\n";
    let runners = if st.shared.is_some() {
        fleet(&st, config)
    } else {
        st.write_config(config);
        (0..3).map(|_| st.runner(&st.data, None)).collect()
    };
    let key = hello_for_alpha(&st, &runners[0]);
    // The bucket is full after the install; wait for it to be so for certain, then offer.
    std::thread::sleep(Duration::from_millis(300));
    let seconds = 5.0;
    let start = Instant::now();
    let counts: Vec<(u32, u32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = runners
            .iter()
            .map(|s| {
                let (url, key) = (format!("{}/api/ext/warden.hello/hi", s.base), key.clone());
                scope.spawn(move || {
                    let (mut ok, mut limited) = (0, 0);
                    let mut next = Instant::now();
                    while start.elapsed().as_secs_f64() < seconds {
                        let r = get(&url, Some(&key));
                        match r.status {
                            200 => ok += 1,
                            429 => limited += 1,
                            other => panic!("{other}: {}", r.body),
                        }
                        next += Duration::from_millis(20);
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    (ok, limited)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let admitted: u32 = counts.iter().map(|c| c.0).sum();
    let refused: u32 = counts.iter().map(|c| c.1).sum();
    let expected = 50.0 * elapsed + 10.0;
    let off = (f64::from(admitted) - expected).abs() / expected;
    eprintln!(
        "rate across 3 runners: admitted {admitted}, refused {refused} in {elapsed:.2}s (per runner {counts:?}); expected {expected:.0}, off by {:.1}%",
        off * 100.0
    );
    assert!(refused > 0, "the rate was never reached");
    assert!(off <= 0.10, "admitted {admitted}, expected {expected:.0}");
}

/// Three runners on one data dir hold a tenant's `tenant_concurrency` (2) between them: with
/// two loops running on two of them, a third call, on the third runner, is refused at once
/// (429 `busy`; before, each runner let 2 run); once they end, it runs.
#[test]
fn a_tenants_calls_in_flight_are_held_across_the_runners_on_one_data_dir() {
    let st = setup();
    if st.shared.is_some() {
        println!("skipped: on shared storage, calls in flight are counted per runner");
        return;
    }
    st.write_config("[policy]\nbusy_wait = \"0s\"\n[policy.gateway]\ntenant_concurrency = 2\n");
    let runners: Vec<Server> = (0..3).map(|_| st.runner(&st.data, None)).collect();
    let (b, sig) = st.bundle(&example("hostile-http"), "hostile");
    let key = installed_for_alpha(&runners[0], &b, &sig, "warden.hostile-http");
    let url = |s: &Server, what: &str| format!("{}/api/ext/warden.hostile-http/{what}", s.base);
    // Every runner serves the install before the loops start.
    for s in &runners {
        let r = answered_within_a_second(Instant::now(), (404, 200), || {
            get(&url(s, "echo"), Some(&key))
        });
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let loops: Vec<_> = runners[..2]
        .iter()
        .map(|s| {
            let (u, k) = (url(s, "loop"), key.clone());
            std::thread::spawn(move || get(&u, Some(&k)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let third = get(&url(&runners[2], "echo"), Some(&key));
    assert_eq!(
        (third.status, third.code().as_str()),
        (429, "busy"),
        "{}",
        third.body
    );
    assert!(third.body.contains("calls in flight"), "{}", third.body);
    for l in loops {
        assert_eq!(l.join().unwrap().status, 504);
    }
    assert_eq!(get(&url(&runners[2], "echo"), Some(&key)).status, 200);
}

/// PostgreSQL restarted while the runners serve: requests fail cleanly (503 `unavailable`,
/// with `retry-after`; or 502 `host-error` without it for a call that ran while its records
/// could not be written, whose records are then written late) or succeed, never anything
/// else, and every runner serves again by itself within 5 s of the restart.
#[test]
fn a_database_restart_under_load_is_503_and_heals() {
    let mut st = setup();
    if !on_shared_storage(&st) {
        return;
    }
    // A server of this test's own: the tests beside it keep theirs running.
    let server = crate::shared::OwnServer::start();
    let dir = st.t.path().join("own");
    std::fs::create_dir(&dir).unwrap();
    st.shared = Some(crate::shared::SharedStorage::on(&dir, server.url.clone()));
    // A rate no client reaches: the answers are the storage's, not the limit's.
    let runners = fleet(
        &st,
        "[policy.gateway]\ntenant_rate = 100000\ntenant_burst = 100000\n",
    );
    let key = hello_for_alpha(&st, &runners[0]);
    // The other runners learn of the new tenant and install from the change feed: until
    // they have, they answer 401 and 404 (CI: one of each, before the restart).
    let learned = Instant::now();
    for s in &runners {
        let url = format!("{}/api/ext/warden.hello/hi", s.base);
        while get(&url, Some(&key)).status != 200 {
            assert!(
                learned.elapsed() < Duration::from_secs(5),
                "{} never served",
                s.base
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    // Calls that ran while their records could not be written: their request ids.
    let ran_unrecorded = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for s in &runners {
            let (url, key, stop, statuses, ran_unrecorded) = (
                format!("{}/api/ext/warden.hello/hi", s.base),
                key.clone(),
                &stop,
                &statuses,
                &ran_unrecorded,
            );
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = get(&url, Some(&key));
                    if r.status == 503 {
                        assert_eq!(r.code(), "unavailable", "{}", r.body);
                        assert!(r.headers.contains_key("retry-after"));
                    }
                    // It ran: not worth a retry (no retry-after), and its records are kept.
                    if r.status == 502 {
                        assert_eq!(r.code(), "host-error", "{}", r.body);
                        assert!(r.body.contains("the call ran"), "{}", r.body);
                        assert!(!r.headers.contains_key("retry-after"));
                        let id = r.json()["error"]["request_id"].as_str().unwrap().to_owned();
                        ran_unrecorded.lock().unwrap().push(id);
                    }
                    *statuses.lock().unwrap().entry(r.status).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        server.restart();
        let restarted = Instant::now();
        // Every runner answers 200 again by itself.
        for s in &runners {
            let url = format!("{}/api/ext/warden.hello/hi", s.base);
            loop {
                if get(&url, Some(&key)).status == 200 {
                    break;
                }
                assert!(
                    restarted.elapsed() < Duration::from_secs(5),
                    "{} did not heal within 5 s",
                    s.base
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        eprintln!(
            "every runner serving again {:?} after the restart",
            restarted.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let statuses = statuses.into_inner().unwrap();
    eprintln!("statuses during the restart: {statuses:?}");
    assert!(
        statuses.keys().all(|s| [200, 502, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
    drop(runners);
    ok(&st.cli(&[&"audit", &"--verify"]));
    // Every call that ran while its records could not be written has them in the log now,
    // written late.
    let records = audit(&st);
    for id in ran_unrecorded.into_inner().unwrap() {
        assert!(
            records
                .iter()
                .any(|r| r["record"]["request_id"] == id.as_str() && r["record"]["event"] == "call"),
            "the call {id} ran but has no record"
        );
    }
}

/// One runner killed with -9 in the middle of a stream of key-value increments through all
/// three: no acknowledged write is lost, no call's record is lost or written twice (each 200's
/// request id is in exactly one `call` record), the shared chain verifies, and the other
/// runners keep serving.
#[test]
fn kill_9_of_one_runner_loses_nothing_and_the_others_serve_on() {
    let st = setup();
    if !on_shared_storage(&st) {
        return;
    }
    // A rate no writer reaches: what is tested is what a kill leaves, not the limit.
    let mut runners = fleet(
        &st,
        "[policy.gateway]\ntenant_rate = 100000\ntenant_burst = 100000\n",
    );
    let (kv, sig) = st.bundle(&example("kv-counter"), "kv");
    let hash = publish(&runners[0], &kv, &sig);
    let key = tenant(&runners[0], "alpha");
    let r = install(
        &runners[0],
        "alpha",
        "warden-examples.kv-counter",
        &hash,
        "kv",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let urls: Vec<String> = runners
        .iter()
        .map(|s| format!("{}/api/ext/warden-examples.kv-counter/increment", s.base))
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked = std::sync::Mutex::new(Vec::<(usize, u64, String)>::new());
    std::thread::scope(|scope| {
        for (i, url) in urls.iter().enumerate() {
            let (key, stop, acked) = (key.clone(), &stop, &acked);
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = agent()
                        .post(url)
                        .header("authorization", format!("Bearer {key}"))
                        .send("hits");
                    // The killed runner's connections fail: its writer stops.
                    let Ok(mut r) = r else { break };
                    if r.status() != 200 {
                        continue;
                    }
                    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
                    let n: u64 = r
                        .body_mut()
                        .read_to_string()
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    acked.lock().unwrap().push((i, n, id));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        runners[1].child.kill().unwrap();
        runners[1].child.wait().unwrap();
        let killed = acked.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(1000));
        let after: Vec<usize> = acked.lock().unwrap()[killed..]
            .iter()
            .map(|a| a.0)
            .collect();
        assert!(
            after.contains(&0) && after.contains(&2),
            "the others stopped: {after:?}"
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let acked = acked.into_inner().unwrap();
    let most = acked.iter().map(|a| a.1).max().unwrap();
    let r = reply(
        agent()
            .post(format!(
                "{}/api/ext/warden-examples.kv-counter/get",
                runners[0].base
            ))
            .header("authorization", format!("Bearer {key}"))
            .send("hits"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let stored: u64 = r.body.trim().parse().unwrap();
    assert!(stored >= most, "stored {stored} < acknowledged {most}");
    drop(runners);
    ok(&st.cli(&[&"audit", &"--verify"]));
    let records = audit(&st);
    for (_, _, id) in &acked {
        let calls = record_for(&records, id)
            .into_iter()
            .filter(|r| r["event"] == "call")
            .count();
        assert_eq!(calls, 1, "request {id} has {calls} call records");
    }
    eprintln!(
        "{} acknowledged increments, stored {stored}, all recorded once",
        acked.len()
    );
}

/// An install with folder mounts is refused on shared storage (its files would be kept by each
/// runner apart), with the reason and a record; the operator may accept per-runner folders with
/// `[storage] local_files = true`.
#[test]
fn folder_mounts_are_refused_on_shared_storage_unless_accepted() {
    let st = setup();
    if !on_shared_storage(&st) {
        return;
    }
    let s = st.serve("");
    let (notes, sig) = st.bundle(&example("notes"), "notes");
    let hash = publish(&s, &notes, &sig);
    tenant(&s, "alpha");
    let r = install(&s, "alpha", "warden-examples.notes", &hash, "all");
    assert_eq!((r.status, r.code().as_str()), (403, "denied"), "{}", r.body);
    assert!(r.body.contains("local_files = true"), "{}", r.body);
    drop(s);
    let shared = st.shared.as_ref().unwrap().section.clone();
    std::fs::write(
        st.config_file(),
        shared.replace("[storage]\n", "[storage]\nlocal_files = true\n"),
    )
    .unwrap();
    let s = st.runner(&st.data, None);
    let r = install(&s, "alpha", "warden-examples.notes", &hash, "all");
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A key revoked in one runner's trust bundle and reloaded there is enforced by every runner
/// within a second: the fleet's bundle lives in the storage they share.
#[test]
fn a_trust_reload_through_one_runner_is_enforced_by_all() {
    let st = setup();
    if !on_shared_storage(&st) {
        return;
    }
    let runners = fleet(&st, "");
    let key = hello_for_alpha(&st, &runners[0]);
    for s in &runners {
        let r = get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(&key));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The same file on every runner here; only the first is told to reload it. The key is
    // revoked (its publisher goes; another stays trusted).
    std::fs::create_dir(st.t.path().join("other")).unwrap();
    let other = crate::foundation::keygen(&st.t.path().join("other"), "someone-else");
    crate::foundation::trust_file(
        st.t.path(),
        "trust.toml",
        &[("someone-else", &[&other.pem], &[&st.pem])],
    );
    let r = send(
        "POST",
        &format!("{}/v1/admin/trust/reload", runners[0].base),
        Some(ADMIN),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let reloaded = Instant::now();
    for s in &runners {
        let url = format!("{}/api/ext/warden.hello/hi", s.base);
        loop {
            let r = get(&url, Some(&key));
            if r.status == 502 {
                assert_eq!(r.code(), "integrity", "{}", r.body);
                break;
            }
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(
                reloaded.elapsed() < Duration::from_secs(1),
                "{} still runs code signed with a revoked key after {:?}",
                s.base,
                reloaded.elapsed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!(
        "revocation enforced by every runner after {:?}",
        reloaded.elapsed()
    );
    // A runner started later with the old file enforces the fleet's bundle, not its file:
    // one runner's stale file never rolls the fleet back.
    crate::foundation::trust_file(
        st.t.path(),
        "trust.toml",
        &[("warden-examples", &[&st.pem], &[])],
    );
    let late = st.runner(&st.t.path().join("runner-late"), None);
    let r = get(
        &format!("{}/api/ext/warden.hello/hi", late.base),
        Some(&key),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "integrity"),
        "{}",
        r.body
    );
}

/// The HAProxy binary: on `PATH` or where Debian puts it (`/usr/sbin`, off a user's `PATH`).
/// Missing: under CI (`CI` set) the test fails, since `scripts/setup.sh` installs it; elsewhere
/// it says the test is skipped.
fn haproxy_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no haproxy on PATH or in /usr/sbin, and CI must run the load balancer's test: \
             bash scripts/setup.sh installs it"
        );
        println!("skipped: no haproxy (bash scripts/setup.sh installs it)");
    }
    found
}

/// HAProxy in front of `runners` (round robin, each checked on `/readyz`), with its config in
/// `dir`; each answer names the runner that served it in `x-served-by` (r0, r1, ...). Killed
/// when dropped.
struct Balancer {
    child: std::process::Child,
    base: String,
}

impl Balancer {
    fn start(bin: &Path, dir: &Path, runners: &[Server]) -> Balancer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg_text = [
            "global",
            "  maxconn 1024",
            "defaults",
            "  mode http",
            "  timeout connect 2s",
            "  timeout client 30s",
            "  timeout server 30s",
            "frontend warden",
            &format!("  bind 127.0.0.1:{port}"),
            "  default_backend runners",
            "backend runners",
            "  balance roundrobin",
            "  option httpchk",
            "  http-check send meth GET uri /readyz ver HTTP/1.1 hdr host localhost",
            "  http-check expect status 200",
            "  default-server inter 200ms fall 2 rise 1",
            "  http-response set-header x-served-by %s",
        ]
        .join("\n");
        for (i, s) in runners.iter().enumerate() {
            cfg_text.push_str(&format!("\n  server r{i} {} check", s.addr));
        }
        cfg_text.push('\n');
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, cfg_text).unwrap();
        let check = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // -db: in the foreground, not a daemon, so the child is HAProxy itself.
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("haproxy.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut lb = Balancer {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        // Up when it answers through every runner.
        let started = Instant::now();
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < runners.len() {
            if let Some(status) = lb.child.try_wait().unwrap() {
                panic!(
                    "haproxy exited with {status}: {}",
                    std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
                );
            }
            let r = agent().get(format!("{}/readyz", lb.base)).call();
            if let Ok(r) = r
                && r.status() == 200
                && let Some(by) = r.headers().get("x-served-by")
            {
                seen.insert(by.to_str().unwrap().to_string());
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "haproxy did not reach every runner within 5 s (reached {seen:?})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        lb
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A runner's count of alpha's successful hello calls, from its `/metrics`.
fn hello_calls(s: &Server) -> u64 {
    let m = get(&format!("{}/metrics", s.base), Some(ADMIN));
    assert_eq!(m.status, 200, "{}", m.body);
    m.body
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "warden_calls_total{tenant=\"alpha\",extension=\"warden.hello\",outcome=\"ok\"} ",
            )
        })
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// With three runners behind HAProxy (round robin, health-checked on `/readyz`): published
/// and installed through one runner, the extension is served through the balancer by every
/// runner (each answer names its runner, and each runner's metrics count exactly the calls
/// it answered); uninstalled through the balancer's admin route, every runner refuses it
/// within a second.
#[test]
fn behind_a_load_balancer_every_runner_serves_and_refuses_within_a_second() {
    let st = setup();
    if !on_shared_storage(&st) {
        return;
    }
    let Some(haproxy) = haproxy_binary() else {
        return;
    };
    let runners = fleet(&st, "");
    let lb = Balancer::start(&haproxy, st.t.path(), &runners);
    let key = hello_for_alpha(&st, &runners[0]);
    let calls = 12;
    let mut served = std::collections::BTreeMap::<String, u64>::new();
    for _ in 0..calls {
        let r = get(&format!("{}/api/ext/warden.hello/hi", lb.base), Some(&key));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("Hello from warden"), "{}", r.body);
        let by = r.headers["x-served-by"].to_str().unwrap().to_string();
        *served.entry(by).or_default() += 1;
    }
    eprintln!("calls through the balancer, by runner: {served:?}");
    for (i, s) in runners.iter().enumerate() {
        let answered = served.get(&format!("r{i}")).copied().unwrap_or(0);
        assert!(
            answered > 0,
            "runner {i} served none of {calls}: {served:?}"
        );
        assert_eq!(hello_calls(s), answered, "runner {i}'s metrics");
    }
    let r = send(
        "DELETE",
        &format!("{}/v1/admin/tenants/alpha/installs/warden.hello", lb.base),
        Some(ADMIN),
        b"",
    );
    assert!(
        r.status == 200 || r.status == 204,
        "{}: {}",
        r.status,
        r.body
    );
    let removed = Instant::now();
    for s in &runners {
        loop {
            let r = get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(&key));
            if r.status == 404 {
                break;
            }
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(
                removed.elapsed() < Duration::from_secs(1),
                "{} still serves an uninstalled extension after {:?}",
                s.base,
                removed.elapsed()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let all_refuse = removed.elapsed();
    eprintln!("uninstall through the balancer refused by every runner after {all_refuse:?}");
    // And through the balancer, whichever runner answers.
    for _ in 0..runners.len() {
        let r = get(&format!("{}/api/ext/warden.hello/hi", lb.base), Some(&key));
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "not-found"),
            "{}",
            r.body
        );
    }
    drop(lb);
    drop(runners);
    ok(&st.cli(&[&"audit", &"--verify"]));
}
