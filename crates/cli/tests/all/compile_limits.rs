//! Issue 9, finding 2 (the hard bound): the pre-compile check admits components that still
//! compile for minutes (one straight-line 1 MiB body: seconds and 320 MiB; 23 of them: 113 s
//! and 461 MiB). `warden` compiles in a child process that `[policy.compile]` bounds in time
//! and memory; over either, the load is refused, audited, and nothing is cached.

use std::fs;
use std::path::{Path, PathBuf};

use crate::foundation::{fails, keygen, ok, pack, sign, signed_echo, stdout, trust_file, warden};

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len(), out);
    out.extend_from_slice(body);
}

/// A core module whose `count` functions are each a straight line of `i32.const 1; i32.add`
/// about `len` bytes long, the first exported as `call` (`() -> i32`, as an Extism plug-in's):
/// within every shape limit of the pre-compile check, slow to compile (about 1.5-3 s each for
/// 1 MiB).
fn slow_module(len: usize, count: u8) -> Vec<u8> {
    let mut body = vec![0x00, 0x41, 0x00];
    while body.len() + 4 < len {
        body.extend_from_slice(&[0x41, 0x01, 0x6a]);
    }
    body.push(0x0b);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 1, 0x7f], &mut module);
    let mut funcs = vec![count];
    funcs.extend(std::iter::repeat_n(0, usize::from(count)));
    section(3, &funcs, &mut module);
    section(7, &[1, 4, b'c', b'a', b'l', b'l', 0, 0], &mut module);
    let mut code = vec![count];
    for _ in 0..count {
        leb(body.len(), &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    module
}

/// A component around [`slow_module`]: slow to compile in the same way. It exports an
/// instance named like the rpc handler, so the check takes it for an rpc extension.
pub(crate) fn slow_component(len: usize, count: u8) -> Vec<u8> {
    let module = slow_module(len, count);
    let mut c = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut c);
    // An empty instance, exported under the rpc handler's name.
    section(5, &[1, 1, 0], &mut c);
    let name = b"warden:extension/handler@0.1.0";
    let mut export = vec![1, 0];
    leb(name.len(), &mut export);
    export.extend_from_slice(name);
    export.extend_from_slice(&[5, 0, 0]);
    section(11, &export, &mut c);
    c
}

/// A component that is cheap to compile and slow to validate (red team, round 5): a shared
/// component importing functions of a 16-level tuple tree (131k nodes), instantiated 997 times
/// in each of `nested` components and at the top, so validation compares the trees again and
/// again. Within every shape limit of the pre-compile check.
fn validation_bomb(nested: usize) -> Vec<u8> {
    const DEPTH: usize = 16;
    let types = |p: &str| {
        let mut t = format!("(type ${p}0 (tuple u8 u8))\n");
        for i in 1..=DEPTH {
            t += &format!("(type ${p}{i} (tuple ${p}{} ${p}{}))\n", i - 1, i - 1);
        }
        t
    };
    let args = (0..3)
        .map(|k| format!("(with \"f{k}\" (func $f))"))
        .collect::<Vec<_>>()
        .join(" ");
    let instances = format!("(instance (instantiate $C {args}))\n").repeat(997);
    let mut w = format!(
        "(component $top\n{}(component $C\n{}",
        types("o"),
        types("i")
    );
    for k in 0..3 {
        w += &format!("(import \"f{k}\" (func (param \"p\" $i{DEPTH})))\n");
    }
    w += ")\n";
    for m in 0..nested {
        w += &format!(
            "(component $D{m}\n(alias outer $top $o{DEPTH} (type $t))\n(import \"f\" (func $f (param \"p\" $t)))\n(alias outer $top $C (component $C))\n{instances})\n"
        );
    }
    w += &format!("(import \"f\" (func $f (param \"p\" $o{DEPTH})))\n{instances}");
    w += "(instance $h)\n(export \"warden:extension/handler@0.1.0\" (instance $h))\n)\n";
    wat::parse_str(&w).unwrap()
}

struct Slow {
    _t: tempfile::TempDir,
    bundle: PathBuf,
    trust: PathBuf,
    data: PathBuf,
    root: PathBuf,
}

fn signed_slow(count: u8) -> Slow {
    signed_component(&slow_component((1 << 20) - 64, count))
}

fn signed_component(wasm: &[u8]) -> Slow {
    signed_entry(wasm, "component")
}

/// An Extism plug-in (a core module) whose compile is as slow as [`signed_slow`]'s.
fn signed_slow_plugin(count: u8) -> Slow {
    signed_entry(&slow_module((1 << 20) - 64, count), "extism")
}

fn signed_entry(wasm: &[u8], kind: &str) -> Slow {
    let t = tempfile::TempDir::new().unwrap();
    let root = t.path().to_path_buf();
    let p = keygen(&root, "acme");
    let trust = trust_file(&root, "trust.toml", &[("acme", &[&p.pem], &[])]);
    let dir = root.join("slow");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("extension.toml"),
        format!("schema = 1\n\n[extension]\nid = \"acme.slow\"\nversion = \"1.0.0\"\npublisher = \"acme\"\nkind = \"{kind}\"\nentry = \"extension.wasm\"\n\n[[methods]]\nname = \"call\"\n"),
    )
    .unwrap();
    fs::write(dir.join("extension.wasm"), wasm).unwrap();
    let bundle = root.join("slow.wext");
    pack(&dir, &bundle);
    sign(&bundle, &p.key);
    Slow {
        bundle,
        trust,
        data: root.join("data"),
        root,
        _t: t,
    }
}

/// Compiled code in the data dir's cache: its entries (`HASH-FINGERPRINT`), not temporary
/// files (`.NAME.RANDOM.tmp`).
pub(crate) fn cached(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![data.join("cache")];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                todo.push(p);
            } else if !name.contains('.') {
                out.push(p);
            }
        }
    }
    out
}

fn run_with(s: &Slow, policy: &str) -> std::process::Output {
    let config = s.root.join("policy.toml");
    fs::write(&config, policy).unwrap();
    warden(&[
        &"run",
        &s.bundle,
        &"--trust",
        &s.trust,
        &"--data",
        &s.data,
        &"--config",
        &config,
        &"--call",
        &"call",
    ])
}

/// The audit log's load records, as JSON lines.
fn load_records(data: &Path) -> Vec<String> {
    let out = ok(&warden(&[&"audit", &"--data", &data, &"--json"]));
    out.lines()
        .filter(|l| l.contains(r#""event":"load""#))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_compile_over_max_time_is_stopped_refused_and_audited() {
    // Eight bodies: several seconds on any machine, so the one-second limit stops it.
    let s = signed_slow(8);
    let o = run_with(&s, "[policy.compile]\nmax_time = \"1s\"\n");
    fails(
        &o,
        "checking and compiling the code needed more than 1s (max_time in [policy.compile]); it was stopped",
    );
    assert!(cached(&s.data).is_empty(), "{:?}", cached(&s.data));
    let loads = load_records(&s.data);
    assert_eq!(loads.len(), 1, "{loads:?}");
    assert!(
        loads[0].contains(r#""outcome":"invalid""#) && loads[0].contains("max_time"),
        "{}",
        loads[0]
    );
    ok(&warden(&[&"audit", &"--data", &s.data, &"--verify"]));
}

#[test]
fn a_plug_in_compile_over_the_limits_is_stopped_refused_and_audited() {
    // Extism plug-ins (core modules) compile in the same bounded child as components.
    let s = signed_slow_plugin(8);
    let o = run_with(&s, "[policy.compile]\nmax_time = \"1s\"\n");
    fails(
        &o,
        "needed more than 1s (max_time in [policy.compile]); it was stopped",
    );
    let s = signed_slow_plugin(1);
    let o = run_with(&s, "[policy.compile]\nmax_memory = \"100MiB\"\n");
    fails(
        &o,
        "needed more than 100 MiB (max_memory in [policy.compile])",
    );
    assert!(cached(&s.data).is_empty(), "{:?}", cached(&s.data));
    let loads = load_records(&s.data);
    assert_eq!(loads.len(), 1, "{loads:?}");
    assert!(
        loads[0].contains(r#""outcome":"invalid""#) && loads[0].contains("max_memory"),
        "{}",
        loads[0]
    );
    // Within the limits: compiled once by the child into the cache, then loaded from it.
    let o = run_with(&s, "");
    fails(&o, "the plug-in returned");
    let entries = cached(&s.data);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("module-"), "{name}");
    let written = fs::metadata(&entries[0]).unwrap().modified().unwrap();
    let o = run_with(&s, "");
    fails(&o, "the plug-in returned");
    assert_eq!(cached(&s.data), entries);
    assert_eq!(
        fs::metadata(&entries[0]).unwrap().modified().unwrap(),
        written
    );
}

#[test]
fn validation_counts_against_max_time_too() {
    // Validating this takes tens of seconds of CPU; it used to run in the host process,
    // before and outside the bounded compile process.
    let s = signed_component(&validation_bomb(2));
    let o = run_with(&s, "[policy.compile]\nmax_time = \"1s\"\n");
    fails(&o, "needed more than 1s (max_time in [policy.compile])");
    let loads = load_records(&s.data);
    assert_eq!(loads.len(), 1, "{loads:?}");
    // `inspect` lists interfaces without validating: it answers at once.
    let out = ok(&warden(&[&"inspect", &s.bundle]));
    assert!(out.contains("warden:extension/handler@0.1.0"), "{out}");
}

#[test]
fn a_compile_over_max_memory_is_stopped_refused_and_audited() {
    let s = signed_slow(1);
    let o = run_with(&s, "[policy.compile]\nmax_memory = \"100MiB\"\n");
    fails(
        &o,
        "checking and compiling the code needed more than 100 MiB (max_memory in [policy.compile])",
    );
    assert!(cached(&s.data).is_empty(), "{:?}", cached(&s.data));
    let loads = load_records(&s.data);
    assert_eq!(loads.len(), 1, "{loads:?}");
    assert!(loads[0].contains("max_memory"), "{}", loads[0]);
}

#[test]
fn within_the_limits_the_same_component_compiles_once_into_the_cache() {
    // The child compiles; the host stores the code it hands back, once, and does not compile.
    let s = signed_slow(1);
    let o = run_with(&s, "");
    // It compiles, then is refused for what it exports (it has no `call`): after the compile.
    fails(&o, "does not have export `call`");
    let entries = cached(&s.data);
    assert_eq!(entries.len(), 1, "{entries:?}");
}

#[test]
fn a_second_run_loads_the_compiled_code_from_the_cache_without_writing_it_again() {
    let (_t, bundle, trust, data) = signed_echo();
    let call = |data: &Path| {
        warden(&[
            &"run",
            &bundle,
            &"--trust",
            &trust,
            &"--data",
            &data,
            &"--call",
            &"echo",
            &"--input",
            &"{\"n\":1}",
        ])
    };
    assert_eq!(stdout(&call(&data)).trim(), "{\"n\":1}");
    let entries = cached(&data);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let written = fs::metadata(&entries[0]).unwrap().modified().unwrap();
    assert_eq!(stdout(&call(&data)).trim(), "{\"n\":1}");
    assert_eq!(cached(&data), entries);
    assert_eq!(
        fs::metadata(&entries[0]).unwrap().modified().unwrap(),
        written
    );
}

#[test]
fn the_compile_child_refuses_arguments_it_does_not_know() {
    let o = warden(&[&"__compile", &"bogus=1"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown argument \"bogus\""),
        "{o:?}"
    );
}

/// `warden install` compiles the component (never the tenant's first request), and on a
/// terminal says so while it takes more than a moment: run under a pseudo-terminal
/// (util-linux `script`), its line shows with the time it took; in a pipe, nothing of it.
/// This component compiles for seconds and then does not link (its handler has no `call`):
/// the install is refused, and nothing is installed.
#[test]
fn install_compiles_shows_it_on_a_terminal_only_and_refuses_what_does_not_load() {
    let s = signed_slow(1);
    ok(&warden(&[
        &"tenant", &"create", &"alpha", &"--data", &s.data,
    ]));
    let install = format!(
        "{} install {} --tenant alpha --trust {} --data {} --grant none",
        env!("CARGO_BIN_EXE_warden"),
        s.bundle.display(),
        s.trust.display(),
        s.data.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &install, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{shown}");
    let line = format!("verifying and compiling {} (", s.bundle.display());
    assert!(shown.contains(&line), "{shown}");
    assert!(shown.contains(" s "), "the seconds so far: {shown}");
    assert!(
        shown.contains(
            "instance export `warden:extension/handler@0.1.0` does not have export `call`"
        ),
        "{shown}"
    );
    let listed = ok(&warden(&[&"installs", &"--data", &s.data]));
    assert!(!listed.contains("acme.slow"), "nothing installed: {listed}");
    // Not on a terminal: the same refusal, and nothing of the line.
    let again = warden(&[
        &"install",
        &s.bundle,
        &"--tenant",
        &"alpha",
        &"--trust",
        &s.trust,
        &"--data",
        &s.data,
        &"--grant",
        &"none",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(!again.status.success(), "{text}");
    assert!(text.contains("does not have export `call`"), "{text}");
    assert!(!text.contains("verifying and compiling"), "{text}");
    // Both refusals audited as installs of an invalid component.
    let out = ok(&warden(&[&"audit", &"--data", &s.data, &"--json"]));
    let refused = out
        .lines()
        .filter(|l| l.contains(r#""event":"install""#) && l.contains(r#""outcome":"invalid""#))
        .count();
    assert_eq!(refused, 2, "{out}");
}
