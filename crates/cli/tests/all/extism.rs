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
