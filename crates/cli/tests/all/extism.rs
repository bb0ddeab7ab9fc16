//! `warden run --call` with Extism plug-ins: the example built with the Extism Rust PDK gives
//! the output Extism's own host gave (`docs/design/extism/run-extism-ref.stdout`), and the
//! hostile plug-in's refused request and endless loop end with a clear error and an audit
//! record, through the same path (verification, grant, audit) as a component.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::foundation::{fails, keygen, ok, pack, sign, stderr, trust_file, warden};

fn plug_in(dir: &Path, name: &str, from: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(from);
    assert!(
        src.join("extension.wasm").exists(),
        "run scripts/build-examples.sh first"
    );
    let out = dir.join(format!("{name}.wext"));
    pack(&src, &out);
    out
}

fn run(t: &TempDir, trust: &Path, bundle: &Path, args: &[&str]) -> std::process::Output {
    let data = t.path().join("data");
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"run", &bundle, &"--trust", &trust, &"--data", &data];
    for a in args {
        all.push(a);
    }
    warden(&all)
}

#[test]
fn warden_run_calls_an_extism_plug_in_and_audits_it() {
    let t = TempDir::new().unwrap();
    let p = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&p.pem], &[])],
    );
    let example = plug_in(t.path(), "count-vowels", "examples/extism/count-vowels");
    let hostile = plug_in(t.path(), "extism-hostile", "tests/guests/extism-hostile");
    sign(&example, &p.key);
    sign(&hostile, &p.key);

    let out = run(
        &t,
        &trust,
        &example,
        &[
            "--grant",
            "secret:vowels",
            "--secret",
            "vowels=aeiouyAEIOUY",
            "--call",
            "count_vowels",
            "--input",
            "Hello, World! yes",
        ],
    );
    assert_eq!(
        ok(&out).trim_end(),
        r#"{"count":5,"total":5,"vowels":"aeiouyAEIOUY","input_len":17}"#
    );
    assert!(
        stderr(&out).contains("counted 5 vowels (total 5)"),
        "{}",
        stderr(&out)
    );

    // A host the plug-in may not reach: refused, named, audited.
    let out = run(
        &t,
        &trust,
        &hostile,
        &[
            "--grant",
            "all",
            "--call",
            "fetch",
            "--input",
            "http://evil.test/",
        ],
    );
    fails(&out, "http_request to http://evil.test:80 was refused");
    // An endless loop: stopped at the time limit.
    let out = run(&t, &trust, &hostile, &["--call", "spin"]);
    fails(&out, "time limit");

    // `warden inspect`: the host functions imported, what each gives under the grant, and the
    // exports.
    let shown = ok(&warden(&[&"inspect", &example, &"--grant", &"none"]));
    for line in [
        "kind: extism (entry extension.wasm)",
        "extism:host/env::config_get (i64) -> (i64): DENIED: no secret granted",
        "extism:host/env::var_set (i64, i64) -> (): allowed: vars of this call only",
        "count_vowels () -> (i32) (a method)",
    ] {
        assert!(shown.contains(line), "{line}\n{shown}");
    }
    let shown = ok(&warden(&[&"inspect", &hostile]));
    assert!(
        shown.contains(
            "extism:host/env::http_request (i64, i64) -> (i64): DENIED: network not granted"
        ),
        "{shown}"
    );

    let data = t.path().join("data");
    let audit = ok(&warden(&[&"audit", &"--data", &data]));
    assert!(
        audit.contains("grant ok warden.count-vowels@0.1.0") && audit.contains("target=vowels"),
        "{audit}"
    );
    assert!(
        audit.contains("denial denied warden.extism-hostile@0.1.0")
            && audit.contains("cap=network target=http://evil.test:80"),
        "{audit}"
    );
    assert!(
        audit.contains("limit timeout warden.extism-hostile"),
        "{audit}"
    );
    ok(&warden(&[&"audit", &"--data", &data, &"--verify"]));
}

/// A WASI plug-in with a read-write `/data`: what one run writes the next reads, `inspect`
/// names the folder and its fate under a grant, and parallel runs on one data dir share one
/// file quota (each process its own `warden run`).
#[test]
fn warden_run_gives_a_wasi_plug_in_its_folders_and_one_quota_across_processes() {
    let t = TempDir::new().unwrap();
    let p = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&p.pem], &[])],
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests/extism-wasi");
    let stage = t.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    let manifest = std::fs::read_to_string(src.join("extension.toml")).unwrap()
        + "\n[permissions.filesystem]\npaths = [\"/data\"]\n";
    std::fs::write(stage.join("extension.toml"), manifest).unwrap();
    std::fs::copy(src.join("extension.wasm"), stage.join("extension.wasm")).unwrap();
    let bundle = t.path().join("wasi.wext");
    pack(&stage, &bundle);
    sign(&bundle, &p.key);
    let policy = t.path().join("policy.toml");
    std::fs::write(&policy, "[policy.files]\nmax_bytes = \"1MiB\"\n").unwrap();
    let policy_s = policy.to_string_lossy().into_owned();
    let fs_call = |input: &str| {
        let out = run(
            &t,
            &trust,
            &bundle,
            &[
                "--config", &policy_s, "--grant", "fs:/data", "--call", "fs", "--input", input,
            ],
        );
        ok(&out).trim().to_string()
    };
    assert_eq!(fs_call("write|/data/n.txt|hello"), "ok");
    assert_eq!(fs_call("read|/data/n.txt"), "ok:hello");
    let files = t
        .path()
        .join("data/tenants/default/extensions/warden.extism-wasi/files");
    assert_eq!(
        std::fs::read_to_string(files.join("data/n.txt")).unwrap(),
        "hello"
    );
    let shown = ok(&warden(&[&"inspect", &bundle, &"--grant", &"none"]));
    assert!(shown.contains("DENIED: /data"), "{shown}");
    let shown = ok(&warden(&[&"inspect", &bundle, &"--grant", &"fs:/data"]));
    assert!(shown.contains("granted: /data (read-write)"), "{shown}");

    // Four processes at once, each writing 600 kB under a 1 MiB quota.
    let children: Vec<_> = (0..4)
        .map(|i| {
            let input = format!("fill|/data/p{i}|600000");
            crate::foundation::spawn_run(
                &bundle,
                &trust,
                &t.path().join("data"),
                &[
                    "--config", &policy_s, "--grant", "fs:/data", "--call", "fs", "--input", &input,
                ],
            )
        })
        .collect();
    let outs: Vec<String> = children
        .into_iter()
        .map(|c| ok(&c.wait_with_output().unwrap()).trim().to_string())
        .collect();
    assert!(outs.iter().filter(|o| *o == "ok").count() <= 1, "{outs:?}");
    assert!(
        outs.iter().all(|o| o == "ok" || o == "err:StorageFull:51"),
        "{outs:?}"
    );
    let mut used = 0;
    for e in std::fs::read_dir(files.join("data")).unwrap() {
        used += e.unwrap().metadata().unwrap().len();
    }
    assert!(used <= 1 << 20, "{used} bytes on disk: {outs:?}");
}
