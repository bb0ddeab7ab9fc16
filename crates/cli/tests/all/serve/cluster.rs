//! Several `warden serve` runners on one shared storage (PostgreSQL and S3), as a fleet behind
//! a load balancer runs them (the tests pick the runner of each request themselves). Only with
//! `WARDEN_TEST_BACKEND=shared`: on the embedded default there is one runner per data dir.

use std::time::{Duration, Instant};

use super::*;

/// Three runners on the storage of `st`, each with a data dir of its own.
fn fleet(st: &Setup) -> Vec<Server> {
    st.write_config("");
    (0..3)
        .map(|i| st.runner(&st.t.path().join(format!("runner-{i}")), None))
        .collect()
}

/// Published and installed through one runner, the extension answers through every other;
/// uninstalled through one, every other refuses it within a second; a tenant made through
/// one is known to all; the audit chain they share verifies.
#[test]
fn what_one_runner_changes_every_runner_serves_within_a_second() {
    let st = setup();
    if st.shared.is_none() {
        println!(
            "skipped: one runner per data dir on the embedded default (WARDEN_TEST_BACKEND=shared runs it)"
        );
        return;
    }
    let runners = fleet(&st);
    let (a, others) = runners.split_first().unwrap();
    let (hello, sig) = st.bundle(&example("hello"), "hello");
    let hash = publish(a, &hello, &sig);
    let key = tenant(a, "alpha");
    let r = install(a, "alpha", "warden.hello", &hash, "none");
    assert_eq!(r.status, 200, "{}", r.body);
    for s in others {
        let r = get(&format!("{}/api/ext/warden.hello/hi", s.base), Some(&key));
        assert_eq!(r.status, 200, "{} via {}", r.body, s.base);
        assert!(r.body.contains("Hello from warden"), "{}", r.body);
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
            std::thread::sleep(Duration::from_millis(20));
        }
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
