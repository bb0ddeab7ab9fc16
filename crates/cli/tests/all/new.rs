//! `warden new`: every template (Rust, JavaScript, Python × http, rpc) is generated, built with
//! its own build.sh, packed, signed and run, and answers; the Rust ones by the very commands
//! their README prints. Refusals (a folder in the way, a bad name, an unknown language or
//! world) write nothing.
//!
//! The JavaScript and Python tools are the ones scripts/build-examples.sh installed under
//! target/tools (nothing is downloaded here), and the Rust templates share the target dir
//! target/new-templates, so their dependencies are built once across runs. The six templates
//! run in one test, one after the other, with one data dir: the second call of a component
//! loads the compiled code the first one stored.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::foundation::{
    fails, keygen, listing, ok, pack, sign, stderr, stdout, trust_file, warden,
};

const PUBLISHER: &str = "my-publisher";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The environment of every build: the tools build-examples.sh installed, a shared target dir.
fn build_env(cmd: &mut Command) -> &mut Command {
    let root = repo();
    cmd.env("WARDEN_TOOLS", root.join("target/tools"))
        .env("CARGO_TARGET_DIR", root.join("target/new-templates"))
        .env_remove("WARDEN_TRUST_BUNDLE")
        .env_remove("WARDEN_AUDIT_KEY")
}

/// The JavaScript and Python tools of the SDK's pins are installed already (so no build here
/// downloads them): the folders sdk/*/build.sh name after the pin's hash.
fn assert_tools_installed() {
    let root = repo();
    for (lang, pin) in [
        ("js", "sdk/js/package-lock.json"),
        ("python", "sdk/python/requirements.txt"),
    ] {
        let hash = Sha256::digest(fs::read(root.join(pin)).unwrap());
        let id: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let done = root.join(format!("target/tools/{lang}-{id}/.complete"));
        assert!(
            done.exists(),
            "{} is missing: run scripts/build-examples.sh first",
            done.display()
        );
    }
}

/// The files under `dir`, relative to it, with their bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn new(name: &str, lang: &str, world: &str, parent: &Path) -> Output {
    warden(&[
        &"new", &name, &"--lang", &lang, &"--world", &world, &"--dir", &parent,
    ])
}

/// The commands of the README's `sh` block.
fn readme_commands(dir: &Path) -> Vec<String> {
    let readme = fs::read_to_string(dir.join("README.md")).unwrap();
    let block = readme.split("```sh\n").nth(1).unwrap();
    let block = block.split("```").next().unwrap();
    block.lines().map(str::to_string).collect()
}

/// What the template at `dir` must hold, whatever its language.
fn check_files(dir: &Path, name: &str, lang: &str) {
    let root = repo();
    let manifest = fs::read_to_string(dir.join("extension.toml")).unwrap();
    assert!(
        manifest.contains(&format!("id = \"{PUBLISHER}.{name}\"")),
        "{manifest}"
    );
    let profile = if lang == "rust" { "strict" } else { "standard" };
    assert!(
        manifest.contains(&format!("profile = \"{profile}\"")),
        "{manifest}"
    );
    // The WIT packages, exactly as scripts/build-examples.sh lays them out for the examples.
    let examples_deps = root.join("examples/js/hello/wit/deps");
    assert!(
        examples_deps.is_dir(),
        "run scripts/build-examples.sh first"
    );
    assert_eq!(tree(&dir.join("wit/deps")), tree(&examples_deps));
    assert!(dir.join("wit/world.wit").is_file());
    // The SDK's own build script and pins, byte for byte.
    if lang != "rust" {
        assert_eq!(
            tree(&dir.join(".warden-sdk")),
            tree(&root.join("sdk").join(lang))
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir.join("build.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "build.sh is not executable");
    let readme = fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains(PUBLISHER), "{readme}");
}

/// `warden run BUNDLE --trust TRUST --data DATA ARGS...`.
fn run(bundle: &Path, trust: &Path, data: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"run", &bundle, &"--trust", &trust, &"--data", &data];
    for a in args {
        all.push(a);
    }
    warden(&all)
}

/// Runs build.sh as the README says (`./build.sh` in the folder).
fn build(dir: &Path) {
    let o = build_env(&mut Command::new(dir.join("build.sh")))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "build.sh failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(dir.join("extension.wasm").is_file());
    if dir.join("index.js").is_file() {
        check_js_types(dir);
    }
}

/// A JavaScript extension's `types/` (written by the SDK's build script) declares what its
/// `index.js` uses: every `import { A, B as C } from 'SPEC'` names a module declared there that
/// exports A and B, and the interface the module exports is declared too.
fn check_js_types(dir: &Path) {
    let src = fs::read_to_string(dir.join("index.js")).unwrap();
    let decls: String = tree(&dir.join("types"))
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with(".d.ts"))
        .map(|(_, b)| String::from_utf8(b).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let module = |spec: &str| -> String {
        let head = format!("declare module '{spec}' {{");
        let at = decls
            .find(&head)
            .unwrap_or_else(|| panic!("{}: no {head} in types/", dir.display()));
        let body = &decls[at + head.len()..];
        body[..body.find("\ndeclare module").unwrap_or(body.len())].to_string()
    };
    let mut imports = 0;
    let mut rest = src.as_str();
    while let Some(at) = rest.find("import {") {
        rest = &rest[at + "import {".len()..];
        let close = rest.find('}').unwrap();
        let names = &rest[..close];
        let from = rest[close..].split('\'').nth(1).unwrap();
        let body = module(from);
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.split(" as ").next().unwrap().trim();
            let exported = ["function", "class", "type", "interface", "const"]
                .iter()
                .any(|k| body.contains(&format!("export {k} {name}")));
            assert!(exported, "{}: {from} declares no {name}", dir.display());
        }
        imports += 1;
    }
    // The export the world asks for: the rpc handler or the http incoming handler.
    let world = fs::read_to_string(dir.join("wit/world.wit")).unwrap();
    if world.contains("rpc-extension") {
        assert!(module("warden:extension/handler@0.1.0").contains("export function call("));
    } else {
        assert!(decls.contains("incoming-handler"), "{}", dir.display());
    }
    assert!(
        imports > 0 || !src.contains("import {"),
        "{}",
        dir.display()
    );
}

/// The JavaScript examples' types, as the SDK's build script writes them next to each.
#[test]
fn the_javascript_examples_come_with_types_for_what_they_import() {
    let root = repo();
    let mut seen = 0;
    for dir in fs::read_dir(root.join("examples/js")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.join("index.js").is_file() {
            assert!(
                dir.join("types").is_dir(),
                "{}: no types/, run scripts/build-examples.sh",
                dir.display()
            );
            check_js_types(&dir);
            seen += 1;
        }
    }
    assert!(seen >= 3, "{seen} JavaScript examples");
}

#[test]
fn every_template_builds_packs_signs_and_runs() {
    assert_tools_installed();
    let t = TempDir::new().unwrap();
    let parent = t.path().join("work");
    let publisher = keygen(t.path(), PUBLISHER);
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[(PUBLISHER, &[&publisher.pem], &[])],
    );
    let data = t.path().join("data");
    let warden_dir = Path::new(env!("CARGO_BIN_EXE_warden")).parent().unwrap();
    let path = format!(
        "{}:{}",
        warden_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (lang, world) in [
        ("rust", "http"),
        ("rust", "rpc"),
        ("js", "http"),
        ("js", "rpc"),
        ("python", "http"),
        ("python", "rpc"),
    ] {
        let start = Instant::now();
        let name = format!("hello-{lang}-{world}");
        let o = new(&name, lang, world, &parent);
        let steps = ok(&o);
        let dir = parent.join(&name);
        check_files(&dir, &name, lang);
        // The next steps printed are the README's commands, after a `cd` into the folder.
        assert!(
            steps.contains(&format!("  cd {}\n", dir.display())),
            "{steps}"
        );
        let commands = readme_commands(&dir);
        assert_eq!(commands.len(), 5, "{commands:?}");
        for c in &commands {
            assert!(
                steps.contains(&format!("  {c}\n")),
                "{c:?} not in:\n{steps}"
            );
        }

        // Rust: the README's commands, as printed, in the folder (its own keys and trust
        // bundle, its own data dir). The others: build.sh, then the helpers.
        let (bundle, trust, output) = if lang == "rust" {
            // The lock file it came with is the one cargo keeps.
            let lock = fs::read(dir.join("Cargo.lock")).unwrap();
            let o = build_env(&mut Command::new("bash"))
                .args(["-euo", "pipefail", "-c", &commands.join("\n")])
                .current_dir(&dir)
                .env("PATH", &path)
                .output()
                .unwrap();
            let out = ok(&o);
            assert_eq!(fs::read(dir.join("Cargo.lock")).unwrap(), lock);
            assert!(dir.join(format!("keys/{PUBLISHER}.key")).is_file());
            // Before `warden run`'s output: the content hash `warden pack` prints and the
            // signature file `warden sign` names.
            assert!(out.starts_with("sha256:"), "{out}");
            let signed = format!("{name}.wext.sig\n");
            let at = out.find(&signed).expect(&out) + signed.len();
            let run_output = out[at..].to_string();
            (
                dir.join(format!("{name}.wext")),
                dir.join("trust.toml"),
                run_output,
            )
        } else {
            build(&dir);
            let bundle = t.path().join(format!("{name}.wext"));
            pack(&dir, &bundle);
            sign(&bundle, &publisher.key);
            let run_output = if world == "http" {
                run(&bundle, &trust, &data, &["--http", "GET /hello"])
            } else {
                run(
                    &bundle,
                    &trust,
                    &data,
                    &["--call", "greet", "--input", r#"{"name":"Ada"}"#],
                )
            };
            (bundle, trust.clone(), ok(&run_output))
        };
        if world == "http" {
            assert!(output.starts_with("HTTP/1.1 200 OK\n"), "{output}");
            assert!(
                output.contains(&format!("Hello from {name}! You asked for /hello")),
                "{output}"
            );
        } else {
            assert_eq!(output.trim(), r#"{"greeting":"Hello, Ada!"}"#, "{output}");
            // Plain text, a JSON string, nothing; an object without a name; a method the
            // manifest does not list.
            let call = |input: &[&str]| {
                let mut args = vec!["--call", "greet"];
                args.extend(input);
                run(&bundle, &trust, &data, &args)
            };
            for (input, name) in [("Bob", "Bob"), (r#""Eve""#, "Eve")] {
                let out = ok(&call(&["--input", input]));
                assert_eq!(out.trim(), format!(r#"{{"greeting":"Hello, {name}!"}}"#));
            }
            let out = ok(&call(&[]));
            assert_eq!(out.trim(), r#"{"greeting":"Hello, world!"}"#);
            fails(&call(&["--input", r#"{"x":1}"#]), "bad-input");
            fails(&run(&bundle, &trust, &data, &["--call", "echo"]), "echo");
        }
        let inspect = ok(&warden(&[&"inspect", &bundle]));
        assert!(
            inspect.contains("permissions requested:\n  - none"),
            "{inspect}"
        );
        eprintln!(
            "warden new: {lang} {world}: generated, built, packed, signed and run in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}

/// Exit 2 (usage) with `needle` on stderr, and no panic.
#[track_caller]
fn usage(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn refusals_write_nothing() {
    let t = TempDir::new().unwrap();
    let parent = t.path().join("work");
    fs::create_dir_all(parent.join("taken")).unwrap();
    fs::write(parent.join("taken/notes.txt"), "mine").unwrap();
    fs::write(parent.join("file"), "a file").unwrap();
    let before = tree(&parent);
    let unchanged = || assert_eq!(tree(&parent), before);

    // A folder in the way, unless it is empty; a file in the way.
    fails(
        &new("taken", "rust", "rpc", &parent),
        "already exists and is not empty; nothing was written",
    );
    unchanged();
    fails(&new("file", "js", "http", &parent), "is not a folder");
    unchanged();

    // Bad names: usage errors.
    let long = "a".repeat(65);
    for bad in [
        "Hello", "1st", "x-", "a_b", "a.b", "a/b", "../up", "", "é", &long,
    ] {
        usage(
            &new(bad, "python", "rpc", &parent),
            "a-z, 0-9 and '-', starting with a letter",
        );
        unchanged();
    }
    usage(
        &new("-x", "python", "rpc", &parent),
        "unexpected argument '-x'",
    );
    usage(
        &new("fn", "rust", "http", &parent),
        "cannot name a Rust crate",
    );
    usage(
        &new("serde-json", "rust", "rpc", &parent),
        "it depends on the crate serde_json",
    );
    unchanged();

    // Unknown languages and worlds, and missing ones.
    let o = new("ok", "go", "rpc", &parent);
    usage(&o, "invalid value 'go' for '--lang <LANG>'");
    assert!(stderr(&o).contains("rust, js, python"), "{}", stderr(&o));
    usage(
        &new("ok", "rust", "grpc", &parent),
        "invalid value 'grpc' for '--world <WORLD>'",
    );
    usage(
        &warden(&[&"new", &"ok", &"--lang", &"js", &"--dir", &parent]),
        "--world",
    );
    usage(
        &warden(&[&"new", &"ok", &"--world", &"http", &"--dir", &parent]),
        "--lang",
    );
    unchanged();

    // An empty folder is used; a missing parent is made.
    fs::create_dir(parent.join("empty")).unwrap();
    ok(&new("empty", "js", "rpc", &parent));
    assert!(parent.join("empty/index.js").is_file());
    let deeper = t.path().join("a/b");
    ok(&new("fresh", "python", "http", &deeper));
    assert!(deeper.join("fresh/app.py").is_file());
    // No temporary folder is left behind.
    for p in [&parent, &deeper] {
        for e in fs::read_dir(p).unwrap() {
            let n = e.unwrap().file_name();
            assert!(
                !n.to_string_lossy().starts_with('.'),
                "{n:?} left in {}",
                p.display()
            );
        }
    }
}
