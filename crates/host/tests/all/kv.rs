//! `wasi:keyvalue` with a hostile guest (tests/guests/hostile-kv, which runs scripts of operations)
//! and the kv-counter example: scoping by (tenant, extension, bucket), quotas, durability,
//! denials.

use std::path::PathBuf;
use std::sync::Arc;

use warden_audit::{Decision, Event, Record};
use warden_host::{ExtensionId, Grant, KvQuota, MemoryKv, Policy, TenantName};

use crate::support::{Lab, call, text};

const HOSTILE: &str = "hostile-kv";
const OTHER_ID: &str = "warden-examples.hostile-kv-two";

fn hex(s: impl AsRef<[u8]>) -> String {
    s.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn tenant(name: &str) -> TenantName {
    name.parse().unwrap()
}

/// Loads hostile-kv for `tenant`, as extension `id` (default: its own), with `grant`.
fn load(lab: &Lab, tenant_name: &str, id: Option<&str>, grant: &Grant) -> ExtensionId {
    let path = lab.bundle(HOSTILE, |m| match id {
        Some(id) => m.replace("warden-examples.hostile-kv", id),
        None => m,
    });
    lab.host
        .tenant(&tenant(tenant_name))
        .load_file(&path, None, grant)
        .unwrap()
        .id
}

/// Runs a script (see tests/guests/hostile-kv) and returns its output lines.
async fn run(lab: &Lab, tenant_name: &str, id: &ExtensionId, script: &str) -> Vec<String> {
    let out = lab
        .host
        .tenant(&tenant(tenant_name))
        .call(id, "run", script.as_bytes())
        .await
        .unwrap();
    text(&out.value).lines().map(str::to_string).collect()
}

fn db(lab: &Lab) -> PathBuf {
    lab.dir.path().join("data/warden.db")
}

/// Rows in the database for (tenant, extension), read directly from the file.
fn rows(lab: &Lab, tenant_name: &str, id: &str) -> i64 {
    let conn = rusqlite::Connection::open(db(lab)).unwrap();
    conn.query_row(
        "SELECT count(*) FROM kv_entries WHERE tenant = ?1 AND extension = ?2",
        [tenant_name, id],
        |r| r.get(0),
    )
    .unwrap()
}

fn kv_records(records: &[Record], event: Event) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.event() == event && r.capability() == Some("kv"))
        .cloned()
        .collect()
}

/// Keys (and bucket names) that would reach alpha's `k` in bucket `default` if a scope were a
/// joined or normalized string.
fn crafted() -> Vec<String> {
    let mut v: Vec<String> = [
        "alpha/warden-examples.hostile-kv/default/k",
        "alpha:warden-examples.hostile-kv:default:k",
        "/alpha/warden-examples.hostile-kv/default/k",
        "../alpha/warden-examples.hostile-kv/default/k",
        "../../k",
        "default/k",
        "default:k",
        "default\0k",
        "k\0",
        "\0k",
        "k/",
        "./k",
        "k/.",
        "%6b",
        "k%00",
        "K",
        "ｋ",
        "k\u{200b}",
        "alpha\u{1f}warden-examples.hostile-kv\u{1f}default\u{1f}k",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("{}k", "/".repeat(300)));
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_keys_and_buckets_cannot_reach_another_tenant_or_extension() {
    let lab = Lab::new();
    let alpha = load(&lab, "alpha", None, &Grant::All);
    let beta = load(&lab, "beta", None, &Grant::All);
    let alpha2 = load(&lab, "alpha", Some(OTHER_ID), &Grant::All);
    let secret = hex("alpha-secret");
    let out = run(
        &lab,
        "alpha",
        &alpha,
        &format!(
            "open {}\nset {} {secret}\nget {}",
            hex("default"),
            hex("k"),
            hex("k")
        ),
    )
    .await;
    assert_eq!(out, ["ok", "ok", &format!("ok:{secret}")]);

    // The same extension in another tenant, and another extension in the same tenant, with
    // the same bucket and key and every crafted spelling: nothing.
    for (t, id) in [("beta", &beta), ("alpha", &alpha2)] {
        let mut script = format!("open {}\nget {}\nlist\n", hex("default"), hex("k"));
        for key in crafted() {
            script.push_str(&format!("get {}\nexists {}\n", hex(&key), hex(&key)));
        }
        for bucket in crafted().iter().chain(&[
            "default/".to_string(),
            "default\0".into(),
            "Default".into(),
            "../default".into(),
            "alpha/default".into(),
        ]) {
            script.push_str(&format!("open {}\nget {}\nlist\n", hex(bucket), hex("k")));
        }
        let out = run(&lab, t, id, &script).await;
        assert!(!out.is_empty());
        for line in &out {
            assert!(
                ["ok", "ok:none", "ok:false", "ok:", "err:no-such-store"].contains(&line.as_str()),
                "{t}/{id}: {line}"
            );
            assert!(!line.contains(&secret));
        }
    }

    // Alpha's own crafted keys are separate entries beside `k`, never overwriting it.
    let mut script = format!("open {}\n", hex("default"));
    for key in crafted() {
        script.push_str(&format!("set {} {}\n", hex(&key), hex("x")));
    }
    script.push_str(&format!("get {}\n", hex("k")));
    let out = run(&lab, "alpha", &alpha, &script).await;
    assert_eq!(out.last().unwrap(), &format!("ok:{secret}"));
    assert_eq!(
        rows(&lab, "alpha", alpha.as_str()),
        1 + crafted().len() as i64
    );
    assert_eq!(rows(&lab, "beta", beta.as_str()), 0);
    assert_eq!(rows(&lab, "alpha", OTHER_ID), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bucket_names_are_refused() {
    let lab = Lab::new();
    let id = load(&lab, "default", None, &Grant::All);
    let script = format!(
        "open \nopen {}\nopen {}",
        hex("b".repeat(257)),
        hex("b".repeat(256))
    );
    assert_eq!(
        run(&lab, "default", &id, &script).await,
        ["err:no-such-store", "err:no-such-store", "ok"]
    );
}

/// Two tenants and two extensions at once: each sees only what it wrote.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_installs_see_only_their_own_data() {
    let lab = Lab::new();
    let installs = [
        ("alpha", load(&lab, "alpha", None, &Grant::All)),
        ("alpha", load(&lab, "alpha", Some(OTHER_ID), &Grant::All)),
        ("beta", load(&lab, "beta", None, &Grant::All)),
        ("beta", load(&lab, "beta", Some(OTHER_ID), &Grant::All)),
    ];
    let scripts: Vec<(String, String)> = installs
        .iter()
        .map(|(t, id)| {
            let mine = hex(format!("{t}|{id}"));
            let mut s = format!("open {}\n", hex("default"));
            for i in 0..20 {
                s.push_str(&format!(
                    "set {} {mine}\nget {}\n",
                    hex(format!("k{i}")),
                    hex("k0")
                ));
            }
            s.push_str("list\n");
            (mine, s)
        })
        .collect();
    let calls = installs
        .iter()
        .zip(&scripts)
        .map(|((t, id), (_, s))| run(&lab, t, id, s));
    let outs = futures_join(calls).await;
    for ((mine, _), out) in scripts.iter().zip(outs) {
        for line in &out[1..out.len() - 1] {
            assert!(line == "ok" || *line == format!("ok:{mine}"), "{line}");
        }
        let keys: Vec<String> = (0..20).map(|i| hex(format!("k{i}"))).collect();
        assert_eq!(out.last().unwrap(), &format!("ok:{}", keys.join(",")));
    }
}

/// Joins futures on the test runtime (each call is also spawned, so they really overlap).
async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let fs: Vec<_> = fs.map(Box::pin).collect();
    // Poll all of them together: a simple join_all without an extra dependency.
    let mut pending: Vec<Option<_>> = fs.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().map(Option::unwrap));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn not_granted_is_a_typed_error_audited_and_the_call_goes_on() {
    let lab = Lab::new();
    // The manifest asks for kv; the operator grants nothing.
    let id = load(&lab, "default", None, &Grant::None);
    let script = format!(
        "open {}\nset {} {}\nopen {}",
        hex("default"),
        hex("k"),
        hex("v"),
        hex("other")
    );
    let out = run(&lab, "default", &id, &script).await;
    assert_eq!(
        out,
        ["err:access-denied", "err:no-bucket", "err:access-denied"]
    );
    let records = lab.audit.records();
    let denials = kv_records(&records, Event::Denial);
    let targets: Vec<_> = denials.iter().map(|r| r.target().unwrap()).collect();
    assert_eq!(targets, ["default", "other"]);
    assert!(denials.iter().all(|r| r.decision() == Some(Decision::Deny)));
    assert!(kv_records(&records, Event::Grant).is_empty());
    // The call itself succeeded, and nothing was written.
    assert!(
        records
            .iter()
            .any(|r| r.event() == Event::Call && r.extension() == Some(id.as_str()))
    );
    assert_eq!(rows(&lab, "default", id.as_str()), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_bucket_is_audited_once_per_bucket() {
    let lab = Lab::new();
    let id = load(&lab, "default", None, &Grant::All);
    let script = format!(
        "open {a}\nset {k} {v}\nopen {b}\nopen {a}\nget {k}",
        a = hex("a"),
        b = hex("b"),
        k = hex("k"),
        v = hex("v")
    );
    let out = run(&lab, "default", &id, &script).await;
    assert_eq!(out, ["ok", "ok", "ok", "ok", &format!("ok:{}", hex("v"))]);
    let grants = kv_records(&lab.audit.records(), Event::Grant);
    let targets: Vec<_> = grants.iter().map(|r| r.target().unwrap()).collect();
    assert_eq!(targets, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_floods_are_refused_atomically_and_audited() {
    // The operator's policy sets the quota.
    let policy = Policy::parse(
        "[policy.kv]\nmax_key_bytes = \"64B\"\nmax_value_bytes = \"1KiB\"\nmax_keys = 20\nmax_total_bytes = \"8KiB\"\n",
    )
    .unwrap();
    let lab = Lab::with_policy(policy);
    let id = load(&lab, "alpha", None, &Grant::All);
    let two = load(&lab, "alpha", Some(OTHER_ID), &Grant::All);
    let open = format!("open {}\n", hex("default"));

    // Too many keys: the 21st set fails, in any bucket, and increments cannot add keys either.
    let script = format!(
        "{open}flood {} 100 1\nopen {}\nset {} 00\nincr {} 1\n",
        hex("a"),
        hex("second-bucket"),
        hex("n"),
        hex("n")
    );
    let out = run(&lab, "alpha", &id, &script).await;
    assert_eq!(
        out[1],
        "err:20:err:other:the store is full: at most 20 keys"
    );
    assert_eq!(out[3], "err:other:the store is full: at most 20 keys");
    assert_eq!(out[4], "err:other:the store is full: at most 20 keys");
    assert_eq!(rows(&lab, "alpha", id.as_str()), 20);

    // A batch that would cross the quota writes nothing.
    let script = format!(
        "{open}delmany {},{}\nsetmany {}=00,{}=00,{}=00\nlist",
        hex("a0"),
        hex("a1"),
        hex("x"),
        hex("y"),
        hex("z")
    );
    let out = run(&lab, "alpha", &id, &script).await;
    assert_eq!(out[2], "err:other:the store is full: at most 20 keys");
    assert_eq!(rows(&lab, "alpha", id.as_str()), 18);

    // Huge values and keys are refused before they are stored; bytes are capped too.
    let script = format!(
        "{open}fill {} 1025\nset {} 00\nflood {} 10 1000\n",
        hex("big"),
        hex("k".repeat(65)),
        hex("b")
    );
    let out = run(&lab, "alpha", &two, &script).await;
    assert_eq!(
        out[1],
        "err:other:the value is 1025 bytes; the limit is 1024"
    );
    assert_eq!(out[2], "err:other:the key is 65 bytes; the limit is 64");
    assert_eq!(
        out[3],
        "err:8:err:other:the store is full: at most 8192 bytes of keys and values"
    );
    assert_eq!(rows(&lab, "alpha", OTHER_ID), 8);

    // Each refusal is a denial naming the bucket and the limit (never a value).
    // The set and the increment in `second-bucket` are the same refusal: one record, counted.
    let denials = kv_records(&lab.audit.records(), Event::Denial);
    assert_eq!(denials.len(), 6);
    assert_eq!(
        denials
            .iter()
            .filter(|r| r.message().unwrap().ends_with("(2 attempts)"))
            .count(),
        1
    );
    assert!(
        denials.iter().all(
            |r| r.message().unwrap().contains("limit") || r.message().unwrap().contains("full")
        )
    );

    // Another tenant's quota is its own.
    let beta = load(&lab, "beta", None, &Grant::All);
    let out = run(
        &lab,
        "beta",
        &beta,
        &format!("{open}flood {} 20 1", hex("a")),
    )
    .await;
    assert_eq!(out[1], "ok:20");
}

/// With the default quota a value over 1 MiB is refused and the call goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_over_the_default_limit_is_refused() {
    let lab = Lab::new();
    let id = load(&lab, "default", None, &Grant::All);
    let script = format!(
        "open {}\nfill {} 1048577\nfill {} 1048576\nexists {}",
        hex("d"),
        hex("a"),
        hex("b"),
        hex("a")
    );
    let out = run(&lab, "default", &id, &script).await;
    assert_eq!(
        out,
        [
            "ok",
            "err:other:the value is 1048577 bytes; the limit is 1048576",
            "ok",
            "ok:false"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_a_restart() {
    let lab = Lab::new();
    let path = lab.bundle(HOSTILE, |m| m);
    let t = tenant("alpha");
    let id = lab
        .host
        .tenant(&t)
        .load_file(&path, None, &Grant::All)
        .unwrap()
        .id;
    let script = format!(
        "open {}\nset {} {}\nincr {} 41",
        hex("d"),
        hex("k"),
        hex("kept"),
        hex("n")
    );
    assert_eq!(
        run(&lab, "alpha", &id, &script).await,
        ["ok", "ok", "ok:41"]
    );

    let host = lab.restarted_host();
    host.tenant(&t).load_file(&path, None, &Grant::All).unwrap();
    let script = format!(
        "open {}\nget {}\nincr {} 1\nlist",
        hex("d"),
        hex("k"),
        hex("n")
    );
    let out = host
        .tenant(&t)
        .call(&id, "run", script.as_bytes())
        .await
        .unwrap()
        .value;
    assert_eq!(
        text(&out),
        format!(
            "ok\nok:{}\nok:42\nok:{},{}\n",
            hex("kept"),
            hex("k"),
            hex("n")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_counter_counts_across_calls_concurrency_and_restarts() {
    let lab = Lab::new();
    let path = lab.bundle("kv-counter", |m| m);
    let id = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::All)
        .unwrap()
        .id;
    assert_eq!(lab.call(&id, "get", b"visits").await.unwrap(), b"0");
    // Four calls at once (the strict profile's concurrency): increments are atomic.
    let calls = (0..4).map(|_| lab.call(&id, "increment", b"visits"));
    for r in futures_join(calls).await {
        r.unwrap();
    }
    assert_eq!(
        lab.call(&id, "increment", b"visits 10").await.unwrap(),
        b"14"
    );
    assert_eq!(lab.call(&id, "get", b"other").await.unwrap(), b"0");

    let host = lab.restarted_host();
    host.default_tenant()
        .load_file(&path, None, &Grant::All)
        .unwrap();
    assert_eq!(call(&host, &id, "get", b"visits").await.unwrap(), b"14");

    // Without the grant the guest gets its typed error, and the value stays.
    let denied = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::None)
        .unwrap()
        .id;
    let err = lab.call(&denied, "increment", b"visits").await.unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    assert_eq!(call(&host, &id, "get", b"visits").await.unwrap(), b"14");
}

/// An embedder's own backend and quota replace the defaults (SQLite in the data dir, the
/// policy's quota).
#[tokio::test(flavor = "multi_thread")]
async fn an_embedder_backend_and_quota_are_used() {
    let quota = KvQuota {
        max_keys: 1,
        ..KvQuota::default()
    };
    let lab = Lab::with_builder(Policy::default(), |b| {
        b.kv_backend(Arc::new(MemoryKv::new())).kv_quota(quota)
    });
    let path = lab.bundle("kv-counter", |m| m);
    let id = lab
        .host
        .default_tenant()
        .load_file(&path, None, &Grant::All)
        .unwrap()
        .id;
    assert_eq!(lab.call(&id, "increment", b"a").await.unwrap(), b"1");
    let err = lab.call(&id, "increment", b"b").await.unwrap_err();
    assert!(err.to_string().contains("at most 1 keys"), "{err}");
    // A host on the same data dir with the default backend (SQLite) sees nothing of it.
    let host = lab.restarted_host();
    host.default_tenant()
        .load_file(&path, None, &Grant::All)
        .unwrap();
    assert_eq!(call(&host, &id, "get", b"a").await.unwrap(), b"0");
}

/// F3: the guest stores one 1 MiB value and asks `get-many` for it 1000 times (~1 GiB of
/// answer, far over its 64 MiB memory). Refused with a typed error naming the limit, from
/// the stored lengths before any value is read, and audited as a `kv` denial; the call goes
/// on, and a batch of duplicates under the limit is answered in full.
#[tokio::test(flavor = "multi_thread")]
async fn get_many_of_one_big_value_a_thousand_times_is_refused() {
    let lab = Lab::new();
    let id = load(&lab, "default", None, &Grant::All);
    let big = vec![hex("big"); 1000].join(",");
    let small = vec![hex("s"); 1000].join(",");
    let script = format!(
        "open {b}\nfill {k} 1048576\ngetmany {big}\nset {s} {v}\ngetmany {small}\nexists {k}",
        b = hex("d"),
        k = hex("big"),
        s = hex("s"),
        v = hex("0123456789"),
    );
    let out = run(&lab, "default", &id, &script).await;
    assert_eq!(out.len(), 6, "{out:?}");
    assert_eq!(out[..2], ["ok", "ok"]);
    // 1000 × (3 key bytes + 1 MiB): the whole answer is counted, the limit is 8 MiB.
    assert_eq!(
        out[2],
        "err:other:the get-many would return 1048579000 bytes of keys and values; the limit is 8388608"
    );
    assert_eq!(out[3], "ok");
    // 1000 duplicates of a small value: every position answered, each with the full value.
    let one = format!("{}={}", hex("s"), hex("0123456789"));
    let answers: Vec<&str> = out[4].strip_prefix("ok:").unwrap().split(',').collect();
    assert_eq!(answers.len(), 1000);
    assert!(answers.iter().all(|a| *a == one));
    assert_eq!(out[5], "ok:true");

    let denials = kv_records(&lab.audit.records(), Event::Denial);
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0].target(), Some("d"));
    assert!(
        denials[0]
            .message()
            .unwrap()
            .contains("the limit is 8388608"),
        "{denials:?}"
    );
}

/// `list-keys` cursors count only the bucket's own keys: another tenant writing 200 keys in
/// between leaves no gap, so they reveal nothing of other tenants' activity.
#[tokio::test(flavor = "multi_thread")]
async fn list_cursors_do_not_reveal_other_tenants_writes() {
    let lab = Lab::new();
    let alpha = load(&lab, "alpha", None, &Grant::All);
    let beta = load(&lab, "beta", None, &Grant::All);
    let open = format!("open {}\n", hex("default"));
    run(
        &lab,
        "alpha",
        &alpha,
        &format!("{open}flood {} 3 1", hex("a")),
    )
    .await;
    run(
        &lab,
        "beta",
        &beta,
        &format!("{open}flood {} 200 1", hex("b")),
    )
    .await;
    run(
        &lab,
        "alpha",
        &alpha,
        &format!("{open}flood {} 2 1", hex("c")),
    )
    .await;
    let conn = rusqlite::Connection::open(db(&lab)).unwrap();
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM kv_entries WHERE tenant = 'alpha' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let out = run(&lab, "alpha", &alpha, &format!("{open}list")).await;
    let want: Vec<String> = ["a0", "a1", "a2", "c0", "c1"].iter().map(hex).collect();
    assert_eq!(out[1], format!("ok:{}", want.join(",")));
}
