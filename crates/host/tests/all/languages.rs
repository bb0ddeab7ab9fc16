//! One extension in three languages: `examples/kv-counter` (Rust), `examples/js/kv-counter`
//! (componentize-js) and `examples/python/kv-counter` (componentize-py). Loaded with the same
//! grants on one host, the same calls give the same outputs, the same errors (a denied
//! request, an ungranted store) and the same audit trail of uses and denials. And the limits
//! fixture in each language (`tests/guests/hostile`, `tests/guests/js/hostile`,
//! `tests/guests/python/hostile`) meets the time and memory limits the same way, with the
//! same audit outcomes: what warden promises does not depend on the guest's language.

use warden_audit::{Event, Outcome};
use warden_host::{CallError, ExtensionId, Grant, Policy};

use crate::support::{Lab, text};
use crate::twins::{allow, kv_counter_calls, outcome, server, trail};

const LANGUAGES: [(&str, &str); 3] = [("rust", ""), ("javascript", "js/"), ("python", "python/")];

#[tokio::test(flavor = "multi_thread")]
async fn every_language_gives_the_same_answers_denials_and_audit_trail() {
    let lab =
        Lab::with_policy(Policy::parse("[policy]\nallow_networks = [\"127.0.0.0/8\"]\n").unwrap());
    let port = server();
    let allowed = format!("http://127.0.0.1:{port}/health");
    // The twins' calls, and two the process twin is not held to: a delta past u64, and the
    // cloud metadata address.
    let mut calls = kv_counter_calls(&allowed);
    calls.push(("increment", b"visits 18446744073709551616".to_vec()));
    calls.push(("ping", b"http://169.254.169.254/latest/meta-data/".to_vec()));
    for (grant, kv_works) in [(Grant::All, true), (Grant::None, false)] {
        let ids: Vec<(&str, ExtensionId)> = LANGUAGES
            .iter()
            .map(|(lang, dir)| {
                let name = format!("{dir}kv-counter");
                (*lang, lab.load_granted(&name, allow(port), &grant))
            })
            .collect();
        let (_, rust) = &ids[0];
        for (method, input) in &calls {
            let want = outcome(&lab, rust, method, input).await;
            for (lang, id) in &ids[1..] {
                let got = outcome(&lab, id, method, input).await;
                assert_eq!(
                    got,
                    want,
                    "{lang}: {method} {:?} with {grant:?}",
                    text(input)
                );
            }
        }
        // Not a vacuous comparison: the counter counted (or was refused), the allowed ping went
        // out (or was refused), and the forbidden ones were denied.
        for (lang, id) in &ids {
            let got = outcome(&lab, id, "get", b"visits").await;
            let want = if kv_works { "ok 42" } else { "err denied" };
            assert!(got.starts_with(want), "{lang}: {got}");
            let ping = outcome(&lab, id, "ping", allowed.as_bytes()).await;
            let want = if kv_works { "ok 204" } else { "err denied" };
            assert!(ping.starts_with(want), "{lang}: {ping}");
            assert_eq!(
                outcome(&lab, id, "ping", b"http://10.0.0.1/").await,
                "err denied: the extension returned an error: denied: the host refused the request",
                "{lang}"
            );
            assert_eq!(trail(&lab, id), trail(&lab, rust), "{lang} with {grant:?}");
        }
        let denials = trail(&lab, rust)
            .into_iter()
            .filter(|(event, _, _)| event == "Denial")
            .count();
        assert!(denials >= 3, "{:#?}", trail(&lab, rust));
    }
}

/// What a limit did to a call, as the guest saw it, and the audit records of that call as
/// (event, outcome).
async fn limited(
    lab: &Lab,
    id: &ExtensionId,
    method: &str,
    input: &[u8],
) -> (String, Vec<(Event, Outcome)>) {
    let before = lab.audit.records().len();
    let seen = match lab.host.default_tenant().call(id, method, input).await {
        // `grow` answers how far it got when an allocation failed (`grew N` if none did).
        Ok(c) => match text(&c.value).parse::<u64>() {
            Ok(n) if n < 64 => "allocation refused below the limit".to_owned(),
            Ok(n) => format!("allocated {n} MiB past a 64 MiB limit"),
            Err(_) => text(&c.value),
        },
        Err(f) => match f.error {
            CallError::Timeout(_) => "stopped at its time limit".to_owned(),
            CallError::MemoryLimit(_) => "stopped at its memory limit".to_owned(),
            other => format!("{}: {other}", other.guest_code()),
        },
    };
    let records = lab.audit.records();
    let of_call = records[before..]
        .iter()
        .filter(|r| r.extension() == Some(id.as_str()))
        .map(|r| (r.event(), r.outcome()))
        .collect();
    (seen, of_call)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_language_meets_the_time_and_memory_limits_the_same_way() {
    let lab = Lab::new();
    // The Rust fixture's budget is 32 MiB; the others need more for their runtimes. Same for
    // all three here.
    let same_budget = |m: String| m.replace("max_memory = \"32MiB\"", "max_memory = \"64MiB\"");
    let ids: Vec<(&str, ExtensionId)> = LANGUAGES
        .iter()
        .map(|(lang, dir)| {
            (
                *lang,
                lab.load_edited(&format!("{dir}hostile"), same_budget),
            )
        })
        .collect();
    for (lang, id) in &ids {
        let (seen, records) = limited(&lab, id, "loop", b"").await;
        assert_eq!(seen, "stopped at its time limit", "{lang}");
        assert!(
            records.contains(&(Event::Limit, Outcome::Timeout)),
            "{lang}: {records:?}"
        );
        let (seen, records) = limited(&lab, id, "grow", b"200").await;
        assert_eq!(seen, "allocation refused below the limit", "{lang}");
        assert!(
            records.contains(&(Event::Limit, Outcome::MemoryLimit)),
            "{lang}: {records:?}"
        );
        // The instance is gone with its call: the next one starts from nothing and has the
        // whole budget again.
        let (seen, _) = limited(&lab, id, "grow", b"8").await;
        assert_eq!(seen, "grew 8", "{lang}");
    }
    // And the records are the same, call for call, whatever the language.
    let mut trails = Vec::new();
    for (lang, id) in &ids {
        let mut trail = Vec::new();
        for (method, input) in [("loop", &b""[..]), ("grow", b"200"), ("grow", b"8")] {
            trail.push(limited(&lab, id, method, input).await);
        }
        trails.push((lang, trail));
    }
    for (lang, trail) in &trails[1..] {
        assert_eq!(trail, &trails[0].1, "{lang} against rust");
    }
}
