//! `warden run --secret`: values for one run, never echoed, never stored, never in the audit
//! log or the command's output, even when the extension tries to leak them.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::foundation::{keygen, pack, sign, stderr, stdout, trust_file, warden};

const VALUE: &str = "Cl1-S3cret-Value-q8w7e6";

struct Setup {
    t: TempDir,
    trust: PathBuf,
    bundle: PathBuf,
}

fn setup() -> Setup {
    let t = TempDir::new().unwrap();
    let p = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&p.pem], &[])],
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests/hostile-secrets");
    assert!(
        dir.join("extension.wasm").exists(),
        "run scripts/build-examples.sh first"
    );
    let bundle = t.path().join("hostile-secrets.wext");
    pack(&dir, &bundle);
    sign(&bundle, &p.key);
    Setup { t, trust, bundle }
}

impl Setup {
    fn data(&self) -> PathBuf {
        self.t.path().join("data")
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let data = self.data();
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"run",
            &self.bundle,
            &"--trust",
            &self.trust,
            &"--data",
            &data,
        ];
        for a in args {
            all.push(a);
        }
        warden(&all)
    }

    /// Every byte of every file under the data dir.
    fn data_bytes(&self) -> Vec<u8> {
        fn walk(dir: &Path, out: &mut Vec<u8>) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.extend(fs::read(e.path()).unwrap());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data(), &mut out);
        out
    }
}

fn holds(hay: &[u8], needle: &str) -> bool {
    let lower = needle.to_ascii_lowercase();
    hay.windows(needle.len())
        .any(|w| w == needle.as_bytes() || w == lower.as_bytes())
}

#[test]
fn run_hands_a_secret_to_the_call_and_stores_nothing() {
    let s = setup();
    let arg = format!("API_TOKEN={VALUE}");
    let out = s.run(&[
        "--grant",
        "secret:API_TOKEN",
        "--secret",
        &arg,
        "--call",
        "get",
        "--input",
        "API_TOKEN",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The fixture returns what it read (its result is its own business).
    assert_eq!(stdout(&out).trim(), format!("ok:{VALUE}"));
    assert!(!stderr(&out).contains(VALUE));
    assert!(
        !holds(&s.data_bytes(), VALUE),
        "the value was written under DATA"
    );

    // From a file: one trailing newline is dropped.
    let file = s.t.path().join("token.txt");
    fs::write(&file, format!("{VALUE}\n")).unwrap();
    let arg = format!("API_TOKEN=@{}", file.display());
    let out = s.run(&[
        "--grant",
        "secret:API_TOKEN",
        "--secret",
        &arg,
        "--call",
        "get",
        "--input",
        "API_TOKEN",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("ok:{VALUE}"));

    // Next run without --secret: nothing was kept.
    let out = s.run(&[
        "--grant",
        "secret:API_TOKEN",
        "--call",
        "get",
        "--input",
        "API_TOKEN",
    ]);
    assert_eq!(stdout(&out).trim(), "none");
}

#[test]
fn a_leaking_extension_leaks_nothing_to_the_terminal_or_the_audit_log() {
    let s = setup();
    let arg = format!("API_TOKEN={VALUE}");
    let out = s.run(&[
        "--grant",
        "secret:API_TOKEN",
        "--secret",
        &arg,
        "--call",
        "leak",
        "--input",
        "API_TOKEN",
    ]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("\nerror: the extension returned an error"),
        "{e}"
    );
    assert!(
        e.contains("leak-[REDACTED]: upstream rejected token [REDACTED]"),
        "{e}"
    );
    assert!(
        e.contains("[extension stdout] stdout: the token is [REDACTED]"),
        "{e}"
    );
    assert!(
        e.contains("[extension log:info] leak: message has [REDACTED] inside"),
        "{e}"
    );
    assert!(
        !holds(o.as_bytes(), VALUE) && !holds(e.as_bytes(), VALUE),
        "{o}\n{e}"
    );
    // Halves of the value are not there either.
    assert!(
        !e.contains(&VALUE[..11]) && !e.contains(&VALUE[11..]),
        "{e}"
    );

    // The real audit file, and what `warden audit` prints.
    let audit_dir = s.data().join("audit");
    let mut audit = Vec::new();
    for f in fs::read_dir(&audit_dir).unwrap() {
        audit.extend(fs::read(f.unwrap().path()).unwrap());
    }
    let audit_text = String::from_utf8_lossy(&audit);
    assert!(audit_text.contains("[REDACTED].evil.test"), "{audit_text}");
    assert!(!holds(&audit, VALUE), "{audit_text}");
    let data = s.data();
    let shown = warden(&[&"audit", &"--data", &data, &"--json"]);
    assert_eq!(shown.status.code(), Some(0));
    assert!(!holds(&shown.stdout, VALUE));
    assert!(!holds(&s.data_bytes(), VALUE));
}

#[test]
fn secret_arguments_are_checked_without_echoing_values() {
    let s = setup();
    // A name the manifest does not declare: usage error naming only the name.
    let arg = format!("NOT_DECLARED={VALUE}");
    let out = s.run(&["--secret", &arg, "--call", "get", "--input", "x"]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("NOT_DECLARED"), "{e}");
    assert!(!e.contains(VALUE), "{e}");

    // No NAME= at all (a value typed in the wrong place), or a bad name: never quoted.
    for bad in [
        VALUE.to_string(),
        format!("bad-name!={VALUE}"),
        format!("{VALUE}=x"),
    ] {
        let out = s.run(&["--secret", &bad, "--call", "get"]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{e}");
        assert!(e.contains("--secret"), "{e}");
        assert!(!e.contains(VALUE) && !e.contains("bad-name"), "{e}");
    }

    // An unreadable @FILE names the file, not a value.
    let out = s.run(&["--secret", "API_TOKEN=@/nonexistent/token", "--call", "get"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/token"));
}
